//! The `tenstore` store commands (put, get, ls, rm, info, import, export,
//! demo) run as a user runs them, with numpy writing the inputs and checking
//! the outputs (`tests/py/cli_store.py`).
//!
//! The contract under test: exit 0 on success, 1 for a failed operation
//! (one line on stderr, `tenstore: error: ...`), 2 for usage errors, and a
//! failed command changes nothing in the store.

mod common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

// --- running the binary -----------------------------------------------------

fn cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenstore"));
    c.args(args);
    c
}

/// Runs `tenstore ARGS` with no stdin.
fn ts<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    cmd(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tenstore")
}

/// Runs `tenstore ARGS` with `input` on stdin.
fn ts_stdin<I, S>(args: I, input: &[u8]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tenstore");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The command may fail before reading everything: ignore EPIPE.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for tenstore");
    writer.join().unwrap();
    out
}

fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(out: Output) -> Vec<u8> {
    assert!(out.status.success(), "expected success: {}", shown(&out));
    out.stdout
}

#[track_caller]
fn ok_text(out: Output) -> String {
    String::from_utf8(ok(out)).expect("UTF-8 stdout")
}

/// Asserts a failed operation: exit 1, one line on stderr that starts with
/// `tenstore: error: ` and contains every needle. Returns that line.
#[track_caller]
fn fails(out: &Output, needles: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1: {}",
        shown(out)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "expected one line: {}", shown(out));
    assert!(err.ends_with('\n'), "{}", shown(out));
    assert!(err.starts_with("tenstore: error: "), "{}", shown(out));
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {}", shown(out));
    }
    err
}

/// Asserts a usage error: exit 2 and something on stderr.
#[track_caller]
fn usage_error(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2: {}",
        shown(out)
    );
    assert!(!out.stderr.is_empty(), "{}", shown(out));
    assert!(out.stdout.is_empty(), "{}", shown(out));
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `ls --long` of a store: what "the store's contents" means below.
#[track_caller]
fn listing(store: &Path) -> String {
    ok_text(ts(["ls", s(store), "--long"]))
}

/// The stored bytes of a sample (`get -o -`).
#[track_caller]
fn stored(store: &Path, key: &str) -> Vec<u8> {
    // `--`: keys may start with `-`.
    ok(ts(["get", "-o", "-", "--", s(store), key]))
}

fn py(args: &[&str]) -> String {
    common::run_py("cli_store.py", args)
}

/// Generates a kind of Python inputs into a fresh directory; returns it and
/// its manifest.
fn generate(kind: &str) -> (TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(kind);
    py(&["gen", kind, s(&out)]);
    let manifest = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap())
        .expect("manifest JSON");
    (dir, manifest)
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

/// A store with a few samples, for tests that need one to leave unchanged.
fn small_store(root: &Path) -> PathBuf {
    let store = root.join("store");
    let (tmp, _) = generate("bad");
    let good = tmp.path().join("bad/good.npy");
    for key in ["alpha", "beta", "gamma"] {
        ok(ts(["put", s(&store), key, s(&good), "--create"]));
    }
    // Keep the input for callers that need a good .npy.
    std::fs::copy(&good, root.join("good.npy")).unwrap();
    store
}

/// export's file name for a key: bytes other than ASCII letters, digits,
/// `-`, `_` and a non-leading `.` as `%XX`; `%` for the empty key.
fn escaped(key: &str) -> String {
    let mut out = String::new();
    for (i, &b) in key.as_bytes().iter().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

/// Every path under `dir`, relative, with its kind ("file", "dir", "link").
fn walk(dir: &Path) -> BTreeSet<(String, &'static str)> {
    fn go(base: &Path, dir: &Path, out: &mut BTreeSet<(String, &'static str)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_symlink() {
                out.insert((rel, "link"));
            } else if kind.is_dir() {
                out.insert((rel, "dir"));
                go(base, &path, out);
            } else {
                out.insert((rel, "file"));
            }
        }
    }
    let mut out = BTreeSet::new();
    go(dir, dir, &mut out);
    out
}

// --- round trips -------------------------------------------------------------

