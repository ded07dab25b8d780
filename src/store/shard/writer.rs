//! The shard store's single writer: appending records and committing them
//! through the sidecars, rolling to a new shard, syncing, and the faults
//! tests inject.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::files::*;
use super::store::*;
use crate::store::error::{Result, StoreError};
use crate::store::shard::layout::{
    encode_idx, idx_name, shard_name, write_record, Manifest, DEL, PUT,
};
use crate::store::shard::live::LiveKeys;
use crate::store::shard::table;
use crate::tensor::AsTensorRef;

/// The shard being appended to.
pub(super) struct Current {
    pub(super) no: u32,
    pub(super) shard: BufWriter<File>,
    /// Bytes appended to the shard, committed or not.
    pub(super) shard_len: u64,
    /// Bytes of the shard that sidecar records cover.
    pub(super) committed: u64,
    pub(super) idx: File,
    pub(super) idx_len: u64,
}

pub(super) struct Writer {
    pub(super) _lock: File,
    /// The shards being written, the last one appended to.
    pub(super) manifest: Manifest,
    /// Whether `manifest` is the store's (else a compaction is writing
    /// new shards the store does not list yet: rolling does not publish
    /// them, and the key table waits).
    pub(super) published: bool,
    /// The live keys: the key table plus what was committed since.
    pub(super) keys: LiveKeys,
    pub(super) cur: Current,
    /// Why this writer stopped taking writes: an append failed once sidecar
    /// bytes of its batch may have reached the file (see [`Writer::commit`]).
    pub(super) failed: Option<String>,
    /// Injected faults (tests only; none by default).
    pub(super) faults: Faults,
    /// After a key table write failed while appending: `keys.since` at
    /// which to try again (the table is a cache; the records are
    /// committed regardless).
    pub(super) table_retry: u64,
}

/// Faults a test injects into a shard store's writer, to reach the failure
/// paths of a full disk or a failing device without one. Not part of the
/// API: no option of a real store sets them.
#[doc(hidden)]
#[derive(Default)]
pub struct Faults {
    /// Bytes the emulated disk still takes, shard and sidecar writes
    /// together; a write past them is cut short and fails with ENOSPC, as a
    /// full filesystem does. `None`: no limit.
    pub space: Option<u64>,
    /// `fdatasync` calls of the append path that still succeed; every
    /// later one fails with EIO, as a failing device does. `None`: no
    /// limit.
    pub syncs: Option<u64>,
    /// Called where an injected fault fires, before the error travels up:
    /// a test takes a snapshot there, inside the window a real failure
    /// would leave.
    pub on_fault: Option<Box<dyn Fn() + Send>>,
    /// Key table writes that still complete; the next one stops after its
    /// temporary file is written and synced, before the rename (calls
    /// `on_fault`, then fails with EIO). `None`: no limit.
    pub table_writes: Option<u64>,
    /// Rewrite the key table once this many records were committed since
    /// it, at the end of a write call, instead of the default policy
    /// ([`table::due`]): tests reach the merge points with few records.
    pub table_due: Option<u64>,
    /// Compaction's manifest publish fails with EIO (after `on_fault`), as
    /// a failed write or directory sync of the new manifest does.
    pub compact_publish: bool,
}

impl Faults {
    /// How many of `n` bytes the emulated disk takes (and takes them).
    pub(super) fn take(&mut self, n: usize) -> usize {
        match &mut self.space {
            None => n,
            Some(space) => {
                let n = n.min(usize::try_from(*space).unwrap_or(usize::MAX));
                *space -= n as u64;
                n
            }
        }
    }

    /// The error of a full disk, after telling the test.
    pub(super) fn full(&self) -> io::Error {
        if let Some(f) = &self.on_fault {
            f();
        }
        io::Error::from_raw_os_error(28) // ENOSPC
    }

    /// The error of a failing sync, once the syncs that succeed are used.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if spend(&mut self.syncs) {
            return Ok(());
        }
        Err(self.eio())
    }

    /// The fault of a key table write before its rename, once the writes
    /// that complete are used.
    fn table_write(&mut self) -> io::Result<()> {
        if spend(&mut self.table_writes) {
            return Ok(());
        }
        Err(self.eio())
    }

    /// The error of a failing device, after telling the test.
    pub(super) fn eio(&self) -> io::Error {
        if let Some(f) = &self.on_fault {
            f();
        }
        io::Error::from_raw_os_error(5) // EIO
    }
}

