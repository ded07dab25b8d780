//! The shard store's key table (`keys.tbl`): it agrees with the sidecars
//! and a model through puts, deletes, compactions and reopenings; a
//! damaged or stale table is detected and not trusted; a refresh with
//! nothing new reads no sidecar bytes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ndarray::Array;
use proptest::prelude::*;
use tenstore::store::shard::{sidecar_bytes_read, Faults, KeyTable};
use tenstore::store::{ShardOptions, ShardReader, ShardStore};
use tenstore::Tensor;

const TABLE: &str = "keys.tbl";
const TOP: &str = "keys2.tbl";

fn options() -> ShardOptions {
    ShardOptions {
        create: true,
        shard_limit: 8192,
        ..Default::default()
    }
}

fn read_only(dir: &Path) -> ShardReader {
    common::store::open_shard_read_only(dir).reader().unwrap()
}

fn key(i: u16) -> Vec<u8> {
    format!("key{i:03}").into_bytes()
}

fn sample(v: u32) -> Vec<Tensor> {
    let a = Array::from_elem(3, v).into_dyn();
    vec![Tensor::new("v", a).unwrap()]
}

fn value(r: &ShardReader, key: &[u8]) -> Option<u32> {
    r.get(key).unwrap().map(|s| {
        let t = s.get(0).unwrap().to_vec::<u32>().unwrap();
        t[0]
    })
}

/// Every key of the model reads back its value, no other key is there,
/// and counts and iteration agree.
fn agrees(r: &ShardReader, model: &BTreeMap<Vec<u8>, u32>, probe: &[Vec<u8>]) {
    assert_eq!(r.len().unwrap() as usize, model.len());
    for k in probe {
        assert_eq!(value(r, k), model.get(k).copied(), "key {k:?}");
    }
    let keys: Vec<Vec<u8>> = r
        .iter_from(std::ops::Bound::Unbounded)
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
    let written: Vec<Vec<u8>> = r.iter().unwrap().keys().map(<[u8]>::to_vec).collect();
    // What plans address: the `i`-th sample in write order.
    let at: Vec<Vec<u8>> = (0..written.len() as u64)
        .map(|i| r.key_at(i).unwrap().to_vec())
        .collect();
    assert_eq!(at, written);
    assert_eq!(r.key_at(written.len() as u64), None);
    let mut shuffled: Vec<Vec<u8>> = r
        .iter_shuffled(7)
        .unwrap()
        .keys()
        .map(<[u8]>::to_vec)
        .collect();
    shuffled.sort();
    assert_eq!(shuffled, keys);
    let mut sorted = written;
    sorted.sort();
    assert_eq!(sorted, keys);
    // Key order from inside the key range, both bounds, and by prefix.
    for from in [
        key(0),
        key(17),
        b"key01".to_vec(),
        b"key0175".to_vec(),
        b"zzz".to_vec(),
    ] {
        let after: Vec<Vec<u8>> = r
            .iter_from(std::ops::Bound::Excluded(&from))
            .unwrap()
            .keys()
            .map(<[u8]>::to_vec)
            .collect();
        let want: Vec<Vec<u8>> = model.keys().filter(|k| **k > from).cloned().collect();
        assert_eq!(after, want, "after {from:?}");
        let with: Vec<Vec<u8>> = r
            .iter_prefix(&from)
            .unwrap()
            .keys()
            .map(<[u8]>::to_vec)
            .collect();
        let want: Vec<Vec<u8>> = model
            .keys()
            .filter(|k| k.starts_with(&from))
            .cloned()
            .collect();
        assert_eq!(with, want, "prefix {from:?}");
    }
    // Every sample an order yields reads (its checksum checked).
    for s in r.iter().unwrap() {
        let s = s.unwrap();
        assert_eq!(
            Some(&s.get(0).unwrap().to_vec::<u32>().unwrap()[0]),
            model.get(s.key())
        );
    }
}

/// Write order is the order of each live key's last put: a put moves its
/// key to the end, a deletion drops it, compaction keeps the order.
fn in_write_order(r: &ShardReader, order: &[Vec<u8>]) {
    let written: Vec<Vec<u8>> = r.iter().unwrap().keys().map(<[u8]>::to_vec).collect();
    assert_eq!(written, order);
}

