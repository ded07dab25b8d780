//! The writer's view of the live keys: the key table it last wrote or
//! checked (memory-mapped, never copied to the heap) plus a small
//! in-memory delta of what it committed since. Lookups go delta, then
//! table; a new table is the merge of the two, streamed.
//!
//! Heap: O(records since the table), not O(samples). The writer merges
//! when the delta is large relative to the table ([`table::due`]), so each
//! record is rewritten a bounded number of times over the store's life
//! and appends stay O(1) amortized.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

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
    delta: HashMap<Arc<[u8]>, Option<Loc>, RandomState>,
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
            delta: HashMap::default(),
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
            keys.delta.reserve(records.len());
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
        match self.delta.get(key) {
            Some(change) => Ok(change.clone()),
            None => in_table(self.table.as_ref(), self.bounds.as_ref(), key),
        }
    }

    /// Applies a committed sidecar record of shard position `shard`.
    pub(super) fn apply(&mut self, shard: usize, r: IdxRecord) {
        use std::collections::hash_map::Entry;
        let after = (r.kind == PUT).then_some(Loc {
            shard,
            offset: r.offset,
            len: r.len,
            crc: r.crc,
        });
        let key_len = r.key.len() as u64;
        self.grow_delta();
        // One hash lookup: the key's entry, then the table only for a key
        // not in the delta. An existing entry keeps its key allocation.
        let before = match self.delta.entry(r.key) {
            Entry::Occupied(mut e) => e.insert(after.clone()),
            Entry::Vacant(e) => {
                let before = match in_table(self.table.as_ref(), self.bounds.as_ref(), e.key()) {
                    Ok(loc) => loc,
                    Err(Damaged(why)) => {
                        // Totals are rebuilt with the table.
                        self.damaged.get_or_insert(why);
                        None
                    }
                };
                e.insert(after.clone());
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
        let len = self.delta.len();
        if len < 4096 || len < self.delta.capacity() {
            return;
        }
        // Every record adds at most one key; the table is due when
        // `since` reaches max(65 536, live / 8), live growing with it.
        let older = self.sizes.count.saturating_sub(self.since);
        let due_at = 65_536u64.max(older / 7 + 1);
        let more = usize::try_from(due_at.saturating_sub(self.since)).unwrap_or(usize::MAX);
        // Past the due point (a table write failed, or a compaction's
        // keys wait): the usual doubling.
        self.delta.reserve(more.clamp(1, len.max(1 << 20)));
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
        let mut changes: Vec<(&[u8], Option<&Loc>)> =
            self.delta.iter().map(|(k, v)| (&**k, v.as_ref())).collect();
        changes.sort_unstable_by(|a, b| a.0.cmp(b.0));
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
        *self = LiveKeys::from_table(t);
        Ok(Ok(()))
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

    #[test]
    fn a_growing_delta_makes_room_once_and_keeps_its_totals() {
        let mut keys = LiveKeys::empty();
        let n = 8000u64;
        for i in 0..n {
            keys.apply(0, record(i, PUT));
        }
        // Full past 4096 keys (at 7168), the delta grew to what the table's due point
        // (65 536 records for a small store) needs, not by a doubling.
        assert!(
            keys.delta.capacity() >= 65_536,
            "capacity {}",
            keys.delta.capacity()
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
            let got = keys.get(format!("k{i:08}").as_bytes()).unwrap();
            let want = match i {
                7 => None,
                9 => Some((1, 1)),
                _ => Some((0, i * 100)),
            };
            assert_eq!(got.map(|l| (l.shard, l.offset)), want, "key {i}");
        }
    }
}
