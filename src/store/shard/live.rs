//! The writer's view of the live keys: the key table it last wrote or
//! checked (memory-mapped, never copied to the heap) plus a small
//! in-memory delta of what it committed since. Lookups go delta, then
//! table; a new table is the merge of the two, streamed.
//!
//! Heap: O(records since the table), not O(samples). The writer merges
//! when the delta is large relative to the table ([`table::due`]), so each
//! record is rewritten a bounded number of times over the store's life
//! and appends stay O(1) amortized.

use std::hash::BuildHasher;
use std::path::Path;

use foldhash::fast::RandomState;

use crate::store::error::{Result, StoreError};
use crate::store::key::MAX_KEY_LEN;
use crate::store::shard::index::Loc;
use crate::store::shard::layout::{decode_idx, idx_name, IdxRecord, Manifest, PUT};
use crate::store::shard::table::{self, Damaged, Sizes, Table};

/// Live keys as a writer sees them.
pub(super) struct LiveKeys {
    /// The table the delta applies to (`None`: an empty one).
    table: Option<Table>,
    /// Its first and last key: a key outside them needs no search (keys
    /// imported in order are all past the last).
    bounds: Option<[Box<[u8]>; 2]>,
    /// Keys committed since the table: their record, or `None` once
    /// deleted.
    delta: Delta,
    /// Totals of the live keys, table and delta together.
    sizes: Sizes,
    /// Records (puts and deletions) committed since the table.
    pub(super) since: u64,
    /// Why a lookup stopped trusting the table, if one did: the next
    /// table write rebuilds it from the sidecars.
    pub(super) damaged: Option<String>,
}

impl LiveKeys {
    /// No keys, no table.
    pub(super) fn empty() -> LiveKeys {
        LiveKeys {
            table: None,
            bounds: None,
            delta: Delta::default(),
            sizes: Sizes::default(),
            since: 0,
            damaged: None,
        }
    }

    /// The keys of a checked table, nothing since.
    pub(super) fn from_table(t: Table) -> LiveKeys {
        // A damaged first or last entry: no shortcut; lookups find it.
        let bounds = t.bounds();
        LiveKeys {
            bounds,
            sizes: Sizes {
                count: t.count,
                live_bytes: t.live_bytes,
                keys_len: t.keys_len,
            },
            table: Some(t),
            ..LiveKeys::empty()
        }
    }

