//! The shard store through the library: round trips, orders, deletes,
//! rolls, compaction, recovery and reindexing.

mod common;

use std::fs;
use std::ops::Bound;
use std::path::Path;

use tenstore::plan::{EpochPlan, PlanConfig, Shuffle};
use tenstore::store::{Durability, Problem, ShardOptions, ShardStore, StoreError};
use tenstore::{Tensor, TensorRef};

fn options() -> ShardOptions {
    ShardOptions {
        create: true,
        ..Default::default()
    }
}

fn sample(i: usize) -> Vec<Tensor> {
    common::store::standard_sample(i, 4)
}

fn key(i: usize) -> String {
    format!("k{i:05}")
}

fn put_range(store: &ShardStore, range: std::ops::Range<usize>) {
    let batch: Vec<(String, Vec<Tensor>)> = range.map(|i| (key(i), sample(i))).collect();
    store.put_batch(&batch).unwrap();
}

fn check(reader: &tenstore::store::ShardReader, i: usize) {
    let s = reader.require(key(i).as_bytes()).unwrap();
    assert_eq!(s.key(), key(i).as_bytes());
    let back: Vec<Tensor> = s.iter().map(|v| v.to_tensor().unwrap()).collect();
    assert_eq!(back, sample(i), "sample {i}");
    // Zero copy: every payload in a shard is 16-byte aligned.
    for v in s.iter() {
        assert_eq!(v.data().as_ptr() as usize % 16, 0);
    }
}

#[test]
fn samples_round_trip_in_every_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::store::create_shard(dir.path());
    // Written out of key order.
    let order = [5, 3, 9, 1, 7, 0, 2, 8, 4, 6];
    let batch: Vec<(String, Vec<Tensor>)> = order.iter().map(|&i| (key(i), sample(i))).collect();
    store.put_batch(&batch).unwrap();
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 10);
    for i in 0..10 {
        check(&r, i);
    }
    let written: Vec<Vec<u8>> = r
        .iter()
        .unwrap()
        .map(|s| s.unwrap().key().to_vec())
        .collect();
    assert_eq!(
        written,
        order
            .iter()
            .map(|&i| key(i).into_bytes())
            .collect::<Vec<_>>()
    );
    let sorted: Vec<Vec<u8>> = r
        .iter_from(Bound::Unbounded)
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(
        sorted,
        (0..10).map(|i| key(i).into_bytes()).collect::<Vec<_>>()
    );
    let after: Vec<Vec<u8>> = r
        .iter_from(Bound::Excluded(b"k00007"))
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(after, [b"k00008".to_vec(), b"k00009".to_vec()]);
    let prefixed: Vec<Vec<u8>> = r
        .iter_prefix(b"k0000")
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(prefixed.len(), 10);
    let a: Vec<Vec<u8>> = r
        .iter_shuffled(42)
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    let b: Vec<Vec<u8>> = r
        .iter_shuffled(42)
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    let c: Vec<Vec<u8>> = r
        .iter_shuffled(43)
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(a, c, "another seed, another order");
    let mut a_sorted = a.clone();
    a_sorted.sort();
    assert_eq!(a_sorted, sorted, "a permutation of every key");
}

#[test]
fn overwrites_deletes_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = common::store::create_shard(dir.path());
        put_range(&store, 0..20);
        store.put(key(3).as_bytes(), &sample(103)).unwrap();
        store.delete_exact(&[key(4)]).unwrap();
        let e = store.delete_exact(&[key(5), "missing".into()]).unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        let r = store.reader().unwrap();
        assert_eq!(r.len().unwrap(), 19);
        assert!(r.get(key(4).as_bytes()).unwrap().is_none());
        check(&r, 5);
    }
    let store = ShardStore::open(dir.path(), &ShardOptions::default()).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 19);
    let replaced = r.require(key(3).as_bytes()).unwrap();
    assert_eq!(
        replaced
            .get_by_name("label")
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        [103]
    );
    assert!(r.get(key(4).as_bytes()).unwrap().is_none());
    // The overwritten key now comes where it was last written.
    assert_eq!(
        r.iter().unwrap().last().unwrap().unwrap().key(),
        key(3).as_bytes()
    );
    assert!(r.verify().unwrap().is_empty());
}

