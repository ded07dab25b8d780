//! Recovery when a writer opens a shard store ([`Writer::open`]): what is
//! cut, why, and the report of it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::files::*;
use super::writer::*;
use crate::store::error::{Result, StoreError};
use crate::store::key::MAX_KEY_LEN;
use crate::store::shard::layout::{
    decode_idx, idx_name, key_array_len, resync_idx, shard_name, torn_like, IdxRecord, IdxStop,
    Manifest, DEL, IDX_MAGIC, MANIFEST, PUT,
};
use crate::store::shard::live::LiveKeys;
use crate::store::shard::scan::{scan, ScanStop};
use crate::store::shard::snapshot::{map_shard, read_manifest};
use crate::store::shard::table::{self, Table};

/// What opening for writing found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sidecar bytes after the last valid record (a torn or damaged tail),
    /// cut off.
    pub sidecar_bytes_dropped: u64,
    /// Shard bytes after the last committed record (an uncommitted, torn
    /// tail), cut off.
    pub shard_bytes_dropped: u64,
    /// Committed records that pointed past the end of their shard, dropped
    /// with every record after them in their sidecar.
    pub records_dropped: u64,
    /// Files of shards not in the manifest (left by a crash during a roll
    /// or a compaction), removed.
    pub orphans_removed: Vec<String>,
    /// Every cut, with where and why.
    pub cuts: Vec<Cut>,
}

impl RecoveryReport {
    /// Whether anything was repaired.
    pub fn is_clean(&self) -> bool {
        *self == RecoveryReport::default()
    }
}

impl std::fmt::Display for RecoveryReport {
    /// One line per repair.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        let mut line = |f: &mut std::fmt::Formatter<'_>, text: String| {
            let sep = if first { "" } else { "\n" };
            first = false;
            write!(f, "{sep}{text}")
        };
        for c in &self.cuts {
            line(f, c.to_string())?;
        }
        for o in &self.orphans_removed {
            line(
                f,
                format!("removed {o}: a shard file the manifest does not list (left by a crash during a roll or compaction)"),
            )?;
        }
        Ok(())
    }
}

/// One cut recovery made: `len` bytes of `file` from `offset` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The file's name in the store directory.
    pub file: String,
    /// Where the cut starts (the new length of the file).
    pub offset: u64,
    /// Bytes cut off.
    pub len: u64,
    /// Why.
    pub reason: CutReason,
}

