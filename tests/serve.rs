//! `tenstore serve` and `tenstore push`, the real binary, with Rust zmq
//! clients and Python pyzmq clients (`tests/py/serve_client.py`, the
//! README's loader `tests/py/loader.py` run by `tests/py/loader_run.py`,
//! `tests/py/push_check.py`).
//!
//! The stores hold `tenstore demo`'s samples (`sample-%08d`: image u1
//! 3x64x64, logits f4 [10], label i8 [1]; see `src/bin/tenstore/demo.rs`),
//! made by the CLI (LMDB) or with the library (either backend), so every
//! value a client gets is checked element by element.
//!
//! - Every command (get of 1 and 64 keys, getm, len, keys paged with
//!   PREFIX/AFTER/LIMIT, info), missing keys and malformed requests (`err`
//!   and a message), from REQ, DEALER with the empty delimiter and DEALER
//!   without it, over tcp and ipc, on both backends; the server's closing
//!   line counts exactly the ok and err replies the clients got.
//! - Pipelined requests of every length from one DEALER: answered in
//!   order by one thread, all answered (the same replies) by several.
//! - 16 concurrent clients; a SIGTERM with a large request in flight (it
//!   is answered, exit 0, the stop line), then a restart on the same
//!   endpoint that reconnecting clients carry on with (stopped by SIGINT).
//! - Samples written by this process while the server (another process)
//!   reads become visible (polled, with a generous deadline): LMDB with map
//!   growth, shards with rolls; deletions too, and a shard compaction under
//!   a busy client; then every worker agrees.
//! - Abuse: thousands of malformed requests from churning DEALERs (random
//!   frames, empty frames, empty requests, keys over 511 bytes, frames over
//!   64 KiB that get their client cut off, unknown commands, too many
//!   keys), each reply matched to its request, while valid clients are
//!   answered correctly throughout; the server's RSS stays flat.
//! - The command-line limits (--max-keys, --max-frame, --max-reply).
//! - The README's Python loader, alone, with forked and with spawned
//!   worker processes; `tests/py/loader.py` is the README's loader.
//! - `tenstore push --epochs 2 --shuffle --seed 3` to a Python PULL: every
//!   sample once per epoch, values checked, the two epoch plans' shuffles.
//! - A missing store and a busy endpoint fail with one error line, exit 1.
//! - Err messages escape odd bytes once; an out-of-range `--max-keys` or
//!   `--threads 0` is a usage error (exit 2) naming the option; `push`
//!   stopped by SIGTERM exits 0, before any puller and while one lags.
//! - Clients that never read their replies cannot make the server hold
//!   more than `--max-queued-bytes`.
//! - A key listed while a writer writes is found by the next `get`, on
//!   both backends.
//! - Bind addresses: host names resolved, loopback judged by address.
//!
//! Every server runs under a guard that kills it if the test fails; every
//! socket has a receive timeout; every wait has a deadline.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::XorShift;
use tenstore::ndarray::{Array1, Array3};
use tenstore::store::{Backend, LmdbOptions, ShardOptions, Store, StoreOptions};
use tenstore::{DType, TensorRef, TensorView, Tensors};

const BIN: &str = env!("CARGO_BIN_EXE_tenstore");
/// Samples in most test stores.
const N: usize = 300;
/// Client receive timeout.
const TIMEOUT_MS: i32 = 10_000;

// ---------------------------------------------------------------------------
// The demo's samples.

fn key(i: usize) -> String {
    format!("sample-{i:08}")
}

/// The image of sample `i` as bytes in C order: (i*31 + c*7 + y*3 + x) % 251.
/// It depends on `i` only through `i*31 % 251`, so there are 251 of them.
fn image_bytes(i: usize) -> &'static [u8] {
    static IMAGES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let images = IMAGES.get_or_init(|| {
        (0..251)
            .map(|r| {
                let mut v = Vec::with_capacity(3 * 64 * 64);
                for c in 0..3 {
                    for y in 0..64 {
                        for x in 0..64 {
                            v.push(((r + c * 7 + y * 3 + x) % 251) as u8);
                        }
                    }
                }
                v
            })
            .collect()
    });
    &images[i * 31 % 251]
}

/// The arrays of sample `i`, exactly as `tenstore demo` makes them.
fn demo_arrays(i: usize) -> (Array3<u8>, Array1<f32>, Array1<i64>) {
    let image = Array3::from_shape_fn((3, 64, 64), |(c, y, x)| {
        ((i * 31 + c * 7 + y * 3 + x) % 251) as u8
    });
    let logits = Array1::from_shape_fn(10, |k| (i as f32) * 0.5 - k as f32);
    let label = Array1::from_elem(1, (i % 10) as i64);
    (image, logits, label)
}

/// Asserts that `views` are sample `i`'s tensors: names, dtypes, shapes and
/// every element.
#[track_caller]
fn check_views(what: &str, i: usize, views: &[TensorView<'_>]) {
    assert_eq!(views.len(), 3, "{what}: number of tensors");
    let (image, logits, label) = (&views[0], &views[1], &views[2]);
    assert_eq!(
        [image.name(), logits.name(), label.name()],
        ["image", "logits", "label"],
        "{what}: names"
    );
    assert_eq!(
        [image.dtype(), logits.dtype(), label.dtype()],
        [DType::U8, DType::F32, DType::I64],
        "{what}: dtypes"
    );
    assert_eq!(image.shape(), [3, 64, 64], "{what}: image shape");
    assert_eq!(logits.shape(), [10], "{what}: logits shape");
    assert_eq!(label.shape(), [1], "{what}: label shape");
    let got = image.cow_array::<u8>().unwrap();
    let got = got.as_slice().expect("C order");
    let want = image_bytes(i);
    if got != want {
        let at = got.iter().zip(want).position(|(g, w)| g != w).unwrap();
        panic!(
            "{what}: image element {at} is {}, expected {}",
            got[at], want[at]
        );
    }
    let got = logits.to_vec::<f32>().unwrap();
    for (k, g) in got.iter().enumerate() {
        let w = (i as f32) * 0.5 - k as f32;
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: logits[{k}] {g} != {w}");
    }
    assert_eq!(
        label.to_vec::<i64>().unwrap(),
        [(i % 10) as i64],
        "{what}: label"
    );
}

/// Asserts that a `get` value is sample `i`'s tenbin buffer.
#[track_caller]
fn check_buffer(what: &str, i: usize, bytes: &[u8]) {
    let tensors = Tensors::parse(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    check_views(what, i, &tensors.to_vec());
}

/// The sample number of a decoded sample (logits[0] is i / 2).
fn index_of(bytes: &[u8]) -> usize {
    let tensors = Tensors::parse(bytes).unwrap();
    let logits = tensors
        .get_by_name("logits")
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    (logits[0] * 2.0) as usize
}

// ---------------------------------------------------------------------------
// Stores.

/// A store of samples 0..n made by `tenstore demo` (LMDB).
fn cli_store(root: &Path, n: usize) -> PathBuf {
    let dir = root.join("demo-store");
    let store = dir.to_str().unwrap();
    let samples = n.to_string();
    common::cli::ok(common::cli::ts([
        "demo",
        "--store",
        store,
        "--samples",
        &samples,
        "--reads",
        "1",
    ]));
    dir
}

/// A temporary directory with a [`cli_store`] of samples 0..n in it, and
/// `tenstore serve` serving that store on a loopback TCP port.
fn serve_demo(n: usize) -> (tempfile::TempDir, PathBuf, Proc) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cli_store(tmp.path(), n);
    let server = Proc::serve(&store, "tcp://127.0.0.1:*", &[]);
    (tmp, store, server)
}

/// A store of `backend` made with the library; small LMDB maps and shard
/// limits so that writes grow the map and roll shards.
fn lib_store(dir: &Path, backend: Backend, n: usize) -> Store {
    let store = Store::open(
        dir,
        &StoreOptions {
            create: true,
            backend: Some(backend),
            lmdb: LmdbOptions {
                map_size: 1 << 20,
                ..Default::default()
            },
            shard: ShardOptions {
                shard_limit: 256 << 10,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    put_demo(&store, 0..n);
    store
}

/// A temporary directory with a [`lib_store`] of samples 0..n in it, and
/// `tenstore serve` serving that store on a loopback TCP port.
fn serve_lib_store(backend: Backend, n: usize) -> (tempfile::TempDir, Store, Proc) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = lib_store(&dir, backend, n);
    let server = Proc::serve(&dir, "tcp://127.0.0.1:*", &[]);
    (tmp, store, server)
}

/// Writes samples `range` in batches of 50.
fn put_demo(store: &Store, range: Range<usize>) {
    let all: Vec<usize> = range.collect();
    for chunk in all.chunks(50) {
        let arrays: Vec<_> = chunk.iter().map(|&i| demo_arrays(i)).collect();
        let batch: Vec<(String, Vec<TensorRef<'_>>)> = chunk
            .iter()
            .zip(&arrays)
            .map(|(&i, (image, logits, label))| {
                (
                    key(i),
                    vec![
                        TensorRef::from_array("image", image).unwrap(),
                        TensorRef::from_array("logits", logits).unwrap(),
                        TensorRef::from_array("label", label).unwrap(),
                    ],
                )
            })
            .collect();
        store.put_batch(&batch).unwrap();
    }
}

// ---------------------------------------------------------------------------
// The processes under test.

/// A running `tenstore serve` or `tenstore push`, killed on drop unless it
/// was stopped.
struct Proc {
    child: Child,
    pid: u32,
    /// The endpoint from the first line.
    endpoint: String,
    /// The first line of stdout.
    banner: String,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    exited: bool,
}

impl Proc {
    /// Starts `tenstore ARGS` and reads its first line, `PREFIX ENDPOINT...`.
    fn start(args: &[&str], prefix: &str) -> Proc {
        Proc::try_start(args, prefix).unwrap_or_else(|e| panic!("tenstore {args:?}: {e}"))
    }

    /// Like [`start`](Self::start), but a process that exits without a
    /// first line is an `Err` with its status and stderr.
    fn try_start(args: &[&str], prefix: &str) -> Result<Proc, String> {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let err_thread = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let pid = child.id();
        let mut proc = Proc {
            child,
            pid,
            endpoint: String::new(),
            banner: String::new(),
            stdout: rx,
            stderr,
            exited: false,
        };
        let banner = match proc.stdout.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => {
                let (status, _) = proc.wait(Duration::from_secs(10));
                let _ = err_thread.join();
                return Err(format!(
                    "exited without a first line: {status}; stderr: {}",
                    proc.stderr()
                ));
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("no first line in 30 s; stderr: {}", proc.stderr()))
            }
        };
        let endpoint = banner
            .strip_prefix(prefix)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line {banner:?}"))
            .to_string();
        proc.endpoint = endpoint;
        proc.banner = banner;
        Ok(proc)
    }

    /// `tenstore serve STORE --bind BIND EXTRA...`, started as
    /// [`try_start`](Self::try_start) starts it.
    fn try_serve(store: &Path, bind: &str, extra: &[&str]) -> Result<Proc, String> {
        let mut args = vec!["serve", store.to_str().unwrap(), "--bind", bind];
        args.extend_from_slice(extra);
        Proc::try_start(&args, "tenstore serve: listening on ")
    }

    /// [`try_serve`](Self::try_serve) that must start, on a loopback
    /// endpoint.
    fn serve(store: &Path, bind: &str, extra: &[&str]) -> Proc {
        let proc = Proc::try_serve(store, bind, extra)
            .unwrap_or_else(|e| panic!("tenstore serve --bind {bind} {extra:?}: {e}"));
        assert!(
            proc.banner.contains("(loopback only)"),
            "banner: {}",
            proc.banner
        );
        proc
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The resident set size, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// Waits up to `limit` for the process to exit; then returns its status
    /// and the rest of its stdout.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "tenstore (pid {}) still running after {limit:?}; stderr: {}",
                self.pid,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        };
        self.exited = true;
        let mut rest = Vec::new();
        loop {
            match self.stdout.recv_timeout(Duration::from_secs(5)) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stdout still open after exit"),
            }
        }
        (status, rest)
    }

    /// Sends signal `sig` (`TERM`, `INT`).
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {} failed", self.pid);
    }

    /// SIGTERM, then [`wait`](Self::wait).
    fn terminate(&mut self) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        self.wait(Duration::from_secs(30))
    }

    /// SIGTERM; asserts exit 0 and the stop line; returns its (ok, err)
    /// counts.
    fn stop_serve(&mut self) -> (u64, u64) {
        self.stop_serve_with("TERM")
    }

    /// Like [`stop_serve`](Self::stop_serve) with signal `sig`.
    fn stop_serve_with(&mut self, sig: &str) -> (u64, u64) {
        self.signal(sig);
        let (status, rest) = self.wait(Duration::from_secs(30));
        assert!(
            status.success(),
            "tenstore serve exited with {status}; stderr: {}",
            self.stderr()
        );
        let last = rest.last().cloned().unwrap_or_default();
        let counts: Vec<u64> = last
            .strip_prefix("tenstore serve: stopped after ")
            .and_then(|r| r.strip_suffix(" err replies"))
            .map(|r| {
                r.split(" ok and ")
                    .map(|n| n.parse().expect("a count"))
                    .collect()
            })
            .unwrap_or_else(|| panic!("no stop line; stdout after the banner: {rest:?}"));
        assert_eq!(counts.len(), 2, "{last}");
        (counts[0], counts[1])
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Req,
    /// A DEALER that sends the empty delimiter frame first, as REQ does.
    DealerDelim,
    /// A DEALER that sends no envelope at all.
    Dealer,
}

