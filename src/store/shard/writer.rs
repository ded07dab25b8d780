//! The shard store and its single writer: appending records, committing
//! them through the sidecars, recovery, compaction and reindexing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::store::error::{Result, StoreError};
use crate::store::key::{check_key, distinct, MAX_KEY_LEN};
use crate::store::meta::Meta;
use crate::store::shard::index::Index;
use crate::store::shard::layout::{
    decode_idx, encode_idx, idx_name, key_array_len, record_len, resync_idx, shard_name, tombstone,
    torn_like, write_record, IdxRecord, IdxStop, Manifest, DEL, IDX_MAGIC, KEY_NAME, LOCK,
    MANIFEST, PUT, TOMB_NAME,
};
use crate::store::shard::reader::ShardReader;
use crate::store::shard::scan::{scan, ScanStop};
use crate::store::shard::snapshot::{map_shard, read_manifest, Snapshot};
use crate::tensor::AsTensorRef;

/// When appended samples are forced to disk (`fdatasync`).
///
/// Whatever the mode, a sample whose `put` returned survives a crash of
/// the *process* (its bytes are in the OS page cache). The modes differ
/// for a crash of the *machine* (power loss, kernel panic):
///
/// | mode | survives a machine crash |
/// | --- | --- |
/// | `Sample` | every sample whose `put` returned |
/// | `Batch` | every batch whose `put_batch` returned |
/// | `Close` (default) | everything before the last `flush`, `close` or shard roll |
///
/// In no mode does a crash make a partial sample visible.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Sync data and index after every sample.
    Sample,
    /// Sync data and index after every `put`/`put_batch`/`delete` call.
    Batch,
    /// Sync on `flush`, on close, and when a shard fills up.
    #[default]
    Close,
}

/// How to open a [`ShardStore`].
#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// Make the store if the directory holds none. Default `false`.
    pub create: bool,
    /// Start a new shard once the current one would pass this many bytes.
    /// Default 1 GiB. A sample larger than this gets a shard of its own.
    pub shard_limit: u64,
    /// When appended samples are synced. Default [`Durability::Close`].
    pub durability: Durability,
    /// Open without the writer lock, for reading only.
    pub read_only: bool,
    /// Check every sample's crc32c when it is read (costs a pass over its
    /// bytes). Default `false`; `verify` always checks.
    pub verify_reads: bool,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            create: false,
            shard_limit: 1 << 30,
            durability: Durability::Close,
            read_only: false,
            verify_reads: false,
        }
    }
}

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
            CutReason::TornBytes => write!(f, "a torn write (bytes that start no record)"),
        }
    }
}

/// Counts and sizes of a shard store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStats {
    /// Live samples.
    pub samples: u64,
    /// Bytes of live sample records.
    pub live_bytes: u64,
    /// Bytes of all shard files (live, overwritten, deleted).
    pub shard_bytes: u64,
    /// Number of shards.
    pub shards: u64,
}

/// A sample store of append-only `.ten` shards.
///
/// One process writes (it holds `LOCK`); any number of processes read,
/// each through snapshots ([`reader`](Self::reader)). Cloning is cheap and
/// shares the writer.
///
/// ```
/// use ndarray::array;
/// use tenstore::store::{ShardOptions, ShardStore};
/// use tenstore::TensorRef;
///
/// let dir = tempfile::tempdir()?;
/// let store = ShardStore::open(dir.path(), &ShardOptions { create: true, ..Default::default() })?;
/// let x = array![1.5f32, 2.5];
/// store.put(b"a", &[TensorRef::from_array("x", &x)?])?;
/// store.flush()?;
/// let reader = store.reader()?;
/// let sample = reader.require(b"a")?;
/// assert_eq!(sample.get(0).unwrap().as_slice::<f32>()?, &[1.5, 2.5]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ShardStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    options: ShardOptions,
    writer: Mutex<Option<Writer>>,
    recovery: RecoveryReport,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = writer.as_mut() {
            // Close syncs; an error here has no caller to go to, and the
            // samples stay committed in the page cache regardless.
            let _ = w.sync();
        }
    }
}

/// The shard being appended to.
struct Current {
    no: u32,
    shard: BufWriter<File>,
    /// Bytes appended to the shard, committed or not.
    shard_len: u64,
    /// Bytes of the shard that sidecar records cover.
    committed: u64,
    idx: File,
    idx_len: u64,
}