#[test]
fn a_second_writer_is_refused_with_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _store = common::store::create_shard(dir.path());
    let e = match ShardStore::open(dir.path(), &ShardOptions::default()) {
        Err(e) => e,
        Ok(_) => panic!("a second writer opened"),
    };
    assert!(
        e.to_string()
            .contains(&format!("locked by pid {}", std::process::id())),
        "{e}"
    );
    // Readers need no lock.
    let ro = common::store::open_shard_read_only(dir.path());
    assert_eq!(ro.reader().unwrap().len().unwrap(), 0);
    assert!(ro.put(b"x", &sample(0)).is_err());
}

#[test]
fn shards_roll_and_snapshots_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        dir.path(),
        &ShardOptions {
            shard_limit: 4096,
            ..options()
        },
    )
    .unwrap();
    put_range(&store, 0..10);
    let mut r = store.reader().unwrap();
    put_range(&store, 10..40);
    assert_eq!(
        r.len().unwrap(),
        10,
        "a snapshot does not see later samples"
    );
    r.refresh().unwrap();
    assert_eq!(r.len().unwrap(), 40);
    for i in 0..40 {
        check(&r, i);
    }
    let stats = store.stats().unwrap();
    assert!(stats.shards > 5, "{stats:?}");
    for n in 1..=stats.shards {
        let shard = dir.path().join(format!("{n:06}.ten"));
        assert!(fs::metadata(&shard).unwrap().len() <= 4096 + 1024);
    }
}

#[test]
fn compaction_drops_dead_samples_while_old_snapshots_keep_reading() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        dir.path(),
        &ShardOptions {
            shard_limit: 8192,
            ..options()
        },
    )
    .unwrap();
    put_range(&store, 0..30);
    put_range(&store, 0..10); // overwrite
    let dead: Vec<String> = (10..20).map(key).collect();
    store.delete_exact(&dead).unwrap();
    let old = store.reader().unwrap();
    let before = store.stats().unwrap();
    let (b, a) = store.compact().unwrap();
    assert!(a < b, "{b} -> {a}");
    let after = store.stats().unwrap();
    assert_eq!(after.samples, 20);
    assert_eq!(
        after.shard_bytes, after.live_bytes,
        "no dead bytes after compaction"
    );
    assert!(before.shard_bytes > after.shard_bytes);
    // The old snapshot still reads its (unlinked) shards.
    for i in 0..30 {
        if !(10..20).contains(&i) {
            check(&old, i);
        }
    }
    let r = store.reader().unwrap();
    for i in (0..10).chain(20..30) {
        check(&r, i);
    }
    put_range(&store, 30..35);
    drop(store);
    let store = ShardStore::open(dir.path(), &ShardOptions::default()).unwrap();
    assert!(store.recovery().is_clean());
    assert_eq!(store.reader().unwrap().len().unwrap(), 25);
}

/// Ten samples in one shard, flushed; the paths of the shard and sidecar.
fn ten_samples(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let store = common::store::create_shard(dir);
    put_range(&store, 0..10);
    drop(store);
    last_shard(dir)
}

fn last_shard(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("MANIFEST")).unwrap()).unwrap();
    let n = m["shards"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_u64()
        .unwrap();
    (
        dir.join(format!("{n:06}.ten")),
        dir.join(format!("{n:06}.idx")),
    )
}

#[test]
fn torn_tails_are_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, idx) = ten_samples(dir.path());
    // An uncommitted record half-written, and half a sidecar record.
    let mut bytes = fs::read(&shard).unwrap();
    bytes.extend_from_slice(&tenstore::encode_buffer(&sample(99)).unwrap()[..100]);
    fs::write(&shard, &bytes).unwrap();
    let mut ib = fs::read(&idx).unwrap();
    ib.extend_from_slice(b"PUT \x05\0\0\0garbage");
    fs::write(&idx, &ib).unwrap();

    let store = ShardStore::open(dir.path(), &ShardOptions::default()).unwrap();
    let rep = store.recovery().clone();
    assert_eq!(rep.shard_bytes_dropped, 100, "{rep:?}");
    assert_eq!(rep.sidecar_bytes_dropped, 15, "{rep:?}");
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 10);
    for i in 0..10 {
        check(&r, i);
    }
    // Appending continues after the cut.
    put_range(&store, 10..12);
    let r = store.reader().unwrap();
    check(&r, 11);
}

