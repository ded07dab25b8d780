//! Soundness of the memory-mapped reads: a snapshot never faults and never
//! sees bytes change, whatever fails in the writer (a full disk, a failing
//! sync) and whenever it fails; and snapshots held in one thread never
//! stall against growth of the LMDB map.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndarray::{ArrayD, IxDyn};
use tenstore::store::shard::Faults;
use tenstore::store::{
    Durability, LmdbOptions, LmdbStore, ShardOptions, ShardReader, ShardStore, Store, StoreError,
};
use tenstore::{Tensor, TensorRef};

mod common;
use common::XorShift;

/// The bytes stored under key number `no`: they depend on the key only,
/// so any change a reader sees is a fault.
fn payload(no: u64) -> Vec<u8> {
    let len = 100 + (no * 7919 % 1900) as usize;
    (0..len)
        .map(|i| (i as u64 * 31 + no * 17 % 251) as u8)
        .collect()
}

fn key(no: u64) -> String {
    format!("k{no:08}")
}

fn sample(no: u64) -> Vec<Tensor> {
    let a = ArrayD::from_shape_vec(IxDyn(&[payload(no).len()]), payload(no)).unwrap();
    vec![Tensor::new("x", a).unwrap()]
}

fn key_no(k: &[u8]) -> u64 {
    std::str::from_utf8(&k[1..]).unwrap().parse().unwrap()
}

/// Reads every sample of `r` and checks its bytes; returns the keys.
fn check_all(r: &ShardReader) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    for s in r.iter().unwrap() {
        let s = s.unwrap();
        let want = payload(key_no(s.key()));
        assert_eq!(s.get(0).unwrap().data(), &want[..], "{:?}", s.key_str());
        keys.insert(s.key().to_vec());
    }
    assert_eq!(keys.len() as u64, r.len().unwrap());
    keys
}

fn open(
    dir: &Path,
    durability: Durability,
    shard_limit: u64,
) -> tenstore::store::Result<ShardStore> {
    ShardStore::open(
        dir,
        &ShardOptions {
            create: true,
            durability,
            shard_limit,
            ..Default::default()
        },
    )
}

fn read_only(dir: &Path) -> ShardStore {
    common::store::open_shard_read_only(dir)
}

fn batch(first: u64, n: u64) -> Vec<(String, Vec<Tensor>)> {
    (first..first + n).map(|i| (key(i), sample(i))).collect()
}

fn file_len(path: std::path::PathBuf) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// An error a full or failing disk may cause.
fn is_disk_error(e: &StoreError) -> bool {
    match e {
        StoreError::WriterFailed { .. } => true,
        StoreError::Io { source, .. } => {
            matches!(source.raw_os_error(), Some(28 | 5)) || source.kind() == ErrorKind::StorageFull
        }
        _ => false,
    }
}

/// Snapshots taken by a fault hook, from a read-only handle.
type Taken = Arc<Mutex<Vec<ShardReader>>>;

fn snapshot_hook(ro: ShardStore) -> (Box<dyn Fn() + Send>, Taken) {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let out = taken.clone();
    let hook = move || taken.lock().unwrap().push(ro.reader().unwrap());
    (Box::new(hook), out)
}