#[derive(Clone, Debug)]
enum Op {
    Put(u16, u32),
    Delete(u16),
    Flush,
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..40, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u16..40).prop_map(Op::Delete),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// Opens the writer; with `due`, it rewrites the key table (merging the
/// old one with what came after it) after every `due` records.
fn open_writer(dir: &Path, due: Option<u64>) -> ShardStore {
    let s = ShardStore::open(dir, &options()).unwrap();
    s.inject_faults(Faults {
        table_due: due,
        ..Default::default()
    });
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// After each step a fresh reader (table plus the sidecar records
    /// after it), a reader refreshed incrementally, and a reader of the
    /// sidecars alone (table removed from a copy) agree with the model;
    /// the writer's own lookups (`delete_exact` of a missing key fails)
    /// agree too. With `due`, the writer merges its delta into a new
    /// table every few records, between the steps.
    #[test]
    fn table_sidecars_and_model_agree(
        ops in prop::collection::vec(op(), 1..40),
        due in prop::option::of(1u64..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(open_writer(dir.path(), due));
        let mut model = BTreeMap::new();
        let mut order: Vec<Vec<u8>> = Vec::new();
        let probe: Vec<Vec<u8>> = (0..42).map(key).collect();
        let mut live = store.as_ref().unwrap().reader().unwrap();
        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::Put(k, v) => {
                    s.put(&key(k), &sample(v)).unwrap();
                    model.insert(key(k), v);
                    order.retain(|o| *o != key(k));
                    order.push(key(k));
                }
                Op::Delete(k) => {
                    let r = s.delete_exact(&[key(k)]);
                    prop_assert_eq!(r.is_ok(), model.remove(&key(k)).is_some());
                    order.retain(|o| *o != key(k));
                }
                Op::Flush => s.flush().unwrap(),
                Op::Compact => {
                    s.compact().unwrap();
                }
                Op::Reopen => {
                    drop(store.take());
                    store = Some(open_writer(dir.path(), due));
                    // A closed writer leaves a table that covers everything.
                    let r = read_only(dir.path());
                    prop_assert_eq!(&r.load_report().key_table, &KeyTable::Used { tail_records: 0 });
                }
            }
            store.as_ref().unwrap().flush().unwrap();
            let fresh = store.as_ref().unwrap().reader().unwrap();
            let used = matches!(fresh.load_report().key_table, KeyTable::Used { .. });
            prop_assert!(used, "{:?}", fresh.load_report());
            agrees(&fresh, &model, &probe);
            in_write_order(&fresh, &order);
            live.refresh().unwrap();
            agrees(&live, &model, &probe);
            in_write_order(&live, &order);
            // Both read the same snapshot's samples: the same shuffle.
            let shuffle = |r: &ShardReader| -> Vec<Vec<u8>> {
                r.iter_shuffled(3).unwrap().keys().map(<[u8]>::to_vec).collect()
            };
            prop_assert_eq!(shuffle(&fresh), shuffle(&live));
        }
        drop(live);
        drop(store.take());
        // The sidecars alone say the same.
        fs::remove_file(dir.path().join(TABLE)).unwrap();
        let r = read_only(dir.path());
        prop_assert_eq!(&r.load_report().key_table, &KeyTable::Absent);
        agrees(&r, &model, &probe);
        in_write_order(&r, &order);
    }
}

/// A store of 300 samples (several shards), closed, with a table; some
/// overwritten and deleted after the table was written.
fn store_with_tail(dir: &Path) -> BTreeMap<Vec<u8>, u32> {
    let mut model = BTreeMap::new();
    {
        let s = ShardStore::open(dir, &options()).unwrap();
        for i in 0..300u16 {
            s.put(&key(i), &sample(u32::from(i))).unwrap();
            model.insert(key(i), u32::from(i));
        }
    }
    // Records appended now are past the table (put back as it was
    // after this session, as if the process had died before closing).
    let table = fs::read(dir.join(TABLE)).unwrap();
    let s = ShardStore::open(dir, &options()).unwrap();
    s.put(&key(5), &sample(1005)).unwrap();
    s.delete_exact(&[key(6)]).unwrap();
    s.put(&key(400), &sample(400)).unwrap();
    s.flush().unwrap();
    model.insert(key(5), 1005);
    model.remove(&key(6));
    model.insert(key(400), 400);
    drop(s);
    fs::write(dir.join(TABLE), table).unwrap();
    // The second level the close wrote over it is gone too.
    fs::remove_file(dir.join(TOP)).unwrap();
    model
}