/// Checks `get --json` of a sample against the manifest's description, key
/// order included.
#[track_caller]
fn check_json(store: &Path, sample: &Value) {
    let key = sample["key"].as_str().unwrap();
    let raw = ok_text(ts(["get", s(store), key, "--json"]));
    assert_eq!(raw.lines().count(), 1, "{raw}");
    assert!(
        raw.starts_with(&format!("{{\"key\":{},\"tensors\":[", Value::from(key))),
        "key order: {raw}"
    );
    for object in raw.split("{\"name\":").skip(1) {
        let at = |k: &str| object.find(k).unwrap_or_else(|| panic!("{k} in {raw}"));
        assert!(at("\"dtype\":") < at("\"shape\":"), "key order: {raw}");
        assert!(at("\"shape\":") < at("\"nbytes\":"), "key order: {raw}");
        assert!(at("\"nbytes\":") < at("\"sha256\":"), "key order: {raw}");
    }
    let got: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(got.as_object().unwrap().len(), 2, "{raw}");
    assert_eq!(got["key"], key);
    let tensors = got["tensors"].as_array().unwrap();
    let want = sample["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), want.len(), "{key}: {raw}");
    for (t, w) in tensors.iter().zip(want) {
        assert_eq!(t.as_object().unwrap().len(), 5, "{raw}");
        for k in ["name", "dtype", "shape", "nbytes", "sha256"] {
            assert_eq!(t[k], w[k], "{key}: {k} of {}", w["name"]);
        }
    }
}

/// put every input of each manifest sample, then: `get --npy` loads equal in
/// numpy, `get --json` describes it, `get -o FILE` and `get -o -` are the
/// expected tenbin bytes.
fn round_trip(manifest: &Value, root: &Path, backend: &str) {
    let store = root.join(format!("store-{backend}"));
    let npy_root = root.join(format!("npy-{backend}"));
    for sample in manifest["samples"].as_array().unwrap() {
        let key = sample["key"].as_str().unwrap();
        let mut args: Vec<OsString> = vec!["put".into(), store.clone().into(), key.into()];
        args.extend(strs(&sample["inputs"]).into_iter().map(OsString::from));
        args.extend(["--create", "--backend", backend].map(OsString::from));
        let out = ok(ts(&args));
        assert!(out.is_empty(), "put prints nothing");

        let dir = npy_root.join(key);
        let out = ok(ts(["get", s(&store), key, "--npy", s(&dir)]));
        assert!(out.is_empty(), "get --npy prints nothing");

        check_json(&store, sample);

        let expected = std::fs::read(sample["ten"].as_str().unwrap()).unwrap();
        let file = root.join(format!("{key}-{backend}.ten"));
        let out = ok(ts(["get", s(&store), key, "-o", s(&file)]));
        assert!(out.is_empty(), "get -o FILE prints nothing");
        assert!(
            std::fs::read(&file).unwrap() == expected,
            "{key}: get -o differs from the reference encoding"
        );
        assert!(
            stored(&store, key) == expected,
            "{key}: get -o - differs from the reference encoding"
        );
    }
    let checked = py(&[
        "check-npy",
        manifest["path"].as_str().unwrap(),
        s(&npy_root),
    ]);
    let want: usize = manifest["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["tensors"].as_array().unwrap().len())
        .sum();
    assert_eq!(checked.trim(), format!("ok {want} arrays"));
}

fn with_path(mut manifest: Value, dir: &Path, kind: &str) -> Value {
    manifest["path"] = Value::from(s(&dir.join(kind).join("manifest.json")).to_owned());
    manifest
}

#[test]
fn every_numpy_dtype_round_trips_through_put_and_get() {
    let (tmp, manifest) = generate("dtypes");
    let manifest = with_path(manifest, tmp.path(), "dtypes");
    let samples = manifest["samples"].as_array().unwrap();
    let codes: Vec<&str> = samples
        .iter()
        .map(|x| x["key"].as_str().unwrap().trim_start_matches("dt-"))
        .collect();
    assert_eq!(
        codes,
        ["f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "c8", "c16"]
    );
    round_trip(&manifest, tmp.path(), "lmdb");

    // A .ten given as the only input comes back byte for byte.
    let store = tmp.path().join("store-lmdb");
    for sample in samples {
        let ten = sample["single_ten"].as_str().unwrap();
        let key = format!("ten-{}", sample["key"].as_str().unwrap());
        ok(ts(["put", s(&store), &key, ten]));
        let file = tmp.path().join("single.ten");
        ok(ts(["get", s(&store), &key, "-o", s(&file)]));
        assert!(
            std::fs::read(&file).unwrap() == std::fs::read(ten).unwrap(),
            "{key}: get -o differs from the .ten put"
        );
    }
    assert_eq!(
        ok_text(ts(["ls", s(&store)])).lines().count(),
        2 * samples.len()
    );
}

#[test]
fn big_endian_fortran_and_v2_v3_npy_are_converted() {
    let (tmp, manifest) = generate("odd");
    let manifest = with_path(manifest, tmp.path(), "odd");
    round_trip(&manifest, tmp.path(), "lmdb");
}

/// The same round trips through a shard store (`--backend ten`), whose
/// `get -o` must also give back the bytes `put` was given; and its failed
/// commands change nothing either.
#[test]
fn the_shard_backend_round_trips_and_fails_cleanly_too() {
    let (tmp, manifest) = generate("dtypes");
    let manifest = with_path(manifest, tmp.path(), "dtypes");
    round_trip(&manifest, tmp.path(), "ten");
    let (odd_tmp, odd) = generate("odd");
    let odd = with_path(odd, odd_tmp.path(), "odd");
    round_trip(&odd, odd_tmp.path(), "ten");

    let store = tmp.path().join("store-ten");
    let json: Value = serde_json::from_slice(&ok(ts(["info", s(&store), "--json"]))).unwrap();
    assert_eq!(json["backend"], "ten");
    assert_eq!(json["samples"], 14);
    let (bad_tmp, _) = generate("bad");
    let bad = bad_tmp.path().join("bad");
    let before = listing(&store);
    let bytes = stored(&store, "dt-f4");
    for args in [
        vec!["put", s(&store), "dt-f4", s(&bad.join("u3.npy"))],
        vec!["put", s(&store), "new", s(&bad.join("truncdat.npy"))],
        vec!["put", s(&store), "new", s(&bad.join("toolongname.npy"))],
        vec!["rm", s(&store), "dt-f4", "nope"],
        vec!["get", s(&store), "nope"],
        vec![
            "import",
            s(&store),
            s(&bad.join("good.npy")),
            s(&bad.join("magic.npy")),
        ],
    ] {
        fails(&ts(&args), &[]);
        assert_eq!(listing(&store), before, "after {args:?}");
        assert!(stored(&store, "dt-f4") == bytes, "after {args:?}");
    }
}

#[test]
fn put_replaces_a_sample_and_reads_stdin() {
    let (tmp, _) = generate("bad");
    let dir = tmp.path().join("bad");
    let store = tmp.path().join("store");
    let buffer = std::fs::read(dir.join("stdin.ten")).unwrap();

    // `-` alone: the stored buffer is the one given.
    ok(ts_stdin(["put", s(&store), "k", "-", "--create"], &buffer));
    assert!(stored(&store, "k") == buffer, "put - stored other bytes");
    let json: Value = serde_json::from_slice(&ok(ts(["get", s(&store), "k", "--json"]))).unwrap();
    let names: Vec<&str> = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["feat", "cls"]);
    assert_eq!(json["tensors"][0]["shape"], serde_json::json!([3, 4]));
    assert_eq!(json["tensors"][1]["shape"], serde_json::json!([]));

    // Beside other inputs, in order; the sample under k is replaced.
    ok(ts_stdin(
        ["put", s(&store), "k", s(&dir.join("good.npy")), "-"],
        &buffer,
    ));
    let json: Value = serde_json::from_slice(&ok(ts(["get", s(&store), "k", "--json"]))).unwrap();
    let names: Vec<&str> = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["good", "feat", "cls"]);
    assert_eq!(ok_text(ts(["ls", s(&store)])), "k\n");

    // A bad buffer on stdin changes nothing.
    let before = listing(&store);
    let out = ts_stdin(["put", s(&store), "k", "-"], &buffer[..buffer.len() - 8]);
    fails(&out, &["stdin"]);
    let out = ts_stdin(["put", s(&store), "other", "-"], b"not tenbin at all");
    fails(&out, &["stdin"]);
    assert_eq!(listing(&store), before);
}

// --- refused and damaged input -------------------------------------------------

#[test]
fn refused_dtypes_fail_clearly_and_change_nothing() {
    let (tmp, manifest) = generate("bad");
    let dir = tmp.path().join("bad");
    let store = tmp.path().join("store");
    let good = dir.join("good.npy");
    ok(ts(["put", s(&store), "existing", s(&good), "--create"]));
    let before = listing(&store);
    let bytes = stored(&store, "existing");
    let refused = manifest["refused"].as_object().unwrap();
    assert_eq!(refused.len(), 5);
    for (name, descr) in refused {
        let bad = dir.join(format!("{name}.npy"));
        for key in ["existing", "new"] {
            let out = ts(["put", s(&store), key, s(&good), s(&bad)]);
            fails(
                &out,
                &[
                    s(&bad),
                    descr.as_str().unwrap(),
                    "cannot be stored",
                    "only numeric dtypes",
                ],
            );
            assert!(out.stdout.is_empty());
        }
        assert_eq!(listing(&store), before, "after {name}");
        assert!(stored(&store, "existing") == bytes, "after {name}");
    }
}

#[test]
fn damaged_input_fails_with_one_line_and_changes_nothing() {
    let (tmp, manifest) = generate("bad");
    let dir = tmp.path().join("bad");
    let store = tmp.path().join("store");
    let good = dir.join("good.npy");
    ok(ts(["put", s(&store), "existing", s(&good), "--create"]));
    let before = listing(&store);
    let bytes = stored(&store, "existing");
    let p = |n: &str| dir.join(n).display().to_string();
    let missing = p("no-such.npy");
    let damaged: Vec<String> = strs(&manifest["damaged"])
        .iter()
        .map(|n| p(&format!("{n}.npy")))
        .collect();
    assert_eq!(damaged.len(), 6);

    let mut cases: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let st = s(&store).to_owned();
    for bad in &damaged {
        for key in ["existing", "new"] {
            cases.push((
                vec![
                    "put".into(),
                    st.clone(),
                    key.into(),
                    p("good.npy"),
                    bad.clone(),
                ],
                vec![bad.clone()],
            ));
        }
    }
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    cases.extend([
        // Truncated data and wrong magic say what is wrong.
        (
            v(&["put", &st, "new", &p("truncdat.npy")]),
            v(&["truncdat.npy", "header says"]),
        ),
        (
            v(&["put", &st, "new", &p("magic.npy")]),
            v(&["magic.npy", "magic"]),
        ),
        // A name too long for tenbin: the message suggests NAME=PATH.
        (
            v(&["put", &st, "existing", &p("toolongname.npy")]),
            v(&["toolongname", "8", "NAME="]),
        ),
        (
            v(&["put", &st, "new", &format!("ninechars={}", p("good.npy"))]),
            v(&["ninechars", "NAME="]),
        ),
        (v(&["put", &st, "new", &missing]), v(&[missing.as_str()])),
        (
            v(&["put", &st, "new", &p("manifest.json")]),
            v(&["manifest.json", "NAME=PATH.npy"]),
        ),
        (
            v(&["put", &st, "new", &format!("n={}", p("names.ten"))]),
            v(&["names.ten"]),
        ),
        (v(&["put", &st, "", &p("good.npy")]), v(&["key"])),
        (
            v(&["put", &st, &"k".repeat(512), &p("good.npy")]),
            v(&["key", "511"]),
        ),
        // Unknown keys.
        (v(&["get", &st, "nope"]), v(&["\"nope\""])),
        (v(&["get", &st, "nope", "--json"]), v(&["\"nope\""])),
        (v(&["get", &st, "nope", "-o", "-"]), v(&["\"nope\""])),
        (v(&["rm", &st, "nope"]), v(&["\"nope\"", "nothing"])),
        // An output that cannot be written names its path.
        (
            v(&["get", &st, "existing", "-o", &p("no-dir/x.ten")]),
            v(&["no-dir/x.ten"]),
        ),
        (v(&["info", &p("truncdat.npy")]), v(&["truncdat.npy"])),
    ]);
    for (args, needles) in &cases {
        let out = ts(args);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        fails(&out, &needles);
        assert!(out.stdout.is_empty(), "{args:?}: {}", shown(&out));
        assert_eq!(listing(&store), before, "after {args:?}");
        assert!(stored(&store, "existing") == bytes, "after {args:?}");
    }
    assert!(!dir.join("no-dir").exists());
}

#[test]
fn a_missing_store_is_an_error_and_is_not_created() {
    let tmp = tempfile::tempdir().unwrap();
    let good = {
        let store = small_store(tmp.path());
        assert!(store.is_dir());
        tmp.path().join("good.npy")
    };
    let missing = tmp.path().join("no-store");
    let m = s(&missing);
    let out_dir = tmp.path().join("exported");
    let commands: Vec<Vec<&str>> = vec![
        vec!["get", m, "k"],
        vec!["get", m, "k", "--json"],
        vec!["ls", m],
        vec!["ls", m, "--long"],
        vec!["rm", m, "k"],
        vec!["info", m],
        vec!["info", m, "--json"],
        vec!["export", m, s(&out_dir)],
        vec!["put", m, "k", s(&good)],
        vec!["import", m, s(&good)],
    ];
    for args in &commands {
        let out = ts(args);
        fails(&out, &[m]);
        assert!(!missing.exists(), "{args:?} made {m}");
        assert!(!out_dir.exists(), "{args:?} made the export directory");
    }
    // A directory that is not a store is not made into one.
    let empty = tmp.path().join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    for args in [vec!["ls", s(&empty)], vec!["put", s(&empty), "k", s(&good)]] {
        fails(&ts(&args), &[s(&empty)]);
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{args:?}");
    }
    // --create with bad input makes nothing either.
    let bad = tmp.path().join("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY").unwrap();
    for args in [
        vec!["put", m, "k", s(&good), s(&bad), "--create"],
        vec!["import", m, s(&good), s(&bad), "--create"],
    ] {
        fails(&ts(&args), &[s(&bad)]);
        assert!(!missing.exists(), "{args:?} made {m}");
    }
}

#[test]
fn a_corrupt_stored_value_is_reported_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    py(&["corrupt", s(&store), "beta"]);
    let good = stored(&store, "beta");
    let out_file = tmp.path().join("out.ten");
    let npy_dir = tmp.path().join("npy");
    for key in ["bad", "trunc"] {
        let quoted = format!("\"{key}\"");
        for extra in [
            vec![],
            vec!["--json"],
            vec!["-o", "-"],
            vec!["-o", s(&out_file)],
            vec!["--npy", s(&npy_dir)],
        ] {
            let mut args = vec!["get", s(&store), key];
            args.extend(&extra);
            let out = ts(&args);
            fails(&out, &[&quoted]);
            assert!(out.stdout.is_empty(), "{args:?}: {}", shown(&out));
            assert!(!out_file.exists(), "{args:?} wrote a file");
            assert!(!npy_dir.exists(), "{args:?} made a directory");
        }
    }
    // The other samples still read, and `ls` still lists every key.
    assert!(stored(&store, "beta") == good);
    assert_eq!(
        ok_text(ts(["ls", s(&store)])),
        "alpha\nbad\nbeta\ngamma\ntrunc\n"
    );
    fails(&ts(["ls", s(&store), "--long"]), &["\"bad\""]);

    // Commands that read every sample fail naming the first damaged one.
    fails(
        &ts(["export", s(&store), s(&tmp.path().join("export"))]),
        &["\"bad\""],
    );
    let other = tmp.path().join("other");
    ok(ts([
        "put",
        s(&other),
        "kept",
        s(&tmp.path().join("good.npy")),
        "--create",
    ]));
    let before = listing(&other);
    let out = ts(["import", s(&other), s(&store)]);
    fails(&out, &[s(&store), "\"bad\""]);
    assert_eq!(listing(&other), before, "a failed import changed the store");
    let out = ts(["verify", s(&store)]);
    fails(&out, &["2 problems"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("\"bad\"") && report.contains("\"trunc\""),
        "{report}"
    );
}

// --- ls, rm, info ----------------------------------------------------------------

#[test]
fn ls_lists_in_key_order_with_prefix_and_long() {
    let (tmp, _) = generate("bad");
    let dir = tmp.path().join("bad");
    let store = tmp.path().join("store");
    let good = dir.join("good.npy");
    let stdin_ten = dir.join("stdin.ten");
    // Put in an order that is not key order; one sample of 3 tensors.
    let keys = ["b/2", "a", "b/10", "ab", "B", "b/1", "é", "c"];
    for k in keys {
        ok(ts(["put", s(&store), k, s(&good), "--create"]));
    }
    ok(ts(["put", s(&store), "ab", s(&good), s(&stdin_ten)]));
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    let text = ok_text(ts(["ls", s(&store)]));
    assert_eq!(text.lines().collect::<Vec<_>>(), sorted);
    assert_eq!(ok_text(ts(["ls", s(&store), "b/"])), "b/1\nb/10\nb/2\n");
    assert_eq!(ok_text(ts(["ls", s(&store), "a"])), "a\nab\n");
    assert_eq!(ok_text(ts(["ls", s(&store), "zzz"])), "");

    let long = ok_text(ts(["ls", s(&store), "--long"]));
    let rows: Vec<Vec<&str>> = long.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), keys.len(), "{long}");
    for (row, key) in rows.iter().zip(&sorted) {
        assert_eq!(row.len(), 3, "{long}");
        assert_eq!(row[0], *key);
        let count = if *key == "ab" { "3" } else { "1" };
        assert_eq!(row[1], count, "{long}");
        assert_eq!(
            row[2],
            stored(&store, key).len().to_string(),
            "{key}: bytes"
        );
    }
    assert_eq!(ok_text(ts(["ls", s(&store), "b/1", "-l"])), {
        let n = stored(&store, "b/1").len();
        format!("b/1\t1\t{n}\nb/10\t1\t{n}\n")
    });
}