/// Whether one more call succeeds under `budget` (`None`: no limit), and
/// counts it.
fn spend(budget: &mut Option<u64>) -> bool {
    match budget {
        None => true,
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        Some(_) => false,
    }
}

/// A writer that computes the crc32c of what passes through.
pub(super) struct CrcWriter<'w, W> {
    inner: &'w mut W,
    crc: u32,
    len: u64,
    faults: &'w mut Faults,
}

impl<W: Write> Write for CrcWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let allowed = self.faults.take(buf.len());
        if allowed == 0 && !buf.is_empty() {
            return Err(self.faults.full());
        }
        let n = self.inner.write(&buf[..allowed])?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Records up to this many bytes are encoded into memory before they are
/// written (and checksummed) in one piece.
const SMALL_RECORD: u64 = 64 << 10;

/// One record to append.
pub(super) enum Append<'a, T> {
    /// A sample: its key array, then its tensors, `len` bytes in all.
    Put {
        key: &'a [u8],
        tensors: &'a [T],
        len: u64,
    },
    /// A deletion: the tombstone record of `key`.
    Delete { key: &'a [u8], tombstone: &'a [u8] },
    /// A sample's record copied byte for byte (compaction).
    Copy { key: &'a [u8], record: &'a [u8] },
}

impl<T: AsTensorRef> Append<'_, T> {
    /// The sidecar kind of the record.
    fn kind(&self) -> [u8; 4] {
        match self {
            Append::Put { .. } | Append::Copy { .. } => PUT,
            Append::Delete { .. } => DEL,
        }
    }

    fn key(&self) -> &[u8] {
        match self {
            Append::Put { key, .. } | Append::Delete { key, .. } | Append::Copy { key, .. } => key,
        }
    }

    /// Bytes of the record.
    fn len(&self) -> u64 {
        match self {
            Append::Put { len, .. } => *len,
            Append::Delete { tombstone, .. } => tombstone.len() as u64,
            Append::Copy { record, .. } => record.len() as u64,
        }
    }

    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            Append::Put { key, tensors, .. } => write_record(out, key, tensors),
            Append::Delete { tombstone, .. } => out.write_all(tombstone),
            Append::Copy { record, .. } => out.write_all(record),
        }
    }
}

impl Writer {
    /// Writes out the current shard's buffer and forces its bytes to disk.
    fn sync_shard(&mut self) -> Result<()> {
        self.cur.shard.flush().map_err(io_err("writing a shard"))?;
        self.faults.sync().map_err(io_err("syncing a shard"))?;
        self.cur
            .shard
            .get_ref()
            .sync_data()
            .map_err(io_err("syncing a shard"))
    }

    /// Writes the key table, durably (after syncing what it will cover):
    /// the old one merged with what was committed since. When the old
    /// table turns out damaged, the table is rebuilt from the sidecars
    /// instead.
    pub(super) fn write_table(&mut self, dir: &Path) -> Result<()> {
        self.sync()?;
        self.write_table_as(dir, true)
    }

    /// Writes the key table, synced or not (see [`table::Finish`]).
    fn write_table_as(&mut self, dir: &Path, durable: bool) -> Result<()> {
        let last = Some((self.cur.idx_len, self.cur.committed));
        let cover = table::file_cover(dir, &self.manifest, last)?;
        for rebuilt in [false, true] {
            if rebuilt {
                if !self.published {
                    // A compaction's keys have no old table to be damaged.
                    return Err(StoreError::io(
                        format!("writing {}", table::TABLE),
                        io::Error::other("the keys of a compaction disagree with their totals"),
                    ));
                }
                // The old table is damaged: the sidecars say what is live.
                self.keys = LiveKeys::from_sidecars(dir, &self.manifest, self.cur.idx_len)?;
            }
            let faults = &mut self.faults;
            let finish = table::Finish {
                durable,
                before_rename: &mut || faults.table_write(),
            };
            match self.keys.write(dir, &self.manifest, &cover, finish)? {
                Ok(()) => {
                    self.table_retry = 0;
                    return Ok(());
                }
                Err(table::Damaged(why)) if rebuilt => {
                    return Err(StoreError::io(
                        format!("writing {}", table::TABLE),
                        io::Error::other(why),
                    ))
                }
                Err(_) => {}
            }
        }
        // Not reached: the second pass returns.
        Err(StoreError::io(
            format!("writing {}", table::TABLE),
            io::Error::other("the key table could not be rebuilt"),
        ))
    }

