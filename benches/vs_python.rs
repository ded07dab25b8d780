//! tenstore beside the Python reference (`webdataset.tenbin`) on the same
//! workloads, in one run: `cargo bench --bench vs_python`.
//!
//! Runs `benches/python_peer.py --json` with the Python in `TENSTORE_PYTHON`
//! (else `.venv/bin/python` in the crate root), then times the same
//! operations in Rust with the same counts and the same warm-up (one
//! untimed round of `number` calls, then `repeat` rounds of `number` calls
//! each, per-call time of each round; `save_256MiB`: one untimed save on
//! both sides) and prints both figures and their ratio. A figure missing
//! on either side is an error. Pass `--quick` (after `--`) for a tenth of
//! the counts.
//!
//! The Rust side of each decode figure is `decode_buffer` plus an
//! `array::<T>()` view of every tensor, the counterpart of the numpy arrays
//! the reference's `decode_buffer` returns; each encode figure includes
//! making the `TensorRef`s, as the reference builds its headers.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use std::time::Instant;

use ndarray::{Array1, Array2, Array3};
use serde_json::Value;
use tenstore::{decode_buffer, encode_buffer, save, TensorRef};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The values of `python_peer.py`'s `f32_data`: `(i % 1000) * 0.5`.
fn f32_data(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 1000) as f32 * 0.5).collect()
}

/// One figure of the reference, as `python_peer.py --json` prints it.
struct PyFigure {
    name: String,
    number: u32,
    repeat: u32,
    min_s: f64,
    median_s: f64,
    encoded_len: usize,
    note: String,
}

impl PyFigure {
    fn parse(line: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let field = |k: &str| v.get(k).ok_or_else(|| format!("no `{k}` in {line}"));
        let num = |k: &str| {
            field(k)?
                .as_f64()
                .ok_or_else(|| format!("`{k}` is not a number in {line}"))
        };
        let text = |k: &str| Ok::<_, String>(field(k)?.as_str().unwrap_or_default().to_owned());
        Ok(PyFigure {
            name: text("name")?,
            number: num("number")? as u32,
            repeat: num("repeat")? as u32,
            min_s: num("min_s")?,
            median_s: num("median_s")?,
            encoded_len: num("encoded_len")? as usize,
            note: text("note")?,
        })
    }
}

fn python() -> PathBuf {
    match std::env::var_os("TENSTORE_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// Runs the reference's timings, or explains why it cannot and exits.
fn run_python(quick: bool) -> Vec<PyFigure> {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_peer.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg("--json");
    if quick {
        cmd.arg("--quick");
    }
    eprintln!(
        "running {} {} --json (the reference) ...",
        python.display(),
        script.display()
    );
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "error: cannot run Python at {}: {e}\n\
                 Set TENSTORE_PYTHON to a Python with webdataset and numpy installed \
                 (e.g. python -m venv .venv && .venv/bin/pip install webdataset numpy).",
                python.display()
            );
            exit(2);
        }
    };
    if !out.status.success() {
        eprintln!(
            "error: {} {} failed ({}):\n{}\n\
             It needs webdataset and numpy; set TENSTORE_PYTHON to a Python that has them.",
            python.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        exit(2);
    }
    let figures: Result<Vec<_>, _> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(PyFigure::parse)
        .collect();
    match figures {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("error: python_peer.py printed no figures");
            exit(2);
        }
        Err(e) => {
            eprintln!("error: cannot read python_peer.py's output: {e}");
            exit(2);
        }
    }
}

/// Per-call seconds of each of `repeat` rounds of `number` calls, after one
/// untimed round (as `python_peer.py`'s `measure`): (min, median).
fn time<R>(number: u32, repeat: u32, mut f: impl FnMut() -> R) -> (f64, f64) {
    for _ in 0..number {
        black_box(f());
    }
    time_cold(number, repeat, f)
}

