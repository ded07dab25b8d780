//! The LMDB backend: each sample is one value in LMDB's main database, the
//! tenbin buffer of its tensors, under its key.

use std::cell::RefCell;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};

use crate::codec::{encode_to, encoded_len, Layout, Tensors};
use crate::store::error::{Result, StoreError};
use crate::store::gate::{Blocked, Gate, Pass};
use crate::store::key::{check_key, distinct, shuffle};
use crate::store::meta::{Meta, META_FILE};
use crate::store::verify::{Problem, VerifyReport};
use crate::store::Sample;
use crate::tensor::AsTensorRef;

/// LMDB's data file in the store's directory.
pub(crate) const DATA_FILE: &str = "data.mdb";

/// How to open an [`LmdbStore`].
#[derive(Clone, Debug)]
pub struct LmdbOptions {
    /// Make the directory and the environment if they do not exist.
    /// Default: `false` (opening a path with no store is an error).
    pub create: bool,
    /// The map size to start with, in bytes; it grows by doubling when
    /// full. Default: 1 GiB. A larger existing map is kept.
    pub map_size: usize,
    /// Do not flush to disk at each commit (LMDB's `MDB_NOSYNC`): much
    /// faster bulk loads. Call [`LmdbStore::flush`] to make what was
    /// committed durable. Default: `false` (each write is durable when it
    /// returns).
    ///
    /// What a crash does with it on, as LMDB documents `MDB_NOSYNC`: a
    /// crash of the *process* loses nothing (commits are in the OS page
    /// cache). A crash of the *system* (power loss, kernel panic) before
    /// the next `flush` may lose the last commits, and can also corrupt the
    /// database, unless the filesystem preserves the order of writes (LMDB
    /// relies on its data pages reaching the disk before the meta page that
    /// commits them, which nothing forces without syncs). Use it for data
    /// you can load again.
    pub no_sync: bool,
    /// Open for reading only.
    pub read_only: bool,
    /// How long a writer that needs to grow the map waits for this
    /// process's open read snapshots to end. Default: 10 s.
    pub grow_patience: Duration,
    /// Most read snapshots open at once across all processes. Default 254.
    pub max_readers: u32,
    /// Allow writing to an LMDB environment tenstore did not create (one
    /// with no `tenstore.json`, e.g. written by Python's `lmdb`): opening it
    /// for writing adopts it by writing `tenstore.json`. Without it such an
    /// environment opens read-only only, and a writable open is refused
    /// with [`StoreError::Foreign`], so that no foreign database is changed
    /// by mistake. Default: `false`.
    pub adopt: bool,
    /// Read without LMDB's lock file (`MDB_NOLOCK`); needs `read_only`.
    /// For a store on a read-only copy or mount, or owned by another user,
    /// where `lock.mdb` cannot be written. **No writer may run at the same
    /// time**: LMDB then cannot know about this reader, so a writer may
    /// reuse the pages a snapshot reads and reads may return wrong bytes
    /// (never outside the file: LMDB does not shrink it).
    ///
    /// A read-only open falls back to this by itself when the lock file
    /// cannot be opened for writing (permission denied, read-only file
    /// system); [`LmdbStore::is_lock_free`] says whether it did. Default:
    /// `false`.
    pub no_lock: bool,
}

impl Default for LmdbOptions {
    fn default() -> Self {
        LmdbOptions {
            create: false,
            map_size: 1 << 30,
            no_sync: false,
            read_only: false,
            grow_patience: Duration::from_secs(10),
            max_readers: 254,
            adopt: false,
            no_lock: false,
        }
    }
}