    /// After a write call: rewrites the key table when enough was
    /// committed since it (so the delta this writer holds in memory, and
    /// the sidecar tail a reader reads, stay small), or when a lookup
    /// found it damaged. Not synced: the sidecars hold what is committed,
    /// and `flush` and `close` write a durable table. A failure here fails
    /// nothing (the records are committed; the table is a cache): it is
    /// tried again later.
    pub(super) fn maintain(&mut self, dir: &Path) {
        let since = self.keys.since;
        let due = match self.faults.table_due {
            Some(n) => since >= n,
            None => table::due(since, self.keys.len()),
        };
        if !self.published
            || self.failed.is_some()
            || since < self.table_retry
            || !(due || self.keys.damaged.is_some())
        {
            return;
        }
        if self.write_table_as(dir, false).is_err() {
            self.table_retry = since + since.max(1 << 16);
        }
    }

    /// Whether `key` is live: the delta, then the key table (rebuilt from
    /// the sidecars first if a lookup finds it damaged).
    pub(super) fn holds(&mut self, dir: &Path, key: &[u8]) -> Result<bool> {
        match self.keys.get(key) {
            Ok(loc) => Ok(loc.is_some()),
            Err(table::Damaged(why)) => {
                self.keys.damaged.get_or_insert(why);
                self.write_table(dir)?;
                match self.keys.get(key) {
                    Ok(loc) => Ok(loc.is_some()),
                    Err(table::Damaged(why)) => Err(StoreError::io(
                        format!("reading {}", table::TABLE),
                        io::Error::other(why),
                    )),
                }
            }
        }
    }

    /// Forces the current shard and sidecar to disk.
    pub(super) fn sync(&mut self) -> Result<()> {
        self.sync_shard()?;
        self.cur
            .idx
            .sync_data()
            .map_err(io_err("syncing a sidecar"))
    }

    /// Starts shard `cur.no + 1` after syncing the current one (and
    /// publishes the new shard list, unless a compaction is writing).
    pub(super) fn roll(&mut self, dir: &Path) -> Result<()> {
        self.sync()?;
        let no = self.cur.no + 1;
        create_shard(dir, no)?;
        let mut manifest = self.manifest.clone();
        manifest.shards.push(no);
        if self.published {
            write_manifest(dir, &manifest)?;
        }
        self.manifest = manifest;
        self.cur = open_current(dir, no)?;
        Ok(())
    }

    /// Appends records and commits them: record bytes first, then their
    /// sidecar records. On an error before any sidecar byte of the failing
    /// commit was written, what this call left uncommitted is cut off
    /// again, so the writer can go on; on an error after (or when cutting
    /// off fails), the writer stops: see [`commit`](Self::commit).
    pub(super) fn append<'a, T: AsTensorRef + 'a>(
        &mut self,
        dir: &Path,
        options: &ShardOptions,
        items: impl Iterator<Item = Append<'a, T>>,
    ) -> Result<()> {
        let per_sample = options.durability == Durability::Sample;
        let mut pending: Vec<u8> = Vec::new();
        let mut applied = Applied::default();
        let mut scratch: Vec<u8> = Vec::new();
        let result = (|| -> Result<()> {
            for item in items {
                let (kind, key, len) = (item.kind(), item.key(), item.len());
                if self.cur.shard_len > 0 && self.cur.shard_len + len > options.shard_limit {
                    self.commit(&mut pending, &mut applied, per_sample)?;
                    self.roll(dir)?;
                }
                let offset = self.cur.shard_len;
                let mut w = CrcWriter {
                    inner: &mut self.cur.shard,
                    crc: 0,
                    len: 0,
                    faults: &mut self.faults,
                };
                // A small record is encoded whole first, so it passes
                // through the checksum in one call, not one per tensor
                // header and array (the checksum's cost per call
                // dominated appending tiny samples).
                let encoded = if len <= SMALL_RECORD {
                    scratch.clear();
                    item.write_to(&mut scratch)
                        .and_then(|()| w.write_all(&scratch))
                } else {
                    item.write_to(&mut w)
                };
                // The message is formatted only on an error: this runs
                // once per record.
                let no = self.cur.no;
                encoded
                    .map_err(|e| StoreError::io(format!("appending to {}", shard_name(no)), e))?;
                let (crc, written) = (w.crc, w.len);
                self.cur.shard_len += written;
                if written != len {
                    return Err(StoreError::io(
                        "appending a record",
                        io::Error::other(format!(
                            "wrote {written} bytes where the record is {len}"
                        )),
                    ));
                }
                pending.extend_from_slice(&encode_idx(kind, key, offset, len, crc));
                applied.push(kind, key, offset, len, crc);
                if per_sample {
                    self.commit(&mut pending, &mut applied, true)?;
                }
            }
            self.commit(&mut pending, &mut applied, per_sample)
        })();
        if result.is_err() && self.failed.is_none() {
            if let Err(e) = self.discard_uncommitted() {
                self.failed = Some(format!("cutting off an uncommitted shard tail: {e}"));
            }
        }
        result
    }

