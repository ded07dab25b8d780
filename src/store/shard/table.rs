//! The key table (`keys.tbl`): a persistent, checked, memory-mapped index
//! of a shard store's live keys, sorted by key, so that a reader opens a
//! store of any size in O(1) (plus the sidecar records appended since the
//! table was written) and finds a key by binary search.
//!
//! The table is a cache of the sidecars, never the commit point: it names
//! the sidecar lengths it covers (with a checksum of each covered tail),
//! and a reader trusts it only when its header checks, its manifest
//! generation is the store's and every sidecar is at least as long as it
//! covers, with the same bytes at that point. Body blocks are checked
//! lazily, the first time a lookup touches them; a block that fails makes
//! the reader fall back to the sidecars. See `STORE-FORMAT.md`.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use memmap2::Mmap;

use crate::store::error::{Result, StoreError};
use crate::store::shard::index::{Index, Loc};
use crate::store::shard::layout::{idx_name, shard_name, IdxRecord, Manifest, PUT};

/// File name of the key table.
pub const TABLE: &str = "keys.tbl";

/// File name of the key table's second level: the keys committed since
/// `keys.tbl` was written, deletions included, over that base.
pub const TOP: &str = "keys2.tbl";

/// First bytes of the key table.
const MAGIC: &[u8; 16] = b"tenstore-tbl-v1\n";

/// First bytes of the second level.
const MAGIC_TOP: &[u8; 16] = b"tenstore-tb2-v1\n";

/// Bytes of the fixed header, before the shard list.
const FIXED: usize = 64;

/// Bytes of the second level's fixed header: the base's, then the totals
/// of the live keys of both levels together and the base it lies over.
const FIXED_TOP: usize = 104;

/// Row flag of the second level: the key is deleted.
const DELETED: u32 = 1;

/// Bytes of one shard entry of the header.
const SHARD: usize = 24;

/// Bytes of one key entry.
const ENTRY: usize = 40;

/// Bytes of the body checked by one block checksum.
const BLOCK: usize = 16 << 10;

/// Bytes of a sidecar's covered end whose checksum the table keeps.
const TAIL: u64 = 64;

thread_local! {
    static SIDECAR_READS: Cell<u64> = const { Cell::new(0) };
}

/// Counts sidecar bytes read by snapshots on this thread (tests only).
pub(crate) fn count_sidecar_bytes(n: usize) {
    SIDECAR_READS.with(|c| c.set(c.get() + n as u64));
}

/// Sidecar bytes that snapshots loaded or refreshed on the calling thread
/// have read so far (a test counter, not part of the API).
#[doc(hidden)]
pub fn sidecar_bytes_read() -> u64 {
    SIDECAR_READS.with(Cell::get)
}

/// What the table covers of one shard's sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Covered {
    /// The shard's number.
    pub no: u32,
    /// crc32c of the last (up to) 64 covered sidecar bytes.
    pub tail_crc: u32,
    /// Sidecar bytes covered.
    pub idx_len: u64,
    /// Where the last covered record ends in the shard.
    pub record_end: u64,
}

/// A key table a lookup found damaged.
#[derive(Clone, Debug)]
pub(crate) struct Damaged(pub String);

/// What a second level's header says of the table it belongs to.
#[derive(Clone, Debug)]
pub(crate) struct TopHead {
    /// Totals of the live keys, both levels together.
    pub totals: Sizes,
    /// The base it lies over: its length and header checksum.
    pub base: (u64, u32),
}

