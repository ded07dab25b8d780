//! Shards are plain tenbin streams: webdataset's `tenbin.load` reads them
//! with nothing else, key arrays and tombstones included.

mod common;

use ndarray::{Array, ArrayD, IxDyn};
use tenstore::store::{ShardOptions, ShardStore};
use tenstore::Tensor;

fn sample(i: u64) -> Vec<Tensor> {
    let n = 64 + (i as usize * 997) % 6000;
    let blob = ArrayD::from_shape_fn(IxDyn(&[n]), |d| ((d[0] as u64 * 31 + i) % 256) as u8);
    let label = Array::from_elem(1, i as i64).into_dyn();
    vec![
        Tensor::new("blob", blob).unwrap(),
        Tensor::new("label", label).unwrap(),
    ]
}

#[test]
fn python_reads_every_shard_with_tenbin_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        dir.path(),
        &ShardOptions {
            create: true,
            shard_limit: 64 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    let batch: Vec<(String, Vec<Tensor>)> =
        (0..120).map(|i| (format!("k{i:05}"), sample(i))).collect();
    store.put_batch(&batch).unwrap();
    store.delete_exact(&["k00007"]).unwrap();
    store.flush().unwrap();
    let shards = store.stats().unwrap().shards;
    assert!(shards > 3);
    let out = common::run_py("shard_read.py", [dir.path().to_str().unwrap(), "k00007"]);
    // Python sees every record ever appended (the deleted sample's too) and
    // the tombstone; the store itself hides the deleted one.
    assert_eq!(out.trim(), format!("ok 120 1 {shards}"));
    assert_eq!(store.reader().unwrap().len().unwrap(), 119);
}
