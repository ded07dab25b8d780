//! Read snapshots of a shard store: the manifest, the sidecars and a
//! memory map per shard, frozen at one moment.

use std::collections::HashSet;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use foldhash::fast::RandomState;
use memmap2::Mmap;

use crate::codec::Tensors;
use crate::store::error::{Result, StoreError};
use crate::store::key::MAX_KEY_LEN;
use crate::store::shard::index::{Entry, EntryRef, Index, Loc};
use crate::store::shard::layout::{
    decode_idx, idx_name, key_array_len, shard_name, IdxStop, Manifest, KEY_NAME, LOCK, MANIFEST,
};
use crate::store::shard::order::{Delta, Merge};
use crate::store::shard::scan::scan;
use crate::store::shard::source::ShardSource;
use crate::store::shard::table::{self, Damaged, Table};
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
    /// Whether the key table (`keys.tbl`) was used, or why not.
    pub key_table: KeyTable,
}

/// How a snapshot found its keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyTable {
    /// The store has no key table (a new store, or one last written by an
    /// older tenstore): every sidecar was read.
    #[default]
    Absent,
    /// The key table was mapped; only sidecar records appended after it
    /// were read (`tail_records` of them).
    Used {
        /// Sidecar records read past what the table covers.
        tail_records: u64,
    },
    /// The key table was not trusted (damaged, or stale: the sidecars
    /// changed under it) and every sidecar was read instead. Results are
    /// correct; the next writer rewrites the table.
    Ignored(String),
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

/// Keys of the key table that records after it replace or delete.
#[derive(Clone, Debug, Default)]
struct Shadow {
    keys: HashSet<Arc<[u8]>, RandomState>,
    /// Bytes of their records in the table.
    bytes: u64,
}

/// A frozen view of a shard store: every sample committed before it was
/// taken, none after.
///
/// With a key table, `index` holds only the records after it (the delta)
/// and `shadow` the table's keys they replace; orders are read off the
/// table's rows ([`Table::write_order`]) and the delta, and a full index
/// is built only when the table turns out damaged. Without one, `index`
/// is the full index.
#[derive(Clone)]
pub(crate) struct Snapshot {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<ShardView>,
    index: Arc<Index>,
    table: Option<Arc<Table>>,
    shadow: Arc<Shadow>,
    /// What orders are built from `index`, `shadow` and `table`, on
    /// first use.
    views: Arc<Views>,
    /// Why a lookup stopped trusting the table, if one did.
    damage: Arc<OnceLock<String>>,
    pub report: LoadReport,
    verify: bool,
    /// Where shard bytes come from when they are not local files.
    source: Option<Arc<dyn ShardSource>>,
}

/// What a snapshot builds on first use to read in order; shared by the
/// refreshes that find nothing new.
#[derive(Default)]
struct Views {
    /// With a table: the records after it as the orders need them
    /// (`None`: the table is damaged).
    delta: OnceLock<Option<Delta>>,
    /// With a damaged table: the full index, from the sidecars.
    full: OnceLock<Index>,
    /// Positions in the full index of its live entries, in key order.
    sorted: OnceLock<Vec<u32>>,
    /// The same, in write order (epoch plans index it).
    live: OnceLock<Vec<u32>>,
}