/// A sidecar write that fills the disk half-way through a batch's records
/// leaves some of them visible: a snapshot taken right then (inside the
/// failure, by the fault hook) must read them all, the writer must stop
/// rather than cut them off, and after reopening they stay committed.
#[test]
fn a_commit_that_fails_part_way_through_its_sidecar_never_pulls_bytes_from_a_snapshot() {
    // The sizes the batch takes, from a twin store that gets them all.
    let twin = tempfile::tempdir().unwrap();
    let (shard_bytes, idx_bytes) = {
        let s = open(twin.path(), Durability::Close, 1 << 30).unwrap();
        s.put_batch(&batch(0, 10)).unwrap();
        s.flush().unwrap();
        let before = (
            file_len(twin.path().join("000001.ten")),
            file_len(twin.path().join("000001.idx")),
        );
        s.put_batch(&batch(10, 20)).unwrap();
        s.flush().unwrap();
        (
            file_len(twin.path().join("000001.ten")) - before.0,
            file_len(twin.path().join("000001.idx")) - before.1,
        )
    };
    assert!(idx_bytes >= 20 * 40, "{idx_bytes}");

    for cut in [idx_bytes / 2, idx_bytes - 1, 1, 0] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Durability::Close, 1 << 30).unwrap();
        store.put_batch(&batch(0, 10)).unwrap();
        store.flush().unwrap();
        let ro = read_only(dir.path());
        let (hook, taken) = snapshot_hook(ro.clone());
        store.inject_faults(Faults {
            space: Some(shard_bytes + cut),
            on_fault: Some(hook),
            ..Default::default()
        });
        let e = store.put_batch(&batch(10, 20)).unwrap_err();
        assert!(is_disk_error(&e), "{e}");
        assert!(e.to_string().contains("sidecar"), "{e}");
        let snaps = taken.lock().unwrap();
        assert_eq!(snaps.len(), 1);
        // Complete sidecar records are visible; the torn one is not.
        let visible = 10 + (cut as usize) / (idx_bytes as usize / 20);
        assert_eq!(snaps[0].len().unwrap(), visible as u64, "cut {cut}");
        // Every record it indexed is still there, unchanged. (Before the
        // writer stopped on this failure, it cut the shard back and a read
        // here died with SIGBUS.)
        let seen = check_all(&snaps[0]);
        // The writer refuses to go on, even with room again.
        store.inject_faults(Faults::default());
        let e = store.put(b"after", &sample(99)).unwrap_err();
        assert!(matches!(e, StoreError::WriterFailed { .. }), "{e}");
        assert!(e.to_string().contains("reopen the store"), "{e}");
        assert_eq!(check_all(&snaps[0]), seen);
        drop(snaps);
        drop(store);
        // Reopened, the visible records are committed, and writes go on.
        let store = open(dir.path(), Durability::Close, 1 << 30).unwrap();
        assert_eq!(check_all(&store.reader().unwrap()), seen);
        store.put_batch(&batch(100, 5)).unwrap();
        let all = check_all(&store.reader().unwrap());
        assert_eq!(all.len(), visible + 5);
        assert_eq!(check_all(&taken.lock().unwrap()[0]), seen);
    }
}

/// A sidecar sync that fails (per-sample durability) after the record is
/// in the sidecar: the record is visible, so it stays; the writer stops.
#[test]
fn a_failed_sidecar_sync_keeps_the_visible_record_and_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Sample, 1 << 30).unwrap();
    store.put_batch(&batch(0, 3)).unwrap();
    let ro = read_only(dir.path());
    let (hook, taken) = snapshot_hook(ro);
    // Shard sync of the first new sample succeeds, its sidecar sync fails.
    store.inject_faults(Faults {
        syncs: Some(1),
        on_fault: Some(hook),
        ..Default::default()
    });
    let e = store.put_batch(&batch(3, 4)).unwrap_err();
    assert_eq!(
        match &e {
            StoreError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        },
        Some(5),
        "{e}"
    );
    let seen = check_all(&taken.lock().unwrap()[0]);
    assert_eq!(seen.len(), 4);
    assert!(matches!(
        store.put(b"x", &sample(1)).unwrap_err(),
        StoreError::WriterFailed { .. }
    ));
    drop(store);
    let store = open(dir.path(), Durability::Sample, 1 << 30).unwrap();
    assert_eq!(check_all(&store.reader().unwrap()), seen);
}

