//! The LMDB store through the library: round trips, listing, map growth,
//! snapshots and concurrency.

mod common;

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use num_complex::Complex;
use tenstore::store::{LmdbOptions, LmdbReader, LmdbStore, StoreError};
use tenstore::{DType, Element, Tensor, TensorRef};

use common::store::create_lmdb;

/// A new store in a temporary directory, holding sample 0 as "s00000".
fn holding_sample_0() -> (tempfile::TempDir, LmdbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = create_lmdb(dir.path());
    store.put(b"s00000", &sample(0)).unwrap();
    (dir, store)
}

fn sample(i: usize) -> Vec<Tensor> {
    common::store::standard_sample(i, 8)
}

fn check(reader: &LmdbReader<'_>, i: usize) {
    let key = format!("s{i:05}");
    let s = reader.require(key.as_bytes()).unwrap();
    assert_eq!(s.key(), key.as_bytes());
    let expected = sample(i);
    assert_eq!(s.len(), 3);
    for (view, t) in s.iter().zip(&expected) {
        assert_eq!(view.to_tensor().unwrap(), *t, "sample {i}");
    }
}

#[test]
fn every_dtype_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = create_lmdb(dir.path());
    fn t<T: Element>(name: &str, v: Vec<T>) -> Tensor {
        let n = v.len();
        Tensor::new(name, ArrayD::from_shape_vec(IxDyn(&[n]), v).unwrap()).unwrap()
    }
    let tensors = vec![
        t("f2", vec![f16::from_f32(1.5), f16::from_f32(-2.0)]),
        t("f4", vec![1.5f32, -2.0]),
        t("f8", vec![1.5f64, -2.0]),
        t("i1", vec![-1i8, 2]),
        t("i2", vec![-1i16, 2]),
        t("i4", vec![-1i32, 2]),
        t("i8", vec![i64::MIN, i64::MAX]),
        t("u1", vec![0u8, 255]),
        t("u2", vec![0u16, 65535]),
        t("u4", vec![0u32, u32::MAX]),
        t("u8", vec![0u64, u64::MAX]),
        t("b1", vec![true, false]),
        t("bf16", vec![bf16::from_f32(0.25), bf16::from_f32(8.0)]),
        t("c8", vec![Complex::new(1.0f32, -1.0)]),
        t("c16", vec![Complex::new(1.0f64, -1.0)]),
    ];
    assert_eq!(tensors.len(), DType::ALL.len());
    store.put(b"all", &tensors).unwrap();
    let reader = store.reader().unwrap();
    let s = reader.require(b"all").unwrap();
    let back: Vec<Tensor> = s.iter().map(|v| v.to_tensor().unwrap()).collect();
    assert_eq!(back, tensors);
    // The stored value is exactly the tenbin buffer.
    assert_eq!(s.as_bytes(), tenstore::encode_buffer(&tensors).unwrap());
}