    /// The keys the sidecars of `manifest` commit, read whole (what a
    /// writer rebuilds a table that does not match from). The last
    /// shard's sidecar is read up to `last_len` bytes, what the writer
    /// committed. Heap: O(samples), until the table is written.
    pub(super) fn from_sidecars(dir: &Path, manifest: &Manifest, last_len: u64) -> Result<Self> {
        use std::io::Read;
        let mut keys = LiveKeys::empty();
        let n = manifest.shards.len();
        for (pos, &no) in manifest.shards.iter().enumerate() {
            let path = dir.join(idx_name(no));
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| {
                    let limit = if pos + 1 == n { last_len } else { u64::MAX };
                    f.take(limit).read_to_end(&mut bytes)
                })
                .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
            // Recovery at open left only valid records inside their shards.
            let (records, _, _) = decode_idx(&bytes, 0, MAX_KEY_LEN);
            keys.delta.reserve(records.len(), 0);
            for r in records {
                keys.apply(pos, r);
            }
        }
        Ok(keys)
    }

    /// Number of live keys.
    pub(super) fn len(&self) -> u64 {
        self.sizes.count
    }

    /// The record of `key`, if it is live: the delta, then the table.
    pub(super) fn get(&self, key: &[u8]) -> std::result::Result<Option<Loc>, Damaged> {
        match self.delta.find(key) {
            Some(slot) => Ok(self.delta.slots[slot].loc.clone()),
            None => in_table(self.table.as_ref(), self.bounds.as_ref(), key),
        }
    }

    /// Applies a committed sidecar record of shard position `shard`.
    pub(super) fn apply(&mut self, shard: usize, r: IdxRecord) {
        self.apply_parts(shard, r.kind, &r.key, r.offset, r.len, r.crc);
    }

    /// [`apply`](Self::apply) of a record given by its fields: the key is
    /// copied into the delta's arena, so the caller needs no allocation
    /// per key.
    pub(super) fn apply_parts(
        &mut self,
        shard: usize,
        kind: [u8; 4],
        key: &[u8],
        offset: u64,
        len: u64,
        crc: u32,
    ) {
        let after = (kind == PUT).then_some(Loc {
            shard,
            offset,
            len,
            crc,
        });
        let key_len = key.len() as u64;
        // A key past every key of the delta's sorted run, with nothing
        // hashed yet (an import in key order): new to the delta, appended
        // to the run without hashing. Otherwise one search of the run and
        // one probe of the hash table; the table only for a key the delta
        // does not hold.
        self.grow_delta();
        let before = match self.delta.place(key) {
            Place::Found(slot) => std::mem::replace(&mut self.delta.slots[slot].loc, after.clone()),
            place => {
                let before = match in_table(self.table.as_ref(), self.bounds.as_ref(), key) {
                    Ok(loc) => loc,
                    Err(Damaged(why)) => {
                        // Totals are rebuilt with the table.
                        self.damaged.get_or_insert(why);
                        None
                    }
                };
                self.delta.insert(place, key, after.clone());
                before
            }
        };
        let s = &mut self.sizes;
        if let Some(old) = before {
            s.count -= 1;
            s.live_bytes -= old.len;
            s.keys_len -= key_len;
        }
        if let Some(new) = &after {
            s.count += 1;
            s.live_bytes += new.len;
            s.keys_len += key_len;
        }
        self.since += 1;
    }

    /// Before an insert into a full delta of some size: makes room at
    /// once for the records the default policy ([`table::due`]) takes
    /// before the table is next written, instead of growing by
    /// doublings, each of which re-hashes every key (a cache miss per
    /// key once the delta holds millions). A small delta grows as usual,
    /// so a writer of a few records holds a small map.
    fn grow_delta(&mut self) {
        let len = self.delta.hashed_len();
        if len < 4096 || len < self.delta.hash_capacity() {
            return;
        }
        // Every record adds at most one key; the table is due when
        // `since` reaches max(65 536, live / 8), live growing with it.
        let older = self.sizes.count.saturating_sub(self.since);
        let due_at = 65_536u64.max(older / 7 + 1);
        let more = usize::try_from(due_at.saturating_sub(self.since)).unwrap_or(usize::MAX);
        // Past the due point (a table write failed, or a compaction's
        // keys wait): the usual doubling.
        self.delta.reserve(0, more.clamp(1, len.max(1 << 20)));
    }

    /// Writes the table of these keys (the old table's levels merged with
    /// the delta as [`table::flush`] decides), covering `manifest`'s
    /// sidecars as `cover` says. On success the new table is mapped and
    /// the delta emptied. `Ok(Err(_))`: the old table turned out damaged;
    /// nothing changed.
    pub(super) fn write(
        &mut self,
        dir: &Path,
        manifest: &Manifest,
        cover: &[(u64, u64)],
        finish: table::Finish<'_>,
    ) -> Result<std::result::Result<(), Damaged>> {
        if let Some(why) = &self.damaged {
            return Ok(Err(Damaged(why.clone())));
        }
        // References, not copies: the delta can hold millions of keys.
        let changes = self.delta.sorted();
        let written = table::flush(
            dir,
            manifest,
            cover,
            &self.sizes,
            self.table.as_ref(),
            &changes,
            finish,
        )?;
        if let Err(d) = written {
            return Ok(Err(d));
        }
        drop(changes);
        let t = match Table::open(dir) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(StoreError::io(
                    format!("opening {}", table::TABLE),
                    std::io::Error::other("the table just written is gone"),
                ))
            }
            Err(why) => {
                return Err(StoreError::io(
                    format!("opening {}", table::TABLE),
                    std::io::Error::other(why),
                ))
            }
        };
        // Adopt it only if it is what was just written: the cover asked
        // for and the keys this writer holds. `Table::open` falls back to
        // the base alone when the second level cannot be opened now, or
        // lies over another base (one a failed compaction left on disk);
        // adopting that would forget the records of the level just
        // written, and the next second level, covering the sidecars to
        // their ends without them, would hide them from every reader. The
        // table is then not trusted by this writer: its next table write
        // rebuilds from the sidecars.
        let covers: Vec<(u64, u64)> = t.shards.iter().map(|c| (c.idx_len, c.record_end)).collect();
        if covers != cover || t.count != self.len() {
            let why = format!(
                "{}: the table read back after writing it is not the one written (it covers {} shards and holds {} keys; {} shards and {} keys were written)",
                table::TABLE,
                covers.len(),
                t.count,
                cover.len(),
                self.len()
            );
            self.damaged = Some(why.clone());
            return Ok(Err(Damaged(why)));
        }
        let mut t = t;
        if let Some(old) = self.table.take() {
            t.keep_base(old);
        }
        // The delta's buffers are kept for the next one (cleared, not
        // freed), unless they are far larger than the next delta will be
        // (after a rebuild from the sidecars).
        let mut delta = std::mem::take(&mut self.delta);
        let next = 65_536u64.max(t.count / 7 + 1);
        if delta.slots.capacity() as u64 > 4 * next {
            delta = Delta::default();
        } else {
            delta.clear();
        }
        *self = LiveKeys::from_table(t);
        self.delta = delta;
        Ok(Ok(()))
    }
}