/// Counts of the replies a client got, to match the server's stop line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Tally {
    ok: u64,
    err: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.ok += o.ok;
        self.err += o.err;
    }
}

struct Client {
    sock: zmq::Socket,
    kind: Kind,
    tally: Tally,
}

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(kind).unwrap();
    s.set_rcvtimeo(TIMEOUT_MS).unwrap();
    s.set_sndtimeo(TIMEOUT_MS).unwrap();
    s.set_linger(0).unwrap();
    s.connect(endpoint).unwrap();
    s
}

fn shown(frames: &[&[u8]]) -> String {
    let first: Vec<String> = frames
        .iter()
        .take(3)
        .map(|f| {
            f.iter()
                .take(24)
                .copied()
                .collect::<Vec<u8>>()
                .escape_ascii()
                .to_string()
        })
        .collect();
    format!("{first:?} ({} frames)", frames.len())
}

impl Client {
    fn new(ctx: &zmq::Context, endpoint: &str, kind: Kind) -> Client {
        let zkind = if kind == Kind::Req {
            zmq::REQ
        } else {
            zmq::DEALER
        };
        Client {
            sock: socket(ctx, zkind, endpoint),
            kind,
            tally: Tally::default(),
        }
    }

    /// Sends a request; returns the reply's status and frames.
    fn ask(&mut self, frames: &[&[u8]]) -> (bool, Vec<Vec<u8>>) {
        let mut out: Vec<&[u8]> = Vec::with_capacity(frames.len() + 1);
        if self.kind == Kind::DealerDelim {
            out.push(b"");
        }
        out.extend_from_slice(frames);
        self.sock.send_multipart(out, 0).unwrap();
        let mut reply = self
            .sock
            .recv_multipart(0)
            .unwrap_or_else(|e| panic!("no reply to {}: {e}", shown(frames)));
        if self.kind == Kind::DealerDelim {
            assert!(
                reply.first().is_some_and(|f| f.is_empty()),
                "a DEALER's reply lost its delimiter"
            );
            reply.remove(0);
        }
        assert!(!reply.is_empty(), "an empty reply to {}", shown(frames));
        let status = reply.remove(0);
        match &status[..] {
            b"ok" => {
                self.tally.ok += 1;
                (true, reply)
            }
            b"err" => {
                self.tally.err += 1;
                (false, reply)
            }
            other => panic!(
                "status {:?} for {}",
                other.escape_ascii().to_string(),
                shown(frames)
            ),
        }
    }

    #[track_caller]
    fn ok(&mut self, frames: &[&[u8]]) -> Vec<Vec<u8>> {
        let (ok, reply) = self.ask(frames);
        assert!(
            ok,
            "{} failed: {:?}",
            shown(frames),
            reply
                .first()
                .map(|m| String::from_utf8_lossy(m).into_owned())
        );
        reply
    }

    /// Asserts an `err` reply whose message contains `needle`.
    #[track_caller]
    fn err(&mut self, frames: &[&[u8]], needle: &str) -> String {
        let (ok, reply) = self.ask(frames);
        assert!(!ok, "{} did not fail", shown(frames));
        assert_eq!(reply.len(), 1, "an err reply of {} frames", reply.len() + 1);
        let msg = String::from_utf8(reply[0].clone()).unwrap();
        assert!(
            msg.contains(needle),
            "err message {msg:?} for {} lacks {needle:?}",
            shown(frames)
        );
        msg
    }
}

fn keys_of(range: Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| key(i).into_bytes()).collect()
}

