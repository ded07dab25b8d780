//! Model-based tests: random sequences of store operations, checked after
//! every step against an in-memory model, for both backends.
//!
//! TENSTORE_MODEL_CASES sets the number of sequences (default 24 per
//! backend).

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use tenstore::store::{Backend, LmdbOptions, Order, ShardOptions, Store, StoreOptions};
use tenstore::{DType, TensorRef};

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8, usize),
    Batch(Vec<(u8, u8, usize)>),
    Delete(Vec<u8>),
    Get(u8),
    List(Vec<u8>),
    Reopen,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..24;
    prop_oneof![
        4 => (key.clone(), any::<u8>(), 0usize..9000).prop_map(|(k, v, n)| Op::Put(k, v, n)),
        2 => prop::collection::vec((key.clone(), any::<u8>(), 0usize..3000), 0..6).prop_map(Op::Batch),
        2 => prop::collection::vec(key.clone(), 1..3).prop_map(Op::Delete),
        3 => key.clone().prop_map(Op::Get),
        1 => prop::collection::vec(b'a'..b'c', 0..2).prop_map(Op::List),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
    ]
}

fn key(k: u8) -> Vec<u8> {
    // Keys share prefixes so that prefix listing means something.
    format!("{}{:02}", ["a", "ab", "b"][k as usize % 3], k).into_bytes()
}

/// The sample a (value, size) pair stands for: its encoded bytes.
fn value(v: u8, n: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..n).map(|i| v.wrapping_add(i as u8)).collect();
    let label = i64::from(v).to_le_bytes();
    tenstore::encode_buffer(&[
        TensorRef::raw("data", DType::U8, &[n], &data).unwrap(),
        TensorRef::raw("label", DType::I64, &[1], &label).unwrap(),
    ])
    .unwrap()
}

fn open(dir: &Path, backend: Backend) -> Store {
    Store::open(
        dir,
        &StoreOptions {
            create: true,
            backend: Some(backend),
            // A tiny map, so that sequences make LMDB grow it.
            lmdb: LmdbOptions {
                map_size: 32 << 10,
                no_sync: true,
                ..Default::default()
            },
            // Small shards, so that sequences roll them.
            shard: ShardOptions {
                shard_limit: 16 << 10,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap()
}

fn put_encoded(store: &Store, items: &[(Vec<u8>, Vec<u8>)]) {
    let views: Vec<(Vec<u8>, Vec<tenstore::TensorView<'_>>)> = items
        .iter()
        .map(|(k, v)| (k.clone(), tenstore::decode_buffer(v).unwrap()))
        .collect();
    store.put_batch(&views).unwrap();
}

fn check_all(store: &Store, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap() as usize, model.len());
    let keys: Vec<Vec<u8>> = r
        .keys(b"", None)
        .unwrap()
        .map(|k| k.unwrap().to_vec())
        .collect();
    assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
    for (k, v) in model {
        assert_eq!(r.require(k).unwrap().as_bytes(), &v[..], "{k:?}");
    }
    let mut seen = 0;
    for s in r.samples(Order::Written).unwrap() {
        let s = s.unwrap();
        assert_eq!(model.get(s.key()).map(Vec::as_slice), Some(s.as_bytes()));
        seen += 1;
    }
    assert_eq!(seen, model.len());
    // The keys of every order come without reading the samples, in the
    // order the samples come.
    for order in [Order::Key, Order::Written, Order::Shuffled(7)] {
        let want: Vec<Vec<u8>> = r
            .samples(order)
            .unwrap()
            .map(|s| s.unwrap().key().to_vec())
            .collect();
        let got: Vec<Vec<u8>> = r
            .keys_in(order)
            .unwrap()
            .map(|k| k.unwrap().to_vec())
            .collect();
        assert_eq!(got, want, "{order:?}");
    }
    for (k, v) in model {
        assert_eq!(r.get_checked(k).unwrap().unwrap().as_bytes(), &v[..]);
    }
    assert!(r.get_checked(b"zz-not-there").unwrap().is_none());
    assert!(r.verify().unwrap().is_empty());
}

fn run(backend: Backend, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), backend);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(k, v, n) => {
                let item = (key(k), value(v, n));
                put_encoded(&store, std::slice::from_ref(&item));
                model.insert(item.0, item.1);
            }
            Op::Batch(items) => {
                let items: Vec<(Vec<u8>, Vec<u8>)> = items
                    .into_iter()
                    .map(|(k, v, n)| (key(k), value(v, n)))
                    .collect();
                put_encoded(&store, &items);
                for (k, v) in items {
                    model.insert(k, v);
                }
            }
            Op::Delete(ks) => {
                let ks: Vec<Vec<u8>> = ks.into_iter().map(key).collect();
                let all_there = ks.iter().all(|k| model.contains_key(k));
                let r = store.delete_exact(&ks);
                assert_eq!(r.is_ok(), all_there, "{r:?}");
                if all_there {
                    for k in &ks {
                        model.remove(k);
                    }
                }
            }
            Op::Get(k) => {
                let r = store.reader().unwrap();
                let k = key(k);
                let got = r.get(&k).unwrap().map(|s| s.as_bytes().to_vec());
                assert_eq!(got.as_ref(), model.get(&k));
            }
            Op::List(prefix) => {
                let r = store.reader().unwrap();
                let got: Vec<Vec<u8>> = r
                    .keys(&prefix, None)
                    .unwrap()
                    .map(|k| k.unwrap().to_vec())
                    .collect();
                let want: Vec<Vec<u8>> = model
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect();
                assert_eq!(got, want);
                if let Some(first) = want.first() {
                    let after: Vec<Vec<u8>> = r
                        .keys(&prefix, Some(first))
                        .unwrap()
                        .map(|k| k.unwrap().to_vec())
                        .collect();
                    assert_eq!(after, want[1..].to_vec());
                }
            }
            Op::Reopen => {
                store.flush().unwrap();
                drop(store);
                store = open(dir.path(), backend);
            }
            Op::Compact => {
                if let Store::Shard(s) = &store {
                    s.compact().unwrap();
                }
            }
        }
        check_all(&store, &model);
    }
}

fn cases() -> u32 {
    std::env::var("TENSTORE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn lmdb_store_matches_the_model(ops in prop::collection::vec(op(), 1..30)) {
        run(Backend::Lmdb, ops);
    }

    #[test]
    fn shard_store_matches_the_model(ops in prop::collection::vec(op(), 1..30)) {
        run(Backend::Shard, ops);
    }
}