#[test]
fn records_after_the_table_are_read_from_the_sidecar_tails() {
    let dir = tempfile::tempdir().unwrap();
    let model = store_with_tail(dir.path());
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 3 }
    );
    let probe: Vec<Vec<u8>> = (0..420).map(key).collect();
    agrees(&r, &model, &probe);
    let live_bytes = r.stats().unwrap().live_bytes;
    fs::remove_file(dir.path().join(TABLE)).unwrap();
    let plain = read_only(dir.path());
    assert_eq!(plain.stats().unwrap().live_bytes, live_bytes);
}

fn damaged_table_is_not_trusted(damage: impl Fn(&Path), expect_at_open: bool) {
    let dir = tempfile::tempdir().unwrap();
    let model = store_with_tail(dir.path());
    damage(&dir.path().join(TABLE));
    let r = read_only(dir.path());
    let probe: Vec<Vec<u8>> = (0..420).map(key).collect();
    agrees(&r, &model, &probe);
    if expect_at_open {
        assert!(
            matches!(r.load_report().key_table, KeyTable::Ignored(_)),
            "{:?}",
            r.load_report()
        );
    } else {
        // Found by a lookup (at open, for the records after the table,
        // or later), then the sidecars are read.
        let ignored = matches!(r.load_report().key_table, KeyTable::Ignored(_));
        assert!(ignored || r.table_damage().is_some());
    }
    assert!(
        r.verify()
            .unwrap()
            .problems
            .iter()
            .any(|p| p.to_string().contains("key table")),
        "{:?}",
        r.verify()
    );
    // The next writer rewrites it.
    drop(ShardStore::open(dir.path(), &options()).unwrap());
    let r = read_only(dir.path());
    assert!(matches!(r.load_report().key_table, KeyTable::Used { .. }));
    agrees(&r, &model, &probe);
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
}

#[test]
fn a_flipped_header_byte_is_detected() {
    damaged_table_is_not_trusted(
        |p| {
            let mut b = fs::read(p).unwrap();
            b[24] ^= 1; // the count
            fs::write(p, b).unwrap();
        },
        true,
    );
}

#[test]
fn a_flipped_body_byte_is_detected() {
    damaged_table_is_not_trusted(
        |p| {
            let mut b = fs::read(p).unwrap();
            let n = b.len();
            b[n - 10] ^= 0x20; // a key byte near the end
            fs::write(p, b).unwrap();
        },
        false,
    );
}

#[test]
fn a_truncated_table_is_detected() {
    damaged_table_is_not_trusted(
        |p| {
            let b = fs::read(p).unwrap();
            fs::write(p, &b[..b.len() - 40]).unwrap();
        },
        true,
    );
}

#[test]
fn a_stale_table_is_not_trusted() {
    // The table of an older state of the same store, put back.
    damaged_table_is_not_trusted(
        |p| {
            let dir = p.parent().unwrap();
            let old = fs::read(p).unwrap();
            // A compaction writes new shards and a new table: put the old
            // table back.
            ShardStore::open(dir, &options())
                .unwrap()
                .compact()
                .unwrap();
            fs::write(p, old).unwrap();
        },
        true,
    );
}