/// (Failed with `listing samples: MDB_BAD_VALSIZE` at 20a5276.)
#[test]
fn ls_with_an_empty_prefix_lists_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    let out = ts(["ls", s(&store), ""]);
    assert_eq!(ok_text(out), "alpha\nbeta\ngamma\n");
}

#[test]
fn rm_removes_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    let good = tmp.path().join("good.npy");
    ok(ts(["put", s(&store), "delta", s(&good)]));
    assert!(ok(ts(["rm", s(&store), "alpha", "gamma"])).is_empty());
    assert_eq!(ok_text(ts(["ls", s(&store)])), "beta\ndelta\n");

    let before = listing(&store);
    for args in [
        vec!["rm", s(&store), "beta", "nope"],
        vec!["rm", s(&store), "nope", "beta"],
        vec!["rm", s(&store), "beta", "alpha", "delta"],
        vec!["rm", s(&store), "beta", ""],
    ] {
        let out = ts(&args);
        fails(&out, &["nothing was removed"]);
        assert_eq!(listing(&store), before, "after {args:?}");
    }
    fails(&ts(["rm", s(&store), "beta", "nope"]), &["\"nope\""]);
    ok(ts(["rm", s(&store), "beta", "delta"]));
    assert_eq!(ok_text(ts(["ls", s(&store)])), "");
    fails(&ts(["get", s(&store), "beta"]), &["\"beta\""]);
}