/// Every command, checked, from one client; the store holds samples 0..n
/// (n >= 200).
fn check_commands(client: &mut Client, n: usize, backend: &str) {
    let what = format!("{:?}", client.kind);
    let mut rng = XorShift::new(n as u64);

    assert_eq!(client.ok(&[b"len"]), [n.to_string().into_bytes()]);
    let info: serde_json::Value = serde_json::from_slice(&client.ok(&[b"info"])[0]).unwrap();
    assert_eq!(info["backend"], backend, "{info}");
    assert_eq!(info["samples"], n as u64, "{info}");
    assert!(
        info["bytes"].as_u64().unwrap() > (n * 12_000) as u64,
        "{info}"
    );

    // keys: paged with LIMIT through every key; with a PREFIX; edges.
    for limit in [7usize, 64, 10_000] {
        let mut all: Vec<Vec<u8>> = Vec::new();
        let mut after: Vec<u8> = Vec::new();
        let mut pages = 0;
        loop {
            let page = client.ok(&[b"keys", b"", &after, limit.to_string().as_bytes()]);
            assert!(page.len() <= limit);
            pages += 1;
            all.extend(page.iter().cloned());
            if page.len() < limit {
                break;
            }
            after = page.last().unwrap().clone();
        }
        assert_eq!(all, keys_of(0..n), "{what}: paging by {limit}");
        assert_eq!(pages, n / limit + 1);
    }
    let mut prefixed = Vec::new();
    let mut after = Vec::new();
    loop {
        let page = client.ok(&[b"keys", b"sample-000001", &after, b"30"]);
        prefixed.extend(page.iter().cloned());
        if page.len() < 30 {
            break;
        }
        after = page.last().unwrap().clone();
    }
    assert_eq!(prefixed, keys_of(100..200), "{what}: PREFIX");
    assert_eq!(client.ok(&[b"keys"]), keys_of(0..n));
    assert_eq!(client.ok(&[b"keys", b"sample-0000002"]), keys_of(20..30));
    assert_eq!(
        client.ok(&[b"keys", b"", key(41).as_bytes(), b"3"]),
        keys_of(42..45)
    );
    // AFTER before the PREFIX range starts the range; past it, nothing.
    assert_eq!(
        client.ok(&[b"keys", b"sample-0000015", b"a", b"100"]),
        keys_of(150..160)
    );
    assert!(client
        .ok(&[b"keys", b"sample-", key(n - 1).as_bytes()])
        .is_empty());
    assert!(client.ok(&[b"keys", b"", b"", b"0"]).is_empty());
    assert!(client.ok(&[b"keys", b"nothing-here"]).is_empty());

    // get: one key, 64 keys (repeats included), getm.
    let i = rng.below(n as u64) as usize;
    let got = client.ok(&[b"get", key(i).as_bytes()]);
    assert_eq!(got.len(), 1);
    check_buffer(&format!("{what}: get {i}"), i, &got[0]);
    let mut many: Vec<usize> = (0..60).map(|_| rng.below(n as u64) as usize).collect();
    many.extend([0, n - 1, 0, 7]);
    let many_keys: Vec<String> = many.iter().map(|&i| key(i)).collect();
    let mut request: Vec<&[u8]> = vec![b"get"];
    request.extend(many_keys.iter().map(|k| k.as_bytes()));
    let got = client.ok(&request);
    assert_eq!(got.len(), 64);
    for (&i, bytes) in many.iter().zip(&got) {
        check_buffer(&format!("{what}: get of 64, sample {i}"), i, bytes);
    }
    let i = rng.below(n as u64) as usize;
    let frames = client.ok(&[b"getm", key(i).as_bytes()]);
    assert_eq!(frames.len(), 6, "{what}: getm frames");
    let views = tenstore::decode_list(&frames).unwrap();
    check_views(&format!("{what}: getm {i}"), i, &views);

    // Missing keys and malformed requests: err with a message.
    client.err(
        &[b"get", b"no-such-key"],
        "no sample with key \"no-such-key\"",
    );
    client.err(
        &[b"get", key(0).as_bytes(), b"sample-99999999"],
        "no sample with key",
    );
    client.err(&[b"getm", b"no-such-key"], "no sample with key");
    client.err(&[b"get"], "get needs at least one key");
    client.err(&[b"getm"], "getm takes exactly one key");
    client.err(&[b"getm", b"a", b"b"], "getm takes exactly one key");
    client.err(&[b"len", b"x"], "len takes no arguments");
    client.err(&[b"info", b""], "info takes no arguments");
    client.err(
        &[b"keys", b"", b"", b"ten"],
        "LIMIT must be a decimal number",
    );
    client.err(
        &[b"keys", b"", b"", b"-1"],
        "LIMIT must be a decimal number",
    );
    client.err(&[b"keys", b"", b"", b"100001"], "LIMIT is at most 100000");
    client.err(
        &[b"keys", b"a", b"b", b"1", b"x"],
        "at most PREFIX, AFTER and LIMIT",
    );
    client.err(&[b"keys", &[b'p'; 512]], "at most 511 bytes");
    client.err(
        &[b"get", &[b'k'; 512]],
        "keys are 1 to 511 bytes; got one of 512",
    );
    client.err(&[b"get", b""], "keys are 1 to 511 bytes; got one of 0");
    client.err(&[b"frobnicate"], "unknown command \"frobnicate\"");
    client.err(&[b"GET", key(0).as_bytes()], "unknown command");
    let msg = client.err(&[b"\xff\x00\x01"], "unknown command \"");
    assert!(msg.contains("xff"), "{msg}");
    let k0 = key(0);
    let too_many: Vec<&[u8]> = std::iter::once(&b"get"[..])
        .chain(std::iter::repeat_n(k0.as_bytes(), 1025))
        .collect();
    client.err(
        &too_many,
        "request has 1026 frames; at most 1025 are allowed",
    );
    let just_enough: Vec<&[u8]> = std::iter::once(&b"get"[..])
        .chain(std::iter::repeat_n(k0.as_bytes(), 1024))
        .collect();
    let got = client.ok(&just_enough);
    assert_eq!(got.len(), 1024);
    check_buffer("the 1024th of 1024", 0, &got[1023]);
    // Still answering.
    assert_eq!(client.ok(&[b"len"]), [n.to_string().into_bytes()]);
}

/// A DEALER sends many gets before reading any reply: the replies may
/// come back in any order (several workers); each is whole and right.
fn pipelined_gets(client: &mut Client, n: usize) {
    let want: Vec<usize> = (0..n).step_by(3).collect();
    for &i in &want {
        client
            .sock
            .send_multipart([&b"get"[..], key(i).as_bytes()], 0)
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in &want {
        let reply = client.sock.recv_multipart(0).expect("a pipelined reply");
        assert_eq!(reply.len(), 2);
        assert_eq!(reply[0], b"ok");
        client.tally.ok += 1;
        let i = index_of(&reply[1]);
        check_buffer(&format!("pipelined {i}"), i, &reply[1]);
        got.push(i);
    }
    got.sort_unstable();
    assert_eq!(got, want);
}

/// Every command from Rust clients of each kind and from the Python client;
/// then SIGTERM, and the stop line counts exactly what the clients got.
fn every_command(store: &Path, bind: &str, n: usize, backend: &str) {
    let mut server = Proc::serve(store, bind, &[]);
    // The default thread count: the CPUs, 2 to 8.
    let threads = thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, 8);
    assert!(
        server.banner.ends_with(&format!(
            "{} {backend} store with {n} samples, {threads} workers",
            store.display()
        )),
        "banner: {}",
        server.banner
    );
    let ctx = zmq::Context::new();
    let mut total = Tally::default();
    for kind in [Kind::Req, Kind::DealerDelim, Kind::Dealer] {
        let mut client = Client::new(&ctx, &server.endpoint, kind);
        check_commands(&mut client, n, backend);
        total += client.tally;
    }
    let mut dealer = Client::new(&ctx, &server.endpoint, Kind::Dealer);
    pipelined_gets(&mut dealer, n);
    total += dealer.tally;

    let out = common::run_py_timeout(
        "serve_client.py",
        [server.endpoint.as_str(), &n.to_string(), backend],
        Duration::from_secs(120),
    );
    let py: Vec<u64> = out
        .trim()
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("python: {out}"))
        .split(' ')
        .map(|c| c.parse().unwrap())
        .collect();
    total += Tally {
        ok: py[0],
        err: py[1],
    };
    let (ok, err) = server.stop_serve();
    assert_eq!(
        Tally { ok, err },
        total,
        "the server's counts differ from the clients'"
    );
}

#[test]
fn every_command_on_an_lmdb_store_made_by_the_cli_over_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let store = cli_store(tmp.path(), N);
    every_command(&store, "tcp://127.0.0.1:*", N, "lmdb");
}

#[test]
fn every_command_on_a_shard_store_made_with_the_library_over_ipc() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shards");
    let store = lib_store(&dir, Backend::Shard, N);
    assert!(store.stats().unwrap().shards > 3, "the samples span shards");
    let bind = format!("ipc://{}", tmp.path().join("serve.sock").display());
    every_command(&dir, &bind, N, "ten");
}

#[test]
fn every_command_on_an_lmdb_store_made_with_the_library_over_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lmdb");
    let store = lib_store(&dir, Backend::Lmdb, 250);
    drop(store);
    every_command(&dir, "tcp://127.0.0.1:*", 250, "lmdb");
}

/// Rounds of pipelined requests of every length: a get of 20 keys (long:
/// a helper's, when there are helpers), `len`, a get of 1 key, a page of
/// `keys`, a getm.
fn mixed_requests(rounds: usize) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for r in 0..rounds {
        let mut long = vec![b"get".to_vec()];
        long.extend((0..20).map(|j| key((r * 7 + j) % N).into_bytes()));
        out.push(long);
        out.push(vec![b"len".to_vec()]);
        out.push(vec![b"get".to_vec(), key(r % N).into_bytes()]);
        out.push(vec![
            b"keys".to_vec(),
            Vec::new(),
            key(r).into_bytes(),
            b"3".to_vec(),
        ]);
        out.push(vec![b"getm".to_vec(), key((r + 1) % N).into_bytes()]);
    }
    out
}

/// Checks one reply to a request of [`mixed_requests`].
fn check_mixed(request: &[Vec<u8>], reply: &[Vec<u8>]) {
    assert_eq!(reply[0], b"ok", "{request:?}: {reply:?}");
    match &request[0][..] {
        b"get" => {
            assert_eq!(reply.len(), request.len());
            for (k, v) in request[1..].iter().zip(&reply[1..]) {
                check_buffer("pipelined get", index_of_key(k), v);
            }
        }
        b"len" => assert_eq!(reply[1..], [N.to_string().into_bytes()]),
        b"keys" => {
            let after = index_of_key(&request[2]);
            assert_eq!(reply[1..], keys_of(after + 1..after + 4)[..]);
        }
        b"getm" => {
            let views = tenstore::decode_list(&reply[1..]).unwrap();
            check_views("pipelined getm", index_of_key(&request[1]), &views);
        }
        other => panic!("not a mixed request: {other:?}"),
    }
}