#[test]
fn a_damaged_sidecar_hides_what_follows_and_verify_reports_bad_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, idx) = ten_samples(dir.path());
    // Flip a data byte of sample 2: the crc catches it.
    let r = read_only(dir.path());
    let image = r.require(key(2).as_bytes()).unwrap().get(0).unwrap();
    let offset = image.data().as_ptr() as usize
        - r.iter()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .as_bytes()
            .as_ptr() as usize;
    drop(r);
    let mut bytes = fs::read(&shard).unwrap();
    // `offset` is relative to sample 0's tensors, which start after its key array.
    let base = 16 + 64 + 16 + 64;
    bytes[base + offset] ^= 0xFF;
    fs::write(&shard, &bytes).unwrap();
    let store = ShardStore::open(
        dir.path(),
        &ShardOptions {
            read_only: true,
            verify_reads: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = store.reader().unwrap();
    let report = r.verify().unwrap();
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(
        matches!(&report.problems[0], Problem::Checksum { key: k, found, committed }
            if k == key(2).as_bytes() && found != committed),
        "{report:?}"
    );
    let line = report.to_string();
    assert!(
        line.contains("k00002") && line.contains("checksum"),
        "{line}"
    );
    assert!(matches!(
        r.get(key(2).as_bytes()),
        Err(StoreError::Corrupt { .. })
    ));
    check(&r, 3);
    drop(store);

    // Damage sidecar record 5: records 0-4 stay visible.
    let mut ib = fs::read(&idx).unwrap();
    let rec = 32 + 8; // fixed part plus a 6-byte key padded to 8
    ib[16 + 5 * rec + 9] ^= 1;
    fs::write(&idx, &ib).unwrap();
    let store = common::store::open_shard_read_only(dir.path());
    // The key table, a checked copy of the sidecars, still names every
    // sample; verify reports the damaged sidecar.
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 10);
    assert!(r
        .verify()
        .unwrap()
        .problems
        .iter()
        .any(|p| p.to_string().contains("records stop being valid")));
    drop((r, store));
    // Without the table, readers stop at the damage.
    fs::remove_file(dir.path().join("keys.tbl")).unwrap();
    let store = common::store::open_shard_read_only(dir.path());
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 5);
    assert_eq!(r.load_report().torn_sidecars.len(), 1);
    assert!(r
        .verify()
        .unwrap()
        .lines()
        .iter()
        .any(|p| p.contains("records stop being valid")));
}

#[test]
fn reindex_rebuilds_lost_sidecars_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = ShardStore::open(
            dir.path(),
            &ShardOptions {
                shard_limit: 4096,
                ..options()
            },
        )
        .unwrap();
        put_range(&store, 0..30);
        store.delete_exact(&[key(7)]).unwrap();
        store.put(key(8).as_bytes(), &sample(108)).unwrap();
    }
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") || p.file_name().unwrap() == "MANIFEST" {
            fs::remove_file(p).unwrap();
        }
    }
    assert!(ShardStore::open(dir.path(), &ShardOptions::default()).is_err());
    let report = ShardStore::reindex(dir.path()).unwrap();
    assert!(report.len() > 3);
    assert!(
        report
            .iter()
            .all(|s| s.bytes_after == 0 && s.rebuilt == s.records),
        "{report:?}"
    );
    let store = ShardStore::open(dir.path(), &ShardOptions::default()).unwrap();
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 29);
    assert!(
        r.get(key(7).as_bytes()).unwrap().is_none(),
        "the tombstone survives reindexing"
    );
    assert_eq!(
        r.require(key(8).as_bytes())
            .unwrap()
            .get_by_name("label")
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        [108]
    );
    assert!(r.verify().unwrap().is_empty());
}

