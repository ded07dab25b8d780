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
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

use common::cli::{cmd, fails, ok, ok_text, shown, ts, ts_stdin, usage_error};

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

/// A temporary directory holding [`small_store`], and the store's path
/// (the directory also holds `good.npy`).
fn small_store_tmp() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let store = small_store(tmp.path());
    (tmp, store)
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
    assert_eq!(got.as_object().unwrap().len(), 3, "{raw}");
    assert_eq!(got["key"], key);
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got["key_hex"], hex.as_str(), "{raw}");
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

/// The "bad" inputs beside a store holding their `good.npy` as
/// "existing", for tests that refused input changes nothing: the
/// temporary directory, the inputs' manifest, their directory, the store,
/// and the store's listing and the stored bytes of "existing" before the
/// test.
fn existing() -> (TempDir, Value, PathBuf, PathBuf, String, Vec<u8>) {
    let (tmp, manifest) = generate("bad");
    let dir = tmp.path().join("bad");
    let store = tmp.path().join("store");
    let good = dir.join("good.npy");
    ok(ts(["put", s(&store), "existing", s(&good), "--create"]));
    let before = listing(&store);
    let bytes = stored(&store, "existing");
    (tmp, manifest, dir, store, before, bytes)
}

#[test]
fn refused_dtypes_fail_clearly_and_change_nothing() {
    let (_tmp, manifest, dir, store, before, bytes) = existing();
    let good = dir.join("good.npy");
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
    let (_tmp, manifest, dir, store, before, bytes) = existing();
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
    let (tmp, store) = small_store_tmp();
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
    let (_tmp, store) = small_store_tmp();
    let out = ts(["ls", s(&store), ""]);
    assert_eq!(ok_text(out), "alpha\nbeta\ngamma\n");
}

#[test]
fn rm_removes_all_or_nothing() {
    let (tmp, store) = small_store_tmp();
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
    let (_tmp, store) = small_store_tmp();
    let out = ts(["rm", s(&store), "alpha", "alpha"]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(ok_text(ts(["ls", s(&store)])), "beta\ngamma\n");
}

#[test]
fn info_counts_a_store_and_still_reads_ten_files() {
    let (tmp, store) = small_store_tmp();
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
    let (tmp, store) = small_store_tmp();
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
    // An export over an existing export is refused, and with --force
    // writes the same files.
    fails(&ts(["export", s(&store), s(&export)]), &["not empty"]);
    ok(ts(["export", s(&store), s(&export), "--force"]));
    assert_eq!(walk(&export), want);
}

/// The "bad" inputs (and their manifest) beside a store holding the
/// input `name` as key "k"; the store's path.
fn stored_as_k(name: &str) -> (TempDir, Value, PathBuf) {
    let (tmp, manifest) = generate("bad");
    let input = tmp.path().join("bad").join(name);
    let store = tmp.path().join("store");
    ok(ts(["put", s(&store), "k", s(&input), "--create"]));
    (tmp, manifest, store)
}

#[test]
fn get_npy_keeps_tensor_names_inside_its_directory() {
    let (tmp, manifest, store) = stored_as_k("names.ten");
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
    let (tmp, _, store) = stored_as_k("dup.ten");
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
    let (tmp, store) = small_store_tmp();
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

// --- damaged and foreign LMDB environments -----------------------------------

/// An LMDB store made through the library: `n` samples `k0`.. of 10 KB.
fn lmdb_store(dir: &Path, n: usize) -> Vec<u8> {
    let store = common::store::create_lmdb(dir);
    let arr = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[10_000]), 7u8);
    let tensors = [tenstore::TensorRef::from_array("x", &arr).unwrap()];
    for i in 0..n {
        store.put(format!("k{i}").as_bytes(), &tensors).unwrap();
    }
    store.flush().unwrap();
    tenstore::encode_buffer(&tensors).unwrap()
}

