//! Allocation accounting: decoding allocates nothing per tensor (views of
//! up to four dims included), and no length field makes a decoder allocate
//! more than what really arrived, past a stream reader's 1 MiB first step.
//!
//! This binary counts allocations through a global allocator, per thread,
//! so that the test harness's own threads do not disturb the counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ndarray::{Array1, Array3};
use tenstore::{encode_buffer, read_all, TensorRef, Tensors};

struct Counting;

thread_local! {
    // Const-initialised cells without destructors: touching them never
    // allocates, so the allocator can use them.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are thread-local cells and never affect what is returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        let live = LIVE.with(|l| {
            l.set(l.get() + layout.size() as isize);
            l.get()
        });
        PEAK.with(|p| p.set(p.get().max(live)));
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Memory freed on another thread than it was allocated on makes a
        // thread's count go down only; the tests measure single threads.
        LIVE.with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result, the number of allocations it made and
/// the peak of live bytes above what was live before.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let before = ALLOCS.with(Cell::get);
    let r = f();
    let allocs = ALLOCS.with(Cell::get) - before;
    let peak = (PEAK.with(Cell::get) - base) as usize;
    (r, allocs, peak)
}

#[test]
fn parsing_and_viewing_a_sample_allocates_nothing() {
    let image = Array3::<u8>::from_elem((3, 64, 64), 9);
    let logits = Array1::<f32>::from_elem(10, 0.5);
    let label = Array1::<i64>::from_elem(1, 3);
    let bytes = encode_buffer(&[
        TensorRef::from_array("image", &image).unwrap(),
        TensorRef::from_array("logits", &logits).unwrap(),
        TensorRef::from_array("label", &label).unwrap(),
    ])
    .unwrap();

    let (sum, allocs, _) = measure(|| {
        let s = Tensors::parse(&bytes).unwrap();
        let image = s.get_by_name("image").unwrap().array::<u8>().unwrap();
        let logits = s.get_by_name("logits").unwrap().array::<f32>().unwrap();
        let label = s.get(2).unwrap().as_slice::<i64>().unwrap();
        image[[2, 63, 63]] as f64 + logits.sum() as f64 + label[0] as f64
    });
    assert_eq!(sum, 9.0 + 5.0 + 3.0);
    assert_eq!(allocs, 0, "parse, lookup and views must not allocate");
}

#[test]
fn a_view_of_up_to_four_dims_allocates_nothing() {
    // 16 elements of f64, 1.0 to 16.0, viewed with 0 to 4 dims.
    let data: Vec<f64> = (1..=16).map(f64::from).collect();
    let shapes: [&[usize]; 5] = [&[], &[16], &[4, 4], &[2, 2, 4], &[2, 2, 2, 2]];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let a = ndarray::ArrayD::from_shape_vec(shape, data[..n].to_vec()).unwrap();
        let bytes = encode_buffer(&[TensorRef::from_array("a", &a).unwrap()]).unwrap();
        let (got, allocs, _) = measure(|| {
            let s = Tensors::parse(&bytes).unwrap();
            let v = s.get(0).unwrap().array::<f64>().unwrap();
            (v.ndim(), v.sum(), v.iter().last().copied())
        });
        let total = (n * (n + 1) / 2) as f64;
        assert_eq!(got, (shape.len(), total, Some(n as f64)), "{shape:?}");
        assert_eq!(allocs, 0, "a {}-dim view allocated", shape.len());
    }
}

/// A header for a u1 array of `n` elements followed by a data chunk that
/// declares `n` bytes but carries only `carried`.
fn lying_stream(n: u64, carried: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"~TenBin~");
    v.extend_from_slice(&32u64.to_le_bytes());
    v.extend_from_slice(b"u1\0\0\0\0\0\0x\0\0\0\0\0\0\0");
    v.extend_from_slice(&1u64.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v.resize(16 + 64, 0);
    v.extend_from_slice(b"~TenBin~");
    v.extend_from_slice(&n.to_le_bytes());
    v.resize(v.len() + carried, 7);
    v
}

