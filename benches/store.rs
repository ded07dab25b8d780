//! The stores beside their peers, each figure and its peer timed in the same
//! run with rounds interleaved (ours, peer, peer, ours, ...), so that load
//! from other processes hits both alike: `cargo bench --bench store`.
//!
//! Workloads (hot cache: every store is written, then read while its pages
//! are in the page cache):
//!
//! - `med`: 10,000 samples of u1 3x64x64 "image", f4 [10] "logits",
//!   i8 [1] "label", 12,704 bytes of tenbin each;
//! - `1MiB`: 256 samples of one f4 [262144] "x" (1 MiB of data);
//! - `100B`: 100,000 samples of one u1 [100] "x" (224 bytes of tenbin).
//!
//! Figures:
//!
//! - A1 LMDB random `get` + an `array::<T>()` view of every tensor, one
//!   element of each read, beside a raw heed `get` of the same keys on an
//!   identical copy of the environment reading the same bytes; then the
//!   same get without the layout cache and the prefetch of the value's
//!   ends (`get_raw` + `Tensors::parse`), to show what they are worth;
//!   the same get beside a raw get that also reads the value's first byte
//!   (the line a check cannot skip); and the views at a fixed rank
//!   (`array_d`).
//! - A2 the same beside Python `lmdb` + `webdataset.tenbin.decode_buffer`
//!   on the same store and keys (`benches/py/lmdb_get.py`).
//! - A3 LMDB `put_batch` (no_sync, into a fresh store) beside raw heed
//!   `put_reserved` of the same encoded bytes in batches of the same size.
//! - A4 the 1 MiB (GB/s; every byte of the data summed) and 100-byte
//!   (ops/s) workloads through A1 and A3.
//! - B1 shard store scan in write order reading one byte per 4 KiB page of
//!   every tensor's data (and, second, summing all of it) beside the same
//!   reads from a plain `memmap2` map of the shard file.
//! - B2 shard random `get` beside the LMDB store's, same data and keys.
//! - B3 shard append (`Durability::Close`) beside `write_all` of the same
//!   record bytes to a plain file; then closing (which syncs) beside
//!   `sync_data`.
//! - B4 shard store open time at 10k, 100k and 1M tiny samples (u1 [8]):
//!   read-only open + first reader (what a reading process pays), writable
//!   open (lock, recovery check, index), beside LMDB's open of the same
//!   samples; and how the time per sample grows with the count.
//!
//! Pass `--quick` (after `--`) for fewer rounds and samples, and `--only
//! ID` for the figures whose id starts with ID (`A`, `B2`, ...). Set `TENSTORE_PYTHON` to the Python with
//! `lmdb` and `webdataset` (default: `.venv/bin/python`).

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};
use ndarray::{Array1, Array3, Ix1, Ix3};
use serde_json::Value;
use tenstore::store::{
    Durability, LmdbOptions, LmdbStore, Sample, ShardOptions, ShardReader, ShardStore,
};
use tenstore::{encode_buffer, DType, TensorRef, Tensors};

mod common;
use common::{paired, print_header, print_row, python, timed, Rates, Rng, Row, Unit, Widths, MIB};

const PAGE: usize = 4096;
const MAP_SIZE: usize = 8 << 30;

/// Column widths of the table.
const WIDTHS: Widths = Widths { what: 44, peer: 34 };

// ---------------------------------------------------------------- data

/// `len` indices below `n`: shuffled passes over 0..n, so every sample is
/// read equally often in a random order.
fn random_order(n: usize, len: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let mut pass: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            pass.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        out.extend(pass.into_iter().take(len - out.len()));
    }
    out
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// u1 3x64x64 "image", f4 [10] "logits", i8 [1] "label".
    Med,
    /// One f4 [262144] "x": 1 MiB.
    Big,
    /// One u1 [n] "x": tiny samples.
    Tiny(usize),
}

/// Samples of one workload: keys, arrays, their tenbin encodings.
struct Pool {
    kind: Kind,
    keys: Vec<Vec<u8>>,
    med: Vec<(Array3<u8>, Array1<f32>, Array1<i64>)>,
    big: Vec<Array1<f32>>,
    tiny: Vec<Array1<u8>>,
    encoded: Vec<Vec<u8>>,
    /// Byte offsets, within a value, of what `touch` reads.
    touched: Vec<usize>,
}

const BIG_ELEMS: usize = MIB / 4;

/// One to three tensors of a sample, inline.
struct Refs<'a> {
    refs: [TensorRef<'a>; 3],
    len: usize,
}

impl<'a> AsRef<[TensorRef<'a>]> for Refs<'a> {
    fn as_ref(&self) -> &[TensorRef<'a>] {
        &self.refs[..self.len]
    }
}

