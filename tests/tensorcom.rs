//! tensorcom 0.1.0 (PyPI), the ZeroMQ tensor-streaming library of
//! webdataset's author, against `tenstore push` and `tenstore pull`
//! (issue 17): every push mode with the tensorcom URL that matches it,
//! tensorcom's senders into `pull` for both backends, malformed messages,
//! a kill -9 of `pull`, and the compatibility warnings checked against
//! what tensorcom and webdataset 1.0.2 actually fail to decode.
//!
//! The Python end is `tests/py/tensorcom_peer.py`. Everything listens on
//! 127.0.0.1 with ports the OS picks; every wait is bounded.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tenstore::ndarray::{Array1, ArrayD, IxDyn};
use tenstore::store::{Backend, Order, Store, StoreOptions};
use tenstore::{DType, TensorRef};

const BIN: &str = env!("CARGO_BIN_EXE_tenstore");
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Processes

/// A running process whose stdout is read line by line; killed on drop.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl Proc {
    fn spawn(mut cmd: Command, what: String) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
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
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            child,
            lines,
            stderr,
            what,
        }
    }

    /// `tenstore ARGS...`.
    fn tenstore(args: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Proc::spawn(cmd, format!("tenstore {}", args.join(" ")))
    }

    /// `tests/py/tensorcom_peer.py ARGS...`.
    fn python(args: &[&str]) -> Proc {
        let mut cmd = Command::new(common::python());
        cmd.arg(common::py_script("tensorcom_peer.py"))
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONOPTIMIZE");
        Proc::spawn(cmd, format!("tensorcom_peer.py {}", args.join(" ")))
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line.
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = self.child.kill();
                panic!(
                    "{}: no line on stdout within {WAIT:?}; stderr:\n{}",
                    self.what,
                    self.stderr()
                )
            }
        }
    }

    /// The next stdout line, which must start with `prefix`: the rest.
    fn expect(&mut self, prefix: &str) -> String {
        let line = self.line();
        match line.strip_prefix(prefix) {
            Some(rest) => rest.to_owned(),
            None => panic!(
                "{}: expected a line starting {prefix:?}, got {line:?}; stderr:\n{}",
                self.what,
                self.stderr()
            ),
        }
    }

    /// Waits for the exit (killing it after `WAIT`); the exit status and
    /// the stdout lines not read yet.
    fn wait(&mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{}: still running after {WAIT:?}; stderr:\n{}",
                    self.what,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        // The stderr reader ends at EOF, right after the exit.
        std::thread::sleep(Duration::from_millis(20));
        (status, rest)
    }

    /// Waits for a successful exit; the stdout lines not read yet.
    fn success(&mut self) -> Vec<String> {
        let (status, rest) = self.wait();
        assert!(
            status.success(),
            "{}: {status}; stdout: {rest:?}; stderr:\n{}",
            self.what,
            self.stderr()
        );
        rest
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tenstore ARGS...` to the end: (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// Stores and what tensorcom should receive from them

/// A store of `n` samples keyed `s000`, `s001`, ... (written in key order,
/// so both backends push them in that order): "img" u1 [2, 3, 4], "f" f4
/// [5], "h" f2 [2, 2], "lab" i8 [2], values derived from the number.
fn make_store(dir: &Path, backend: Backend, n: usize) -> PathBuf {
    let path = dir.join(format!("src-{}", backend.name()));
    let store = Store::open(
        &path,
        &StoreOptions {
            create: true,
            backend: Some(backend),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..n {
        let img = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |ix| {
            ((ix[0] * 12 + ix[1] * 4 + ix[2]) * 3 + i) as u8
        });
        let f = Array1::from_iter((0..5).map(|k| k as f32 * 0.25 - i as f32));
        let h = ArrayD::from_shape_fn(IxDyn(&[2, 2]), |ix| {
            tenstore::half::f16::from_f32((ix[0] * 2 + ix[1]) as f32 + i as f32)
        });
        let lab = Array1::from(vec![i as i64, -(i as i64) * 1000]);
        store
            .put(
                format!("s{i:03}").as_bytes(),
                &[
                    TensorRef::from_array("img", &img).unwrap(),
                    TensorRef::from_array("f", &f).unwrap(),
                    TensorRef::from_array("h", &h).unwrap(),
                    TensorRef::from_array("lab", &lab).unwrap(),
                ],
            )
            .unwrap();
    }
    store.flush().unwrap();
    path
}

/// One array as tensorcom_peer.py prints it: numpy dtype name, shape,
/// data in hex.
type Arr = (String, Vec<u64>, String);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every sample of the store in key order: key and arrays.
fn samples(path: &Path) -> Vec<(Vec<u8>, Vec<Arr>)> {
    let store = Store::open(
        path,
        &StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let reader = store.reader().unwrap();
    reader
        .samples(Order::Key)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            let arrays = s
                .iter()
                .map(|t| {
                    (
                        t.dtype().numpy_name().to_owned(),
                        t.shape().iter().map(|d| d as u64).collect(),
                        hex(t.data()),
                    )
                })
                .collect();
            (s.key().to_vec(), arrays)
        })
        .collect()
}

/// A message as the receiving peer printed it: batch size and arrays.
fn parse_msg(line: &str) -> (u64, Vec<Arr>) {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    let arrays = v["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
                a[2].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (v["batch"].as_u64().unwrap(), arrays)
}

/// The key array push --key-tensor adds for `key`.
fn key_arr(key: &[u8]) -> Arr {
    ("uint8".into(), vec![key.len() as u64], hex(key))
}

/// Receives `count` messages with tensorcom at `url` (a connecting URL).
fn tensorcom_recv(url: &str, count: usize, single: bool) -> Vec<(u64, Vec<Arr>)> {
    let count_s = count.to_string();
    let mut args = vec!["recv", url, &count_s];
    if single {
        args.push("single");
    }
    let mut py = Proc::python(&args);
    let msgs = (0..count).map(|_| parse_msg(&py.line())).collect();
    py.success();
    msgs
}

/// `tcp://127.0.0.1:PORT` -> `SCHEME://127.0.0.1:PORT`.
fn url(scheme: &str, endpoint: &str) -> String {
    format!(
        "{scheme}://{}",
        endpoint.strip_prefix("tcp://").expect("a tcp endpoint")
    )
}

// ---------------------------------------------------------------------------
// push -> tensorcom

#[test]
fn push_bind_feeds_tensorcom_zrpull() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_store(tmp.path(), Backend::Shard, 12);
    let expected = samples(&src);
    let mut push = Proc::tenstore(&["push", src.to_str().unwrap(), "--bind", "tcp://127.0.0.1:*"]);
    let endpoint = push.expect("tenstore push: pushing on ");
    let got = tensorcom_recv(&url("zrpull", &endpoint), 12, false);
    assert_eq!(push.success(), ["tenstore push: sent 12 samples"]);
    for ((_, want), (batch, arrays)) in expected.iter().zip(&got) {
        assert_eq!(arrays, want);
        // tensorcom counts len(first tensor): 2 for "img" [2, 3, 4].
        assert_eq!(*batch, 2);
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        push.stderr(),
        "",
        "no compatibility warnings for these dtypes"
    );
}

