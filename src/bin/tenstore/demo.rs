//! `tenstore demo`: the main job end to end on synthetic data.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array1, Array3};
use tenstore::{save, TensorRef};

/// Write synthetic samples (a u1 3x64x64 "image", f4 [10] "logits", i8 [1]
/// "label") to a .ten file, map it back and check every value.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the file (default: a temporary directory, removed after).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many samples to write.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
}

fn sample(i: usize) -> (Array3<u8>, Array1<f32>, Array1<i64>) {
    let image = Array3::from_shape_fn((3, 64, 64), |(c, y, x)| {
        ((i * 31 + c * 7 + y * 3 + x) % 251) as u8
    });
    let logits = Array1::from_shape_fn(10, |k| (i as f32) * 0.5 - k as f32);
    let label = Array1::from_elem(1, (i % 10) as i64);
    (image, logits, label)
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let path = args.out.unwrap_or_else(|| tmp.path().join("demo.ten"));
    let samples: Vec<_> = (0..args.samples).map(sample).collect();
    let mut refs = Vec::with_capacity(3 * samples.len());
    for (image, logits, label) in &samples {
        refs.push(TensorRef::from_array("image", image)?);
        refs.push(TensorRef::from_array("logits", logits)?);
        refs.push(TensorRef::from_array("label", label)?);
    }
    let t = Instant::now();
    save(&path, &refs)?;
    let wrote = t.elapsed();
    let size = std::fs::metadata(&path)?.len();
    println!(
        "wrote {} samples ({} tensors, {:.1} MB) to {} in {:.1} ms",
        samples.len(),
        refs.len(),
        size as f64 / 1e6,
        path.display(),
        wrote.as_secs_f64() * 1e3
    );

    let t = Instant::now();
    // SAFETY: the file was just written by this process under a name no
    // other process uses, and nothing modifies it while it is mapped.
    let file = unsafe { tenstore::load(&path)? };
    let loaded = t.elapsed();
    let tensors = file.tensors();
    if tensors.len() != refs.len() {
        return Err(format!(
            "file holds {} tensors, {} were written",
            tensors.len(),
            refs.len()
        )
        .into());
    }
    let mut views = tensors.iter();
    let mut checked = 0;
    for (i, (image, logits, label)) in samples.iter().enumerate() {
        let (Some(a), Some(b), Some(c)) = (views.next(), views.next(), views.next()) else {
            return Err("file holds fewer tensors than written".into());
        };
        if a.array::<u8>()? != image.view().into_dyn()
            || b.array::<f32>()? != logits.view().into_dyn()
            || c.array::<i64>()? != label.view().into_dyn()
        {
            return Err(format!("sample {i} reads back different values").into());
        }
        checked += 1;
    }
    println!(
        "mapped it back in {:.3} ms ({} tensors, zero-copy) and checked all {} samples: every value matches",
        loaded.as_secs_f64() * 1e3,
        tensors.len(),
        checked
    );
    Ok(())
}
