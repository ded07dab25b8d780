//! tenstore over ZeroMQ beside its peers, each figure and its peer timed in
//! the same run with rounds interleaved: `cargo bench --bench net`.
//!
//! - C1 `zsend_single`/`zrecv_single` of 4 MiB samples (one f4 [1048576]
//!   tensor) over tcp loopback PUSH/PULL, beside `send`/`recv_msg` of the
//!   same encoded bytes on the same socket pair; the same for
//!   `zsend_multipart`/`zrecv_multipart` beside the same header and data
//!   frames sent raw. The receiver views the tensor and reads its last
//!   element (raw: its last byte).
//! - C2 `tenstore serve` (the real binary: `CARGO_BIN_EXE_tenstore`, or
//!   `TENSTORE_BIN`) on an LMDB store of 10,000 samples of u1 3x64x64,
//!   f4 [10], i8 [1] (12,704 bytes each), 4 concurrent REQ clients (threads
//!   of this process) doing random `get KEY`, then `get` of 64 keys;
//!   beside `benches/py/py_server.py` (pyzmq ROUTER + py-lmdb) serving an
//!   identical copy of the store (Python's LMDB and heed's cannot share
//!   one lock file) to the same clients. Samples per second.
//! - C3 the latency of one `get` round trip (one REQ client), median and
//!   p99, beside a raw REQ/REP ping-pong that answers the same frames
//!   (`ok` and 12,704 bytes) from a thread of this process, and beside the
//!   Python server.
//!
//! C2 and C3 also run `tenstore serve --threads 1` and a raw server (one
//! thread of this process: a ROUTER and heed, the same protocol, on a third
//! copy of the store): the floor that any server of this protocol on this
//! machine stands on.
//!
//! - C4 server CPU per sample under pipelined load: 4 DEALER clients
//!   (threads of this process) each keeping 8 `get KEY` requests (1 random
//!   key each) outstanding, so that the transport, not the round trip, is
//!   what is measured. `tenstore serve --threads 1, 2, 4` on an LMDB store
//!   and on a shard store of the same samples, beside the ceiling: a
//!   one-thread ROUTER in a process of its own (this bench re-run with
//!   `--ceiling-server`) that answers every `get` with a fixed 12,704-byte
//!   value and no lookup. Samples per second, and the server process's CPU
//!   per sample (the nanoseconds on CPU of all its threads, libzmq's I/O
//!   thread too, from `/proc/PID/task/*/schedstat`; `/proc/PID/stat`'s
//!   10 ms ticks where that is missing). Made to hold on a loaded machine:
//!   every window of a server (0.5 s) is paired with a window of the
//!   ceiling run right before or right after it (alternately), and the
//!   figure is the median of the 21 pairs' ratios, with its quartiles and
//!   extremes.
//!
//! Pass `--quick` (after `--`) for shorter rounds, `--only C2` for one
//! figure. Set `TENSTORE_PYTHON` to a Python with pyzmq and lmdb (default:
//! `.venv/bin/python`).

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use heed::types::Bytes;
use heed::{Database, EnvFlags, EnvOpenOptions};
use ndarray::{Array1, Array3};
use tenstore::net::{zrecv_multipart, zrecv_single, zsend_multipart, zsend_single};
use tenstore::store::{LmdbOptions, LmdbStore};
use tenstore::{encode_buffer, encode_list, TensorRef, Tensors};

mod common;
use common::{
    median, print_header, print_row, python, quantile, Rates, Rng, Row, Unit, Widths, MIB,
};

/// Column widths of the table.
const WIDTHS: Widths = Widths { what: 42, peer: 36 };

// ---------------------------------------------------------------- timing

/// Latency figures: one row per server.
struct Latency {
    id: &'static str,
    what: String,
    micros: Vec<f64>,
}

fn print_latency(l: &Latency) {
    println!(
        "{:<4} {:<60} median {:>8.1} us   p99 {:>8.1} us   p99.9 {:>8.1} us   ({} round trips)",
        l.id,
        l.what,
        median(&l.micros),
        quantile(&l.micros, 0.99),
        quantile(&l.micros, 0.999),
        l.micros.len()
    );
}

struct Config {
    quick: bool,
    rounds: usize,
    only: Option<String>,
}

impl Config {
    fn want(&self, id: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| id.starts_with(o) || o.starts_with(id))
    }
}

// ---------------------------------------------------------------- C1

#[derive(Clone, Copy, Debug)]
enum Mode {
    Single,
    RawSingle,
    Multi,
    RawMulti,
}