struct Writer {
    _lock: File,
    manifest: Manifest,
    index: Index,
    cur: Current,
    /// Why this writer stopped taking writes: an append failed once sidecar
    /// bytes of its batch may have reached the file (see [`Writer::commit`]).
    failed: Option<String>,
    /// Injected faults (tests only; none by default).
    faults: Faults,
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
}

impl Faults {
    /// How many of `n` bytes the emulated disk takes (and takes them).
    fn take(&mut self, n: usize) -> usize {
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
    fn full(&self) -> io::Error {
        if let Some(f) = &self.on_fault {
            f();
        }
        io::Error::from_raw_os_error(28) // ENOSPC
    }

    /// The error of a failing sync, once the syncs that succeed are used.
    fn sync(&mut self) -> io::Result<()> {
        match &mut self.syncs {
            None => return Ok(()),
            Some(n) if *n > 0 => {
                *n -= 1;
                return Ok(());
            }
            Some(_) => {}
        }
        if let Some(f) = &self.on_fault {
            f();
        }
        Err(io::Error::from_raw_os_error(5)) // EIO
    }
}

/// A writer that computes the crc32c of what passes through.
struct CrcWriter<'w, W> {
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

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::io(what, e)
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, synced, then
/// renamed, then the directory synced.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    f.write_all(bytes)
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    f.sync_all()
        .map_err(io_err(format!("syncing {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_err(format!("renaming {}", tmp.display())))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing directory {}", dir.display())))
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let text =
        serde_json::to_string(m).map_err(|e| StoreError::io("encoding the manifest", e.into()))?;
    write_atomic(dir, MANIFEST, text.as_bytes())
}

/// Takes the writer lock, recording this process's pid in it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    // A lock is held by an open file description, which a child process
    // forked by another thread shares for a moment before it execs: a
    // writer that just closed may still hold it briefly. Retry for a while
    // before calling the store locked.
    let mut waited = std::time::Duration::ZERO;
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if waited < std::time::Duration::from_millis(500) => {
                let pause = std::time::Duration::from_millis(10);
                std::thread::sleep(pause);
                waited += pause;
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                return Err(StoreError::Locked {
                    path: dir.to_owned(),
                    pid: pid.trim().to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(format!("locking {}", path.display()), e))
            }
        }
    }
    f.set_len(0).map_err(io_err("writing the lock file"))?;
    f.write_all(std::process::id().to_string().as_bytes())
        .map_err(io_err("writing the lock file"))?;
    Ok(f)
}

/// Creates shard `no` and its sidecar, empty.
fn create_shard(dir: &Path, no: u32) -> Result<()> {
    let shard = dir.join(shard_name(no));
    File::create(&shard).map_err(io_err(format!("creating {}", shard.display())))?;
    let idx = dir.join(idx_name(no));
    let mut f = File::create(&idx).map_err(io_err(format!("creating {}", idx.display())))?;
    f.write_all(IDX_MAGIC)
        .map_err(io_err(format!("writing {}", idx.display())))?;
    f.sync_all()
        .map_err(io_err(format!("syncing {}", idx.display())))?;
    Ok(())
}

/// Opens a file for appending, with its length.
fn open_append(path: &Path) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io_err(format!("reading the size of {}", path.display())))?
        .len();
    Ok((file, len))
}

fn open_current(dir: &Path, no: u32) -> Result<Current> {
    let (shard, shard_len) = open_append(&dir.join(shard_name(no)))?;
    let (idx, idx_len) = open_append(&dir.join(idx_name(no)))?;
    Ok(Current {
        no,
        shard: BufWriter::with_capacity(1 << 20, shard),
        shard_len,
        committed: shard_len,
        idx,
        idx_len,
    })
}