/// The bytes of a file from `start` on.
fn read_from(path: &Path, start: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let ctx = |e| StoreError::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(ctx)?;
    file.seek(SeekFrom::Start(start)).map_err(ctx)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(ctx)?;
    table::count_sidecar_bytes(out.len());
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
        Self::empty(dir, verify).refresh()
    }

    /// Loads a snapshot whose shard bytes come from `source` (a remote
    /// store's cache) rather than from shard files in `dir`.
    pub fn load_with(
        dir: &Path,
        verify: bool,
        source: Option<Arc<dyn ShardSource>>,
    ) -> Result<Snapshot> {
        let mut empty = Self::empty(dir, verify);
        empty.source = source;
        empty.refresh()
    }

    fn empty(dir: &Path, verify: bool) -> Snapshot {
        Snapshot {
            dir: dir.to_owned(),
            manifest: Manifest::default(),
            shards: Vec::new(),
            index: Arc::new(Index::default()),
            table: None,
            shadow: Arc::default(),
            views: Arc::default(),
            damage: Arc::default(),
            report: LoadReport::default(),
            verify,
            source: None,
        }
    }

    /// Loads a snapshot from the sidecars alone, ignoring any key table
    /// (what `reindex` and the writer rebuild the table from).
    pub fn load_sidecars(dir: &Path) -> Result<Snapshot> {
        Self::empty(dir, false).refresh_with(false)
    }

    /// Like [`load_sidecars`](Self::load_sidecars), with this snapshot's
    /// directory and shard source.
    pub fn reload_sidecars(&self) -> Result<Snapshot> {
        let mut empty = Self::empty(self.dir(), false);
        empty.source = self.source.clone();
        empty.refresh_with(false)
    }

    /// A snapshot that also sees everything committed since this one.
    /// Shards are re-read only from where this snapshot stopped; a
    /// compaction (new manifest generation) means a full reload.
    pub fn refresh(&self) -> Result<Snapshot> {
        self.refresh_with(true)
    }

    fn refresh_with(&self, use_table: bool) -> Result<Snapshot> {
        // A compaction may delete shards between reading the manifest and
        // opening them; then the manifest has changed: read it again.
        let mut attempts = 0;
        loop {
            match self.try_refresh(use_table) {
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempts < 8 =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e),
                Ok(Ok(snap)) => return Ok(snap),
                Ok(Err(Damaged(why))) => {
                    // The table failed a check while records after it were
                    // applied: start over from the sidecars.
                    let mut empty = Self::empty(&self.dir, self.verify);
                    empty.source = self.source.clone();
                    let mut snap = empty.refresh_with(false)?;
                    snap.report.key_table = KeyTable::Ignored(format!("{}: {why}", table::TABLE));
                    return Ok(snap);
                }
            }
        }
    }

    fn try_refresh(&self, use_table: bool) -> Result<std::result::Result<Snapshot, Damaged>> {
        if let (true, Some(why)) = (use_table, self.damage.get()) {
            return Ok(Err(Damaged(why.clone())));
        }
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
        let (mut shards, mut index, mut report, tbl) = if incremental {
            let tbl = self.table.clone();
            (self.shards.clone(), None, self.report.clone(), tbl)
        } else {
            let mut report = LoadReport::default();
            let mut tbl = None;
            let mut shards = Vec::new();
            if use_table {
                match self.open_table(&manifest)? {
                    Ok(Some((t, views))) => {
                        tbl = Some(Arc::new(t));
                        shards = views;
                    }
                    Ok(None) => {}
                    Err(why) => report.key_table = KeyTable::Ignored(why),
                }
            }
            (shards, Some(Index::default()), report, tbl)
        };
        let mut shadow = None;
        let mut tail_records = 0u64;
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
            let mapped = match &self.source {
                Some(source) => source.shard_len(no)?,
                None => {
                    if view.map.as_ref().is_none_or(|m| (m.len() as u64) < end) {
                        view.map = map_shard(&self.dir.join(shard_name(no)))?;
                    }
                    view.map.as_ref().map_or(0, |m| m.len() as u64)
                }
            };
            // Copy the index only when something new arrived.
            let index = index.get_or_insert_with(|| (*self.index).clone());
            let shadow = shadow.get_or_insert_with(|| (*self.shadow).clone());
            index.reserve(records.len());
            tail_records += records.len() as u64;
            for r in records {
                if r.offset.checked_add(r.len).is_none_or(|e| e > mapped) {
                    report.out_of_bounds += 1;
                    continue;
                }
                view.covered = view.covered.max(r.offset + r.len);
                if let Some(t) = &tbl {
                    // A table key replaced or deleted for the first time.
                    if index.get(&r.key).is_none() && !shadow.keys.contains(&r.key) {
                        match t.get(&r.key) {
                            Ok(Some(loc)) => {
                                shadow.bytes += loc.len;
                                shadow.keys.insert(r.key.clone());
                            }
                            Ok(None) => {}
                            Err(d) => return Ok(Err(d)),
                        }
                    }
                }
                index.apply(pos, r);
            }
        }
        report.uncovered = self.uncovered(&manifest, &mut shards)?;
        if let (Some(_), KeyTable::Used { tail_records: n }) = (&tbl, &mut report.key_table) {
            *n += tail_records;
        } else if tbl.is_some() {
            report.key_table = KeyTable::Used { tail_records };
        }
        let fresh = index.is_some();
        let (index, views) = match index {
            Some(i) => (Arc::new(i), Arc::default()),
            None => (self.index.clone(), self.views.clone()),
        };
        let shadow = match shadow {
            Some(s) => Arc::new(s),
            None if fresh => Arc::default(),
            None => self.shadow.clone(),
        };
        let damage = if incremental {
            self.damage.clone()
        } else {
            Arc::default()
        };
        Ok(Ok(Snapshot {
            dir: self.dir.clone(),
            manifest,
            shards,
            index,
            table: tbl,
            shadow,
            views,
            damage,
            report,
            verify: self.verify,
            source: self.source.clone(),
        }))
    }

    /// The key table, if there is one that matches `manifest` and the
    /// sidecars, with the shard views it covers (their shards mapped).
    /// `Err(why)`: there is one, not to be trusted.
    #[allow(clippy::type_complexity)]
    fn open_table(
        &self,
        manifest: &Manifest,
    ) -> Result<std::result::Result<Option<(Table, Vec<ShardView>)>, String>> {
        let name = table::TABLE;
        let t = match Table::open(&self.dir) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(Ok(None)),
            Err(why) => return Ok(Err(format!("{name}: {why}"))),
        };
        let t = match t.matching(&self.dir, manifest) {
            Ok(t) => t,
            Err(why) => return Ok(Err(format!("{name} is stale: {why}"))),
        };
        let mut views = Vec::with_capacity(t.shards.len());
        for c in &t.shards {
            let (map, len) = match &self.source {
                Some(source) => (None, source.shard_len(c.no)?),
                None if c.record_end > 0 => {
                    let map = map_shard(&self.dir.join(shard_name(c.no)))?;
                    let len = map.as_ref().map_or(0, |m| m.len() as u64);
                    (map, len)
                }
                None => (None, 0),
            };
            if len < c.record_end {
                return Ok(Err(format!(
                    "{name} is stale: shard {} is shorter than its records",
                    shard_name(c.no)
                )));
            }
            views.push(ShardView {
                no: c.no,
                map,
                idx_read: c.idx_len,
                covered: c.record_end,
            });
        }
        Ok(Ok(Some((t, views))))
    }

    /// Shards with bytes past what their sidecars commit.
    fn uncovered(&self, manifest: &Manifest, shards: &mut [ShardView]) -> Result<Vec<Uncovered>> {
        let mut out = Vec::new();
        let mut writer = None;
        let n = shards.len();
        if self.source.is_some() {
            // A published store is a finished one: what lies past its
            // sidecars is not fetched to be scanned.
            return Ok(out);
        }
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

    /// Number of live samples: O(1).
    pub fn len(&self) -> usize {
        match &self.table {
            Some(t) => t.count as usize - self.shadow.keys.len() + self.index.len(),
            None => self.index.len(),
        }
    }

    /// Bytes of live records: O(1).
    pub fn live_bytes(&self) -> u64 {
        match &self.table {
            Some(t) => t.live_bytes - self.shadow.bytes + self.index.live_bytes,
            None => self.index.live_bytes,
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Per shard: sidecar bytes read, end of the records they commit.
    pub fn cover(&self) -> Vec<(u64, u64)> {
        self.shards
            .iter()
            .map(|v| (v.idx_read, v.covered))
            .collect()
    }

    /// The full index (what a key table is written from).
    pub fn index(&self) -> &Index {
        self.full()
    }

    /// Why a lookup stopped trusting the key table since this snapshot
    /// was loaded (it then reads the sidecars), if one did.
    pub fn table_damage(&self) -> Option<&str> {
        self.damage.get().map(String::as_str)
    }

    /// Checks every block of the key table this snapshot uses: O(table).
    pub fn check_table(&self) -> Option<String> {
        let t = self.table.as_ref()?;
        match t.check_all() {
            Ok(()) => None,
            Err(Damaged(why)) => {
                let _ = self.damage.set(why.clone());
                Some(why)
            }
        }
    }

    /// The full index: with a key table, built on first use from the
    /// table and the records after it (from the sidecars if the table
    /// turns out damaged). Orders use it only without a usable table.
    fn full(&self) -> &Index {
        let Some(t) = &self.table else {
            return &self.index;
        };
        self.views.full.get_or_init(|| {
            let base = match self.damage.get() {
                Some(_) => None,
                None => match t.to_index() {
                    Ok(i) => Some(i),
                    Err(Damaged(why)) => {
                        let _ = self.damage.set(why);
                        None
                    }
                },
            };
            match base {
                Some(mut index) => {
                    for key in &self.shadow.keys {
                        index.apply(0, del_record(key.clone()));
                    }
                    for e in self.index.live() {
                        index.apply(e.loc.shard, put_record(e));
                    }
                    index
                }
                None => self.index_from_sidecars(),
            }
        })
    }

    /// The index of the sidecar prefixes this snapshot read.
    fn index_from_sidecars(&self) -> Index {
        use std::io::Read;
        let mut index = Index::default();
        for (pos, v) in self.shards.iter().enumerate() {
            let mut bytes = Vec::new();
            // A sidecar that cannot be read now leaves its samples out;
            // the report of a new snapshot says why.
            let _ = File::open(self.dir.join(idx_name(v.no)))
                .and_then(|f| f.take(v.idx_read).read_to_end(&mut bytes));
            table::count_sidecar_bytes(bytes.len());
            let mapped = match &self.source {
                Some(source) => source.shard_len(v.no).unwrap_or(0),
                None => v.map.as_ref().map_or(0, |m| m.len() as u64),
            };
            let (records, _, _) = decode_idx(&bytes, 0, MAX_KEY_LEN);
            for r in records {
                if r.offset.checked_add(r.len).is_some_and(|e| e <= mapped) {
                    index.apply(pos, r);
                }
            }
        }
        index
    }

    /// Bytes of this snapshot's shard files as they are now (live,
    /// overwritten and deleted records; a shard unlinked by a compaction
    /// since counts as empty).
    pub fn shard_bytes(&self) -> u64 {
        self.manifest
            .shards
            .iter()
            .map(|&n| match &self.source {
                Some(source) => source.shard_len(n).unwrap_or(0),
                None => std::fs::metadata(self.dir.join(shard_name(n))).map_or(0, |m| m.len()),
            })
            .sum()
    }

    /// The manifest this snapshot was taken at.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The file name of the shard at position `pos`, for messages.
    fn shard_file(&self, pos: usize) -> String {
        self.shards
            .get(pos)
            .map_or_else(|| format!("shard #{pos}"), |v| shard_name(v.no))
    }

    /// Length of the map of the shard at position `pos` (0 if unmapped).
    pub fn shard_len(&self, pos: usize) -> u64 {
        self.shards
            .get(pos)
            .and_then(|v| v.map.as_ref())
            .map_or(0, |m| m.len() as u64)
    }

    /// Tells the kernel how bytes `from..to` of the shard at position
    /// `pos` will be read (clamped to its map). A hint only: what the
    /// kernel does with it changes no byte a reader sees, so a failure is
    /// ignored.
    pub fn advise(&self, pos: usize, from: u64, to: u64, hint: Hint) {
        let Some(map) = self.shards.get(pos).and_then(|v| v.map.as_ref()) else {
            return;
        };
        let len = map.len() as u64;
        let (from, to) = (from.min(len), to.min(len));
        if from >= to {
            return;
        }
        #[cfg(unix)]
        {
            use memmap2::Advice;
            if hint == Hint::WillNeed && resident(map, from as usize, to as usize) {
                // Asking for cached pages costs a page-cache lookup per
                // page: a tenth of a hot scan.
                return;
            }
            let advice = match hint {
                Hint::Normal => Advice::Normal,
                Hint::Sequential => Advice::Sequential,
                Hint::WillNeed => Advice::WillNeed,
            };
            // Both fit in usize: they are at most the map's length.
            let _ = map.advise_range(advice, from as usize, (to - from) as usize);
        }
        #[cfg(not(unix))]
        let _ = hint;
    }

    /// The record bytes at `loc`, bounds-checked.
    pub fn record(&self, loc: &Loc) -> Option<&[u8]> {
        let map = self.shards.get(loc.shard)?.map.as_ref()?;
        let start = usize::try_from(loc.offset).ok()?;
        let end = start.checked_add(usize::try_from(loc.len).ok()?)?;
        map.get(start..end)
    }

    /// Bytes of records the snapshot's source holds in memory (0 for a
    /// local store).
    pub(crate) fn held_bytes(&self) -> u64 {
        self.source.as_ref().map_or(0, |s| s.held_bytes())
    }

    /// Whether the snapshot's source asks to be replaced by a fresh one
    /// (never for a local store).
    pub(crate) fn needs_renewal(&self) -> bool {
        self.source.as_ref().is_some_and(|s| s.needs_renewal())
    }

    /// The record bytes at `loc`, from the shard's map or the source.
    fn fetch_record(&self, loc: &Loc) -> std::result::Result<&[u8], RecordFault> {
        match &self.source {
            None => self.record(loc).ok_or(RecordFault::Outside),
            Some(source) => {
                let view = self.shards.get(loc.shard).ok_or(RecordFault::Outside)?;
                source
                    .record(view.no, loc.offset, loc.len, loc.crc)
                    .map_err(RecordFault::Unavailable)
            }
        }
    }

    /// The bytes of an entry's record, checked against the crc32c
    /// committed with it: the shard store's one checksum check (scans,
    /// gets with `verify_reads`, `verify`, compaction).
    pub(crate) fn checked_record(&self, loc: &Loc) -> std::result::Result<&[u8], RecordFault> {
        self.checked_record_ahead(loc, false)
    }

    /// [`checked_record`](Self::checked_record); with `ahead` (a scan in
    /// storage order) the bytes after the record are asked into the cache
    /// too, so that the next record's pass finds them there.
    fn checked_record_ahead(
        &self,
        loc: &Loc,
        ahead: bool,
    ) -> std::result::Result<&[u8], RecordFault> {
        let bytes = self.fetch_record(loc)?;
        let map = match (
            &self.source,
            self.shards.get(loc.shard).and_then(|v| v.map.as_deref()),
        ) {
            (None, Some(map)) if ahead => &map[..],
            _ => bytes,
        };
        // `bytes` lies within `map` (it was cut from it, or is it).
        let start = bytes.as_ptr() as usize - map.as_ptr() as usize;
        let found = crc_streaming(map, start, start + bytes.len());
        if found != loc.crc {
            return Err(RecordFault::Checksum {
                found,
                committed: loc.crc,
            });
        }
        Ok(bytes)
    }

    /// The sample of an index entry, as a scan reads it: its record's
    /// crc32c is always checked, whatever `verify_reads` says.
    pub fn sample_of(&self, e: &EntryRef<'_>) -> Result<Sample<'_>> {
        self.sample_at(e.key, &e.loc, true, false)
    }

    /// [`sample_of`](Self::sample_of) for a scan in storage order: the
    /// bytes after the record are prefetched as it is checked.
    pub(crate) fn sample_in_order(&self, e: &EntryRef<'_>) -> Result<Sample<'_>> {
        self.sample_at(e.key, &e.loc, true, true)
    }

    /// The sample under `key`, whose record is at `loc`; its crc32c is
    /// checked when `check` is set, prefetching what follows the record
    /// when `ahead` is too.
    fn sample_at(&self, key: &[u8], loc: &Loc, check: bool, ahead: bool) -> Result<Sample<'_>> {
        // The checksum pass comes first: it reads the record front to back
        // and leaves it in the cache for the structure checks and for the
        // caller, who reads it next.
        let bytes = if check {
            self.checked_record_ahead(loc, ahead)
        } else {
            self.fetch_record(loc)
        };
        let corrupt = |what: String| StoreError::Corrupt {
            key: crate::error::escape(key),
            what: format!(
                "{what} (record at offset {} of {})",
                loc.offset,
                self.shard_file(loc.shard)
            ),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(RecordFault::Unavailable(e)) => return Err(e),
            Err(fault) => return Err(corrupt(fault.to_string())),
        };
        split_record(bytes, key).map_err(corrupt)
    }

    /// Where the record of `key` is: O(log n) with a key table.
    fn locate(&self, key: &[u8]) -> Option<Loc> {
        if let Some(e) = self.index.get(key) {
            return Some(e.loc.clone());
        }
        let t = self.table.as_ref()?;
        if self.shadow.keys.contains(key) {
            return None;
        }
        if self.damage.get().is_none() {
            match t.get(key) {
                Ok(loc) => return loc,
                Err(Damaged(why)) => {
                    let _ = self.damage.set(why);
                }
            }
        }
        self.full().get(key).map(|e| e.loc.clone())
    }

    /// The sample under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Sample<'_>>> {
        self.get_with(key, self.verify)
    }

    /// The sample under `key`, its record's crc32c checked whatever
    /// `verify_reads` says: what a scan reads through.
    pub fn get_checked(&self, key: &[u8]) -> Result<Option<Sample<'_>>> {
        self.get_with(key, true)
    }

    fn get_with(&self, key: &[u8], check: bool) -> Result<Option<Sample<'_>>> {
        match self.locate(key) {
            None => Ok(None),
            Some(loc) => self.sample_at(key, &loc, check, false).map(Some),
        }
    }

    /// The key table, its rows in write order and the delta over them,
    /// when the orders read off the table: `None` without a table, or
    /// once it turned out damaged (orders then use [`full`](Self::full)).
    fn table_orders(&self) -> Option<(&Table, &[u32], &Delta)> {
        let t = self.table.as_deref()?;
        if self.damage.get().is_some() {
            return None;
        }
        let order = match t.write_order() {
            Ok(Some(order)) => order,
            // Too many rows to number in 32 bits.
            Ok(None) => return None,
            Err(Damaged(why)) => {
                let _ = self.damage.set(why);
                return None;
            }
        };
        let delta = self.views.delta.get_or_init(|| {
            let shadow = self.shadow.keys.iter().map(|k| &**k);
            match Delta::build(t, order, shadow, &self.index) {
                Ok(d) => Some(d),
                Err(Damaged(why)) => {
                    let _ = self.damage.set(why);
                    None
                }
            }
        });
        Some((t, order, delta.as_ref()?))
    }

    /// Live entries in write order.
    pub fn entries(&self) -> Box<dyn Iterator<Item = EntryRef<'_>> + '_> {
        match self.table_orders() {
            Some((t, order, delta)) => {
                let n = delta.table_live(order) + delta.live.len() as u64;
                Box::new((0..n).map_while(move |i| self.entry_off_table(t, order, delta, i)))
            }
            None => Box::new(self.full().live().map(EntryRef::of)),
        }
    }

    /// The `i`-th live entry in write order (storage order), if any.
    pub fn live_entry(&self, i: u64) -> Option<EntryRef<'_>> {
        if let Some((t, order, delta)) = self.table_orders() {
            return self.entry_off_table(t, order, delta, i);
        }
        let full = self.full();
        let live = self.views.live.get_or_init(|| full.live_positions());
        let pos = *live.get(usize::try_from(i).ok()?)?;
        full.entries.get(pos as usize).map(EntryRef::of)
    }

    /// The `i`-th live entry in write order, read off the table's rows
    /// (whose blocks [`Table::write_order`] checked) and the delta.
    fn entry_off_table<'s>(
        &'s self,
        t: &'s Table,
        order: &[u32],
        delta: &'s Delta,
        i: u64,
    ) -> Option<EntryRef<'s>> {
        let in_table = delta.table_live(order);
        if i < in_table {
            let row = *order.get(usize::try_from(delta.select(i)).ok()?)?;
            let (key, loc) = t.row(u64::from(row)).ok()?;
            return Some(EntryRef { key, loc: loc? });
        }
        let pos = *delta.live.get(usize::try_from(i - in_table).ok()?)?;
        self.index.entries.get(pos as usize).map(EntryRef::of)
    }

    /// Live entries in key order, from `start`.
    pub fn sorted_from(&self, start: Bound<&[u8]>) -> Box<dyn Iterator<Item = EntryRef<'_>> + '_> {
        if let Some((t, _, delta)) = self.table_orders() {
            // Every row was read once to build the write order: none
            // fails to read now.
            if let Ok(rows) = t.live_rows(start) {
                let shadow = &self.shadow.keys;
                let rows = rows
                    .map_while(std::result::Result::ok)
                    .filter(move |(_, key, _)| !shadow.contains(*key))
                    .map(|(_, key, loc)| EntryRef { key, loc });
                let entries = &self.index.entries;
                let first = first_in(&delta.sorted, |i| &entries[i as usize].key, start);
                let after =
                    (delta.sorted[first..].iter()).map(|&i| EntryRef::of(&entries[i as usize]));
                return Box::new(Merge {
                    a: rows.peekable(),
                    b: after.peekable(),
                });
            }
        }
        let full = self.full();
        let order = self.views.sorted.get_or_init(|| full.sorted());
        let first = first_in(order, |i| &full.entries[i as usize].key, start);
        Box::new(
            order[first..]
                .iter()
                .map(|&i| EntryRef::of(&full.entries[i as usize])),
        )
    }
}