/// With one thread, a DEALER's pipelined replies come back in the order
/// of its requests, whatever their lengths; with helper threads every
/// reply still comes, whole and right (a short one may pass a long one).
#[test]
fn pipelined_requests_of_every_length_are_answered_in_order_by_one_thread_and_all_by_several() {
    let tmp = tempfile::tempdir().unwrap();
    let store = cli_store(tmp.path(), N);
    let requests = mixed_requests(40);
    let mut in_order = Vec::new();
    for threads in ["1", "3"] {
        let mut server = Proc::serve(&store, "tcp://127.0.0.1:*", &["--threads", threads]);
        let ctx = zmq::Context::new();
        let dealer = socket(&ctx, zmq::DEALER, &server.endpoint);
        for r in &requests {
            dealer.send_multipart(r, 0).unwrap();
        }
        let mut replies: Vec<Vec<Vec<u8>>> = (0..requests.len())
            .map(|_| dealer.recv_multipart(0).expect("a pipelined reply"))
            .collect();
        if threads == "1" {
            for (req, reply) in requests.iter().zip(&replies) {
                check_mixed(req, reply);
            }
            in_order = replies;
        } else {
            // The replies checked above, each once, in some order.
            let mut want = in_order.clone();
            want.sort();
            replies.sort();
            assert!(replies == want, "--threads 3: the replies differ");
        }
        let (ok, err) = server.stop_serve();
        assert_eq!((ok, err), (requests.len() as u64, 0), "--threads {threads}");
    }
}

// ---------------------------------------------------------------------------
// Concurrency, restarts, new samples.