#[test]
fn reserved_names_and_bad_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        dir.path(),
        &ShardOptions {
            durability: Durability::Sample,
            ..options()
        },
    )
    .unwrap();
    let x = ndarray::arr1(&[1u8]);
    let e = store
        .put(b"k", &[TensorRef::from_array("__key__", &x).unwrap()])
        .unwrap_err();
    assert!(matches!(e, StoreError::ReservedName { .. }), "{e}");
    assert!(matches!(
        store.put(b"", &sample(0)),
        Err(StoreError::BadKey { .. })
    ));
    assert_eq!(store.reader().unwrap().len().unwrap(), 0);
    store.put(b"k", &sample(1)).unwrap();
    assert_eq!(store.reader().unwrap().len().unwrap(), 1);
}

#[test]
fn shards_are_plain_tenbin_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::store::create_shard(dir.path());
    put_range(&store, 0..3);
    store.flush().unwrap();
    let bytes = fs::read(dir.path().join("000001.ten")).unwrap();
    let views = tenstore::decode_buffer(&bytes).unwrap();
    assert_eq!(views.len(), 12);
    assert_eq!(views[0].name(), "__key__");
    assert_eq!(views[0].data(), b"k00000");
    assert_eq!(views[1].name(), "image");
    assert_eq!(views[4].data(), b"k00001");
}

// --- damaged sidecars: the writer never cuts intact samples -----------------

fn read_only(dir: &Path) -> tenstore::store::ShardReader {
    common::store::open_shard_read_only(dir).reader().unwrap()
}

/// Opening for writing refuses and changes nothing; reindexing brings
/// every sample back; the writer then appends after them.
fn refused_then_reindexed(dir: &Path, shard: &Path, idx: &Path, rebuilt: u64) {
    let (shard_before, idx_before) = (fs::read(shard).unwrap(), fs::read(idx).unwrap());
    match ShardStore::open(dir, &ShardOptions::default()) {
        Err(e @ StoreError::NeedsReindex { .. }) => {
            assert!(e.to_string().contains("tenstore reindex"), "{e}")
        }
        Err(e) => panic!("expected a refusal naming reindex, got {e}"),
        Ok(s) => panic!("opened for writing: {:?}", s.recovery()),
    }
    assert_eq!(fs::read(shard).unwrap(), shard_before, "shard unchanged");
    assert_eq!(fs::read(idx).unwrap(), idx_before, "sidecar unchanged");
    let report = ShardStore::reindex(dir).unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].records, 10, "{report:?}");
    assert_eq!(report[0].rebuilt, rebuilt, "{report:?}");
    assert_eq!(report[0].bytes_unindexed, 0, "{report:?}");
    let store = ShardStore::open(dir, &ShardOptions::default()).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    put_range(&store, 10..11);
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 11);
    for i in 0..11 {
        check(&r, i);
    }
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
    assert!(!r.load_report().hides_records());
}

#[test]
fn a_zeroed_sidecar_byte_hides_nothing_from_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, idx) = ten_samples(dir.path());
    let mut ib = fs::read(&idx).unwrap();
    let rec = 32 + 8; // fixed part plus a 6-byte key padded to 8
    ib[16 + 3 * rec] = 0; // the kind of record 3
    fs::write(&idx, &ib).unwrap();
    // With the key table, readers see all ten; verify says what is wrong.
    let r = read_only(dir.path());
    assert_eq!(r.len().unwrap(), 10);
    assert!(
        r.verify()
            .unwrap()
            .problems
            .iter()
            .any(|p| p.to_string().contains("7 whole records")),
        "{:?}",
        r.verify()
    );
    drop(r);
    fs::remove_file(dir.path().join("keys.tbl")).unwrap();
    // Without it, readers see three samples, and say what they stepped
    // around.
    let r = read_only(dir.path());
    assert_eq!(r.len().unwrap(), 3);
    assert!(r.load_report().hides_records());
    let problems = r.verify().unwrap().lines();
    assert!(
        problems.iter().any(|p| p.contains("7 whole records")),
        "{problems:?}"
    );
    drop(r);
    // Sidecar records 4..10 are still valid: only record 3 is rebuilt.
    refused_then_reindexed(dir.path(), &shard, &idx, 1);
}

#[test]
fn an_emptied_sidecar_hides_nothing_from_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, idx) = ten_samples(dir.path());
    fs::write(&idx, b"").unwrap();
    let r = read_only(dir.path());
    assert_eq!(r.len().unwrap(), 0);
    let problems = r.verify().unwrap().lines();
    assert!(
        problems.iter().any(|p| p.contains("10 whole records")),
        "{problems:?}"
    );
    drop(r);
    refused_then_reindexed(dir.path(), &shard, &idx, 10);
}