/// Every command that opens the store fails with exit 1 and one line
/// naming the damage (never a signal), and changes nothing.
#[track_caller]
fn every_command_fails(store: &Path, input: &Path, needles: &[&str]) {
    let before = std::fs::read(store.join("data.mdb")).unwrap();
    let st = s(store);
    for args in [
        vec!["ls", st],
        vec!["info", st],
        vec!["verify", st],
        vec!["get", "-o", "-", st, "k0"],
        vec!["put", st, "new", s(input)],
        vec!["rm", st, "k0"],
        vec!["export", st, "/nonexistent/out"],
    ] {
        let out = ts(&args);
        let line = fails(&out, needles);
        assert!(line.contains("data.mdb is damaged"), "{args:?}: {line}");
    }
    assert!(std::fs::read(store.join("data.mdb")).unwrap() == before);
}

#[test]
fn a_damaged_lmdb_file_fails_every_command_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let value = lmdb_store(&good, 30);
    let input = tmp.path().join("in.ten");
    std::fs::write(&input, &value).unwrap();
    let data = std::fs::read(good.join("data.mdb")).unwrap();
    let copy = |name: &str, bytes: &[u8]| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(good.join("tenstore.json"), dir.join("tenstore.json")).unwrap();
        std::fs::write(dir.join("data.mdb"), bytes).unwrap();
        dir
    };
    // Cut short (this was SIGBUS, exit 135, for every command).
    let cut = copy("cut", &data[..data.len() / 2]);
    every_command_fails(
        &cut,
        &input,
        &["cut short", &format!("{} bytes", data.len() / 2)],
    );
    // Empty (this was "Bad file descriptor").
    let empty = copy("empty", b"");
    every_command_fails(&empty, &input, &["empty (0 bytes)"]);
    // Meta pages overwritten (this was "another lock format" or
    // MDB_INVALID).
    let mut trashed = data.clone();
    trashed[16..4096 + 200].fill(0x5a);
    let trashed = copy("trashed", &trashed);
    every_command_fails(&trashed, &input, &["meta page 0", "not an LMDB meta page"]);
    let mut version = data.clone();
    version[20..24].copy_from_slice(&9u32.to_ne_bytes());
    let version = copy("version", &version);
    every_command_fails(
        &version,
        &input,
        &["meta page 0 says data format version 9"],
    );
    // The intact store answers.
    assert_eq!(ok_text(ts(["ls", s(&good)])).lines().count(), 30);
}

#[test]
fn a_foreign_lmdb_environment_is_written_only_with_adopt() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("plain");
    let value = lmdb_store(&store, 2);
    // What a plain LMDB client leaves: no tenstore.json.
    std::fs::remove_file(store.join("tenstore.json")).unwrap();
    let input = tmp.path().join("in.ten");
    std::fs::write(&input, &value).unwrap();
    let data = || std::fs::read(store.join("data.mdb")).unwrap();
    let before = data();

    for args in [
        vec!["put", s(&store), "new", s(&input)],
        vec!["put", s(&store), "new", s(&input), "--create"],
        vec!["rm", s(&store), "k0"],
    ] {
        fails(&ts(&args), &["tenstore did not create", "--adopt"]);
        assert!(data() == before, "{args:?} changed data.mdb");
        assert!(!store.join("tenstore.json").exists());
    }
    // Reading needs nothing.
    assert_eq!(ok_text(ts(["ls", s(&store)])), "k0\nk1\n");
    assert!(!store.join("tenstore.json").exists());

    ok(ts(["rm", "--adopt", s(&store), "k0"]));
    assert!(store.join("tenstore.json").is_file());
    ok(ts(["put", s(&store), "new", s(&input)]));
    assert_eq!(ok_text(ts(["ls", s(&store)])), "k1\nnew\n");
    assert_eq!(stored(&store, "new"), value);
}

/// Whether this process can write where permissions say it cannot (root).
fn privileged(tmp: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp.join("probe");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
    let wrote = std::fs::write(d.join("x"), b"").is_ok();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrote
}