#[test]
fn sixteen_concurrent_clients_each_get_the_right_values() {
    let (_tmp, _store, mut server) = serve_demo(N);
    let ctx = zmq::Context::new();
    let clients: Vec<_> = (0..16u64)
        .map(|t| {
            let ctx = ctx.clone();
            let endpoint = server.endpoint.clone();
            thread::spawn(move || {
                let kind = [Kind::Req, Kind::DealerDelim, Kind::Dealer][t as usize % 3];
                let mut c = Client::new(&ctx, &endpoint, kind);
                let mut rng = XorShift::new(100 + t);
                for r in 0..80 {
                    let picks: Vec<usize> = (0..[1, 1, 5, 1][r % 4])
                        .map(|_| rng.below(N as u64) as usize)
                        .collect();
                    let keys: Vec<String> = picks.iter().map(|&i| key(i)).collect();
                    if r % 4 == 3 {
                        let frames = c.ok(&[b"getm", keys[0].as_bytes()]);
                        let views = tenstore::decode_list(&frames).unwrap();
                        check_views(&format!("client {t} getm"), picks[0], &views);
                    } else {
                        let mut req: Vec<&[u8]> = vec![b"get"];
                        req.extend(keys.iter().map(|k| k.as_bytes()));
                        let got = c.ok(&req);
                        assert_eq!(got.len(), picks.len());
                        for (&i, b) in picks.iter().zip(&got) {
                            check_buffer(&format!("client {t} request {r}"), i, b);
                        }
                    }
                }
                c.tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for c in clients {
        total += c.join().expect("a client failed");
    }
    assert_eq!(
        total,
        Tally {
            ok: 16 * 80,
            err: 0
        }
    );
    let (ok, err) = server.stop_serve();
    assert_eq!(Tally { ok, err }, total);
}

/// A client that keeps asking for samples and carries on across a server
/// restart: a request that gets no reply in time (lost with the old
/// server) is abandoned with its socket, and a new socket asks again (the
/// "lazy pirate" pattern; REQ_RELAXED would do it in one socket, but then
/// libzmq drops the connection it waits on).
fn persistent_client(
    ctx: zmq::Context,
    endpoint: String,
    seed: u64,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let connect = || {
        let s = socket(&ctx, zmq::REQ, &endpoint);
        s.set_rcvtimeo(1000).unwrap();
        s
    };
    let mut s = connect();
    let mut rng = XorShift::new(seed);
    let mut timeouts = 0;
    while !stop.load(Ordering::Relaxed) {
        let i = rng.below(N as u64) as usize;
        s.send_multipart([&b"get"[..], key(i).as_bytes()], 0)
            .unwrap();
        match s.recv_multipart(0) {
            Ok(reply) => {
                assert_eq!(reply[0], b"ok", "{:?}", reply.get(1));
                check_buffer("across restarts", i, &reply[1]);
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(zmq::Error::EAGAIN) => {
                timeouts += 1;
                s = connect();
            }
            Err(e) => panic!("receive: {e}"),
        }
    }
    timeouts
}

/// Waits until every counter is at least `min[i]`.
fn wait_for(counters: &[Arc<AtomicU64>], min: &[u64], limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while counters
        .iter()
        .zip(min)
        .any(|(c, &m)| c.load(Ordering::Relaxed) < m)
    {
        assert!(
            Instant::now() < deadline,
            "{what}: counts {:?}, wanted {min:?}",
            counters
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_answers_what_is_in_flight_and_clients_carry_on_after_a_restart_on_the_same_endpoint() {
    let (_tmp, store, mut server) = serve_demo(N);
    let endpoint = server.endpoint.clone();
    let ctx = zmq::Context::new();
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let clients: Vec<_> = counters
        .iter()
        .enumerate()
        .map(|(t, c)| {
            let (ctx, ep, c, stop) = (ctx.clone(), endpoint.clone(), c.clone(), stop.clone());
            thread::spawn(move || persistent_client(ctx, ep, t as u64, c, stop))
        })
        .collect();
    wait_for(
        &counters,
        &[20; 4],
        Duration::from_secs(20),
        "before the restart",
    );

    // A large request in flight when SIGTERM comes: 1024 samples, 13 MB.
    // The `len` sent after it on the same DEALER is answered only once the
    // server has read the large one (one connection's requests are read in
    // order), so the signal comes after the large request was taken. When
    // the large reply comes first (answered before the signal could be
    // sent), both are checked and the pair is sent again, until the `len`
    // reply comes first: the signal then finds the large one unanswered.
    let big = socket(&ctx, zmq::DEALER, &endpoint);
    let keys: Vec<String> = (0..1024).map(|i| key(i % N)).collect();
    let mut req: Vec<&[u8]> = vec![b"get"];
    req.extend(keys.iter().map(|k| k.as_bytes()));
    let check_big = |reply: &[Vec<u8>], what: &str| {
        assert_eq!(reply.len(), 1025, "{what}");
        assert_eq!(reply[0], b"ok", "{what}");
        for (j, b) in reply[1..].iter().enumerate() {
            check_buffer(what, j % N, b);
        }
    };
    let len_reply = [b"ok".to_vec(), N.to_string().into_bytes()];
    let mut attempts = 0;
    let first = loop {
        attempts += 1;
        big.send_multipart(req.clone(), 0).unwrap();
        big.send(&b"len"[..], 0).unwrap();
        let first = big.recv_multipart(0).expect("a reply before SIGTERM");
        if first.len() == 2 {
            break first;
        }
        check_big(&first, "answered before the signal");
        assert_eq!(big.recv_multipart(0).expect("the len reply"), len_reply);
        assert!(
            attempts < 50,
            "the large request was answered before its len {attempts} times: \
             never in flight at a signal"
        );
    };
    assert_eq!(first, len_reply);
    let (ok, _err) = server.stop_serve();
    let reply = big
        .recv_multipart(0)
        .expect("the request in flight at SIGTERM was not answered");
    check_big(&reply, "in flight");
    eprintln!("the large request was in flight at the signal on attempt {attempts}");
    let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        ok > before.iter().sum::<u64>(),
        "{ok} ok replies, clients saw {before:?}"
    );

    // Down for a moment, then back on the very same endpoint.
    thread::sleep(Duration::from_millis(300));
    let mut again = Proc::serve(&store, &endpoint, &[]);
    assert_eq!(again.endpoint, endpoint);
    let want: Vec<u64> = before.iter().map(|b| b + 20).collect();
    wait_for(
        &counters,
        &want,
        Duration::from_secs(20),
        "after the restart",
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client failed");
    }
    // Ctrl-C stops it the same way.
    let (ok, err) = again.stop_serve_with("INT");
    assert!(ok >= 80, "{ok}");
    assert_eq!(err, 0);
}

/// How long a write may take to show through the server: generous, so that
/// a loaded machine does not fail the test; the slowest round is printed.
const VISIBLE: Duration = Duration::from_secs(30);

/// Writes samples in rounds while the server runs; each round must show in
/// `get`, `len` and `keys` (within [`VISIBLE`]); then deletes some (and,
/// for shards, compacts) with the same deadline, and once every worker has
/// renewed its snapshot, all of them agree.
fn new_samples_become_visible(backend: Backend) {
    let start = 100;
    let (_tmp, store, mut server) = serve_lib_store(backend, start);
    let ctx = zmq::Context::new();

    // A busy client keeps workers answering (their snapshots must still
    // renew); the probe client looks for the new samples.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (ctx, ep, stop) = (ctx.clone(), server.endpoint.clone(), stop.clone());
        thread::spawn(move || {
            let mut c = Client::new(&ctx, &ep, Kind::Req);
            let mut rng = XorShift::new(5);
            while !stop.load(Ordering::Relaxed) {
                let i = rng.below(start as u64) as usize;
                let got = c.ok(&[b"get", key(i).as_bytes()]);
                check_buffer("busy", i, &got[0]);
            }
            c.tally
        })
    };
    let mut probe = Client::new(&ctx, &server.endpoint, Kind::Req);
    let mut slowest = Duration::ZERO;
    let mut total = start;
    for round in 0..8 {
        let new = total..total + 25;
        put_demo(&store, new.clone());
        let written = Instant::now();
        total = new.end;
        let deadline = written + VISIBLE;
        // Every new sample, by get; then len and keys agree.
        for i in new.clone() {
            loop {
                let (ok, reply) = probe.ask(&[b"get", key(i).as_bytes()]);
                if ok {
                    check_buffer(&format!("round {round} new sample {i}"), i, &reply[0]);
                    break;
                }
                let msg = String::from_utf8_lossy(&reply[0]);
                assert!(msg.contains("no sample with key"), "{msg}");
                assert!(
                    Instant::now() < deadline,
                    "{backend:?} round {round}: sample {i} not visible after {VISIBLE:?}"
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
        loop {
            let len = probe.ok(&[b"len"]);
            let keys = probe.ok(&[b"keys", b"sample-", b"", b"100000"]);
            if len == [total.to_string().into_bytes()] && keys == keys_of(0..total) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend:?} round {round}: len {:?} and {} keys after {VISIBLE:?}, wanted {total}",
                String::from_utf8_lossy(&len[0]),
                keys.len()
            );
            thread::sleep(Duration::from_millis(5));
        }
        slowest = slowest.max(written.elapsed());
    }
    // The writes did what they were meant to: grow the map, roll shards.
    let stats = store.stats().unwrap();
    match backend {
        Backend::Lmdb => assert!(stats.map_size > 1 << 20, "{stats:?}"),
        Backend::Shard => assert!(stats.shards > 10, "{stats:?}"),
    }

    // Deletions show too, and a compaction of the shards (new files, the
    // old ones unlinked) under the busy client goes unnoticed by it.
    let gone: Vec<String> = (total - 30..total).map(key).collect();
    store.delete_exact(&gone).unwrap();
    if backend == Backend::Shard {
        let Store::Shard(shards) = &store else {
            unreachable!()
        };
        shards.compact().unwrap();
    }
    let written = Instant::now();
    total -= 30;
    loop {
        let len = probe.ok(&[b"len"]);
        let (found, _) = probe.ask(&[b"get", gone[29].as_bytes()]);
        let keys = probe.ok(&[b"keys", b"", b"", b"100000"]);
        if len == [total.to_string().into_bytes()] && !found && keys == keys_of(0..total) {
            break;
        }
        assert!(
            written.elapsed() < VISIBLE,
            "{backend:?}: deletions not visible after {VISIBLE:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
    // The server's threads renew their snapshots every 100 ms, so until
    // then one of them may still answer from before. Wait for a pass over
    // every deleted key (30 requests) that none answers; a thread that
    // never renews keeps failing it until the deadline. Then, since no
    // thread goes back to an old snapshot, all agree.
    loop {
        let stale = gone
            .iter()
            .filter(|k| {
                let (found, reply) = probe.ask(&[b"get", k.as_bytes()]);
                if !found {
                    let msg = String::from_utf8_lossy(&reply[0]);
                    assert!(msg.contains("no sample with key"), "{msg}");
                }
                found
            })
            .count();
        if stale == 0 {
            break;
        }
        assert!(
            written.elapsed() < VISIBLE,
            "{backend:?}: {stale} of {} deleted samples still answered after {VISIBLE:?}",
            gone.len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    for k in &gone {
        probe.err(&[b"get", k.as_bytes()], "no sample with key");
    }
    for i in (0..total).step_by(7) {
        let got = probe.ok(&[b"get", key(i).as_bytes()]);
        check_buffer("after deletions", i, &got[0]);
    }
    stop.store(true, Ordering::Relaxed);
    let busy = busy.join().expect("the busy client failed");
    assert!(busy.ok > 0 && busy.err == 0, "{busy:?}");
    let (ok, err) = server.stop_serve();
    assert_eq!(ok, busy.ok + probe.tally.ok);
    assert_eq!(err, probe.tally.err);
    eprintln!("{backend:?}: the slowest round showed in {slowest:?}");
}

#[test]
fn new_samples_in_an_lmdb_store_become_visible() {
    new_samples_become_visible(Backend::Lmdb);
}

#[test]
fn new_samples_in_a_shard_store_become_visible() {
    new_samples_become_visible(Backend::Shard);
}

// ---------------------------------------------------------------------------
// Limits and abuse.

#[test]
fn the_command_line_limits_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let store = cli_store(tmp.path(), 50);
    let mut server = Proc::serve(
        &store,
        "tcp://127.0.0.1:*",
        &[
            "--max-keys",
            "4",
            "--max-frame",
            "2048",
            "--max-reply",
            "30000",
            "--threads",
            "1",
        ],
    );
    assert!(
        server.banner.ends_with("with 50 samples, 1 workers"),
        "{}",
        server.banner
    );
    let ctx = zmq::Context::new();
    let mut c = Client::new(&ctx, &server.endpoint, Kind::Req);
    let (k0, k1, k2) = (key(0), key(1), key(2));
    // Two samples (25.4 KB) fit in 30,000 bytes; three do not.
    let got = c.ok(&[b"get", k0.as_bytes(), k1.as_bytes()]);
    check_buffer("limits", 1, &got[1]);
    c.err(
        &[b"get", k0.as_bytes(), k1.as_bytes(), k2.as_bytes()],
        "reply would exceed 30000 bytes",
    );
    let frames = c.ok(&[b"getm", k2.as_bytes()]);
    check_views("limits getm", 2, &tenstore::decode_list(&frames).unwrap());
    // Five keys are one too many (refused by the front, before a worker).
    let five: Vec<&[u8]> = std::iter::once(&b"get"[..])
        .chain(std::iter::repeat_n(k0.as_bytes(), 5))
        .collect();
    c.err(&five, "request has 6 frames; at most 5 are allowed");
    let mut d = Client::new(&ctx, &server.endpoint, Kind::Dealer);
    d.err(&five, "request has 6 frames; at most 5 are allowed");
    // A key frame under --max-frame but over 511 bytes: err.
    c.err(&[b"get", &[b'k'; 2000]], "keys are 1 to 511 bytes");
    // A frame over --max-frame: that client is cut off, no reply.
    let cut = socket(&ctx, zmq::REQ, &server.endpoint);
    cut.set_rcvtimeo(500).unwrap();
    cut.send_multipart([&b"get"[..], &[b'k'; 3000]], 0).unwrap();
    assert_eq!(cut.recv_multipart(0).err(), Some(zmq::Error::EAGAIN));
    // Everyone else is still served.
    assert_eq!(c.ok(&[b"len"]), [b"50".to_vec()]);
    assert_eq!(d.ok(&[b"len"]), [b"50".to_vec()]);
    let (ok, err) = server.stop_serve();
    let mut total = c.tally;
    total += d.tally;
    assert_eq!(Tally { ok, err }, total);
}

/// A malformed request (after any envelope) and the words its err message
/// holds, from a few families.
fn malformed(rng: &mut XorShift, delim: bool) -> (Vec<Vec<u8>>, &'static str) {
    let word = |s: &str| s.as_bytes().to_vec();
    match rng.below(12) {
        // Random frames; the first never a command (its first byte is not
        // ASCII).
        0 | 1 => {
            let frames = (0..1 + rng.below(5))
                .map(|f| {
                    let len = if f == 0 {
                        1 + rng.below(40)
                    } else {
                        rng.below(80)
                    };
                    let mut v: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                    if f == 0 {
                        v[0] |= 0x80;
                    }
                    v
                })
                .collect();
            (frames, "unknown command")
        }
        // Empty frames (the first is taken for a delimiter if there is no
        // envelope): an empty command or an empty request.
        2 => match rng.below(3) {
            0 => (vec![vec![], vec![]], "unknown command \"\""),
            1 => (vec![vec![], vec![], vec![]], "unknown command \"\""),
            // No envelope: the empty frame is taken for the delimiter.
            _ if delim => (vec![vec![]], "unknown command \"\""),
            _ => (vec![vec![]], "empty request"),
        },
        // Keys over 511 bytes, up to 60 KiB (under the 64 KiB frame limit).
        3 => {
            let len = [512, 600, 4096, 60 << 10][rng.below(4) as usize];
            (
                vec![word("get"), vec![b'k'; len]],
                "keys are 1 to 511 bytes",
            )
        }
        4 => (
            vec![word("get"), word("sample-00000001"), vec![b'x'; 700]],
            "keys are 1 to 511 bytes",
        ),
        5 => (
            vec![word("keys"), vec![b'p'; 1000]],
            "PREFIX and AFTER are at most 511 bytes",
        ),
        // Unknown commands.
        6 => {
            let cmd = [
                "GET", "put", "del", "get ", "len\0", "keys\n", "INFO", "stats",
            ][rng.below(8) as usize];
            (vec![word(cmd), word("sample-00000001")], "unknown command")
        }
        // Too many keys: refused by the front (over 1,027 frames with the
        // envelope) or by a worker.
        7 => {
            let n = [1025, 1026, 1100, 3000][rng.below(4) as usize];
            let mut v = vec![word("get")];
            v.extend(std::iter::repeat_n(word("sample-00000001"), n));
            (v, "at most 1025 are allowed")
        }
        // Bad arguments.
        8 => {
            let cases: [(Vec<Vec<u8>>, &str); 8] = [
                (vec![word("keys"), vec![], vec![], word("abc")], "LIMIT"),
                (
                    vec![word("keys"), vec![], vec![], word("99999999999")],
                    "LIMIT",
                ),
                (
                    vec![word("keys"), word("a"), word("b"), word("1"), word("c")],
                    "at most PREFIX",
                ),
                (vec![word("getm")], "exactly one key"),
                (vec![word("getm"), word("a"), word("b")], "exactly one key"),
                (vec![word("len"), word("x")], "no arguments"),
                (vec![word("info"), word("x")], "no arguments"),
                (vec![word("get"), vec![]], "keys are 1 to 511 bytes"),
            ];
            cases[rng.below(8) as usize].clone()
        }
        // Missing keys.
        9 => (
            vec![
                word("get"),
                word("sample-00000002"),
                word("sample-99999999"),
            ],
            "no sample with key",
        ),
        10 => (
            vec![word("getm"), rng.next_u64().to_string().into_bytes()],
            "no sample with key",
        ),
        _ => (vec![word("get")], "get needs at least one key"),
    }
}

/// Sends `count` malformed requests from DEALERs: 10 connections at a
/// time, each with one request in flight (10 in flight together), 5
/// rounds, then 10 new connections. Each reply comes on the connection of
/// its request, so it is matched to that request: `err` and the words
/// that request's family must say. Returns how many were sent.
fn abuse(ctx: &zmq::Context, endpoint: &str, seed: u64, count: u64) -> u64 {
    const LANES: usize = 10;
    let mut rng = XorShift::new(seed);
    let mut sent = 0;
    while sent < count {
        let delim = rng.below(2) == 0;
        let lanes: Vec<zmq::Socket> = (0..LANES)
            .map(|_| socket(ctx, zmq::DEALER, endpoint))
            .collect();
        for _ in 0..5 {
            let batch: Vec<_> = (0..LANES).map(|_| malformed(&mut rng, delim)).collect();
            for (s, (frames, _)) in lanes.iter().zip(&batch) {
                let mut out: Vec<&[u8]> = Vec::with_capacity(frames.len() + 1);
                if delim {
                    out.push(b"");
                }
                out.extend(frames.iter().map(|f| &f[..]));
                s.send_multipart(out, 0).unwrap();
            }
            for (s, (frames, needle)) in lanes.iter().zip(&batch) {
                let mut reply = s
                    .recv_multipart(0)
                    .expect("no reply to a malformed request");
                // The envelope comes back: the delimiter, or a first empty
                // frame the server took for one.
                if delim || frames.first().is_some_and(|f| f.is_empty()) {
                    assert!(
                        reply.first().is_some_and(|f| f.is_empty()),
                        "a DEALER's reply lost its delimiter: {reply:?}"
                    );
                    reply.remove(0);
                }
                let asked = shown(&frames.iter().map(|f| &f[..]).collect::<Vec<_>>());
                assert_eq!(reply.len(), 2, "{asked}: {reply:?}");
                assert_eq!(reply[0], b"err", "{asked}");
                let msg = String::from_utf8_lossy(&reply[1]);
                assert!(!msg.is_empty(), "{asked}: an empty err message");
                assert!(
                    msg.contains(needle),
                    "{asked}: err message {msg:?} does not say {needle:?}"
                );
            }
            sent += batch.len() as u64;
        }
    }
    sent
}

/// A client sending a frame over the 64 KiB limit gets no reply: libzmq
/// drops its connection.
fn oversized(ctx: &zmq::Context, endpoint: &str, len: usize) {
    let s = socket(ctx, zmq::REQ, endpoint);
    s.set_rcvtimeo(300).unwrap();
    s.send_multipart([&b"get"[..], &vec![b'k'; len]], 0)
        .unwrap();
    assert_eq!(
        s.recv_multipart(0).err(),
        Some(zmq::Error::EAGAIN),
        "a {len}-byte frame was answered"
    );
}

/// Valid gets with their values checked, until `stop`.
fn valid_until(ctx: &zmq::Context, endpoint: &str, seed: u64, stop: &AtomicBool) -> Tally {
    let mut c = Client::new(
        ctx,
        endpoint,
        [Kind::Req, Kind::DealerDelim][seed as usize % 2],
    );
    let mut rng = XorShift::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let picks: Vec<usize> = (0..1 + rng.below(3))
            .map(|_| rng.below(N as u64) as usize)
            .collect();
        let keys: Vec<String> = picks.iter().map(|&i| key(i)).collect();
        let mut req: Vec<&[u8]> = vec![b"get"];
        req.extend(keys.iter().map(|k| k.as_bytes()));
        let got = c.ok(&req);
        for (&i, b) in picks.iter().zip(&got) {
            check_buffer("valid during abuse", i, b);
        }
        assert_eq!(c.ok(&[b"len"]), [N.to_string().into_bytes()]);
    }
    c.tally
}

#[test]
fn floods_of_malformed_requests_are_refused_while_valid_clients_are_served_and_memory_stays_flat() {
    let (_tmp, _store, mut server) = serve_demo(N);
    let endpoint = server.endpoint.clone();
    let ctx = zmq::Context::new();

    // Warm-up: every kind of request, so that the allocator and libzmq
    // have their working sets.
    let mut expected = Tally::default();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let v = s.spawn(|| valid_until(&ctx, &endpoint, 1, &stop));
        expected.err += abuse(&ctx, &endpoint, 2, 500);
        oversized(&ctx, &endpoint, 70 << 10);
        stop.store(true, Ordering::Relaxed);
        expected += v.join().unwrap();
    });
    thread::sleep(Duration::from_millis(300));
    let rss_warm = server.rss_kib();

    // The flood: 4 abusers, 10,000 malformed requests in all, one of
    // 100,000 frames, clients cut
    // off for frames over 64 KiB, and 4 valid clients throughout.
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    thread::scope(|s| {
        let valid: Vec<_> = (0..4)
            .map(|t| {
                let (ctx, ep, stop) = (&ctx, &endpoint, &stop);
                s.spawn(move || valid_until(ctx, ep, 10 + t, stop))
            })
            .collect();
        let abusers: Vec<_> = (0..4)
            .map(|t| {
                let (ctx, ep) = (&ctx, &endpoint);
                s.spawn(move || abuse(ctx, ep, 20 + t, 2500))
            })
            .collect();
        for len in [(64 << 10) + 1, 100 << 10, 1 << 20] {
            oversized(&ctx, &endpoint, len);
        }
        let mut c = Client::new(&ctx, &endpoint, Kind::Dealer);
        let flood: Vec<&[u8]> = std::iter::once(&b"get"[..])
            .chain(std::iter::repeat_n(&b"sample-00000001"[..], 100_000))
            .collect();
        c.err(
            &flood,
            "request has 100001 frames; at most 1025 are allowed",
        );
        expected += c.tally;
        for a in abusers {
            expected.err += a.join().expect("an abuser failed");
        }
        stop.store(true, Ordering::Relaxed);
        for v in valid {
            let t = v.join().expect("a valid client failed");
            assert!(t.ok >= 10, "a valid client got only {} replies", t.ok);
            expected += t;
        }
    });
    let flood = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    let rss_after = server.rss_kib();
    eprintln!(
        "RSS {rss_warm} KiB after the warm-up, {rss_after} KiB after {} malformed requests in {flood:?}",
        expected.err
    );
    assert!(expected.err >= 10_000);
    assert!(
        rss_after < rss_warm + (20 << 10),
        "RSS grew from {rss_warm} KiB to {rss_after} KiB"
    );

    // Still right.
    let mut c = Client::new(&ctx, &endpoint, Kind::Req);
    check_commands(&mut c, N, "lmdb");
    expected += c.tally;
    let (ok, err) = server.stop_serve();
    assert_eq!(Tally { ok, err }, expected);
    // The log of refusals stays short.
    let log = server.stderr();
    assert!(
        log.lines().count() < 60,
        "{} lines of stderr",
        log.lines().count()
    );
}

// ---------------------------------------------------------------------------
// The README's loader and push.

/// The README's loader code block, written to `dir/loader.py`.
fn readme_loader(dir: &Path) -> PathBuf {
    let readme = std::fs::read_to_string(common::manifest_dir().join("README.md")).unwrap();
    let start = readme
        .find("```python\nimport os\nimport zmq")
        .expect("the README's loader code block");
    let code = &readme[start + "```python\n".len()..];
    let code = &code[..code.find("```").unwrap()];
    assert!(code.contains("class TenstoreDataset"));
    let sub = dir.join("readme");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("loader.py"), code).unwrap();
    sub
}

/// Runs `loader_run.py` with the README's loader against `endpoint`.
fn run_loader(endpoint: &str, workers: usize, method: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = readme_loader(tmp.path());
    let out = common::run_py_timeout(
        "loader_run.py",
        [
            endpoint,
            &N.to_string(),
            &workers.to_string(),
            method,
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(&*format!("ok {N} {workers}")), "{out}");
    let counts: Vec<usize> = lines
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), workers, "{out}");
    assert_eq!(counts.iter().sum::<usize>(), N, "{out}");
}

#[test]
fn the_readme_loader_reads_every_sample_alone_and_from_forked_workers() {
    let (_tmp, _store, mut server) = serve_demo(N);
    run_loader(&server.endpoint, 4, "fork");
    let (ok, err) = server.stop_serve();
    // keys (a page and the empty one), then 2 x N gets.
    assert_eq!((ok, err), (2 + 2 * N as u64, 0));
}

#[test]
fn tests_py_loader_is_the_readme_loader() {
    // loader_run.py imports tests/py/loader.py; the README shows the code.
    // They must be the same code (docstrings and blank lines aside).
    let tmp = tempfile::tempdir().unwrap();
    let readme = std::fs::read_to_string(readme_loader(tmp.path()).join("loader.py")).unwrap();
    let ours = std::fs::read_to_string(common::py_script("loader.py")).unwrap();
    let code = |s: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut in_doc = false;
        for line in s.lines() {
            let t = line.trim();
            let quotes = t.matches("\"\"\"").count();
            if in_doc {
                if quotes > 0 {
                    in_doc = false;
                }
                continue;
            }
            if t.starts_with("\"\"\"") {
                in_doc = quotes == 1;
                continue;
            }
            if !t.is_empty() {
                out.push(line.trim_end().to_string());
            }
        }
        out
    };
    assert_eq!(code(&readme), code(&ours));
}

#[test]
fn the_readme_loader_works_with_spawned_workers() {
    let (_tmp, _store, mut server) = serve_demo(N);
    run_loader(&server.endpoint, 2, "spawn");
    server.stop_serve();
}

/// The order `push --shuffle --seed SEED` sends epoch `epoch` in, by
/// sample number: the epoch plan's full shuffle.
fn expected_order(store: &Store, seed: u64, epoch: u64) -> Vec<usize> {
    let reader = store.reader().unwrap();
    let plan = reader
        .plan(tenstore::plan::PlanConfig {
            seed,
            epoch,
            shuffle: tenstore::plan::Shuffle::Full,
            ..Default::default()
        })
        .unwrap();
    let order: Vec<usize> = reader
        .plan_samples(&plan)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            let k = s.key_str().unwrap();
            k.strip_prefix("sample-").unwrap().parse().unwrap()
        })
        .collect();
    order
}

fn push_two_epochs(dir: &Path, store: &Store) {
    let mut push = Proc::start(
        &[
            "push",
            dir.to_str().unwrap(),
            "--bind",
            "tcp://127.0.0.1:*",
            "--epochs",
            "2",
            "--shuffle",
            "--seed",
            "3",
        ],
        "tenstore push: pushing on ",
    );
    assert!(
        push.endpoint.starts_with("tcp://127.0.0.1:"),
        "{}",
        push.banner
    );
    let out = common::run_py_timeout(
        "push_check.py",
        [push.endpoint.as_str(), &N.to_string(), "2"],
        Duration::from_secs(120),
    );
    let (status, rest) = push.wait(Duration::from_secs(30));
    assert!(status.success(), "push: {status}; {}", push.stderr());
    assert_eq!(rest, [format!("tenstore push: sent {} samples", 2 * N)]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let orders: Vec<Vec<usize>> = serde_json::from_value(json["orders"].clone()).unwrap();
    assert_eq!(orders.len(), 2);
    let sorted: Vec<usize> = (0..N).collect();
    assert_ne!(orders[0], sorted, "epoch 0 is not shuffled");
    assert_ne!(orders[1], sorted, "epoch 1 is not shuffled");
    assert_ne!(orders[0], orders[1], "both epochs in the same order");
    // Exactly the epoch plans of seed 3, epochs 0 and 1.
    assert_eq!(orders[0], expected_order(store, 3, 0));
    assert_eq!(orders[1], expected_order(store, 3, 1));
}

#[test]
fn push_streams_two_shuffled_epochs_of_an_lmdb_store_to_python() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cli_store(tmp.path(), N);
    let store = Store::open(
        &dir,
        &StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    push_two_epochs(&dir, &store);
}

#[test]
fn push_streams_two_shuffled_epochs_of_a_shard_store_to_python() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shards");
    let store = lib_store(&dir, Backend::Shard, N);
    push_two_epochs(&dir, &store);
}

// ---------------------------------------------------------------------------
// Failures to start, usage errors, escaping and signals.

#[test]
fn serve_fails_cleanly_on_a_missing_store_and_a_busy_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let err = Proc::try_serve(&missing, "tcp://127.0.0.1:*", &[])
        .err()
        .expect("serve started on a missing store");
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(err.contains("tenstore: error: "), "{err}");
    assert!(!missing.exists(), "serve made the store directory");

    let store = cli_store(tmp.path(), 20);
    let mut first = Proc::serve(&store, "tcp://127.0.0.1:*", &[]);
    let err = Proc::try_serve(&store, &first.endpoint, &[])
        .err()
        .expect("a second server bound the same endpoint");
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(
        err.contains(&format!("tenstore: error: binding {}", first.endpoint)),
        "{err}"
    );
    assert_eq!(err.matches("tenstore: error:").count(), 1, "{err}");
    // The first one is unharmed.
    let ctx = zmq::Context::new();
    let mut c = Client::new(&ctx, &first.endpoint, Kind::Req);
    assert_eq!(c.ok(&[b"len"]), [b"20".to_vec()]);
    assert_eq!(first.stop_serve(), (1, 0));
}

#[test]
fn err_messages_escape_odd_bytes_once() {
    let (_tmp, _store, mut server) = serve_demo(5);
    let ctx = zmq::Context::new();
    let mut c = Client::new(&ctx, &server.endpoint, Kind::Req);
    assert_eq!(
        c.err(&[b"get", b"a\"b"], "no sample"),
        r#"no sample with key "a\"b""#
    );
    assert_eq!(
        c.err(&[b"get", "café".as_bytes()], "no sample"),
        r#"no sample with key "caf\xc3\xa9""#
    );
    assert!(
        c.err(&[b"\xff\x00"], "unknown command")
            .starts_with(r#"unknown command "\xff\x00""#),
        "escaped twice"
    );
    server.stop_serve();
}

/// Starts `tenstore serve` on a small store with `extra` arguments, which
/// must be refused as a usage error: exit 2, no panic, a message holding
/// each of `says`.
fn usage_error(extra: &[&str], says: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let store = cli_store(tmp.path(), 5);
    let e = match Proc::try_serve(&store, "tcp://127.0.0.1:*", extra) {
        Ok(mut server) => {
            server.stop_serve();
            panic!("serve started with {extra:?}: {}", server.banner);
        }
        Err(e) => e,
    };
    assert!(e.contains("exit status: 2"), "{extra:?}: {e}");
    assert!(!e.contains("panicked"), "{extra:?}: {e}");
    for s in says {
        assert!(e.contains(s), "{extra:?}: no {s:?} in: {e}");
    }
}

#[test]
fn a_huge_max_keys_is_a_usage_error() {
    usage_error(
        &["--max-keys", "18446744073709551615"],
        &["invalid value '18446744073709551615' for '--max-keys"],
    );
    usage_error(
        &["--max-keys", "1000001"],
        &["invalid value '1000001' for '--max-keys", "1..=1000000"],
    );
}

#[test]
fn threads_zero_is_a_usage_error() {
    usage_error(
        &["--threads", "0"],
        &["invalid value '0' for '--threads", "1..=256"],
    );
}

fn start_push(dir: &Path) -> Proc {
    Proc::start(
        &["push", dir.to_str().unwrap(), "--bind", "tcp://127.0.0.1:*"],
        "tenstore push: pushing on ",
    )
}

#[test]
fn push_stops_cleanly_on_sigterm_before_any_puller() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cli_store(tmp.path(), 20);
    let mut push = start_push(&dir);
    thread::sleep(Duration::from_millis(300));
    let (status, rest) = push.terminate();
    assert!(status.success(), "{status}; stderr: {}", push.stderr());
    assert_eq!(rest, ["tenstore push: sent 0 samples"]);
}

#[test]
fn push_stops_on_sigterm_while_a_puller_lags() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cli_store(tmp.path(), N);
    let mut push = start_push(&dir);
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.set_rcvhwm(5).unwrap();
    pull.set_rcvtimeo(TIMEOUT_MS).unwrap();
    pull.set_linger(0).unwrap();
    pull.connect(&push.endpoint).unwrap();
    for _ in 0..5 {
        pull.recv_multipart(0).unwrap();
    }
    // The puller stops reading; push blocks once the queues fill.
    thread::sleep(Duration::from_millis(500));
    push.signal("TERM");
    let (status, rest) = push.wait(Duration::from_secs(5));
    assert!(status.success(), "{status}; stderr: {}", push.stderr());
    let last = rest.last().cloned().unwrap_or_default();
    assert!(last.starts_with("tenstore push: sent "), "{rest:?}");
    drop(pull);
}

