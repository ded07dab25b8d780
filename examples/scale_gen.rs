//! Writes N tiny samples (one u1 [8] tensor "x" under keys `s000000000`, ...)
//! into a new store of either backend, as `tenstore import` does (LMDB
//! without per-batch sync, batches of 512, a flush at the end), and prints
//! the import rate and the writer's heap: what `benches/scale.sh` measures.
//!
//! ```sh
//! cargo run --release --example scale_gen -- ten /tmp/store 1000000
//! ```
//!
//! Output: one line of `key=value` pairs (`samples`, `secs`, `rate`,
//! `heap_peak`, `heap_end`: bytes of heap live at the peak and after the
//! flush, counted by this program's allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use ndarray::Array1;
use tenstore::store::{Backend, LmdbOptions, Store, StoreOptions};
use tenstore::TensorRef;

/// The system allocator, counting live and peak bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are atomics and never affect what is returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live =
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, dir, n] = &args[..] else {
        return Err("usage: scale_gen ten|lmdb DIR SAMPLES".into());
    };
    let backend = match backend.as_str() {
        "ten" => Backend::Shard,
        "lmdb" => Backend::Lmdb,
        other => return Err(format!("unknown backend {other:?}").into()),
    };
    let n: u64 = n.parse()?;
    let store = Store::open(
        dir,
        &StoreOptions {
            create: true,
            backend: Some(backend),
            lmdb: LmdbOptions {
                no_sync: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    const BATCH: u64 = 512;
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        let keys: Vec<String> = (i..end).map(|i| format!("s{i:09}")).collect();
        let arrays: Vec<Array1<u8>> = (i..end)
            .map(|i| Array1::from_shape_fn(8, |j| (i as usize + j) as u8))
            .collect();
        let batch: Vec<(&[u8], [TensorRef<'_>; 1])> = keys
            .iter()
            .zip(&arrays)
            .map(|(k, a)| Ok((k.as_bytes(), [TensorRef::from_array("x", a)?])))
            .collect::<Result<_, tenstore::Error>>()?;
        store.put_batch(&batch)?;
        i = end;
    }
    store.flush()?;
    drop(store);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "samples={n} secs={secs:.3} rate={:.0} heap_peak={} heap_end={}",
        n as f64 / secs,
        PEAK.load(Ordering::Relaxed),
        LIVE.load(Ordering::Relaxed)
    );
    Ok(())
}