/// Why recovery cut bytes off a shard or sidecar. Recovery cuts only bytes
/// that hold no whole committed record; when a shard holds whole records
/// its sidecar does not commit (a damaged sidecar), opening for writing
/// fails with [`StoreError::NeedsReindex`] instead.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CutReason {
    /// The sidecar did not start with its header and its shard is empty.
    BadHeader,
    /// A sidecar record cut short, or zeros: a commit interrupted by a
    /// crash.
    TornSidecarRecord,
    /// Sidecar records naming bytes past the end of their shard (the shard
    /// was shortened): what they named is gone.
    PastShardEnd {
        /// How many records.
        records: u64,
    },
    /// The last record of the shard, which no sidecar record commits: a
    /// put or delete interrupted by a crash before its commit.
    Uncommitted {
        /// Its key.
        key: Vec<u8>,
        /// `true` for a deletion.
        delete: bool,
        /// Whether its chunks are whole (it may still lack trailing
        /// tensors: a shard does not say how many a sample has).
        whole: bool,
        /// The file (in the store directory) its tensor bytes were saved
        /// to before the cut, if it had any.
        saved: Option<String>,
    },
    /// Several records after the last committed one, behind a sidecar
    /// that ends cleanly or with a torn record: a batch a crash interrupted
    /// before or during its commit (or, indistinguishably, a sidecar cut
    /// at that point). Its bytes are saved before the cut.
    UncommittedBatch {
        /// How many whole records.
        records: u64,
        /// The key of the first.
        first_key: Vec<u8>,
        /// The file (in the store directory) the cut bytes were saved to: a
        /// shard's records, which a store folder holding it as
        /// `000001.ten` gets back with `tenstore reindex`.
        saved: Option<String>,
    },
    /// Bytes after the last record that start no record (a torn chunk, or
    /// zeros).
    TornBytes,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cut {} bytes of {} at byte {}: ",
            self.len, self.file, self.offset
        )?;
        match &self.reason {
            CutReason::BadHeader => write!(f, "a sidecar without its header (its shard is empty)"),
            CutReason::TornSidecarRecord => {
                write!(f, "a sidecar record cut short by a crash during a commit")
            }
            CutReason::PastShardEnd { records } => write!(
                f,
                "{records} sidecar records name bytes past the end of their shard (the shard was shortened; those samples are gone)"
            ),
            CutReason::Uncommitted {
                key,
                delete,
                whole,
                saved,
            } => {
                let what = if *delete { "deletion" } else { "record" };
                let state = if *whole { "whole" } else { "torn" };
                write!(
                    f,
                    "an uncommitted {what} of key \"{}\" ({state}), left by a write a crash interrupted before its commit",
                    crate::error::escape(key)
                )?;
                if let Some(saved) = saved {
                    write!(f, "; its tensor bytes are saved in {saved}")?;
                }
                Ok(())
            }
            CutReason::UncommittedBatch {
                records,
                first_key,
                saved,
            } => {
                write!(
                    f,
                    "{records} uncommitted records from key \"{}\" on, left by a batch a crash interrupted before its commit (or a sidecar cut short there)",
                    crate::error::escape(first_key)
                )?;
                if let Some(saved) = saved {
                    write!(
                        f,
                        "; they are saved in {saved}: to get them back, copy it as 000001.ten into an empty folder, run `tenstore reindex FOLDER`, then `tenstore import STORE FOLDER`"
                    )?;
                }
                Ok(())
            }
            CutReason::TornBytes => write!(f, "a torn write (bytes that start no record)"),
        }
    }
}

/// What recovery will do to one shard and its sidecar.
pub(super) struct ShardPlan {
    pub(super) pos: usize,
    pub(super) no: u32,
    /// The committed records kept.
    pub(super) records: Vec<IdxRecord>,
    /// The sidecar's new length and whether its header is rewritten.
    pub(super) idx_cut: Option<(u64, bool)>,
    /// Where the shard is cut, and the bytes to save first (a range).
    pub(super) shard_cut: Option<(u64, Option<(u64, u64)>)>,
    pub(super) cuts: Vec<Cut>,
    pub(super) records_dropped: u64,
}