// ---------------------------------------------------------------------------
// Robustness, round two (issue 9): clients that do not read, a store that
// must not go backwards, bind addresses that are resolved and judged.

impl Proc {
    /// The anonymous resident set (heap, libzmq's queues; not the store's
    /// file maps), in KiB.
    fn rss_anon_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no RssAnon in /proc/{}/status", self.pid))
    }
}

/// A `get` of 1,024 keys cycling over samples 0..N: about 12.8 MB of reply.
fn big_get() -> Vec<Vec<u8>> {
    std::iter::once(b"get".to_vec())
        .chain((0..1024).map(|i| key(i % N).into_bytes()))
        .collect()
}

/// One request of a well-behaved client while others misbehave: `len` is
/// always answered; a `get` is answered with the right values or refused
/// as busy, never left unanswered. Returns whether the get was served.
fn good_request(c: &mut Client, i: usize) -> bool {
    assert_eq!(c.ok(&[b"len"]), [N.to_string().into_bytes()]);
    let (ok, reply) = c.ask(&[b"get", key(i).as_bytes()]);
    if ok {
        check_buffer("good client", i, &reply[0]);
    } else {
        let msg = String::from_utf8_lossy(&reply[0]);
        assert!(msg.starts_with("server busy: "), "{msg}");
    }
    ok
}