/// A stream reader allocates a payload buffer of at most 1 MiB before the
/// bytes arrive, growing it only as they do: a claim of a terabyte with
/// 1000 bytes behind it costs that first step, not the claim.
#[test]
fn a_stream_that_claims_a_terabyte_costs_one_first_step() {
    let stream = lying_stream(1 << 40, 1000);
    let (r, _, peak) = measure(|| read_all(&mut stream.as_slice()));
    assert!(
        matches!(
            r,
            Err(tenstore::Error::Truncated {
                offset: 80,
                available: 1016,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(
        peak <= (1 << 20) + (4 << 10),
        "peak allocation {peak} bytes for 1000 bytes of input"
    );
}

#[test]
fn a_buffer_that_claims_gigabytes_allocates_nothing() {
    let buf = lying_stream(1 << 40, 1000);
    let (r, allocs, _) = measure(|| Tensors::parse(&buf).map(|t| t.len()));
    assert!(
        matches!(r, Err(tenstore::Error::Truncated { offset: 80, .. })),
        "{r:?}"
    );
    assert_eq!(allocs, 0);
}

#[test]
fn stream_allocation_grows_with_the_data() {
    // 8 MiB really there: the reader may allocate about that (doubling), not
    // more than twice.
    let n = 8 << 20;
    let mut stream = lying_stream(n as u64, n);
    stream.resize(stream.len() + tenstore_pad(n), 0);
    let (r, _, peak) = measure(|| read_all(&mut stream.as_slice()));
    let tensors = r.unwrap();
    assert_eq!(tensors[0].shape(), &[n]);
    assert!(peak >= n, "the counter sees the data buffer ({peak} bytes)");
    assert!(peak <= 2 * n, "peak {peak} for {n} bytes");
}

fn tenstore_pad(n: usize) -> usize {
    (64 - n % 64) % 64
}

#[test]
fn a_store_get_with_all_three_views_allocates_nothing() {
    use tenstore::store::{LmdbOptions, LmdbStore};
    let dir = tempfile::tempdir().unwrap();
    let store = LmdbStore::open(
        dir.path(),
        &LmdbOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    let image = Array3::<u8>::from_elem((3, 64, 64), 9);
    let logits = Array1::<f32>::from_elem(10, 0.5);
    let label = Array1::<i64>::from_elem(1, 3);
    // Two samples of one layout, so the gets below take both the path
    // that learns a layout and the one that reuses it (the reuse itself is
    // counted by the codec's unit tests; it cannot be seen from here).
    for key in [b"k", b"j"] {
        store
            .put(
                key,
                &[
                    TensorRef::from_array("image", &image).unwrap(),
                    TensorRef::from_array("logits", &logits).unwrap(),
                    TensorRef::from_array("label", &label).unwrap(),
                ],
            )
            .unwrap();
    }
    let reader = store.reader().unwrap();
    let keys = [b"k".to_vec(), b"j".to_vec(), b"k".to_vec()];
    let (sum, allocs, _) = measure(|| {
        let mut sum = 0.0;
        for key in &keys {
            let s = reader.get(key).unwrap().unwrap();
            let image = s.get_by_name("image").unwrap().array::<u8>().unwrap();
            let logits = s.get_by_name("logits").unwrap().array::<f32>().unwrap();
            let label = s.get_by_name("label").unwrap().array::<i64>().unwrap();
            sum += image[[0, 0, 0]] as f64 + logits.sum() as f64 + label[[0]] as f64;
        }
        sum
    });
    assert_eq!(sum, 3.0 * (9.0 + 5.0 + 3.0));
    assert_eq!(
        allocs, 0,
        "get plus three zero-copy views must not allocate"
    );
}

/// A store of `n` tiny samples with a key table (written at close), then
/// 100 of them overwritten and 100 deleted after it, as a reader finds a
/// store a writer is still adding to. Returns the live keys.
fn shard_store_with_table(dir: &std::path::Path, n: u32) -> usize {
    use tenstore::store::{ShardOptions, ShardStore};
    let options = ShardOptions {
        create: true,
        shard_limit: 1 << 20,
        ..Default::default()
    };
    let key = |i: u32| format!("k{i:06}").into_bytes();
    let data = [7u8; 8];
    let sample = [TensorRef::raw("x", tenstore::DType::U8, &[8], &data).unwrap()];
    {
        let store = ShardStore::open(dir, &options).unwrap();
        let batch: Vec<(Vec<u8>, &[TensorRef<'_>])> =
            (0..n).map(|i| (key(i), &sample[..])).collect();
        store.put_batch(&batch).unwrap();
    }
    let store = ShardStore::open(dir, &options).unwrap();
    for i in 0..100 {
        store.put(&key(i * 7), &sample).unwrap();
    }
    let gone: Vec<Vec<u8>> = (0..100).map(|i| key(i * 11 + 3)).collect();
    store.delete_exact(&gone).unwrap();
    store.flush().unwrap();
    // A crash here would leave the table behind the sidecars: leak the
    // writer so that its close does not fold the changes into the table.
    std::mem::forget(store);
    n as usize - 100
}

#[test]
fn scans_and_plans_of_a_shard_store_hold_bytes_a_sample_not_an_index() {
    use tenstore::plan::{EpochPlan, PlanConfig, Shuffle};
    use tenstore::store::shard::KeyTable;
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000u32;
    let live = shard_store_with_table(dir.path(), n);
    let reader = tenstore::store::ShardStore::open(
        dir.path(),
        &tenstore::store::ShardOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
    .reader()
    .unwrap();
    assert!(matches!(
        reader.load_report().key_table,
        KeyTable::Used { tail_records: 200 }
    ));
    // A heap index costs about 160 bytes a sample; orders read off the
    // key table cost 4 (8 while the write order is built).
    let (count, _, peak) = measure(|| {
        reader
            .iter()
            .unwrap()
            .map(|s| s.unwrap().len())
            .sum::<usize>()
    });
    assert_eq!(count, live);
    assert!(
        peak < live * 12,
        "a scan held {peak} bytes for {live} samples"
    );
    let plan = EpochPlan::new(
        live as u64,
        PlanConfig {
            shuffle: Shuffle::Full,
            ..Default::default()
        },
    )
    .unwrap();
    let (count, _, peak) = measure(|| {
        reader
            .iter_plan(&plan)
            .unwrap()
            .map(|s| s.unwrap().len())
            .sum::<usize>()
    });
    assert_eq!(count, live);
    assert!(
        peak < live * 12,
        "a full-shuffle plan held {peak} bytes for {live} samples"
    );
    let (count, _, peak) = measure(|| {
        reader
            .iter_from(std::ops::Bound::Unbounded)
            .unwrap()
            .map(|s| s.unwrap().len())
            .sum::<usize>()
    });
    assert_eq!(count, live);
    assert!(
        peak < live * 4,
        "a key-order scan held {peak} bytes for {live} samples"
    );
}