/// One opened, header-checked level of the key table: the base
/// (`keys.tbl`) or the second level (`keys2.tbl`).
pub(crate) struct Level {
    map: Mmap,
    /// The manifest generation it was written at.
    pub generation: u64,
    /// Rows it holds (for the base: live keys; for the second level:
    /// puts and deletions).
    pub count: u64,
    /// Bytes of the records of its rows.
    pub live_bytes: u64,
    /// Bytes of their keys.
    pub keys_len: u64,
    /// The sidecar prefixes it covers, one per manifest position.
    pub shards: Vec<Covered>,
    /// Its length and header checksum (what a second level names).
    id: (u64, u32),
    /// For a second level: what its header says of the table.
    top: Option<TopHead>,
    crcs_at: usize,
    body_at: usize,
    keys_at: usize,
    /// One bit per body block: checked and found good.
    checked: Vec<AtomicU64>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The location an entry's row holds.
fn loc_of(e: &[u8]) -> Loc {
    Loc {
        offset: u64_at(e, 8),
        len: u64_at(e, 16),
        shard: u32_at(e, 28) as usize,
        crc: u32_at(e, 32),
    }
}

/// crc32c of the last (up to) `TAIL` bytes of the first `len` bytes of a
/// file.
fn tail_crc(path: &Path, len: u64) -> std::io::Result<u32> {
    use std::os::unix::fs::FileExt;
    let start = len.saturating_sub(TAIL);
    let mut buf = vec![0u8; (len - start) as usize];
    File::open(path)?.read_exact_at(&mut buf, start)?;
    count_sidecar_bytes(buf.len());
    Ok(crc32c::crc32c(&buf))
}

impl Level {
    /// Opens the level at `path` and checks its header and block
    /// checksums' checksum: O(1) in the number of keys but for the block
    /// checksums (4 bytes per 16 KiB of table). `Ok(None)`: there is
    /// none. `Err(why)`: it is damaged.
    fn open(path: &Path) -> std::result::Result<Option<Level>, String> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open it: {e}")),
        };
        // SAFETY: the table is never written in place: writers make a new
        // file and rename it over the old one, which stays whole while
        // mapped. Every read below is bounds-checked against the map's
        // length and every byte read is checked against a checksum before
        // it is trusted. (A table rewritten in place by something other
        // than tenstore is the crate-wide "Memory maps" precondition.)
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("cannot map it: {e}"))?;
        Self::parse(map).map(Some)
    }

    fn parse(map: Mmap) -> std::result::Result<Level, String> {
        let b = &map[..];
        let fixed = match b.get(..16) {
            Some(m) if m == MAGIC => FIXED,
            Some(m) if m == MAGIC_TOP => FIXED_TOP,
            _ => return Err("it does not start with a key table header".into()),
        };
        if b.len() < fixed + 8 {
            return Err("its header is cut short".into());
        }
        let nshards = u32_at(b, 48) as usize;
        let block = u32_at(b, 52) as usize;
        if block != BLOCK {
            return Err(format!("its block size {block} is not {BLOCK}"));
        }
        let head_end = nshards
            .checked_mul(SHARD)
            .and_then(|s| s.checked_add(fixed))
            .filter(|&e| e + 8 <= b.len())
            .ok_or("its header is cut short")?;
        if crc32c::crc32c(&b[..head_end]) != u32_at(b, head_end) {
            return Err("its header fails its checksum".into());
        }
        let count = u64_at(b, 24);
        let keys_len = u64_at(b, 40);
        let crcs_at = head_end + 8;
        let body_len = count
            .checked_mul(ENTRY as u64)
            .and_then(|e| e.checked_add(keys_len))
            .and_then(|e| usize::try_from(e).ok())
            .ok_or("its sizes overflow")?;
        let nblocks = body_len.div_ceil(BLOCK);
        let body_at = (crcs_at + nblocks * 4).next_multiple_of(8);
        if body_at.checked_add(body_len) != Some(b.len()) {
            return Err(format!(
                "it is {} bytes long where its header says {}",
                b.len(),
                body_at.saturating_add(body_len)
            ));
        }
        if crc32c::crc32c(&b[crcs_at..crcs_at + nblocks * 4]) != u32_at(b, 56) {
            return Err("its block checksums fail their checksum".into());
        }
        let shards = (0..nshards)
            .map(|i| {
                let at = fixed + i * SHARD;
                Covered {
                    no: u32_at(b, at),
                    tail_crc: u32_at(b, at + 4),
                    idx_len: u64_at(b, at + 8),
                    record_end: u64_at(b, at + 16),
                }
            })
            .collect();
        let top = (fixed == FIXED_TOP).then(|| TopHead {
            totals: Sizes {
                count: u64_at(b, 64),
                live_bytes: u64_at(b, 72),
                keys_len: u64_at(b, 80),
            },
            base: (u64_at(b, 88), u32_at(b, 96)),
        });
        let id = (b.len() as u64, u32_at(b, head_end));
        Ok(Level {
            id,
            top,
            generation: u64_at(b, 16),
            count,
            live_bytes: u64_at(b, 32),
            keys_len,
            shards,
            crcs_at,
            body_at,
            keys_at: body_at + count as usize * ENTRY,
            checked: (0..nblocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            map,
        })
    }

    /// Whether the table describes the sidecars of `manifest` in `dir` as
    /// they are: the same generation, its shards a prefix of the
    /// manifest's, each sidecar at least as long as covered and ending
    /// there with the bytes it covered, each shard at least as long as
    /// its covered records. `Err(why)` when it does not.
    pub fn matches(&self, dir: &Path, manifest: &Manifest) -> std::result::Result<(), String> {
        if self.generation != manifest.generation {
            return Err(format!(
                "it was written at manifest generation {}, the store is at {}",
                self.generation, manifest.generation
            ));
        }
        if self.shards.len() > manifest.shards.len()
            || self
                .shards
                .iter()
                .zip(&manifest.shards)
                .any(|(c, &n)| c.no != n)
        {
            return Err("its shards are not the manifest's".into());
        }
        for c in &self.shards {
            let idx = dir.join(idx_name(c.no));
            let len = std::fs::metadata(&idx).map_or(0, |m| m.len());
            if len < c.idx_len {
                return Err(format!(
                    "sidecar {} is shorter than it covers",
                    idx_name(c.no)
                ));
            }
            if tail_crc(&idx, c.idx_len).ok() != Some(c.tail_crc) {
                return Err(format!(
                    "sidecar {} differs from what it covers",
                    idx_name(c.no)
                ));
            }
        }
        Ok(())
    }

    /// The body bytes `at..at + len` (offsets in the file), after checking
    /// the blocks they lie in.
    fn body(&self, at: usize, len: usize) -> std::result::Result<&[u8], Damaged> {
        let end = at
            .checked_add(len)
            .filter(|&e| at >= self.body_at && e <= self.map.len())
            .ok_or_else(|| Damaged(format!("an entry points outside it (byte {at})")))?;
        if len > 0 {
            let first = (at - self.body_at) / BLOCK;
            let last = (end - 1 - self.body_at) / BLOCK;
            for blk in first..=last {
                self.check_block(blk)?;
            }
        }
        Ok(&self.map[at..end])
    }

    fn check_block(&self, blk: usize) -> std::result::Result<(), Damaged> {
        let (word, bit) = (&self.checked[blk / 64], 1u64 << (blk % 64));
        if word.load(Ordering::Relaxed) & bit != 0 {
            return Ok(());
        }
        let start = self.body_at + blk * BLOCK;
        let end = (start + BLOCK).min(self.map.len());
        let want = u32_at(&self.map, self.crcs_at + blk * 4);
        if crc32c::crc32c(&self.map[start..end]) != want {
            return Err(Damaged(format!(
                "block {blk} (bytes {start}..{end}) fails its checksum"
            )));
        }
        word.fetch_or(bit, Ordering::Relaxed);
        Ok(())
    }

    /// The record a row `e` names: `None` for a deletion (rows of a
    /// second level only; the base holds live keys).
    fn row_loc(&self, e: &[u8]) -> Option<Loc> {
        match self.top {
            Some(_) if u32_at(e, 36) & DELETED != 0 => None,
            _ => Some(loc_of(e)),
        }
    }

    /// Key and record of entry `i` (in key order); `None`: deleted.
    pub fn entry(&self, i: u64) -> std::result::Result<(&[u8], Option<Loc>), Damaged> {
        let e = self.body(self.body_at + i as usize * ENTRY, ENTRY)?;
        let key_off = u64_at(e, 0);
        let key_len = u32_at(e, 24) as usize;
        let key = usize::try_from(key_off)
            .ok()
            .and_then(|o| self.keys_at.checked_add(o))
            .ok_or_else(|| Damaged(format!("entry {i} names a key outside it")))?;
        let key = self.body(key, key_len)?;
        Ok((key, self.row_loc(e)))
    }

    /// Key and record of entry `i` without checking its blocks (the
    /// caller checked them all): `None` if it names bytes outside the
    /// table.
    fn raw_entry(&self, i: u64) -> Option<(&[u8], Option<Loc>)> {
        let at = self.body_at + usize::try_from(i).ok()? * ENTRY;
        let e = self.map.get(at..at + ENTRY)?;
        let key_at = self
            .keys_at
            .checked_add(usize::try_from(u64_at(e, 0)).ok()?)?;
        let key = self
            .map
            .get(key_at..key_at.checked_add(u32_at(e, 24) as usize)?)?;
        Some((key, self.row_loc(e)))
    }

    /// The row of `key`, by binary search (O(log n) entries and blocks
    /// touched): `Some(None)` is a deletion.
    fn find(&self, key: &[u8]) -> std::result::Result<Option<Option<Loc>>, Damaged> {
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, loc) = self.entry(mid)?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(loc)),
            }
        }
        Ok(None)
    }

    /// Checks every block: O(level size).
    fn check_all(&self) -> std::result::Result<(), Damaged> {
        let blocks = (self.map.len() - self.body_at).div_ceil(BLOCK);
        (0..blocks).try_for_each(|b| self.check_block(b))
    }

    /// Whether this second level's totals can be true over `base`: no
    /// more keys (or key bytes) than the rows of both levels hold. Totals
    /// size allocations and counts; checksummed totals that lie are still
    /// refused.
    fn totals_fit(&self, base: &Level) -> bool {
        self.top.as_ref().is_some_and(|h| {
            h.totals.count <= base.count.saturating_add(self.count)
                && h.totals.keys_len <= base.keys_len.saturating_add(self.keys_len)
        })
    }

    /// Whether this is a second level over `base`.
    fn lies_over(&self, base: &Level) -> bool {
        self.top.as_ref().is_some_and(|t| t.base == base.id)
            && self.generation == base.generation
            && base.top.is_none()
    }
}