/// One key of the delta: its bytes in the arena and its change.
struct Slot {
    /// Where the key starts in [`Delta::arena`].
    start: usize,
    /// Its length (keys are at most [`MAX_KEY_LEN`] bytes).
    len: u32,
    /// Its record, or `None` once deleted.
    loc: Option<Loc>,
}

/// Where a key is, or goes, in the delta.
#[derive(Clone, Copy)]
enum Place {
    /// In slot `.0`.
    Found(usize),
    /// Not there; past the sorted run's last key, with nothing hashed:
    /// it extends the run.
    Run,
    /// Not there; it goes into the hash table at bucket `.0`.
    Hashed(u32),
}

/// The keys committed since the table, without an allocation per key:
/// their bytes in one arena, their slots in arrival order. The first
/// slots, while keys arrive in increasing order (the usual import), form
/// a sorted run found by binary search, never hashed, and already in
/// order for the next table. Later slots are found through an
/// open-addressing hash table of slot numbers. Buffers are reused from
/// one table write to the next.
#[derive(Default)]
struct Delta {
    /// Every key's bytes, back to back.
    arena: Vec<u8>,
    /// One per key, in arrival order.
    slots: Vec<Slot>,
    /// `slots[..run]` are in strictly increasing key order and not hashed.
    run: usize,
    /// Buckets of the hash table over `slots[run..]`: 0 for an empty one,
    /// else the slot number plus one and the key's 32-bit hash (kept so
    /// probes compare keys only on a hash match and growing rehashes no
    /// key). Empty or a power of two long, at most half full.
    buckets: Vec<(u32, u32)>,
    /// Seeds the hash (random per process).
    hasher: RandomState,
}

impl Delta {
    /// The key of slot `i`.
    fn key(&self, i: usize) -> &[u8] {
        let s = &self.slots[i];
        &self.arena[s.start..s.start + s.len as usize]
    }

    /// Keys in the hash table.
    fn hashed_len(&self) -> usize {
        self.slots.len() - self.run
    }

    /// Keys the hash table holds before it grows.
    fn hash_capacity(&self) -> usize {
        self.buckets.len() / 2
    }

    /// The key's 32-bit hash.
    fn hash(&self, key: &[u8]) -> u32 {
        let h = self.hasher.hash_one(key);
        (h ^ (h >> 32)) as u32
    }

    /// Makes room for `slots` more keys and a hash table of at least
    /// `hashed` keys.
    fn reserve(&mut self, slots: usize, hashed: usize) {
        self.slots.reserve(slots);
        let want = (self.hashed_len() + hashed)
            .saturating_mul(2)
            .max(64)
            .checked_next_power_of_two()
            .unwrap_or(1 << 31);
        if want > self.buckets.len() {
            self.rehash(want);
        }
    }