/// Decides what recovery does to shard `no`, refusing (before anything is
/// changed) when the shard holds whole records its sidecar does not commit.
///
/// `covered`: a key table that matches the store covers the sidecar's
/// first bytes (how many, and where their last record ends in the shard):
/// only the sidecar past them is read, and only its records are returned.
pub(super) fn plan_shard(
    dir: &Path,
    pos: usize,
    no: u32,
    covered: Option<(u64, u64)>,
) -> Result<ShardPlan> {
    let idx_path = dir.join(idx_name(no));
    let shard_path = dir.join(shard_name(no));
    let (start, covered_end) = covered.unwrap_or((0, 0));
    let bytes = read_sidecar_from(&idx_path, start)?;
    let file_len = start + bytes.len() as u64;
    let shard_len = fs::metadata(&shard_path)
        .map_err(io_err(format!("reading {}", shard_path.display())))?
        .len();
    let refuse = |what: String| StoreError::NeedsReindex {
        path: dir.to_owned(),
        what,
    };
    let (records, mut valid, stop) = decode_idx(&bytes, start, MAX_KEY_LEN);
    // The covered prefix (header included) checked when the table matched.
    let has_magic =
        start > 0 || (bytes.len() >= IDX_MAGIC.len() && bytes[..IDX_MAGIC.len()] == IDX_MAGIC[..]);
    // Damage, as opposed to a commit a crash interrupted.
    let mut damage = None;
    if !has_magic {
        if shard_len > 0 {
            damage = Some(format!(
                "sidecar {} has no valid header (emptied or overwritten)",
                idx_name(no)
            ));
        }
    } else if let IdxStop::Torn(at) = stop {
        // `start` is a record boundary, so 8-aligned like the records.
        let later = resync_idx(&bytes, at - start, MAX_KEY_LEN);
        if !later.is_empty() {
            damage = Some(format!(
                "sidecar {}: the record at byte {at} is damaged and {} valid records follow it",
                idx_name(no),
                later.len()
            ));
        } else if !torn_like(&bytes[(at - start) as usize..], MAX_KEY_LEN) {
            damage = Some(format!(
                "sidecar {}: the record at byte {at} is complete but fails its checksum",
                idx_name(no)
            ));
        }
    }
    let mut plan = ShardPlan {
        pos,
        no,
        records: Vec::new(),
        idx_cut: None,
        shard_cut: None,
        cuts: Vec::new(),
        records_dropped: 0,
    };
    // Keep records up to the first that points past the shard.
    let mut end = covered_end;
    let mut at = start.max(IDX_MAGIC.len() as u64);
    let total = records.len();
    let mut past_end = false;
    for r in records {
        if r.offset.checked_add(r.len).is_none_or(|e| e > shard_len) {
            plan.records_dropped = (total - plan.records.len()) as u64;
            valid = at;
            past_end = true;
            break;
        }
        end = end.max(r.offset + r.len);
        at += crate::store::shard::layout::idx_len(r.key.len()) as u64;
        plan.records.push(r);
    }
    // The shard past what the sidecar commits.
    if shard_len > end {
        let map = map_shard(&shard_path)?.ok_or_else(|| {
            StoreError::io(
                format!("reading {}", shard_path.display()),
                io::Error::other("the shard shrank while being read"),
            )
        })?;
        let bytes = &map[..];
        let found = scan(bytes, end as usize);
        let span = format!("bytes {end}..{shard_len} of {}", shard_name(no));
        if let Some(d) = &damage {
            if !found.records.is_empty() {
                return Err(refuse(format!(
                    "{d}, and {} holds {} whole records it does not commit",
                    span,
                    found.records.len()
                )));
            }
        }
        if let ScanStop::Malformed(bad) = found.stop {
            if bytes[bad as usize..].iter().any(|&b| b != 0) {
                return Err(refuse(format!(
                    "bytes {bad}..{shard_len} of {} are neither a record nor a torn write (damage)",
                    shard_name(no)
                )));
            }
        }
        if found.closed() > 0 {
            // Several records after the last commit, behind a sidecar that
            // ends cleanly or with a torn record: a batch a crash
            // interrupted before (or during) its commit. Never
            // acknowledged, so not kept; never lost either: the bytes are
            // saved beside the shards before the cut.
            plan.shard_cut = Some((end, Some((end, shard_len))));
            plan.cuts.push(Cut {
                file: shard_name(no),
                offset: end,
                len: shard_len - end,
                reason: CutReason::UncommittedBatch {
                    records: found.records.len() as u64,
                    first_key: found.records[0].key.to_vec(),
                    saved: None,
                },
            });
        } else {
            // At most one record, at the very end: an interrupted write.
            let last = found
                .records
                .first()
                .map(|r| (r.kind, r.key.to_vec(), r.offset, true))
                .or(found.torn.map(|(k, key, o)| (k, key, o, false)));
            let (reason, save) = match last {
                Some((kind, key, offset, whole)) => {
                    let from = offset + key_array_len(key.len()) as u64;
                    let save = (kind == PUT && from < shard_len).then_some((from, shard_len));
                    (
                        CutReason::Uncommitted {
                            key,
                            delete: kind == DEL,
                            whole,
                            saved: None,
                        },
                        save,
                    )
                }
                None => (CutReason::TornBytes, None),
            };
            plan.shard_cut = Some((end, save));
            plan.cuts.push(Cut {
                file: shard_name(no),
                offset: end,
                len: shard_len - end,
                reason,
            });
        }
    }
    if !has_magic {
        plan.idx_cut = Some((0, true));
        plan.cuts.push(Cut {
            file: idx_name(no),
            offset: 0,
            len: file_len,
            reason: CutReason::BadHeader,
        });
    } else if valid < file_len {
        plan.idx_cut = Some((valid, false));
        plan.cuts.push(Cut {
            file: idx_name(no),
            offset: valid,
            len: file_len - valid,
            reason: if past_end {
                CutReason::PastShardEnd {
                    records: plan.records_dropped,
                }
            } else {
                CutReason::TornSidecarRecord
            },
        });
    }
    Ok(plan)
}