/// Receives `n` messages in `mode`, reading the last element (byte).
fn receive(pull: &zmq::Socket, mode: Mode, n: usize) -> u64 {
    let mut acc = 0u64;
    for _ in 0..n {
        acc = acc.wrapping_add(match mode {
            Mode::Single => {
                let buf = zrecv_single(pull, 0).unwrap();
                let t = buf.tensors();
                let x = t.get(0).unwrap().cow_array::<f32>().unwrap();
                u64::from(x[[x.len() - 1]].to_bits())
            }
            Mode::Multi => {
                let f = zrecv_multipart(pull, 0).unwrap();
                let x = f.get(0).unwrap().cow_array::<f32>().unwrap();
                u64::from(x[[x.len() - 1]].to_bits())
            }
            Mode::RawSingle => {
                let m = pull.recv_msg(0).unwrap();
                u64::from(m[m.len() - 1])
            }
            Mode::RawMulti => {
                let mut last = 0;
                loop {
                    let m = pull.recv_msg(0).unwrap();
                    last = m.last().copied().unwrap_or(last);
                    if !m.get_more() {
                        break;
                    }
                }
                u64::from(last)
            }
        });
    }
    acc
}

fn c1(cfg: &Config, rows: &mut Vec<Row>) {
    let data = Array1::from_shape_fn(MIB, |i| (i % 1000) as f32);
    let refs = [TensorRef::from_array("x", &data).unwrap()];
    let encoded = encode_buffer(&refs).unwrap();
    let frames: Vec<Vec<u8>> = encode_list(&refs).iter().map(|f| f.to_vec()).collect();
    let n = if cfg.quick { 16 } else { 64 };

    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_sndhwm(4).unwrap();
    push.set_linger(0).unwrap();
    push.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = push.get_last_endpoint().unwrap().unwrap();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.set_rcvhwm(4).unwrap();
    pull.set_linger(0).unwrap();
    pull.connect(&endpoint).unwrap();

    let (cmd_tx, cmd_rx) = mpsc::channel::<(Mode, usize)>();
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let receiver = thread::spawn(move || {
        for (mode, n) in cmd_rx {
            done_tx.send(receive(&pull, mode, n)).unwrap();
        }
    });
    let round = |mode: Mode| -> f64 {
        cmd_tx.send((mode, n)).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            match mode {
                Mode::Single => zsend_single(&push, &refs, 0).unwrap(),
                Mode::RawSingle => push.send(&encoded[..], 0).unwrap(),
                Mode::Multi => zsend_multipart(&push, &refs, 0).unwrap(),
                Mode::RawMulti => {
                    let last = frames.len() - 1;
                    for (i, f) in frames.iter().enumerate() {
                        let more = if i < last { zmq::SNDMORE } else { 0 };
                        push.send(&f[..], more).unwrap();
                    }
                }
            }
        }
        black_box(done_rx.recv().unwrap());
        t.elapsed().as_secs_f64()
    };
    let bytes = (n * encoded.len()) as f64;
    for (ours_mode, raw_mode, what, peer) in [
        (
            Mode::Single,
            Mode::RawSingle,
            "zsend_single/zrecv_single 4 MiB, tcp",
            "send/recv_msg of the encoded bytes",
        ),
        (
            Mode::Multi,
            Mode::RawMulti,
            "zsend_multipart/zrecv_multipart 4 MiB",
            "send/recv_msg of the same 2 frames",
        ),
    ] {
        round(ours_mode);
        round(raw_mode);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in 0..cfg.rounds {
            if r % 2 == 0 {
                a.push(bytes / round(ours_mode));
                b.push(bytes / round(raw_mode));
            } else {
                b.push(bytes / round(raw_mode));
                a.push(bytes / round(ours_mode));
            }
        }
        push_row(
            rows,
            Row {
                id: "C1",
                what: what.into(),
                unit: Unit::Bytes,
                ours: Rates(a),
                peer_name: peer.into(),
                peer: Rates(b),
                paired: true,
                target: Some(0.8),
            },
        );
    }
    drop(cmd_tx);
    receiver.join().unwrap();
}

// ---------------------------------------------------------------- C2, C3

const SAMPLES: usize = 10_000;
const SAMPLE_BYTES: usize = 12_704;

fn key(i: usize) -> Vec<u8> {
    format!("s{i:09}").into_bytes()
}