#[test]
fn a_refresh_with_nothing_new_reads_no_sidecar_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // One shard: a roll would add a new sidecar's header to what is read.
    let options = ShardOptions {
        create: true,
        ..Default::default()
    };
    let s = ShardStore::open(dir.path(), &options).unwrap();
    for i in 0..200u16 {
        s.put(&key(i), &sample(u32::from(i))).unwrap();
    }
    drop(s);
    let before = sidecar_bytes_read();
    let mut r = read_only(dir.path());
    let at_open = sidecar_bytes_read() - before;
    // Opening reads only the checked tail of each covered sidecar.
    let shards = r.stats().unwrap().shards;
    assert!(
        at_open <= 64 * shards,
        "{at_open} bytes for {shards} shards"
    );
    let before = sidecar_bytes_read();
    r.refresh().unwrap();
    assert_eq!(sidecar_bytes_read() - before, 0);
    // k new records: only their sidecar bytes are read.
    let s = ShardStore::open(dir.path(), &options).unwrap();
    s.put(&key(500), &sample(500)).unwrap();
    s.put(&key(501), &sample(501)).unwrap();
    let before = sidecar_bytes_read();
    r.refresh().unwrap();
    let read = sidecar_bytes_read() - before;
    assert_eq!(read, 2 * (32 + 8), "two sidecar records of 6-byte keys");
    assert_eq!(value(&r, &key(501)), Some(501));
    assert_eq!(r.len().unwrap(), 202);
}

/// A key table write that fails (here before its rename) fails no put:
/// the records are committed, readers read them from the sidecars past
/// the old table, and a later writer writes a table covering them.
#[test]
fn a_failed_table_write_fails_no_put_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShardStore::open(dir.path(), &options()).unwrap();
    s.inject_faults(Faults {
        table_due: Some(10),
        table_writes: Some(1),
        ..Default::default()
    });
    let mut model = BTreeMap::new();
    for i in 0..60u16 {
        s.put(&key(i), &sample(u32::from(i) + 7)).unwrap();
        model.insert(key(i), u32::from(i) + 7);
    }
    s.delete_exact(&[key(3)]).unwrap();
    model.remove(&key(3));
    assert!(s.delete_exact(&[key(3)]).is_err());
    s.flush().unwrap();
    drop(s);
    let probe: Vec<Vec<u8>> = (0..70).map(key).collect();
    let r = read_only(dir.path());
    // The one table written after the first 10 records; 51 records after.
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 51 }
    );
    agrees(&r, &model, &probe);
    drop(ShardStore::open(dir.path(), &options()).unwrap());
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 0 }
    );
    agrees(&r, &model, &probe);
}

/// A writer that writes a second level and reads back a table that is
/// not the one it wrote (here: another valid base renamed over keys.tbl,
/// as a compaction that failed after writing its base leaves) must not
/// adopt it. Before the fix it did, forgot the records of the second
/// level it had just written, and its next second level covered the
/// sidecars to their ends without them: readers then lost every key
/// written since the older base.
#[test]
fn a_writer_never_adopts_a_table_other_than_the_one_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShardStore::open(dir.path(), &options()).unwrap();
    s.inject_faults(Faults {
        table_due: Some(1),
        ..Default::default()
    });
    let mut model = BTreeMap::new();
    let put = |range: std::ops::Range<u16>, model: &mut BTreeMap<Vec<u8>, u32>| {
        let batch: Vec<(Vec<u8>, Vec<Tensor>)> = range
            .clone()
            .map(|i| (key(i), sample(u32::from(i) + 1)))
            .collect();
        s.put_batch(&batch).unwrap();
        for i in range {
            model.insert(key(i), u32::from(i) + 1);
        }
    };
    put(0..100, &mut model);
    let base0 = fs::read(dir.path().join("keys.tbl")).unwrap();
    put(100..160, &mut model); // a new base: the delta is over half the old one
    assert!(!dir.path().join("keys2.tbl").exists());
    put(160..161, &mut model); // a second level over it
    assert!(dir.path().join("keys2.tbl").exists());
    // The older base, renamed over the current one.
    let tmp = dir.path().join("keys.tbl.test");
    fs::write(&tmp, &base0).unwrap();
    fs::rename(&tmp, dir.path().join("keys.tbl")).unwrap();
    put(161..162, &mut model);
    put(162..163, &mut model);
    s.flush().unwrap();
    let probe: Vec<Vec<u8>> = (0..170).map(key).collect();
    for k in &probe {
        assert_eq!(
            s.reader().unwrap().get(k).unwrap().is_some(),
            model.contains_key(k),
            "the writer's own lookup of {k:?}"
        );
    }
    drop(s);
    agrees(&read_only(dir.path()), &model, &probe);
    drop(ShardStore::open(dir.path(), &options()).unwrap());
    agrees(&read_only(dir.path()), &model, &probe);
}

