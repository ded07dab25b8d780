//! Faults: a full disk, damaged files, and writers killed mid-write.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ndarray::{ArrayD, IxDyn};
use tenstore::store::{
    Backend, CutReason, ShardOptions, ShardStore, Store, StoreError, StoreOptions,
};
use tenstore::{Tensor, TensorRef};

const BIN: &str = env!("CARGO_BIN_EXE_tenstore");

fn sample(i: usize, n: usize) -> Vec<Tensor> {
    let blob = ArrayD::from_shape_fn(IxDyn(&[n]), |d| (d[0] * 7 + i) as u8);
    vec![Tensor::new("blob", blob).unwrap()]
}

fn create(dir: &Path, backend: Backend) -> Store {
    Store::open(
        dir,
        &StoreOptions {
            create: true,
            backend: Some(backend),
            ..Default::default()
        },
    )
    .unwrap()
}

fn check_samples(store: &Store, range: std::ops::Range<usize>, n: usize) {
    let r = store.reader().unwrap();
    for i in range {
        let key = format!("s{i:04}");
        let s = r.require(key.as_bytes()).unwrap();
        assert_eq!(
            s.get(0).unwrap().to_tensor().unwrap(),
            sample(i, n)[0],
            "{key}"
        );
    }
    assert!(r.verify().unwrap().is_empty());
}

