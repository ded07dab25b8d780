//! Compaction ([`ShardStore::compact`]) and reindexing
//! ([`ShardStore::reindex`]) of a shard store.

use std::fs;
use std::io;
use std::path::Path;

use super::files::*;
use super::store::*;
use super::writer::*;
use crate::store::error::{Result, StoreError};
use crate::store::key::MAX_KEY_LEN;
use crate::store::shard::layout::{
    decode_idx, encode_idx, idx_name, resync_idx, shard_name, IdxRecord, IdxStop, Manifest,
    IDX_MAGIC,
};
use crate::store::shard::live::LiveKeys;
use crate::store::shard::scan::scan;
use crate::store::shard::snapshot::{map_shard, read_manifest, RecordFault, Snapshot};
use crate::store::shard::table;
use crate::tensor::TensorRef;

impl ShardStore {
    /// Rewrites the shards without overwritten and deleted samples and
    /// swaps them in atomically (a new manifest). Readers holding snapshots
    /// of the old shards keep reading them: the old files are unlinked,
    /// not truncated. Returns the bytes of shard files before and after.
    pub fn compact(&self) -> Result<(u64, u64)> {
        let mut w = self.writer()?;
        w.sync()?;
        let dir = &self.inner.dir;
        let snap = Snapshot::load(dir, false)?;
        let before = shard_bytes(dir, &w.manifest.shards);
        let first = w.manifest.shards.iter().max().copied().unwrap_or(0) + 1;
        let manifest = Manifest {
            generation: w.manifest.generation + 1,
            shards: vec![first],
        };
        create_shard(dir, first)?;
        // Opened before the writer's state changes: a failure here leaves
        // the writer exactly as it was.
        let new_cur = open_current(dir, first)?;
        // The writer writes the new shards as it appends (rolling at the
        // shard limit, committing through their sidecars), but publishes
        // nothing until they are complete.
        let staged = Staged {
            manifest: std::mem::replace(&mut w.manifest, manifest),
            cur: std::mem::replace(&mut w.cur, new_cur),
            keys: std::mem::replace(&mut w.keys, LiveKeys::empty()),
        };
        w.published = false;
        // Durability is the compaction's own: synced at each roll and at
        // the end, whatever the store's mode.
        let options = ShardOptions {
            durability: Durability::Close,
            ..self.inner.options.clone()
        };
        let written = (|| -> Result<()> {
            let mut batch: Vec<Append<'_, TensorRef<'static>>> = Vec::with_capacity(COPY_BATCH);
            let mut entries = snap.entries().peekable();
            while entries.peek().is_some() {
                batch.clear();
                for e in entries.by_ref().take(COPY_BATCH) {
                    let record =
                        snap.checked_record(&e.loc)
                            .map_err(|fault| StoreError::Corrupt {
                                key: crate::error::escape(e.key),
                                what: match fault {
                                    RecordFault::Outside | RecordFault::Unavailable(_) => {
                                        fault.to_string()
                                    }
                                    RecordFault::Checksum { .. } => {
                                        format!("{fault}; compaction stopped, nothing changed")
                                    }
                                },
                            })?;
                    batch.push(Append::Copy { key: e.key, record });
                }
                w.append(dir, &options, batch.drain(..))?;
            }
            w.sync()?;
            sync_dir(dir)?;
            w.write_table(dir)
        })();
        if let Err(e) = written {
            // The old shards are untouched and still the store's; the new
            // ones are orphans the next writer removes.
            w.manifest = staged.manifest;
            w.cur = staged.cur;
            w.keys = staged.keys;
            // The key table on disk may be the compacted store's (written
            // before the failure); the writer's next table write rebuilds
            // from the sidecars instead of writing over a base it does
            // not hold.
            w.keys.damaged.get_or_insert_with(|| {
                format!(
                    "{}: a compaction failed after writing it",
                    super::table::TABLE
                )
            });
            w.published = true;
            // Nothing of the new shards was visible.
            w.failed = None;
            return Err(e);
        }
        let published = if w.faults.compact_publish {
            Err(StoreError::io(
                "writing the compacted store's manifest",
                w.faults.eio(),
            ))
        } else {
            write_manifest(dir, &w.manifest)
        };
        if let Err(e) = published {
            // The new manifest may or may not be in place (the rename can
            // precede a failed directory sync). Either names a complete
            // store: the old shards are still there, the new ones are
            // synced. The next open takes whichever is on disk, but this
            // handle cannot know which, so it takes no more writes (a write
            // to either set of shards could be dropped as an orphan).
            w.failed = Some(format!("publishing the compacted shards failed: {e}"));
            return Err(e);
        }
        w.published = true;
        for &old in &staged.manifest.shards {
            let _ = fs::remove_file(dir.join(shard_name(old)));
            let _ = fs::remove_file(dir.join(idx_name(old)));
        }
        let after = shard_bytes(dir, &w.manifest.shards);
        Ok((before, after))
    }