/// The first position of `order` (positions sorted by their keys) whose
/// key is not before `start`.
fn first_in<'a>(order: &[u32], key_of: impl Fn(u32) -> &'a [u8], start: Bound<&[u8]>) -> usize {
    match start {
        Bound::Unbounded => 0,
        Bound::Included(k) => order.partition_point(|&i| key_of(i) < k),
        Bound::Excluded(k) => order.partition_point(|&i| key_of(i) <= k),
    }
}

/// The crc32c of `map[start..end]`, taken in blocks with the lines
/// [`CRC_AHEAD`] bytes further on (within `map`) asked into the cache
/// before each block: a record read from memory then streams at the memory
/// bus's pace instead of the pace the checksum loop alone finds its misses
/// at. The result is that of one `crc32c` call over the range (the crc of
/// a range is the crc of its blocks, appended in order).
fn crc_streaming(map: &[u8], start: usize, end: usize) -> u32 {
    let mut crc = 0;
    let mut at = start;
    while at < end {
        let next = at.saturating_add(CRC_BLOCK).min(end);
        crate::codec::prefetch::range(
            map,
            at.saturating_add(CRC_AHEAD),
            next.saturating_add(CRC_AHEAD),
        );
        crc = crc32c::crc32c_append(crc, &map[at..next]);
        at = next;
    }
    crc
}