/// A failure before any sidecar byte is written (the shard write itself)
/// cuts the uncommitted tail off and the writer goes on; a snapshot taken
/// inside the failure sees none of the failed batch.
#[test]
fn a_failed_shard_write_is_cut_off_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Close, 1 << 30).unwrap();
    store.put_batch(&batch(0, 5)).unwrap();
    let before = file_len(dir.path().join("000001.ten"));
    let (hook, taken) = snapshot_hook(read_only(dir.path()));
    store.inject_faults(Faults {
        space: Some(3000),
        on_fault: Some(hook),
        ..Default::default()
    });
    let e = store.put_batch(&batch(5, 10)).unwrap_err();
    assert_eq!(
        match &e {
            StoreError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        },
        Some(28),
        "{e}"
    );
    assert_eq!(taken.lock().unwrap()[0].len().unwrap(), 5);
    assert_eq!(file_len(dir.path().join("000001.ten")), before);
    store.inject_faults(Faults::default());
    store.put_batch(&batch(5, 10)).unwrap();
    assert_eq!(check_all(&store.reader().unwrap()).len(), 15);
    assert_eq!(check_all(&taken.lock().unwrap()[0]).len(), 5);
}

/// What one stress run saw.
struct Seen {
    /// Refreshes the reader made (each one read every sample).
    refreshes: usize,
    /// Writes that failed.
    failures: usize,
    /// Of those, failures that stopped the writer (sidecar bytes written).
    stopped: usize,
}

/// Writes batches into the store in `dir` until the (emulated or real)
/// disk refuses them, reopens, again, `cycles` times, while a reader
/// thread with a read-only handle spins on refresh, reads every sample of
/// every snapshot, re-reads snapshots it holds, and checks that nothing it
/// once saw goes missing or changes.
fn fill_and_fail(dir: &Path, inject: bool, cycles: usize, seed: u64) -> Seen {
    drop(open(dir, Durability::Close, 32 << 10).unwrap());
    let ro = read_only(dir);
    let stop = AtomicBool::new(false);
    let refreshes = AtomicUsize::new(0);
    let mut rng = XorShift::new(seed);
    let mut acked = BTreeSet::new();
    let (mut failures, mut stopped) = (0, 0);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut r = ro.reader().unwrap();
            let mut held: Vec<(ShardReader, BTreeSet<Vec<u8>>)> = Vec::new();
            let mut ever = BTreeSet::new();
            loop {
                let last = stop.load(Ordering::Acquire);
                r.refresh().unwrap();
                let now = check_all(&r);
                assert!(ever.is_subset(&now), "samples once visible went missing");
                ever = now.clone();
                for (snap, keys) in &held {
                    assert_eq!(&check_all(snap), keys);
                }
                let n = refreshes.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(7) {
                    held.push((r.clone(), now));
                    if held.len() > 3 {
                        held.remove(0);
                    }
                }
                if last {
                    return ever;
                }
            }
        });
        let mut next = 0u64;
        for cycle in 0..cycles {
            let durability = [Durability::Close, Durability::Batch, Durability::Sample][cycle % 3];
            let store = match open(dir, durability, 32 << 10) {
                Ok(s) => s,
                // A disk full to the last page may refuse even the lock
                // file's pid.
                Err(e) if !inject && is_disk_error(&e) => continue,
                Err(e) => panic!("{e}"),
            };
            if inject {
                store.inject_faults(Faults {
                    space: Some(rng.below(48 << 10)),
                    syncs: (rng.below(4) == 0).then(|| rng.below(6)),
                    ..Default::default()
                });
            }
            loop {
                let n = 1 + rng.below(6);
                match store.put_batch(&batch(next, n)) {
                    Ok(()) => acked.extend((next..next + n).map(|i| key(i).into_bytes())),
                    Err(e) => {
                        assert!(is_disk_error(&e), "{e}");
                        failures += 1;
                        // Every failure leaves a writer that either goes
                        // on or says it stopped.
                        let probe = next + n;
                        match store.put(key(probe).as_bytes(), &sample(probe)) {
                            Err(StoreError::WriterFailed { .. }) => stopped += 1,
                            Err(e) => assert!(is_disk_error(&e), "{e}"),
                            // A real disk has room again once the failed
                            // tail is cut off.
                            Ok(()) if !inject => {
                                acked.insert(key(probe).into_bytes());
                            }
                            Ok(()) => panic!("a write succeeded past the emulated disk's end"),
                        }
                        next += n + 1;
                        break;
                    }
                }
                next += n;
            }
        }
        stop.store(true, Ordering::Release);
        let ever = reader.join().unwrap();
        // Reopened once more: everything acknowledged and everything a
        // reader saw is there, unchanged.
        // (A full tmpfs may refuse the writer's lock: read there.)
        let store = if inject {
            open(dir, Durability::Close, 32 << 10).unwrap()
        } else {
            read_only(dir)
        };
        let last = check_all(&store.reader().unwrap());
        assert!(acked.is_subset(&last), "acknowledged samples were lost");
        assert!(ever.is_subset(&last), "samples a reader saw were lost");
    });
    Seen {
        refreshes: refreshes.into_inner(),
        failures,
        stopped,
    }
}