/// Writes the store of C2 and identical copies of it for the Python server
/// and the raw server (LMDB allows one environment per file per process, and
/// Python's LMDB cannot share heed's lock file).
fn build_store(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ours = dir.join("lmdb");
    let copy = dir.join("lmdb-py");
    let raw = dir.join("lmdb-raw");
    let store = LmdbStore::open(
        &ours,
        &LmdbOptions {
            create: true,
            no_sync: true,
            map_size: 1 << 30,
            ..Default::default()
        },
    )
    .unwrap();
    for start in (0..SAMPLES).step_by(1000) {
        let arrays: Vec<_> = (start..start + 1000)
            .map(|i| {
                (
                    key(i),
                    Array3::from_shape_fn((3, 64, 64), |(c, y, x)| (c * 7 + y * 3 + x + i) as u8),
                    Array1::from_shape_fn(10, |j| (i * 10 + j) as f32),
                    Array1::from(vec![i as i64]),
                )
            })
            .collect();
        let batch: Vec<(&[u8], [TensorRef<'_>; 3])> = arrays
            .iter()
            .map(|(k, a, b, c)| {
                (
                    &k[..],
                    [
                        TensorRef::from_array("image", a).unwrap(),
                        TensorRef::from_array("logits", b).unwrap(),
                        TensorRef::from_array("label", c).unwrap(),
                    ],
                )
            })
            .collect();
        store.put_batch(&batch).unwrap();
    }
    {
        let r = store.reader().unwrap();
        assert_eq!(
            r.get(&key(0)).unwrap().unwrap().as_bytes().len(),
            SAMPLE_BYTES
        );
    }
    store.flush().unwrap();
    drop(store);
    for d in [&copy, &raw] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(ours.join("data.mdb"), d.join("data.mdb")).unwrap();
    }
    (ours, copy, raw)
}

/// A server under test: a child process (killed on drop) or a thread of
/// this process (stopped and joined on drop).
struct Server {
    name: String,
    endpoint: String,
    child: Option<Child>,
    thread: Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((stop, t)) = self.thread.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// Starts `cmd`, whose first line of output names its endpoint after
/// `listening on `.
fn start(mut cmd: Command, name: &str) -> Server {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} printed {line:?}, not its endpoint"))
        .to_string();
    eprintln!("  {name}: {}", line.trim());
    Server {
        name: name.to_string(),
        endpoint,
        child: Some(child),
        thread: None,
    }
}

fn tenstore_serve(dir: &Path, threads: usize) -> Server {
    let mut cmd = Command::new(tenstore_bin());
    cmd.arg("serve")
        .arg(dir)
        .args(["--bind", "tcp://127.0.0.1:*"])
        .args(["--threads", &threads.to_string()]);
    start(cmd, &format!("tenstore serve --threads {threads}"))
}

fn tenstore_bin() -> PathBuf {
    match std::env::var_os("TENSTORE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_tenstore")),
    }
}

/// The floor for any server of this protocol: one thread of this process,
/// a ROUTER and raw heed, answering `get` as `py_server.py` does (a read
/// transaction per request, each value copied into its message).
fn raw_router(dir: &Path) -> Server {
    // Its own context (and so its own I/O thread), as a server process has.
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::ROUTER).unwrap();
    sock.set_linger(0).unwrap();
    sock.set_rcvtimeo(100).unwrap();
    sock.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = sock.get_last_endpoint().unwrap().unwrap();
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(1 << 30);
    // SAFETY: a copy of the store that only this thread opens, read only.
    unsafe {
        opts.flags(EnvFlags::READ_ONLY);
    }
    // SAFETY: as above; nothing changes the files while they are mapped.
    let env = unsafe { opts.open(dir) }.unwrap();
    let db: Database<Bytes, Bytes> = {
        let rtxn = env.read_txn().unwrap();
        env.open_database(&rtxn, None).unwrap().unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            let frames = match sock.recv_multipart(0) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => panic!("raw ROUTER: {e}"),
            };
            let split = if frames.len() > 1 && frames[1].is_empty() {
                2
            } else {
                1
            };
            let rtxn = env.read_txn().unwrap();
            for f in &frames[..split] {
                sock.send(&f[..], zmq::SNDMORE).unwrap();
            }
            sock.send("ok", zmq::SNDMORE).unwrap();
            let keys = &frames[split + 1..];
            for (i, k) in keys.iter().enumerate() {
                let v = db.get(&rtxn, k).unwrap().unwrap();
                let more = if i + 1 < keys.len() { zmq::SNDMORE } else { 0 };
                sock.send(v, more).unwrap();
            }
        }
    });
    Server {
        name: "raw ROUTER + heed, 1 thread".into(),
        endpoint,
        child: None,
        thread: Some((stop, handle)),
    }
}