/// Runs the CLI with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so
/// writes past it fail with EFBIG as they would with ENOSPC).
fn tenstore_limited(limit_kib: u64, args: &[&str]) -> std::process::Output {
    let script = format!("trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\"");
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_full_disk_fails_clearly_keeps_what_was_committed_and_recovers() {
    for backend in [Backend::Lmdb, Backend::Shard] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        {
            let store = create(&dir, backend);
            let batch: Vec<(String, Vec<Tensor>)> = (0..20)
                .map(|i| (format!("s{i:04}"), sample(i, 10_000)))
                .collect();
            store.put_batch(&batch).unwrap();
            store.flush().unwrap();
        }
        // 4 MiB of input into a store that may grow to 2 MiB.
        let input = tmp.path().join("big");
        fs::create_dir(&input).unwrap();
        for i in 0..32 {
            let arr = ArrayD::from_elem(IxDyn(&[128 << 10]), i as u8);
            tenstore::save(
                input.join(format!("b{i:02}.ten")),
                &[TensorRef::from_array("x", &arr).unwrap()],
            )
            .unwrap();
        }
        let out = tenstore_limited(
            2048,
            &[
                "import",
                dir.to_str().unwrap(),
                input.to_str().unwrap(),
                "--batch",
                "4",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("File too large")
                || err.contains("No space left")
                || err.contains("is the disk full?"),
            "{backend:?}: {err}"
        );

        // Reopened with room: what was committed before is intact, the store
        // is consistent, and it takes writes again.
        let store = Store::open(&dir, &StoreOptions::default()).unwrap();
        check_samples(&store, 0..20, 10_000);
        store.put(b"after", &sample(99, 5000)).unwrap();
        store.flush().unwrap();
        let r = store.reader().unwrap();
        assert_eq!(r.require(b"after").unwrap().get(0).unwrap().nbytes(), 5000);
        // Whatever part of the import got in before the failure is whole.
        for s in r.samples(tenstore::store::Order::Key).unwrap() {
            let s = s.unwrap();
            if s.key().starts_with(b"b") {
                let v = s.get(0).unwrap();
                let want = s.key()[1..].iter().fold(0u8, |a, &d| a * 10 + (d - b'0'));
                assert!(v.data().iter().all(|&x| x == want));
            }
        }
    }
}

#[test]
#[ignore = "mounts a 2 MiB tmpfs (needs root, or user and mount namespaces); scripts/test runs it as root"]
fn enospc_on_a_small_tmpfs() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let input = tmp.path().join("in.ten");
    let arr = ArrayD::from_elem(IxDyn(&[300 << 10]), 3u8);
    tenstore::save(&input, &[TensorRef::from_array("x", &arr).unwrap()]).unwrap();
    for backend in ["lmdb", "ten"] {
        // All in one mount namespace: fill, fail, check, grow, write again.
        let script = format!(
            r#"set -e
            mount -t tmpfs -o size=2m tmpfs "{m}"
            "{b}" put "{m}/s" k0 "{i}" --create --backend {backend}
            full=no
            for k in 1 2 3 4 5 6 7 8 9 10 11 12; do
                if ! "{b}" put "{m}/s" k$k "{i}" 2>"{m}/../err"; then full=yes; break; fi
            done
            [ $full = yes ] || {{ echo "no ENOSPC"; exit 3; }}
            grep -qE "No space left|is the disk full" "{m}/../err" || {{ cat "{m}/../err"; exit 4; }}
            [ "$(wc -l < "{m}/../err")" = 1 ] || exit 5
            "{b}" verify "{m}/s" >/dev/null
            "{b}" get "{m}/s" k0 -o "{m}/../k0.ten" && cmp "{m}/../k0.ten" "{i}"
            mount -o remount,size=8m "{m}"
            "{b}" put "{m}/s" k9 "{i}"
            "{b}" get "{m}/s" k9 -o - | cmp - "{i}"
            umount "{m}""#,
            m = mnt.display(),
            b = BIN,
            i = input.display(),
        );
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{backend}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Flips bytes of chosen shard records and checks that verify names
/// exactly the damaged samples and that the rest still read.
#[test]
fn damaged_shard_bytes_are_reported_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ShardStore::open(
        tmp.path(),
        &ShardOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    let batch: Vec<(String, Vec<Tensor>)> = (0..50)
        .map(|i| (format!("s{i:04}"), sample(i, 300 + i * 13)))
        .collect();
    store.put_batch(&batch).unwrap();
    store.flush().unwrap();
    // Record spans, from the sidecar as the reader sees them.
    let spans: Vec<(String, usize, usize)> = {
        let r = store.reader().unwrap();
        let mut out = Vec::new();
        let mut offset = 0;
        for s in r.iter().unwrap() {
            let s = s.unwrap();
            // The key array (header chunk, key chunk), then the tensors.
            let len = 16 + 64 + 16 + s.key().len().div_ceil(64) * 64 + s.as_bytes().len();
            out.push((s.key_str().unwrap().to_owned(), offset, len));
            offset += len;
        }
        out
    };
    drop(store);
    let mut rng = 0x1234_5678_9ABC_DEF1u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let path = tmp.path().join("000001.ten");
    let mut bytes = fs::read(&path).unwrap();
    let mut damaged = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (key, off, len) = &spans[(next() % spans.len() as u64) as usize];
        let at = off + (next() % *len as u64) as usize;
        bytes[at] ^= 1 << (next() % 8);
        damaged.insert(key.clone());
    }
    fs::write(&path, &bytes).unwrap();

    let store = ShardStore::open(
        tmp.path(),
        &ShardOptions {
            read_only: true,
            verify_reads: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = store.reader().unwrap();
    let problems = r.verify().unwrap().lines();
    let named: std::collections::BTreeSet<String> = problems
        .iter()
        .map(|p| p.split('"').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(named, damaged, "{problems:?}");
    for (key, _, _) in &spans {
        let got = r.get(key.as_bytes());
        if damaged.contains(key) {
            assert!(matches!(got, Err(StoreError::Corrupt { .. })), "{key}");
        } else {
            let i: usize = key[1..].parse().unwrap();
            assert_eq!(
                got.unwrap().unwrap().get(0).unwrap().to_tensor().unwrap(),
                sample(i, 300 + i * 13)[0]
            );
        }
    }
    // The CLI says the same, and exits 1.
    let out = Command::new(BIN)
        .args(["verify", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        damaged.len()
    );
}

#[test]
fn truncated_shards_and_sidecars_lose_only_their_tails() {
    let mut rng = 0xDEAD_BEEF_u64;
    for round in 0..20 {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = ShardStore::open(
                tmp.path(),
                &ShardOptions {
                    create: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let batch: Vec<(String, Vec<Tensor>)> = (0..30)
                .map(|i| (format!("s{i:04}"), sample(i, 500)))
                .collect();
            store.put_batch(&batch).unwrap();
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let which = if round % 2 == 0 {
            "000001.ten"
        } else {
            "000001.idx"
        };
        let path = tmp.path().join(which);
        let len = fs::metadata(&path).unwrap().len();
        let cut = rng % len;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();

        // Readers: no panic, no out-of-file read; what is visible is whole.
        let ro = ShardStore::open(
            tmp.path(),
            &ShardOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let r = ro.reader().unwrap();
        let visible = r.len().unwrap();
        assert!(visible <= 30);
        let mut keys = Vec::new();
        for s in r.iter().unwrap() {
            let s = s.unwrap();
            let i: usize = s.key_str().unwrap()[1..].parse().unwrap();
            assert_eq!(s.get(0).unwrap().to_tensor().unwrap(), sample(i, 500)[0]);
            keys.push(s.key_str().unwrap().to_owned());
        }
        // Only the tail is lost: what is visible is the first `visible`
        // samples, in write order.
        let want: Vec<String> = (0..visible).map(|i| format!("s{i:04}")).collect();
        assert_eq!(
            keys, want,
            "round {round}: {which} cut at {cut}: not a prefix"
        );
        drop(r);
        drop(ro);
        // The writer's recovery reports the cut and appending continues;
        // a cut sidecar hides whole records, which the writer refuses to
        // cut: reindexing brings them back.
        let store = match ShardStore::open(tmp.path(), &ShardOptions::default()) {
            Err(StoreError::NeedsReindex { .. }) if which == "000001.idx" => {
                ShardStore::reindex(tmp.path()).unwrap();
                ShardStore::open(tmp.path(), &ShardOptions::default()).unwrap()
            }
            other => other.unwrap(),
        };
        let rep = store.recovery().clone();
        let r = store.reader().unwrap();
        let after = r.len().unwrap();
        if which == "000001.idx" {
            // Only records no sidecar record commits are cut, each saved
            // beside the shards first.
            let saved: u64 = rep
                .cuts
                .iter()
                .map(|c| match &c.reason {
                    CutReason::Uncommitted { saved: Some(f), .. }
                        if tmp.path().join(f).is_file() =>
                    {
                        1
                    }
                    CutReason::UncommittedBatch {
                        records,
                        saved: Some(f),
                        ..
                    } if tmp.path().join(f).is_file() => *records,
                    _ => 0,
                })
                .sum();
            assert_eq!(
                after + saved,
                30,
                "round {round}: {which} cut at {cut}, {rep:?}"
            );
        } else {
            assert_eq!(after, visible, "round {round}");
        }
        if after < 30 {
            assert!(
                !rep.is_clean(),
                "round {round}: {which} cut at {cut}, {visible} visible, {rep:?}"
            );
        }
        drop(r);
        store.put(b"new", &sample(1, 10)).unwrap();
        let r = store.reader().unwrap();
        assert_eq!(r.len().unwrap(), after + 1);
        assert!(r.verify().unwrap().is_empty());
    }
}

#[test]
fn damaged_lmdb_values_are_reported_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = create(tmp.path(), Backend::Lmdb);
        let batch: Vec<(String, Vec<Tensor>)> = (0..20)
            .map(|i| (format!("s{i:04}"), sample(i, 3000)))
            .collect();
        store.put_batch(&batch).unwrap();
    }
    // Damage three values in place through LMDB itself (a truncation, a
    // header flip, a bad magic): LMDB keeps no checksums, so this is the
    // damage a reader can meet.
    {
        use heed::types::Bytes;
        // SAFETY: the store above is closed; nothing else has the env open.
        let env = unsafe { heed::EnvOpenOptions::new().open(tmp.path()) }.unwrap();
        let mut txn = env.write_txn().unwrap();
        let db: heed::Database<Bytes, Bytes> = env.open_database(&txn, None).unwrap().unwrap();
        for (key, how) in [("s0003", 0), ("s0007", 1), ("s0011", 2)] {
            let mut v = db.get(&txn, key.as_bytes()).unwrap().unwrap().to_vec();
            match how {
                0 => v.truncate(v.len() - 100),
                1 => v[16 + 16] ^= 0x40, // ndim word of the header
                _ => v[0] = b'X',
            }
            db.put(&mut txn, key.as_bytes(), &v).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(
        tmp.path(),
        &StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let r = store.reader().unwrap();
    let problems = r.verify().unwrap().lines();
    assert_eq!(problems.len(), 3, "{problems:?}");
    for key in ["s0003", "s0007", "s0011"] {
        assert!(
            problems.iter().any(|p| p.contains(key)),
            "{key}: {problems:?}"
        );
        let e = r.get(key.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
    check_samples_except(&store, &["s0003", "s0007", "s0011"]);
}

fn check_samples_except(store: &Store, bad: &[&str]) {
    let r = store.reader().unwrap();
    for i in 0..20 {
        let key = format!("s{i:04}");
        if bad.contains(&key.as_str()) {
            continue;
        }
        assert_eq!(
            r.require(key.as_bytes())
                .unwrap()
                .get(0)
                .unwrap()
                .to_tensor()
                .unwrap(),
            sample(i, 3000)[0]
        );
    }
}

/// The keys `readers_never_see_partial_samples_while_writers_die` sees in
/// one snapshot, checked: each sample whole (its size and bytes), and the
/// samples visible form whole batches of 3 from the start (the import
/// writes k000.. in input order, 3 per commit, the last commit k039 alone).
/// Returns how many are visible.
fn check_whole_batches(store: &Store, what: &str) -> usize {
    let r = store.reader().unwrap();
    let mut keys = Vec::new();
    for s in r.samples(tenstore::store::Order::Key).unwrap() {
        let s = s.unwrap();
        let v = s.get(0).unwrap();
        let i: usize = s.key_str().unwrap()[1..].parse().unwrap();
        assert_eq!(v.nbytes(), 20_000 + i * 100);
        assert!(v.data().iter().all(|&x| x == i as u8));
        keys.push(s.key_str().unwrap().to_owned());
    }
    let n = keys.len();
    let want: Vec<String> = (0..n).map(|i| format!("k{i:03}")).collect();
    assert_eq!(keys, want, "{what}: the visible samples are not a prefix");
    assert!(
        n % 3 == 0 || n == 40,
        "{what}: {n} samples visible, not whole batches of 3"
    );
    n
}

/// A writer process killed mid-batch, again and again, while this process
/// reads: a reader never sees a partial sample, and every committed batch
/// is whole.
#[test]
fn readers_never_see_partial_samples_while_writers_die() {
    use std::os::unix::process::ExitStatusExt;
    for backend in ["lmdb", "ten"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        for i in 0..40 {
            let arr = ArrayD::from_elem(IxDyn(&[20_000 + i * 100]), i as u8);
            tenstore::save(
                src.join(format!("k{i:03}.ten")),
                &[TensorRef::from_array("x", &arr).unwrap()],
            )
            .unwrap();
        }
        // Snapshots read while a writer was alive, and the most samples
        // seen: once committed, a batch stays.
        let (mut reads, mut most) = (0usize, 0usize);
        for round in 0..15u64 {
            // --create every round: a writer killed before it made the
            // store must not leave the next rounds failing to open it.
            let args = [
                "import".to_owned(),
                dir.display().to_string(),
                src.display().to_string(),
                "--batch".into(),
                "3".into(),
                "--create".into(),
                "--backend".into(),
                backend.into(),
            ];
            let mut child = Command::new(BIN)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_millis(5 + round * 7 % 40);
            // Read while the writer writes; until the first snapshot with
            // samples in it, for as long as the writer lives.
            loop {
                let alive = child.try_wait().unwrap().is_none();
                if !alive || (std::time::Instant::now() >= deadline && reads > 0) {
                    break;
                }
                let mdb_len = fs::metadata(dir.join("data.mdb")).map(|m| m.len());
                match Store::open(
                    &dir,
                    &StoreOptions {
                        read_only: true,
                        ..Default::default()
                    },
                ) {
                    Ok(store) => {
                        let what = format!("{backend} round {round}, mid-write");
                        let n = check_whole_batches(&store, &what);
                        assert!(n >= most, "{what}: {n} samples visible, {most} before");
                        most = n;
                        if n > 0 && child.try_wait().unwrap().is_none() {
                            reads += 1;
                        }
                    }
                    // Not created yet: the only error a reader may get.
                    Err(StoreError::NotAStore { .. }) => {}
                    // Or LMDB's environment being made: data.mdb not
                    // there before the open, or there without its two
                    // meta pages yet (the writer may make it between our
                    // look and the open).
                    Err(_) if backend == "lmdb" && mdb_len.as_ref().map_or(true, |&l| l < 8192) => {
                    }
                    Err(e) => panic!("{backend} round {round}: a reader cannot open: {e}"),
                }
            }
            let _ = child.kill();
            let status = child.wait().unwrap();
            assert!(
                status.success() || status.signal() == Some(9),
                "{backend} round {round}: the import failed on its own: {status}"
            );
            match Store::open(&dir, &StoreOptions::default()) {
                Ok(store) => {
                    let r = store.reader().unwrap();
                    assert!(r.verify().unwrap().is_empty(), "{backend} round {round}");
                    drop(r);
                    let what = format!("{backend} round {round}, after the kill");
                    let n = check_whole_batches(&store, &what);
                    assert!(n >= most, "{what}: {n} samples visible, {most} before");
                    most = n;
                }
                Err(StoreError::NotAStore { .. }) => {
                    // Killed before the store was made.
                    assert_eq!(most, 0, "{backend} round {round}: the store went away");
                    if backend == "lmdb" {
                        // LMDB's environment may not exist yet (killed at once).
                        assert!(!dir.join("data.mdb").exists());
                    } else {
                        assert!(!dir.join("MANIFEST").exists());
                    }
                }
                Err(e) => panic!("{backend} round {round}: cannot open after the kill: {e}"),
            }
        }
        assert!(
            reads > 0,
            "{backend}: no snapshot with samples was read while a writer lived"
        );
        eprintln!("{backend}: {reads} snapshots read mid-write, {most} samples at the end");
    }
}

/// An LMDB store of `n` samples `s0000`.. of 10 KB each, closed.
fn lmdb_store(dir: &Path, n: usize) {
    let store = create(dir, Backend::Lmdb);
    let batch: Vec<(String, Vec<Tensor>)> = (0..n)
        .map(|i| (format!("s{i:04}"), sample(i, 10_000)))
        .collect();
    store.put_batch(&batch).unwrap();
    store.flush().unwrap();
}

/// Opens `dir` read-only and for writing; both must fail as damaged, with
/// `want` in the message, and leave data.mdb as it was.
#[track_caller]
fn assert_damaged(dir: &Path, want: &str) {
    let mdb = dir.join("data.mdb");
    let before = fs::read(&mdb).unwrap();
    for read_only in [true, false] {
        let e = Store::open(
            dir,
            &StoreOptions {
                read_only,
                ..Default::default()
            },
        )
        .err()
        .expect("a damaged data.mdb opened");
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("data.mdb is damaged") && msg.contains(want),
            "{msg}"
        );
    }
    assert!(fs::read(&mdb).unwrap() == before, "data.mdb changed");
}

#[test]
fn a_cut_short_lmdb_file_is_refused_before_it_is_mapped() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    lmdb_store(&good, 40);
    let len = fs::metadata(good.join("data.mdb")).unwrap().len();
    assert!(len > 400_000);
    for cut in [len - 4096, len / 2, 3 * 4096, 4096 + 100] {
        let dir = tmp.path().join(format!("cut{cut}"));
        fs::create_dir(&dir).unwrap();
        fs::copy(good.join("data.mdb"), dir.join("data.mdb")).unwrap();
        fs::copy(good.join("tenstore.json"), dir.join("tenstore.json")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join("data.mdb"))
            .unwrap()
            .set_len(cut)
            .unwrap();
        let want = if cut < 2 * 4096 {
            "too short to hold LMDB's meta page 1".to_string()
        } else {
            format!("the file is {cut} bytes, but its last commit")
        };
        assert_damaged(&dir, &want);
    }
    let dir = tmp.path().join("empty");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("data.mdb"), b"").unwrap();
    assert_damaged(&dir, "the file is empty (0 bytes)");
    // The original still opens and reads.
    check_samples(
        &Store::open(&good, &StoreOptions::default()).unwrap(),
        0..40,
        10_000,
    );
}

#[test]
fn damaged_lmdb_meta_pages_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    lmdb_store(&good, 3);
    let page = 4096;
    // (byte offset, bytes written, what the message says)
    let cases: [(usize, &[u8], &str); 4] = [
        (
            16,
            &[0; 4],
            "meta page 0 (at byte 0) is not an LMDB meta page",
        ),
        (
            page + 16,
            b"junk",
            "meta page 1 (at byte 4096) is not an LMDB meta page",
        ),
        (
            20,
            &7u32.to_ne_bytes(),
            "meta page 0 says data format version 7",
        ),
        (
            page + 20,
            &2u32.to_ne_bytes(),
            "meta page 1 says data format version 2",
        ),
    ];
    for (i, (at, bytes, want)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        fs::create_dir(&dir).unwrap();
        fs::copy(good.join("tenstore.json"), dir.join("tenstore.json")).unwrap();
        let mut data = fs::read(good.join("data.mdb")).unwrap();
        data[at..at + bytes.len()].copy_from_slice(bytes);
        fs::write(dir.join("data.mdb"), &data).unwrap();
        assert_damaged(&dir, want);
    }
}

/// LMDB may leave the last pages of the file unwritten when its free list
/// holds them ("the file may be shorter if the freeDB lists the final
/// pages"): such a file is sound, opens, reads and takes writes.
#[test]
fn an_lmdb_file_missing_only_free_trailing_pages_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let last_page = |s: &tenstore::store::LmdbStore| s.stats().unwrap().last_page;
    let tail;
    {
        let store = Store::open(
            &dir,
            &StoreOptions {
                create: true,
                ..Default::default()
            },
        )
        .unwrap();
        let Store::Lmdb(s) = &store else { panic!() };
        for i in 0..20 {
            s.put(format!("s{i:04}").as_bytes(), &sample(i, 100))
                .unwrap();
        }
        // Free pages for the commits below to reuse.
        s.put(b"junk", &sample(0, 40_000)).unwrap();
        s.delete(&[b"junk"]).unwrap();
        s.put(b"t", &sample(0, 1)).unwrap();
        s.put(b"u", &sample(0, 1)).unwrap();
        let before = last_page(s);
        // A large value at the end of the file, then freed: its pages
        // are the file's last pages, listed as free.
        s.put(b"z", &sample(0, 200_000)).unwrap();
        tail = last_page(s) - before;
        assert!(tail >= 49, "{tail}");
        s.delete(&[b"z"]).unwrap();
        assert_eq!(last_page(s), before + tail);
    }
    let mdb = dir.join("data.mdb");
    let len = fs::metadata(&mdb).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&mdb).unwrap();
    f.set_len(len - tail * 4096).unwrap();
    drop(f);
    let store = Store::open(&dir, &StoreOptions::default()).unwrap();
    check_samples(&store, 0..20, 100);
    for i in 20..40 {
        store
            .put(format!("s{i:04}").as_bytes(), &sample(i, 100))
            .unwrap();
    }
    drop(store);
    let store = Store::open(&dir, &StoreOptions::default()).unwrap();
    check_samples(&store, 0..40, 100);
    drop(store);
    // One page more is a live page: cut short.
    let len = fs::metadata(&mdb).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&mdb).unwrap();
    f.set_len(len - 4096).unwrap();
    drop(f);
    let e = Store::open(&dir, &StoreOptions::default()).err().unwrap();
    assert!(e.to_string().contains("cut short"), "{e}");
}

/// The issue's report: one zeroed byte, an emptied or a truncated sidecar,
/// then `verify` and `put` through the CLI. `verify` fails; the writer
/// cuts nothing whole (it refuses and names `tenstore reindex`); after
/// `reindex` and `put`, every sample is readable.
#[test]
fn damaged_sidecars_never_make_the_cli_writer_cut_samples() {
    for damage in ["zeroed byte", "emptied", "truncated"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let store = create(dir, Backend::Shard);
            for i in 0..12 {
                store
                    .put(format!("s{i:04}").as_bytes(), &sample(i, 700))
                    .unwrap();
            }
        }
        let idx = dir.join("000001.idx");
        let mut ib = fs::read(&idx).unwrap();
        let rec = 32 + 8; // a 5-byte key padded to 8
        match damage {
            "zeroed byte" => ib[16 + 2 * rec + 30] = 0, // record 2's own crc
            "emptied" => ib.clear(),
            _ => ib.truncate(16 + 5 * rec + 7),
        }
        fs::write(&idx, &ib).unwrap();
        let st = dir.to_str().unwrap();
        let out = Command::new(BIN).args(["verify", st]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{damage}: verify");
        let shard = fs::read(dir.join("000001.ten")).unwrap();
        let input = tmp.path().join("in.ten");
        fs::write(&input, tenstore::encode_buffer(&sample(99, 10)).unwrap()).unwrap();
        let out = Command::new(BIN)
            .args(["put", st, "new", input.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if damage == "truncated" {
            // A sidecar torn inside a record looks exactly like a crash in
            // a batch's commit: the writer cuts the records after it, but
            // saves them first and says where, and the way it names gives
            // every one back.
            assert!(out.status.success(), "{damage}: put: {stderr}");
            let saved = stderr
                .split_whitespace()
                .find(|w| w.starts_with("cut-") && w.ends_with(".ten:"))
                .unwrap_or_else(|| panic!("{damage}: no saved file named: {stderr}"))
                .trim_end_matches(':')
                .to_owned();
            assert!(stderr.contains("tenstore reindex"), "{damage}: {stderr}");
            let back = tmp.path().join("back");
            fs::create_dir(&back).unwrap();
            fs::copy(dir.join(&saved), back.join("000001.ten")).unwrap();
            let b = back.to_str().unwrap();
            let out = Command::new(BIN).args(["reindex", b]).output().unwrap();
            assert!(
                out.status.success(),
                "{damage}: reindex of the saved records"
            );
            let out = Command::new(BIN).args(["import", st, b]).output().unwrap();
            assert!(
                out.status.success(),
                "{damage}: import of the saved records: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{damage}: put");
            assert!(stderr.contains("tenstore reindex"), "{damage}: {stderr}");
            assert_eq!(fs::read(dir.join("000001.ten")).unwrap(), shard, "{damage}");
            let out = Command::new(BIN).args(["reindex", st]).output().unwrap();
            assert!(out.status.success(), "{damage}: reindex");
            let out = Command::new(BIN)
                .args(["put", st, "new", input.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{damage}: put after reindex");
        }
        let store = Store::open(dir, &StoreOptions::default()).unwrap();
        check_samples(&store, 0..12, 700);
        assert_eq!(store.reader().unwrap().len().unwrap(), 13, "{damage}");
        let out = Command::new(BIN).args(["verify", st]).output().unwrap();
        assert!(out.status.success(), "{damage}: verify after reindex");
    }
}
