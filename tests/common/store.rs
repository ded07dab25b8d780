//! Making and opening stores for tests: the standard three-tensor sample,
//! new stores and read-only opens of either backend.

use std::path::Path;

use tenstore::ndarray::{Array, ArrayD, IxDyn};
use tenstore::store::{LmdbOptions, LmdbStore, ShardOptions, ShardStore};
use tenstore::Tensor;

/// Sample `i` as the store tests write it: "image" (u8 [3, side, side],
/// element `(c, y, x)` = `(c*side*side + y*side + x + i) % 256`), "logits"
/// (f32 [10], `i + k/10`) and "label" (i64 [1], `i`).
pub fn standard_sample(i: usize, side: usize) -> Vec<Tensor> {
    let image = ArrayD::from_shape_fn(IxDyn(&[3, side, side]), |d| {
        ((d[0] * side * side + d[1] * side + d[2] + i) % 256) as u8
    });
    let logits = Array::from_shape_fn(10, |k| i as f32 + k as f32 / 10.0).into_dyn();
    let label = Array::from_elem(1, i as i64).into_dyn();
    vec![
        Tensor::new("image", image).unwrap(),
        Tensor::new("logits", logits).unwrap(),
        Tensor::new("label", label).unwrap(),
    ]
}

/// A new LMDB store in `dir` (default options).
pub fn create_lmdb(dir: &Path) -> LmdbStore {
    LmdbStore::open(
        dir,
        &LmdbOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A new shard store in `dir` (default options).
pub fn create_shard(dir: &Path) -> ShardStore {
    ShardStore::open(
        dir,
        &ShardOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The shard store in `dir`, opened read-only (no writer lock, no
/// recovery).
pub fn open_shard_read_only(dir: &Path) -> ShardStore {
    ShardStore::open(
        dir,
        &ShardOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The LMDB store in `dir`, opened read-only.
pub fn open_lmdb_read_only(dir: &Path) -> LmdbStore {
    LmdbStore::open(
        dir,
        &LmdbOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
}