/// One `get` of `keys` on a REQ socket; checks the reply and reads the last
/// byte of each sample's image. Returns the number of samples.
fn get(req: &zmq::Socket, keys: &[Vec<u8>]) -> usize {
    req.send("get", zmq::SNDMORE).unwrap();
    for (i, k) in keys.iter().enumerate() {
        let more = if i + 1 < keys.len() { zmq::SNDMORE } else { 0 };
        req.send(&k[..], more).unwrap();
    }
    let status = req.recv_msg(0).unwrap();
    assert_eq!(&status[..], b"ok", "the server said {:?}", status.as_str());
    let mut n = 0;
    let mut acc = 0u64;
    while req.get_rcvmore().unwrap() {
        let v = req.recv_msg(0).unwrap();
        let t = Tensors::parse(&v).unwrap();
        acc += u64::from(*t.get(0).unwrap().data().last().unwrap());
        n += 1;
    }
    black_box(acc);
    assert_eq!(n, keys.len());
    n
}

/// CPU seconds (user + system, all threads) that process `pid` has used,
/// from `/proc` (`None` where there is no `/proc`). The source (schedstat
/// nanoseconds where this kernel keeps them, else `stat` ticks) is chosen
/// once, so two readings of one window never mix sources.
fn cpu_secs(pid: u32) -> Option<f64> {
    static SCHEDSTAT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *SCHEDSTAT.get_or_init(|| schedstat_secs(std::process::id()).is_some()) {
        schedstat_secs(pid)
    } else {
        stat_secs(pid)
    }
}