/// A new base written from keys that all sort after the old base's last
/// one is appended to the old table, but a key put and deleted since (a
/// deletion no row holds) must not be appended as a row. Before the fix it
/// was: the table came out longer than its totals, was refused, and the
/// writer rebuilt it from every sidecar, O(store) memory and reads.
#[test]
fn an_in_order_base_write_with_a_deleted_new_key_does_not_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShardStore::open(dir.path(), &options()).unwrap();
    let mut model = BTreeMap::new();
    let batch = |range: std::ops::Range<u16>| -> Vec<(Vec<u8>, Vec<Tensor>)> {
        range.map(|i| (key(i), sample(u32::from(i)))).collect()
    };
    s.put_batch(&batch(0..500)).unwrap();
    s.flush().unwrap();
    drop(s);
    let s = ShardStore::open(dir.path(), &options()).unwrap();
    s.inject_faults(Faults {
        table_due: Some(501),
        ..Default::default()
    });
    (0..1000).for_each(|i| {
        model.insert(key(i), u32::from(i));
    });
    s.put_batch(&batch(500..1000)).unwrap();
    let before = sidecar_bytes_read();
    s.delete_exact(&[key(750)]).unwrap();
    model.remove(&key(750));
    // Checking the sidecars' tails reads (up to) 64 bytes of each; the
    // fallback reads them again on top.
    let read = sidecar_bytes_read() - before;
    let sidecars = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("idx".as_ref()))
        .count() as u64;
    assert!(
        read <= 64 * sidecars,
        "the table write fell back to reading the sidecars ({read} bytes, {sidecars} sidecars)"
    );
    s.flush().unwrap();
    drop(s);
    let probe: Vec<Vec<u8>> = (0..1010).map(key).collect();
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 0 }
    );
    agrees(&r, &model, &probe);
}

/// Keys that sort in the order they are numbered.
fn ordered_key(i: u32) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

/// Puts `range` in key order, in batches of 50, through a writer that
/// rewrites its table every `due` records; returns the store.
fn import_in_order(dir: &Path, range: std::ops::Range<u32>, due: u64) -> ShardStore {
    let s = ShardStore::open(dir, &options()).unwrap();
    s.inject_faults(Faults {
        table_due: Some(due),
        ..Default::default()
    });
    let all: Vec<u32> = range.collect();
    for chunk in all.chunks(50) {
        let batch: Vec<(Vec<u8>, Vec<Tensor>)> =
            chunk.iter().map(|&i| (ordered_key(i), sample(i))).collect();
        s.put_batch(&batch).unwrap();
    }
    s
}

/// An import in key order rewrites the table by appending to the old
/// one (its entries' whole blocks kept with their checksums): the table
/// it leaves is byte for byte the one rebuilt from the sidecars, and
/// every key reads back.
#[test]
fn a_table_appended_in_key_order_is_the_one_rebuilt_from_the_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    // 2000 entries of 40 bytes: several whole 16 KiB blocks, and a
    // rewrite every 150 records.
    let n = 2000u32;
    drop(import_in_order(dir.path(), 0..n, 150));
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 0 }
    );
    let model: BTreeMap<Vec<u8>, u32> = (0..n).map(|i| (ordered_key(i), i)).collect();
    let probe: Vec<Vec<u8>> = (0..n + 5).step_by(7).map(ordered_key).collect();
    agrees(&r, &model, &probe);
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
    drop(r);
    // Merge the second level into the base (a writer whose delta is as
    // large as the base writes one base): the base it leaves was
    // appended to at every merge.
    if dir.path().join(TOP).exists() {
        let s = import_in_order(dir.path(), n..2 * n, 1 << 30);
        drop(s);
    }
    assert!(!dir.path().join(TOP).exists());
    let appended = fs::read(dir.path().join(TABLE)).unwrap();
    fs::remove_file(dir.path().join(TABLE)).unwrap();
    drop(ShardStore::open(dir.path(), &options()).unwrap());
    let rebuilt = fs::read(dir.path().join(TABLE)).unwrap();
    assert_eq!(appended.len(), rebuilt.len());
    assert!(appended == rebuilt, "the appended table differs");
}