impl Pool {
    fn new(kind: Kind, n: usize) -> Pool {
        let mut p = Pool {
            kind,
            keys: (0..n).map(|i| format!("s{i:09}").into_bytes()).collect(),
            med: Vec::new(),
            big: Vec::new(),
            tiny: Vec::new(),
            encoded: Vec::new(),
            touched: Vec::new(),
        };
        for i in 0..n {
            match kind {
                Kind::Med => p.med.push((
                    Array3::from_shape_fn((3, 64, 64), |(c, y, x)| (c * 7 + y * 3 + x + i) as u8),
                    Array1::from_shape_fn(10, |j| (i * 10 + j) as f32 * 0.5),
                    Array1::from(vec![(i % 1000) as i64]),
                )),
                Kind::Big => p.big.push(Array1::from_shape_fn(BIG_ELEMS, |j| {
                    ((i + j) % 1000) as f32
                })),
                Kind::Tiny(len) => p.tiny.push(Array1::from_shape_fn(len, |j| (i + j) as u8)),
            }
        }
        p.encoded = (0..n)
            .map(|i| encode_buffer(p.refs(i).as_ref()).unwrap())
            .collect();
        // What `touch` reads, as offsets into the value.
        let first = &p.encoded[0];
        let t = Tensors::parse(first).unwrap();
        let off = |k: usize, byte: usize| {
            t.get(k).unwrap().data().as_ptr() as usize - first.as_ptr() as usize + byte
        };
        p.touched = match kind {
            Kind::Med => vec![off(0, 3 * 64 * 64 - 1), off(1, 9 * 4), off(2, 0)],
            // The data's start: `touch_raw_big` reads all of it.
            Kind::Big => vec![off(0, 0)],
            Kind::Tiny(len) => vec![off(0, len - 1)],
        };
        p
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// The sample's tensors, without allocating (as a caller with arrays at
    /// hand builds them).
    fn refs(&self, i: usize) -> Refs<'_> {
        match self.kind {
            Kind::Med => {
                let (a, b, c) = &self.med[i];
                Refs {
                    refs: [
                        TensorRef::from_array("image", a).unwrap(),
                        TensorRef::from_array("logits", b).unwrap(),
                        TensorRef::from_array("label", c).unwrap(),
                    ],
                    len: 3,
                }
            }
            Kind::Big | Kind::Tiny(_) => {
                let x = match self.kind {
                    Kind::Big => TensorRef::from_array("x", &self.big[i]).unwrap(),
                    _ => TensorRef::from_array("x", &self.tiny[i]).unwrap(),
                };
                let empty = TensorRef::raw("", DType::U8, &[0], &[]).unwrap();
                Refs {
                    refs: [x, empty, empty],
                    len: 1,
                }
            }
        }
    }

    fn value_bytes(&self) -> usize {
        self.encoded[0].len()
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Med => "med",
            Kind::Big => "1MiB",
            Kind::Tiny(_) => "100B",
        }
    }
}

/// What a reader does with a sample: a typed zero-copy view of every
/// tensor, reading one element of each (all of the 1 MiB data).
fn touch(kind: Kind, s: &Sample<'_>) -> u64 {
    match kind {
        Kind::Med => {
            let image = s.get(0).unwrap().array::<u8>().unwrap();
            let logits = s.get(1).unwrap().array::<f32>().unwrap();
            let label = s.get(2).unwrap().array::<i64>().unwrap();
            u64::from(image[[2, 63, 63]]) + logits[[9]].to_bits() as u64 + label[[0]] as u64
        }
        Kind::Big => {
            let x = s.get(0).unwrap().array::<f32>().unwrap();
            sum_f32_bits(x.as_slice().unwrap())
        }
        Kind::Tiny(len) => u64::from(s.get(0).unwrap().array::<u8>().unwrap()[[len - 1]]),
    }
}

/// `touch` by name, as a user who does not keep indexes writes it.
fn touch_by_name(s: &Sample<'_>) -> u64 {
    let image = s.get_by_name("image").unwrap().array::<u8>().unwrap();
    let logits = s.get_by_name("logits").unwrap().array::<f32>().unwrap();
    let label = s.get_by_name("label").unwrap().array::<i64>().unwrap();
    u64::from(image[[2, 63, 63]]) + logits[[9]].to_bits() as u64 + label[[0]] as u64
}

/// A sum of the bit patterns of `x`: reads every byte.
fn sum_f32_bits(x: &[f32]) -> u64 {
    x.iter()
        .fold(0u64, |a, v| a.wrapping_add(u64::from(v.to_bits())))
}

/// The raw side of `touch` for 1 MiB samples: the same sum over the value's
/// data bytes (16-byte aligned in LMDB's overflow pages).
fn touch_raw_big(data_at: usize, v: &[u8]) -> u64 {
    sum_f32_bits(bytemuck::cast_slice(&v[data_at..data_at + MIB]))
}

/// The least any tenbin reader must do to find the tensors of a value: walk
/// the chunk prefixes (each chunk's length says where the next one is),
/// checking nothing. Returns a byte of each prefix.
fn chunk_walk(v: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut at = 0;
    while at + 16 <= v.len() {
        let len = u64::from_le_bytes(v[at + 8..at + 16].try_into().unwrap()) as usize;
        acc = acc.wrapping_add(u64::from(v[at]));
        at += 16 + len.div_ceil(64) * 64;
    }
    acc
}

/// The raw side of `touch`: the same bytes of the value.
fn touch_raw(touched: &[usize], v: &[u8]) -> u64 {
    touched
        .iter()
        .fold(0u64, |a, &o| a.wrapping_add(u64::from(v[o])))
}

// ---------------------------------------------------------------- stores

fn lmdb_options() -> LmdbOptions {
    LmdbOptions {
        create: true,
        no_sync: true,
        map_size: MAP_SIZE,
        ..Default::default()
    }
}