/// The bytes of a sidecar from `start` on.
fn read_sidecar_from(path: &Path, start: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(start))?;
            f.read_to_end(&mut out)
        })
        .map_err(io_err(format!("reading {}", path.display())))?;
    Ok(out)
}

/// The key table of the store in `dir`, if there is one the writer can
/// trust: its header checks, it describes `manifest`'s sidecars and
/// shards as they are (see [`Table::matching`]), and the sidecar prefixes
/// it covers are still whole (read through, in bounded memory: a damaged
/// sidecar makes recovery look at every record, as without a table).
fn matching_table(dir: &Path, manifest: &Manifest) -> Result<Option<Table>> {
    let Some(t) = Table::open(dir).ok().flatten() else {
        return Ok(None);
    };
    let had_top = t.has_top();
    let Ok(t) = t.matching(dir, manifest) else {
        return Ok(None);
    };
    // A damaged second level, or one that covers more than the sidecars
    // hold (cut back after a crash: recovery may write other bytes
    // there), is dropped: the records it covered are read from the
    // sidecars, and the next table write covers them again.
    let (t, bad_top) = t.check_top();
    if bad_top.is_some() || (had_top && !t.has_top()) {
        table::remove_file(dir, table::TOP)?;
        // Before recovery cuts or appends to sidecars: a power loss must
        // not bring back a level covering bytes rewritten since.
        sync_dir(dir)?;
    }
    for c in &t.shards {
        let shard_len = fs::metadata(dir.join(shard_name(c.no))).map_or(0, |m| m.len());
        if shard_len < c.record_end || !prefix_intact(&dir.join(idx_name(c.no)), c.idx_len)? {
            return Ok(None);
        }
    }
    Ok(Some(t))
}

/// Whether the first `len` bytes of a sidecar are its header and whole,
/// valid records (each its own checksum holding), read a chunk at a time.
fn prefix_intact(path: &Path, len: u64) -> Result<bool> {
    use std::io::Read;
    const CHUNK: usize = 1 << 20;
    let mut file = fs::File::open(path)
        .map_err(io_err(format!("opening {}", path.display())))?
        .take(len);
    let mut buf = Vec::with_capacity(CHUNK);
    let mut at = 0u64;
    loop {
        let room = (CHUNK - buf.len()) as u64;
        (&mut file)
            .take(room)
            .read_to_end(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        let (_, valid, stop) = decode_idx(&buf, at, MAX_KEY_LEN);
        if at + buf.len() as u64 >= len {
            return Ok(stop == IdxStop::End && valid == len);
        }
        // A full chunk holds at least one whole record: none is damage.
        let used = (valid - at) as usize;
        if used == 0 {
            return Ok(false);
        }
        buf.drain(..used);
        at = valid;
    }
}

/// Saves bytes `from..to` of shard `no` to a new file in `dir` before
/// recovery cuts them; returns its name.
pub(super) fn save_cut(dir: &Path, no: u32, from: u64, to: u64) -> Result<String> {
    let path = dir.join(shard_name(no));
    let map = map_shard(&path)?.ok_or_else(|| {
        StoreError::io(
            format!("reading {}", path.display()),
            io::Error::other("the shard shrank while being read"),
        )
    })?;
    let bytes = map
        .get(from as usize..to as usize)
        .ok_or_else(|| StoreError::io("saving a cut record", io::Error::other("shard shrank")))?;
    for n in 0u32.. {
        let name = match n {
            0 => format!("cut-{no:06}-{from}.ten"),
            n => format!("cut-{no:06}-{from}-{n}.ten"),
        };
        let target = dir.join(&name);
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io(format!("creating {}", target.display()), e)),
        };
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(io_err(format!("writing {}", target.display())))?;
        sync_dir(dir)?;
        return Ok(name);
    }
    unreachable!("u32 names run out only after 2^32 saved cuts at one offset")
}