    /// Rebuilds the hash table with `size` buckets (a power of two).
    fn rehash(&mut self, size: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![(0, 0); size]);
        let mask = size - 1;
        for (slot, hash) in old.into_iter().filter(|b| b.0 != 0) {
            let mut at = hash as usize & mask;
            while self.buckets[at].0 != 0 {
                at = (at + 1) & mask;
            }
            self.buckets[at] = (slot, hash);
        }
    }

    /// The slot of `key`, if the delta holds it.
    fn find(&self, key: &[u8]) -> Option<usize> {
        match self.place(key) {
            Place::Found(slot) => Some(slot),
            _ => None,
        }
    }

    /// Where `key` is, or where [`insert`](Self::insert) puts it.
    fn place(&self, key: &[u8]) -> Place {
        if self.run > 0 {
            let last = self.key(self.run - 1);
            if key <= last {
                // Binary search of the run (the last key first).
                if key == last {
                    return Place::Found(self.run - 1);
                }
                let (mut lo, mut hi) = (0, self.run - 1);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match self.key(mid).cmp(key) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => return Place::Found(mid),
                    }
                }
            } else if self.hashed_len() == 0 {
                return Place::Run;
            }
        } else if self.slots.is_empty() {
            return Place::Run;
        }
        if self.buckets.is_empty() {
            return Place::Hashed(0);
        }
        let hash = self.hash(key);
        let mask = self.buckets.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let (slot, h) = self.buckets[at];
            if slot == 0 {
                return Place::Hashed(at as u32);
            }
            if h == hash && self.key(slot as usize - 1) == key {
                return Place::Found(slot as usize - 1);
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds `key`, which the delta does not hold, where [`place`]
    /// (Self::place) said (no change to the delta in between).
    fn insert(&mut self, place: Place, key: &[u8], loc: Option<Loc>) {
        let slot = self.slots.len();
        self.slots.push(Slot {
            start: self.arena.len(),
            len: key.len() as u32,
            loc,
        });
        self.arena.extend_from_slice(key);
        match place {
            Place::Run => self.run += 1,
            Place::Hashed(mut at) => {
                if self.hashed_len() > self.hash_capacity() {
                    // Full (or no table yet): grow, then find the bucket
                    // again.
                    let size = (self.buckets.len() * 2).max(64);
                    self.rehash(size);
                    at = u32::MAX;
                }
                let hash = self.hash(key);
                let mask = self.buckets.len() - 1;
                let mut at = if at == u32::MAX {
                    hash as usize & mask
                } else {
                    at as usize
                };
                while self.buckets[at].0 != 0 {
                    at = (at + 1) & mask;
                }
                let id = u32::try_from(slot + 1).expect("fewer than 2^32 keys in a delta");
                self.buckets[at] = (id, hash);
            }
            Place::Found(_) => unreachable!("insert of a key the delta holds"),
        }
    }

    /// Every key and its change, in key order: the run as it is, merged
    /// with the hashed keys sorted.
    fn sorted(&self) -> Vec<(&[u8], Option<&Loc>)> {
        let entry = |i: usize| (self.key(i), self.slots[i].loc.as_ref());
        let mut out = Vec::with_capacity(self.slots.len());
        if self.hashed_len() == 0 {
            out.extend((0..self.run).map(entry));
            return out;
        }
        let mut hashed: Vec<(&[u8], Option<&Loc>)> =
            (self.run..self.slots.len()).map(entry).collect();
        hashed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut run = (0..self.run).map(entry).peekable();
        for h in hashed {
            while let Some(r) = run.next_if(|r| r.0 < h.0) {
                out.push(r);
            }
            out.push(h);
        }
        out.extend(run);
        out
    }

    /// Empties the delta, keeping its buffers.
    fn clear(&mut self) {
        self.arena.clear();
        self.slots.clear();
        self.run = 0;
        self.buckets.fill((0, 0));
    }
}

