//! Helpers shared by the integration tests: finding and running the Python
//! reference (webdataset's `tenbin`), a small seeded PRNG, and the element
//! types of the reference's dtypes as the interop tests handle them
//! ([`TestElem`], [`with_dtype!`]). Running the `tenstore` binary is in
//! [`cli`]; making and opening test stores in [`store`].
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

// The binary is built only with the `cli` feature.
#[cfg(feature = "cli")]
pub mod cli;
pub mod store;

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Number;
use tenstore::half::f16;
use tenstore::ndarray::{ArrayD, IxDyn};
use tenstore::{DType, Element};

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
        tenstore::for_each_dtype!(with_dtype; @rows $dtype, $T => $body)
    };
    (@rows $dtype:expr, $T:ident => $body:expr;
        $(($v:ident, $t:ty, $code:literal, $size:literal, $class:ident, $($rest:tt)*)),* $(,)?) => {
        match $dtype {
            $(tenstore::DType::$v => with_dtype!(@arm $class, $v, $T = $t => $body),)*
            other => panic!("dtype {other} is not known to these tests"),
        }
    };
    (@arm reference, $v:ident, $T:ident = $t:ty => $body:expr) => {{
        type $T = $t;
        $body
    }};
    (@arm extension, $v:ident, $T:ident = $t:ty => $body:expr) => {
        panic!(
            "dtype {} is not one of the reference's",
            tenstore::DType::$v
        )
    };
}

// ---------------------------------------------------------------------------
// Element types of the reference dtypes: random values, their JSON form
// (tests/py/tenbin_util.py), exact comparison.

/// The eleven dtypes the reference knows.
pub fn reference_dtypes() -> Vec<DType> {
    DType::ALL
        .into_iter()
        .filter(|d| d.is_reference())
        .collect()
}

/// An element type of a reference dtype, as the tests handle it.
pub trait TestElem: Element + PartialEq + Debug {
    /// A random value (finite for floats: JSON cannot hold the others).
    fn random(rng: &mut XorShift) -> Self;
    /// Edge values, put at the start of larger arrays.
    fn specials() -> Vec<Self>;
    /// The JSON value, and the bit pattern for floats.
    fn to_json(self) -> (Number, Option<u64>);
    /// The element a JSON value (and bit pattern, for floats) describes.
    fn from_json(value: &Number, bits: Option<u64>) -> Result<Self, String>;
    /// Equal bit for bit (so -0.0 is not 0.0, and ints are simply equal).
    fn same(self, other: Self) -> bool;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl TestElem for $t {
            fn random(rng: &mut XorShift) -> Self {
                // Truncation keeps the full range uniform.
                rng.next_u64() as $t
            }

            fn specials() -> Vec<Self> {
                vec![<$t>::MIN, <$t>::MAX, 0, 1, <$t>::MAX / 2 + 1, <$t>::MIN.wrapping_add(1)]
            }

            fn to_json(self) -> (Number, Option<u64>) {
                (Number::from(self), None)
            }

            fn from_json(value: &Number, bits: Option<u64>) -> Result<Self, String> {
                if bits.is_some() {
                    return Err(format!("integer {value} comes with a bit pattern"));
                }
                let wide = match (value.as_i64(), value.as_u64()) {
                    (Some(i), _) => i128::from(i),
                    (None, Some(u)) => i128::from(u),
                    _ => return Err(format!("{value} is not an integer")),
                };
                <$t>::try_from(wide)
                    .map_err(|_| format!("{value} is out of range for {}", stringify!($t)))
            }

            fn same(self, other: Self) -> bool {
                self == other
            }
        }
    )*};
}

int_elem!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Whether two float64 values are equal or adjacent (same sign): the slack
/// serde_json's float parsing needs.
pub fn within_one_ulp(a: f64, b: f64) -> bool {
    a == b
        || (a.is_sign_negative() == b.is_sign_negative() && a.to_bits().abs_diff(b.to_bits()) <= 1)
}

macro_rules! float_elem {
    ($t:ty, $bits:ty, $max_exp:expr, $from_f64:expr) => {
        impl TestElem for $t {
            fn random(rng: &mut XorShift) -> Self {
                let mantissa = rng.unit() * 2.0 - 1.0;
                let exp = rng.below(2 * $max_exp + 1) as i32 - $max_exp as i32;
                let x: $t = $from_f64(mantissa * 10f64.powi(exp));
                assert!(f64::from(x).is_finite());
                x
            }

            fn specials() -> Vec<Self> {
                vec![
                    -<$t>::from_bits(0),
                    <$t>::from_bits(1), // smallest subnormal
                    <$t>::MIN_POSITIVE,
                    <$t>::MAX,
                    <$t>::MIN,
                    -<$t>::from_bits(1),
                    $from_f64(1.0),
                ]
            }

            fn to_json(self) -> (Number, Option<u64>) {
                let value = Number::from_f64(f64::from(self)).expect("finite float");
                (value, Some(u64::from(self.to_bits())))
            }

            fn from_json(value: &Number, bits: Option<u64>) -> Result<Self, String> {
                let bits = bits.ok_or_else(|| format!("float {value} has no bit pattern"))?;
                let bits = <$bits>::try_from(bits).map_err(|_| {
                    format!("bit pattern {bits:#x} too wide for {}", stringify!($t))
                })?;
                let x = <$t>::from_bits(bits);
                let v = value
                    .as_f64()
                    .ok_or_else(|| format!("{value} is not a number"))?;
                if !within_one_ulp(f64::from(x), v) {
                    return Err(format!(
                        "value {v:?} disagrees with bit pattern {bits:#x} ({x:?})"
                    ));
                }
                Ok(x)
            }

            fn same(self, other: Self) -> bool {
                self.to_bits() == other.to_bits()
            }
        }
    };
}

float_elem!(f16, u16, 3u64, f16::from_f64);
float_elem!(f32, u32, 6u64, |x: f64| x as f32);
float_elem!(f64, u64, 6u64, |x: f64| x);

/// A random array: random elements, edge values first when it has 15 or
/// more.
pub fn random_array<T: TestElem>(rng: &mut XorShift, shape: &[usize]) -> ArrayD<T> {
    let n = shape.iter().product();
    let mut v: Vec<T> = (0..n).map(|_| T::random(rng)).collect();
    if n >= 15 {
        for (slot, x) in v.iter_mut().zip(T::specials()) {
            *slot = x;
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape matches")
}