/// CPU seconds of all threads of process `pid` from
/// `/proc/PID/task/*/schedstat` (nanoseconds), if the kernel keeps them.
fn schedstat_secs(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended since the listing has no file any more: its
        // time is lost from both readings alike only if it ended before
        // the first, so the server's threads must live as long as it does
        // (they do).
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

/// CPU seconds of process `pid` from `/proc/PID/stat` (10 ms ticks).
fn stat_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ: 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// Runs `load` and also returns the CPU seconds the server's process used
/// meanwhile (child servers only).
fn load_measured(
    ctx: &zmq::Context,
    server: &Server,
    per_request: usize,
    secs: f64,
) -> (f64, Option<f64>) {
    let pid = server.child.as_ref().map(Child::id);
    let before = pid.and_then(cpu_secs);
    let t = Instant::now();
    let rate = load(ctx, &server.endpoint, 4, per_request, secs);
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = match (pid.and_then(cpu_secs), before) {
        (Some(after), Some(before)) => Some((after - before) / elapsed),
        _ => None,
    };
    (rate, cpu)
}

/// `clients` REQ clients each doing gets of `per_request` random keys for
/// `secs`; returns samples per second.
fn load(ctx: &zmq::Context, endpoint: &str, clients: usize, per_request: usize, secs: f64) -> f64 {
    let barrier = Barrier::new(clients + 1);
    let stop = AtomicBool::new(false);
    let (start, total) = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let barrier = &barrier;
                let stop = &stop;
                s.spawn(move || {
                    let req = ctx.socket(zmq::REQ).unwrap();
                    req.set_linger(0).unwrap();
                    req.connect(endpoint).unwrap();
                    let mut rng = Rng(c as u64 * 7919 + 1);
                    let mut keys = vec![Vec::new(); per_request];
                    // One request before the clock starts: the connection.
                    for k in keys.iter_mut() {
                        *k = key(rng.next() as usize % SAMPLES);
                    }
                    get(&req, &keys);
                    barrier.wait();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for k in keys.iter_mut() {
                            *k = key(rng.next() as usize % SAMPLES);
                        }
                        n += get(&req, &keys);
                    }
                    n
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (start, total)
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Round trips of one `get` of one key, in microseconds.
fn latencies(ctx: &zmq::Context, endpoint: &str, n: usize, seed: u64) -> Vec<f64> {
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_linger(0).unwrap();
    req.connect(endpoint).unwrap();
    let mut rng = Rng(seed);
    let mut keys = vec![key(0)];
    for _ in 0..50 {
        get(&req, &keys);
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        keys[0] = key(rng.next() as usize % SAMPLES);
        let t = Instant::now();
        get(&req, &keys);
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

/// A REP thread answering every request with `ok` and `SAMPLE_BYTES` bytes
/// (a valid tenbin buffer): the raw ping-pong of C3.
fn raw_rep() -> Server {
    // Its own context (and so its own I/O thread), as a server process has.
    let ctx = zmq::Context::new();
    let rep = ctx.socket(zmq::REP).unwrap();
    rep.set_linger(0).unwrap();
    rep.set_rcvtimeo(100).unwrap();
    rep.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = rep.get_last_endpoint().unwrap().unwrap();
    let payload = fixed_sample();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match rep.recv_multipart(0) {
                Ok(_) => {
                    rep.send("ok", zmq::SNDMORE).unwrap();
                    rep.send(&payload[..], 0).unwrap();
                }
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => panic!("raw REP: {e}"),
            }
        }
    });
    Server {
        name: "raw REQ/REP ping-pong (in-process REP)".into(),
        endpoint,
        child: None,
        thread: Some((stop, handle)),
    }
}

fn c2_c3(cfg: &Config, rows: &mut Vec<Row>, lat: &mut Vec<Latency>) {
    let scratch = tempfile::Builder::new()
        .prefix("tenstore-bench-net")
        .tempdir()
        .unwrap();
    eprintln!("C2: writing the store ...");
    let (ours_dir, py_dir, raw_dir) = build_store(scratch.path());
    let ctx = zmq::Context::new();
    // 4 threads, 1 thread, the raw floor, Python.
    let ours = tenstore_serve(&ours_dir, 4);
    let ours1 = tenstore_serve(&ours_dir, 1);
    let raw = raw_router(&raw_dir);
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/py/py_server.py"))
        .arg(&py_dir);
    let py = start(cmd, "py_server.py (pyzmq + py-lmdb)");
    let servers = [&ours, &ours1, &raw, &py];
    let secs = if cfg.quick { 0.5 } else { 2.0 };

    if cfg.want("C2") {
        for per_request in [1, 64] {
            eprintln!("C2: 4 clients, get of {per_request} key(s) ...");
            let mut rates: [Vec<f64>; 4] = Default::default();
            // Cores the server process kept busy, per round.
            let mut busy: [Vec<f64>; 4] = Default::default();
            for s in servers {
                load(&ctx, &s.endpoint, 4, per_request, secs / 4.0);
            }
            for r in 0..cfg.rounds {
                // Rotate which server goes first.
                for j in 0..servers.len() {
                    let i = (j + r) % servers.len();
                    let (rate, cpu) = load_measured(&ctx, servers[i], per_request, secs);
                    rates[i].push(rate);
                    busy[i].extend(cpu);
                }
            }
            for (i, s) in servers.iter().enumerate() {
                if !busy[i].is_empty() {
                    let cores = median(&busy[i]);
                    println!(
                        "     {:<40} process CPU: {:.2} cores busy, {:.1} us CPU per request ({} key(s))",
                        s.name,
                        cores,
                        cores / (median(&rates[i]) / per_request as f64) * 1e6,
                        per_request
                    );
                }
            }
            let [a, a1, rw, p] = rates;
            let target = if per_request == 1 { Some(10.0) } else { None };
            for (id, server, ours_rates, peer, peer_rates, target) in [
                ("C2", &ours, &a, &py, &p, target),
                ("", &ours1, &a1, &py, &p, None),
                ("", &raw, &rw, &py, &p, None),
                ("", &ours, &a, &raw, &rw, None),
            ] {
                push_row(
                    rows,
                    Row {
                        id: if per_request == 1 { id } else { "" },
                        what: format!("{}, get x{per_request}", server.name),
                        unit: Unit::Ops,
                        ours: Rates(ours_rates.clone()),
                        peer_name: peer.name.clone(),
                        peer: Rates(peer_rates.clone()),
                        paired: true,
                        target,
                    },
                );
            }
        }
    }

    if cfg.want("C3") {
        eprintln!("C3: latency ...");
        let rep = raw_rep();
        let n = if cfg.quick { 1000 } else { 5000 };
        let servers = [&ours, &ours1, &raw, &rep, &py];
        let mut all: [Vec<f64>; 5] = Default::default();
        for r in 0..cfg.rounds {
            for (i, s) in servers.iter().enumerate() {
                all[i].extend(latencies(&ctx, &s.endpoint, n, r as u64 * 31 + i as u64));
            }
        }
        for (i, (s, micros)) in servers.iter().zip(all).enumerate() {
            let l = Latency {
                id: if i == 0 { "C3" } else { "" },
                what: format!("{}: get 1 key (12,704 B reply)", s.name),
                micros,
            };
            print_latency(&l);
            lat.push(l);
        }
    }
}

// ---------------------------------------------------------------- C4

/// The standard sample as one encoded value (zeros): what the ceiling
/// answers.
fn fixed_sample() -> Vec<u8> {
    let image = Array3::<u8>::zeros((3, 64, 64));
    let logits = Array1::<f32>::zeros(10);
    let label = Array1::<i64>::zeros(1);
    let payload = encode_buffer(&[
        TensorRef::from_array("image", &image).unwrap(),
        TensorRef::from_array("logits", &logits).unwrap(),
        TensorRef::from_array("label", &label).unwrap(),
    ])
    .unwrap();
    assert_eq!(payload.len(), SAMPLE_BYTES);
    payload
}

/// libzmq's free function for the zero-copy ceiling: the values live as
/// long as the process, so there is nothing to free.
unsafe extern "C" fn keep(_data: *mut std::os::raw::c_void, _hint: *mut std::os::raw::c_void) {}

/// The ceiling of C4, run as a process of its own (`--ceiling-server
/// MODE`): one thread, a ROUTER, every request answered with its
/// envelope, `ok` and a 12,704-byte value; no lookup, no checks. Runs
/// until killed. MODE `fixed`: the same value every time (copied into the
/// message from cache, as `send(&[u8])` does). To tell what copying a
/// looked-up value costs, a value at a random one of 10,000 places in 127
/// MB (out of cache, as a looked-up value is) is either copied into its
/// message (`copy`, what `tenstore serve` does) or handed to libzmq
/// without a copy (`zerocopy`).
fn ceiling_server(mode: &str) -> ! {
    let ctx = zmq::Context::new();
    let mut sock = ctx.socket(zmq::ROUTER).unwrap();
    sock.set_linger(0).unwrap();
    sock.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = sock.get_last_endpoint().unwrap().unwrap();
    println!("ceiling ({mode}): listening on {endpoint}");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let payload = fixed_sample();
    let spread: &'static [u8] = if mode == "fixed" {
        &[]
    } else {
        Box::leak(payload.repeat(SAMPLES).into_boxed_slice())
    };
    let mut rng = Rng(12345);
    let mut frames: Vec<zmq::Message> = Vec::new();
    loop {
        frames.clear();
        loop {
            let m = sock.recv_msg(0).unwrap();
            let more = m.get_more();
            frames.push(m);
            if !more {
                break;
            }
        }
        let env = if frames.len() > 1 && frames[1].is_empty() {
            2
        } else {
            1
        };
        for f in frames.drain(..env) {
            sock.send(f, zmq::SNDMORE).unwrap();
        }
        sock.send(&b"ok"[..], zmq::SNDMORE).unwrap();
        let at = (rng.next() as usize % SAMPLES) * SAMPLE_BYTES;
        match mode {
            "fixed" => sock.send(&payload[..], 0).unwrap(),
            "copy" => sock.send(&spread[at..at + SAMPLE_BYTES], 0).unwrap(),
            _ => {
                let mut msg = zmq_sys::zmq_msg_t::default();
                // SAFETY: `spread` is leaked, so the value outlives every
                // message over it, and nothing writes it; `keep` frees
                // nothing. `msg` is a fresh message; `zmq_msg_send` takes
                // it (and empties it) on success, and the ROUTER socket is
                // this thread's alone.
                unsafe {
                    let data = spread.as_ptr().add(at) as *mut std::os::raw::c_void;
                    let rc = zmq_sys::zmq_msg_init_data(
                        &mut msg,
                        data,
                        SAMPLE_BYTES,
                        Some(keep),
                        std::ptr::null_mut(),
                    );
                    assert_eq!(rc, 0);
                    assert!(zmq_sys::zmq_msg_send(&mut msg, sock.as_mut_ptr(), 0) >= 0);
                    zmq_sys::zmq_msg_close(&mut msg);
                }
            }
        }
    }
}

/// C4's servers: the ceiling, its variants that copy or do not copy
/// values out of cache, then `tenstore serve` on each store with 1, 2 and
/// 4 threads.
fn c4_servers(lmdb: &Path, shards: &Path) -> Vec<Server> {
    let ceiling = |mode: &str, name: &str| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ceiling-server", mode]);
        start(cmd, name)
    };
    let mut out = vec![
        ceiling("fixed", "ceiling: 1-thread ROUTER, fixed value"),
        ceiling("copy", "ceiling, random values copied"),
        ceiling("zerocopy", "ceiling, random values, zero-copy"),
    ];
    for (dir, backend) in [(lmdb, "lmdb"), (shards, "shards")] {
        for threads in [1, 2, 4] {
            let mut s = tenstore_serve(dir, threads);
            s.name = format!("serve {backend} --threads {threads}");
            out.push(s);
        }
    }
    out
}

