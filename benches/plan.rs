//! Shard scans and epoch plans: `cargo bench --bench plan`.
//!
//! Figures, each beside its peer from the same run, rounds interleaved
//! (the contenders take turns going first; one untimed round each first),
//! medians:
//!
//! - P plan setup for 10 M samples (criterion): `EpochPlan::new` + the
//!   first item, per shuffle; and the rate of handing out items.
//! - S1 hot-cache sequential scan of a shard store of the standard 12.7 KB
//!   sample (u1 3x64x64 `image`, f4 [10] `logits`, i8 [1] `label`):
//!   `reader.iter()` summing every byte of every tensor, with every
//!   record's crc32c checked (as every scan does), beside a plain `memmap2`
//!   map of the shard files summing the same bytes at offsets known in
//!   advance (the limit); and beside the same map checking each record's
//!   crc32c (one `crc32c` call over the record) before summing it.
//! - C1 cold-cache epochs of the same store (the shard files dropped from
//!   the page cache with `posix_fadvise(DONTNEED)` before each round, the
//!   reader opened after): `iter_plan` of shuffle `none` (storage order),
//!   `full` and `blocks:N`, each summing every byte, crc32c checked; with
//!   what the kernel read from disk per epoch (`/proc/self/io`).
//!
//! Options (after `--`): `--quick` (fewer rounds, 8,000 samples),
//! `--samples N` (store size), `--only P|S|C`.

use std::fs::{self, File};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ndarray::{Array1, Array3};
use tenstore::plan::{EpochPlan, PlanConfig, Shuffle};
use tenstore::store::{ShardOptions, ShardReader, ShardStore};
use tenstore::{TensorRef, Tensors};

mod common;
use common::{median, print_header, print_row, timed, Rates, Rng, Row, Unit, Widths};

const WIDTHS: Widths = Widths { what: 46, peer: 40 };

struct Config {
    quick: bool,
    only: Option<String>,
    samples: usize,
    rounds: usize,
}

impl Config {
    fn from_args() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1).cloned())
        };
        Config {
            quick,
            only: value("--only"),
            samples: value("--samples")
                .map(|s| s.parse().expect("--samples N"))
                .unwrap_or(if quick { 8_000 } else { 40_000 }),
            rounds: if quick { 3 } else { 7 },
        }
    }

    fn want(&self, id: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| id.starts_with(o.as_str()))
    }
}

// ---------------------------------------------------------------- P: plans

const PLAN_N: u64 = 10_000_000;