#[test]
fn rm_accepts_a_key_given_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    let out = ts(["rm", s(&store), "alpha", "alpha"]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(ok_text(ts(["ls", s(&store)])), "beta\ngamma\n");
}

#[test]
fn info_counts_a_store_and_still_reads_ten_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    let json: Value = serde_json::from_slice(&ok(ts(["info", s(&store), "--json"]))).unwrap();
    assert_eq!(json["path"], s(&store));
    assert_eq!(json["backend"], "lmdb");
    assert_eq!(json["samples"], 3);
    for k in ["bytes", "map_size"] {
        assert!(json[k].as_u64().unwrap() > 0, "{k}: {json}");
    }
    assert!(json["shards"].is_u64(), "{json}");
    // The documented keys, in order, and no others.
    let raw = ok_text(ts(["info", s(&store), "--json"]));
    let order = ["path", "backend", "samples", "bytes", "map_size", "shards"];
    assert_eq!(json.as_object().unwrap().len(), order.len(), "{raw}");
    let at: Vec<usize> = order
        .iter()
        .map(|k| raw.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "key order: {raw}");

    let text = ok_text(ts(["info", s(&store)]));
    assert!(
        text.starts_with(&format!("{}: lmdb store\n", s(&store))),
        "{text}"
    );
    assert!(text.contains("\nmap size  "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["samples", "3"]),
        "{text}"
    );
    ok(ts(["rm", s(&store), "alpha"]));
    let json: Value = serde_json::from_slice(&ok(ts(["info", s(&store), "--json"]))).unwrap();
    assert_eq!(json["samples"], 2);

    // A .ten file: what `get -o` wrote.
    let file = tmp.path().join("beta.ten");
    ok(ts(["get", s(&store), "beta", "-o", s(&file)]));
    let file_json: Value = serde_json::from_slice(&ok(ts(["info", s(&file), "--json"]))).unwrap();
    let get_json: Value =
        serde_json::from_slice(&ok(ts(["get", s(&store), "beta", "--json"]))).unwrap();
    assert_eq!(file_json["path"], s(&file));
    assert_eq!(file_json["tensors"], get_json["tensors"]);
    assert_eq!(file_json["tensors"][0]["name"], "good");
    assert_eq!(file_json["tensors"][0]["dtype"], "i4");
    assert_eq!(file_json["tensors"][0]["shape"], serde_json::json!([2, 3]));
    let text = ok_text(ts(["info", s(&file)]));
    assert!(text.contains("1 tensors, 24 data bytes"), "{text}");
}