/// A sample store in an LMDB environment.
///
/// The value under each key is exactly the tenbin buffer of the sample's
/// tensors, so Python's `lmdb` with `webdataset.tenbin.decode_buffer` reads
/// it with nothing else; store metadata lives in `tenstore.json` beside
/// `data.mdb`, outside the keyspace. A plain LMDB environment whose values
/// are tenbin buffers (one without `tenstore.json`, e.g. written by Python's
/// `lmdb`) opens as a store too: read-only as it is, for writing only when
/// adopted ([`LmdbOptions::adopt`]), so that no foreign database is changed
/// by mistake.
///
/// Values are at most [`max_value_len`](Self::max_value_len) bytes (2 GiB
/// less 64 KiB and a page header: LMDB writes a value in one `pwrite`);
/// larger samples are refused before anything is written. Shard stores
/// take them.
///
/// A full disk: space that `delete` frees is reusable only two commits
/// later (LMDB keeps the previous commit's pages until then), and a commit
/// that fails does not count. So after removing samples on a full disk, a
/// put as large as what was removed keeps failing until some other commit
/// succeeds (e.g. a smaller put); then it fits.
///
/// Sharing with Python: heed builds LMDB 0.9.70 (its `mdb.master` line),
/// whose lock file format (2) differs from the one of the LMDB 0.9.x that
/// Python's `lmdb` bundles (1). The data file is the same, so either side
/// reads what the other wrote, but not while the other has the store open:
/// the second opener gets `MDB_VERSION_MISMATCH`. For Python readers of a
/// live store, serve it (`tenstore serve`).
///
/// Cloning is cheap and shares the environment (LMDB allows one open
/// environment per file per process).
///
/// ```
/// use ndarray::array;
/// use tenstore::store::{LmdbOptions, LmdbStore};
/// use tenstore::TensorRef;
///
/// let dir = tempfile::tempdir()?;
/// let store = LmdbStore::open(dir.path(), &LmdbOptions { create: true, ..Default::default() })?;
/// let label = array![3i64];
/// store.put(b"sample-0", &[TensorRef::from_array("label", &label)?])?;
///
/// let reader = store.reader()?;
/// let sample = reader.get(b"sample-0")?.expect("just written");
/// assert_eq!(sample.get_by_name("label").unwrap().to_vec::<i64>()?, [3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct LmdbStore {
    inner: Arc<Inner>,
}

struct Inner {
    env: Env<WithoutTls>,
    db: Database<Bytes, Bytes>,
    path: PathBuf,
    gate: Gate,
    /// One writer at a time in this process (LMDB serialises processes).
    writer: Mutex<()>,
    options: LmdbOptions,
    /// Opened without LMDB's lock file (asked for, or fallen back to).
    lock_free: bool,
    /// The longest value LMDB can write in one piece here.
    max_value: usize,
}

/// What [`LmdbStore::stats`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmdbStats {
    /// Number of samples.
    pub samples: u64,
    /// Bytes of the pages the samples occupy (branch, leaf and overflow).
    pub bytes: u64,
    /// Current size of the memory map.
    pub map_size: u64,
    /// LMDB page size.
    pub page_size: u32,
    /// Pages in use by the main database.
    pub pages: u64,
    /// Pages in the environment up to the last one used (data and free).
    pub last_page: u64,
}

fn is_map_full(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Lmdb {
            source: heed::Error::Mdb(MdbError::MapFull),
            ..
        }
    )
}

/// A commit error, with a hint where LMDB's report is cryptic: it reports a
/// write that fell short (a full disk, a file size limit) as EIO.
fn commit_error(path: &Path, e: heed::Error) -> StoreError {
    let eio = matches!(&e, heed::Error::Io(io) if io.raw_os_error() == Some(5));
    let context = if eio {
        format!(
            "committing to {}: a write fell short (is the disk full?)",
            path.display()
        )
    } else {
        format!("committing to {}", path.display())
    };
    StoreError::lmdb(context, e)
}

/// Whether opening failed because the lock file cannot be opened for
/// writing: permission denied, or a read-only file system (which LMDB
/// itself tolerates for `lock.mdb` only when the file system is read-only).
fn lock_denied(e: &StoreError) -> bool {
    match e {
        StoreError::Lmdb {
            source: heed::Error::Io(io),
            ..
        } => io.kind() == std::io::ErrorKind::PermissionDenied || io.raw_os_error() == Some(30),
        _ => false,
    }
}