/// A damaged block among the old entries (kept as they are by an
/// appending rewrite) is found at the next rewrite, which rebuilds the
/// table from the sidecars instead of carrying the damage on.
#[test]
fn an_appending_rewrite_does_not_carry_a_damaged_block_on() {
    let dir = tempfile::tempdir().unwrap();
    drop(import_in_order(dir.path(), 0..1000, 1 << 20));
    // The body is 1000 entries of 40 bytes, then 1000 keys of 7 bytes:
    // flip a byte of the second entry.
    let path = dir.path().join(TABLE);
    let mut b = fs::read(&path).unwrap();
    let body_at = b.len() - 1000 * (40 + 7);
    b[body_at + 40 + 9] ^= 0x10; // its record's offset
    fs::write(&path, b).unwrap();
    // Keys after every old one: lookups never touch the damaged block.
    let s = import_in_order(dir.path(), 1000..1100, 60);
    s.flush().unwrap();
    let r = s.reader().unwrap();
    assert!(r.table_damage().is_none(), "{:?}", r.table_damage());
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
    drop(r);
    drop(s);
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 0 }
    );
    let model: BTreeMap<Vec<u8>, u32> = (0..1100).map(|i| (ordered_key(i), i)).collect();
    let probe: Vec<Vec<u8>> = (0..1100).map(ordered_key).collect();
    agrees(&r, &model, &probe);
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
}

/// A compaction whose manifest publish fails leaves a handle that takes no
/// more writes: the manifest on disk may name the old shards or the new
/// ones, so a write to either could be dropped as an orphan at the next
/// open. Reopened, the store has every sample it held.
#[test]
fn a_failed_compaction_publish_stops_the_writer_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = ShardStore::open(dir.path(), &options()).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..40u16 {
        s.put(&key(i), &sample(u32::from(i))).unwrap();
        model.insert(key(i), u32::from(i));
    }
    s.delete_exact(&[key(5), key(6)]).unwrap();
    model.remove(&key(5));
    model.remove(&key(6));
    s.inject_faults(Faults {
        compact_publish: true,
        ..Default::default()
    });
    let err = s.compact().unwrap_err().to_string();
    assert!(err.contains("compacted store's manifest"), "{err}");
    let refused = s.put(&key(100), &sample(100)).unwrap_err().to_string();
    assert!(refused.contains("takes no more writes"), "{refused}");
    drop(s);
    let probe: Vec<Vec<u8>> = (0..110).map(key).collect();
    let s = ShardStore::open(dir.path(), &options()).unwrap();
    s.put(&key(100), &sample(100)).unwrap();
    model.insert(key(100), 100);
    s.flush().unwrap();
    drop(s);
    agrees(&read_only(dir.path()), &model, &probe);
}

/// A store written by a writer of one table file (`keys.tbl`, the format
/// before the second level) opens as it is; the next writer leaves that
/// file byte for byte and writes what came after it as a second level
/// (`keys2.tbl`) over it, which readers use.
#[test]
fn a_store_of_one_table_file_opens_and_gets_a_second_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let s = ShardStore::open(dir.path(), &options()).unwrap();
        for i in 0..300u16 {
            s.put(&key(i), &sample(u32::from(i))).unwrap();
            model.insert(key(i), u32::from(i));
        }
    }
    assert!(!dir.path().join(TOP).exists());
    let base = fs::read(dir.path().join(TABLE)).unwrap();
    let probe: Vec<Vec<u8>> = (0..420).map(key).collect();
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 0 }
    );
    agrees(&r, &model, &probe);
    drop(r);
    {
        let s = ShardStore::open(dir.path(), &options()).unwrap();
        s.put(&key(5), &sample(1005)).unwrap();
        s.delete_exact(&[key(6)]).unwrap();
        s.put(&key(400), &sample(400)).unwrap();
        model.insert(key(5), 1005);
        model.remove(&key(6));
        model.insert(key(400), 400);
    }
    assert_eq!(fs::read(dir.path().join(TABLE)).unwrap(), base);
    assert!(dir.path().join(TOP).exists());
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 0 }
    );
    agrees(&r, &model, &probe);
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
}