// --- import and export -------------------------------------------------------------

#[test]
fn import_reads_directories_and_shards_and_export_writes_them_back() {
    let (tmp, manifest) = generate("import");
    let dir = tmp.path().join("import");
    let store = tmp.path().join("store");
    let out = ok_text(ts([
        "import",
        s(&store),
        s(&dir.join("dir")),
        s(&dir.join("shard-000.tar")),
        s(&dir.join("shard-001.tar.gz")),
        "--create",
    ]));
    let samples = manifest["samples"].as_array().unwrap();
    let tensors: usize = samples
        .iter()
        .map(|x| x["tensors"].as_array().unwrap().len())
        .sum();
    assert_eq!(samples.len(), 13);
    assert_eq!(manifest["skipped"], 10);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "imported {} samples ({tensors} tensors,",
            samples.len()
        )),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("; skipped 10 members that are neither .npy nor .ten"),
        "{out}"
    );

    let keys: Vec<&str> = samples.iter().map(|x| x["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"s1") && keys.contains(&"train/k000") && keys.contains(&"k008"));
    let listed = ok_text(ts(["ls", s(&store)]));
    assert_eq!(listed.lines().collect::<Vec<_>>(), keys);
    for sample in samples {
        check_json(&store, sample);
    }

    let export = tmp.path().join("export");
    let out = ok_text(ts(["export", s(&store), s(&export)]));
    assert!(out.starts_with("exported 13 samples"), "{out}");
    assert_eq!(
        py(&["check-export", s(&dir.join("manifest.json")), s(&export)]).trim(),
        "ok 13 samples"
    );
    for key in keys {
        let file = export.join(format!("{}.ten", escaped(key)));
        assert!(
            std::fs::read(&file).unwrap() == stored(&store, key),
            "{key}: export differs from get -o"
        );
    }

    // Importing again replaces, it does not duplicate.
    ok(ts(["import", s(&store), s(&dir.join("shard-000.tar"))]));
    assert_eq!(ok_text(ts(["ls", s(&store)])), listed);
}

#[test]
fn bad_import_input_anywhere_in_the_list_changes_nothing() {
    let (tmp, _) = generate("import");
    let dir = tmp.path().join("import");
    let store = tmp.path().join("store");
    ok(ts(["import", s(&store), s(&dir.join("dir")), "--create"]));
    let before = listing(&store);
    let shard0 = dir.join("shard-000.tar");
    let shard1 = dir.join("shard-001.tar.gz");
    let fresh = tmp.path().join("fresh");
    let bad_inputs = [
        ("badmember.tar", "b001.image.npy"),
        ("truncated.tar", "truncated.tar"),
        ("notgz.tar.gz", "notgz.tar.gz"),
        ("b9.toolongname.npy", "NAME="),
        ("b8.ten", "b8.ten"),
        ("no-such.tar", "no-such.tar"),
    ];
    for (bad, needle) in bad_inputs {
        let bad = dir.join("bad").join(bad);
        for (target, create) in [(&store, false), (&fresh, true)] {
            let mut args = vec!["import", s(target), s(&shard0), s(&bad), s(&shard1)];
            if create {
                args.push("--create");
            }
            let out = ts(&args);
            fails(&out, &[needle]);
            assert!(out.stdout.is_empty(), "{}", shown(&out));
            assert_eq!(listing(&store), before, "after {args:?}");
            assert!(!fresh.exists(), "{args:?} made a store");
        }
    }
}

#[test]
fn export_never_writes_outside_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    let good = tmp.path().join("good.npy");
    let keys = [
        "a/b",
        "../escape",
        "../../escape2",
        "/abs",
        "..",
        ".",
        ".hidden",
        "with space",
        "é/ü",
        "sub/dir/deep",
        "a%2Fb",
        "-dash",
        "x.",
    ];
    for k in keys {
        ok(ts(["put", "--", s(&store), k, s(&good)]));
    }
    let all: Vec<String> = ok_text(ts(["ls", s(&store)]))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(all.len(), keys.len() + 3);

    // DIR two levels down, so `..` and `../..` would land in directories
    // this test watches.
    let root = tmp.path().join("root");
    let export = root.join("level").join("out");
    let before_tmp = walk(tmp.path());
    let out = ok_text(ts(["export", s(&store), s(&export)]));
    assert!(
        out.starts_with(&format!("exported {} samples", all.len())),
        "{out}"
    );

    let want: BTreeSet<(String, &str)> = all
        .iter()
        .map(|k| (format!("{}.ten", escaped(k)), "file"))
        .collect();
    assert_eq!(want.len(), all.len(), "escaped names collide");
    assert_eq!(walk(&export), want, "export wrote other entries");
    for (name, _) in &want {
        assert!(!name.starts_with('.') && !name.contains('/'), "{name}");
    }
    let mut after_tmp = walk(tmp.path());
    for (name, _) in walk(&export) {
        after_tmp.remove(&(format!("root/level/out/{name}"), "file"));
    }
    for d in ["root", "root/level", "root/level/out"] {
        assert!(after_tmp.remove(&(d.to_owned(), "dir")), "{d}");
    }
    assert_eq!(after_tmp, before_tmp, "export wrote outside its directory");
    for k in &all {
        assert!(
            std::fs::read(export.join(format!("{}.ten", escaped(k)))).unwrap() == stored(&store, k),
            "{k}: export differs from get -o"
        );
    }
    // An export over an existing export writes the same files.
    ok(ts(["export", s(&store), s(&export)]));
    assert_eq!(walk(&export), want);
}