impl Writer {
    pub(super) fn open(dir: &Path, recovery: &mut RecoveryReport) -> Result<Writer> {
        let lock = lock(dir)?;
        let manifest = match read_manifest(dir)? {
            Some(m) => m,
            None => {
                let m = Manifest {
                    generation: 1,
                    shards: vec![1],
                };
                create_shard(dir, 1)?;
                write_manifest(dir, &m)?;
                m
            }
        };
        // A temporary table of a writer that died writing it.
        table::remove_temporary(dir)?;
        // A table that matches spares reading the sidecars it covers.
        let base = matching_table(dir, &manifest)?;
        // Decide everything first: a refusal changes nothing.
        let mut plans = Vec::with_capacity(manifest.shards.len());
        for (pos, &no) in manifest.shards.iter().enumerate() {
            let covered = base
                .as_ref()
                .and_then(|t| t.shards.get(pos))
                .map(|c| (c.idx_len, c.record_end));
            plans.push(plan_shard(dir, pos, no, covered)?);
        }
        // Orphans: shard files the manifest does not list.
        for (no, name) in shard_files(dir)? {
            if !manifest.shards.contains(&no) {
                fs::remove_file(dir.join(&name))
                    .map_err(io_err(format!("removing orphan {name}")))?;
                recovery.orphans_removed.push(name);
            }
        }
        let rebuild = base.is_none();
        if rebuild
            && plans
                .iter()
                .any(|p| p.idx_cut.is_some() || p.shard_cut.is_some())
        {
            // Recovery changes files an untrusted table may cover. (A
            // matching table covers none of what is cut: only bytes past
            // its cover are planned.)
            table::remove(dir)?;
        }
        let mut keys = match base {
            Some(t) => LiveKeys::from_table(t),
            None => LiveKeys::empty(),
        };
        for mut plan in plans {
            let idx_path = dir.join(idx_name(plan.no));
            let shard_path = dir.join(shard_name(plan.no));
            if let Some((valid, magic)) = plan.idx_cut {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&idx_path)
                    .map_err(io_err(format!("opening {}", idx_path.display())))?;
                f.set_len(valid).map_err(io_err("repairing a sidecar"))?;
                if magic {
                    (&f).write_all(IDX_MAGIC)
                        .map_err(io_err("repairing a sidecar"))?;
                }
                f.sync_all().map_err(io_err("repairing a sidecar"))?;
            }
            if let Some((end, save)) = plan.shard_cut {
                if let Some((from, to)) = save {
                    let name = save_cut(dir, plan.no, from, to)?;
                    for c in &mut plan.cuts {
                        if let CutReason::Uncommitted { saved, .. }
                        | CutReason::UncommittedBatch { saved, .. } = &mut c.reason
                        {
                            *saved = Some(name.clone());
                        }
                    }
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&shard_path)
                    .map_err(io_err(format!("opening {}", shard_path.display())))?;
                f.set_len(end)
                    .map_err(io_err("cutting a torn shard tail"))?;
                f.sync_all().map_err(io_err("cutting a torn shard tail"))?;
            }
            for c in &plan.cuts {
                if c.file.ends_with(".ten") {
                    recovery.shard_bytes_dropped += c.len;
                } else {
                    recovery.sidecar_bytes_dropped += c.len;
                }
            }
            recovery.records_dropped += plan.records_dropped;
            recovery.cuts.append(&mut plan.cuts);
            for r in plan.records {
                keys.apply(plan.pos, r);
            }
        }
        let last = *manifest.shards.last().ok_or_else(|| StoreError::Format {
            path: dir.join(MANIFEST),
            found: "a manifest with no shard".into(),
            expected: "at least one shard".into(),
        })?;
        let cur = open_current(dir, last)?;
        let mut w = Writer {
            _lock: lock,
            manifest,
            published: true,
            keys,
            cur,
            failed: None,
            faults: Faults::default(),
            table_retry: 0,
        };
        if rebuild || w.keys.damaged.is_some() {
            w.write_table(dir)?;
        }
        Ok(w)
    }
}
