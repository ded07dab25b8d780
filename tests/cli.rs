//! The `tenstore` binary, run as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn tenstore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenstore"))
        .args(args)
        .output()
        .expect("run tenstore")
}

fn golden(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn info_json_matches_the_manifest() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(golden("manifest.json")).unwrap()).unwrap();
    for (file, expected) in manifest["files"].as_object().unwrap() {
        let out = tenstore(&["info", &golden(file), "--json"]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let raw = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(raw.starts_with("{\"path\":"), "{raw}");
        // Key order, as scripts that read the text see it.
        for object in raw.split("{\"name\":").skip(1) {
            let at = |k: &str| {
                object
                    .find(k)
                    .unwrap_or_else(|| panic!("{file}: {k} missing"))
            };
            assert!(at("\"dtype\":") < at("\"shape\":"), "{file}: key order");
            assert!(at("\"shape\":") < at("\"nbytes\":"), "{file}: key order");
            assert!(at("\"nbytes\":") < at("\"sha256\":"), "{file}: key order");
        }
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["path"], golden(file));
        let tensors = got["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), expected.as_array().unwrap().len());
        for (t, e) in tensors.iter().zip(expected.as_array().unwrap()) {
            assert_eq!(t.as_object().unwrap().len(), 5);
            for k in ["name", "dtype", "shape", "nbytes", "sha256"] {
                assert_eq!(t[k], e[k], "{file}: {k}");
            }
        }
    }
}

#[test]
fn info_prints_a_readable_table() {
    let out = tenstore(&["info", &golden("sample.ten")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with("sample.ten: 3 tensors, 3120 data bytes"),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["#", "name", "dtype", "shape", "nbytes", "sha256"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        [
            "0",
            "image",
            "u1",
            "[3,",
            "32,",
            "32]",
            "3072",
            "4d00b7341b632a84"
        ]
    );
    assert_eq!(lines.len(), 5);
}

#[test]
fn a_bad_file_is_one_line_on_stderr_and_status_1() {
    for bad in [
        "bad/huge_len.ten",
        "bad/truncated_data.ten",
        "bad/unknown_dtype.ten",
        "no-such-file.ten",
    ] {
        let out = tenstore(&["info", &golden(bad)]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
        assert!(
            err.starts_with("tenstore: error: ") && err.contains(bad),
            "{err}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(tenstore(&["info"]).status.code(), Some(2));
    assert_eq!(tenstore(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn demo_fills_a_store_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = tenstore(&[
        "demo",
        "--store",
        store.to_str().unwrap(),
        "--samples",
        "20",
        "--reads",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("wrote 20 samples (0.3 MB)"), "{text}");
    assert!(text.contains("read 100 random samples"), "{text}");
    assert!(
        text.contains("checked every value of 100 of the samples read: all match"),
        "{text}"
    );
    let ls = tenstore(&["ls", store.to_str().unwrap()]);
    let keys = String::from_utf8(ls.stdout).unwrap();
    assert_eq!(keys.lines().count(), 20);
    assert_eq!(keys.lines().next(), Some("sample-00000000"));
}