/// The record of `key` in `table` (`None`: an empty one), whose first
/// and last keys are `bounds`: a key outside them needs no search.
fn in_table(
    table: Option<&Table>,
    bounds: Option<&[Box<[u8]>; 2]>,
    key: &[u8],
) -> std::result::Result<Option<Loc>, Damaged> {
    let Some(t) = table else { return Ok(None) };
    if let Some([first, last]) = bounds {
        if key < &**first || key > &**last {
            return Ok(None);
        }
    }
    t.get(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::shard::layout::DEL;

    fn record(i: u64, kind: [u8; 4]) -> IdxRecord {
        IdxRecord {
            kind,
            key: format!("k{i:08}").into_bytes().into(),
            offset: i * 100,
            len: 100,
            crc: i as u32,
        }
    }

    /// A key and its record's (shard, offset), `None` when deleted.
    type Change = (Vec<u8>, Option<(usize, u64)>);

    /// Key `i` of a test, in the order of `i`.
    fn key(i: u64) -> Vec<u8> {
        format!("k{i:08}").into_bytes()
    }

    #[test]
    fn a_growing_delta_makes_room_once_and_keeps_its_totals() {
        let mut keys = LiveKeys::empty();
        let n = 8000u64;
        // A scrambled order (a bijection of 0..n), so the keys are hashed.
        let order = |j: u64| (j * 7919) % n;
        for j in 0..n {
            keys.apply(0, record(order(j), PUT));
        }
        // Full past 4096 keys, the hash table grew to what the table's due
        // point (65 536 records for a small store) needs, not by doublings.
        assert!(
            keys.delta.hash_capacity() >= 65_536,
            "capacity {}",
            keys.delta.hash_capacity()
        );
        keys.apply(0, record(7, DEL));
        let mut again = record(9, PUT);
        again.offset = 1;
        again.len = 40;
        keys.apply(1, again);
        assert_eq!(keys.len(), n - 1);
        assert_eq!(keys.since, n + 2);
        assert_eq!(keys.sizes.live_bytes, (n - 2) * 100 + 40);
        assert_eq!(keys.sizes.keys_len, (n - 1) * 9);
        for i in 0..n {
            let got = keys.get(&key(i)).unwrap();
            let want = match i {
                7 => None,
                9 => Some((1, 1)),
                _ => Some((0, i * 100)),
            };
            assert_eq!(got.map(|l| (l.shard, l.offset)), want, "key {i}");
        }
    }

    #[test]
    fn keys_in_order_form_a_run_that_later_keys_hash_beside() {
        use std::collections::BTreeMap;
        let mut keys = LiveKeys::empty();
        let mut model: BTreeMap<Vec<u8>, Option<(usize, u64)>> = BTreeMap::new();
        let mut step = |keys: &mut LiveKeys, i: u64, kind: [u8; 4], shard: usize| {
            let mut r = record(i, kind);
            r.offset = keys.since * 10;
            model.insert(key(i), (kind == PUT).then_some((shard, r.offset)));
            keys.apply(shard, r);
        };
        // Increasing keys (even ones) with gaps: all in the run.
        for i in (0..200).step_by(2) {
            step(&mut keys, i, PUT, 0);
        }
        assert_eq!((keys.delta.run, keys.delta.hashed_len()), (100, 0));
        // Overwrites and deletions inside the run stay there.
        step(&mut keys, 0, PUT, 1);
        step(&mut keys, 100, DEL, 1);
        step(&mut keys, 198, PUT, 1);
        assert_eq!((keys.delta.run, keys.delta.hashed_len()), (100, 0));
        // A key before the run's last (a gap in it): hashed, and the run
        // stops growing, even for keys past its end.
        step(&mut keys, 51, PUT, 2);
        step(&mut keys, 500, PUT, 2);
        step(&mut keys, 300, DEL, 2);
        for i in (1..120).step_by(4) {
            step(&mut keys, i, PUT, 3);
        }
        step(&mut keys, 51, DEL, 3);
        step(&mut keys, 500, PUT, 4);
        step(&mut keys, 2, PUT, 4);
        assert_eq!(keys.delta.run, 100);
        assert_eq!(keys.delta.run + keys.delta.hashed_len(), model.len());
        for i in 0..600 {
            let got = keys.get(&key(i)).unwrap().map(|l| (l.shard, l.offset));
            assert_eq!(got, model.get(&key(i)).copied().flatten(), "key {i}");
        }
        let live = model.values().filter(|v| v.is_some()).count() as u64;
        assert_eq!(keys.len(), live);
        // The changes a table write takes: every key once, in key order.
        let sorted: Vec<Change> = keys
            .delta
            .sorted()
            .into_iter()
            .map(|(k, l)| (k.to_vec(), l.map(|l| (l.shard, l.offset))))
            .collect();
        let want: Vec<Change> = model.into_iter().collect();
        assert_eq!(sorted, want);
        // Cleared for reuse: empty, and a new run starts at any key.
        keys.delta.clear();
        assert!(keys.delta.find(&key(0)).is_none() && keys.delta.find(&key(51)).is_none());
        keys.apply(0, record(5, PUT));
        keys.apply(0, record(3, PUT));
        assert_eq!((keys.delta.run, keys.delta.hashed_len()), (1, 1));
        assert_eq!(keys.get(&key(3)).unwrap().map(|l| l.offset), Some(300));
        assert_eq!(keys.get(&key(5)).unwrap().map(|l| l.offset), Some(500));
    }
}