/// A sidecar torn inside a record with six whole records after it in the
/// shard: what a crash during a batch's commit leaves. The writer cuts the
/// batch (never acknowledged), but only after saving its records, and the
/// saved file gives every one of them back.
#[test]
fn a_batch_torn_in_its_commit_is_cut_only_after_its_records_are_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, idx) = ten_samples(dir.path());
    let rec = 32 + 8;
    let ib = fs::read(&idx).unwrap();
    fs::write(&idx, &ib[..16 + 4 * rec + 13]).unwrap();
    let full = fs::read(&shard).unwrap();
    let r = read_only(dir.path());
    assert_eq!(r.len().unwrap(), 4);
    assert!(r.load_report().hides_records());
    drop(r);

    let store = ShardStore::open(dir.path(), &ShardOptions::default()).unwrap();
    let rep = store.recovery().clone();
    let cut = rep
        .cuts
        .iter()
        .find(|c| c.file == "000001.ten")
        .unwrap_or_else(|| panic!("no shard cut: {rep:?}"));
    let saved = match &cut.reason {
        tenstore::store::CutReason::UncommittedBatch {
            records: 6,
            first_key,
            saved: Some(saved),
        } if first_key == key(4).as_bytes() => saved.clone(),
        other => panic!("{other:?}"),
    };
    assert!(rep.to_string().contains(&saved), "{rep}");
    assert!(rep.to_string().contains("tenstore reindex"), "{rep}");
    // The saved bytes are exactly what was cut.
    let shard_len = fs::metadata(&shard).unwrap().len();
    assert_eq!(cut.offset, shard_len);
    assert_eq!(
        fs::read(dir.path().join(&saved)).unwrap(),
        full[shard_len as usize..]
    );
    put_range(&store, 10..11);
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 5);
    for i in (0..4).chain(10..11) {
        check(&r, i);
    }
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
    drop(r);
    drop(store);

    // The way back the report names: the file as a shard of a new folder,
    // reindexed, holds the six samples whole.
    let back = tempfile::tempdir().unwrap();
    fs::copy(dir.path().join(&saved), back.path().join("000001.ten")).unwrap();
    let report = ShardStore::reindex(back.path()).unwrap();
    assert_eq!(report[0].records, 6, "{report:?}");
    assert_eq!(report[0].bytes_unindexed, 0, "{report:?}");
    let r = read_only(back.path());
    assert_eq!(r.len().unwrap(), 6);
    for i in 4..10 {
        check(&r, i);
    }
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
}

#[test]
fn an_uncommitted_last_record_is_cut_saved_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, idx) = ten_samples(dir.path());
    // The last sidecar record never written: a crash between the shard
    // write and the commit.
    let rec = 32 + 8;
    let ib = fs::read(&idx).unwrap();
    fs::write(&idx, &ib[..16 + 9 * rec]).unwrap();
    let full = fs::metadata(&shard).unwrap().len();
    let store = ShardStore::open(dir.path(), &ShardOptions::default()).unwrap();
    let rep = store.recovery().clone();
    assert_eq!(rep.cuts.len(), 1, "{rep:?}");
    let cut = &rep.cuts[0];
    let saved = match &cut.reason {
        tenstore::store::CutReason::Uncommitted {
            key: k,
            delete: false,
            whole: true,
            saved: Some(saved),
        } if k == key(9).as_bytes() => saved.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(cut.offset + cut.len, full);
    assert_eq!(fs::metadata(&shard).unwrap().len(), cut.offset);
    assert!(rep.to_string().contains("k00009"), "{rep}");
    // The saved bytes are the sample's tenbin buffer: `put` takes it back.
    let bytes = fs::read(dir.path().join(saved)).unwrap();
    assert_eq!(bytes, tenstore::encode_buffer(&sample(9)).unwrap());
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 9);
    assert!(r.verify().unwrap().is_empty());
}