/// An opened, header-checked key table: the base level (`keys.tbl`) and,
/// when there is one that lies over it, the second level (`keys2.tbl`),
/// which holds the keys written or deleted since the base and wins on
/// lookup. A writer rewrites only the second level until it reaches a
/// fixed fraction of the base, then merges it into a new base
/// ([`flush`]); so a row is rewritten O(1) times on average, not once per
/// table write.
pub(crate) struct Table {
    base: Level,
    top: Option<Level>,
    /// Why a second level that is there was not used, when it is damaged
    /// (not merely stale: one left by a merge that died before removing
    /// it names another base and is ignored).
    top_damaged: Option<String>,
    /// Live keys it holds.
    pub count: u64,
    /// Bytes of their records.
    pub live_bytes: u64,
    /// Bytes of their keys.
    pub keys_len: u64,
    /// The sidecar prefixes it covers, one per manifest position.
    pub shards: Vec<Covered>,
    /// Its live rows in write order, built on first use
    /// ([`write_order`](Self::write_order)).
    order: OnceLock<std::result::Result<Option<Vec<u32>>, Damaged>>,
}

impl Table {
    /// Opens the key table of the store in `dir`: its base, checked as
    /// [`Level::open`] does, and the second level when there is one, good
    /// and lying over this base (else the base alone: the records after
    /// it are read from the sidecars). `Ok(None)`: there is no base.
    /// `Err(why)`: the base is damaged.
    pub fn open(dir: &Path) -> std::result::Result<Option<Table>, String> {
        let Some(base) = Level::open(&dir.join(TABLE))? else {
            return Ok(None);
        };
        if base.top.is_some() {
            return Err("it is a second level, not a base".into());
        }
        let (top, top_damaged) = match Level::open(&dir.join(TOP)) {
            Ok(Some(t)) if t.lies_over(&base) && !t.totals_fit(&base) => (
                None,
                Some(format!(
                    "{TOP}: its totals claim more keys than its rows and the base's hold"
                )),
            ),
            Ok(Some(t)) if t.lies_over(&base) => (Some(t), None),
            // Left by a merge that died before removing it, or a second
            // level of no table.
            Ok(_) => (None, None),
            Err(why) => (None, Some(format!("{TOP}: {why}"))),
        };
        Ok(Some(Table::of(base, top, top_damaged)))
    }

    fn of(base: Level, top: Option<Level>, top_damaged: Option<String>) -> Table {
        let shards = top.as_ref().unwrap_or(&base).shards.clone();
        let totals = match top.as_ref().and_then(|t| t.top.as_ref()) {
            Some(h) => h.totals.clone(),
            None => Sizes {
                count: base.count,
                live_bytes: base.live_bytes,
                keys_len: base.keys_len,
            },
        };
        Table {
            base,
            top,
            top_damaged,
            count: totals.count,
            live_bytes: totals.live_bytes,
            keys_len: totals.keys_len,
            shards,
            order: OnceLock::new(),
        }
    }

    /// This table if it describes the sidecars of `manifest` in `dir` as
    /// they are (see [`Level::matches`]); when only the second level does
    /// not (the sidecars it covers were cut back after a crash), the base
    /// alone. `Err(why)`: the base does not match either.
    pub fn matching(self, dir: &Path, manifest: &Manifest) -> std::result::Result<Table, String> {
        let Some(top) = &self.top else {
            self.base.matches(dir, manifest)?;
            return Ok(self);
        };
        if top.matches(dir, manifest).is_ok() {
            return Ok(self);
        }
        self.base.matches(dir, manifest)?;
        Ok(Table::of(self.base, None, self.top_damaged))
    }

    /// The first and last key of either level (a key outside them is in
    /// neither): `None` when both are empty or an end is damaged.
    pub fn bounds(&self) -> Option<[Box<[u8]>; 2]> {
        let mut out: Option<[Box<[u8]>; 2]> = None;
        for l in std::iter::once(&self.base).chain(&self.top) {
            let Some(n) = l.count.checked_sub(1) else {
                continue;
            };
            let (first, last) = (l.entry(0).ok()?.0, l.entry(n).ok()?.0);
            out = Some(match out {
                None => [first.into(), last.into()],
                Some([a, b]) => [
                    if *first < *a { first.into() } else { a },
                    if *last > *b { last.into() } else { b },
                ],
            });
        }
        out
    }

    /// The location of `key`: the second level, then the base (O(log n)
    /// entries and blocks touched).
    pub fn get(&self, key: &[u8]) -> std::result::Result<Option<Loc>, Damaged> {
        if let Some(top) = &self.top {
            let row = top
                .find(key)
                .map_err(|Damaged(why)| Damaged(format!("{TOP}: {why}")))?;
            if let Some(row) = row {
                return Ok(row);
            }
        }
        Ok(self.base.find(key)?.flatten())
    }

    /// Whether a second level is in use.
    pub fn has_top(&self) -> bool {
        self.top.is_some()
    }

    /// This table with its second level checked whole (O(its size), what
    /// a writer does at open): a damaged one is dropped, leaving the base
    /// alone, and the second value says why.
    pub fn check_top(self) -> (Table, Option<String>) {
        match self.top.as_ref().map(Level::check_all) {
            Some(Err(Damaged(why))) => {
                let why = format!("{TOP}: {why}");
                (Table::of(self.base, None, Some(why.clone())), Some(why))
            }
            _ => {
                let why = self.top_damaged.clone();
                (self, why)
            }
        }
    }

    /// Takes the base of `old` (with the blocks it checked) when this
    /// table's base is the same file's bytes: a writer that wrote only a
    /// second level does not check the base again.
    pub fn keep_base(&mut self, old: Table) {
        if old.base.id == self.base.id && old.base.generation == self.base.generation {
            self.base = old.base;
        }
    }

    /// Checks every block of both levels (what `verify` does): O(table
    /// size). A second level that is there but damaged is reported too.
    pub fn check_all(&self) -> std::result::Result<(), Damaged> {
        self.base.check_all()?;
        if let Some(why) = &self.top_damaged {
            return Err(Damaged(why.clone()));
        }
        match self.top.as_ref().map(Level::check_all) {
            Some(Err(Damaged(why))) => Err(Damaged(format!("{TOP}: {why}"))),
            _ => Ok(()),
        }
    }

    /// The live entries in write order (shard position, offset), as an
    /// index: what iterating a snapshot needs.
    pub fn to_index(&self) -> std::result::Result<Index, Damaged> {
        let mut newer = std::collections::HashSet::new();
        let mut all = Vec::with_capacity(self.count as usize);
        if let Some(top) = &self.top {
            for i in 0..top.count {
                let (key, loc) = top.entry(i)?;
                let key = std::sync::Arc::<[u8]>::from(key);
                newer.insert(key.clone());
                if let Some(loc) = loc {
                    all.push((loc, key));
                }
            }
        }
        for i in 0..self.base.count {
            let (key, loc) = self.base.entry(i)?;
            if let (Some(loc), false) = (loc, newer.contains(key)) {
                all.push((loc, std::sync::Arc::<[u8]>::from(key)));
            }
        }
        drop(newer);
        all.sort_unstable_by_key(|(l, _)| (l.shard, l.offset));
        let mut index = Index::default();
        index.reserve(all.len());
        for (loc, key) in all {
            index.apply(
                loc.shard,
                IdxRecord {
                    kind: PUT,
                    key,
                    offset: loc.offset,
                    len: loc.len,
                    crc: loc.crc,
                },
            );
        }
        Ok(index)
    }
}