#[test]
fn a_reader_spinning_on_refresh_never_faults_while_the_disk_fills() {
    let dir = tempfile::tempdir().unwrap();
    let seen = fill_and_fail(dir.path(), true, 60, 15);
    assert!(seen.refreshes > 0);
    assert!(seen.failures >= 60, "{}", seen.failures);
    // Both kinds of failure happened: before and after sidecar bytes.
    assert!(
        seen.stopped > 0 && seen.stopped < seen.failures,
        "{}",
        seen.stopped
    );
}

/// The same on a real 256 KiB tmpfs (root: a private mount namespace). Run
/// by `scripts/test` as root.
#[test]
#[ignore = "needs root: mounts a tmpfs in a private mount namespace"]
fn a_reader_never_faults_while_a_small_tmpfs_fills() {
    let me = std::env::current_exe().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let script = format!(
        r#"set -e
        mount -t tmpfs -o size=256k tmpfs "{m}"
        TENSTORE_TMPFS="{m}/s" "{me}" --ignored --exact tmpfs_child --nocapture
        umount "{m}""#,
        m = tmp.path().display(),
        me = me.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|l| l.starts_with("tmpfs_child: ok"))
            .unwrap_or("")
    );
    assert!(
        out.status.success() && stdout.contains("tmpfs_child: ok"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child of [`a_reader_never_faults_while_a_small_tmpfs_fills`].
#[test]
#[ignore = "run inside a_reader_never_faults_while_a_small_tmpfs_fills"]
fn tmpfs_child() {
    let dir = std::env::var_os("TENSTORE_TMPFS").expect("run by its parent test");
    let seen = fill_and_fail(Path::new(&dir), false, 200, 16);
    assert!(seen.failures > 0 && seen.refreshes > 0);
    println!(
        "tmpfs_child: ok ({} failures, {} stopped the writer, {} refreshes)",
        seen.failures, seen.stopped, seen.refreshes
    );
}

fn small_lmdb(dir: &Path, patience: Duration) -> LmdbStore {
    LmdbStore::open(
        dir,
        &LmdbOptions {
            create: true,
            map_size: 64 << 10,
            grow_patience: patience,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A thread that holds a snapshot takes more snapshots and asks for
/// counts while another thread's write waits to grow the map: nothing in
/// that thread waits for the growth, which happens once its snapshots end.
/// (Before, the nested snapshot waited at the gate until the writer gave
/// up after `grow_patience`, and the write failed with GrowBlocked.)
#[test]
fn nested_snapshots_in_one_thread_do_not_stall_against_growth() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_lmdb(dir.path(), Duration::from_secs(120));
    store.put(b"small", &sample(1)).unwrap();
    let big = ArrayD::from_shape_fn(IxDyn(&[1 << 20]), |d| d[0] as u8);
    let held = store.reader().unwrap();
    let map_before = held.stats().unwrap().map_size;
    std::thread::scope(|scope| {
        let writer =
            scope.spawn(|| store.put(b"big", &[TensorRef::from_array("x", &big).unwrap()]));
        // The writer needs a map 16 times larger: it waits for `held`.
        for _ in 0..100 {
            let nested = store.reader().unwrap();
            assert_eq!(nested.len().unwrap(), 1);
            assert_eq!(nested.stats().unwrap().samples, 1);
            assert_eq!(held.stats().unwrap().samples, 1);
            assert_eq!(held.len().unwrap(), 1);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            !writer.is_finished(),
            "the write grew the map under a snapshot"
        );
        drop(held);
        writer.join().unwrap().unwrap();
    });
    let stats = store.stats().unwrap();
    assert_eq!(stats.samples, 2);
    assert!(stats.map_size >= 16 * map_before, "{stats:?}");
    assert_eq!(
        store
            .reader()
            .unwrap()
            .require(b"big")
            .unwrap()
            .get(0)
            .unwrap()
            .data(),
        big.as_slice().unwrap()
    );
}

/// The same thread asking to grow the map while it holds a snapshot is
/// refused at once, naming itself (it would wait for itself).
#[test]
fn growth_asked_for_by_the_thread_holding_a_snapshot_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_lmdb(dir.path(), Duration::from_secs(3600));
    let big = ArrayD::<u8>::zeros(IxDyn(&[1 << 20]));
    let held = store.reader().unwrap();
    let e = store
        .put(b"big", &[TensorRef::from_array("x", &big).unwrap()])
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::GrowBlocked {
                readers: 1,
                held_here: 1,
                waited_ms: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("held by the asking thread itself"),
        "{e}"
    );
    drop(held);
    store
        .put(b"big", &[TensorRef::from_array("x", &big).unwrap()])
        .unwrap();
}

/// Another process grows the map past this process's: a thread holding a
/// snapshot still reads and counts from it; a second snapshot in that
/// thread is refused at once with its own message (not one about
/// writing); once the snapshot ends, the new map is adopted.
#[test]
fn adopting_a_map_grown_by_another_process_never_stalls_a_thread_holding_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = small_lmdb(&dir, Duration::from_secs(3600));
    store.put(b"small", &sample(1)).unwrap();
    let held = store.reader().unwrap();
    let before = held.stats().unwrap();
    // Another process writes 4 MiB: the map grows to fit.
    let input = tmp.path().join("big.ten");
    let big = ArrayD::from_shape_fn(IxDyn(&[4 << 20]), |d| (d[0] % 251) as u8);
    tenstore::save(&input, &[TensorRef::from_array("x", &big).unwrap()]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tenstore"))
        .arg("put")
        .arg(&dir)
        .arg("big")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The held snapshot answers from itself.
    let now = held.stats().unwrap();
    assert_eq!(
        (now.samples, now.bytes, now.pages),
        (before.samples, before.bytes, before.pages)
    );
    assert_eq!(held.len().unwrap(), 1);
    let e = store.reader().map(|_| ()).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::AdoptBlocked {
                readers: 1,
                held_here: 1,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("another process grew") && !msg.contains("writing"),
        "{msg}"
    );
    // Through the enum, too: its `stats` answers from the snapshot.
    drop(held);
    let any = Store::Lmdb(store.clone());
    let r = any.reader().unwrap();
    let stats = r.stats().unwrap();
    assert_eq!(stats.samples, 2);
    assert!(stats.map_size > before.map_size, "{stats:?} {before:?}");
    assert_eq!(
        r.require(b"big").unwrap().get(0).unwrap().data(),
        big.as_slice().unwrap()
    );
}

/// The shard reader and the `Reader` enum answer counts from the snapshot
/// they hold, not from the store as it is now.
#[test]
fn shard_readers_answer_stats_from_their_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Close, 1 << 30).unwrap();
    store.put_batch(&batch(0, 3)).unwrap();
    let any = Store::Shard(store.clone());
    let r = any.reader().unwrap();
    let shard_r = store.reader().unwrap();
    let before = shard_r.stats().unwrap();
    store.put_batch(&batch(3, 4)).unwrap();
    assert_eq!(r.stats().unwrap().samples, 3);
    assert_eq!(shard_r.stats().unwrap().samples, 3);
    assert_eq!(shard_r.stats().unwrap().live_bytes, before.live_bytes);
    assert!(store.stats().unwrap().live_bytes > before.live_bytes);
    assert_eq!(store.stats().unwrap().samples, 7);
    assert_eq!(any.stats().unwrap().samples, 7);
}