#[test]
fn another_users_lmdb_store_is_read_without_the_lock() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(tmp.path(), 0o755);
    let store = tmp.path().join("store");
    let value = lmdb_store(&store, 3);
    // Readable by all, writable by no one but its owner.
    mode(&store, 0o755);
    for f in ["data.mdb", "lock.mdb", "tenstore.json"] {
        mode(&store.join(f), 0o644);
    }
    let root = privileged(tmp.path());
    let as_other = |args: &[&str]| -> Output {
        if root {
            // Root reads anything: run as nobody instead.
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_tenstore"))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run setpriv")
        } else {
            // Not root: take write permission away from ourselves.
            mode(&store, 0o555);
            mode(&store.join("lock.mdb"), 0o444);
            let out = ts(args);
            mode(&store, 0o755);
            mode(&store.join("lock.mdb"), 0o644);
            out
        }
    };
    let out = as_other(&["ls", s(&store)]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k0\nk1\nk2\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reading without LMDB's lock") && err.lines().count() == 1,
        "{err}"
    );
    let out = as_other(&["get", "-o", "-", s(&store), "k1"]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(out.stdout == value);
    // Writing still needs the lock, and says why it fails.
    let out = as_other(&["rm", s(&store), "k0"]);
    fails(&out, &["Permission denied"]);
    assert_eq!(ok_text(ts(["ls", s(&store)])), "k0\nk1\nk2\n");
}

// --- robustness, round two (issue 9) ------------------------------------------------

/// A 1-d int32 tensor `0..n` plus `offset`.
fn ints(name: &str, n: usize, offset: i32) -> tenstore::Tensor {
    let data: Vec<i32> = (0..n as i32).map(|i| i + offset).collect();
    let array =
        tenstore::ndarray::ArrayD::from_shape_vec(tenstore::ndarray::IxDyn(&[n]), data).unwrap();
    tenstore::Tensor::new(name, array).unwrap()
}

/// Writes `t` as an .npy file.
fn write_npy(path: &Path, t: &tenstore::Tensor) {
    std::fs::write(path, tenstore::npy::to_bytes(&t.view()).unwrap()).unwrap();
}

/// Every file of a store directory with its bytes: what "unchanged" means
/// for the store's files.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(name, _)| name != "LOCK")
        .collect();
    out.sort();
    out
}

/// A tar archive of (member name, contents) regular files.
fn tar_of(path: &Path, members: &[(&[u8], Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(
                &mut header,
                <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name),
                &bytes[..],
            )
            .unwrap();
    }
    builder.finish().unwrap();
}

/// Item 2: keys like `000000` name a shard's file; exporting into the store
/// truncated the live shard. (Failed before: the export ran, and the
/// store's shard was overwritten.)
#[test]
fn export_into_the_store_itself_is_refused_and_the_store_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("x.npy");
    write_npy(&npy, &ints("x", 1000, 0));
    let store = tmp.path().join("store");
    for key in ["000000", "000001", "MANIFEST"] {
        ok(ts([
            "put",
            s(&store),
            key,
            s(&npy),
            "--create",
            "--backend",
            "ten",
        ]));
    }
    let before = files_of(&store);
    let listed = listing(&store);
    for target in [
        store.clone(),
        store.join("sub"),
        store.join("sub/../."),
        tmp.path().join("link"),
    ] {
        if target.ends_with("link") {
            std::os::unix::fs::symlink(&store, &target).unwrap();
        }
        let out = ts(["export", s(&store), s(&target)]);
        assert_eq!(files_of(&store), before, "export into {target:?}");
        assert_eq!(listing(&store), listed);
        fails(&out, &["inside the store"]);
    }
    assert!(!store.join("sub").exists());
    ok(ts(["verify", s(&store)]));
}

/// Item 4: a reserved tensor name was refused only when its batch was
/// written, after 512 samples had been committed. (Failed before: the
/// listing grew by 512 samples, and --create left a store behind.)
#[test]
fn import_refuses_reserved_tensor_names_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    for i in 0..700 {
        write_npy(&inputs.join(format!("k{i:03}.x.npy")), &ints("x", 4, i));
    }
    let npy = tmp.path().join("kept.npy");
    write_npy(&npy, &ints("kept", 4, 0));
    for reserved in ["__key__", "__tomb__"] {
        let bad = tmp.path().join(format!("zz{}.ten", reserved.len()));
        tenstore::save(&bad, &[ints("ok", 2, 0), ints(reserved, 2, 0)]).unwrap();
        let store = tmp.path().join(format!("store{}", reserved.len()));
        ok(ts([
            "put",
            s(&store),
            "kept",
            s(&npy),
            "--create",
            "--backend",
            "ten",
        ]));
        let before = listing(&store);
        let out = ts(["import", s(&store), s(&inputs), s(&bad)]);
        assert_eq!(listing(&store), before, "a failed import changed the store");
        fails(&out, &[reserved, "reserved", "nothing was written"]);

        let fresh = tmp.path().join("fresh");
        let out = ts([
            "import",
            s(&fresh),
            s(&inputs),
            s(&bad),
            "--create",
            "--backend",
            "ten",
        ]);
        assert!(!fresh.exists(), "a failed import left a store behind");
        fails(&out, &[reserved]);
    }
    // An LMDB store reserves no names: the same input imports there.
    let lmdb = tmp.path().join("lmdb");
    let bad = tmp.path().join("zz7.ten");
    let out = ok_text(ts(["import", s(&lmdb), s(&bad), "--create"]));
    assert!(out.starts_with("imported 1 samples (2 tensors"), "{out}");
}