    /// Rebuilds the sidecars (and the manifest, if it is lost) from the
    /// shards themselves. Takes the writer lock.
    ///
    /// Every sidecar record that is still valid (its own checksum holds,
    /// also past a damaged one) and names bytes inside its shard is kept
    /// as it is, with the checksum committed with it, so `verify` still
    /// catches damage to its bytes. The shard bytes no such record covers
    /// are scanned for whole records (their tenbin structure checked),
    /// which get new sidecar records with checksums of the bytes as they
    /// are now: [`ReindexedShard::rebuilt`] counts them. A record cut off
    /// mid-chunk is not indexed (the next writer cuts it).
    ///
    /// A shard cannot tell whether a record that ends where the shard ends
    /// lost trailing tensors to a torn write; the sidecars can, so keep
    /// them when you can.
    pub fn reindex<P: AsRef<Path>>(dir: P) -> Result<Vec<ReindexedShard>> {
        let dir = dir.as_ref();
        let _lock = lock(dir)?;
        // The sidecars change under it: rebuilt at the end.
        table::remove(dir)?;
        let shards: Vec<u32> = match read_manifest(dir)? {
            Some(m) => m.shards,
            None => {
                let mut nums: Vec<u32> = shard_files(dir)?
                    .into_iter()
                    .filter(|(_, n)| n.ends_with(".ten"))
                    .map(|(n, _)| n)
                    .collect();
                nums.dedup();
                if nums.is_empty() {
                    return Err(StoreError::NotAStore {
                        path: dir.to_owned(),
                    });
                }
                nums
            }
        };
        let mut out = Vec::new();
        for &no in &shards {
            let map = map_shard(&dir.join(shard_name(no)))?;
            let bytes: &[u8] = map.as_deref().map_or(&[], |m| &m[..]);
            let idx_path = dir.join(idx_name(no));
            let old = match fs::read(&idx_path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(StoreError::io(format!("reading {}", idx_path.display()), e)),
            };
            let (records, rebuilt) = merge_records(&old, bytes);
            let mut idx = IDX_MAGIC.to_vec();
            let mut end = 0;
            for r in &records {
                idx.extend_from_slice(&encode_idx(r.kind, &r.key, r.offset, r.len, r.crc));
                end = end.max(r.offset + r.len);
            }
            write_atomic(dir, &idx_name(no), &idx)?;
            let covered: u64 = records.iter().map(|r| r.len).sum();
            out.push(ReindexedShard {
                shard: no,
                records: records.len() as u64,
                rebuilt,
                bytes_after: bytes.len() as u64 - end,
                bytes_unindexed: bytes.len() as u64 - covered,
            });
        }
        if read_manifest(dir)?.is_none() {
            write_manifest(
                dir,
                &Manifest {
                    generation: 1,
                    shards,
                },
            )?;
        }
        if let Some(m) = read_manifest(dir)? {
            let snap = Snapshot::load_sidecars(dir)?;
            table::write(dir, &m, snap.index(), &snap.cover())?;
        }
        Ok(out)
    }
}

/// Records a compaction copies per write call (one sidecar write each).
const COPY_BATCH: usize = 4096;

/// The writer's state while a compaction writes new shards, put back if
/// it fails.
struct Staged {
    manifest: Manifest,
    cur: Current,
    keys: LiveKeys,
}

/// What [`ShardStore::reindex`] did to one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReindexedShard {
    /// The shard's number.
    pub shard: u32,
    /// Records its new sidecar holds.
    pub records: u64,
    /// Of those, records no valid sidecar record committed: indexed from
    /// the shard's structure alone, with checksums of their bytes as they
    /// are now.
    pub rebuilt: u64,
    /// Bytes after the last record indexed (a torn tail: the next writer
    /// cuts it).
    pub bytes_after: u64,
    /// Bytes of the shard no record indexed covers (the tail included):
    /// torn or damaged bytes, and records the scan could not read.
    pub bytes_unindexed: u64,
}

/// The records of a shard: the valid records of its old sidecar `old`
/// (header and all) that lie inside `shard`, and whole records scanned
/// from the bytes between and after them. Returns them in shard order and
/// how many were scanned.
pub(super) fn merge_records(old: &[u8], shard: &[u8]) -> (Vec<IdxRecord>, u64) {
    let (mut kept, _, stop) = decode_idx(old, 0, MAX_KEY_LEN);
    let header_ok = old.len() >= IDX_MAGIC.len() && old[..IDX_MAGIC.len()] == IDX_MAGIC[..];
    if let (true, IdxStop::Torn(at)) = (header_ok, stop) {
        kept.extend(resync_idx(old, at, MAX_KEY_LEN).into_iter().map(|(_, r)| r));
    }
    kept.retain(|r| {
        r.offset
            .checked_add(r.len)
            .is_some_and(|e| e <= shard.len() as u64)
    });
    kept.sort_by_key(|r| r.offset);
    // Overlapping records cannot both be right: keep the first.
    let mut old_records: Vec<IdxRecord> = Vec::with_capacity(kept.len());
    for r in kept {
        if old_records
            .last()
            .is_none_or(|p| p.offset + p.len <= r.offset)
        {
            old_records.push(r);
        }
    }
    let mut out = Vec::with_capacity(old_records.len());
    let mut rebuilt = 0;
    let mut gap_start = 0u64;
    let mut old_iter = old_records.into_iter().peekable();
    loop {
        let gap_end = old_iter.peek().map_or(shard.len() as u64, |r| r.offset);
        if gap_end > gap_start {
            // Scanned records that fit the gap: a record running into the
            // next committed one ends at it.
            let found = scan(&shard[..gap_end as usize], gap_start as usize);
            rebuilt += found.records.len() as u64;
            out.extend(found.records);
        }
        match old_iter.next() {
            Some(r) => {
                gap_start = r.offset + r.len;
                out.push(r);
            }
            None => break,
        }
    }
    (out, rebuilt)
}

/// Bytes of the shard files `shards` in `dir` (a missing one counts 0).
fn shard_bytes(dir: &Path, shards: &[u32]) -> u64 {
    shards
        .iter()
        .map(|&n| fs::metadata(dir.join(shard_name(n))).map_or(0, |m| m.len()))
        .sum()
}