#[test]
fn two_pushes_connect_to_one_tensorcom_zpull_that_binds() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_store(tmp.path(), Backend::Lmdb, 10);
    let expected = samples(&src);
    // The trainer binds; two preprocessing workers connect to it.
    let mut py = Proc::python(&["recv", "zpull://127.0.0.1:*", "20"]);
    let endpoint = py.expect("ready ");
    let pushes: Vec<Proc> = (0..2)
        .map(|_| {
            Proc::tenstore(&[
                "push",
                src.to_str().unwrap(),
                "--connect",
                &endpoint,
                "--key-tensor",
                "key",
            ])
        })
        .collect();
    let mut got: Vec<Vec<Arr>> = (0..20).map(|_| parse_msg(&py.line()).1).collect();
    py.success();
    for mut push in pushes {
        assert_eq!(
            push.expect("tenstore push: pushing to "),
            format!("{endpoint} (connecting)")
        );
        assert_eq!(push.success(), ["tenstore push: sent 10 samples"]);
    }
    // Each worker's samples, in order, each with its key as the last array.
    let mut want: Vec<Vec<Arr>> = expected
        .iter()
        .flat_map(|(k, a)| {
            let mut a = a.clone();
            a.push(key_arr(k));
            [a.clone(), a]
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn push_single_feeds_tensorcom_multipart_false() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_store(tmp.path(), Backend::Lmdb, 8);
    let expected = samples(&src);
    let mut push = Proc::tenstore(&[
        "push",
        src.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--single",
    ]);
    let endpoint = push.expect("tenstore push: pushing on ");
    let got = tensorcom_recv(&url("zrpull", &endpoint), 8, true);
    assert_eq!(push.success(), ["tenstore push: sent 8 samples"]);
    let got: Vec<Vec<Arr>> = got.into_iter().map(|(_, a)| a).collect();
    let want: Vec<Vec<Arr>> = expected.into_iter().map(|(_, a)| a).collect();
    assert_eq!(got, want);
}

#[test]
fn push_pub_feeds_tensorcom_zsub() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_store(tmp.path(), Backend::Shard, 9);
    let expected = samples(&src);
    let mut push = Proc::tenstore(&[
        "push",
        src.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--pub",
        "--subscribers",
        "1",
        "--epochs",
        "2",
    ]);
    // The endpoint is printed first; the first message waits for the
    // subscriber, so none is lost to a late join.
    let endpoint = push.expect("tenstore push: publishing on ");
    let count_s = "18";
    let mut py = Proc::python(&["recv", &url("zsub", &endpoint), count_s]);
    let got: Vec<Vec<Arr>> = (0..18).map(|_| parse_msg(&py.line()).1).collect();
    py.success();
    assert_eq!(push.success(), ["tenstore push: sent 18 samples"]);
    let want: Vec<Vec<Arr>> = expected
        .iter()
        .chain(&expected)
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn push_batch_feeds_tensorcoms_batch_view() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_store(tmp.path(), Backend::Lmdb, 10);
    let expected = samples(&src);
    let mut push = Proc::tenstore(&[
        "push",
        src.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--batch",
        "4",
        "--key-tensor",
        "key",
    ]);
    let endpoint = push.expect("tenstore push: pushing on ");
    let got = tensorcom_recv(&url("zrpull", &endpoint), 3, false);
    assert_eq!(push.success(), ["tenstore push: sent 10 samples"]);
    let sizes: Vec<u64> = got.iter().map(|(b, _)| *b).collect();
    // tensorcom's Connection.batchsize: len(first tensor).
    assert_eq!(sizes, [4, 4, 2]);
    for (chunk, (_, arrays)) in expected.chunks(4).zip(&got) {
        let n = chunk.len() as u64;
        for (t, arr) in arrays.iter().enumerate().take(4) {
            let first = &chunk[0].1[t];
            let mut shape = vec![n];
            shape.extend(&first.1);
            let data: String = chunk.iter().map(|(_, a)| a[t].2.as_str()).collect();
            assert_eq!(arr, &(first.0.clone(), shape, data));
        }
        // The keys: [n, 4] u1, each row a key ("s000" is 4 bytes).
        let keys: String = chunk.iter().map(|(k, _)| hex(k)).collect();
        assert_eq!(arrays[4], ("uint8".into(), vec![n, 4], keys));
        assert_eq!(arrays.len(), 5);
    }
}

