//! Epoch plans through the CLI and the server: `tenstore push` with
//! `--rank/--world/--seed/--epoch/--shuffle/--resume` to pyzmq pullers
//! (`tests/py/plan_pull.py`), a kill -9 and resume with another world
//! size, and the serve protocol's `plan` command (without sockets, and
//! through a real `tenstore serve`).

mod common;

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tenstore::ndarray::Array1;
use tenstore::plan::{PlanConfig, Shuffle, Uneven};
use tenstore::serve::{handle, Limits, Reply};
use tenstore::store::{Backend, Store, StoreOptions};
use tenstore::TensorRef;

const BIN: &str = env!("CARGO_BIN_EXE_tenstore");
const N: u64 = 301;

/// A store of `n` samples keyed `k%05d`, written in a scrambled order (so
/// a shard store's write order is not its key order), each holding its
/// number as "i" (i8 [1]) and 64 bytes "x".
fn make_store(dir: &Path, backend: Backend, n: u64) -> Store {
    let store = Store::open(
        dir,
        &StoreOptions {
            create: true,
            backend: Some(backend),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!n.is_multiple_of(11));
    for j in 0..n {
        let i = (j * 11) % n;
        let id = Array1::from(vec![i as i64]);
        let x = Array1::from(vec![(i % 251) as u8; 64]);
        store
            .put(
                format!("k{i:05}").as_bytes(),
                &[
                    TensorRef::from_array("i", &id).unwrap(),
                    TensorRef::from_array("x", &x).unwrap(),
                ],
            )
            .unwrap();
    }
    store.flush().unwrap();
    store
}

/// The sample numbers of a plan's partition, read through the library.
fn expected(store: &Store, config: PlanConfig, resume: u64) -> Vec<i64> {
    let reader = store.reader().unwrap();
    let plan = reader.plan(config).unwrap().resume_from(resume);
    reader
        .plan_samples(&plan)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            let data = s.tensors().get_by_name("i").unwrap().data();
            i64::from_le_bytes(data.try_into().unwrap())
        })
        .collect()
}

/// A running `tenstore` process, killed (SIGKILL) on drop.
struct Proc {
    child: Child,
    endpoint: String,
    lines: Receiver<String>,
}

impl Proc {
    fn start(args: &[&str], prefix: &str) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let banner = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("tenstore {args:?}: no first line"));
        let endpoint = banner
            .strip_prefix(prefix)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line {banner:?}"))
            .to_string();
        Proc {
            child,
            endpoint,
            lines,
        }
    }

    fn push(store: &Path, extra: &[&str]) -> Proc {
        let mut args = vec![
            "push",
            store.to_str().unwrap(),
            "--bind",
            "tcp://127.0.0.1:*",
        ];
        args.extend_from_slice(extra);
        Proc::start(&args, "tenstore push: pushing on ")
    }

    /// Waits for a clean exit; returns the last line.
    fn finish(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "still running after 30 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{status}");
        let mut last = String::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            last = line;
        }
        last
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the puller: `count` messages from each endpoint.
fn pull(count: u64, end: bool, endpoints: &[&str]) -> Vec<Vec<i64>> {
    let mut args = vec![
        count.to_string(),
        if end { "end" } else { "more" }.to_string(),
    ];
    args.extend(endpoints.iter().map(|e| e.to_string()));
    let out = common::run_py_timeout("plan_pull.py", &args, Duration::from_secs(120));
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    serde_json::from_value(json["got"].clone()).unwrap()
}

fn config(seed: u64, epoch: u64, shuffle: Shuffle, rank: u64, world: u64) -> PlanConfig {
    PlanConfig {
        seed,
        epoch,
        shuffle,
        rank,
        world_size: world,
        ..PlanConfig::default()
    }
}