#[test]
fn clients_that_never_read_replies_cannot_make_the_server_hold_more_than_max_queued_bytes() {
    const MAX_QUEUED: u64 = 64 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let store = cli_store(tmp.path(), N);
    let mut server = Proc::serve(
        &store,
        "tcp://127.0.0.1:*",
        &["--max-queued-bytes", &MAX_QUEUED.to_string()],
    );
    let ctx = zmq::Context::new();
    let mut good = Client::new(&ctx, &server.endpoint, Kind::DealerDelim);
    // Warm-up: big replies that are read, so every worker has its working
    // set; then the baseline.
    let big = big_get();
    let big_refs: Vec<&[u8]> = big.iter().map(|f| &f[..]).collect();
    for _ in 0..8 {
        let got = good.ok(&big_refs);
        assert_eq!(got.len(), 1024);
        check_buffer("warm-up", 1023 % N, &got[1023]);
    }
    thread::sleep(Duration::from_millis(300));
    let baseline = server.rss_anon_kib();

    // 12 DEALERs each send five gets of 12.8 MB of replies (768 MB in all)
    // and never read: they take one reply into their own queue (RCVHWM 1,
    // a 64 KiB socket buffer) and leave the rest to the server.
    let bad: Vec<zmq::Socket> = (0..12)
        .map(|_| {
            let s = ctx.socket(zmq::DEALER).unwrap();
            s.set_rcvhwm(1).unwrap();
            s.set_rcvbuf(64 << 10).unwrap();
            s.set_linger(0).unwrap();
            s.set_sndtimeo(TIMEOUT_MS).unwrap();
            s.connect(&server.endpoint).unwrap();
            for _ in 0..5 {
                s.send_multipart(&big, 0).unwrap();
            }
            s
        })
        .collect();
    // Three seconds of a well-behaved client meanwhile (every request is
    // answered), and the server's memory watched.
    let mut peak = 0;
    let mut served = 0;
    let mut asked = 0;
    let during = Instant::now();
    while during.elapsed() < Duration::from_secs(3) {
        peak = peak.max(server.rss_anon_kib());
        asked += 1;
        served += usize::from(good_request(&mut good, asked % N));
        thread::sleep(Duration::from_millis(20));
    }
    peak = peak.max(server.rss_anon_kib());
    let bound = baseline + MAX_QUEUED / 1024 + (32 << 10);
    eprintln!(
        "RssAnon {baseline} KiB at the start, {peak} KiB at most with 12 clients not reading \
         (bound {bound} KiB); {served} of {asked} gets served meanwhile"
    );
    assert!(
        peak <= bound,
        "the server's anonymous RSS reached {peak} KiB, over {bound} KiB \
         ({baseline} KiB + --max-queued-bytes + 32 MiB)"
    );

    // The bad clients leave: what was queued for them is freed.
    drop(bad);
    let left = Instant::now();
    let mut after = server.rss_anon_kib();
    while after > baseline + (24 << 10) {
        assert!(
            left.elapsed() < Duration::from_secs(10),
            "RssAnon still {after} KiB 10 s after the clients left (baseline {baseline} KiB)"
        );
        thread::sleep(Duration::from_millis(50));
        after = server.rss_anon_kib();
    }
    // And everyone is served in full again.
    for i in 0..20 {
        assert!(good_request(&mut good, i * 7 % N), "get {i} refused after");
    }
    let got = good.ok(&big_refs);
    check_buffer("after", 5, &got[5]);
    let mut fresh = Client::new(&ctx, &server.endpoint, Kind::Req);
    check_commands(&mut fresh, N, "lmdb");
    server.stop_serve();
}

