//! Running the `tenstore` binary as a user runs it: with arguments, with
//! or without stdin, and asserting what its exit code and output say.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `tenstore ARGS`, not started yet.
pub fn cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenstore"));
    c.args(args);
    c
}

/// Runs `tenstore ARGS` with no stdin.
pub fn ts<I, S>(args: I) -> Output
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
pub fn ts_stdin<I, S>(args: I, input: &[u8]) -> Output
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

/// The exit code and both streams of a finished `tenstore`, for messages.
pub fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(out: Output) -> Vec<u8> {
    assert!(out.status.success(), "expected success: {}", shown(&out));
    out.stdout
}

/// Asserts success and returns stdout as text.
#[track_caller]
pub fn ok_text(out: Output) -> String {
    String::from_utf8(ok(out)).expect("UTF-8 stdout")
}

/// Asserts a failed operation: exit 1, one line on stderr that starts with
/// `tenstore: error: ` and contains every needle. Returns that line.
#[track_caller]
pub fn fails(out: &Output, needles: &[&str]) -> String {
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
pub fn usage_error(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2: {}",
        shown(out)
    );
    assert!(!out.stderr.is_empty(), "{}", shown(out));
    assert!(out.stdout.is_empty(), "{}", shown(out));
}