/// The most bytes one write moves on every system LMDB runs on (Linux caps
/// a write at `INT_MAX` rounded down to its page size, 4 to 64 KiB).
const MAX_WRITE: usize = 0x7fff_0000;

/// The longest value whose overflow pages (a 16-byte header, then the
/// value, rounded up to whole pages) LMDB writes in one piece.
fn max_value_len(page_size: usize) -> usize {
    let page_size = page_size.max(1);
    MAX_WRITE / page_size * page_size - (std::mem::size_of::<usize>() + 8)
}

fn is_map_resized(e: &heed::Error) -> bool {
    matches!(e, heed::Error::Mdb(MdbError::MapResized))
}

impl LmdbStore {
    /// Whether `dir` holds an LMDB store (its `data.mdb`).
    pub fn holds(dir: &Path) -> bool {
        dir.join(DATA_FILE).is_file()
    }

    /// Opens (or with `create`, makes) the store in directory `path`.
    ///
    /// A path that holds no `data.mdb` is refused unless `create` is set.
    ///
    /// Before LMDB maps `data.mdb`, its two meta pages are read and checked
    /// (LMDB's magic and data version), and the file's length against the
    /// last page its newest commit uses (less trailing pages LMDB's free
    /// list holds, which LMDB may leave unwritten): a damaged or cut-short
    /// file is refused with [`StoreError::Damaged`] instead of faulting
    /// (SIGBUS) at the first read of a missing page. An empty `data.mdb` is
    /// damaged too, never made into a new environment.
    ///
    /// Precondition (not checked; the [store module docs](crate::store) say
    /// what breaking it does): while the store is open, its files change
    /// only through LMDB (tenstore, Python's `lmdb`, any LMDB client), which
    /// LMDB's lock file coordinates.
    pub fn open<P: AsRef<Path>>(path: P, options: &LmdbOptions) -> Result<LmdbStore> {
        let path = path.as_ref();
        let exists = Self::holds(path);
        crate::store::refuse_missing(path, exists, options.create, options.read_only)?;
        if options.no_lock && !options.read_only {
            return Err(StoreError::NoLockWriter);
        }
        // Before LMDB maps the file: a file cut short would fault on the
        // first read of a missing page.
        if exists {
            crate::store::lmdb_file::check(path)?;
        }
        let foreign = exists && !path.join(META_FILE).exists();
        if foreign && !options.read_only && !options.adopt {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
            });
        }
        if !exists {
            std::fs::create_dir_all(path)
                .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
        }
        Meta::check_or_create(
            path,
            "lmdb",
            !exists && options.create && !options.read_only,
        )?;

        let (env, lock_free) = match Self::open_env(path, options, options.no_lock) {
            Err(e) if options.read_only && !options.no_lock && lock_denied(&e) => {
                (Self::open_env(path, options, true)?, true)
            }
            other => (other?, options.no_lock),
        };
        let max_value = max_value_len(env.stat().page_size as usize);
        let db = if options.read_only {
            let txn = env
                .read_txn()
                .map_err(|e| StoreError::lmdb("starting a read transaction", e))?;
            let db = env
                .open_database::<Bytes, Bytes>(&txn, None)
                .map_err(|e| StoreError::lmdb("opening the main database", e))?;
            db.ok_or_else(|| StoreError::NotAStore {
                path: path.to_owned(),
            })?
        } else {
            let mut txn = env
                .write_txn()
                .map_err(|e| StoreError::lmdb("starting a write transaction", e))?;
            let db = env
                .create_database::<Bytes, Bytes>(&mut txn, None)
                .map_err(|e| StoreError::lmdb("opening the main database", e))?;
            txn.commit()
                .map_err(|e| StoreError::lmdb("committing", e))?;
            db
        };
        if foreign && !options.read_only {
            // Adopted (checked above): from now on tenstore's store.
            Meta::check_or_create(path, "lmdb", true)?;
        }
        Ok(LmdbStore {
            inner: Arc::new(Inner {
                env,
                db,
                path: path.to_owned(),
                gate: Gate::default(),
                writer: Mutex::new(()),
                options: options.clone(),
                lock_free,
                max_value,
            }),
        })
    }

    /// Opens the environment, without LMDB's lock file if `no_lock`.
    fn open_env(path: &Path, options: &LmdbOptions, no_lock: bool) -> Result<Env<WithoutTls>> {
        let mut env_options = EnvOpenOptions::new().read_txn_without_tls();
        env_options
            .map_size(page_multiple(options.map_size))
            .max_readers(options.max_readers);
        let mut flags = EnvFlags::empty();
        if options.no_sync {
            flags |= EnvFlags::NO_SYNC;
        }
        if options.read_only {
            flags |= EnvFlags::READ_ONLY;
        }
        if no_lock {
            flags |= EnvFlags::NO_LOCK;
        }
        // SAFETY: NO_SYNC only changes what survives a system crash (the
        // last commits may be lost and, on a filesystem that reorders
        // writes, the database damaged), which `LmdbOptions::no_sync`
        // documents as LMDB does; it changes nothing about memory safety
        // within a running system. READ_ONLY only restricts what the handle may do;
        // NO_LOCK is set only with READ_ONLY (checked in `open`), so this
        // process never writes without the lock, and the option documents
        // that no other writer may run meanwhile.
        unsafe {
            env_options.flags(flags);
        }
        // SAFETY: LMDB memory-maps data.mdb; the map stays valid as long as
        // the file is changed only through LMDB, whose lock file
        // serialises writers and tracks readers across processes.
        // tenstore itself never touches the file by other means; changes
        // by other programs while it is open are the documented exception
        // of `open` (crate docs, "Memory maps"), which heed states as this
        // function's `unsafe` contract. `open` checked that the file holds
        // every page its newest commit may read.
        unsafe { env_options.open(path) }.map_err(|e| {
            let hint = if matches!(e, heed::Error::Mdb(MdbError::VersionMismatch)) {
                // The data file's version was checked in `open`: what
                // differs is the lock file's format.
                " (another process has it open with an LMDB of another lock format, e.g. Python's lmdb: \
                 the two cannot share a store at the same time; close it, or serve the store with `tenstore serve`)"
            } else {
                ""
            };
            StoreError::lmdb(format!("opening LMDB environment {}{hint}", path.display()), e)
        })
    }

    /// Whether this store was opened without LMDB's lock file
    /// ([`LmdbOptions::no_lock`], or the read-only fallback when the lock
    /// file cannot be written): then no writer may run at the same time.
    pub fn is_lock_free(&self) -> bool {
        self.inner.lock_free
    }

    /// The largest encoded sample this store takes: LMDB writes a value in
    /// one `pwrite`, which moves at most 2 GiB minus a little (Linux stops
    /// at 2,147,479,552 bytes and LMDB reports the short write as EIO), so
    /// a value's pages may total at most 2 GiB - 64 KiB (0x7fff0000 bytes,
    /// the bound on every page size), less LMDB's 16-byte page header:
    /// 2,147,418,096 bytes with 4 KiB pages. Larger samples are refused
    /// with [`StoreError::TooLarge`] before anything is written; the shard
    /// backend has no such limit.
    pub fn max_value_len(&self) -> usize {
        self.inner.max_value
    }

    /// Refuses a value longer than [`max_value_len`](Self::max_value_len).
    fn check_value_len(&self, key: &[u8], len: usize) -> Result<()> {
        if len > self.inner.max_value {
            return Err(StoreError::TooLarge {
                key: crate::error::escape(key),
                len,
                max: self.inner.max_value,
            });
        }
        Ok(())
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stores `tensors` under `key`, replacing any sample there. The buffer
    /// is encoded straight into the space LMDB reserves for the value.
    pub fn put<T: AsTensorRef>(&self, key: &[u8], tensors: &[T]) -> Result<()> {
        self.put_batch(&[(key, tensors)])
    }

    /// Stores many samples in one transaction: all or none of them.
    pub fn put_batch<K, S, T>(&self, samples: &[(K, S)]) -> Result<()>
    where
        K: AsRef<[u8]>,
        S: AsRef<[T]>,
        T: AsTensorRef,
    {
        let mut lens = Vec::with_capacity(samples.len());
        for (key, tensors) in samples {
            check_key(key.as_ref())?;
            let len =
                encoded_len(tensors.as_ref()).map_err(|e| StoreError::codec(key.as_ref(), e))?;
            self.check_value_len(key.as_ref(), len)?;
            lens.push(len);
        }
        self.write(|txn, db| {
            for ((key, tensors), &len) in samples.iter().zip(&lens) {
                let key = key.as_ref();
                db.put_reserved(txn, key, len, |space| encode_to(tensors.as_ref(), space))
                    .map_err(|e| {
                        StoreError::lmdb(
                            format!("writing sample {:?}", key.escape_ascii().to_string()),
                            e,
                        )
                    })?;
            }
            Ok(())
        })
    }

    /// Stores already-encoded tenbin buffers, checking each first.
    pub fn put_encoded<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, samples: &[(K, V)]) -> Result<()> {
        for (key, value) in samples {
            check_key(key.as_ref())?;
            self.check_value_len(key.as_ref(), value.as_ref().len())?;
            Tensors::parse(value.as_ref()).map_err(|e| StoreError::codec(key.as_ref(), e))?;
        }
        self.write(|txn, db| {
            for (key, value) in samples {
                db.put(txn, key.as_ref(), value.as_ref())
                    .map_err(|e| StoreError::lmdb("writing a sample", e))?;
            }
            Ok(())
        })
    }

    /// Removes the samples under `keys`; returns how many there were.
    pub fn delete<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<usize> {
        let mut removed = 0;
        self.write(|txn, db| {
            removed = 0;
            for key in keys {
                if db
                    .delete(txn, key.as_ref())
                    .map_err(|e| StoreError::lmdb("deleting a sample", e))?
                {
                    removed += 1;
                }
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// Removes the samples under `keys`, all or none: if any key is
    /// missing, nothing is removed and the error names it.
    pub fn delete_exact<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        let keys = distinct(keys)?;
        self.write(|txn, db| {
            for &key in &keys {
                if !db
                    .delete(txn, key)
                    .map_err(|e| StoreError::lmdb("deleting a sample", e))?
                {
                    return Err(StoreError::NotFound {
                        key: crate::error::escape(key),
                    });
                }
            }
            Ok(())
        })
    }

    /// Flushes committed writes to disk: what makes `no_sync` writes
    /// durable. (The shard store's [`flush`](crate::store::ShardStore::flush)
    /// is the same promise.)
    pub fn flush(&self) -> Result<()> {
        self.inner
            .env
            .force_sync()
            .map_err(|e| StoreError::lmdb("syncing to disk", e))
    }

    /// A read snapshot: it sees every sample committed before it was made,
    /// and nothing after, until [`LmdbReader::refresh`].
    pub fn reader(&self) -> Result<LmdbReader<'_>> {
        let open = self.begin(|env| env.read_txn())?;
        Ok(LmdbReader {
            open: Some(open),
            store: self,
            layout: RefCell::default(),
        })
    }

    /// Number of samples (in a snapshot of its own: a thread that holds a
    /// reader should ask [`LmdbReader::len`]).
    pub fn len(&self) -> Result<u64> {
        self.reader()?.len()
    }

    /// Whether the store holds no sample.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Counts and sizes (in a snapshot of its own: a thread that holds a
    /// reader should ask [`LmdbReader::stats`]).
    pub fn stats(&self) -> Result<LmdbStats> {
        self.reader()?.stats()
    }

    /// Starts a transaction through the gate, adopting a map that another
    /// process grew when LMDB asks for it.
    fn begin<'s, X>(
        &'s self,
        start: impl Fn(&'s Env<WithoutTls>) -> heed::Result<X>,
    ) -> Result<(X, Pass<'s>)> {
        loop {
            let pass = self.inner.gate.enter();
            match start(&self.inner.env) {
                Ok(txn) => return Ok((txn, pass)),
                Err(e) if is_map_resized(&e) => {
                    drop(pass);
                    self.resize(MapChange::Adopt)?;
                }
                Err(e) => return Err(StoreError::lmdb("starting a transaction", e)),
            }
        }
    }

    /// Runs `f` in a write transaction and commits, growing the map and
    /// starting again as often as LMDB reports it full.
    fn write(
        &self,
        mut f: impl FnMut(&mut RwTxn<'_>, &Database<Bytes, Bytes>) -> Result<()>,
    ) -> Result<()> {
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let full = {
                let (mut txn, _pass) = self.begin(|env| env.write_txn())?;
                match f(&mut txn, &self.inner.db) {
                    Err(e) if is_map_full(&e) => true,
                    Err(e) => return Err(e),
                    Ok(()) => match txn.commit() {
                        Ok(()) => return Ok(()),
                        Err(heed::Error::Mdb(MdbError::MapFull)) => true,
                        Err(e) => return Err(commit_error(&self.inner.path, e)),
                    },
                }
                // The transaction (aborted if not committed) ends before
                // the pass that lets it be open.
            };
            debug_assert!(full);
            self.resize(MapChange::Grow)?;
        }
    }

    /// Changes the map size with no transaction of this process open:
    /// doubles it, or adopts the size another process set.
    fn resize(&self, change: MapChange) -> Result<()> {
        let patience = self.inner.options.grow_patience;
        let env = &self.inner.env;
        let outcome = self.inner.gate.exclusive(patience, || {
            let size = match change {
                MapChange::Adopt => 0,
                // Read inside the gate: `mdb_env_info` reads the map, which
                // another thread's resize would move.
                MapChange::Grow => env.info().map_size.checked_mul(2).ok_or_else(|| {
                    StoreError::io(
                        "growing the map",
                        std::io::Error::other("the map cannot grow past the address space"),
                    )
                })?,
            };
            // SAFETY: `Gate::exclusive` runs this only while no transaction
            // of this process is open and no other map change runs, and
            // every transaction of this environment is begun through the
            // gate (`begin`), which is what LMDB requires of
            // `mdb_env_set_mapsize`.
            unsafe { env.resize(size) }.map_err(|e| match change {
                MapChange::Grow => StoreError::lmdb("growing the map", e),
                MapChange::Adopt => {
                    StoreError::lmdb("adopting the map size another process set", e)
                }
            })
        });
        match outcome {
            Ok(r) => r,
            Err(Blocked { open, held_here }) => {
                let readers = open;
                let waited_ms = if held_here > 0 {
                    0
                } else {
                    patience.as_millis() as u64
                };
                Err(match change {
                    MapChange::Grow => StoreError::GrowBlocked {
                        readers,
                        waited_ms,
                        held_here,
                    },
                    MapChange::Adopt => StoreError::AdoptBlocked {
                        readers,
                        waited_ms,
                        held_here,
                    },
                })
            }
        }
    }
}

/// A change of the map size.
#[derive(Clone, Copy)]
enum MapChange {
    /// Double it: this process's write found it full.
    Grow,
    /// Take the size another process set (LMDB's `MDB_MAP_RESIZED`).
    Adopt,
}

/// Rounds up to a multiple of the 4 KiB page, at least one page.
fn page_multiple(size: usize) -> usize {
    const PAGE: usize = 4096;
    size.max(PAGE).div_ceil(PAGE) * PAGE
}

/// A read snapshot of an [`LmdbStore`]: `Send`, so each loader thread can
/// hold its own. Samples it hands out borrow it.
pub struct LmdbReader<'s> {
    /// The snapshot and its pass through the gate; `None` only after a
    /// failed [`refresh`](Self::refresh). The transaction ends before the
    /// pass (field order).
    open: Option<(RoTxn<'s, WithoutTls>, Pass<'s>)>,
    store: &'s LmdbStore,
    /// The layout of the last sample `get` checked, to recognise the next
    /// one of the same layout without walking its chunks again (see
    /// `codec::Layout`: it accepts exactly what a full check does).
    /// Boxed: it is over a kilobyte, and readers are moved around.
    layout: RefCell<Box<Layout>>,
}