#[test]
fn push_batch_refuses_samples_whose_shapes_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ragged");
    let store = Store::open(
        &path,
        &StoreOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    for (key, len) in [("a", 3usize), ("b", 3), ("c", 4)] {
        let x = Array1::from(vec![1u8; len]);
        store
            .put(key.as_bytes(), &[TensorRef::from_array("x", &x).unwrap()])
            .unwrap();
    }
    drop(store);
    let mut push = Proc::tenstore(&[
        "push",
        path.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--batch",
        "3",
    ]);
    push.expect("tenstore push: pushing on ");
    let (status, _) = push.wait();
    assert_eq!(status.code(), Some(1));
    let err = push.stderr();
    assert!(
        err.contains("cannot stack sample c into a batch with sample a")
            && err.contains("tensor \"x\" has shape [4], not [3]"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Compatibility

#[test]
fn compat_set_matches_what_tensorcom_and_webdataset_fail_to_decode() {
    let out = common::run_py("tensorcom_peer.py", ["compat"]);
    let failing: Vec<(String, usize)> = serde_json::from_str(out.trim()).unwrap();
    let mut ours = Vec::new();
    for d in DType::ALL {
        for ndim in [1, 0] {
            if tenstore::serve::incompatibility(d, ndim).is_some() {
                ours.push((d.code().to_owned(), ndim));
            }
        }
    }
    assert_eq!(ours, failing);
}

/// A store whose samples hold a 0-d f4 "s", a u4 "u", a bf16 "b" and a
/// fine f4 "ok".
fn odd_store(dir: &Path) -> PathBuf {
    let path = dir.join("odd");
    let store = Store::open(
        &path,
        &StoreOptions {
            create: true,
            backend: Some(Backend::Shard),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..5u32 {
        let s = ArrayD::from_elem(IxDyn(&[]), i as f32);
        let u = Array1::from(vec![i, i + 1]);
        let b = Array1::from(vec![tenstore::half::bf16::from_f32(i as f32)]);
        let ok = Array1::from(vec![i as f32]);
        store
            .put(
                format!("o{i}").as_bytes(),
                &[
                    TensorRef::from_array("s", &s).unwrap(),
                    TensorRef::from_array("u", &u).unwrap(),
                    TensorRef::from_array("b", &b).unwrap(),
                    TensorRef::from_array("ok", &ok).unwrap(),
                ],
            )
            .unwrap();
    }
    store.flush().unwrap();
    path
}

/// Pushes `store` with `extra` flags to a plain PULL socket; the
/// messages' tensor counts and push's stderr.
fn push_to_pull(store: &Path, extra: &[&str], count: usize) -> (Vec<usize>, String) {
    let mut args = vec![
        "push",
        store.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
    ];
    args.extend(extra);
    let mut push = Proc::tenstore(&args);
    let endpoint = push.expect("tenstore push: pushing on ");
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    pull.set_linger(0).unwrap();
    pull.connect(&endpoint).unwrap();
    let sizes = (0..count)
        .map(|_| tenstore::net::zrecv_multipart(&pull, 0).unwrap().len())
        .collect();
    push.success();
    (sizes, push.stderr())
}

#[test]
fn push_warns_once_per_incompatible_tensor_name() {
    let tmp = tempfile::tempdir().unwrap();
    let odd = odd_store(tmp.path());
    let (sizes, err) = push_to_pull(&odd, &[], 5);
    assert_eq!(sizes, [4; 5], "every sample is still sent");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 3, "{err}");
    for (name, what) in [
        ("s", "is a 0-d array"),
        ("u", "has dtype u4"),
        ("b", "has the extension dtype bf16"),
    ] {
        let prefix = format!("tenstore: warning: tensor \"{name}\" (first in sample o0) {what}");
        assert!(
            warnings.iter().any(|w| w.starts_with(&prefix)),
            "no warning {prefix:?} in:\n{err}"
        );
    }
    // Batches stack the 0-d tensor into a 1-d one, which tensorcom decodes.
    let (sizes, err) = push_to_pull(&odd, &["--batch", "5"], 1);
    assert_eq!(sizes, [4]);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(!err.contains("0-d"), "{err}");
}

#[test]
fn compat_reference_refuses_before_sending_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let odd = odd_store(tmp.path());
    let (ok, out, err) = run(&[
        "push",
        odd.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--compat",
        "reference",
    ]);
    assert!(!ok);
    assert_eq!(out, "", "nothing bound, nothing sent");
    assert!(
        err.contains("sample o0: tensor \"s\" is a 0-d array")
            && err.contains("the compatibility mode is `reference` (nothing was sent)"),
        "{err}"
    );
    // A store tensorcom can read passes.
    let good = make_store(tmp.path(), Backend::Lmdb, 3);
    let (sizes, err) = push_to_pull(&good, &["--compat", "reference"], 3);
    assert_eq!(sizes, [4; 3]);
    assert_eq!(err, "");
}

// ---------------------------------------------------------------------------
// tensorcom -> pull

/// What tensorcom_peer.py send printed: key -> [(name, code, shape, sha256)].
type Sent = Vec<(String, Vec<(String, String, Vec<u64>, String)>)>;

fn parse_sent(lines: &[String]) -> Sent {
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let arrays = v["arrays"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a[0].as_str().unwrap().to_owned(),
                        a[1].as_str().unwrap().to_owned(),
                        a[2].as_array()
                            .unwrap()
                            .iter()
                            .map(|d| d.as_u64().unwrap())
                            .collect(),
                        a[3].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (v["key"].as_str().unwrap().to_owned(), arrays)
        })
        .collect()
}

/// `tenstore get STORE KEY --json`: [(name, dtype, shape, sha256)].
fn get_json(store: &Path, key: &str) -> Vec<(String, String, Vec<u64>, String)> {
    let (ok, out, err) = run(&["get", store.to_str().unwrap(), key, "--json"]);
    assert!(ok, "get {key}: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["dtype"].as_str().unwrap().to_owned(),
                t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
                t["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn tensorcom_zpush_into_pull_for_both_backends() {
    const COUNT: usize = 15;
    let tmp = tempfile::tempdir().unwrap();
    // (backend, framing, keyed by the "key" tensor)
    for (backend, single, by_tensor) in [("lmdb", false, false), ("ten", true, true)] {
        let store = tmp.path().join(format!("pulled-{backend}"));
        let mut args = vec![
            "pull",
            store.to_str().unwrap(),
            "--create",
            "--backend",
            backend,
            "--bind",
            "tcp://127.0.0.1:*",
            "--max",
            "15",
            "--commit-every",
            "4",
            // No commit by the clock: the batches are 4, 4, 4, then the 3
            // that --max leaves room for.
            "--commit-ms",
            "600000",
        ];
        if single {
            args.push("--single");
        }
        if by_tensor {
            args.extend(["--key-tensor", "key"]);
        }
        let mut pull = Proc::tenstore(&args);
        let endpoint = pull.expect("tenstore pull: receiving on ");
        let count = COUNT.to_string();
        let sender_url = url("zpush", &endpoint);
        let mut py_args = vec!["send", sender_url.as_str(), count.as_str()];
        if single {
            py_args.push("single");
        }
        let mut py = Proc::python(&py_args);
        let sent = parse_sent(&py.success());
        assert_eq!(sent.len(), COUNT);
        let rest = pull.success();
        assert_eq!(
            rest.last().unwrap(),
            "tenstore pull: stored 15 samples from 15 messages; skipped 0 malformed and 0 refused messages"
        );
        // Commits of 4: 4, 8, 12, then the last 3.
        assert_eq!(
            &rest[..rest.len() - 1],
            [4, 8, 12, 15].map(|n| format!("tenstore pull: committed {n} samples"))
        );
        let (ok, keys, _) = run(&["ls", store.to_str().unwrap()]);
        assert!(ok);
        assert_eq!(keys.lines().count(), COUNT);
        for (m, (key, arrays)) in sent.iter().enumerate() {
            let (stored_key, want): (String, Vec<_>) = if by_tensor {
                // The key tensor names the sample and is not stored.
                (key.clone(), arrays[..4].to_vec())
            } else {
                (format!("{m:08}"), arrays.clone())
            };
            assert_eq!(
                get_json(&store, &stored_key),
                want,
                "{backend} {stored_key}"
            );
        }
    }
}

/// A valid message of pull test number `m`: "i" i8 [1] = m and "x" u1
/// [m % 7 + 1] of m's low byte.
fn numbered(m: u64) -> (Array1<i64>, Array1<u8>) {
    (
        Array1::from(vec![m as i64]),
        Array1::from(vec![m as u8; (m % 7 + 1) as usize]),
    )
}

fn send_numbered(socket: &zmq::Socket, m: u64) -> tenstore::net::Result<()> {
    let (i, x) = numbered(m);
    tenstore::net::zsend_multipart(
        socket,
        &[
            TensorRef::from_array("i", &i).unwrap(),
            TensorRef::from_array("x", &x).unwrap(),
        ],
        0,
    )
}

/// Checks that every sample of the store is a whole numbered message
/// under its counter key; returns the numbers found.
fn check_numbered(store: &Path) -> Vec<u64> {
    samples(store)
        .into_iter()
        .map(|(key, arrays)| {
            let key = String::from_utf8(key).unwrap();
            let m: u64 = key.parse().unwrap();
            let (i, x) = numbered(m);
            let want = vec![
                ("int64".to_owned(), vec![1], hex(&(m as i64).to_le_bytes())),
                (
                    "uint8".to_owned(),
                    vec![x.len() as u64],
                    hex(x.as_slice().unwrap()),
                ),
            ];
            assert_eq!(arrays, want, "sample {key} is not whole ({i})");
            m
        })
        .collect()
}

#[test]
fn garbage_and_truncated_messages_are_counted_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("pulled");
    let mut pull = Proc::tenstore(&[
        "pull",
        store.to_str().unwrap(),
        "--create",
        "--bind",
        "tcp://127.0.0.1:*",
        "--max",
        "4",
    ]);
    let endpoint = pull.expect("tenstore pull: receiving on ");
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(5000).unwrap();
    push.connect(&endpoint).unwrap();
    send_numbered(&push, 0).unwrap();
    // Garbage: one frame of text.
    push.send("not tenbin at all", 0).unwrap();
    // Truncated: a valid header frame whose data frame is cut short.
    let (i, x) = numbered(1);
    let tensors = [
        TensorRef::from_array("i", &i).unwrap(),
        TensorRef::from_array("x", &x).unwrap(),
    ];
    let frames = tenstore::codec::encode_list(&tensors);
    let mut cut: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
    cut[3].pop();
    push.send_multipart(cut, 0).unwrap();
    send_numbered(&push, 1).unwrap();
    // A header cut in the middle, and a header without its data frame.
    push.send_multipart([&frames[0][..10], &frames[1][..]], 0)
        .unwrap();
    push.send_multipart(frames[..3].iter().map(|f| f.to_vec()), 0)
        .unwrap();
    // A single-frame tenbin buffer where multipart messages are expected.
    tenstore::net::zsend_single(&push, &[TensorRef::from_array("i", &i).unwrap()], 0).unwrap();
    send_numbered(&push, 2).unwrap();
    send_numbered(&push, 3).unwrap();
    let rest = pull.success();
    assert_eq!(
        rest.last().unwrap(),
        "tenstore pull: stored 4 samples from 9 messages; skipped 5 malformed and 0 refused messages"
    );
    let err = pull.stderr();
    assert_eq!(
        err.matches("tenstore pull: skipped message").count(),
        5,
        "{err}"
    );
    for n in [2, 3, 5, 6, 7] {
        assert!(
            err.contains(&format!("skipped message {n}: malformed: ")),
            "message {n} not reported:\n{err}"
        );
    }
    assert!(err.contains("give --single"), "{err}");
    // The valid ones, numbered by the counter of messages taken.
    assert_eq!(check_numbered(&store), [0, 1, 2, 3]);
}

/// --max-frame bounds a whole message, not only each frame: a message
/// whose frames each fit but whose tensors together do not is refused and
/// counted, and the stream goes on.
#[test]
fn a_message_larger_than_max_frame_in_all_is_refused_and_the_stream_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("pulled");
    let mut pull = Proc::tenstore(&[
        "pull",
        store.to_str().unwrap(),
        "--create",
        "--bind",
        "tcp://127.0.0.1:*",
        "--max",
        "2",
        "--max-frame",
        "4096",
    ]);
    let endpoint = pull.expect("tenstore pull: receiving on ");
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(5000).unwrap();
    push.connect(&endpoint).unwrap();
    send_numbered(&push, 0).unwrap();
    // Two tensors of 3,000 bytes: each frame fits in 4,096, the message not.
    let big = Array1::from(vec![7u8; 3000]);
    tenstore::net::zsend_multipart(
        &push,
        &[
            TensorRef::from_array("a", &big).unwrap(),
            TensorRef::from_array("b", &big).unwrap(),
        ],
        0,
    )
    .unwrap();
    send_numbered(&push, 1).unwrap();
    let rest = pull.success();
    assert_eq!(
        rest.last().unwrap(),
        "tenstore pull: stored 2 samples from 3 messages; skipped 0 malformed and 1 refused messages"
    );
    let err = pull.stderr();
    assert!(
        err.contains(
            "skipped message 2: refused: its tensors hold 6000 bytes, more than --max-frame (4096)"
        ),
        "{err}"
    );
    assert_eq!(check_numbered(&store), [0, 1]);
}

#[test]
fn kill_9_of_pull_keeps_every_committed_sample_whole() {
    for backend in ["lmdb", "ten"] {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("pulled");
        let mut pull = Proc::tenstore(&[
            "pull",
            store.to_str().unwrap(),
            "--create",
            "--backend",
            backend,
            "--bind",
            "tcp://127.0.0.1:*",
            "--commit-every",
            "7",
        ]);
        let endpoint = pull.expect("tenstore pull: receiving on ");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let push = ctx.socket(zmq::PUSH).unwrap();
                push.set_linger(0).unwrap();
                push.set_sndtimeo(200).unwrap();
                push.connect(&endpoint).unwrap();
                let mut m = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && m < 100_000 {
                    if send_numbered(&push, m).is_ok() {
                        m += 1;
                    }
                }
                m
            })
        };
        let mut committed = 0;
        while committed < 50 {
            let n = pull.expect("tenstore pull: committed ");
            committed = n.strip_suffix(" samples").unwrap().parse().unwrap();
        }
        pull.signal("KILL");
        let (status, rest) = pull.wait();
        assert!(!status.success());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = sender.join().unwrap();
        // Lines printed after the ones read: later commits, also kept.
        for line in rest {
            if let Some(n) = line.strip_prefix("tenstore pull: committed ") {
                committed = n.strip_suffix(" samples").unwrap().parse().unwrap();
            }
        }
        let found = check_numbered(&store);
        // Every reported sample is there, whole; nothing beyond what was
        // sent; the store holds whole commits only.
        let reported: Vec<u64> = (0..committed).collect();
        assert_eq!(&found[..committed as usize], &reported[..], "{backend}");
        assert!(found.len() as u64 <= sent, "{backend}");
        let present: HashMap<u64, ()> = found.iter().map(|&m| (m, ())).collect();
        assert_eq!(present.len(), found.len());
        assert_eq!(
            found,
            (0..found.len() as u64).collect::<Vec<_>>(),
            "{backend}: the counter keys are gapless"
        );
    }
}