impl Table {
    /// Rows of both levels: the base's (`0..base.count`), then the
    /// second level's after them.
    pub fn rows(&self) -> u64 {
        self.base.count + self.top.as_ref().map_or(0, |t| t.count)
    }

    /// Key and record of row `r` (numbered as [`rows`](Self::rows)
    /// says), its blocks checked; `None` for a deletion.
    pub fn row(&self, r: u64) -> std::result::Result<(&[u8], Option<Loc>), Damaged> {
        match r.checked_sub(self.base.count) {
            None => self.base.entry(r),
            Some(t) => match &self.top {
                Some(top) if t < top.count => top.entry(t).map_err(in_top),
                _ => Err(Damaged(format!("row {r} is past its end"))),
            },
        }
    }

    /// The live rows in key order from `start`: the merge of the two
    /// levels, where a key's second-level row wins over its base row and
    /// a deletion hides it. O(log n) to start, O(1) a row after.
    pub fn live_rows(&self, start: Bound<&[u8]>) -> std::result::Result<LiveRows<'_>, Damaged> {
        let top = match &self.top {
            Some(top) => first_from(top, start).map_err(in_top)?,
            None => 0,
        };
        Ok(LiveRows {
            table: self,
            base: first_from(&self.base, start)?,
            top,
        })
    }

    /// The live rows in write order (shard position, then offset): what
    /// scans and epoch plans walk. Built on first use and kept with the
    /// table: 4 bytes a key (8 while building), O(n log(n / shards))
    /// time, and every block is checked on the way, so the rows it names
    /// read without failing after. `Ok(None)`: more rows than a `u32`
    /// numbers (the caller builds a heap index instead).
    pub fn write_order(&self) -> std::result::Result<Option<&[u32]>, Damaged> {
        match self.order.get_or_init(|| self.build_order()) {
            Ok(order) => Ok(order.as_deref()),
            Err(d) => Err(d.clone()),
        }
    }

    fn build_order(&self) -> std::result::Result<Option<Vec<u32>>, Damaged> {
        if self.rows() > u64::from(u32::MAX) {
            return Ok(None);
        }
        let nshards = self.shards.len();
        let mut counts = vec![0usize; nshards];
        // Rows in key order first (the merge of the levels decides which
        // are live), counted per shard.
        let mut live = Vec::with_capacity(self.count.min(self.rows()) as usize);
        for row in self.live_rows(Bound::Unbounded)? {
            let (r, _, loc) = row?;
            let count = counts.get_mut(loc.shard).ok_or_else(|| {
                Damaged(format!(
                    "row {r} names shard position {} of {nshards}",
                    loc.shard
                ))
            })?;
            *count += 1;
            // Below `rows()`, checked to fit.
            live.push(r as u32);
        }
        if live.len() as u64 != self.count {
            return Err(Damaged(format!(
                "its header counts {} live keys where its rows hold {}",
                self.count,
                live.len()
            )));
        }
        // Then a counting sort by shard and a sort by offset within each:
        // the largest shard's rows are all that is sorted at once.
        let mut next = Vec::with_capacity(nshards);
        let mut at = 0;
        for &c in &counts {
            next.push(at);
            at += c;
        }
        let mut order = vec![0u32; live.len()];
        for &r in &live {
            let shard = self.row(u64::from(r))?.1.map_or(0, |l| l.shard);
            order[next[shard]] = r;
            next[shard] += 1;
        }
        drop(live);
        let mut by_offset: Vec<(u64, u32)> = Vec::new();
        let mut start = 0;
        for &c in &counts {
            let rows = &mut order[start..start + c];
            start += c;
            by_offset.clear();
            for &r in rows.iter() {
                let offset = self.row(u64::from(r))?.1.map_or(0, |l| l.offset);
                by_offset.push((offset, r));
            }
            // An import writes keys in key order: then this is sorted.
            if !by_offset.is_sorted() {
                by_offset.sort_unstable();
                for (slot, &(_, r)) in rows.iter_mut().zip(&by_offset) {
                    *slot = r;
                }
            }
        }
        Ok(Some(order))
    }
}

/// A second level's damage, named as its.
fn in_top(Damaged(why): Damaged) -> Damaged {
    Damaged(format!("{TOP}: {why}"))
}

/// The first row of `level` not before `start`, by binary search.
fn first_from(level: &Level, start: Bound<&[u8]>) -> std::result::Result<u64, Damaged> {
    let before = |k: &[u8]| match start {
        Bound::Unbounded => false,
        Bound::Included(s) => k < s,
        Bound::Excluded(s) => k <= s,
    };
    if start == Bound::Unbounded {
        return Ok(0);
    }
    let (mut lo, mut hi) = (0u64, level.count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(level.entry(mid)?.0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The live rows of a key table in key order: row number, key and
/// record ([`Table::live_rows`]). After an error, nothing more.
pub(crate) struct LiveRows<'t> {
    table: &'t Table,
    /// The next base row.
    base: u64,
    /// The next second-level row.
    top: u64,
}

impl<'t> Iterator for LiveRows<'t> {
    type Item = std::result::Result<(u64, &'t [u8], Loc), Damaged>;

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.table;
        loop {
            let base = (self.base < t.base.count).then(|| t.base.entry(self.base));
            let top = (t.top.as_ref())
                .filter(|l| self.top < l.count)
                .map(|l| l.entry(self.top).map_err(in_top));
            let (base, top) = match (base.transpose(), top.transpose()) {
                (Ok(b), Ok(t)) => (b, t),
                (Err(d), _) | (_, Err(d)) => {
                    (self.base, self.top) = (u64::MAX, u64::MAX);
                    return Some(Err(d));
                }
            };
            let take_top = match (&base, &top) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((kb, _)), Some((kt, _))) => {
                    if kb == kt {
                        // The second level's row replaces the base's.
                        self.base += 1;
                    }
                    kb >= kt
                }
            };
            let (row, (key, loc)) = if take_top {
                self.top += 1;
                (t.base.count + self.top - 1, top?)
            } else {
                self.base += 1;
                (self.base - 1, base?)
            };
            if let Some(loc) = loc {
                return Some(Ok((row, key, loc)));
            }
        }
    }
}