/// `keys` lists the newest samples while a writer adds more; a `get` of
/// every listed key right after must find it (whichever worker answers),
/// and `len` never goes down.
fn listed_keys_stay_visible(backend: Backend) {
    let start = 100;
    let (_tmp, store, mut server) = serve_lib_store(backend, start);
    let ctx = zmq::Context::new();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(start as u64));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        thread::spawn(move || {
            let mut next = start;
            while !stop.load(Ordering::Relaxed) && next < 3000 {
                put_demo(&store, next..next + 5);
                next += 5;
                written.store(next as u64, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut c = Client::new(&ctx, &server.endpoint, Kind::Req);
    let mut last_len = 0u64;
    let mut after = key(start - 10).into_bytes();
    let mut checked = 0;
    // Runs for 3 s, and on a loaded machine on until the writer has added
    // 50 samples and 100 listed keys were fetched: how much happens in a
    // given time is the machine's business, not what this test checks.
    let t0 = Instant::now();
    let enough =
        |checked: usize| written.load(Ordering::Relaxed) > start as u64 + 50 && checked > 100;
    while t0.elapsed() < Duration::from_secs(3) || !enough(checked) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{backend:?}: after 120 s the writer had written {} samples and {checked} listed keys were fetched",
            written.load(Ordering::Relaxed)
        );
        let listed = c.ok(&[b"keys", b"sample-", &after, b"100000"]);
        for k in listed.iter().rev().take(3) {
            let (ok, reply) = c.ask(&[b"get", k]);
            assert!(
                ok,
                "{backend:?}: key {} was listed, then get said {:?}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(&reply[0])
            );
            check_buffer("listed", index_of_key(k), &reply[0]);
            checked += 1;
        }
        let len: u64 = String::from_utf8(c.ok(&[b"len"]).remove(0))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            len >= last_len,
            "{backend:?}: len went from {last_len} to {len}"
        );
        last_len = len;
        if let Some(k) = listed.last() {
            // Start the next listing a little before this one's end, so
            // that each lists the newest samples.
            after = key(index_of_key(k).saturating_sub(10)).into_bytes();
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = written.load(Ordering::Relaxed);
    eprintln!("{backend:?}: {checked} listed keys fetched while {total} samples were written");
    assert!(total > start as u64 + 50, "the writer wrote only {total}");
    assert!(checked > 100, "only {checked} gets");
    server.stop_serve();
}

/// The sample number of a key `sample-%08d`.
fn index_of_key(k: &[u8]) -> usize {
    std::str::from_utf8(k)
        .unwrap()
        .strip_prefix("sample-")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_key_listed_during_writes_is_found_by_the_next_get_lmdb() {
    listed_keys_stay_visible(Backend::Lmdb);
}

#[test]
fn a_key_listed_during_writes_is_found_by_the_next_get_shards() {
    listed_keys_stay_visible(Backend::Shard);
}

/// Starts `serve --bind BIND`, returns the banner and the endpoint after
/// one `len` over it from a client (IPv6 on when the endpoint is).
fn serve_at(store: &Path, bind: &str) -> (String, String) {
    let mut server = Proc::try_serve(store, bind, &[]).unwrap_or_else(|e| panic!("{bind}: {e}"));
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::REQ).unwrap();
    s.set_ipv6(server.endpoint.contains('[')).unwrap();
    s.set_rcvtimeo(TIMEOUT_MS).unwrap();
    s.set_linger(0).unwrap();
    // A wildcard endpoint is reached over loopback.
    let target = server
        .endpoint
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    s.connect(&target).unwrap();
    s.send_multipart([&b"len"[..]], 0).unwrap();
    let reply = s
        .recv_multipart(0)
        .unwrap_or_else(|e| panic!("{bind}: {e}"));
    assert_eq!(reply, [b"ok".to_vec(), b"20".to_vec()], "{bind}");
    assert_eq!(server.stop_serve(), (1, 0));
    (server.banner.clone(), server.endpoint.clone())
}

#[test]
fn bind_addresses_are_resolved_and_judged_by_their_address() {
    let tmp = tempfile::tempdir().unwrap();
    let store = cli_store(tmp.path(), 20);
    for (bind, loopback, prefix) in [
        ("tcp://localhost:*", true, "tcp://127.0.0.1:"),
        ("tcp://[::1]:*", true, "tcp://[::1]:"),
        ("tcp://127.0.0.2:*", true, "tcp://127.0.0.2:"),
        ("tcp://127.255.0.1:*", true, "tcp://127.255.0.1:"),
        ("tcp://[::]:*", false, "tcp://[::]:"),
        ("tcp://0.0.0.0:*", false, "tcp://0.0.0.0:"),
    ] {
        let (banner, endpoint) = serve_at(&store, bind);
        assert!(endpoint.starts_with(prefix), "{bind}: {banner}");
        let want = if loopback {
            "(loopback only)"
        } else {
            "(reachable from other hosts)"
        };
        assert!(banner.contains(want), "{bind}: {banner}");
    }
    // A name that resolves to nothing is an error that says so.
    let err = Proc::try_serve(&store, "tcp://no-such-host.invalid:5555", &[])
        .err()
        .expect("serve bound an unknown host");
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
}