/// Runs `tenstore ARGS` with files limited to `blocks` 512-byte blocks
/// (SIGXFSZ ignored, so writes past it fail with EFBIG).
fn ts_file_limit(blocks: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks} || exit 99; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_tenstore"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

/// Item 4: a failure while writing (here files may not grow past 1 MiB)
/// left the batches committed before it in the store. (Failed before: the
/// listing held the samples of the committed batches, and --create left a
/// store behind.)
#[test]
fn an_import_failing_while_writing_removes_what_it_added() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    // 60 samples of 64 KiB: 3.9 MB, well past the limit.
    for i in 0..60 {
        write_npy(
            &inputs.join(format!("s{i:02}.x.npy")),
            &ints("x", 16 * 1024, i),
        );
    }
    let npy = tmp.path().join("kept.npy");
    write_npy(&npy, &ints("kept", 4, 0));
    for backend in ["lmdb", "ten"] {
        let store = tmp.path().join(format!("store-{backend}"));
        ok(ts([
            "put",
            s(&store),
            "kept",
            s(&npy),
            "--create",
            "--backend",
            backend,
        ]));
        ok(ts(["put", s(&store), "s05", s(&npy)]));
        let before = listing(&store);
        let out = ts_file_limit(2048, &["import", s(&store), s(&inputs), "--batch", "4"]);
        let after = listing(&store);
        let keys = |l: &str| {
            l.lines()
                .map(|r| r.split('\t').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(&after),
            keys(&before),
            "{backend}: keys after a failed import: {}",
            shown(&out)
        );
        assert!(after.contains("kept\t1\t"), "{after}");
        let err = fails(&out, &["import stopped while writing", "removed the"]);
        // s05 was in the store before: its sample was replaced (in the
        // second batch, before the failure) and keeps the imported value,
        // as the message says.
        assert!(
            err.contains("the 1 samples it replaced"),
            "{backend}: {err}"
        );
        let imported = tmp.path().join("s05.ten");
        tenstore::save(&imported, &[ints("x", 16 * 1024, 5)]).unwrap();
        assert!(stored(&store, "s05") == std::fs::read(&imported).unwrap());
        ok(ts(["verify", s(&store)]));

        let fresh = tmp.path().join(format!("fresh-{backend}"));
        let out = ts_file_limit(
            2048,
            &[
                "import",
                s(&fresh),
                s(&inputs),
                "--batch",
                "4",
                "--create",
                "--backend",
                backend,
            ],
        );
        assert!(
            !fresh.exists(),
            "{backend}: a failed import left a store behind: {}",
            shown(&out)
        );
        fails(
            &out,
            &[
                "import stopped while writing",
                "removed the store it created",
            ],
        );
    }
}