/// Shard numbers of `NNNNNN.ten` / `NNNNNN.idx` files in `dir`.
fn shard_files(dir: &Path) -> Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))? {
        let name = e
            .map_err(io_err("listing the store"))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some((num, ext)) = name.split_once('.') {
            if num.len() == 6 && (ext == "ten" || ext == "idx") {
                if let Ok(n) = num.parse::<u32>() {
                    out.push((n, name));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

impl ShardStore {
    /// Whether `dir` holds a shard store (its `MANIFEST`).
    pub fn holds(dir: &Path) -> bool {
        dir.join(MANIFEST).is_file()
    }

    /// Opens (or with `create`, makes) the shard store in `dir`.
    ///
    /// Unless `read_only`, this takes the writer lock (a second writer gets
    /// [`StoreError::Locked`] naming the pid that holds it) and recovers
    /// from a crash: torn sidecar and shard tails are cut off (a lone
    /// uncommitted last record's tensors saved to a file first) and orphan
    /// shards removed; [`recovery`](Self::recovery) says what was cut and
    /// why. Whole records a sidecar does not commit are never cut: when a
    /// shard holds some (a damaged, emptied or truncated sidecar), this
    /// fails with [`StoreError::NeedsReindex`] and changes nothing; see
    /// [`reindex`](Self::reindex). Cost: O(index size), plus a scan of any
    /// uncommitted shard tail.
    ///
    /// Precondition (not checked, see the crate docs, "Memory maps"):
    /// while the store is open, its files change only through tenstore.
    /// A shard truncated by another process makes a read of the cut
    /// records raise `SIGBUS` (the process dies); rewritten in place, it
    /// changes the bytes of samples already handed out.
    pub fn open<P: AsRef<Path>>(dir: P, options: &ShardOptions) -> Result<ShardStore> {
        let dir = dir.as_ref();
        let exists = Self::holds(dir);
        if !exists && (!options.create || options.read_only) {
            return Err(StoreError::NotAStore {
                path: dir.to_owned(),
            });
        }
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Meta::check_or_create(dir, "ten", options.create && !options.read_only)?;
        let mut recovery = RecoveryReport::default();
        let writer = if options.read_only {
            None
        } else {
            Some(Writer::open(dir, &mut recovery)?)
        };
        Ok(ShardStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                options: options.clone(),
                writer: Mutex::new(writer),
                recovery,
            }),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// What opening repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    fn writer(&self) -> Result<MutexGuard<'_, Option<Writer>>> {
        let guard = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            None => {
                return Err(StoreError::ReadOnly {
                    path: self.inner.dir.clone(),
                })
            }
            Some(Writer {
                failed: Some(cause),
                ..
            }) => {
                return Err(StoreError::WriterFailed {
                    path: self.inner.dir.clone(),
                    cause: cause.clone(),
                })
            }
            Some(_) => {}
        }
        Ok(guard)
    }

    /// Injects faults into this store's writer (tests only: see
    /// [`Faults`]). Does nothing on a read-only store.
    #[doc(hidden)]
    pub fn inject_faults(&self, faults: Faults) {
        let mut guard = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = guard.as_mut() {
            w.faults = faults;
        }
    }

    /// Appends one sample (replacing any sample under `key`).
    pub fn put<T: AsTensorRef>(&self, key: &[u8], tensors: &[T]) -> Result<()> {
        self.put_batch(&[(key, tensors)])
    }

    /// Appends samples in order; they become visible together when their
    /// sidecar records are written.
    pub fn put_batch<K, S, T>(&self, samples: &[(K, S)]) -> Result<()>
    where
        K: AsRef<[u8]>,
        S: AsRef<[T]>,
        T: AsTensorRef,
    {
        let mut lens = Vec::with_capacity(samples.len());
        for (key, tensors) in samples {
            let key = key.as_ref();
            check_key(key)?;
            for t in tensors.as_ref() {
                let name = t.as_tensor_ref().name();
                if name == KEY_NAME || name == TOMB_NAME {
                    return Err(StoreError::ReservedName {
                        name: name.to_owned(),
                    });
                }
            }
            lens.push(
                record_len(key, tensors.as_ref()).map_err(|e| StoreError::codec(key, e))? as u64,
            );
        }
        let mut guard = self.writer()?;
        let w = guard.as_mut().ok_or_else(|| StoreError::ReadOnly {
            path: self.inner.dir.clone(),
        })?;
        let durability = self.inner.options.durability;
        let result = w.append(
            &self.inner.dir,
            &self.inner.options,
            samples.iter().zip(&lens).map(|((k, t), &len)| {
                let key = k.as_ref();
                let tensors = t.as_ref();
                (
                    PUT,
                    key,
                    len,
                    Box::new(move |out: &mut dyn Write| write_record(out, key, tensors))
                        as Box<dyn Fn(&mut dyn Write) -> io::Result<()> + '_>,
                )
            }),
        );
        result?;
        if durability == Durability::Batch {
            w.sync()?;
        }
        Ok(())
    }

    /// Deletes the samples under `keys`, all or none: if any key is missing
    /// nothing is written. Each deletion appends a tombstone record.
    pub fn delete_exact<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        let mut guard = self.writer()?;
        let w = guard.as_mut().ok_or_else(|| StoreError::ReadOnly {
            path: self.inner.dir.clone(),
        })?;
        // Each key once: a key named twice is deleted once.
        let keys = distinct(keys)?;
        for &key in &keys {
            if w.index.get(key).is_none() {
                return Err(StoreError::NotFound {
                    key: crate::error::escape(key),
                });
            }
        }
        let tombs: Vec<Vec<u8>> = keys.iter().map(|k| tombstone(k)).collect();
        w.append(
            &self.inner.dir,
            &self.inner.options,
            keys.iter().zip(&tombs).map(|(&k, t)| {
                (
                    DEL,
                    k,
                    t.len() as u64,
                    Box::new(move |out: &mut dyn Write| out.write_all(t))
                        as Box<dyn Fn(&mut dyn Write) -> io::Result<()> + '_>,
                )
            }),
        )?;
        if self.inner.options.durability == Durability::Batch {
            w.sync()?;
        }
        Ok(())
    }

    /// Forces everything appended so far to disk.
    pub fn flush(&self) -> Result<()> {
        match self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            Some(w) => w.sync(),
            None => Ok(()),
        }
    }

    /// A read snapshot of every sample committed so far.
    pub fn reader(&self) -> Result<ShardReader> {
        // Appended records must reach the files before a snapshot reads
        // them.
        if let Some(w) = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            w.cur.shard.flush().map_err(io_err("flushing the shard"))?;
        }
        Ok(ShardReader {
            snap: Snapshot::load(&self.inner.dir, self.inner.options.verify_reads)?,
        })
    }

    /// Counts and sizes, in a snapshot of its own (a thread that holds a
    /// reader can ask [`ShardReader::stats`]).
    pub fn stats(&self) -> Result<ShardStats> {
        self.reader()?.stats()
    }

    /// Rewrites the shards without overwritten and deleted samples and
    /// swaps them in atomically (a new manifest). Readers holding snapshots
    /// of the old shards keep reading them: the old files are unlinked,
    /// not truncated. Returns the bytes of shard files before and after.
    pub fn compact(&self) -> Result<(u64, u64)> {
        let mut guard = self.writer()?;
        let w = guard.as_mut().ok_or_else(|| StoreError::ReadOnly {
            path: self.inner.dir.clone(),
        })?;
        w.sync()?;
        let dir = &self.inner.dir;
        let snap = Snapshot::load(dir, false)?;
        let before: u64 = w
            .manifest
            .shards
            .iter()
            .map(|&n| fs::metadata(dir.join(shard_name(n))).map_or(0, |m| m.len()))
            .sum();
        let first = w.manifest.shards.iter().max().copied().unwrap_or(0) + 1;
        let mut manifest = Manifest {
            generation: w.manifest.generation + 1,
            shards: vec![first],
        };
        create_shard(dir, first)?;
        let mut cur = open_current(dir, first)?;
        let mut index = Index::default();
        let mut idx_buf = Vec::new();
        let limit = self.inner.options.shard_limit;
        for e in snap.entries() {
            let bytes = snap.record(&e.loc).ok_or_else(|| StoreError::Corrupt {
                key: crate::error::escape(&e.key),
                what: "its record lies outside its shard".into(),
            })?;
            let crc = crc32c::crc32c(bytes);
            if crc != e.loc.crc {
                return Err(StoreError::Corrupt {
                    key: crate::error::escape(&e.key),
                    what: format!("checksum {crc:08x} differs from the committed {:08x}; compaction stopped, nothing changed", e.loc.crc),
                });
            }
            if cur.shard_len > 0 && cur.shard_len + bytes.len() as u64 > limit {
                finish_shard(&mut cur, &mut idx_buf)?;
                let no = cur.no + 1;
                create_shard(dir, no)?;
                cur = open_current(dir, no)?;
                manifest.shards.push(no);
            }
            cur.shard
                .write_all(bytes)
                .map_err(io_err("writing a compacted shard"))?;
            let rec = IdxRecord {
                kind: PUT,
                key: e.key.clone(),
                offset: cur.shard_len,
                len: bytes.len() as u64,
                crc,
            };
            idx_buf.extend_from_slice(&encode_idx(PUT, &rec.key, rec.offset, rec.len, crc));
            cur.shard_len += bytes.len() as u64;
            index.apply(manifest.shards.len() - 1, rec);
        }
        finish_shard(&mut cur, &mut idx_buf)?;
        sync_dir(dir)?;
        write_manifest(dir, &manifest)?;
        for &old in &w.manifest.shards {
            let _ = fs::remove_file(dir.join(shard_name(old)));
            let _ = fs::remove_file(dir.join(idx_name(old)));
        }
        let after: u64 = manifest
            .shards
            .iter()
            .map(|&n| fs::metadata(dir.join(shard_name(n))).map_or(0, |m| m.len()))
            .sum();
        w.manifest = manifest;
        w.index = index;
        w.cur = cur;
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
        Ok(out)
    }
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
fn merge_records(old: &[u8], shard: &[u8]) -> (Vec<IdxRecord>, u64) {
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

/// Writes out the pending sidecar records of `cur` and syncs both files.
fn finish_shard(cur: &mut Current, idx_buf: &mut Vec<u8>) -> Result<()> {
    cur.shard.flush().map_err(io_err("writing a shard"))?;
    cur.shard
        .get_ref()
        .sync_data()
        .map_err(io_err("syncing a shard"))?;
    cur.idx
        .write_all(idx_buf)
        .map_err(io_err("writing a sidecar"))?;
    cur.idx_len += idx_buf.len() as u64;
    idx_buf.clear();
    cur.idx.sync_data().map_err(io_err("syncing a sidecar"))
}

/// One record to append: kind, key, length, and how to write it.
type Append<'a> = (
    [u8; 4],
    &'a [u8],
    u64,
    Box<dyn Fn(&mut dyn Write) -> io::Result<()> + 'a>,
);