#[test]
fn scans_check_every_records_crc32c_without_verify_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, _) = ten_samples(dir.path());
    // Flip one byte of sample 3's logits: its tenbin structure stays valid,
    // so only the record's crc32c can tell.
    let logits = sample(3)[1].any().as_bytes().to_vec();
    let mut bytes = fs::read(&shard).unwrap();
    let at = bytes
        .windows(logits.len())
        .position(|w| w == &logits[..])
        .expect("sample 3's logits are in the shard");
    bytes[at + 5] ^= 0x10;
    fs::write(&shard, &bytes).unwrap();
    let shard_name = shard.file_name().unwrap().to_str().unwrap().to_owned();

    let r = read_only(dir.path());
    let refused = |what: &str, got: Vec<Result<Vec<u8>, StoreError>>, expect_keys: Vec<String>| {
        assert_eq!(got.len(), expect_keys.len(), "{what}");
        for (got, k) in got.iter().zip(&expect_keys) {
            match got {
                Ok(seen) => {
                    assert_ne!(k, &key(3), "{what}: the damaged sample was handed out");
                    assert_eq!(seen, k.as_bytes(), "{what}");
                }
                Err(e @ StoreError::Corrupt { .. }) => {
                    assert_eq!(k, &key(3), "{what}: {e}");
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&key(3))
                            && msg.contains("checksum")
                            && msg.contains(&shard_name),
                        "{what}: {msg}"
                    );
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    };
    let keys = |order: &[usize]| order.iter().map(|&i| key(i)).collect::<Vec<_>>();
    fn collect<'a>(
        it: impl Iterator<Item = tenstore::store::Result<tenstore::store::Sample<'a>>>,
    ) -> Vec<Result<Vec<u8>, StoreError>> {
        it.map(|s| s.map(|s| s.key().to_vec())).collect()
    }
    // Write order, key order and a prefix scan: every other sample comes
    // through, the damaged one is refused.
    refused(
        "iter",
        collect(r.iter().unwrap()),
        keys(&(0..10).collect::<Vec<_>>()),
    );
    refused(
        "iter_from",
        collect(r.iter_from(Bound::Unbounded).unwrap()),
        keys(&(0..10).collect::<Vec<_>>()),
    );
    refused(
        "iter_prefix",
        collect(r.iter_prefix(b"k0000").unwrap()),
        keys(&(0..10).collect::<Vec<_>>()),
    );
    // Epoch plans, in storage order and shuffled.
    for shuffle in [Shuffle::None, Shuffle::Full] {
        let plan = EpochPlan::new(
            10,
            PlanConfig {
                shuffle,
                ..PlanConfig::default()
            },
        )
        .unwrap();
        let order: Vec<usize> = plan.iter().map(|i| i as usize).collect();
        refused(
            &format!("{shuffle:?}"),
            collect(r.iter_plan(&plan).unwrap()),
            keys(&order),
        );
    }
    // A random get without verify_reads reads the record unchecked (the
    // flipped bit shows); with it, the get is refused too.
    let got = r.require(key(3).as_bytes()).unwrap();
    assert_ne!(got.get(1).unwrap().data(), &logits[..]);
    // `get_checked` (what a loader walking its own key list uses) checks
    // like a scan, without verify_reads.
    assert!(matches!(
        r.get_checked(key(3).as_bytes()),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(
        r.get_checked(key(4).as_bytes()).unwrap().unwrap().key(),
        key(4).as_bytes()
    );
    // serve hands samples to other processes, which cannot check them:
    // its gets are checked too.
    let any = tenstore::store::Reader::Shard(r.clone());
    let limits = tenstore::serve::Limits::default();
    for cmd in [&b"get"[..], b"getm"] {
        match tenstore::serve::handle(&any, &[cmd, key(3).as_bytes()], &limits) {
            tenstore::serve::Reply::Err(msg) => assert!(msg.contains("checksum"), "{msg}"),
            tenstore::serve::Reply::Ok(_) => panic!("serve handed out the damaged sample"),
        }
        assert!(matches!(
            tenstore::serve::handle(&any, &[cmd, key(4).as_bytes()], &limits),
            tenstore::serve::Reply::Ok(_)
        ));
    }
    let store = ShardStore::open(
        dir.path(),
        &ShardOptions {
            read_only: true,
            verify_reads: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        store.reader().unwrap().get(key(3).as_bytes()),
        Err(StoreError::Corrupt { .. })
    ));
}