/// Writes the whole pool in batches of `batch`.
fn lmdb_fill(store: &LmdbStore, pool: &Pool, batch: usize) {
    for start in (0..pool.len()).step_by(batch) {
        let end = (start + batch).min(pool.len());
        let samples: Vec<(&[u8], Refs<'_>)> = (start..end)
            .map(|i| (&pool.keys[i][..], pool.refs(i)))
            .collect();
        store.put_batch(&samples).unwrap();
    }
}

fn raw_env(dir: &Path, no_sync: bool) -> (Env<WithoutTls>, Database<Bytes, Bytes>) {
    fs::create_dir_all(dir).unwrap();
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(MAP_SIZE).max_readers(254);
    if no_sync {
        // SAFETY: a benchmark's throwaway environment; losing its last
        // commits in a crash does not matter.
        unsafe {
            opts.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: this process alone opens the directory, and nothing changes
    // its files behind LMDB's back.
    let env = unsafe { opts.open(dir) }.unwrap();
    let mut wtxn = env.write_txn().unwrap();
    let db = env.create_database(&mut wtxn, None).unwrap();
    wtxn.commit().unwrap();
    (env, db)
}

/// Raw heed: the pool's encoded bytes, `put_reserved` in batches.
fn raw_fill(env: &Env<WithoutTls>, db: &Database<Bytes, Bytes>, pool: &Pool, batch: usize) {
    for start in (0..pool.len()).step_by(batch) {
        let end = (start + batch).min(pool.len());
        let mut wtxn = env.write_txn().unwrap();
        for i in start..end {
            let v = &pool.encoded[i];
            db.put_reserved(&mut wtxn, &pool.keys[i], v.len(), |space| {
                space.write_all(v)
            })
            .unwrap();
        }
        wtxn.commit().unwrap();
    }
}

fn shard_options(durability: Durability) -> ShardOptions {
    ShardOptions {
        create: true,
        durability,
        ..Default::default()
    }
}

fn shard_fill(store: &ShardStore, pool: &Pool, batch: usize) {
    for start in (0..pool.len()).step_by(batch) {
        let end = (start + batch).min(pool.len());
        let samples: Vec<(&[u8], Refs<'_>)> = (start..end)
            .map(|i| (&pool.keys[i][..], pool.refs(i)))
            .collect();
        store.put_batch(&samples).unwrap();
    }
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

// ---------------------------------------------------------------- config

struct Config {
    quick: bool,
    /// `--only X`: run the figures whose id starts with X.
    only: Option<String>,
    rounds: usize,
    scratch: tempfile::TempDir,
}

impl Config {
    /// Whether figure `id` (or its part) is to run.
    fn want(&self, id: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| id.starts_with(o) || o.starts_with(id))
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.scratch.path().join(name);
        let _ = fs::remove_dir_all(&d);
        d
    }
    /// `n`, or a tenth of it with `--quick`.
    fn n(&self, n: usize) -> usize {
        if self.quick {
            (n / 10).max(1)
        } else {
            n
        }
    }
}

// ---------------------------------------------------------------- A: LMDB

/// A1 (and A4 gets): random gets, tenstore beside raw heed.
fn lmdb_get(cfg: &Config, pool: &Pool, store: &LmdbStore, rows: &mut Vec<Row>, id: &'static str) {
    // An identical copy of the environment for raw heed (heed refuses to
    // open one environment twice in a process).
    store.flush().unwrap();
    let copy = cfg.dir(&format!("lmdb-copy-{}", pool.name()));
    fs::create_dir_all(&copy).unwrap();
    fs::copy(store.path().join("data.mdb"), copy.join("data.mdb")).unwrap();
    let (env, db) = raw_env(&copy, true);

    let gets = match pool.kind {
        Kind::Med => cfg.n(200_000),
        Kind::Big => cfg.n(4096).max(512),
        Kind::Tiny(_) => cfg.n(1_000_000),
    };
    let order = random_order(pool.len(), gets, 7);
    let keys: Vec<&[u8]> = order.iter().map(|&i| &pool.keys[i][..]).collect();
    let reader = store.reader().unwrap();
    let rtxn = env.read_txn().unwrap();
    let kind = pool.kind;
    let (work, unit) = match kind {
        Kind::Big => ((gets * pool.value_bytes()) as f64, Unit::Bytes),
        _ => (gets as f64, Unit::Ops),
    };
    let ours_get = || {
        timed(|| {
            let mut acc = 0u64;
            for k in &keys {
                let s = reader.get(k).unwrap().unwrap();
                acc = acc.wrapping_add(touch(kind, &s));
            }
            black_box(acc);
        })
    };
    let raw_get = || {
        timed(|| {
            let mut acc = 0u64;
            for k in &keys {
                let v = db.get(&rtxn, k).unwrap().unwrap();
                acc = acc.wrapping_add(match kind {
                    Kind::Big => touch_raw_big(pool.touched[0], v),
                    _ => touch_raw(&pool.touched, v),
                });
            }
            black_box(acc);
        })
    };
    let (ours, peer) = paired(cfg.rounds, work, ours_get, raw_get);
    let what = match kind {
        Kind::Med => "LMDB get + 3 views, 1 elem each (med)".to_string(),
        Kind::Big => "LMDB get + view, sum all data (1MiB)".to_string(),
        Kind::Tiny(_) => "LMDB get + view, 1 elem (100B)".to_string(),
    };
    push(
        rows,
        Row {
            id,
            what,
            unit,
            ours,
            peer_name: "raw heed get + same bytes".into(),
            peer,
            paired: true,
            target: Some(if kind == Kind::Med { 0.8 } else { 0.7 }),
        },
    );
    // The format's floor: a raw get that also walks the chunk prefixes.
    let (ours, peer) = paired(cfg.rounds, work, ours_get, || {
        timed(|| {
            let mut acc = 0u64;
            for k in &keys {
                let v = db.get(&rtxn, k).unwrap().unwrap();
                acc = acc.wrapping_add(chunk_walk(v));
                acc = acc.wrapping_add(match kind {
                    Kind::Big => touch_raw_big(pool.touched[0], v),
                    _ => touch_raw(&pool.touched, v),
                });
            }
            black_box(acc);
        })
    });
    push(
        rows,
        Row {
            id: "",
            what: "  the same".into(),
            unit,
            ours,
            peer_name: "raw get + bare chunk walk + same".into(),
            peer,
            paired: true,
            target: None,
        },
    );
    // The same without reading anything: the cost of the lookup itself.
    let (ours, peer) = paired(
        cfg.rounds,
        work,
        || {
            timed(|| {
                for k in &keys {
                    black_box(reader.get(k).unwrap().unwrap());
                }
            })
        },
        || {
            timed(|| {
                for k in &keys {
                    black_box(db.get(&rtxn, k).unwrap().unwrap());
                }
            })
        },
    );
    push(
        rows,
        Row {
            id: "",
            what: format!("  get (parse), no view ({})", pool.name()),
            unit,
            ours,
            peer_name: "raw heed get, nothing read".into(),
            peer,
            paired: true,
            target: None,
        },
    );
    if kind == Kind::Med {
        // What `get` does without prefetching the value's ends: its own
        // `Tensors::parse` over `get_raw`'s bytes, then the same views.
        let (ours, peer) = paired(
            cfg.rounds,
            work,
            || {
                timed(|| {
                    let mut acc = 0u64;
                    for k in &keys {
                        let t = Tensors::parse(reader.get_raw(k).unwrap().unwrap()).unwrap();
                        let image = t.get(0).unwrap().array::<u8>().unwrap();
                        let logits = t.get(1).unwrap().array::<f32>().unwrap();
                        let label = t.get(2).unwrap().array::<i64>().unwrap();
                        acc = acc.wrapping_add(
                            u64::from(image[[2, 63, 63]])
                                + logits[[9]].to_bits() as u64
                                + label[[0]] as u64,
                        );
                    }
                    black_box(acc);
                })
            },
            raw_get,
        );
        push(
            rows,
            Row {
                id: "",
                what: "  get_raw + parse, no prefetch, 3 views".into(),
                unit,
                ours,
                peer_name: "raw heed get + same bytes".into(),
                peer,
                paired: true,
                target: None,
            },
        );
    }
    if kind == Kind::Med {
        // The floor of any get that checks the value: it must read the
        // first header, at the value's start (a line, and a page, that the
        // raw peer never touches), besides the bytes the peer reads.
        let floor = |v: &[u8]| u64::from(v[0]).wrapping_add(touch_raw(&pool.touched, v));
        let (ours, peer) = paired(cfg.rounds, work, ours_get, || {
            timed(|| {
                let mut acc = 0u64;
                for k in &keys {
                    acc = acc.wrapping_add(floor(db.get(&rtxn, k).unwrap().unwrap()));
                }
                black_box(acc);
            })
        });
        push(
            rows,
            Row {
                id: "",
                what: "  the same".into(),
                unit,
                ours,
                peer_name: "raw get + byte 0 + same bytes".into(),
                peer,
                paired: true,
                target: None,
            },
        );
    }
    if kind == Kind::Med {
        // The same views at a rank the caller knows (`array_d`): no
        // dynamic shape is built, and indexing is fixed-rank too.
        let (ours, peer) = paired(
            cfg.rounds,
            work,
            || {
                timed(|| {
                    let mut acc = 0u64;
                    for k in &keys {
                        let s = reader.get(k).unwrap().unwrap();
                        let image = s.get(0).unwrap().array_d::<u8, Ix3>().unwrap();
                        let logits = s.get(1).unwrap().array_d::<f32, Ix1>().unwrap();
                        let label = s.get(2).unwrap().array_d::<i64, Ix1>().unwrap();
                        acc = acc.wrapping_add(
                            u64::from(image[[2, 63, 63]])
                                + logits[9].to_bits() as u64
                                + label[0] as u64,
                        );
                    }
                    black_box(acc);
                })
            },
            raw_get,
        );
        push(
            rows,
            Row {
                id: "",
                what: "  get + 3 fixed-rank views (array_d)".into(),
                unit,
                ours,
                peer_name: "raw heed get + same bytes".into(),
                peer,
                paired: true,
                target: None,
            },
        );
    }
    if kind == Kind::Med {
        let (ours, peer) = paired(
            cfg.rounds,
            work,
            || {
                timed(|| {
                    let mut acc = 0u64;
                    for k in &keys {
                        acc = acc.wrapping_add(touch_by_name(&reader.get(k).unwrap().unwrap()));
                    }
                    black_box(acc);
                })
            },
            raw_get,
        );
        push(
            rows,
            Row {
                id: "",
                what: "  get + 3 views by name (med)".into(),
                unit,
                ours,
                peer_name: "raw heed get + same bytes".into(),
                peer,
                paired: true,
                target: None,
            },
        );
    }
}

/// A2: random gets beside Python's lmdb + tenbin on the same store: both
/// sides get the same keys in the same order per round, after one untimed
/// round of them. A Python that cannot run the peer is an error: the
/// figure is never skipped.
///
/// Python's `lmdb` (LMDB 0.9) and heed's LMDB (mdb.master) cannot share a
/// lock file, so the store is closed while Python reads it with its lock
/// file (what a user writes: `lmdb.open(dir, readonly=True)`), then opened
/// again for the Rust side.
fn lmdb_vs_python(cfg: &Config, pool: &Pool, store: LmdbStore, rows: &mut Vec<Row>) {
    let gets = cfg.n(20_000);
    let order = random_order(pool.len(), gets, 11);
    // A round: the random keys ten times over (one pass is short enough
    // for a neighbour's burst to skew it), on both sides.
    let keys: Vec<&[u8]> = order
        .iter()
        .cycle()
        .take(10 * order.len())
        .map(|&i| &pool.keys[i][..])
        .collect();
    let keys_file = cfg.scratch.path().join("keys.txt");
    let mut text = Vec::new();
    for k in &keys {
        text.extend_from_slice(k);
        text.push(b'\n');
    }
    fs::write(&keys_file, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/py/lmdb_get.py");
    store.flush().unwrap();
    let dir = store.path().to_owned();
    drop(store);
    eprintln!("  running {} ...", script.display());
    let out = Command::new(python())
        .arg(&script)
        .arg("--store")
        .arg(&dir)
        .arg("--keys")
        .arg(&keys_file)
        .arg("--rounds")
        .arg(cfg.rounds.to_string())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "error: A2: the Python peer {} failed ({}):\n{}\n\
                 Set TENSTORE_PYTHON to a Python with lmdb and webdataset, or pick \
                 other figures with --only (e.g. --only A1).",
                script.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!(
                "error: A2: cannot run {}: {e}\n\
                 Set TENSTORE_PYTHON to a Python with lmdb and webdataset, or pick \
                 other figures with --only (e.g. --only A1).",
                python().display()
            );
            std::process::exit(2);
        }
    };
    // Ours right after, with the same keys, the same untimed first round
    // and the same number of rounds.
    let store = LmdbStore::open(&dir, &lmdb_options()).unwrap();
    let reader = store.reader().unwrap();
    let mut ours = Vec::new();
    for r in 0..=cfg.rounds {
        let t = timed(|| {
            let mut acc = 0u64;
            for k in &keys {
                acc = acc.wrapping_add(touch(Kind::Med, &reader.get(k).unwrap().unwrap()));
            }
            black_box(acc);
        });
        if r > 0 {
            ours.push(keys.len() as f64 / t);
        }
    }
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if lines.len() != 2 {
        eprintln!("error: A2: the Python peer printed {lines:?}, not its two variants");
        std::process::exit(2);
    }
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let ops = v["ops"].as_f64().unwrap();
        if ops != keys.len() as f64 {
            eprintln!(
                "error: A2: the Python peer did {ops} gets a round, this side {}",
                keys.len()
            );
            std::process::exit(2);
        }
        let peer: Vec<f64> = v["round_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| ops / t.as_f64().unwrap())
            .collect();
        let name = v["name"].as_str().unwrap();
        let (peer_name, target) = match name {
            "bytes" => ("py lmdb get + tenbin.decode_buffer", Some(40.0)),
            _ => ("  same, buffers=True (no copy)", None),
        };
        push(
            rows,
            Row {
                id: if target.is_some() { "A2" } else { "" },
                what: "LMDB get + 3 views, 1 elem each (med)".into(),
                unit: Unit::Ops,
                ours: Rates(ours.clone()),
                peer_name: peer_name.into(),
                peer: Rates(peer),
                paired: false,
                target,
            },
        );
    }
}

/// A3 (and A4 puts): batch puts into a fresh store, tenstore beside raw
/// heed `put_reserved` of the same bytes.
fn lmdb_put(cfg: &Config, pool: &Pool, batch: usize, rows: &mut Vec<Row>, id: &'static str) {
    let round = std::cell::Cell::new(0);
    let (work, unit) = match pool.kind {
        Kind::Big => ((pool.len() * pool.value_bytes()) as f64, Unit::Bytes),
        _ => (pool.len() as f64, Unit::Ops),
    };
    let (ours, peer) = paired(
        cfg.rounds.min(7),
        work,
        || {
            round.set(round.get() + 1);
            let dir = cfg.dir(&format!("put-ours-{}", round.get()));
            let store = LmdbStore::open(&dir, &lmdb_options()).unwrap();
            let t = timed(|| lmdb_fill(&store, pool, batch));
            drop(store);
            fs::remove_dir_all(&dir).unwrap();
            t
        },
        || {
            round.set(round.get() + 1);
            let dir = cfg.dir(&format!("put-raw-{}", round.get()));
            let (env, db) = raw_env(&dir, true);
            let t = timed(|| raw_fill(&env, &db, pool, batch));
            drop(env);
            fs::remove_dir_all(&dir).unwrap();
            t
        },
    );
    push(
        rows,
        Row {
            id,
            what: format!("LMDB put_batch x{batch}, no_sync, fresh ({})", pool.name()),
            unit,
            ours,
            peer_name: "raw heed put_reserved, same bytes".into(),
            peer,
            paired: true,
            target: Some(0.8),
        },
    );
}

fn part_a(cfg: &Config, rows: &mut Vec<Row>) {
    eprintln!("A: building the LMDB store (med) ...");
    let pool = Pool::new(Kind::Med, cfg.n(10_000));
    let dir = cfg.dir("lmdb-med");
    let store = LmdbStore::open(&dir, &lmdb_options()).unwrap();
    lmdb_fill(&store, &pool, 1000);
    if cfg.want("A1") {
        eprintln!("A1 ...");
        lmdb_get(cfg, &pool, &store, rows, "A1");
    }
    if cfg.want("A2") {
        eprintln!("A2 ...");
        lmdb_vs_python(cfg, &pool, store, rows);
    } else {
        drop(store);
    }
    if cfg.want("A3") {
        eprintln!("A3 ...");
        lmdb_put(cfg, &pool, 1000, rows, "A3");
    }
    drop(pool);
    if !cfg.want("A4") {
        return;
    }

    eprintln!("A4: 1 MiB samples ...");
    let pool = Pool::new(Kind::Big, cfg.n(256).max(32));
    let store = LmdbStore::open(cfg.dir("lmdb-big"), &lmdb_options()).unwrap();
    lmdb_fill(&store, &pool, 32);
    lmdb_get(cfg, &pool, &store, rows, "A4");
    lmdb_put(cfg, &pool, 32, rows, "A4");
    drop(store);
    drop(pool);

    eprintln!("A4: 100-byte samples ...");
    let pool = Pool::new(Kind::Tiny(100), cfg.n(100_000));
    let store = LmdbStore::open(cfg.dir("lmdb-tiny"), &lmdb_options()).unwrap();
    lmdb_fill(&store, &pool, 1000);
    lmdb_get(cfg, &pool, &store, rows, "A4");
    lmdb_put(cfg, &pool, 1000, rows, "A4");
}

// ---------------------------------------------------------------- B: shards

/// Byte ranges of every non-key tensor's data in a shard file's bytes.
fn data_ranges(map: &[u8]) -> Vec<(usize, usize)> {
    let t = Tensors::parse(map).unwrap();
    t.iter()
        .filter(|v| v.name() != "__key__")
        .map(|v| {
            let d = v.data();
            (d.as_ptr() as usize - map.as_ptr() as usize, d.len())
        })
        .collect()
}

fn touch_pages(d: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut i = 0;
    while i < d.len() {
        acc = acc.wrapping_add(u64::from(d[i]));
        i += PAGE;
    }
    acc
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

/// B1: a scan in write order beside the same reads of a plain map.
fn shard_scan(cfg: &Config, pool: &Pool, reader: &ShardReader, dir: &Path, rows: &mut Vec<Row>) {
    let files = shard_files(dir);
    let maps: Vec<memmap2::Mmap> = files
        .iter()
        // SAFETY: the bench's own shard files, not changed while mapped.
        .map(|f| unsafe { memmap2::Mmap::map(&File::open(f).unwrap()) }.unwrap())
        .collect();
    let ranges: Vec<Vec<(usize, usize)>> = maps.iter().map(|m| data_ranges(m)).collect();
    let total: usize = pool.len() * pool.value_bytes();
    for (how, f) in [
        ("1 byte/4KiB page", touch_pages as fn(&[u8]) -> u64),
        ("sum of all bytes", checksum as fn(&[u8]) -> u64),
    ] {
        let (ours, peer) = paired(
            cfg.rounds,
            total as f64,
            || {
                timed(|| {
                    let mut acc = 0u64;
                    for s in reader.iter().unwrap() {
                        for t in s.unwrap().iter() {
                            acc = acc.wrapping_add(f(t.data()));
                        }
                    }
                    black_box(acc);
                })
            },
            || {
                timed(|| {
                    let mut acc = 0u64;
                    for (m, rs) in maps.iter().zip(&ranges) {
                        for &(o, l) in rs {
                            acc = acc.wrapping_add(f(&m[o..o + l]));
                        }
                    }
                    black_box(acc);
                })
            },
        );
        let floor = paired(
            cfg.rounds,
            total as f64,
            || {
                timed(|| {
                    let mut acc = 0u64;
                    for s in reader.iter().unwrap() {
                        for t in s.unwrap().iter() {
                            acc = acc.wrapping_add(f(t.data()));
                        }
                    }
                    black_box(acc);
                })
            },
            || {
                timed(|| {
                    let mut acc = 0u64;
                    for (m, rs) in maps.iter().zip(&ranges) {
                        acc = acc.wrapping_add(chunk_walk(m));
                        for &(o, l) in rs {
                            acc = acc.wrapping_add(f(&m[o..o + l]));
                        }
                    }
                    black_box(acc);
                })
            },
        );
        push(
            rows,
            Row {
                id: if how.starts_with('1') { "B1" } else { "" },
                what: format!("shard iter(), {how} ({})", pool.name()),
                unit: Unit::Bytes,
                ours,
                peer_name: "memmap2 map, same bytes".into(),
                peer,
                paired: true,
                target: if how.starts_with('1') {
                    Some(0.8)
                } else {
                    None
                },
            },
        );
        push(
            rows,
            Row {
                id: "",
                what: "  the same".into(),
                unit: Unit::Bytes,
                ours: floor.0,
                peer_name: "map + bare chunk walk + same bytes".into(),
                peer: floor.1,
                paired: true,
                target: None,
            },
        );
    }
}

/// B2: random gets, shard beside LMDB.
fn shard_get(
    cfg: &Config,
    pool: &Pool,
    reader: &ShardReader,
    lmdb: &LmdbStore,
    rows: &mut Vec<Row>,
) {
    let gets = match pool.kind {
        Kind::Big => cfg.n(4096).max(512),
        _ => cfg.n(200_000),
    };
    let order = random_order(pool.len(), gets, 13);
    let keys: Vec<&[u8]> = order.iter().map(|&i| &pool.keys[i][..]).collect();
    let lr = lmdb.reader().unwrap();
    let kind = pool.kind;
    let (work, unit) = match kind {
        Kind::Big => ((gets * pool.value_bytes()) as f64, Unit::Bytes),
        _ => (gets as f64, Unit::Ops),
    };
    let (ours, peer) = paired(
        cfg.rounds,
        work,
        || {
            timed(|| {
                let mut acc = 0u64;
                for k in &keys {
                    acc = acc.wrapping_add(touch(kind, &reader.get(k).unwrap().unwrap()));
                }
                black_box(acc);
            })
        },
        || {
            timed(|| {
                let mut acc = 0u64;
                for k in &keys {
                    acc = acc.wrapping_add(touch(kind, &lr.get(k).unwrap().unwrap()));
                }
                black_box(acc);
            })
        },
    );
    push(
        rows,
        Row {
            id: "B2",
            what: format!("shard get + views ({})", pool.name()),
            unit,
            ours,
            peer_name: "LmdbStore get + views, same data".into(),
            peer,
            paired: true,
            target: Some(1.0),
        },
    );
}

/// B3: appends beside `write_all` of the same record bytes.
fn shard_append(cfg: &Config, pool: &Pool, built: &Path, batch: usize, rows: &mut Vec<Row>) {
    // The record bytes, as the built store laid them out (one shard).
    let files = shard_files(built);
    assert_eq!(files.len(), 1, "B3 expects one shard");
    let bytes = fs::read(&files[0]).unwrap();
    assert_eq!(bytes.len() % pool.len(), 0, "records of one length");
    let rec = bytes.len() / pool.len();
    let work = match pool.kind {
        Kind::Big => bytes.len() as f64,
        _ => pool.len() as f64,
    };
    let unit = match pool.kind {
        Kind::Big => Unit::Bytes,
        _ => Unit::Ops,
    };
    let round = std::cell::Cell::new(0);
    let mut close_ours = Vec::new();
    let mut close_peer = Vec::new();
    let (ours, peer) = paired(
        cfg.rounds.min(7),
        work,
        || {
            round.set(round.get() + 1);
            let dir = cfg.dir(&format!("append-ours-{}", round.get()));
            let store = ShardStore::open(&dir, &shard_options(Durability::Close)).unwrap();
            let t = timed(|| shard_fill(&store, pool, batch));
            close_ours.push(timed(|| drop(store)));
            fs::remove_dir_all(&dir).unwrap();
            t
        },
        || {
            round.set(round.get() + 1);
            let dir = cfg.dir(&format!("append-raw-{}", round.get()));
            fs::create_dir_all(&dir).unwrap();
            let mut f = File::create(dir.join("000001.ten")).unwrap();
            let t = timed(|| {
                for r in bytes.chunks_exact(rec) {
                    f.write_all(r).unwrap();
                }
            });
            close_peer.push(timed(|| {
                f.sync_data().unwrap();
                drop(f);
            }));
            fs::remove_dir_all(&dir).unwrap();
            t
        },
    );
    push(
        rows,
        Row {
            id: "B3",
            what: format!(
                "shard put_batch x{batch}, Close ({}), no close",
                pool.name()
            ),
            unit,
            ours: ours.clone(),
            peer_name: "File::write_all per record".into(),
            peer: peer.clone(),
            paired: true,
            target: Some(0.8),
        },
    );
    // Closing syncs (Durability::Close): the whole write, durably.
    let sum = |w: &[f64], c: &[f64]| -> Rates {
        // Skip the warm-up round of each.
        Rates(
            w.iter()
                .zip(&c[1..])
                .map(|(&r, &c)| 1.0 / (1.0 / r + c / work))
                .collect(),
        )
    };
    let ours_total = sum(&ours.0, &close_ours);
    let peer_total = sum(&peer.0, &close_peer);
    push(
        rows,
        Row {
            id: "",
            what: format!("  same + close (syncs) ({})", pool.name()),
            unit,
            ours: ours_total,
            peer_name: "  same + sync_data".into(),
            peer: peer_total,
            paired: true,
            target: None,
        },
    );
}

/// B4: open time of shard stores of tiny samples.
/// B4: open time of shard stores of tiny samples; returns the lines of its
/// table.
fn shard_open(cfg: &Config) -> Vec<String> {
    let counts: Vec<usize> = if cfg.quick {
        vec![10_000, 100_000]
    } else {
        vec![10_000, 100_000, 1_000_000]
    };
    let rounds = cfg.rounds.min(7);
    let mut lines = vec![
        format!("B4 open time, tiny samples (u1 [8]), hot cache; medians of {rounds} (spread)"),
        format!(
            "{:>9}  {:>24} {:>9} {:>8}   {:>24}   {:>24}",
            "samples",
            "shard open(ro)+reader",
            "ns/sample",
            "growth",
            "shard open(rw)",
            "LMDB open(ro)+reader+len"
        ),
    ];
    let mut prev: Option<(usize, f64)> = None;
    for &n in &counts {
        eprintln!("B4: building stores of {n} samples ...");
        let pool = Pool::new(Kind::Tiny(8), n);
        let sdir = cfg.dir(&format!("open-shard-{n}"));
        let ldir = cfg.dir(&format!("open-lmdb-{n}"));
        let t_shard = {
            let s = ShardStore::open(&sdir, &shard_options(Durability::Close)).unwrap();
            timed(|| shard_fill(&s, &pool, 10_000))
        };
        let t_lmdb = {
            let s = LmdbStore::open(&ldir, &lmdb_options()).unwrap();
            let t = timed(|| lmdb_fill(&s, &pool, 10_000));
            s.flush().unwrap();
            t
        };
        eprintln!(
            "  written: shard {:.0} k samples/s, LMDB {:.0} k samples/s",
            n as f64 / t_shard / 1e3,
            n as f64 / t_lmdb / 1e3
        );
        drop(pool);
        let ro = ShardOptions {
            read_only: true,
            ..Default::default()
        };
        let lro = LmdbOptions {
            read_only: true,
            map_size: MAP_SIZE,
            ..Default::default()
        };
        // Opens per second.
        let (shard_ro, lmdb_ro) = paired(
            rounds,
            1.0,
            || {
                timed(|| {
                    let s = ShardStore::open(&sdir, &ro).unwrap();
                    let r = s.reader().unwrap();
                    assert_eq!(r.len().unwrap(), n as u64);
                })
            },
            || {
                timed(|| {
                    let s = LmdbStore::open(&ldir, &lro).unwrap();
                    assert_eq!(s.reader().unwrap().len().unwrap(), n as u64);
                })
            },
        );
        let (shard_rw, _) = paired(
            rounds,
            1.0,
            || {
                let t = Instant::now();
                let s = ShardStore::open(&sdir, &shard_options(Durability::Close)).unwrap();
                let t = t.elapsed().as_secs_f64();
                // Dropping a writable store syncs (nothing is dirty): left out.
                drop(s);
                t
            },
            || 1.0,
        );
        let ms = |r: &Rates| format!("{:.2} ms ({})", 1e3 / r.median(), r.spread());
        let secs = 1.0 / shard_ro.median();
        let growth = match prev {
            Some((pn, ps)) => format!("{:.1}x", secs / ps / (n as f64 / pn as f64)),
            None => "-".into(),
        };
        prev = Some((n, secs));
        let line = format!(
            "{:>9}  {:>24} {:>9.0} {:>8}   {:>24}   {:>24}",
            n,
            ms(&shard_ro),
            secs / n as f64 * 1e9,
            growth,
            ms(&shard_rw),
            ms(&lmdb_ro)
        );
        println!("B4 {line}");
        lines.push(line);
        let _ = fs::remove_dir_all(&sdir);
        let _ = fs::remove_dir_all(&ldir);
    }
    lines.push(
        "growth: time per sample against the row above (1.0x: linear in the sample count)".into(),
    );
    lines
}

fn part_b(cfg: &Config, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    for kind in [Kind::Med, Kind::Big] {
        let n = match kind {
            Kind::Med => cfg.n(10_000),
            _ => cfg.n(256).max(32),
        };
        let batch = match kind {
            Kind::Med => 1000,
            _ => 32,
        };
        let pool = Pool::new(kind, n);
        eprintln!(
            "B: building the shard and LMDB stores ({}) ...",
            pool.name()
        );
        let sdir = cfg.dir(&format!("shard-{}", pool.name()));
        let store = ShardStore::open(&sdir, &shard_options(Durability::Close)).unwrap();
        shard_fill(&store, &pool, batch);
        store.flush().unwrap();
        let reader = store.reader().unwrap();
        let lmdb =
            LmdbStore::open(cfg.dir(&format!("b-lmdb-{}", pool.name())), &lmdb_options()).unwrap();
        lmdb_fill(&lmdb, &pool, batch);
        if cfg.want("B1") {
            eprintln!("B1 ...");
            shard_scan(cfg, &pool, &reader, &sdir, rows);
        }
        if cfg.want("B2") {
            eprintln!("B2 ...");
            shard_get(cfg, &pool, &reader, &lmdb, rows);
        }
        if cfg.want("B3") {
            eprintln!("B3 ...");
            shard_append(cfg, &pool, &sdir, batch, rows);
        }
    }
    if cfg.want("B4") {
        notes.extend(shard_open(cfg));
    }
}

// ---------------------------------------------------------------- main

fn push(rows: &mut Vec<Row>, row: Row) {
    print_row(&row, WIDTHS);
    rows.push(row);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let cfg = Config {
        quick,
        only,
        rounds: if quick { 3 } else { 9 },
        scratch: tempfile::Builder::new()
            .prefix("tenstore-bench-store")
            .tempdir()
            .unwrap(),
    };
    let mut rows = Vec::new();
    println!(
        "rates are medians of {} rounds; spread: slowest and fastest round against the median;",
        cfg.rounds
    );
    println!("ratio = tenstore median / peer median; paired = median of per-round ratios (interleaved rounds)");
    print_header(WIDTHS);
    if cfg.want("A") {
        part_a(&cfg, &mut rows);
    }
    let mut notes = Vec::new();
    if cfg.want("B") {
        part_b(&cfg, &mut rows, &mut notes);
    }
    println!();
    println!("summary");
    print_header(WIDTHS);
    for r in &rows {
        print_row(r, WIDTHS);
    }
    if !notes.is_empty() {
        println!();
        for l in &notes {
            println!("{l}");
        }
    }
}
