//! The shard store under crashes and concurrent readers, across processes.
//!
//! The crash test re-runs this test binary as a child writer (the ignored
//! test `crash_child`), kills it with SIGKILL at random moments, reopens
//! the store and checks every sample the child acknowledged.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ndarray::{Array, ArrayD, IxDyn};
use tenstore::store::shard::{Faults, KeyTable};
use tenstore::store::{Durability, ShardOptions, ShardStore};
use tenstore::Tensor;

const CHILD_DIR: &str = "TENSTORE_CRASH_DIR";
const CHILD_START: &str = "TENSTORE_CRASH_START";
/// Key table writes the child completes; it exits (code `TABLE_EXIT`) in
/// the next one, after writing the new table, before renaming it.
const CHILD_TABLE_WRITES: &str = "TENSTORE_CRASH_TABLE_WRITES";
const TABLE_EXIT: i32 = 86;
/// The key table's temporary file, while a writer writes one.
const TABLE_TMP: &str = ".keys.tbl.tmp";
const TOP_TMP: &str = ".keys2.tbl.tmp";

/// Sample `i`, a size that varies so records straddle pages and shards.
fn sample(i: u64) -> Vec<Tensor> {
    let n = 64 + (i as usize * 997) % 6000;
    let blob = ArrayD::from_shape_fn(IxDyn(&[n]), |d| (d[0] as u64 * 31 + i) as u8);
    let label = Array::from_elem(1, i as i64).into_dyn();
    vec![
        Tensor::new("blob", blob).unwrap(),
        Tensor::new("label", label).unwrap(),
    ]
}

fn key(i: u64) -> String {
    format!("k{i:08}")
}

fn shard_options() -> ShardOptions {
    ShardOptions {
        create: true,
        shard_limit: 64 << 10,
        durability: Durability::Sample,
        ..Default::default()
    }
}

/// The child: appends samples from `CHILD_START` on, printing each key once
/// its put (synced) returned, until killed. It rewrites the key table
/// every 16 records (a merge of the table and what came after it), so
/// that kills land in table writes too; with `CHILD_TABLE_WRITES` it
/// exits in a table write, between writing the new table and renaming it.
#[test]
#[ignore = "the child process of the crash test, which runs it"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("run by the crash test");
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let table_writes = std::env::var(CHILD_TABLE_WRITES)
        .ok()
        .map(|v| v.parse::<u64>().unwrap());
    let mut faults = Faults {
        table_due: Some(16),
        ..Default::default()
    };
    if let Some(n) = table_writes {
        // Counted from here: the open's own table write (a new store's)
        // has happened.
        faults.table_writes = Some(n);
        faults.on_fault = Some(Box::new(|| std::process::exit(TABLE_EXIT)));
    }
    let store = ShardStore::open(&dir, &shard_options()).unwrap();
    store.inject_faults(faults);
    let mut out = std::io::stdout().lock();
    for i in start.. {
        store.put(key(i).as_bytes(), &sample(i)).unwrap();
        use std::io::Write;
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

fn check_all(dir: &Path, acked: u64) -> u64 {
    let store = ShardStore::open(
        dir,
        &ShardOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = store.reader().unwrap();
    let problems = r.verify().unwrap().lines();
    assert!(problems.is_empty(), "{problems:?}");
    for i in 0..acked {
        let s = r
            .require(key(i).as_bytes())
            .unwrap_or_else(|e| panic!("acknowledged sample {i} lost: {e}"));
        let back: Vec<Tensor> = s.iter().map(|v| v.to_tensor().unwrap()).collect();
        assert_eq!(back, sample(i), "sample {i}");
    }
    // Whatever else is visible (put but not yet acknowledged) is whole too.
    for s in r.iter().unwrap() {
        let s = s.unwrap();
        let i: u64 = s.key_str().unwrap()[1..].parse().unwrap();
        let back: Vec<Tensor> = s.iter().map(|v| v.to_tensor().unwrap()).collect();
        assert_eq!(back, sample(i));
    }
    r.len().unwrap()
}

#[test]
fn every_acknowledged_sample_survives_sigkill() {
    let kills: u32 = std::env::var("TENSTORE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut next = 0u64;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut dropped_tails = 0;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let life = Duration::from_micros(2_000 + rng % 25_000);
        let stdout = child.stdout.take().unwrap();
        let (first_ack, acked_once) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            // The harness's own "test crash_child ..." may share the first line.
            let acks: Vec<u64> = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    l.rsplit_once("ack ")
                        .and_then(|(_, n)| n.parse::<u64>().ok())
                })
                .inspect(|_| {
                    let _ = first_ack.send(());
                })
                .collect();
            acks
        });
        // Odd rounds: killed at a random moment from the start (while it
        // starts, opens, recovers or writes). Even rounds: at a random
        // moment after its first acknowledgement, however loaded the
        // machine, so that the writer makes progress.
        if round % 2 == 0 {
            acked_once
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("round {round}: the child acknowledged nothing: {e}"));
        }
        let t = Instant::now();
        while t.elapsed() < life {
            std::thread::sleep(Duration::from_micros(500));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        if let Some(&last) = acked.last() {
            assert_eq!(
                last + 1 - next,
                acked.len() as u64,
                "acknowledgements in order"
            );
            next = last + 1;
        }
        // Reopen as the writer: recovery cuts torn tails; every ack is there.
        {
            let store = ShardStore::open(dir.path(), &shard_options()).unwrap();
            if !store.recovery().is_clean() {
                dropped_tails += 1;
            }
        }
        let visible = check_all(dir.path(), next);
        // An unacknowledged sample can be committed (killed after the
        // sidecar write, before the ack): the next round starts after it.
        assert!(
            visible == next || visible == next + 1,
            "round {round}: {visible} visible, {next} acknowledged"
        );
        next = visible;
    }
    // Every even round acknowledged at least one sample.
    assert!(
        next >= u64::from(kills.div_ceil(2)),
        "the child made progress ({next} samples in {kills} rounds)"
    );
    eprintln!("{kills} kills, {next} samples, {dropped_tails} recoveries cut a torn tail");
}

