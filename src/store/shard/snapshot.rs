//! Read snapshots of a shard store: the manifest, the sidecars and a
//! memory map per shard, frozen at one moment.

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

use crate::codec::Tensors;
use crate::store::error::{Result, StoreError};
use crate::store::key::MAX_KEY_LEN;
use crate::store::shard::index::{Entry, Index, Loc};
use crate::store::shard::layout::{
    decode_idx, idx_name, key_array_len, shard_name, IdxStop, Manifest, KEY_NAME, LOCK, MANIFEST,
};
use crate::store::shard::scan::scan;
use crate::store::Sample;

/// One shard as a snapshot sees it.
#[derive(Clone)]
struct ShardView {
    no: u32,
    map: Option<Arc<Mmap>>,
    /// Sidecar bytes already read (a valid prefix).
    idx_read: u64,
    /// Where the last record its sidecar commits ends.
    covered: u64,
}

/// Damage a snapshot found and stepped around while loading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Sidecars whose records stop being valid before their end: shard
    /// number and the offset of the first bad byte. Records after it are
    /// not visible.
    pub torn_sidecars: Vec<(u32, u64)>,
    /// Committed records that point past the end of their shard (a shard
    /// truncated by hand): not visible.
    pub out_of_bounds: u64,
    /// Shards with bytes past the last record their sidecar commits (a
    /// damaged, emptied or truncated sidecar, or a write a crash cut
    /// short). The last shard is left out while a writer holds the store,
    /// whose appends pass through there before they commit.
    pub uncovered: Vec<Uncovered>,
}

/// Bytes of a shard past the last record its sidecar commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uncovered {
    /// The shard's number.
    pub shard: u32,
    /// Where the committed records end.
    pub from: u64,
    /// The shard's length.
    pub to: u64,
    /// Whole records found there (by their tenbin structure): samples or
    /// deletions that are not visible. 0 for a torn write.
    pub records: u64,
}

impl LoadReport {
    /// Whether the snapshot stepped around records that may hold samples:
    /// a damaged sidecar, records past their shard's end, or whole records
    /// a sidecar does not commit. (A torn tail alone is not: it holds no
    /// whole record.)
    pub fn hides_records(&self) -> bool {
        !self.torn_sidecars.is_empty()
            || self.out_of_bounds > 0
            || self.uncovered.iter().any(|u| u.records > 0)
    }

    /// One line per problem, each naming what to do.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (no, at) in &self.torn_sidecars {
            out.push(format!("sidecar {no:06}.idx: records stop being valid at byte {at}; later records are ignored (run `tenstore reindex`)"));
        }
        if self.out_of_bounds > 0 {
            out.push(format!(
                "{} committed records point past the end of their shard (the shard was shortened; those samples are gone)",
                self.out_of_bounds
            ));
        }
        for u in &self.uncovered {
            if u.records > 0 {
                out.push(format!(
                    "shard {:06}.ten: bytes {}..{} hold {} whole records its sidecar does not commit, not visible (a damaged sidecar, or a batch a crash cut short): run `tenstore reindex`",
                    u.shard, u.from, u.to, u.records
                ));
            } else {
                out.push(format!(
                    "shard {:06}.ten: bytes {}..{} are a torn write its sidecar does not commit (the next writer cuts them)",
                    u.shard, u.from, u.to
                ));
            }
        }
        out
    }
}

/// Whether a writer holds the store's lock (probed with a shared lock,
/// released at once).
fn writer_active(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join(LOCK)) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// A frozen view of a shard store: every sample committed before it was
/// taken, none after.
#[derive(Clone)]
pub(crate) struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<ShardView>,
    index: Arc<Index>,
    sorted: Arc<OnceLock<Vec<u32>>>,
    /// Positions of live entries in write order (epoch plans index it).
    live: Arc<OnceLock<Vec<u32>>>,
    pub report: LoadReport,
    verify: bool,
}