/// What recovery will do to one shard and its sidecar.
struct ShardPlan {
    pos: usize,
    no: u32,
    /// The committed records kept.
    records: Vec<IdxRecord>,
    /// The sidecar's new length and whether its header is rewritten.
    idx_cut: Option<(u64, bool)>,
    /// Where the shard is cut, and the bytes to save first (a range).
    shard_cut: Option<(u64, Option<(u64, u64)>)>,
    cuts: Vec<Cut>,
    records_dropped: u64,
}

/// Decides what recovery does to shard `no`, refusing (before anything is
/// changed) when the shard holds whole records its sidecar does not commit.
fn plan_shard(dir: &Path, pos: usize, no: u32) -> Result<ShardPlan> {
    let idx_path = dir.join(idx_name(no));
    let shard_path = dir.join(shard_name(no));
    let bytes = fs::read(&idx_path).map_err(io_err(format!("reading {}", idx_path.display())))?;
    let shard_len = fs::metadata(&shard_path)
        .map_err(io_err(format!("reading {}", shard_path.display())))?
        .len();
    let refuse = |what: String| StoreError::NeedsReindex {
        path: dir.to_owned(),
        what,
    };
    let (records, mut valid, stop) = decode_idx(&bytes, 0, MAX_KEY_LEN);
    let has_magic = bytes.len() >= IDX_MAGIC.len() && bytes[..IDX_MAGIC.len()] == IDX_MAGIC[..];
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
        let later = resync_idx(&bytes, at, MAX_KEY_LEN);
        if !later.is_empty() {
            damage = Some(format!(
                "sidecar {}: the record at byte {at} is damaged and {} valid records follow it",
                idx_name(no),
                later.len()
            ));
        } else if !torn_like(&bytes[at as usize..], MAX_KEY_LEN) {
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
    let mut end = 0u64;
    let mut at = IDX_MAGIC.len() as u64;
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
        if found.closed() > 0 {
            return Err(refuse(format!(
                "{span} hold {} whole records that sidecar {} does not commit (a damaged or truncated sidecar, or a batch a crash cut short)",
                found.records.len(),
                idx_name(no)
            )));
        }
        if let ScanStop::Malformed(bad) = found.stop {
            if bytes[bad as usize..].iter().any(|&b| b != 0) {
                return Err(refuse(format!(
                    "bytes {bad}..{shard_len} of {} are neither a record nor a torn write (damage)",
                    shard_name(no)
                )));
            }
        }
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
    if !has_magic {
        plan.idx_cut = Some((0, true));
        plan.cuts.push(Cut {
            file: idx_name(no),
            offset: 0,
            len: bytes.len() as u64,
            reason: CutReason::BadHeader,
        });
    } else if valid < bytes.len() as u64 {
        plan.idx_cut = Some((valid, false));
        plan.cuts.push(Cut {
            file: idx_name(no),
            offset: valid,
            len: bytes.len() as u64 - valid,
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

/// Saves bytes `from..to` of shard `no` to a new file in `dir` before
/// recovery cuts them; returns its name.
fn save_cut(dir: &Path, no: u32, from: u64, to: u64) -> Result<String> {
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
    fn open(dir: &Path, recovery: &mut RecoveryReport) -> Result<Writer> {
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
        // Decide everything first: a refusal changes nothing.
        let mut plans = Vec::with_capacity(manifest.shards.len());
        for (pos, &no) in manifest.shards.iter().enumerate() {
            plans.push(plan_shard(dir, pos, no)?);
        }
        // Orphans: shard files the manifest does not list.
        for (no, name) in shard_files(dir)? {
            if !manifest.shards.contains(&no) {
                fs::remove_file(dir.join(&name))
                    .map_err(io_err(format!("removing orphan {name}")))?;
                recovery.orphans_removed.push(name);
            }
        }
        let mut index = Index::default();
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
                        if let CutReason::Uncommitted { saved, .. } = &mut c.reason {
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
                index.apply(plan.pos, r);
            }
        }
        let last = *manifest.shards.last().ok_or_else(|| StoreError::Format {
            path: dir.join(MANIFEST),
            found: "a manifest with no shard".into(),
            expected: "at least one shard".into(),
        })?;
        let cur = open_current(dir, last)?;
        Ok(Writer {
            _lock: lock,
            manifest,
            index,
            cur,
            failed: None,
            faults: Faults::default(),
        })
    }

    /// Forces the current shard and sidecar to disk.
    fn sync(&mut self) -> Result<()> {
        self.cur.shard.flush().map_err(io_err("writing a shard"))?;
        self.faults.sync().map_err(io_err("syncing a shard"))?;
        self.cur
            .shard
            .get_ref()
            .sync_data()
            .map_err(io_err("syncing a shard"))?;
        self.cur
            .idx
            .sync_data()
            .map_err(io_err("syncing a sidecar"))
    }

    /// Starts shard `cur.no + 1` after syncing the current one.
    fn roll(&mut self, dir: &Path) -> Result<()> {
        self.sync()?;
        let no = self.cur.no + 1;
        create_shard(dir, no)?;
        let mut manifest = self.manifest.clone();
        manifest.shards.push(no);
        write_manifest(dir, &manifest)?;
        self.manifest = manifest;
        self.cur = open_current(dir, no)?;
        Ok(())
    }

    /// Appends records and commits them: record bytes first, then their
    /// sidecar records. On an error before any sidecar byte of the failing
    /// commit was written, what this call left uncommitted is cut off
    /// again, so the writer can go on; on an error after (or when cutting
    /// off fails), the writer stops: see [`commit`](Self::commit).
    fn append<'a>(
        &mut self,
        dir: &Path,
        options: &ShardOptions,
        items: impl Iterator<Item = Append<'a>>,
    ) -> Result<()> {
        let per_sample = options.durability == Durability::Sample;
        let mut pending: Vec<u8> = Vec::new();
        let mut applied: Vec<IdxRecord> = Vec::new();
        let result = (|| -> Result<()> {
            for (kind, key, len, write) in items {
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
                write(&mut w)
                    .map_err(io_err(format!("appending to {}", shard_name(self.cur.no))))?;
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
                applied.push(IdxRecord {
                    kind,
                    key: key.into(),
                    offset,
                    len,
                    crc,
                });
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
    fn discard_uncommitted(&mut self) -> io::Result<()> {
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
    fn commit(
        &mut self,
        pending: &mut Vec<u8>,
        applied: &mut Vec<IdxRecord>,
        sync: bool,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        self.cur.shard.flush().map_err(io_err("writing a shard"))?;
        if sync {
            self.faults.sync().map_err(io_err("syncing a shard"))?;
            self.cur
                .shard
                .get_ref()
                .sync_data()
                .map_err(io_err("syncing a shard"))?;
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
        for r in applied.drain(..) {
            self.index.apply(pos, r);
        }
        Ok(())
    }
}