#[test]
fn push_with_three_ranks_covers_the_epoch_once() {
    for (backend, shuffle, pad) in [
        (Backend::Shard, "blocks:8", false),
        (Backend::Lmdb, "full", true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let store = make_store(tmp.path(), backend, N);
        let uneven = if pad { "pad" } else { "drop-last" };
        let mut pushes: Vec<Proc> = (0..3)
            .map(|r| {
                let r = r.to_string();
                Proc::push(
                    tmp.path(),
                    &[
                        "--rank",
                        &r,
                        "--world",
                        "3",
                        "--seed",
                        "5",
                        "--epoch",
                        "2",
                        "--shuffle",
                        shuffle,
                        "--uneven",
                        uneven,
                    ],
                )
            })
            .collect();
        let per_rank = if pad { N.div_ceil(3) } else { N / 3 };
        let eps: Vec<&str> = pushes.iter().map(|p| p.endpoint.as_str()).collect();
        let got = pull(per_rank, true, &eps);
        for p in &mut pushes {
            assert_eq!(
                p.finish(),
                format!("tenstore push: sent {per_rank} samples")
            );
        }
        let shuffle: Shuffle = shuffle.parse().unwrap();
        let mut union = Vec::new();
        for (r, g) in got.iter().enumerate() {
            let mut c = config(5, 2, shuffle, r as u64, 3);
            c.uneven = if pad { Uneven::Pad } else { Uneven::DropLast };
            assert_eq!(*g, expected(&store, c, 0), "{backend:?} rank {r}");
            union.extend(g.iter().copied());
        }
        // The union is the first positions of the single-rank order.
        let whole = expected(&store, config(5, 2, shuffle, 0, 1), 0);
        let mut want: Vec<i64> = (0..per_rank * 3).map(|p| whole[(p % N) as usize]).collect();
        want.sort_unstable();
        union.sort_unstable();
        assert_eq!(union, want, "{backend:?}");
        let distinct: HashSet<i64> = union.iter().copied().collect();
        if pad {
            assert_eq!(distinct.len() as u64, N, "padding covers every sample");
        } else {
            assert_eq!(distinct.len() as u64, N / 3 * 3, "no sample twice");
        }
    }
}

#[test]
fn a_killed_push_resumes_with_another_world_size_losing_and_repeating_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = make_store(tmp.path(), Backend::Shard, N);
    let args = |r: u64, world: u64, resume: u64| -> Vec<String> {
        [
            "--rank",
            &r.to_string(),
            "--world",
            &world.to_string(),
            "--seed",
            "11",
            "--epoch",
            "4",
            "--shuffle",
            "full",
            "--resume",
            &resume.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let start = |world: u64, resume: u64| -> Vec<Proc> {
        (0..world)
            .map(|r| {
                let a = args(r, world, resume);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                Proc::push(tmp.path(), &a)
            })
            .collect()
    };
    // Three ranks; every trainer takes 40 samples, then the job dies.
    let pushes = start(3, 0);
    let eps: Vec<&str> = pushes.iter().map(|p| p.endpoint.as_str()).collect();
    let first = pull(40, false, &eps);
    drop(pushes); // kill -9: what they had queued is lost with them
    for (r, g) in first.iter().enumerate() {
        let want = expected(&store, config(11, 4, Shuffle::Full, r as u64, 3), 0);
        assert_eq!(g[..], want[..40], "rank {r}");
    }
    // Every rank consumed 40: the job saved 3 * 40 global positions.
    // Resume with two ranks.
    let consumed = 3 * 40;
    let mut pushes = start(2, consumed);
    let per_rank = (N - consumed) / 2;
    let eps: Vec<&str> = pushes.iter().map(|p| p.endpoint.as_str()).collect();
    let second = pull(per_rank, true, &eps);
    for p in &mut pushes {
        assert_eq!(
            p.finish(),
            format!("tenstore push: sent {per_rank} samples")
        );
    }
    for (r, g) in second.iter().enumerate() {
        let want = expected(&store, config(11, 4, Shuffle::Full, r as u64, 2), consumed);
        assert_eq!(*g, want, "resumed rank {r}");
    }
    let all: Vec<i64> = first.iter().chain(&second).flatten().copied().collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a sample came twice");
    // Nothing lost: exactly the epoch's first 300 positions (301 mod 2
    // and 301 mod 3 drop the last one).
    let whole = expected(&store, config(11, 4, Shuffle::Full, 0, 1), 0);
    let want: HashSet<i64> = whole[..300].iter().copied().collect();
    assert_eq!(distinct, want);
}

#[test]
fn push_refuses_a_rank_outside_the_world_and_a_bad_shuffle() {
    let tmp = tempfile::tempdir().unwrap();
    make_store(tmp.path(), Backend::Shard, 5);
    for (extra, want) in [
        (
            &["--rank", "3", "--world", "3"][..],
            "rank 3 is out of range",
        ),
        (&["--world", "0"][..], "world_size must be at least 1"),
        (&["--shuffle", "blocks:0"][..], "unknown shuffle"),
    ] {
        let out = Command::new(BIN)
            .args([
                "push",
                tmp.path().to_str().unwrap(),
                "--bind",
                "tcp://127.0.0.1:*",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

fn ok(reply: Reply<'_>) -> Vec<Vec<u8>> {
    match reply {
        Reply::Ok(frames) => frames.into_iter().map(Cow::into_owned).collect(),
        Reply::Err(e) => panic!("err {e}"),
    }
}

fn err(reply: Reply<'_>) -> String {
    match reply {
        Reply::Ok(f) => panic!("ok with {} frames", f.len()),
        Reply::Err(e) => e,
    }
}

#[test]
fn the_plan_command_pages_through_a_partition() {
    for backend in [Backend::Lmdb, Backend::Shard] {
        let tmp = tempfile::tempdir().unwrap();
        let store = make_store(tmp.path(), backend, 50);
        let r = store.reader().unwrap();
        let l = Limits::default();
        for shuffle in ["none", "full", "blocks:4"] {
            let want: Vec<Vec<u8>> =
                expected(&store, config(2, 1, shuffle.parse().unwrap(), 1, 4), 0)
                    .iter()
                    .map(|i| format!("k{i:05}").into_bytes())
                    .collect();
            assert_eq!(want.len(), 12);
            let req = |after: &'static [u8], limit: &'static [u8]| -> Vec<&[u8]> {
                vec![
                    b"plan",
                    b"2",
                    b"1",
                    b"1",
                    b"4",
                    shuffle.as_bytes(),
                    after,
                    limit,
                ]
            };
            // One page of everything (default AFTER and LIMIT).
            let all = ok(handle(&r, &req(b"", b"")[..6], &l));
            assert_eq!(all, want, "{backend:?} {shuffle}");
            // Pages of 5: AFTER counts the keys already received.
            let mut paged = ok(handle(&r, &req(b"0", b"5"), &l));
            paged.extend(ok(handle(&r, &req(b"5", b"5"), &l)));
            paged.extend(ok(handle(&r, &req(b"10", b"5"), &l)));
            assert_eq!(paged, want);
            assert!(ok(handle(&r, &req(b"12", b"5"), &l)).is_empty());
        }
        for (req, msg) in [
            (&[&b"plan"[..], b"1", b"0", b"0"][..], "plan takes SEED"),
            (
                &[b"plan", b"1", b"0", b"4", b"4", b"full"],
                "rank 4 is out of range",
            ),
            (
                &[b"plan", b"1", b"0", b"0", b"0", b"full"],
                "world_size must be",
            ),
            (
                &[b"plan", b"x", b"0", b"0", b"1", b"full"],
                "SEED must be a decimal",
            ),
            (
                &[b"plan", b"1", b"0", b"0", b"1", b"blocks:0"],
                "unknown shuffle",
            ),
            (
                &[b"plan", b"1", b"0", b"0", b"1", b"\xff"],
                "unknown shuffle",
            ),
            (
                &[b"plan", b"1", b"0", b"0", b"1", b"full", b"0", b"100001"],
                "LIMIT is at most 100000",
            ),
        ] {
            let e = err(handle(&r, req, &l));
            assert!(e.contains(msg), "{req:?}: {e}");
        }
    }
}

#[test]
fn serve_answers_plan_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let store = make_store(tmp.path(), Backend::Shard, 40);
    let server = Proc::start(
        &[
            "serve",
            tmp.path().to_str().unwrap(),
            "--bind",
            "tcp://127.0.0.1:*",
        ],
        "tenstore serve: listening on ",
    );
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(20_000).unwrap();
    req.set_linger(0).unwrap();
    req.connect(&server.endpoint).unwrap();
    let frames: [&[u8]; 8] = [b"plan", b"9", b"0", b"2", b"3", b"blocks:5", b"3", b"100"];
    req.send_multipart(frames, 0).unwrap();
    let reply = req.recv_multipart(0).unwrap();
    let want = expected(&store, config(9, 0, Shuffle::Blocks { size: 5 }, 2, 3), 0);
    let want: Vec<Vec<u8>> = std::iter::once(b"ok".to_vec())
        .chain(want[3..].iter().map(|i| format!("k{i:05}").into_bytes()))
        .collect();
    assert_eq!(reply, want);
}