/// The bytes of a file from `start` on.
fn read_from(path: &Path, start: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let ctx = |e| StoreError::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(ctx)?;
    file.seek(SeekFrom::Start(start)).map_err(ctx)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(ctx)?;
    Ok(out)
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Format {
                path,
                found: format!("unreadable manifest ({e})"),
                expected: "a JSON manifest of shard numbers".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
    }
}

/// Maps a shard file read-only (nothing for an empty file).
pub(crate) fn map_shard(path: &Path) -> Result<Option<Arc<Mmap>>> {
    let file =
        File::open(path).map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read only inside records that a complete sidecar
    // record names and that lie within the map's length (checked when the
    // snapshot indexes them, and again by `record`). Those bytes stay in
    // the file and never change while the store's files are changed only
    // by tenstore: the writer writes (flushes) a record's bytes before the
    // sidecar record that names it, appends only at the end of the file,
    // cuts a shard back only over bytes no sidecar record names yet (a
    // failed append before its sidecar write), and once a sidecar write of
    // a batch has begun it never cuts that shard again: on a failure from
    // there on it stops until reopened (`Writer::commit`). Recovery at
    // open cuts only shard bytes past the last record its sidecar keeps;
    // compaction writes new files and unlinks the old ones, which keeps
    // mapped pages alive. A file truncated or rewritten by anything else
    // while mapped can fault or change under this map: the crate documents
    // that as the one precondition of opening a store (see the crate docs,
    // "Memory maps").
    let map = unsafe { Mmap::map(&file) }
        .map_err(|e| StoreError::io(format!("mapping {}", path.display()), e))?;
    Ok(Some(Arc::new(map)))
}

impl Snapshot {
    /// Loads a snapshot of the store in `dir`.
    pub fn load(dir: &Path, verify: bool) -> Result<Snapshot> {
        let empty = Snapshot {
            dir: dir.to_owned(),
            manifest: Manifest::default(),
            shards: Vec::new(),
            index: Arc::new(Index::default()),
            sorted: Arc::new(OnceLock::new()),
            live: Arc::new(OnceLock::new()),
            report: LoadReport::default(),
            verify,
        };
        empty.refresh()
    }