#[test]
fn put_get_overwrite_delete_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = create_lmdb(dir.path());
    let samples: Vec<(String, Vec<Tensor>)> = (0..50)
        .rev()
        .map(|i| (format!("s{i:05}"), sample(i)))
        .collect();
    store.put_batch(&samples).unwrap();
    assert_eq!(store.len().unwrap(), 50);
    {
        let r = store.reader().unwrap();
        for i in 0..50 {
            check(&r, i);
        }
        let keys: Vec<Vec<u8>> = r
            .iter()
            .unwrap()
            .keys()
            .map(|k| k.unwrap().to_vec())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "keys come in order");
        assert_eq!(keys.len(), 50);
        let prefixed: Vec<_> = r
            .iter_prefix(b"s0001")
            .unwrap()
            .keys()
            .map(|k| k.unwrap().to_vec())
            .collect();
        assert_eq!(
            prefixed,
            (10..20)
                .map(|i| format!("s{i:05}").into_bytes())
                .collect::<Vec<_>>()
        );
        let after: Vec<_> = r
            .iter_from(Bound::Excluded(b"s00047"))
            .unwrap()
            .map(|s| s.unwrap().key().to_vec())
            .collect();
        assert_eq!(after, [b"s00048".to_vec(), b"s00049".to_vec()]);
        assert!(r.get(b"nope").unwrap().is_none());
        assert!(matches!(
            r.require(b"nope"),
            Err(StoreError::NotFound { .. })
        ));
    }
    store.put(b"s00003", &sample(7)).unwrap();
    assert_eq!(
        store.delete(&[b"s00004".as_slice(), b"missing"]).unwrap(),
        1
    );
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 49);
    assert!(r.get(b"s00004").unwrap().is_none());
    let replaced = r.require(b"s00003").unwrap();
    assert_eq!(
        replaced
            .get_by_name("label")
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        [7]
    );
    let stats = store.stats().unwrap();
    assert_eq!(stats.samples, 49);
    let one = tenstore::encode_buffer(&sample(0)).unwrap().len() as u64;
    assert!(
        stats.bytes >= 49 * one && stats.map_size >= stats.bytes,
        "{stats:?}"
    );
}

#[test]
fn bad_keys_and_names_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = create_lmdb(dir.path());
    let long = vec![b'k'; 512];
    assert!(matches!(
        store.put(&long, &sample(0)),
        Err(StoreError::BadKey { len: 512, max: 511 })
    ));
    assert!(matches!(
        store.put(b"", &sample(0)),
        Err(StoreError::BadKey { len: 0, .. })
    ));
    // A batch with one bad key writes nothing.
    let batch = vec![(b"ok".to_vec(), sample(1)), (long.clone(), sample(2))];
    assert!(store.put_batch(&batch).is_err());
    assert_eq!(store.len().unwrap(), 0);
    // Encoded values are checked before they are stored.
    assert!(matches!(
        store.put_encoded(&[(b"x", b"garbage")]),
        Err(StoreError::Codec { .. })
    ));
    assert_eq!(store.len().unwrap(), 0);
    let one = ndarray::arr1(&[1u8]);
    let name = TensorRef::from_array("too-long-name", &one);
    assert!(matches!(name, Err(tenstore::Error::BadName { .. })));
}

#[test]
fn opening_needs_a_store_unless_creating() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing");
    assert!(matches!(
        LmdbStore::open(&missing, &LmdbOptions::default()),
        Err(StoreError::NotAStore { .. })
    ));
    assert!(!missing.exists());
    let store = create_lmdb(&missing);
    store.put(b"a", &sample(0)).unwrap();
    assert!(missing.join("data.mdb").is_file());
    let meta = std::fs::read_to_string(missing.join("tenstore.json")).unwrap();
    assert!(
        meta.contains("\"backend\": \"lmdb\"") && meta.contains("\"version\": 1"),
        "{meta}"
    );
    // The metadata is outside the keyspace.
    assert_eq!(store.len().unwrap(), 1);
}

#[test]
fn the_map_grows_instead_of_filling_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = LmdbStore::open(
        dir.path(),
        &LmdbOptions {
            create: true,
            map_size: 64 << 10,
            no_sync: true,
            ..Default::default()
        },
    )
    .unwrap();
    let start = store.stats().unwrap().map_size;
    let big = ArrayD::from_shape_fn(IxDyn(&[256, 1024]), |d| (d[0] * 7 + d[1]) as u8);
    for i in 0..40 {
        store
            .put(
                format!("big{i:03}").as_bytes(),
                &[TensorRef::from_array("x", &big).unwrap()],
            )
            .unwrap();
    }
    let batch: Vec<(String, Vec<Tensor>)> =
        (0..200).map(|i| (format!("s{i:05}"), sample(i))).collect();
    store.put_batch(&batch).unwrap();
    store.flush().unwrap();
    let stats = store.stats().unwrap();
    assert!(
        stats.map_size >= 40 * 256 * 1024 && start <= 64 << 10,
        "{start} -> {stats:?}"
    );
    let r = store.reader().unwrap();
    for i in 0..40 {
        let key = format!("big{i:03}");
        assert_eq!(
            r.require(key.as_bytes())
                .unwrap()
                .get(0)
                .unwrap()
                .array::<u8>()
                .unwrap(),
            big.view()
        );
    }
    for i in 0..200 {
        check(&r, i);
    }
}