impl<'s> LmdbReader<'s> {
    fn txn(&self) -> Result<&RoTxn<'s, WithoutTls>> {
        match &self.open {
            Some((txn, _)) => Ok(txn),
            None => Err(StoreError::RefreshFailed),
        }
    }

    /// The sample under `key`, its tensors zero-copy views over LMDB's
    /// pages. Allocates nothing.
    ///
    /// Views are zero-copy (`TensorView::array`) when the value's address
    /// suits the element type: LMDB puts values larger than about 2 KB on
    /// their own pages, 16 bytes into the page, so every dtype views in
    /// place; small values sit at any even address, where `cow_array`
    /// copies the multi-byte types.
    ///
    /// The sample borrows both the snapshot and `key` (it hands the key
    /// back without copying it).
    pub fn get<'r>(&'r self, key: &'r [u8]) -> Result<Option<Sample<'r>>> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(value) => {
                let tensors = match self.layout.try_borrow_mut() {
                    Ok(mut layout) => Tensors::parse_cached(value, &mut layout),
                    // Not reached (the borrow ends here), but never worth
                    // a panic: check in full.
                    Err(_) => Tensors::parse_cold(value),
                };
                Ok(Some(Sample::new(
                    key,
                    tensors.map_err(|e| StoreError::codec(key, e))?,
                )))
            }
        }
    }

    /// Like [`get`](Self::get), but a missing key is an error.
    pub fn require<'r>(&'r self, key: &'r [u8]) -> Result<Sample<'r>> {
        self.get(key)?.ok_or_else(|| StoreError::NotFound {
            key: crate::error::escape(key),
        })
    }

    /// The stored bytes under `key`, unchecked.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        check_key(key)?;
        self.store
            .inner
            .db
            .get(self.txn()?, key)
            .map_err(|e| StoreError::lmdb("reading a sample", e))
    }

    /// Number of samples in this snapshot.
    pub fn len(&self) -> Result<u64> {
        self.store
            .inner
            .db
            .len(self.txn()?)
            .map_err(|e| StoreError::lmdb("counting samples", e))
    }

    /// Whether this snapshot holds no sample.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Counts and sizes: the samples, their bytes and pages as of this
    /// snapshot; the map size and last page as the environment is now.
    /// Opens no transaction, so it never waits for the map to grow.
    pub fn stats(&self) -> Result<LmdbStats> {
        let stat = self
            .store
            .inner
            .db
            .stat(self.txn()?)
            .map_err(|e| StoreError::lmdb("reading database statistics", e))?;
        // Read while this snapshot's pass keeps the map where it is.
        let info = self.store.inner.env.info();
        let pages = (stat.branch_pages + stat.leaf_pages + stat.overflow_pages) as u64;
        Ok(LmdbStats {
            samples: stat.entries as u64,
            bytes: pages * u64::from(stat.page_size),
            map_size: info.map_size as u64,
            page_size: stat.page_size,
            pages,
            last_page: info.last_page_number as u64 + 1,
        })
    }

    /// Every sample, in key order.
    pub fn iter(&self) -> Result<Entries<'_>> {
        let it = self
            .store
            .inner
            .db
            .iter(self.txn()?)
            .map_err(|e| StoreError::lmdb("listing samples", e))?;
        Ok(Entries(Box::new(it)))
    }

    /// The samples whose keys start with `prefix`, in key order.
    pub fn iter_prefix(&self, prefix: &[u8]) -> Result<Entries<'_>> {
        let it = self
            .store
            .inner
            .db
            .prefix_iter(self.txn()?, prefix)
            .map_err(|e| StoreError::lmdb("listing samples", e))?;
        Ok(Entries(Box::new(it)))
    }

    /// The samples whose keys are after `start` (`Included` or `Excluded`),
    /// in key order.
    pub fn iter_from(&self, start: Bound<&[u8]>) -> Result<Entries<'_>> {
        // LMDB refuses an empty key even as a bound; every key is after it.
        let start = match start {
            Bound::Included(k) | Bound::Excluded(k) if k.is_empty() => Bound::Unbounded,
            other => other,
        };
        let range = (start, Bound::Unbounded);
        let it = self
            .store
            .inner
            .db
            .range(self.txn()?, &range)
            .map_err(|e| StoreError::lmdb("listing samples", e))?;
        Ok(Entries(Box::new(it)))
    }

    /// Every sample in an order shuffled by `seed`, the same order for the
    /// same seed and snapshot. Lists the keys first (values are not
    /// touched), then reads each sample as it comes.
    pub fn iter_shuffled(&self, seed: u64) -> Result<impl Iterator<Item = Result<Sample<'_>>>> {
        let keys = self.keys_shuffled(seed)?;
        Ok(keys.into_iter().map(move |k| self.require(k)))
    }

    /// The keys of [`iter_shuffled`](Self::iter_shuffled)`(seed)`, in its
    /// order, without reading the samples.
    pub fn keys_shuffled(&self, seed: u64) -> Result<Vec<&[u8]>> {
        let mut keys = self.iter()?.keys().collect::<Result<Vec<&[u8]>>>()?;
        shuffle(&mut keys, seed);
        Ok(keys)
    }

    /// Checks every sample's tenbin structure. Fails only when the
    /// snapshot cannot be listed.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut problems = Vec::new();
        for entry in self.iter()?.raw() {
            let (k, v) = entry?;
            if let Err(e) = crate::codec::Tensors::parse(v) {
                problems.push(Problem::Malformed {
                    key: k.to_vec(),
                    what: e.to_string(),
                });
            }
        }
        Ok(VerifyReport { problems })
    }

    /// The id of the newest write transaction this snapshot sees. A
    /// snapshot begun later never has a smaller one, and two with the same
    /// id see the same samples.
    pub fn txn_id(&self) -> Result<u64> {
        Ok(self.txn()?.id() as u64)
    }

    /// Replaces this snapshot with a new one that sees every commit so far.
    pub fn refresh(&mut self) -> Result<()> {
        // End the old snapshot first: if the map must be adopted from
        // another process, the gate waits for this reader's pass too.
        self.open = None;
        self.open = Some(self.store.begin(|env| env.read_txn())?);
        Ok(())
    }
}