    /// A snapshot that also sees everything committed since this one.
    /// Shards are re-read only from where this snapshot stopped; a
    /// compaction (new manifest generation) means a full reload.
    pub fn refresh(&self) -> Result<Snapshot> {
        // A compaction may delete shards between reading the manifest and
        // opening them; then the manifest has changed: read it again.
        let mut attempts = 0;
        loop {
            match self.try_refresh() {
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempts < 8 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    fn try_refresh(&self) -> Result<Snapshot> {
        let Some(manifest) = read_manifest(&self.dir)? else {
            return Err(StoreError::NotAStore {
                path: self.dir.clone(),
            });
        };
        // A sidecar shorter than what was read was cut back by a writer's
        // recovery: read everything again.
        let not_shorter = |v: &ShardView| {
            std::fs::metadata(self.dir.join(idx_name(v.no))).is_ok_and(|m| m.len() >= v.idx_read)
        };
        let incremental = manifest.generation == self.manifest.generation
            && self.shards.len() <= manifest.shards.len()
            && self
                .shards
                .iter()
                .zip(&manifest.shards)
                .all(|(v, &n)| v.no == n && not_shorter(v));
        let (mut shards, mut index, mut report) = if incremental {
            (self.shards.clone(), None, self.report.clone())
        } else {
            (Vec::new(), Some(Index::default()), LoadReport::default())
        };
        for (pos, &no) in manifest.shards.iter().enumerate() {
            if pos == shards.len() {
                shards.push(ShardView {
                    no,
                    map: None,
                    idx_read: 0,
                    covered: 0,
                });
            }
            let view = &mut shards[pos];
            let bytes = read_from(&self.dir.join(idx_name(no)), view.idx_read)?;
            if bytes.is_empty() {
                continue;
            }
            let (records, valid, stop) = decode_idx(&bytes, view.idx_read, MAX_KEY_LEN);
            // A torn record may be a write in progress: what counts is the
            // latest read.
            report.torn_sidecars.retain(|&(n, _)| n != no);
            if let IdxStop::Torn(at) = stop {
                report.torn_sidecars.push((no, at));
            }
            view.idx_read = valid;
            if records.is_empty() {
                continue;
            }
            let end = records
                .iter()
                .map(|r| r.offset.saturating_add(r.len))
                .max()
                .unwrap_or(0);
            if view.map.as_ref().is_none_or(|m| (m.len() as u64) < end) {
                view.map = map_shard(&self.dir.join(shard_name(no)))?;
            }
            let mapped = view.map.as_ref().map_or(0, |m| m.len() as u64);
            // Copy the index only when something new arrived.
            let index = index.get_or_insert_with(|| (*self.index).clone());
            index.reserve(records.len());
            for r in records {
                if r.offset.checked_add(r.len).is_none_or(|e| e > mapped) {
                    report.out_of_bounds += 1;
                    continue;
                }
                view.covered = view.covered.max(r.offset + r.len);
                index.apply(pos, r);
            }
        }
        report.uncovered = self.uncovered(&manifest, &mut shards)?;
        let (index, sorted, live) = match index {
            Some(i) => (
                Arc::new(i),
                Arc::new(OnceLock::new()),
                Arc::new(OnceLock::new()),
            ),
            None => (self.index.clone(), self.sorted.clone(), self.live.clone()),
        };
        Ok(Snapshot {
            dir: self.dir.clone(),
            manifest,
            shards,
            index,
            sorted,
            live,
            report,
            verify: self.verify,
        })
    }

    /// Shards with bytes past what their sidecars commit.
    fn uncovered(&self, manifest: &Manifest, shards: &mut [ShardView]) -> Result<Vec<Uncovered>> {
        let mut out = Vec::new();
        let mut writer = None;
        let n = shards.len();
        for (pos, view) in shards.iter_mut().enumerate() {
            let path = self.dir.join(shard_name(view.no));
            let len = std::fs::metadata(&path)
                .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
                .len();
            if len <= view.covered {
                continue;
            }
            if pos + 1 == n && *writer.get_or_insert_with(|| writer_active(&self.dir)) {
                continue;
            }
            if view.map.as_ref().is_none_or(|m| (m.len() as u64) < len) {
                view.map = map_shard(&path)?;
            }
            let Some(map) = &view.map else { continue };
            let found = scan(map, view.covered as usize);
            out.push(Uncovered {
                shard: view.no,
                from: view.covered,
                to: map.len() as u64,
                records: found.records.len() as u64,
            });
        }
        debug_assert_eq!(n, manifest.shards.len());
        Ok(out)
    }

    /// Number of live samples.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Bytes of live records.
    pub fn live_bytes(&self) -> u64 {
        self.index.live_bytes
    }

    /// Bytes of this snapshot's shard files as they are now (live,
    /// overwritten and deleted records; a shard unlinked by a compaction
    /// since counts as empty).
    pub fn shard_bytes(&self) -> u64 {
        self.manifest
            .shards
            .iter()
            .map(|&n| std::fs::metadata(self.dir.join(shard_name(n))).map_or(0, |m| m.len()))
            .sum()
    }

    /// The manifest this snapshot was taken at.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The record bytes at `loc`, bounds-checked.
    pub fn record(&self, loc: &Loc) -> Option<&[u8]> {
        let map = self.shards.get(loc.shard)?.map.as_ref()?;
        let start = usize::try_from(loc.offset).ok()?;
        let end = start.checked_add(usize::try_from(loc.len).ok()?)?;
        map.get(start..end)
    }

    /// The bytes of an entry's record, checked against the crc32c
    /// committed with it: the shard store's one checksum check (reads with
    /// `verify_reads`, `verify`, compaction).
    pub(crate) fn checked_record(&self, e: &Entry) -> std::result::Result<&[u8], RecordFault> {
        let bytes = self.record(&e.loc).ok_or(RecordFault::Outside)?;
        let found = crc32c::crc32c(bytes);
        if found != e.loc.crc {
            return Err(RecordFault::Checksum {
                found,
                committed: e.loc.crc,
            });
        }
        Ok(bytes)
    }

    /// The sample of an index entry.
    pub fn sample_of<'s>(&'s self, e: &'s Entry) -> Result<Sample<'s>> {
        let corrupt = |what: String| StoreError::Corrupt {
            key: crate::error::escape(&e.key),
            what,
        };
        let bytes = if self.verify {
            self.checked_record(e)
                .map_err(|fault| corrupt(fault.to_string()))?
        } else {
            self.record(&e.loc)
                .ok_or_else(|| corrupt(RecordFault::Outside.to_string()))?
        };
        split_record(bytes, &e.key).map_err(corrupt)
    }

    /// The sample under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Sample<'_>>> {
        match self.index.get(key) {
            None => Ok(None),
            Some(e) => self.sample_of(e).map(Some),
        }
    }

    /// Live entries in write order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.index.live()
    }

    /// The `i`-th live entry in write order (storage order), if any.
    pub fn live_entry(&self, i: u64) -> Option<&Entry> {
        let live = self.live.get_or_init(|| self.index.live_positions());
        let pos = *live.get(usize::try_from(i).ok()?)?;
        self.index.entries.get(pos as usize)
    }

    /// Live entries in key order, from `start`.
    pub fn sorted_from(&self, start: Bound<&[u8]>) -> impl Iterator<Item = &Entry> + '_ {
        let order = self.sorted.get_or_init(|| self.index.sorted());
        let key_of = |i: &u32| &*self.index.entries[*i as usize].key;
        let first = match start {
            Bound::Unbounded => 0,
            Bound::Included(k) => order.partition_point(|i| key_of(i) < k),
            Bound::Excluded(k) => order.partition_point(|i| key_of(i) <= k),
        };
        order[first..]
            .iter()
            .map(|&i| &self.index.entries[i as usize])
    }
}