#[test]
fn pull_stops_on_sigterm_after_committing_what_it_received() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("pulled");
    let mut pull = Proc::tenstore(&[
        "pull",
        store.to_str().unwrap(),
        "--create",
        "--backend",
        "ten",
        "--bind",
        "tcp://127.0.0.1:*",
        "--commit-every",
        "1000",
        "--commit-ms",
        "3600000",
    ]);
    let endpoint = pull.expect("tenstore pull: receiving on ");
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(5000).unwrap();
    push.connect(&endpoint).unwrap();
    for m in 0..5 {
        send_numbered(&push, m).unwrap();
    }
    // No batch is full and the commit timer is an hour: only the stop
    // commits. A last malformed message, once reported, shows that pull
    // has taken the five before it (one sender: messages stay in order).
    push.send("garbage", 0).unwrap();
    let deadline = Instant::now() + WAIT;
    while !pull.stderr().contains("skipped message 6: malformed") {
        assert!(Instant::now() < deadline, "{}", pull.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    pull.signal("TERM");
    let rest = pull.success();
    assert_eq!(
        rest,
        [
            "tenstore pull: committed 5 samples",
            "tenstore pull: stored 5 samples from 6 messages; skipped 1 malformed and 0 refused messages"
        ]
    );
    assert_eq!(check_numbered(&store), [0, 1, 2, 3, 4]);
}

#[test]
fn pull_refuses_messages_without_a_usable_key_and_keys_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("pulled");
    let pull_args = [
        "pull",
        store.to_str().unwrap(),
        "--create",
        "--bind",
        "tcp://127.0.0.1:*",
        "--key-tensor",
        "key",
        "--max",
        "2",
    ];
    let mut pull = Proc::tenstore(&pull_args);
    let endpoint = pull.expect("tenstore pull: receiving on ");
    let ctx = zmq::Context::new();
    let connect = |endpoint: &str| {
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_linger(5000).unwrap();
        push.connect(endpoint).unwrap();
        push
    };
    let push = connect(&endpoint);
    let x = Array1::from(vec![1.5f32, 2.5]);
    let send = |push: &zmq::Socket, key: Option<&[u8]>, x: &Array1<f32>| {
        let k = Array1::from(key.unwrap_or_default().to_vec());
        let mut tensors = vec![TensorRef::from_array("x", x).unwrap()];
        if key.is_some() {
            tensors.push(TensorRef::from_array("key", &k).unwrap());
        }
        tenstore::net::zsend_multipart(push, &tensors, 0).unwrap();
    };
    send(&push, Some(b"a"), &x);
    send(&push, None, &x); // no key tensor
    send(&push, Some(b""), &x); // an empty key
    send(&push, Some(b"a"), &(&x * 2.0)); // taken by message 1
    send(&push, Some(b"b"), &x);
    let rest = pull.success();
    assert_eq!(
        rest.last().unwrap(),
        "tenstore pull: stored 2 samples from 5 messages; skipped 0 malformed and 3 refused messages"
    );
    let err = pull.stderr();
    for what in [
        "skipped message 2: refused: no tensor named \"key\"",
        "skipped message 3: refused: key : ",
        "skipped message 4: refused: key a is already taken by an earlier message (--overwrite replaces)",
    ] {
        assert!(err.contains(what), "{what:?} not in:\n{err}");
    }
    let got = samples(&store);
    let keys: Vec<&[u8]> = got.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [&b"a"[..], b"b"]);
    // The first "a" is kept, and the key tensor is not stored.
    assert_eq!(
        got[0].1,
        [(
            "float32".into(),
            vec![2],
            hex(&[0, 0, 0xc0, 0x3f, 0, 0, 0x20, 0x40])
        )]
    );

    // A second run: keys the store holds are skipped, not replaced...
    let mut pull = Proc::tenstore(&pull_args[..pull_args.len() - 2]);
    let endpoint = pull.expect("tenstore pull: receiving on ");
    let push = connect(&endpoint);
    send(&push, Some(b"b"), &(&x * 2.0));
    let deadline = Instant::now() + WAIT;
    while !pull.stderr().contains("key b is already in the store") {
        assert!(Instant::now() < deadline, "{}", pull.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    pull.signal("TERM");
    assert_eq!(
        pull.success().last().unwrap(),
        "tenstore pull: stored 0 samples from 1 messages; skipped 0 malformed and 1 refused messages"
    );
    assert_eq!(samples(&store)[1].1, got[1].1);
    // ...unless --overwrite.
    let mut args = pull_args.to_vec();
    args.extend(["--overwrite"]);
    let n = args.len();
    args[n - 2] = "1";
    let mut pull = Proc::tenstore(&args);
    let endpoint = pull.expect("tenstore pull: receiving on ");
    let push = connect(&endpoint);
    send(&push, Some(b"b"), &(&x * 2.0));
    pull.success();
    let now = samples(&store);
    assert_eq!(now[1].1[0].2, hex(&[0, 0, 0x40, 0x40, 0, 0, 0xa0, 0x40]));
}

#[test]
fn push_refuses_a_key_tensor_name_tenbin_cannot_hold_before_binding() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_store(tmp.path(), Backend::Lmdb, 2);
    let (ok, out, err) = run(&[
        "push",
        src.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--key-tensor",
        "much_too_long",
    ]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(err.contains("--key-tensor \"much_too_long\": "), "{err}");
    // A sample that already has a tensor of that name is refused too.
    let mut push = Proc::tenstore(&[
        "push",
        src.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--key-tensor",
        "img",
    ]);
    push.expect("tenstore push: pushing on ");
    let (status, _) = push.wait();
    assert_eq!(status.code(), Some(1));
    let err = push.stderr();
    assert!(
        err.contains("sample s000 already has a tensor named \"img\""),
        "{err}"
    );
}

#[test]
fn pull_refuses_a_key_format_that_makes_unstorable_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("pulled");
    let long = format!("{}{{}}", "x".repeat(511));
    let (ok, out, err) = run(&[
        "pull",
        store.to_str().unwrap(),
        "--create",
        "--bind",
        "tcp://127.0.0.1:*",
        "--key-format",
        &long,
    ]);
    assert!(!ok);
    assert_eq!(out, "", "nothing bound");
    assert!(
        err.contains("the key format makes keys such as xxx"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "pull",
        store.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--key-format",
        "no-placeholder",
    ]);
    assert!(!ok);
    assert!(err.contains("no placeholder for the counter"), "{err}");
}

#[test]
fn push_bind_into_pull_connect_copies_a_store_with_its_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_store(tmp.path(), Backend::Lmdb, 11);
    let dst = tmp.path().join("copy");
    let mut push = Proc::tenstore(&[
        "push",
        src.to_str().unwrap(),
        "--bind",
        "tcp://127.0.0.1:*",
        "--single",
        "--key-tensor",
        "key",
    ]);
    let endpoint = push.expect("tenstore push: pushing on ");
    let mut pull = Proc::tenstore(&[
        "pull",
        dst.to_str().unwrap(),
        "--create",
        "--backend",
        "ten",
        "--connect",
        &endpoint,
        "--single",
        "--key-tensor",
        "key",
        "--max",
        "11",
    ]);
    assert_eq!(
        pull.expect("tenstore pull: receiving from "),
        format!("{endpoint} (connecting)")
    );
    assert_eq!(
        pull.success().last().unwrap(),
        "tenstore pull: stored 11 samples from 11 messages; skipped 0 malformed and 0 refused messages"
    );
    assert_eq!(push.success(), ["tenstore push: sent 11 samples"]);
    assert_eq!(samples(&dst), samples(&src));
}