#[test]
fn growth_waits_for_open_snapshots_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = LmdbStore::open(
        dir.path(),
        &LmdbOptions {
            create: true,
            map_size: 64 << 10,
            grow_patience: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    let big = ArrayD::<u8>::zeros(IxDyn(&[1 << 20]));
    let reader = store.reader().unwrap();
    let e = store
        .put(b"big", &[TensorRef::from_array("x", &big).unwrap()])
        .unwrap_err();
    assert!(
        matches!(e, StoreError::GrowBlocked { readers: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("drop or refresh readers"));
    assert_eq!(reader.len().unwrap(), 0);
    drop(reader);
    store
        .put(b"big", &[TensorRef::from_array("x", &big).unwrap()])
        .unwrap();
    assert_eq!(store.len().unwrap(), 1);
}

#[test]
fn snapshots_are_isolated_until_refreshed() {
    let (_dir, store) = holding_sample_0();
    let mut r = store.reader().unwrap();
    store.put(b"s00001", &sample(1)).unwrap();
    assert_eq!(r.len().unwrap(), 1);
    assert!(r.get(b"s00001").unwrap().is_none());
    r.refresh().unwrap();
    assert_eq!(r.len().unwrap(), 2);
    check(&r, 1);
}

#[test]
fn reader_threads_see_only_whole_samples_while_a_writer_writes() {
    fn assert_send<T: Send>() {}
    assert_send::<LmdbReader<'static>>();

    let dir = tempfile::tempdir().unwrap();
    let store = LmdbStore::open(
        dir.path(),
        &LmdbOptions {
            create: true,
            map_size: 1 << 20,
            no_sync: true,
            ..Default::default()
        },
    )
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let store = &store;
            let done = done.clone();
            scope.spawn(move || {
                let mut seen = 0;
                loop {
                    // One last pass after the writer is done.
                    let finished = done.load(Ordering::Acquire);
                    let r = store.reader().unwrap();
                    let n = r.len().unwrap() as usize;
                    for s in r.iter().unwrap() {
                        let s = s.unwrap();
                        let i: usize = s.key_str().unwrap()[1..].parse().unwrap();
                        check(&r, i);
                        seen += 1;
                    }
                    assert!(n <= 300);
                    if finished {
                        break;
                    }
                }
                assert!(seen > 0);
            });
        }
        for chunk in (0..300).collect::<Vec<_>>().chunks(10) {
            let batch: Vec<(String, Vec<Tensor>)> = chunk
                .iter()
                .map(|&i| (format!("s{i:05}"), sample(i)))
                .collect();
            store.put_batch(&batch).unwrap();
        }
        done.store(true, Ordering::Release);
    });
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 300);
}

/// Opens the LMDB environment in `dir` as a plain LMDB client would make it
/// (no `tenstore.json`), with one tenbin value under `k`.
fn plain_env(dir: &std::path::Path) {
    let value = tenstore::encode_buffer(&sample(0)).unwrap();
    // SAFETY: a fresh directory of this test; nothing else maps it.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(1 << 20)
            .open(dir)
            .unwrap()
    };
    let mut txn = env.write_txn().unwrap();
    let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
        env.create_database(&mut txn, None).unwrap();
    db.put(&mut txn, b"s00000", &value).unwrap();
    txn.commit().unwrap();
    env.prepare_for_closing().wait();
}