/// Samples of a snapshot in key order, checked as they come.
pub struct Entries<'r>(Box<dyn Iterator<Item = heed::Result<KeyValue<'r>>> + 'r>);

/// A key and its stored bytes.
type KeyValue<'r> = (&'r [u8], &'r [u8]);

impl<'r> Entries<'r> {
    /// Only the keys (values are not touched).
    pub fn keys(self) -> impl Iterator<Item = Result<&'r [u8]>> + 'r {
        self.0.map(|r| {
            r.map(|(k, _)| k)
                .map_err(|e| StoreError::lmdb("listing keys", e))
        })
    }

    /// Keys and stored bytes, unchecked.
    pub fn raw(self) -> impl Iterator<Item = Result<(&'r [u8], &'r [u8])>> + 'r {
        self.0
            .map(|r| r.map_err(|e| StoreError::lmdb("listing samples", e)))
    }
}

impl<'r> Iterator for Entries<'r> {
    type Item = Result<Sample<'r>>;

    fn next(&mut self) -> Option<Result<Sample<'r>>> {
        Some(match self.0.next()? {
            Ok((k, v)) => Tensors::parse(v)
                .map(|t| Sample::new(k, t))
                .map_err(|e| StoreError::codec(k, e)),
            Err(e) => Err(StoreError::lmdb("listing samples", e)),
        })
    }
}
