//! What the store and net benches share: timing of interleaved rounds,
//! the report table, a fixed pseudo-random sequence, and where the Python
//! peer lives. Included by each with `mod common;`.

// Each bench uses a part of this module.
#![allow(dead_code)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const MIB: usize = 1 << 20;

// ---------------------------------------------------------------- timing

/// Rates of rounds (work per second).
#[derive(Clone, Default)]
pub struct Rates(pub Vec<f64>);

impl Rates {
    pub fn median(&self) -> f64 {
        median(&self.0)
    }
    pub fn spread(&self) -> String {
        spread(&self.0)
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// How far the lowest and highest lie from the median, in percent.
pub fn spread(v: &[f64]) -> String {
    let m = median(v);
    let lo = v.iter().copied().fold(f64::MAX, f64::min);
    let hi = v.iter().copied().fold(f64::MIN, f64::max);
    format!(
        "-{:.0}%/+{:.0}%",
        (1.0 - lo / m) * 100.0,
        (hi / m - 1.0) * 100.0
    )
}

/// Runs one untimed round of each, then `rounds` rounds of each,
/// alternating which goes first. Each closure returns the seconds it
/// measured (so it can leave its setup out). Returns the rates of `work`
/// per second.
pub fn paired(
    rounds: usize,
    work: f64,
    mut ours: impl FnMut() -> f64,
    mut peer: impl FnMut() -> f64,
) -> (Rates, Rates) {
    black_box(ours());
    black_box(peer());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            a.push(work / ours());
            b.push(work / peer());
        } else {
            b.push(work / peer());
            a.push(work / ours());
        }
    }
    (Rates(a), Rates(b))
}

/// The seconds `f` takes.
pub fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- report

#[derive(Clone, Copy, PartialEq)]
pub enum Unit {
    /// Samples (operations) per second.
    Ops,
    /// Bytes per second, shown as GB/s.
    Bytes,
}

pub fn rate(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => format!("{:.2} GB/s", v / 1e9),
        Unit::Ops if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        Unit::Ops if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
        Unit::Ops => format!("{v:.1} /s"),
    }
}

/// One figure beside its peer's.
pub struct Row {
    pub id: &'static str,
    pub what: String,
    pub unit: Unit,
    pub ours: Rates,
    pub peer_name: String,
    pub peer: Rates,
    /// Whether the rounds were interleaved (a per-round ratio makes sense).
    pub paired: bool,
    /// The ratio ours/peer the figure should reach.
    pub target: Option<f64>,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.ours.median() / self.peer.median()
    }
    pub fn paired_ratio(&self) -> Option<f64> {
        if !self.paired || self.ours.0.len() != self.peer.0.len() {
            return None;
        }
        let r: Vec<f64> = self
            .ours
            .0
            .iter()
            .zip(&self.peer.0)
            .map(|(a, b)| a / b)
            .collect();
        Some(median(&r))
    }
}

/// Column widths of the table: what tenstore measured, and the peer.
#[derive(Clone, Copy)]
pub struct Widths {
    pub what: usize,
    pub peer: usize,
}

pub fn print_header(w: Widths) {
    println!(
        "{:<4} {:<what$} {:>12} {:>10}   {:<peer$} {:>12} {:>10}   {:>8} {:>8}  target",
        "id",
        "tenstore",
        "median",
        "spread",
        "peer",
        "median",
        "spread",
        "ratio",
        "paired",
        what = w.what,
        peer = w.peer,
    );
}

pub fn print_row(r: &Row, w: Widths) {
    let verdict = match r.target {
        Some(t) if r.ratio() >= t => format!(">= {t}x met"),
        Some(t) => format!(">= {t}x MISSED"),
        None => String::new(),
    };
    println!(
        "{:<4} {:<what$} {:>12} {:>10}   {:<peer$} {:>12} {:>10}   {:>7.2}x {:>8}  {}",
        r.id,
        r.what,
        rate(r.ours.median(), r.unit),
        r.ours.spread(),
        r.peer_name,
        rate(r.peer.median(), r.unit),
        r.peer.spread(),
        r.ratio(),
        r.paired_ratio()
            .map_or("-".to_string(), |p| format!("{p:.2}x")),
        verdict,
        what = w.what,
        peer = w.peer,
    );
}

// ---------------------------------------------------------------- data

/// splitmix64: a fixed pseudo-random sequence.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------- peers

/// The Python of the peers: `TENSTORE_PYTHON`, else the repository's
/// `.venv`.
pub fn python() -> PathBuf {
    match std::env::var_os("TENSTORE_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}