/// Item 5: keys went through lossy text, so `\xff` and `\xfe` became one
/// sample. (Failed before: the new store held fewer keys, `ls` printed
/// U+FFFD and a raw newline.)
#[test]
fn keys_are_bytes_through_import_ls_get_rm_and_export() {
    use tenstore::store::{Backend, Store, StoreOptions};
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let keys: [&[u8]; 6] = [
        b"\xff",
        b"\xfe",
        b"a\nb",
        b"back\\slash",
        b"tab\there",
        "é".as_bytes(),
    ];
    {
        let store = Store::open(
            &old,
            &StoreOptions {
                create: true,
                backend: Some(Backend::Shard),
                ..Default::default()
            },
        )
        .unwrap();
        for (i, key) in keys.iter().enumerate() {
            store.put(key, &[ints("v", 3, i as i32)]).unwrap();
        }
        store.flush().unwrap();
    }
    let new = tmp.path().join("new");
    let out = ok_text(ts(["import", s(&new), s(&old), "--create"]));
    assert!(out.starts_with("imported 6 samples"), "{out}");

    let shown = [
        "\\xff",
        "\\xfe",
        "a\\x0ab",
        "back\\\\slash",
        "tab\\x09here",
        "é",
    ];
    let mut want: Vec<(&[u8], &str)> = keys.iter().copied().zip(shown).collect();
    want.sort();
    let listed = ok_text(ts(["ls", s(&new)]));
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        want.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        "{listed}"
    );
    // Every listed line reads back as its sample, exactly.
    let reopened = Store::open(&new, &StoreOptions::default()).unwrap();
    let reader = reopened.reader().unwrap();
    for (i, key) in keys.iter().enumerate() {
        let line = shown[i];
        let sample = reader.require(key).unwrap();
        assert!(stored(&new, line) == sample.as_bytes(), "{line}");
        let json: Value =
            serde_json::from_slice(&ok(ts(["get", "--json", "--", s(&new), line]))).unwrap();
        assert_eq!(json["key"], line);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(json["key_hex"], hex.as_str());
    }
    drop(reader);
    drop(reopened);
    // A prefix is escaped the same way.
    assert_eq!(ok_text(ts(["ls", s(&new), "\\xff"])), "\\xff\n");
    assert_eq!(ok_text(ts(["ls", s(&new), "a\\x0a"])), "a\\x0ab\n");
    // A broken escape is an error, not another key.
    fails(&ts(["get", s(&new), "\\q"]), &["escape"]);

    ok(ts(["rm", s(&new), "\\xfe", "a\\x0ab"]));
    let left = ok_text(ts(["ls", s(&new)]));
    assert_eq!(left, "back\\\\slash\ntab\\x09here\né\n\\xff\n");

    // Export names files from the bytes.
    let export = tmp.path().join("export");
    ok(ts(["export", s(&new), s(&export)]));
    assert!(
        std::fs::read(export.join("%FF.ten")).unwrap() == stored(&new, "\\xff"),
        "export of \\xff"
    );
}

/// Item 6: a key that comes back after other samples overwrote the first
/// sample while the summary counted both. (Failed before: exit 0, "imported
/// 3 samples", and `a` held the last sample.)
#[test]
fn a_repeated_key_is_refused_unless_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = |n: i32| tenstore::npy::to_bytes(&ints("x", 3, n).view()).unwrap();
    let tar = tmp.path().join("rep.tar");
    tar_of(
        &tar,
        &[
            (b"a.x.npy", npy(1)),
            (b"b.x.npy", npy(2)),
            (b"a.x.npy", npy(3)),
        ],
    );
    let store = tmp.path().join("store");
    let out = ts(["import", s(&store), s(&tar), "--create"]);
    fails(&out, &["\"a\"", "--overwrite", "nothing was written"]);
    assert!(!store.exists(), "a refused import made a store");

    let out = ok_text(ts([
        "import",
        s(&store),
        s(&tar),
        "--create",
        "--overwrite",
    ]));
    assert!(out.starts_with("imported 2 samples (2 tensors"), "{out}");
    assert!(out.contains("1 samples were replaced"), "{out}");
    assert_eq!(ok_text(ts(["ls", s(&store)])), "a\nb\n");
    let want = tmp.path().join("want.ten");
    tenstore::save(&want, &[ints("x", 3, 3)]).unwrap();
    assert!(
        stored(&store, "a") == std::fs::read(&want).unwrap(),
        "a keeps the last sample"
    );
}