/// A store with both table levels: 300 samples in the base, three
/// changes (an overwrite, a deletion, a new key) in the second level.
fn store_with_top(dir: &Path) -> BTreeMap<Vec<u8>, u32> {
    let model = store_with_tail(dir);
    // A writer covers the tail with a second level at close.
    drop(ShardStore::open(dir, &options()).unwrap());
    assert!(dir.join(TOP).exists());
    model
}

/// A damaged second level is not trusted: readers use the base and read
/// what came after it from the sidecars, `verify` reports it, and the
/// next writer writes a good one.
fn damaged_top_is_not_trusted(damage: impl Fn(&Path), at_open: bool) {
    let dir = tempfile::tempdir().unwrap();
    let model = store_with_top(dir.path());
    damage(&dir.path().join(TOP));
    let r = read_only(dir.path());
    let probe: Vec<Vec<u8>> = (0..420).map(key).collect();
    agrees(&r, &model, &probe);
    if at_open {
        // The base alone, and the three records after it.
        assert_eq!(
            r.load_report().key_table,
            KeyTable::Used { tail_records: 3 }
        );
    }
    let problems = r.verify().unwrap();
    assert!(
        problems
            .problems
            .iter()
            .any(|p| p.to_string().contains("key table")),
        "{problems:?}"
    );
    drop(r);
    drop(ShardStore::open(dir.path(), &options()).unwrap());
    let r = read_only(dir.path());
    assert_eq!(
        r.load_report().key_table,
        KeyTable::Used { tail_records: 0 }
    );
    agrees(&r, &model, &probe);
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
}

#[test]
fn a_damaged_second_level_header_is_detected_and_rewritten() {
    damaged_top_is_not_trusted(
        |p| {
            let mut b = fs::read(p).unwrap();
            b[64] ^= 1; // the totals' count
            fs::write(p, b).unwrap();
        },
        true,
    );
}

#[test]
fn a_damaged_second_level_row_is_detected_and_rewritten() {
    damaged_top_is_not_trusted(
        |p| {
            let mut b = fs::read(p).unwrap();
            let n = b.len();
            // The three keys are the last 3 × 6 bytes; the rows before
            // them: flip the second row's record offset.
            b[n - 18 - 2 * 40 + 9] ^= 0x10;
            fs::write(p, b).unwrap();
        },
        false,
    );
}

/// A second level that covers more of a sidecar than is there (the
/// sidecar lost its tail in a crash) is dropped by the next writer at
/// open, before it writes anything there: readers then use the base and
/// the sidecar records that are left.
#[test]
fn a_second_level_past_a_cut_sidecar_is_dropped_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let sidecars = |d: &Path| -> BTreeMap<String, u64> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
            .map(|e| {
                let name = e.file_name().into_string().unwrap();
                (name, e.metadata().unwrap().len())
            })
            .collect()
    };
    let mut model = BTreeMap::new();
    {
        let s = ShardStore::open(dir.path(), &options()).unwrap();
        for i in 0..300u16 {
            s.put(&key(i), &sample(u32::from(i))).unwrap();
            model.insert(key(i), u32::from(i));
        }
    }
    {
        let s = ShardStore::open(dir.path(), &options()).unwrap();
        for i in 500..503u16 {
            s.put(&key(i), &sample(u32::from(i))).unwrap();
            model.insert(key(i), u32::from(i));
        }
    }
    assert!(dir.path().join(TOP).exists());
    // The last record is the last sidecar's last: 32 bytes and the
    // 6-byte key padded to 8. Cut it off.
    let (name, len) = sidecars(dir.path()).into_iter().next_back().unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(&name))
        .unwrap();
    f.set_len(len - 40).unwrap();
    drop(f);
    model.remove(&key(502));
    let probe: Vec<Vec<u8>> = (0..520).map(key).collect();
    let s = ShardStore::open(dir.path(), &options()).unwrap();
    assert!(!dir.path().join(TOP).exists());
    let r = read_only(dir.path());
    assert!(
        matches!(r.load_report().key_table, KeyTable::Used { .. }),
        "{:?}",
        r.load_report()
    );
    agrees(&r, &model, &probe);
    drop(r);
    drop(s);
    let r = read_only(dir.path());
    agrees(&r, &model, &probe);
    assert!(r.verify().unwrap().is_empty(), "{:?}", r.verify());
}