/// Bytes checksummed per call of [`crc_streaming`]: two runs of the
/// crc32c crate's three-way loop (3 x 256 bytes each).
const CRC_BLOCK: usize = 1536;

/// How far ahead of the checksum pass [`crc_streaming`] prefetches.
const CRC_AHEAD: usize = 4096;

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

fn put_record(e: &Entry) -> crate::store::shard::layout::IdxRecord {
    crate::store::shard::layout::IdxRecord {
        kind: crate::store::shard::layout::PUT,
        key: e.key.clone(),
        offset: e.loc.offset,
        len: e.loc.len,
        crc: e.loc.crc,
    }
}

fn del_record(key: Arc<[u8]>) -> crate::store::shard::layout::IdxRecord {
    crate::store::shard::layout::IdxRecord {
        kind: crate::store::shard::layout::DEL,
        key,
        offset: 0,
        len: 0,
        crc: 0,
    }
}

/// Whether the pages of `map[from..to]` look resident in the page cache:
/// eight pages spread over the range are asked (`mincore`). A guess that
/// only decides whether to give a hint.
#[cfg(unix)]
fn resident(map: &Mmap, from: usize, to: usize) -> bool {
    static PAGE: OnceLock<usize> = OnceLock::new();
    let page = *PAGE.get_or_init(|| {
        // SAFETY: sysconf reads a constant of the system.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(p)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    });
    if from >= to || to > map.len() {
        return false;
    }
    const PROBES: usize = 8;
    (0..PROBES).all(|k| {
        let at = from + (to - 1 - from) / (PROBES - 1) * k;
        let mut v = 0u8;
        // SAFETY: `at < map.len()`, and the map starts at a page boundary
        // (mmap returns one; memmap2 maps from offset 0 of the file here),
        // so `at` rounded down to a page is the start of a page of the
        // mapping; mincore reads the page tables for that one page and
        // writes one byte to `v`. No memory of the map is read or changed.
        let rc = unsafe {
            let p = map.as_ptr().add(at & !(page - 1));
            libc::mincore(p as *mut libc::c_void, 1, &mut v)
        };
        rc == 0 && v & 1 == 1
    })
}

/// How a range of a shard will be read ([`Snapshot::advise`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hint {
    /// No particular order (the default; undoes `Sequential`).
    Normal,
    /// Front to back: read ahead aggressively.
    Sequential,
    /// Soon: start reading it now.
    WillNeed,
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
    /// Its bytes could not be fetched (a remote store's source).
    Unavailable(StoreError),
}

impl std::fmt::Display for RecordFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordFault::Outside => f.write_str("its record lies outside its shard"),
            RecordFault::Checksum { found, committed } => write!(
                f,
                "checksum {found:08x} differs from the committed {committed:08x}"
            ),
            RecordFault::Unavailable(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod crc_tests {
    use super::{crc_streaming, CRC_AHEAD, CRC_BLOCK};

    #[test]
    fn the_streaming_crc_equals_one_call_over_any_range() {
        let map: Vec<u8> = (0..3 * CRC_BLOCK + CRC_AHEAD + 77)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let n = map.len();
        // Ranges inside one block, across block edges, ending at the end
        // of the map (where the prefetch is clamped), and empty ones.
        let edges = [
            0,
            1,
            CRC_BLOCK - 1,
            CRC_BLOCK,
            CRC_BLOCK + 1,
            2 * CRC_BLOCK + 5,
        ];
        for &start in &edges {
            for end in [
                start,
                start + 1,
                start + CRC_BLOCK,
                start + 2 * CRC_BLOCK + 3,
                n,
            ] {
                let end = end.min(n);
                assert_eq!(
                    crc_streaming(&map, start, end),
                    crc32c::crc32c(&map[start..end]),
                    "{start}..{end}"
                );
            }
        }
        assert_eq!(crc_streaming(&map, n, n), 0);
    }
}