/// What a table covers of each shard, by manifest position: the sidecar
/// length and where the last record it commits ends in the shard (of any
/// kind, tombstones and replaced samples too). From the files' lengths,
/// but for the last shard `last` when the writer knows its committed
/// lengths: for a writer that recovered at open, every other shard is
/// committed to its end.
pub(crate) fn file_cover(
    dir: &Path,
    manifest: &Manifest,
    last: Option<(u64, u64)>,
) -> Result<Vec<(u64, u64)>> {
    let len = |p: std::path::PathBuf| {
        std::fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| StoreError::io(format!("reading {}", p.display()), e))
    };
    let n = manifest.shards.len();
    manifest
        .shards
        .iter()
        .enumerate()
        .map(|(pos, &no)| match last {
            Some(l) if pos + 1 == n => Ok(l),
            _ => Ok((len(dir.join(idx_name(no)))?, len(dir.join(shard_name(no)))?)),
        })
        .collect()
}

/// Writes the key table of `index` (every live key), covering the
/// sidecars of `manifest` in `dir` as `cover` says (per manifest
/// position: sidecar length, end of the last committed record). See
/// [`write_rows`].
pub(crate) fn write(
    dir: &Path,
    manifest: &Manifest,
    index: &Index,
    cover: &[(u64, u64)],
) -> Result<()> {
    let order = index.sorted();
    let keys_len: u64 = order
        .iter()
        .map(|&i| index.entries[i as usize].key.len() as u64)
        .sum();
    let sizes = Sizes {
        count: order.len() as u64,
        live_bytes: index.live_bytes,
        keys_len,
    };
    let rows = || {
        order.iter().map(|&i| {
            let e = &index.entries[i as usize];
            Ok((&*e.key, e.loc.clone()))
        })
    };
    let finish = Finish {
        durable: true,
        before_rename: &mut || Ok(()),
    };
    match write_rows(dir, manifest, cover, &sizes, rows, finish)? {
        Ok(()) => Ok(()),
        Err(Damaged(why)) => Err(StoreError::io(
            format!("writing {TABLE}"),
            std::io::Error::other(why),
        )),
    }
}

/// How a key table file is finished.
pub(crate) struct Finish<'f> {
    /// Sync the file and the directory. Otherwise the kernel writes them
    /// back when it will: a table is a checked cache of the sidecars, and
    /// one a machine crash lost, cut or left stale is detected (its
    /// length, header and block checksums, the sidecar prefixes it
    /// covers) and rebuilt, never trusted.
    pub durable: bool,
    /// Called after the temporary file is written, before the rename (a
    /// test hook).
    pub before_rename: &'f mut dyn FnMut() -> std::io::Result<()>,
}

/// The totals a key table's header holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Live keys.
    pub count: u64,
    /// Bytes of their records.
    pub live_bytes: u64,
    /// Bytes of the keys.
    pub keys_len: u64,
}

/// One key of a table being written, with its record.
pub(crate) type Row<'k> = std::result::Result<(&'k [u8], Loc), Damaged>;

/// The body of a table being written, block checksums computed on the
/// way.
struct Body<W> {
    out: W,
    crcs: Vec<u8>,
    crc: u32,
    in_block: usize,
    len: u64,
}

impl<W: Write> Body<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        let mut rest = b;
        while !rest.is_empty() {
            let n = (BLOCK - self.in_block).min(rest.len());
            self.crc = crc32c::crc32c_append(self.crc, &rest[..n]);
            self.in_block += n;
            if self.in_block == BLOCK {
                self.crcs.extend_from_slice(&self.crc.to_le_bytes());
                self.crc = 0;
                self.in_block = 0;
            }
            rest = &rest[n..];
        }
        // One write: a slice larger than the buffer (a run of old keys)
        // goes to the file without passing through it.
        self.out.write_all(b)?;
        self.len += b.len() as u64;
        Ok(())
    }

    /// Appends whole blocks whose checksums are known (`crcs`, 4 bytes
    /// per block, of bytes already checked against them), at a block
    /// boundary: written as they are, not checksummed again.
    fn put_blocks(&mut self, b: &[u8], crcs: &[u8]) -> std::io::Result<()> {
        debug_assert!(self.in_block == 0 && b.len() == crcs.len() / 4 * BLOCK);
        self.out.write_all(b)?;
        self.crcs.extend_from_slice(crcs);
        self.len += b.len() as u64;
        Ok(())
    }

    fn finish(&mut self) {
        if self.in_block > 0 {
            self.crcs.extend_from_slice(&self.crc.to_le_bytes());
            self.in_block = 0;
        }
    }
}

/// Writes a key table whose live keys `rows()` yields in key order (it is
/// called twice: entries, then keys), `sizes` their totals; see
/// [`write_file`].
pub(crate) fn write_rows<'k, I, F>(
    dir: &Path,
    manifest: &Manifest,
    cover: &[(u64, u64)],
    sizes: &Sizes,
    rows: F,
    finish: Finish<'_>,
) -> Result<std::result::Result<(), Damaged>>
where
    F: Fn() -> I,
    I: Iterator<Item = Row<'k>>,
{
    write_file(
        dir,
        manifest,
        cover,
        Make::Base(sizes),
        sizes,
        finish,
        |body| {
            let (mut count, mut live_bytes, mut key_off) = (0u64, 0u64, 0u64);
            for row in rows() {
                let (key, loc) = match row {
                    Ok(r) => r,
                    Err(d) => return Ok(Err(d)),
                };
                body.put(&entry_bytes(key_off, key.len(), Some(&loc)))?;
                key_off += key.len() as u64;
                live_bytes += loc.len;
                count += 1;
            }
            if (count, live_bytes, key_off) != (sizes.count, sizes.live_bytes, sizes.keys_len) {
                return Ok(Err(Damaged("its rows disagree with its totals".into())));
            }
            let mut keys = 0u64;
            for row in rows() {
                let (key, _) = match row {
                    Ok(r) => r,
                    Err(d) => return Ok(Err(d)),
                };
                keys += key.len() as u64;
                if keys > sizes.keys_len {
                    break;
                }
                body.put(key)?;
            }
            if keys != sizes.keys_len {
                return Ok(Err(Damaged("its rows disagree with its key bytes".into())));
            }
            Ok(Ok(()))
        },
    )
}

/// The bytes of a table entry: a key's record, or its deletion (`None`,
/// second level only).
fn entry_bytes(key_off: u64, key_len: usize, loc: Option<&Loc>) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[..8].copy_from_slice(&key_off.to_le_bytes());
    e[24..28].copy_from_slice(&(key_len as u32).to_le_bytes());
    match loc {
        Some(loc) => {
            e[8..16].copy_from_slice(&loc.offset.to_le_bytes());
            e[16..24].copy_from_slice(&loc.len.to_le_bytes());
            e[28..32].copy_from_slice(&(loc.shard as u32).to_le_bytes());
            e[32..36].copy_from_slice(&loc.crc.to_le_bytes());
        }
        None => e[36..40].copy_from_slice(&DELETED.to_le_bytes()),
    }
    e
}

/// A change to merge into a table: a key and its new record, or `None`
/// (deleted).
pub(crate) type Change<'k> = (&'k [u8], Option<Loc>);