/// Writes the samples of C2 into a shard store.
fn build_shard_store(dir: &Path) -> PathBuf {
    use tenstore::store::{Backend, Store, StoreOptions};
    let path = dir.join("shards");
    let store = Store::open(
        &path,
        &StoreOptions {
            create: true,
            backend: Some(Backend::Shard),
            ..Default::default()
        },
    )
    .unwrap();
    for start in (0..SAMPLES).step_by(1000) {
        let arrays: Vec<_> = (start..start + 1000)
            .map(|i| {
                (
                    key(i),
                    Array3::from_shape_fn((3, 64, 64), |(c, y, x)| (c * 7 + y * 3 + x + i) as u8),
                    Array1::from_shape_fn(10, |j| (i * 10 + j) as f32),
                    Array1::from(vec![i as i64]),
                )
            })
            .collect();
        let batch: Vec<(&[u8], [TensorRef<'_>; 3])> = arrays
            .iter()
            .map(|(k, a, b, c)| {
                (
                    &k[..],
                    [
                        TensorRef::from_array("image", a).unwrap(),
                        TensorRef::from_array("logits", b).unwrap(),
                        TensorRef::from_array("label", c).unwrap(),
                    ],
                )
            })
            .collect();
        store.put_batch(&batch).unwrap();
    }
    store.flush().unwrap();
    path
}

/// Pipelined requests each client keeps outstanding.
const DEPTH: usize = 8;
/// Pipelining clients.
const CLIENTS: usize = 4;

/// `CLIENTS` DEALERs (no envelope) each keeping `DEPTH` gets of one random
/// key outstanding for `secs`, every reply checked (`ok`, a tenbin buffer,
/// its image's last byte read). Returns samples per second and the server
/// process's CPU seconds per sample over the same window.
fn pipelined(ctx: &zmq::Context, server: &Server, secs: f64, seed: u64) -> (f64, f64) {
    let pid = server.child.as_ref().map(Child::id).unwrap();
    let barrier = Barrier::new(CLIENTS + 1);
    let stop = AtomicBool::new(false);
    let (cpu, elapsed, total) = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (barrier, stop) = (&barrier, &stop);
                let endpoint = &server.endpoint;
                s.spawn(move || {
                    let d = ctx.socket(zmq::DEALER).unwrap();
                    d.set_linger(0).unwrap();
                    d.set_rcvtimeo(10_000).unwrap();
                    d.connect(endpoint).unwrap();
                    let mut rng = Rng(seed * 1_000_003 + c as u64 * 7919 + 1);
                    let send = |rng: &mut Rng| {
                        let k = key(rng.next() as usize % SAMPLES);
                        d.send(&b"get"[..], zmq::SNDMORE).unwrap();
                        d.send(&k[..], 0).unwrap();
                    };
                    let recv = || {
                        let status = d.recv_msg(0).expect("a reply within 10 s");
                        assert_eq!(&status[..], b"ok", "the server said {:?}", status.as_str());
                        assert!(status.get_more());
                        let v = d.recv_msg(0).unwrap();
                        assert!(!v.get_more());
                        let t = Tensors::parse(&v).unwrap();
                        u64::from(*t.get(0).unwrap().data().last().unwrap())
                    };
                    // The connection, before the clock starts.
                    send(&mut rng);
                    recv();
                    barrier.wait();
                    for _ in 0..DEPTH {
                        send(&mut rng);
                    }
                    let (mut n, mut acc) = (0usize, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        acc += recv();
                        n += 1;
                        send(&mut rng);
                    }
                    for _ in 0..DEPTH {
                        acc += recv();
                    }
                    black_box(acc);
                    n
                })
            })
            .collect();
        let before = cpu_secs(pid).unwrap();
        barrier.wait();
        let t = Instant::now();
        thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        let cpu = cpu_secs(pid).unwrap() - before;
        let elapsed = t.elapsed().as_secs_f64();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (cpu, elapsed, total)
    });
    (total as f64 / elapsed, cpu / total as f64)
}