/// Splits a record into its key array and its tensors, checking that the
/// key array is there and holds `key`.
pub(crate) fn split_record<'a>(
    bytes: &'a [u8],
    key: &[u8],
) -> std::result::Result<Sample<'a>, String> {
    let kal = key_array_len(key.len());
    let head = bytes
        .get(..kal)
        .ok_or("its record is shorter than its key array")?;
    let head = Tensors::parse(head).map_err(|e| format!("its key array: {e}"))?;
    let key_view = head.get(0).ok_or("its record has no key array")?;
    if key_view.name() != KEY_NAME || key_view.data() != key {
        return Err(format!(
            "its record opens with {:?}, not its key array",
            key_view.name()
        ));
    }
    let tensors = Tensors::parse(&bytes[kal..]).map_err(|e| e.to_string())?;
    Ok(Sample::new(key_view.data(), tensors))
}

/// Why a record's bytes cannot be used ([`Snapshot::checked_record`]).
#[derive(Debug)]
pub(crate) enum RecordFault {
    /// The record lies outside its shard (as mapped).
    Outside,
    /// Its bytes differ from the crc32c committed with them.
    Checksum {
        /// The checksum of the bytes there now.
        found: u32,
        /// The checksum committed with the record.
        committed: u32,
    },
}

impl std::fmt::Display for RecordFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordFault::Outside => f.write_str("its record lies outside its shard"),
            RecordFault::Checksum { found, committed } => write!(
                f,
                "checksum {found:08x} differs from the committed {committed:08x}"
            ),
        }
    }
}