#[test]
fn a_foreign_environment_is_read_but_written_only_when_adopted() {
    let dir = tempfile::tempdir().unwrap();
    plain_env(dir.path());
    let meta = dir.path().join(tenstore::store::META_FILE);
    let mdb = dir.path().join("data.mdb");
    let before = std::fs::read(&mdb).unwrap();

    // Writable opens are refused, with or without create; nothing changes.
    for create in [false, true] {
        let e = LmdbStore::open(
            dir.path(),
            &LmdbOptions {
                create,
                ..Default::default()
            },
        )
        .err()
        .expect("a foreign environment opened for writing");
        assert!(matches!(e, StoreError::Foreign { .. }), "{e}");
        assert!(e.to_string().contains("adopt"), "{e}");
        assert!(!meta.exists());
        assert!(std::fs::read(&mdb).unwrap() == before, "data.mdb changed");
    }
    // Reading stays allowed, and writes nothing.
    let ro = common::store::open_lmdb_read_only(dir.path());
    check(&ro.reader().unwrap(), 0);
    drop(ro);
    assert!(!meta.exists());

    // Adopted: tenstore.json is written and writes go through.
    let store = LmdbStore::open(
        dir.path(),
        &LmdbOptions {
            adopt: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(meta.is_file());
    store.put(b"s00001", &sample(1)).unwrap();
    let r = store.reader().unwrap();
    check(&r, 0);
    check(&r, 1);
    drop(r);
    drop(store);
    // From now on it is tenstore's: a plain writable open works.
    let store = LmdbStore::open(dir.path(), &LmdbOptions::default()).unwrap();
    assert_eq!(store.len().unwrap(), 2);
}

#[test]
fn a_sample_too_large_for_one_lmdb_write_is_refused_before_writing() {
    let (dir, store) = holding_sample_0();
    let max = store.max_value_len();
    // One value's pages are written with one pwrite, which moves at most
    // 2 GiB - 4 KiB on Linux: with 4 KiB pages the value may be 2 GiB - 64
    // KiB less the 16-byte page header.
    let page = store.stats().unwrap().page_size as usize;
    assert_eq!(max, 0x7fff_0000 / page * page - 16);
    assert!(max < i32::MAX as usize && max > (2 << 30) - (1 << 20));
    let size = || {
        std::fs::metadata(dir.path().join("data.mdb"))
            .unwrap()
            .len()
    };
    let before = size();

    // A source of max bytes that costs nothing: untouched anonymous memory.
    let src = memmap2::MmapMut::map_anon(max + 1).unwrap();
    let shape = [max];
    let t = TensorRef::raw("big", DType::U8, &shape, &src[..max]).unwrap();
    let len = tenstore::encoded_len(&[t]).unwrap();
    assert!(len > max);
    let e = store.put(b"big", &[t]).unwrap_err();
    match &e {
        StoreError::TooLarge {
            key,
            len: l,
            max: m,
        } => {
            assert_eq!((key.as_str(), *l, *m), ("big", len, max));
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&max.to_string()) && msg.contains("--backend ten"),
        "{msg}"
    );
    // In a batch, nothing of it is written either.
    let batch = [(b"s00001".as_slice(), sample(1)), (b"s00002", sample(2))];
    store.put_batch(&batch).unwrap();
    let small = sample(3);
    let e = store
        .put_batch(&[
            (b"small".as_slice(), vec![TensorRef::from(small[0].view())]),
            (b"big", vec![t]),
        ])
        .unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    // Already encoded: refused before parsing the buffer.
    let e = store.put_encoded(&[(b"big", &src[..])]).unwrap_err();
    assert!(
        matches!(e, StoreError::TooLarge { len, .. } if len == max + 1),
        "{e}"
    );
    let r = store.reader().unwrap();
    assert!(r.get(b"big").unwrap().is_none());
    assert!(r.get(b"small").unwrap().is_none());
    for i in 0..3 {
        check(&r, i);
    }
    assert!(size() - before < 1 << 20, "data.mdb grew to {}", size());
}

#[test]
fn no_lock_reads_only() {
    let (dir, store) = holding_sample_0();
    drop(store);
    let e = LmdbStore::open(
        dir.path(),
        &LmdbOptions {
            no_lock: true,
            ..Default::default()
        },
    )
    .err()
    .expect("no_lock writer");
    assert!(e.to_string().contains("read-only"), "{e}");
    // Without the lock file, read-only: the lock file is neither needed
    // nor made.
    std::fs::remove_file(dir.path().join("lock.mdb")).unwrap();
    let ro = LmdbStore::open(
        dir.path(),
        &LmdbOptions {
            read_only: true,
            no_lock: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(ro.is_lock_free());
    check(&ro.reader().unwrap(), 0);
    assert!(!dir.path().join("lock.mdb").exists());
    drop(ro);
    // A plain read-only open uses the lock file when it can.
    let ro = common::store::open_lmdb_read_only(dir.path());
    assert!(!ro.is_lock_free());
    check(&ro.reader().unwrap(), 0);
}

/// A reader that recognised one layout still checks every value: one of
/// the same length whose header, length or padding bytes differ is checked
/// in full, and accepted or refused exactly as a fresh parse would.
#[test]
fn a_value_like_the_last_one_but_for_one_checked_byte_is_checked_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let good = tenstore::encode_buffer(&sample(0)).unwrap();
    let name_at = {
        let t = tenstore::Tensors::parse(&good).unwrap();
        assert_eq!(t.get(0).unwrap().name(), "image");
        // The first header's name word: after its chunk prefix and dtype.
        16 + 8
    };
    let mut renamed = good.clone();
    renamed[name_at + 4] = b'f';
    let mut bad_padding = good.clone();
    *bad_padding.last_mut().unwrap() = 1;
    let mut bad_length = good.clone();
    bad_length[8] ^= 0x40;
    let mut bad_dtype = good.clone();
    bad_dtype[16] = b'#';
    // Each bad value comes right after a good one of the same layout (a,
    // then f on the second pass), so it differs from the learned layout in
    // its one byte only; the renamed one comes last.
    let values: [(&[u8], &[u8]); 6] = [
        (b"a", &good),
        (b"c", &bad_padding),
        (b"d", &bad_length),
        (b"e", &bad_dtype),
        (b"b", &renamed),
        (b"f", &tenstore::encode_buffer(&sample(1)).unwrap()),
    ];
    // Written with plain heed: the store's own writes refuse bad values.
    // SAFETY: a fresh directory of this test; nothing else maps it.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(1 << 20)
            .open(dir.path())
            .unwrap()
    };
    let mut txn = env.write_txn().unwrap();
    let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
        env.create_database(&mut txn, None).unwrap();
    for (k, v) in values {
        db.put(&mut txn, k, v).unwrap();
    }
    txn.commit().unwrap();
    env.prepare_for_closing().wait();

    let store = common::store::open_lmdb_read_only(dir.path());
    let r = store.reader().unwrap();
    for _ in 0..2 {
        for (k, v) in values {
            let fresh = tenstore::Tensors::parse(v).map(|t| t.to_vec());
            match (r.get(k), fresh) {
                (Ok(Some(s)), Ok(views)) => assert_eq!(s.iter().collect::<Vec<_>>(), views),
                (Err(e), Err(fresh)) => assert!(e.to_string().contains(&fresh.to_string()), "{e}"),
                (got, fresh) => panic!("{:?}: got {got:?}, a parse says {fresh:?}", k),
            }
        }
    }
    assert_eq!(
        r.get(b"b").unwrap().unwrap().get(0).unwrap().name(),
        "imagf"
    );
    assert!(r.get(b"c").is_err() && r.get(b"d").is_err() && r.get(b"e").is_err());
}