/// [`time`] without the untimed round.
fn time_cold<R>(number: u32, repeat: u32, mut f: impl FnMut() -> R) -> (f64, f64) {
    let mut per_op: Vec<f64> = (0..repeat.max(1))
        .map(|_| {
            let start = Instant::now();
            for _ in 0..number {
                black_box(f());
            }
            start.elapsed().as_secs_f64() / f64::from(number)
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    (per_op[0], per_op[per_op.len() / 2])
}

/// The Rust side of every workload: what it measures, the encoded length
/// (checked against the reference's), and (min, median) seconds per call.
fn rust_figure(py: &PyFigure) -> Option<(&'static str, usize, (f64, f64))> {
    let (n, r) = (py.number, py.repeat);
    let decode_f32 = |nbytes: usize| {
        let a = Array1::from(f32_data(nbytes / 4));
        let buf = encode_buffer(&[TensorRef::from_array("x", &a).unwrap()]).unwrap();
        let t = time(n, r, || {
            let views = decode_buffer(black_box(&buf)).unwrap();
            let x = views[0].array::<f32>().unwrap();
            x[[nbytes / 4 - 1]]
        });
        ("decode_buffer + array::<f32>()", buf.len(), t)
    };
    let sample = || {
        (
            Array3::from_shape_fn((3, 64, 64), |(c, y, x)| (c * 7 + y * 3 + x) as u8),
            Array1::from(f32_data(10)),
            Array1::from(vec![7i64]),
        )
    };
    Some(match py.name.as_str() {
        "decode_1KiB" => decode_f32(KIB),
        "decode_16MiB" | "decode_16MiB_mv" => decode_f32(16 * MIB),
        "decode_sample3" => {
            let (image, logits, label) = sample();
            let buf = encode_buffer(&[
                TensorRef::from_array("image", &image).unwrap(),
                TensorRef::from_array("logits", &logits).unwrap(),
                TensorRef::from_array("label", &label).unwrap(),
            ])
            .unwrap();
            let t = time(n, r, || {
                let views = decode_buffer(black_box(&buf)).unwrap();
                let image = views[0].array::<u8>().unwrap();
                let logits = views[1].array::<f32>().unwrap();
                let label = views[2].array::<i64>().unwrap();
                (image[[2, 63, 63]], logits[[9]], label[[0]])
            });
            ("decode_buffer + 3 array views", buf.len(), t)
        }
        "encode_sample3" => {
            let (image, logits, label) = sample();
            let enc = || {
                encode_buffer(&[
                    TensorRef::from_array("image", black_box(&image)).unwrap(),
                    TensorRef::from_array("logits", black_box(&logits)).unwrap(),
                    TensorRef::from_array("label", black_box(&label)).unwrap(),
                ])
                .unwrap()
            };
            let len = enc().len();
            ("encode_buffer", len, time(n, r, enc))
        }
        "encode_64MiB" => {
            let a = Array2::from_shape_vec((4096, 4096), f32_data(16 * MIB)).unwrap();
            let enc =
                || encode_buffer(&[TensorRef::from_array("x", black_box(&a)).unwrap()]).unwrap();
            let len = enc().len();
            ("encode_buffer (allocating)", len, time(n, r, enc))
        }
        "save_256MiB" => {
            let a = Array1::from(f32_data(64 * MIB));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bench.ten");
            let save_a =
                || save(&path, &[TensorRef::from_array("x", black_box(&a)).unwrap()]).unwrap();
            // As python_peer.py: one save, then no pending writeback (the
            // reference has just written 15 x 256 MiB), then the rounds.
            save_a();
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            let _ = Command::new("sync").status();
            let t = time_cold(n, r, save_a);
            ("save", len, t)
        }
        _ => return None,
    })
}

fn human(s: f64) -> String {
    let (v, unit) = if s >= 1.0 {
        (s, "s")
    } else if s >= 1e-3 {
        (s * 1e3, "ms")
    } else if s >= 1e-6 {
        (s * 1e6, "us")
    } else {
        (s * 1e9, "ns")
    };
    format!("{v:.3} {unit}")
}

/// Every figure, on both sides.
const FIGURES: [&str; 7] = [
    "decode_1KiB",
    "decode_16MiB",
    "decode_16MiB_mv",
    "decode_sample3",
    "encode_sample3",
    "encode_64MiB",
    "save_256MiB",
];

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let figures = run_python(quick);
    for name in FIGURES {
        if !figures.iter().any(|f| f.name == name) {
            eprintln!("error: python_peer.py printed no figure {name:?}");
            exit(1);
        }
    }
    let mut rows = Vec::new();
    for py in &figures {
        eprintln!(
            "timing {} in Rust ({}x{}) ...",
            py.name, py.repeat, py.number
        );
        let Some((what, len, (min, median))) = rust_figure(py) else {
            eprintln!(
                "error: no Rust counterpart for python_peer.py's figure {:?}",
                py.name
            );
            exit(1);
        };
        if len != py.encoded_len {
            eprintln!(
                "error: {}: tenstore's encoding is {len} bytes, the reference's {}",
                py.name, py.encoded_len
            );
            exit(1);
        }
        rows.push((py, what, min, median));
    }

    println!();
    println!("tenstore vs webdataset.tenbin (ratio = reference time / tenstore time; > 1: tenstore faster)");
    println!();
    println!(
        "{:<16} {:>12} {:>12} {:>10}   {:>12} {:>12} {:>10}   {:>7}",
        "workload",
        "tenstore med",
        "python med",
        "ratio med",
        "tenstore min",
        "python min",
        "ratio min",
        "rounds"
    );
    for (py, _, min, median) in &rows {
        println!(
            "{:<16} {:>12} {:>12} {:>9.1}x   {:>12} {:>12} {:>9.1}x   {:>7}",
            py.name,
            human(*median),
            human(py.median_s),
            py.median_s / median,
            human(*min),
            human(py.min_s),
            py.min_s / min,
            format!("{}x{}", py.repeat, py.number),
        );
    }
    println!();
    for (py, what, _, _) in &rows {
        println!("{:<16} tenstore: {what}; python: {}", py.name, py.note);
    }
}