/// CPU per sample of one server beside the ceiling's, per round.
struct Cpu {
    what: String,
    micros: Vec<f64>,
    ceiling: Vec<f64>,
    /// Whether the goal (at most 1.2x the ceiling) applies.
    target: bool,
}

fn print_cpu(c: &Cpu) {
    let ratios: Vec<f64> = c
        .micros
        .iter()
        .zip(&c.ceiling)
        .map(|(a, b)| a / b)
        .collect();
    println!(
        "C4   {:<36} CPU/sample {:>5.1} us ({:>5.1}-{:>5.1})  ceiling {:>5.1} us  paired {:>5.2}x (quartiles {:.2}-{:.2}, all {:.2}-{:.2})  {}",
        c.what,
        median(&c.micros),
        c.micros.iter().copied().fold(f64::INFINITY, f64::min),
        c.micros.iter().copied().fold(0.0, f64::max),
        median(&c.ceiling),
        median(&ratios),
        quantile(&ratios, 0.25),
        quantile(&ratios, 0.75),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
        match (c.target, median(&ratios) <= 1.2) {
            (false, _) => "",
            (true, true) => "target <= 1.2x met",
            (true, false) => "target <= 1.2x MISSED",
        },
    );
}

fn c4(cfg: &Config, rows: &mut Vec<Row>, cpu: &mut Vec<Cpu>) {
    let scratch = tempfile::Builder::new()
        .prefix("tenstore-bench-net4")
        .tempdir()
        .unwrap();
    eprintln!("C4: writing the stores ...");
    let (lmdb, _, _) = build_store(scratch.path());
    let shards = build_shard_store(scratch.path());
    let servers = c4_servers(&lmdb, &shards);
    let ctx = zmq::Context::new();
    // Short windows and many rounds, each window of a server beside a
    // window of the ceiling run right before or after it: the two of a
    // pair see the same load from the rest of the machine, so their ratio
    // holds where the rates themselves swing.
    let secs = if cfg.quick { 0.25 } else { 0.5 };
    let rounds = if cfg.quick { 5 } else { 21 };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut micros: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    // The ceiling's window paired with each server's, per round.
    let mut paired: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut paired_rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    eprintln!("C4: {CLIENTS} DEALERs, {DEPTH} gets of 1 key outstanding each, {rounds} rounds ...");
    for s in &servers {
        pipelined(&ctx, s, secs / 4.0, 0);
    }
    let others = servers.len() - 1;
    for r in 0..rounds {
        // Rotate which server goes first; alternate whether the ceiling's
        // window comes before or after the server's.
        for j in 0..others {
            let i = 1 + (j + r) % others;
            let seed = (r * 31 + i) as u64;
            let run = |k: usize| pipelined(&ctx, &servers[k], secs, seed);
            let (ceiling, server) = if (r + j) % 2 == 0 {
                let c = run(0);
                (c, run(i))
            } else {
                let s = run(i);
                (run(0), s)
            };
            rates[0].push(ceiling.0);
            micros[0].push(ceiling.1 * 1e6);
            paired[i].push(ceiling.1 * 1e6);
            paired_rates[i].push(ceiling.0);
            rates[i].push(server.0);
            micros[i].push(server.1 * 1e6);
        }
    }
    for (i, s) in servers.iter().enumerate().skip(1) {
        push_row(
            rows,
            Row {
                id: if i == 1 { "C4" } else { "" },
                what: format!("{}, pipelined get x1", s.name),
                unit: Unit::Ops,
                ours: Rates(rates[i].clone()),
                peer_name: "ceiling (no lookup)".into(),
                peer: Rates(paired_rates[i].clone()),
                paired: true,
                target: None,
            },
        );
        let c = Cpu {
            what: s.name.clone(),
            micros: micros[i].clone(),
            ceiling: paired[i].clone(),
            target: i > 2,
        };
        print_cpu(&c);
        cpu.push(c);
    }
    let copy: Vec<f64> = micros[1]
        .iter()
        .zip(&micros[2])
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "C4   copying a 12,704-byte value out of cache into its message: {:+.1} us CPU per sample \
         (copy - zerocopy ceilings, median of per-round differences; rounds {:+.1} to {:+.1})",
        median(&copy),
        copy.iter().copied().fold(f64::INFINITY, f64::min),
        copy.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
}