/// Which level a table write makes.
#[derive(Clone, Copy)]
pub(crate) enum Make<'s> {
    /// A base (`keys.tbl`) of live keys whose totals are these.
    Base(&'s Sizes),
    /// A second level (`keys2.tbl`), deletions kept as rows, over the base
    /// `base` (length and header checksum), the live keys of both levels
    /// together totalling `totals`.
    Top { totals: &'s Sizes, base: (u64, u32) },
}

/// Writes the level `make` from `old` (checked whole first; a base for a
/// base, the old second level or none for a second level) with the `n`
/// changes `change(0..n)` (sorted by key, each key once) merged in; see
/// [`write_file`]. The old level's rows between changes are copied in
/// runs, not row by row: O(old level bytes) of copying and checksumming
/// plus O(changes × log rows) of searching. `change(i) == None`: the
/// change's source is damaged.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_merged<'a>(
    dir: &Path,
    manifest: &Manifest,
    cover: &[(u64, u64)],
    make: Make<'_>,
    old: Option<&'a Level>,
    n: usize,
    change: &dyn Fn(usize) -> Option<Change<'a>>,
    finish: Finish<'_>,
) -> Result<std::result::Result<(), Damaged>> {
    if let Some(Err(d)) = old.map(Level::check_all) {
        return Ok(Err(d));
    }
    let keep_deleted = matches!(make, Make::Top { .. });
    let damaged = |what: &str| Damaged(format!("{TABLE}: {what}"));
    let outside = || damaged("an entry names a key outside it");
    // The new level's own totals, and whether it only appends.
    let mut own = old.map_or_else(Sizes::default, |t| Sizes {
        count: t.count,
        live_bytes: t.live_bytes,
        keys_len: t.keys_len,
    });
    let (mut in_order, mut saw_new) = (true, false);
    let walked = walk(old, n, change, keep_deleted, |step| {
        match step {
            Step::Old(..) => in_order &= !saw_new,
            Step::Replaced(key, was) => {
                in_order = false;
                own.count -= 1;
                own.keys_len -= key.len() as u64;
                own.live_bytes -= was.map_or(0, |l| l.len);
            }
            Step::New(key, loc) => {
                saw_new = true;
                in_order &= loc.is_some();
                own.count += 1;
                own.keys_len += key.len() as u64;
                own.live_bytes += loc.map_or(0, |l| l.len);
            }
        }
        Ok::<_, std::convert::Infallible>(())
    });
    match walked {
        Ok(Ok(())) => {}
        Ok(Err(d)) => return Ok(Err(d)),
        Err(never) => match never {},
    }
    if let Make::Base(sizes) = make {
        if own != *sizes {
            return Ok(Err(damaged("its rows disagree with its totals")));
        }
    }
    // A deletion of a key that no row holds makes no step above, but the
    // appending writer would write it as a row: only puts append.
    in_order &= (0..n).all(|c| change(c).is_some_and(|(_, loc)| loc.is_some()));
    if let (Some(t), true, true) = (old, in_order, n > 0 && old.is_some_and(|t| t.count > 0)) {
        return write_appended(dir, manifest, cover, make, &own, t, n, change, finish);
    }
    write_file(dir, manifest, cover, make, &own, finish, |body| {
        let (mut rows, mut live_bytes, mut key_off) = (0u64, 0u64, 0u64);
        let mut buf = Vec::with_capacity(64 << 10);
        let mut bad = None;
        let entries = walk(
            old,
            n,
            change,
            keep_deleted,
            |step| -> std::io::Result<()> {
                match step {
                    Step::Replaced(..) => {}
                    Step::New(key, loc) => {
                        if buf.len() + ENTRY > buf.capacity() {
                            body.put(&buf)?;
                            buf.clear();
                        }
                        buf.extend_from_slice(&entry_bytes(key_off, key.len(), loc.as_ref()));
                        key_off += key.len() as u64;
                        live_bytes += loc.map_or(0, |l| l.len);
                        rows += 1;
                    }
                    Step::Old(from, to) => {
                        let t = old.expect("old rows come from a table");
                        let entries = &t.map
                            [t.body_at + from as usize * ENTRY..t.body_at + to as usize * ENTRY];
                        let mut at = u64_at(entries, 0);
                        for e in entries.chunks_exact(ENTRY) {
                            // The keys of a run lie end to end, so they are
                            // copied as one slice below.
                            if u64_at(e, 0) != at {
                                bad.get_or_insert_with(|| {
                                    damaged("its keys are not in entry order")
                                });
                            }
                            at += u64::from(u32_at(e, 24));
                            live_bytes += u64_at(e, 16);
                            if buf.len() + ENTRY > buf.capacity() {
                                body.put(&buf)?;
                                buf.clear();
                            }
                            let new_off = u64_at(e, 0).wrapping_sub(u64_at(entries, 0)) + key_off;
                            buf.extend_from_slice(&new_off.to_le_bytes());
                            buf.extend_from_slice(&e[8..]);
                        }
                        key_off += at - u64_at(entries, 0);
                        rows += to - from;
                    }
                }
                Ok(())
            },
        )?;
        body.put(&buf)?;
        if let Err(d) = entries {
            return Ok(Err(d));
        }
        if let Some(d) = bad {
            return Ok(Err(d));
        }
        if (rows, live_bytes, key_off) != (own.count, own.live_bytes, own.keys_len) {
            return Ok(Err(damaged("its rows disagree with its totals")));
        }
        let keys = walk(
            old,
            n,
            change,
            keep_deleted,
            |step| -> std::io::Result<()> {
                match step {
                    Step::Replaced(..) => {}
                    Step::New(key, _) => body.put(key)?,
                    Step::Old(from, to) => {
                        let t = old.expect("old rows come from a table");
                        let first = t.body_at + from as usize * ENTRY;
                        let last = t.body_at + (to as usize - 1) * ENTRY;
                        let start = u64_at(&t.map, first) as usize;
                        let end =
                            u64_at(&t.map, last) as usize + u32_at(&t.map, last + 24) as usize;
                        match t.map.get(t.keys_at + start..t.keys_at + end) {
                            Some(keys) => body.put(keys)?,
                            None => {
                                bad.get_or_insert_with(outside);
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        if let Err(d) = keys {
            return Ok(Err(d));
        }
        Ok(bad.map_or(Ok(()), Err))
    })
}

/// A stretch of a merge of a level's rows with changes, in key order.
enum Step<'a> {
    /// Rows `from..to` of the old level.
    Old(u64, u64),
    /// An old row a change replaces: its key and record (dropped).
    Replaced(&'a [u8], Option<Loc>),
    /// A change that becomes a row.
    New(&'a [u8], Option<Loc>),
}

/// Calls `f` with each stretch of the merge of `old`'s rows with
/// `change(0..n)` (sorted by key, each key once), in key order; a
/// deletion becomes a row only when `keep_deleted`. Each change is
/// placed by a galloping search from the previous one: O(log gap) rows
/// looked at, so walking costs O(changes × log(rows / changes)), and
/// holds nothing: a writer walks a merge once per pass instead of
/// keeping a plan of it. The caller checked `old` whole.
/// `Ok(Err(_))`: a row or change names bytes outside its level.
fn walk<'a, E>(
    old: Option<&'a Level>,
    n: usize,
    change: &dyn Fn(usize) -> Option<Change<'a>>,
    keep_deleted: bool,
    mut f: impl FnMut(Step<'a>) -> std::result::Result<(), E>,
) -> std::result::Result<std::result::Result<(), Damaged>, E> {
    let outside = || Damaged(format!("{TABLE}: an entry names a key outside it"));
    let count = old.map_or(0, |t| t.count);
    let mut lo = 0u64;
    for c in 0..n {
        let Some((key, loc)) = change(c) else {
            return Ok(Err(outside()));
        };
        if let Some(t) = old {
            let Some(a) = lower_bound(t, lo, key) else {
                return Ok(Err(outside()));
            };
            if a > lo {
                f(Step::Old(lo, a))?;
            }
            lo = a;
            if a < count {
                let Some((k, was)) = t.raw_entry(a) else {
                    return Ok(Err(outside()));
                };
                if k == key {
                    f(Step::Replaced(key, was))?;
                    lo = a + 1;
                }
            }
        }
        if loc.is_some() || keep_deleted {
            f(Step::New(key, loc))?;
        }
    }
    if count > lo {
        f(Step::Old(lo, count))?;
    }
    Ok(Ok(()))
}

/// The first row of `t` at or after `from` whose key is not less than
/// `key` (`t.count` if none), every row before `from` being less: a
/// galloping search (rows `from`, `from + 1`, `from + 3`, ... then a
/// binary search in the last gap). `None`: a row names bytes outside it.
fn lower_bound(t: &Level, from: u64, key: &[u8]) -> Option<u64> {
    let count = t.count;
    let (mut a, mut b, mut step) = (from, from, 1u64);
    loop {
        if b >= count {
            b = count;
            break;
        }
        if t.raw_entry(b)?.0 >= key {
            break;
        }
        a = b + 1;
        b = b.saturating_add(step);
        step = step.saturating_mul(2);
    }
    while a < b {
        let mid = a + (b - a) / 2;
        if t.raw_entry(mid)?.0 < key {
            a = mid + 1;
        } else {
            b = mid;
        }
    }
    Some(a)
}

/// Writes the level of `t` (checked whole) with `change(0..n)` appended:
/// puts of keys that sort after every key of `t` (an import in key
/// order), `own` the new level's totals. The old entries' whole blocks
/// are written as they are, with their checksums (same bytes at the same
/// body offsets: their key offsets do not move), the rest checksummed as
/// written; the old keys are copied as one slice.
#[allow(clippy::too_many_arguments)]
fn write_appended<'a>(
    dir: &Path,
    manifest: &Manifest,
    cover: &[(u64, u64)],
    make: Make<'_>,
    own: &Sizes,
    t: &'a Level,
    n: usize,
    change: &dyn Fn(usize) -> Option<Change<'a>>,
    finish: Finish<'_>,
) -> Result<std::result::Result<(), Damaged>> {
    let entries_len = t.count as usize * ENTRY;
    let whole = entries_len / BLOCK;
    let outside = || Damaged(format!("{TABLE}: a change is outside it"));
    write_file(dir, manifest, cover, make, own, finish, |body| {
        let old = &t.map[t.body_at..];
        body.put_blocks(
            &old[..whole * BLOCK],
            &t.map[t.crcs_at..t.crcs_at + whole * 4],
        )?;
        body.put(&old[whole * BLOCK..entries_len])?;
        let mut key_off = t.keys_len;
        let mut buf = Vec::with_capacity(64 << 10);
        for c in 0..n {
            let Some((key, loc)) = change(c) else {
                return Ok(Err(outside()));
            };
            if buf.len() + ENTRY > buf.capacity() {
                body.put(&buf)?;
                buf.clear();
            }
            buf.extend_from_slice(&entry_bytes(key_off, key.len(), loc.as_ref()));
            key_off += key.len() as u64;
        }
        body.put(&buf)?;
        body.put(&old[entries_len..])?;
        for c in 0..n {
            match change(c) {
                Some((key, _)) => body.put(key)?,
                None => return Ok(Err(outside())),
            }
        }
        Ok(Ok(()))
    })
}

/// The fraction of the base a second level may reach before a table
/// write merges it into a new base: 1/`TOP_SHARE`.
const TOP_SHARE: u64 = 2;

/// Writes the key table after a writer committed `delta` (sorted by key,
/// each key once) since `table` (`None`: there is none), the live keys
/// then totalling `sizes`, covering the sidecars of `manifest` in `dir`
/// as `cover` says:
///
/// - no table, or no second level and a delta of at least half the base:
///   a new base (the old one merged with the delta);
/// - a second level that would reach half the base: first it is merged
///   into a new base (covering what it covers), then
/// - a new second level: the old one (if still there) merged with the
///   delta.
///
/// So the base is rewritten once per half of its size written, and the
/// second level holds at most half the base: every row is copied O(1)
/// times on average. `Ok(Err(_))`: a level turned out damaged.
#[allow(clippy::too_many_arguments)]
pub(crate) fn flush(
    dir: &Path,
    manifest: &Manifest,
    cover: &[(u64, u64)],
    sizes: &Sizes,
    table: Option<&Table>,
    delta: &[(&[u8], Option<&Loc>)],
    finish: Finish<'_>,
) -> Result<std::result::Result<(), Damaged>> {
    let Finish {
        durable,
        before_rename,
    } = finish;
    let d = delta.len() as u64;
    let from_delta = |c: usize| delta.get(c).map(|&(k, l)| (k, l.cloned()));
    let Some(t) = table else {
        return write_merged(
            dir,
            manifest,
            cover,
            Make::Base(sizes),
            None,
            delta.len(),
            &from_delta,
            Finish {
                durable,
                before_rename,
            },
        );
    };
    let merged;
    let (mut base, mut top) = (&t.base, t.top.as_ref());
    if let Some(l) = top.filter(|l| (l.count + d) * TOP_SHARE >= base.count) {
        // The second level into the base first, covering what it covers.
        let totals = l.top.as_ref().map(|h| h.totals.clone()).unwrap_or_default();
        let top_cover: Vec<(u64, u64)> =
            l.shards.iter().map(|c| (c.idx_len, c.record_end)).collect();
        if let Err(d) = l.check_all() {
            return Ok(Err(d));
        }
        let rows = |i: usize| l.raw_entry(i as u64);
        let written = write_merged(
            dir,
            manifest,
            &top_cover,
            Make::Base(&totals),
            Some(base),
            l.count as usize,
            &rows,
            Finish {
                durable,
                before_rename: &mut *before_rename,
            },
        )?;
        if let Err(d) = written {
            return Ok(Err(d));
        }
        merged = match Level::open(&dir.join(TABLE)) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(gone(TABLE, "the table just written is gone".into())),
            Err(why) => return Err(gone(TABLE, why)),
        };
        (base, top) = (&merged, None);
    }
    // Checked whole once per writer (checks are remembered per block):
    // a damaged base is rebuilt, not carried on under a second level.
    if let Err(d) = base.check_all() {
        return Ok(Err(d));
    }
    if top.is_none() && d * TOP_SHARE >= base.count {
        return write_merged(
            dir,
            manifest,
            cover,
            Make::Base(sizes),
            Some(base),
            delta.len(),
            &from_delta,
            Finish {
                durable,
                before_rename,
            },
        );
    }
    write_merged(
        dir,
        manifest,
        cover,
        Make::Top {
            totals: sizes,
            base: base.id,
        },
        top,
        delta.len(),
        &from_delta,
        Finish {
            durable,
            before_rename,
        },
    )
}

/// The error of a table file that cannot be opened right after writing.
fn gone(name: &str, why: String) -> StoreError {
    StoreError::io(format!("opening {name}"), std::io::Error::other(why))
}

/// Writes a key table level: the header of `make` with the level's own
/// totals `own`, covering the sidecars of `manifest` in `dir` as `cover`
/// says (per manifest position: sidecar length, end of the last committed
/// record), and the body `body` writes (entries, then keys), to a
/// temporary file, streamed (O(1) memory but for one checksum per 16 KiB
/// block); synced if `finish.durable`; then `finish.before_rename` (a
/// test hook); renamed over `keys.tbl` (or `keys2.tbl`); the directory
/// synced if durable. A new base makes the second level stale, so it is
/// then removed. The caller holds the writer lock (and for a durable
/// table has synced the sidecars it covers).
///
/// `Ok(Err(damaged))`: `body` found its source damaged, or disagreeing
/// with `own`; nothing was renamed.
fn write_file(
    dir: &Path,
    manifest: &Manifest,
    cover: &[(u64, u64)],
    make: Make<'_>,
    own: &Sizes,
    finish: Finish<'_>,
    body_of: impl FnOnce(
        &mut Body<std::io::BufWriter<File>>,
    ) -> std::io::Result<std::result::Result<(), Damaged>>,
) -> Result<std::result::Result<(), Damaged>> {
    use std::io::{BufWriter, Seek, SeekFrom};
    let io = |what: String| move |e| StoreError::io(what, e);
    let name = match make {
        Make::Base(_) => TABLE,
        Make::Top { .. } => TOP,
    };
    let mut covered = Vec::with_capacity(manifest.shards.len());
    for (&no, &(idx_len, record_end)) in manifest.shards.iter().zip(cover) {
        let idx = dir.join(idx_name(no));
        covered.push(Covered {
            no,
            tail_crc: tail_crc(&idx, idx_len).map_err(io(format!("reading {}", idx.display())))?,
            idx_len,
            record_end,
        });
    }
    let mut head = Vec::with_capacity(FIXED_TOP + covered.len() * SHARD + 8);
    head.extend_from_slice(match make {
        Make::Base(_) => MAGIC,
        Make::Top { .. } => MAGIC_TOP,
    });
    head.extend_from_slice(&manifest.generation.to_le_bytes());
    head.extend_from_slice(&own.count.to_le_bytes());
    head.extend_from_slice(&own.live_bytes.to_le_bytes());
    head.extend_from_slice(&own.keys_len.to_le_bytes());
    head.extend_from_slice(&(covered.len() as u32).to_le_bytes());
    head.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    let crcs_crc_at = head.len();
    head.extend_from_slice(&[0; 8]);
    if let Make::Top { totals, base } = make {
        head.extend_from_slice(&totals.count.to_le_bytes());
        head.extend_from_slice(&totals.live_bytes.to_le_bytes());
        head.extend_from_slice(&totals.keys_len.to_le_bytes());
        head.extend_from_slice(&base.0.to_le_bytes());
        head.extend_from_slice(&base.1.to_le_bytes());
        head.extend_from_slice(&[0; 4]);
    }
    for c in &covered {
        head.extend_from_slice(&c.no.to_le_bytes());
        head.extend_from_slice(&c.tail_crc.to_le_bytes());
        head.extend_from_slice(&c.idx_len.to_le_bytes());
        head.extend_from_slice(&c.record_end.to_le_bytes());
    }
    let body_len = own
        .count
        .checked_mul(ENTRY as u64)
        .and_then(|e| e.checked_add(own.keys_len))
        .ok_or_else(|| {
            StoreError::io(
                format!("writing {name}"),
                std::io::Error::other("its sizes overflow"),
            )
        })?;
    let nblocks = body_len.div_ceil(BLOCK as u64) as usize;
    // Header, its checksum and padding, block checksums, padding.
    let body_at = (head.len() + 8 + nblocks * 4).next_multiple_of(8);

    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let mut body = Body {
        out: BufWriter::with_capacity(1 << 20, file),
        crcs: Vec::with_capacity(nblocks * 4),
        crc: 0,
        in_block: 0,
        len: 0,
    };
    let written = (|| -> std::io::Result<std::result::Result<(), Damaged>> {
        body.out.write_all(&vec![0; body_at])?;
        if let Err(d) = body_of(&mut body)? {
            return Ok(Err(d));
        }
        if body.len != body_len {
            return Ok(Err(Damaged(
                "its body is not as long as its totals say".into(),
            )));
        }
        body.finish();
        head[crcs_crc_at..crcs_crc_at + 4]
            .copy_from_slice(&crc32c::crc32c(&body.crcs).to_le_bytes());
        let head_crc = crc32c::crc32c(&head);
        head.extend_from_slice(&head_crc.to_le_bytes());
        head.extend_from_slice(&[0; 4]);
        head.extend_from_slice(&body.crcs);
        head.resize(head.len().next_multiple_of(8), 0);
        debug_assert_eq!(head.len(), body_at);
        let mut file = body.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&head)?;
        if finish.durable {
            file.sync_all()?;
        }
        Ok(Ok(()))
    })();
    match written {
        Ok(Ok(())) => {}
        Ok(Err(d)) => {
            let _ = std::fs::remove_file(&tmp);
            return Ok(Err(d));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io(format!("writing {}", tmp.display()), e));
        }
    }
    (finish.before_rename)().map_err(io(format!("renaming {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(io(format!("renaming {}", tmp.display())))?;
    if let Make::Base(_) = make {
        // The second level names the old base: stale from here on.
        remove_file(dir, TOP)?;
    }
    if finish.durable {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing directory {}", dir.display())))?;
    }
    Ok(Ok(()))
}

/// Removes `name` from `dir`, if it is there.
pub(crate) fn remove_file(dir: &Path, name: &str) -> Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("removing {name}"), e)),
    }
}

/// Removes the temporary tables a writer left when it died while writing
/// one.
pub(crate) fn remove_temporary(dir: &Path) -> Result<()> {
    remove_file(dir, &format!(".{TABLE}.tmp"))?;
    remove_file(dir, &format!(".{TOP}.tmp"))
}

/// Removes the key table, both levels (before the sidecars change under
/// it). The second level first: a base without one is a whole table.
pub(crate) fn remove(dir: &Path) -> Result<()> {
    remove_file(dir, TOP)?;
    remove_file(dir, TABLE)
}

/// Whether the writer should rewrite the table at a flush: `since` puts
/// and deletions arrived since it was written, `live` keys are live.
/// Rewriting costs O(live log live), so it waits until the records a
/// reader must read from the sidecars' tails are many, and a large part
/// of the store: amortized O(1) per record.
pub(crate) fn due(since: u64, live: u64) -> bool {
    since >= 65_536.max(live / 8)
}
