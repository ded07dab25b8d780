//! Helpers shared by the integration tests: finding and running the Python
//! reference (webdataset's `tenbin`), and a small seeded PRNG.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable that names the Python interpreter to use (one
/// with `webdataset`, `numpy` installed). Without it, the project's venv.
pub const PYTHON_ENV: &str = "TENSTORE_PYTHON";

/// The crate's root directory.
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv interpreter that `./scripts/test` creates.
fn venv_python() -> PathBuf {
    let venv = manifest_dir().join(".venv");
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// The Python interpreter for the interop tests: `$TENSTORE_PYTHON` if set
/// (a path or a command on `PATH`), else `.venv/bin/python` in the crate.
///
/// # Panics
///
/// When neither is there, with a message saying how to get one.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = venv_python();
    if venv.exists() {
        return venv;
    }
    panic!(
        "no Python for the interop tests: {PYTHON_ENV} is not set and {} does not exist.\n\
         Run `./scripts/test` (it creates the venv with webdataset, numpy, pyzmq and lmdb, \
         then runs the tests), or set {PYTHON_ENV} to a Python that has webdataset==1.0.2 \
         and numpy installed.",
        venv.display()
    );
}

/// Path of a script in `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    manifest_dir().join("tests").join("py").join(name)
}

/// Runs `tests/py/<script>` with `args` and returns its standard output.
///
/// # Panics
///
/// When Python cannot be started or the script exits unsuccessfully; the
/// message holds the command, exit status, stdout and stderr.
pub fn run_py<I, S>(script: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let python = python();
    let path = py_script(script);
    assert!(
        path.is_file(),
        "missing Python test script {}",
        path.display()
    );
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut cmd = Command::new(&python);
    cmd.arg(&path)
        .args(&args)
        // Keep tests/py free of __pycache__ directories.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        // The scripts check with explicit raises, but keep -O from ever
        // silencing a check.
        .env_remove("PYTHONOPTIMIZE");
    let shown = format!("{} {} {:?}", python.display(), path.display(), args);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot start Python for the interop tests ({shown}): {e}.\n\
             Run `./scripts/test` to create the venv, or set {PYTHON_ENV}."
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Python script failed: {shown}\nexit status: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    stdout
}

/// A small, seeded xorshift64* generator: reproducible test data without a
/// dependency.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a seed (any value, zero included).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds give unrelated
        // streams; xorshift needs a non-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Like [`run_py`], but kills the script if it runs longer than `timeout`
/// (and panics then, with what it printed so far), so that a test never
/// hangs on a stuck peer.
pub fn run_py_timeout<I, S>(script: &str, args: I, timeout: std::time::Duration) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::Read;
    use std::process::Stdio;

    let python = python();
    let path = py_script(script);
    assert!(
        path.is_file(),
        "missing Python test script {}",
        path.display()
    );
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = format!("{} {} {:?}", python.display(), path.display(), args);
    let mut child = Command::new(&python)
        .arg(&path)
        .args(&args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .env_remove("PYTHONOPTIMIZE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start Python for the interop tests ({shown}): {e}.\n\
                 Run `./scripts/test` to create the venv, or set {PYTHON_ENV}."
            )
        });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for Python") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    match status {
        None => panic!(
            "Python script timed out after {timeout:?}: {shown}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
        Some(status) => assert!(
            status.success(),
            "Python script failed: {shown}\nexit status: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
    stdout
}

/// Runs `$body` with `$T` the element type of a reference dtype (all but
/// the extension codes, which the reference cannot hold).
#[allow(unused_macros)]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            tenstore::DType::F16 => {
                type $T = tenstore::half::f16;
                $body
            }
            tenstore::DType::F32 => {
                type $T = f32;
                $body
            }
            tenstore::DType::F64 => {
                type $T = f64;
                $body
            }
            tenstore::DType::I8 => {
                type $T = i8;
                $body
            }
            tenstore::DType::I16 => {
                type $T = i16;
                $body
            }
            tenstore::DType::I32 => {
                type $T = i32;
                $body
            }
            tenstore::DType::I64 => {
                type $T = i64;
                $body
            }
            tenstore::DType::U8 => {
                type $T = u8;
                $body
            }
            tenstore::DType::U16 => {
                type $T = u16;
                $body
            }
            tenstore::DType::U32 => {
                type $T = u32;
                $body
            }
            tenstore::DType::U64 => {
                type $T = u64;
                $body
            }
            other => panic!("dtype {other} is not one of the reference's"),
        }
    };
}