/// Item 8: keys over ~251 escaped bytes could not be exported, and the
/// export stopped part way with exit 1. (Failed before: "too long for a
/// file name".)
#[test]
fn export_writes_every_key_the_store_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("x.npy");
    write_npy(&npy, &ints("x", 3, 0));
    let store = tmp.path().join("store");
    let long_k = "k".repeat(511);
    let long_slash = "/".repeat(511);
    let long_kx = format!("{}x", "k".repeat(510));
    for key in ["plain", &long_k, &long_slash, &long_kx] {
        ok(ts(["put", "--create", "--", s(&store), key, s(&npy)]));
    }
    let export = tmp.path().join("export");
    let out = ok_text(ts(["export", s(&store), s(&export)]));
    assert!(out.starts_with("exported 4 samples"), "{out}");
    assert!(
        out.contains("3 long keys have shortened file names"),
        "{out}"
    );
    let names: Value =
        serde_json::from_slice(&std::fs::read(export.join("shortened-keys.json")).unwrap())
            .unwrap();
    let names = names.as_array().unwrap();
    assert_eq!(names.len(), 3);
    let mut seen = BTreeSet::new();
    for entry in names {
        let file = entry["file"].as_str().unwrap();
        let key = entry["key"].as_str().unwrap();
        assert!(file.len() <= 255 && file.ends_with(".ten"), "{file}");
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(entry["key_hex"], hex.as_str());
        assert!(
            std::fs::read(export.join(file)).unwrap() == stored(&store, key),
            "{file}"
        );
        seen.insert(key.to_owned());
    }
    let want: BTreeSet<String> = [&long_k, &long_slash, &long_kx]
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(seen, want);
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 5);
    assert!(std::fs::read(export.join("plain.ten")).unwrap() == stored(&store, "plain"));
}

/// Item 8: a failed export says what it wrote.
#[test]
fn a_failed_export_says_what_it_wrote() {
    let (tmp, store) = small_store_tmp();
    let export = tmp.path().join("export");
    // A directory where beta's file goes: alpha is written, then beta fails.
    std::fs::create_dir_all(export.join("beta.ten")).unwrap();
    let out = ts(["export", s(&store), s(&export), "--force"]);
    fails(
        &out,
        &["beta.ten", "export stopped after writing 1 samples"],
    );
    assert!(std::fs::read(export.join("alpha.ten")).unwrap() == stored(&store, "alpha"));
    assert!(!export.join("gamma.ten").exists());
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 2);
}

/// Item 9: `export` and `get --npy` wrote through symlinks planted in the
/// target directory. (Failed before: `outside.txt` was overwritten.)
#[test]
fn export_and_get_npy_never_write_through_symlinks() {
    let (tmp, store) = small_store_tmp();
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, b"precious").unwrap();
    for (what, planted) in [("export", "alpha.ten"), ("npy", "good.npy")] {
        let dir = tmp.path().join(format!("out-{what}"));
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink("../outside.txt", dir.join(planted)).unwrap();
        let args = |force: bool| -> Vec<&str> {
            let mut a = if what == "export" {
                vec!["export", s(&store), s(&dir)]
            } else {
                vec!["get", s(&store), "alpha", "--npy", s(&dir)]
            };
            if force {
                a.push("--force");
            }
            a
        };
        let out = ts(args(false));
        fails(&out, &["not empty", "--force"]);
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        // --force replaces the link itself, never what it points to.
        ok(ts(args(true)));
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious", "{what}");
        let kind = std::fs::symlink_metadata(dir.join(planted)).unwrap();
        assert!(
            kind.file_type().is_file(),
            "{what}: the link was not replaced"
        );
        if what == "export" {
            assert!(std::fs::read(dir.join(planted)).unwrap() == stored(&store, "alpha"));
        } else {
            let npy = std::fs::read(dir.join(planted)).unwrap();
            assert!(npy.starts_with(b"\x93NUMPY"), "{what}");
        }
    }
    usage_error(&ts(["get", s(&store), "alpha", "--force"]));
}