#[test]
fn get_npy_keeps_tensor_names_inside_its_directory() {
    let (tmp, manifest) = generate("bad");
    let dir = tmp.path().join("bad");
    let store = tmp.path().join("store");
    ok(ts([
        "put",
        s(&store),
        "k",
        s(&dir.join("names.ten")),
        "--create",
    ]));
    let names = strs(&manifest["path_names"]);
    let json: Value = serde_json::from_slice(&ok(ts(["get", s(&store), "k", "--json"]))).unwrap();
    let stored_names: Vec<&str> = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(stored_names, names);

    let root = tmp.path().join("root");
    let out = root.join("level").join("npy");
    ok(ts(["get", s(&store), "k", "--npy", s(&out)]));
    let want: BTreeSet<(String, &str)> = names
        .iter()
        .map(|n| (format!("{}.npy", escaped(n)), "file"))
        .collect();
    assert_eq!(want.len(), names.len());
    assert_eq!(walk(&out), want);
    let mut outside = walk(&root);
    outside.retain(|(p, _)| !p.starts_with("level/npy/"));
    let dirs: BTreeSet<(String, &str)> =
        [("level".to_owned(), "dir"), ("level/npy".to_owned(), "dir")]
            .into_iter()
            .collect();
    assert_eq!(outside, dirs, "get --npy wrote outside its directory");
}