fn shuffles() -> [(&'static str, Shuffle); 4] {
    [
        ("none", Shuffle::None),
        ("full", Shuffle::Full),
        ("blocks:64", Shuffle::Blocks { size: 64 }),
        ("blocks:1024", Shuffle::Blocks { size: 1024 }),
    ]
}

fn plan_config(shuffle: Shuffle) -> PlanConfig {
    PlanConfig {
        seed: 7,
        epoch: 3,
        shuffle,
        rank: 1,
        world_size: 8,
        ..PlanConfig::default()
    }
}

fn plans(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan setup, 10M samples, rank 1 of 8");
    for (name, shuffle) in shuffles() {
        g.bench_function(name, |b| {
            b.iter(|| {
                let plan = EpochPlan::new(black_box(PLAN_N), plan_config(shuffle)).unwrap();
                black_box(plan.iter().next())
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("plan items, 10M samples, rank 1 of 8");
    const ITEMS: u64 = 100_000;
    g.throughput(Throughput::Elements(ITEMS));
    for (name, shuffle) in shuffles() {
        let plan = EpochPlan::new(PLAN_N, plan_config(shuffle)).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                plan.page(black_box(500_000), ITEMS)
                    .fold(0u64, u64::wrapping_add)
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------- the store

/// Writes `n` standard samples (12,704 bytes of tenbin each) into a new
/// shard store in `dir`.
fn build(dir: &Path, n: usize) {
    let store = ShardStore::open(
        dir,
        &ShardOptions {
            create: true,
            ..ShardOptions::default()
        },
    )
    .unwrap();
    let mut rng = Rng(11);
    const BATCH: usize = 256;
    for start in (0..n).step_by(BATCH) {
        let end = (start + BATCH).min(n);
        let arrays: Vec<_> = (start..end)
            .map(|i| {
                let seed = rng.next() as usize;
                (
                    Array3::from_shape_fn((3, 64, 64), |(c, y, x)| {
                        (c * 7 + y * 3 + x + seed) as u8
                    }),
                    Array1::from_shape_fn(10, |j| (i * 10 + j) as f32 * 0.5),
                    Array1::from(vec![(i % 1000) as i64]),
                )
            })
            .collect();
        let keys: Vec<Vec<u8>> = (start..end)
            .map(|i| format!("s{i:09}").into_bytes())
            .collect();
        let samples: Vec<(&[u8], [TensorRef<'_>; 3])> = keys
            .iter()
            .zip(&arrays)
            .map(|(k, (a, b, c))| {
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
        store.put_batch(&samples).unwrap();
    }
    store.flush().unwrap();
}

/// The `.ten` files of a shard store, in order.
fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ten"))
        .collect();
    v.sort();
    v
}

fn reader(dir: &Path) -> ShardReader {
    let options = ShardOptions {
        read_only: true,
        ..ShardOptions::default()
    };
    ShardStore::open(dir, &options).unwrap().reader().unwrap()
}

/// A sum of every byte, eight at a time.
fn checksum(d: &[u8]) -> u64 {
    let mut chunks = d.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        acc = acc.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()));
    }
    chunks
        .remainder()
        .iter()
        .fold(acc, |a, &b| a.wrapping_add(u64::from(b)))
}

/// Every tensor's bytes of the samples `items` yields, summed.
fn sum_samples<'r>(
    items: impl Iterator<Item = tenstore::store::Result<tenstore::store::Sample<'r>>>,
) -> (u64, u64) {
    let (mut acc, mut n) = (0u64, 0u64);
    for s in items {
        for t in s.unwrap().iter() {
            acc = acc.wrapping_add(checksum(t.data()));
        }
        n += 1;
    }
    (acc, n)
}

/// Rounds of every contender, each round in a rotated order after one
/// untimed round each: the rates of `work` per second.
fn interleaved(rounds: usize, work: f64, contenders: &mut [&mut dyn FnMut() -> f64]) -> Vec<Rates> {
    for c in contenders.iter_mut() {
        black_box(c());
    }
    let k = contenders.len();
    let mut out = vec![Rates::default(); k];
    for r in 0..rounds {
        for j in 0..k {
            let i = (r + j) % k;
            out[i].0.push(work / contenders[i]());
        }
    }
    out
}

// ---------------------------------------------------------------- S: scans

/// CPU seconds (user and system) this thread has used so far.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Wall and CPU seconds of `f`, kept in `cpu` (the CPU seconds are pushed).
fn both_timed(cpu: &mut Vec<f64>, f: impl FnOnce()) -> f64 {
    let c = thread_cpu();
    let t = timed(f);
    cpu.push(thread_cpu() - c);
    t
}

fn scans(cfg: &Config, dir: &Path, rows: &mut Vec<Row>) {
    let maps: Vec<memmap2::Mmap> = shard_files(dir)
        .iter()
        // SAFETY: the bench's own shard files, not changed while mapped.
        .map(|f| unsafe { memmap2::Mmap::map(&File::open(f).unwrap()) }.unwrap())
        .collect();
    // The data of every tensor but the key arrays, as (map, offset, len),
    // and every record (key array and tensors) as (map, offset, len).
    let mut ranges = Vec::new();
    let mut records: Vec<(usize, usize, usize)> = Vec::new();
    for (m, map) in maps.iter().enumerate() {
        for v in Tensors::parse(map).unwrap().iter() {
            let d = v.data();
            let at = d.as_ptr() as usize - map.as_ptr() as usize;
            if v.name() != "__key__" {
                ranges.push((m, at, d.len()));
            } else {
                // A tensor's chunks: a header chunk of 16 + 64 bytes (up
                // to 5 dims), then its data chunk's 16-byte prefix.
                assert!(v.shape().len() <= 5);
                if let Some(last) = records.last_mut().filter(|r| r.0 == m) {
                    last.2 = at - 96 - last.1;
                }
                records.push((m, at - 96, 0));
            }
        }
        if let Some(last) = records.last_mut().filter(|r| r.0 == m) {
            last.2 = map.len() - last.1;
        }
    }
    assert_eq!(records.len() * 3, ranges.len());
    let r = reader(dir);
    let bytes: usize = ranges.iter().map(|r| r.2).sum();
    let expect = ranges.iter().fold(0u64, |a, &(m, o, l)| {
        a.wrapping_add(checksum(&maps[m][o..o + l]))
    });
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let [cpu0, cpu1, cpu2] = &mut cpu;
    let mut ours = || {
        let mut acc = 0;
        let t = both_timed(cpu0, || acc = sum_samples(r.iter().unwrap()).0);
        assert_eq!(acc, expect, "the scan summed other bytes than the map");
        t
    };
    let mut peer = || {
        both_timed(cpu1, || {
            let acc = ranges.iter().fold(0u64, |a, &(m, o, l)| {
                a.wrapping_add(checksum(&maps[m][o..o + l]))
            });
            black_box(acc);
        })
    };
    // The plain map with the one check a scan may not skip: each record's
    // crc32c (one call over the record), then its three tensors summed.
    let mut peer_crc = || {
        both_timed(cpu2, || {
            let mut acc = 0u64;
            for (rec, t) in records.iter().zip(ranges.chunks_exact(3)) {
                let (m, o, l) = *rec;
                acc = acc.wrapping_add(u64::from(crc32c::crc32c(&maps[m][o..o + l])));
                for &(m, o, l) in t {
                    acc = acc.wrapping_add(checksum(&maps[m][o..o + l]));
                }
            }
            black_box(acc);
        })
    };
    let rates = interleaved(
        cfg.rounds,
        bytes as f64,
        &mut [&mut ours, &mut peer, &mut peer_crc],
    );
    let [ours, peer, peer_crc] = <[Rates; 3]>::try_from(rates).ok().unwrap();
    // Per CPU second of the scanning thread (the untimed first round left
    // out): what the scan costs, whatever else the machine runs.
    let per_cpu = |v: &Vec<f64>| Rates(v[1..].iter().map(|s| bytes as f64 / s).collect());
    let [c0, c1, c2] = cpu.each_ref().map(per_cpu);
    rows.push(Row {
        id: "S1",
        what: "shard iter(), sum of all bytes, crc32c checked".into(),
        unit: Unit::Bytes,
        ours: ours.clone(),
        peer_name: "memmap2 map, same bytes".into(),
        peer,
        paired: true,
        target: Some(0.8),
    });
    rows.push(Row {
        id: "",
        what: "  the same".into(),
        unit: Unit::Bytes,
        ours,
        peer_name: "map, crc32c per record, same bytes".into(),
        peer: peer_crc,
        paired: true,
        target: None,
    });
    rows.push(Row {
        id: "",
        what: "  per CPU second".into(),
        unit: Unit::Bytes,
        ours: c0.clone(),
        peer_name: "memmap2 map, per CPU second".into(),
        peer: c1,
        paired: true,
        target: Some(0.8),
    });
    rows.push(Row {
        id: "",
        what: "  per CPU second".into(),
        unit: Unit::Bytes,
        ours: c0,
        peer_name: "map + crc32c, per CPU second".into(),
        peer: c2,
        paired: true,
        target: None,
    });
}

// ---------------------------------------------------------------- C: cold

/// Drops the shard files' pages from the page cache (they must not be
/// mapped anywhere) and returns the fraction of pages still resident.
fn drop_cache(files: &[PathBuf]) -> f64 {
    use std::os::fd::AsRawFd;
    let (mut resident, mut pages) = (0usize, 0usize);
    for f in files {
        let file = File::open(f).unwrap();
        file.sync_all().unwrap();
        // SAFETY: an advice on an open descriptor; no memory is touched.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
        // SAFETY: the bench's own file, not changed while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let n = map.len().div_ceil(4096);
        let mut vec = vec![0u8; n];
        // SAFETY: `map` is a live mapping of `map.len()` bytes starting at a
        // page boundary, and `vec` has one byte per page of it.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore");
        resident += vec.iter().filter(|&&b| b & 1 == 1).count();
        pages += n;
    }
    resident as f64 / pages.max(1) as f64
}

/// Bytes this process has had read from storage so far.
fn read_bytes() -> u64 {
    let io = fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Parts of a cold epoch, the page cache emptied before each: the store
/// is this many times what the cache keeps.
const SEGMENTS: u64 = 4;

fn cold(cfg: &Config, dir: &Path, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let files = shard_files(dir);
    let store_bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let mut contenders: Vec<(String, Shuffle)> = vec![
        ("none".into(), Shuffle::None),
        ("full".into(), Shuffle::Full),
    ];
    for size in [64, 256, 1024] {
        contenders.push((format!("blocks:{size}"), Shuffle::Blocks { size }));
    }
    // The peer of storage order: a plain map of each shard file summing
    // the same bytes at offsets known in advance (found before the rounds):
    // (file, offset, length) of every tensor but the key arrays.
    let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        // SAFETY: the bench's own shard files, not changed while mapped.
        let map = unsafe { memmap2::Mmap::map(&File::open(f).unwrap()) }.unwrap();
        for v in Tensors::parse(&map).unwrap().iter() {
            if v.name() != "__key__" {
                let d = v.data();
                ranges.push((fi, d.as_ptr() as usize - map.as_ptr() as usize, d.len()));
            }
        }
    }
    contenders.push(("memmap".into(), Shuffle::None));
    let k = contenders.len();
    let mut rates = vec![Rates::default(); k];
    let mut disk = vec![Vec::new(); k];
    let mut worst_resident = 0f64;
    let rounds = if cfg.quick { 1 } else { 3 };
    let n = cfg.samples as u64;
    for r in 0..rounds {
        for j in 0..k {
            let i = (r + j) % k;
            let before = read_bytes();
            let mut secs = 0.0;
            let mut seen = 0u64;
            // The epoch in SEGMENTS parts, the page cache emptied before
            // each: the cache holds at most a part's reads.
            for seg in 0..SEGMENTS {
                worst_resident = worst_resident.max(drop_cache(&files));
                let (from, to) = (n * seg / SEGMENTS, n * (seg + 1) / SEGMENTS);
                let t = Instant::now();
                if i == k - 1 {
                    // Three tensors per sample.
                    let mut acc = 0u64;
                    let maps: Vec<memmap2::Mmap> = files
                        .iter()
                        // SAFETY: the bench's own shard files, not changed
                        // while mapped.
                        .map(|f| unsafe { memmap2::Mmap::map(&File::open(f).unwrap()) }.unwrap())
                        .collect();
                    for &(fi, o, l) in &ranges[from as usize * 3..to as usize * 3] {
                        acc = acc.wrapping_add(checksum(&maps[fi][o..o + l]));
                    }
                    black_box(acc);
                    seen += to - from;
                } else {
                    let reader = reader(dir);
                    let config = PlanConfig {
                        seed: 5,
                        epoch: r as u64,
                        shuffle: contenders[i].1,
                        ..PlanConfig::default()
                    };
                    let plan = EpochPlan::new(reader.len().unwrap(), config)
                        .unwrap()
                        .resume_from(from);
                    let items = reader.iter_plan(&plan).unwrap().take((to - from) as usize);
                    let (acc, got) = sum_samples(items);
                    black_box(acc);
                    seen += got;
                }
                secs += t.elapsed().as_secs_f64();
            }
            assert_eq!(seen, n);
            rates[i].0.push(n as f64 / secs);
            disk[i].push((read_bytes() - before) as f64);
        }
    }
    notes.push(format!(
        "C1: store {:.0} MB in {} shard(s); at most {:.1}% of its pages were resident after dropping them; each epoch in {SEGMENTS} parts, the cache emptied before each; {} round(s)",
        store_bytes as f64 / 1e6,
        files.len(),
        worst_resident * 100.0,
        rounds
    ));
    for (i, (name, _)) in contenders.iter().enumerate() {
        notes.push(format!(
            "C1: {name:<12} {:>10}  read from disk per epoch {:.0} MB ({:.2}x the store)",
            common::rate(rates[i].median(), Unit::Ops),
            median(&disk[i]) / 1e6,
            median(&disk[i]) / store_bytes as f64
        ));
    }
    rows.push(Row {
        id: "C1",
        what: "cold epoch, none (storage order)".into(),
        unit: Unit::Ops,
        ours: rates[0].clone(),
        peer_name: "cold plain memmap, same bytes".into(),
        peer: rates[k - 1].clone(),
        paired: true,
        target: Some(0.8),
    });
    for i in 2..k - 1 {
        rows.push(Row {
            id: "",
            what: format!("cold epoch, {} (samples/s)", contenders[i].0),
            unit: Unit::Ops,
            ours: rates[i].clone(),
            peer_name: "cold epoch, full".into(),
            peer: rates[1].clone(),
            paired: true,
            target: Some(3.0),
        });
        rows.push(Row {
            id: "",
            what: "  the same".into(),
            unit: Unit::Ops,
            ours: rates[i].clone(),
            peer_name: "cold epoch, none (storage order)".into(),
            peer: rates[0].clone(),
            paired: true,
            target: Some(0.8),
        });
    }
}

fn main() {
    let cfg = Config::from_args();
    if cfg.want("P") {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(if cfg.quick { 1 } else { 3 }));
        plans(&mut c);
        c.final_summary();
    }
    if !cfg.want("S") && !cfg.want("C") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    eprintln!("building a shard store of {} samples ...", cfg.samples);
    build(&dir, cfg.samples);
    #[cfg(target_arch = "x86_64")]
    eprintln!(
        "crc32c: SSE4.2 {}",
        if std::arch::is_x86_feature_detected!("sse4.2") {
            "detected (the crc32c crate uses the crc32 instruction)"
        } else {
            "NOT detected (software crc32c)"
        }
    );
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    if cfg.want("S") {
        eprintln!("S1 ...");
        scans(&cfg, &dir, &mut rows);
    }
    if cfg.want("C") {
        eprintln!("C1 ...");
        cold(&cfg, &dir, &mut rows, &mut notes);
    }
    print_header(WIDTHS);
    for r in &rows {
        print_row(r, WIDTHS);
    }
    for n in notes {
        println!("{n}");
    }
}