/// Weak points: inputs that are not regular files were read forever
/// (`/dev/zero`, a FIFO); tar links were dropped silently.
#[test]
fn import_refuses_special_files_and_counts_tar_links() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let zero = tmp.path().join("z.x.npy");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = tmp.path().join("f.x.npy");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for input in [&zero, &fifo] {
        let mut child = cmd(["import", s(&store), s(input), "--create"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A guard against the old behaviour (reading forever), not a
        // timing assertion: the command answers at once.
        let mut waited = 0;
        while child.try_wait().unwrap().is_none() && waited < 600 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited += 1;
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("import of {input:?} did not finish");
        }
        let out = child.wait_with_output().unwrap();
        fails(&out, &["not a regular file"]);
        assert!(!store.exists());
    }

    // A tar with a symlink and a hard link beside a regular member.
    let tar = tmp.path().join("links.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&tar).unwrap());
        let bytes = tenstore::npy::to_bytes(&ints("x", 3, 0).view()).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "a.x.npy", &bytes[..])
            .unwrap();
        for (kind, name) in [
            (tar::EntryType::Symlink, "b.x.npy"),
            (tar::EntryType::Link, "c.x.npy"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(0);
            header.set_mode(0o644);
            builder.append_link(&mut header, name, "a.x.npy").unwrap();
        }
        builder.finish().unwrap();
    }
    let out = ok_text(ts(["import", s(&store), s(&tar), "--create"]));
    assert!(out.starts_with("imported 1 samples"), "{out}");
    assert!(out.contains("skipped 2 links and special files"), "{out}");
    assert_eq!(ok_text(ts(["ls", s(&store)])), "a\n");
}

/// Weak point: an empty .ten or empty stdin stored a sample with no
/// tensors. (Failed before: exit 0 and an empty sample.)
#[test]
fn samples_with_no_tensors_are_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let empty = tmp.path().join("e.ten");
    std::fs::write(&empty, b"").unwrap();
    fails(
        &ts_stdin(["put", s(&store), "k", "-", "--create"], b""),
        &["no tensors", "--allow-empty"],
    );
    fails(
        &ts(["put", s(&store), "k", s(&empty), "--create"]),
        &["no tensors"],
    );
    fails(
        &ts(["import", s(&store), s(&empty), "--create"]),
        &["no tensors", "--allow-empty"],
    );
    assert!(!store.exists());
    ok(ts_stdin(
        ["put", s(&store), "k", "-", "--create", "--allow-empty"],
        b"",
    ));
    ok(ts(["import", s(&store), s(&empty), "--allow-empty"]));
    assert_eq!(
        ok_text(ts(["ls", s(&store), "--long"])),
        format!("e\t0\t0\nk\t0\t0\n")
    );
}

/// Weak point: a shape whose non-zero dimensions overflow was refused with
/// "data is 0 bytes, but ... need 0". (Failed before: that message.)
#[test]
fn an_overflowing_empty_shape_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("big.npy");
    let mut header = String::from(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4611686018427387904), }",
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    std::fs::write(&npy, bytes).unwrap();
    let store = tmp.path().join("store");
    let err = fails(
        &ts(["put", s(&store), "k", s(&npy), "--create"]),
        &["too large", "overflows"],
    );
    assert!(!err.contains("need 0"), "{err}");
    assert!(!store.exists());
}

// --- damaged shard sidecars -------------------------------------------------

/// A shard store of ten samples `s0`..`s9` made through the library; the
/// path of its sidecar.
fn damaged_store_of_ten(dir: &Path) -> PathBuf {
    let store = common::store::create_shard(dir);
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

    // The key table, a checked copy of the sidecars, still serves every
    // sample; verify reads the sidecars and reports the damage.
    let listed = String::from_utf8(ok(ts(["ls", st]))).unwrap();
    assert_eq!(listed.lines().count(), 10, "{listed}");
    ok(ts(["get", st, "s7"]));
    let out = ts(["verify", st]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("6 whole records")
            || String::from_utf8_lossy(&out.stderr).contains("6 whole records"),
        "{}",
        shown(&out)
    );
    // Without the table, readers see the damage themselves.
    std::fs::remove_file(dir.join("keys.tbl")).unwrap();

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
    let x = tenstore::Tensor::new("x", ndarray::Array1::from_elem(3, 10u8).into_dyn()).unwrap();
    let x = tenstore::encode_buffer(&[x]).unwrap();
    let out = ts_stdin(["put", st, "s10", "-"], &x);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenstore reindex"),
        "{}",
        shown(&out)
    );
    assert_eq!(std::fs::read(dir.join("000001.ten")).unwrap(), before);
    let text = String::from_utf8(ok(ts(["reindex", st]))).unwrap();
    assert!(text.contains("10 records"), "{text}");
    ok(ts_stdin(["put", st, "s10", "-"], &x));
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