#[test]
fn get_npy_keeps_every_tensor_when_names_repeat() {
    let (tmp, _) = generate("bad");
    let dir = tmp.path().join("bad");
    let store = tmp.path().join("store");
    ok(ts([
        "put",
        s(&store),
        "k",
        s(&dir.join("dup.ten")),
        "--create",
    ]));
    let out_dir = tmp.path().join("npy");
    let out = ts(["get", s(&store), "k", "--npy", s(&out_dir)]);
    // Both tensors are written: the repeated name gets its index.
    assert!(out.status.success(), "{}", shown(&out));
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["same.npy", "same_1.npy"]);
}

// --- usage errors and the demo -----------------------------------------------------------

#[test]
fn usage_errors_exit_2_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    let good = tmp.path().join("good.npy");
    let before = listing(&store);
    let st = s(&store);
    let g = s(&good);
    for args in [
        vec![],
        vec!["put"],
        vec!["put", st],
        vec!["put", st, "alpha"],
        vec!["put", st, "alpha", g, "--bogus"],
        vec!["put", st, "alpha", g, "--backend", "ten"],
        vec!["put", st, "alpha", g, "--create", "--backend", "nosuch"],
        vec!["get", st],
        vec!["get", st, "alpha", "--bogus"],
        vec!["get", st, "alpha", "-o"],
        vec!["ls"],
        vec!["ls", st, "a", "b"],
        vec!["ls", st, "--bogus"],
        vec!["rm", st],
        vec!["rm", st, "alpha", "--bogus"],
        vec!["info"],
        vec!["info", st, "--bogus"],
        vec!["import", st],
        vec!["import", st, g, "--batch", "many"],
        vec!["export", st],
        vec!["export", st, "dir", "--bogus"],
        vec!["demo", "--samples", "many"],
        vec!["demo", "--bogus"],
        vec!["frobnicate", st],
    ] {
        let mut full = vec!["tenstore"];
        full.extend(&args);
        usage_error(&ts(&args));
        assert_eq!(listing(&store), before, "after {full:?}");
    }
    assert!(!Path::new("dir").exists());
}