/// A writer that dies after writing a new key table and before renaming
/// it over the old one loses nothing: readers use the old table and read
/// what came after it from the sidecars; the next writer removes the
/// temporary file and writes a table that covers everything.
#[test]
fn a_writer_killed_between_writing_a_table_and_renaming_it_loses_nothing() {
    let exe = std::env::current_exe().unwrap();
    // Table writes of the child (every 16 records): a new base at 16, 32
    // and 48 records; the first second level at 64; at 80 the second
    // level merged into a new base (then a new second level). So kills
    // land in a base write (0, 2), a second-level write (3) and a merge
    // (4).
    for completed in [0u64, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, "0")
            .env(CHILD_TABLE_WRITES, completed.to_string())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(TABLE_EXIT), "{completed}: {out:?}");
        let acked = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("ack "))
            .count() as u64;
        // A table write follows every 16th commit, inside its put: the
        // child died in the put of record 16 * (completed + 1), committed
        // but not acknowledged.
        let committed = 16 * (completed + 1);
        assert_eq!(acked, committed - 1, "{completed}");
        let tmp = if completed == 3 { TOP_TMP } else { TABLE_TMP };
        assert!(dir.path().join(tmp).exists(), "{completed}");
        assert_eq!(check_all(dir.path(), acked), committed);
        let r = ShardStore::open(
            dir.path(),
            &ShardOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap()
        .reader()
        .unwrap();
        // The table of the last completed write, and the 16 records after.
        assert_eq!(
            r.load_report().key_table,
            KeyTable::Used { tail_records: 16 },
            "{completed}"
        );
        drop(r);
        let store = ShardStore::open(dir.path(), &shard_options()).unwrap();
        assert!(!dir.path().join(tmp).exists(), "{completed}");
        drop(store);
        let r = ShardStore::open(
            dir.path(),
            &ShardOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap()
        .reader()
        .unwrap();
        assert_eq!(
            r.load_report().key_table,
            KeyTable::Used { tail_records: 0 }
        );
        assert_eq!(check_all(dir.path(), acked), committed);
    }
}

#[test]
fn a_reader_process_sees_only_whole_samples_while_a_writer_rolls_shards() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        dir.path(),
        &ShardOptions {
            durability: Durability::Close,
            ..shard_options()
        },
    )
    .unwrap();
    store.put(key(0).as_bytes(), &sample(0)).unwrap();
    store.flush().unwrap();
    let exe = env!("CARGO_BIN_EXE_tenstore");
    let mut checks = 0;
    // Verify runs started while the writer had batches left to write. The
    // writer waits, before each of its 20 batches, for one more verify to
    // have started, so at least 20 overlap it.
    let mut mid_write = 0;
    let started = std::sync::atomic::AtomicU64::new(0);
    let writer = std::thread::scope(|scope| {
        let w = scope.spawn(|| {
            let chunks: Vec<Vec<u64>> = (1..400u64)
                .collect::<Vec<_>>()
                .chunks(20)
                .map(<[u64]>::to_vec)
                .collect();
            for (b, chunk) in chunks.iter().enumerate() {
                let deadline = Instant::now() + Duration::from_secs(60);
                while started.load(std::sync::atomic::Ordering::SeqCst) <= b as u64 {
                    assert!(Instant::now() < deadline, "no verify run started");
                    std::thread::sleep(Duration::from_millis(1));
                }
                let batch: Vec<(String, Vec<Tensor>)> =
                    chunk.iter().map(|&i| (key(i), sample(i))).collect();
                store.put_batch(&batch).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        while !w.is_finished() || checks == 0 {
            if !w.is_finished() {
                mid_write += 1;
            }
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let out = Command::new(exe)
                .args(["verify", dir.path().to_str().unwrap()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "verify found problems mid-write: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            checks += 1;
        }
        w.join()
    });
    writer.unwrap();
    assert!(checks > 0);
    assert!(
        mid_write >= 20,
        "only {mid_write} of {checks} verify runs started while the writer wrote"
    );
    let r = store.reader().unwrap();
    assert_eq!(r.len().unwrap(), 400);
    assert!(
        store.stats().unwrap().shards > 10,
        "the writer rolled to new shards"
    );
}