fn push_row(rows: &mut Vec<Row>, row: Row) {
    print_row(&row, WIDTHS);
    rows.push(row);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--ceiling-server") {
        ceiling_server(args.get(i + 1).map_or("fixed", String::as_str));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let cfg = Config {
        quick,
        rounds: if quick { 3 } else { 7 },
        only,
    };
    println!(
        "rates are medians of {} rounds; spread: slowest and fastest round against the median;",
        cfg.rounds
    );
    println!("ratio = tenstore median / peer median; paired = median of per-round ratios (interleaved rounds)");
    print_header(WIDTHS);
    let mut rows = Vec::new();
    let mut lat = Vec::new();
    if cfg.want("C1") {
        eprintln!("C1 ...");
        c1(&cfg, &mut rows);
    }
    if cfg.want("C2") || cfg.want("C3") {
        c2_c3(&cfg, &mut rows, &mut lat);
    }
    let mut cpu = Vec::new();
    if cfg.want("C4") {
        c4(&cfg, &mut rows, &mut cpu);
    }
    println!();
    println!("summary");
    print_header(WIDTHS);
    for r in &rows {
        print_row(r, WIDTHS);
    }
    for l in &lat {
        print_latency(l);
    }
    for c in &cpu {
        print_cpu(c);
    }
}