#[test]
fn the_readme_demo_runs_without_a_store_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cmd(["demo", "--samples", "200", "--reads", "1000"])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = ok_text(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("wrote 200 samples (2.5 MB) to the store at "),
        "{text}"
    );
    assert!(
        lines[0].contains(s(tmp.path())),
        "the store is temporary: {text}"
    );
    assert!(
        lines[1].starts_with("read 1000 random samples with zero-copy views"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "checked every value of 1000 of the samples read: all match"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "the temporary store was left behind"
    );
}

// --- damaged shard sidecars -------------------------------------------------

/// A shard store of ten samples `s0`..`s9` made through the library; the
/// path of its sidecar.
fn damaged_store_of_ten(dir: &Path) -> PathBuf {
    let store = tenstore::store::ShardStore::open(
        dir,
        &tenstore::store::ShardOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..10u8 {
        let x = ndarray::Array1::from_elem(100, i).into_dyn();
        let t = tenstore::Tensor::new("x", x).unwrap();
        store.put(format!("s{i}").as_bytes(), &[t]).unwrap();
    }
    drop(store);
    dir.join("000001.idx")
}

#[test]
fn readers_of_a_damaged_sidecar_say_so_and_exit_1() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("st");
    let idx = damaged_store_of_ten(&dir);
    let mut ib = std::fs::read(&idx).unwrap();
    // A zeroed byte in sidecar record 4 (records are 32 + 8 bytes).
    ib[16 + 4 * 40 + 1] = 0;
    std::fs::write(&idx, &ib).unwrap();
    let st = dir.to_str().unwrap();

    let out = ts(["ls", st]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("6 whole records"), "{}", shown(&out));
    assert!(err.contains("tenstore reindex"), "{}", shown(&out));

    let out = ts(["get", st, "s7"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damage"), "{}", shown(&out));

    for args in [vec!["info", st], vec!["verify", st]] {
        let out = ts(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", shown(&out));
    }

    // The writer refuses (nothing changed), reindex repairs, put appends.
    let before = std::fs::read(dir.join("000001.ten")).unwrap();
    let out = ts(["put", st, "s10", "-"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenstore reindex"),
        "{}",
        shown(&out)
    );
    assert_eq!(std::fs::read(dir.join("000001.ten")).unwrap(), before);
    let text = String::from_utf8(ok(ts(["reindex", st]))).unwrap();
    assert!(text.contains("10 records"), "{text}");
    let x = tenstore::Tensor::new("x", ndarray::Array1::from_elem(3, 10u8).into_dyn()).unwrap();
    ok(ts_stdin(
        ["put", st, "s10", "-"],
        &tenstore::encode_buffer(&[x]).unwrap(),
    ));
    let listed = String::from_utf8(ok(ts(["ls", st]))).unwrap();
    assert_eq!(listed.lines().count(), 11, "{listed}");
    ok(ts(["get", st, "s7"]));
    ok(ts(["verify", st]));
}

#[test]
fn verify_fails_on_an_emptied_sidecar() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("st");
    let idx = damaged_store_of_ten(&dir);
    std::fs::write(&idx, b"").unwrap();
    let out = ts(["verify", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10 whole records"),
        "{}",
        shown(&out)
    );
}
