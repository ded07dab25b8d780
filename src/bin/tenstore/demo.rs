//! `tenstore demo`: the main job end to end on synthetic data.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array1, Array3};
use tenstore::{Tensor, TensorRef};

use crate::stores;
use crate::CliResult;

/// Fill a store with synthetic samples and read them back at random.
///
/// Each sample is a u1 3x64x64 "image", an f4 [10] "logits" and an i8 [1]
/// "label" (about 12.7 KB). The demo writes them in batches, reads random
/// keys through a snapshot with zero-copy views, checks every value it
/// reads, and prints rates. Without --store it uses a temporary store that
/// is removed afterwards.
#[derive(clap::Args)]
pub struct Args {
    /// The store directory (made if missing); default: a temporary one.
    #[arg(long)]
    store: Option<PathBuf>,
    /// How many samples to write.
    #[arg(long, default_value_t = 10_000)]
    samples: usize,
    /// How many random reads to make.
    #[arg(long, default_value_t = 100_000)]
    reads: usize,
}

fn sample(i: usize) -> (Array3<u8>, Array1<f32>, Array1<i64>) {
    let image = Array3::from_shape_fn((3, 64, 64), |(c, y, x)| {
        ((i * 31 + c * 7 + y * 3 + x) % 251) as u8
    });
    let logits = Array1::from_shape_fn(10, |k| (i as f32) * 0.5 - k as f32);
    let label = Array1::from_elem(1, (i % 10) as i64);
    (image, logits, label)
}

fn key(i: usize) -> String {
    format!("sample-{i:08}")
}

pub fn run(args: Args) -> CliResult {
    let tmp = tempfile::tempdir()?;
    let dir = args
        .store
        .clone()
        .unwrap_or_else(|| tmp.path().join("demo-store"));
    let store = stores::open(&dir, true, None)?;

    let t = Instant::now();
    let mut bytes = 0usize;
    for chunk in (0..args.samples).collect::<Vec<_>>().chunks(1000) {
        let arrays: Vec<_> = chunk.iter().map(|&i| sample(i)).collect();
        let batch: Vec<(String, Vec<TensorRef<'_>>)> = chunk
            .iter()
            .zip(&arrays)
            .map(|(&i, (image, logits, label))| {
                let refs = vec![
                    TensorRef::from_array("image", image)?,
                    TensorRef::from_array("logits", logits)?,
                    TensorRef::from_array("label", label)?,
                ];
                Ok((key(i), refs))
            })
            .collect::<Result<_, tenstore::Error>>()?;
        bytes += batch
            .iter()
            .map(|(_, r)| tenstore::encoded_len(r).unwrap_or(0))
            .sum::<usize>();
        store.put_batch(&batch)?;
    }
    let wrote = t.elapsed().as_secs_f64();
    println!(
        "wrote {} samples ({:.1} MB) to the store at {} in {:.2} s ({:.0} samples/s)",
        args.samples,
        bytes as f64 / 1e6,
        dir.display(),
        wrote,
        args.samples as f64 / wrote
    );
    if args.samples == 0 {
        return Ok(());
    }

    let reader = store.reader()?;
    // A fixed-seed xorshift: reproducible random keys without a crate.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let keys: Vec<(usize, String)> = (0..args.reads)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % args.samples as u64) as usize;
            (i, key(i))
        })
        .collect();
    let t = Instant::now();
    let mut checksum = 0u64;
    for (_, k) in &keys {
        let s = reader.require(k.as_bytes())?;
        let image = s
            .get_by_name("image")
            .ok_or("sample without image")?
            .array::<u8>()?;
        let logits = s
            .get_by_name("logits")
            .ok_or("sample without logits")?
            .array::<f32>()?;
        let label = s
            .get_by_name("label")
            .ok_or("sample without label")?
            .array::<i64>()?;
        checksum = checksum
            .wrapping_add(image[[2, 63, 63]] as u64)
            .wrapping_add(logits[[9]].to_bits() as u64)
            .wrapping_add(label[[0]] as u64);
    }
    let read = t.elapsed().as_secs_f64();
    println!(
        "read {} random samples with zero-copy views in {:.3} s ({:.0} samples/s, checksum {checksum:x})",
        args.reads,
        read,
        args.reads as f64 / read
    );

    // Check every value of a spread of the samples read.
    let mut checked = 0;
    for (i, k) in keys.iter().take(1000) {
        let s = reader.require(k.as_bytes())?;
        let (image, logits, label) = sample(*i);
        let expected = [
            Tensor::new("image", image.into_dyn())?,
            Tensor::new("logits", logits.into_dyn())?,
            Tensor::new("label", label.into_dyn())?,
        ];
        for (view, t) in s.iter().zip(&expected) {
            if view.to_tensor()? != *t {
                return Err(format!("sample {k} reads back different values").into());
            }
        }
        checked += 1;
    }
    println!("checked every value of {checked} of the samples read: all match");
    Ok(())
}
