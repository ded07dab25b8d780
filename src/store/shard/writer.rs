//! The shard store and its single writer: appending records, committing
//! them through the sidecars, recovery, compaction and reindexing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::store::error::{Result, StoreError};
use crate::store::lmdb::{check_key, MAX_KEY_LEN};
use crate::store::meta::Meta;
use crate::store::shard::index::Index;
use crate::store::shard::layout::{
    decode_idx, encode_idx, idx_name, record_len, shard_name, tombstone, write_record, IdxRecord,
    IdxStop, Manifest, DEL, IDX_MAGIC, KEY_NAME, LOCK, MANIFEST, PUT, TOMB_NAME,
};
use crate::store::shard::reader::ShardReader;
use crate::store::shard::snapshot::{read_manifest, Snapshot};
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
}

impl RecoveryReport {
    /// Whether anything was repaired.
    pub fn is_clean(&self) -> bool {
        *self == RecoveryReport::default()
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
    /// Opens (or with `create`, makes) the shard store in `dir`.
    ///
    /// Unless `read_only`, this takes the writer lock (a second writer gets
    /// [`StoreError::Locked`] naming the pid that holds it) and recovers
    /// from a crash: torn sidecar and shard tails are cut off and orphan
    /// shards removed; [`recovery`](Self::recovery) says what was dropped.
    /// Cost: O(index size), not O(data).
    ///
    /// Precondition (not checked, see the crate docs, "Memory maps"):
    /// while the store is open, its files change only through tenstore.
    /// A shard truncated by another process makes a read of the cut
    /// records raise `SIGBUS` (the process dies); rewritten in place, it
    /// changes the bytes of samples already handed out.
    pub fn open<P: AsRef<Path>>(dir: P, options: &ShardOptions) -> Result<ShardStore> {
        let dir = dir.as_ref();
        let exists = dir.join(MANIFEST).is_file();
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
                return Err(StoreError::Unsupported(format!(
                    "{} is open read-only",
                    self.inner.dir.display()
                )))
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
        let w = guard
            .as_mut()
            .ok_or_else(|| StoreError::Unsupported("read-only".into()))?;
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
        let w = guard
            .as_mut()
            .ok_or_else(|| StoreError::Unsupported("read-only".into()))?;
        // Each key once: a key named twice is deleted once.
        let keys = crate::store::lmdb::distinct(keys)?;
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
        Ok(self.reader()?.stats())
    }

    /// Rewrites the shards without overwritten and deleted samples and
    /// swaps them in atomically (a new manifest). Readers holding snapshots
    /// of the old shards keep reading them: the old files are unlinked,
    /// not truncated. Returns the bytes of shard files before and after.
    pub fn compact(&self) -> Result<(u64, u64)> {
        let mut guard = self.writer()?;
        let w = guard
            .as_mut()
            .ok_or_else(|| StoreError::Unsupported("read-only".into()))?;
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
    /// shards themselves, verifying each record's tenbin structure; a shard
    /// is read up to its first damaged or incomplete record. Takes the
    /// writer lock. Returns, per shard, the number of records indexed and
    /// the bytes after the last good one.
    ///
    /// A shard cannot tell whether its last sample lost trailing tensors to
    /// a torn write; the sidecars can, so keep them when you can.
    pub fn reindex<P: AsRef<Path>>(dir: P) -> Result<Vec<(u32, u64, u64)>> {
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
            let path = dir.join(shard_name(no));
            let bytes = fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
            let (records, good_end) = crate::store::shard::scan::scan(&bytes);
            let mut idx = IDX_MAGIC.to_vec();
            for r in &records {
                idx.extend_from_slice(&encode_idx(r.kind, &r.key, r.offset, r.len, r.crc));
            }
            write_atomic(dir, &idx_name(no), &idx)?;
            out.push((no, records.len() as u64, bytes.len() as u64 - good_end));
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
        // Orphans: shard files the manifest does not list.
        for (no, name) in shard_files(dir)? {
            if !manifest.shards.contains(&no) {
                fs::remove_file(dir.join(&name))
                    .map_err(io_err(format!("removing orphan {name}")))?;
                recovery.orphans_removed.push(name);
            }
        }
        let mut index = Index::default();
        for (pos, &no) in manifest.shards.iter().enumerate() {
            let idx_path = dir.join(idx_name(no));
            let shard_path = dir.join(shard_name(no));
            let bytes =
                fs::read(&idx_path).map_err(io_err(format!("reading {}", idx_path.display())))?;
            let shard_len = fs::metadata(&shard_path)
                .map_err(io_err(format!("reading {}", shard_path.display())))?
                .len();
            let (records, mut valid, stop) = decode_idx(&bytes, 0, MAX_KEY_LEN);
            if valid == 0 {
                valid = IDX_MAGIC.len() as u64;
            }
            // Keep records up to the first that points past the shard.
            let mut end = 0u64;
            let mut kept = 0;
            let mut at = IDX_MAGIC.len() as u64;
            for r in &records {
                if r.offset.checked_add(r.len).is_none_or(|e| e > shard_len) {
                    recovery.records_dropped += (records.len() - kept) as u64;
                    valid = at;
                    break;
                }
                end = end.max(r.offset + r.len);
                at += crate::store::shard::layout::idx_len(r.key.len()) as u64;
                kept += 1;
            }
            if valid < bytes.len() as u64
                || matches!(stop, IdxStop::Torn(_))
                || bytes.len() < IDX_MAGIC.len()
            {
                recovery.sidecar_bytes_dropped += (bytes.len() as u64).saturating_sub(valid);
                let f = OpenOptions::new()
                    .write(true)
                    .open(&idx_path)
                    .map_err(io_err(format!("opening {}", idx_path.display())))?;
                if bytes.len() < IDX_MAGIC.len() || bytes[..IDX_MAGIC.len()] != IDX_MAGIC[..] {
                    f.set_len(0).map_err(io_err("repairing a sidecar"))?;
                    (&f).write_all(IDX_MAGIC)
                        .map_err(io_err("repairing a sidecar"))?;
                } else {
                    f.set_len(valid).map_err(io_err("repairing a sidecar"))?;
                }
                f.sync_all().map_err(io_err("repairing a sidecar"))?;
            }
            if shard_len > end {
                recovery.shard_bytes_dropped += shard_len - end;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&shard_path)
                    .map_err(io_err(format!("opening {}", shard_path.display())))?;
                f.set_len(end)
                    .map_err(io_err("cutting a torn shard tail"))?;
                f.sync_all().map_err(io_err("cutting a torn shard tail"))?;
            }
            for r in records.into_iter().take(kept) {
                index.apply(pos, r);
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