    /// After an append failed before any sidecar byte of its commit was
    /// written: drops buffered bytes and cuts the shard back to what is
    /// committed. Those bytes are named by no sidecar record, so no
    /// snapshot reads them. An error here stops the writer (recovery at
    /// the next open cuts the same tail).
    pub(super) fn discard_uncommitted(&mut self) -> io::Result<()> {
        let fresh = BufWriter::with_capacity(1 << 20, self.cur.shard.get_ref().try_clone()?);
        // The old buffer's bytes are uncommitted: dropped, not written.
        let (_file, _unwritten) = std::mem::replace(&mut self.cur.shard, fresh).into_parts();
        self.cur.shard.get_ref().set_len(self.cur.committed)?;
        self.cur.shard_len = self.cur.committed;
        Ok(())
    }

    /// Makes the pending records visible: their bytes reach the shard file
    /// (and the disk, when `sync`) first, then their sidecar records.
    ///
    /// This order is what keeps snapshots sound: a reader in any process
    /// may see each complete sidecar record as soon as it is in the file,
    /// and maps the bytes it names. So once a sidecar write of a batch has
    /// begun, the shard must never again be shortened below those records,
    /// nor its offsets reused. If the sidecar write or its sync fails, the
    /// writer therefore stops taking writes ([`StoreError::WriterFailed`])
    /// and touches neither file again: the complete records stay committed
    /// (visible, perhaps not durable), and the next open's recovery cuts
    /// only the sidecar's torn tail and the shard bytes past the last
    /// complete record.
    pub(super) fn commit(
        &mut self,
        pending: &mut Vec<u8>,
        applied: &mut Applied,
        sync: bool,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        if sync {
            self.sync_shard()?;
        } else {
            self.cur.shard.flush().map_err(io_err("writing a shard"))?;
        }
        // From here on, sidecar records of this batch may be visible.
        let visible = (|| -> io::Result<()> {
            let allowed = self.faults.take(pending.len());
            self.cur.idx.write_all(&pending[..allowed])?;
            if allowed < pending.len() {
                return Err(self.faults.full());
            }
            if sync {
                self.faults.sync()?;
                self.cur.idx.sync_data()?;
            }
            Ok(())
        })();
        if let Err(e) = visible {
            let what = format!("committing to sidecar {}: {e}", idx_name(self.cur.no));
            self.failed = Some(what.clone());
            return Err(StoreError::io(
                format!("{what}; records of this batch may be visible, and this handle takes no more writes until the store is reopened"),
                e,
            ));
        }
        self.cur.idx_len += pending.len() as u64;
        self.cur.committed = self.cur.shard_len;
        pending.clear();
        let pos = self.manifest.shards.len() - 1;
        for (r, key) in applied.records.iter().zip(applied.key_ranges()) {
            self.keys
                .apply_parts(pos, r.kind, &applied.keys[key], r.offset, r.len, r.crc);
        }
        applied.records.clear();
        applied.keys.clear();
        Ok(())
    }
}

/// Records appended but not yet committed, to apply to the live keys once
/// they are: their keys back to back in one buffer, not one allocation
/// per key.
#[derive(Default)]
pub(super) struct Applied {
    /// Every record's key, in order.
    keys: Vec<u8>,
    /// The records, with the length of their key in `keys`.
    records: Vec<AppliedRecord>,
}

/// One record of [`Applied`].
struct AppliedRecord {
    kind: [u8; 4],
    key_len: usize,
    offset: u64,
    len: u64,
    crc: u32,
}

impl Applied {
    /// Adds a record.
    fn push(&mut self, kind: [u8; 4], key: &[u8], offset: u64, len: u64, crc: u32) {
        self.keys.extend_from_slice(key);
        self.records.push(AppliedRecord {
            kind,
            key_len: key.len(),
            offset,
            len,
            crc,
        });
    }

    /// Where each record's key is in `keys`, in order.
    fn key_ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.records.iter().scan(0, |at, r| {
            let start = *at;
            *at += r.key_len;
            Some(start..*at)
        })
    }
}
