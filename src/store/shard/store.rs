//! The shard store: [`ShardStore`] with its options and stats, and the
//! writes, flushes and snapshots it hands to its single writer.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::files::*;
use super::recovery::*;
use super::writer::*;
use crate::store::error::{Result, StoreError};
use crate::store::key::{check_key, distinct};
use crate::store::meta::Meta;
use crate::store::shard::layout::{record_len, tombstone, KEY_NAME, MANIFEST, TOMB_NAME};
use crate::store::shard::reader::ShardReader;
use crate::store::shard::snapshot::Snapshot;
use crate::store::shard::source::SourceFactory;
use crate::store::shard::table;
use crate::tensor::{AsTensorRef, TensorRef};

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
    /// Check the crc32c of every sample a random `get` reads (costs a pass
    /// over its bytes, which for a small read of a large sample is most of
    /// the read). Default `false`. Scans check every record's crc32c
    /// whatever this says: the reader's iterators (write order, key order,
    /// shuffled, epoch plans), and so `export`, `push` and `verify`;
    /// so do [`get_checked`](super::ShardReader::get_checked), `serve` and
    /// the CLI's `get`, which hand samples to other processes.
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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) options: ShardOptions,
    pub(super) writer: Mutex<Option<Writer>>,
    pub(super) recovery: RecoveryReport,
    /// Where readers' shard bytes come from when they are not local files
    /// (a remote store's cache).
    pub(super) source: Option<Arc<dyn SourceFactory>>,
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
            let stale = w.keys.since > 0 || w.keys.damaged.is_some();
            if w.sync().is_ok() && w.failed.is_none() && w.published && stale {
                let _ = w.write_table(&self.dir);
            }
        }
    }
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
    /// from a crash: torn sidecar and shard tails are cut off (uncommitted
    /// records, a lone last one or a batch a crash cut short, saved to a
    /// `cut-*.ten` file first) and orphan shards removed;
    /// [`recovery`](Self::recovery) says what was cut, why and where it
    /// went. When a damaged sidecar (no header, a complete record failing
    /// its checksum, valid records after a damaged one) hides whole
    /// records, this fails with [`StoreError::NeedsReindex`] and changes
    /// nothing; see [`reindex`](Self::reindex). Cost: read-only, O(1) in
    /// the number of samples when the key table is valid (else O(index
    /// size)); for the writer, O(index size), plus a scan of any
    /// uncommitted shard tail.
    ///
    /// Precondition (not checked; the [store module docs](crate::store) say
    /// what breaking it does): while the store is open, its files change
    /// only through tenstore.
    pub fn open<P: AsRef<Path>>(dir: P, options: &ShardOptions) -> Result<ShardStore> {
        let dir = dir.as_ref();
        crate::store::refuse_missing(dir, Self::holds(dir), options.create, options.read_only)?;
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
                source: None,
            }),
        })
    }

    /// Opens the shard store whose manifest, sidecars and key table are in
    /// `dir`, read-only, its shard bytes coming from `source` (a remote
    /// store's cache).
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn open_with_source(
        dir: &Path,
        options: &ShardOptions,
        source: Arc<dyn SourceFactory>,
    ) -> Result<ShardStore> {
        if !Self::holds(dir) {
            return Err(StoreError::NotAStore {
                path: dir.to_owned(),
            });
        }
        Meta::check_or_create(dir, "ten", false)?;
        Ok(ShardStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                options: ShardOptions {
                    read_only: true,
                    create: false,
                    ..options.clone()
                },
                writer: Mutex::new(None),
                recovery: RecoveryReport::default(),
                source: Some(source),
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

    pub(super) fn writer(&self) -> Result<WriterGuard<'_>> {
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
        Ok(WriterGuard(guard))
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
        let mut w = self.writer()?;
        let durability = self.inner.options.durability;
        w.append(
            &self.inner.dir,
            &self.inner.options,
            samples.iter().zip(&lens).map(|((k, t), &len)| Append::Put {
                key: k.as_ref(),
                tensors: t.as_ref(),
                len,
            }),
        )?;
        if durability == Durability::Batch {
            w.sync()?;
        }
        w.maintain(&self.inner.dir);
        Ok(())
    }

    /// Deletes the samples under `keys`, all or none: if any key is missing
    /// nothing is written. Each deletion appends a tombstone record.
    pub fn delete_exact<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        let mut w = self.writer()?;
        // Each key once: a key named twice is deleted once.
        let keys = distinct(keys)?;
        for &key in &keys {
            if !w.holds(&self.inner.dir, key)? {
                return Err(StoreError::NotFound {
                    key: crate::error::escape(key),
                });
            }
        }
        let tombs: Vec<Vec<u8>> = keys.iter().map(|k| tombstone(k)).collect();
        w.append(
            &self.inner.dir,
            &self.inner.options,
            keys.iter()
                .zip(&tombs)
                .map(|(&key, tombstone)| -> Append<'_, TensorRef<'static>> {
                    Append::Delete { key, tombstone }
                }),
        )?;
        if self.inner.options.durability == Durability::Batch {
            w.sync()?;
        }
        w.maintain(&self.inner.dir);
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
            Some(w) => {
                w.sync()?;
                let due = table::due(w.keys.since, w.keys.len()) || w.keys.damaged.is_some();
                if w.published && w.failed.is_none() && due {
                    w.write_table(&self.inner.dir)?;
                }
                Ok(())
            }
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
            snap: Snapshot::load_with(
                &self.inner.dir,
                self.inner.options.verify_reads,
                self.inner.source.as_ref().map(|f| f.source()),
            )?,
        })
    }

    /// Counts and sizes, in a snapshot of its own (a thread that holds a
    /// reader can ask [`ShardReader::stats`]).
    pub fn stats(&self) -> Result<ShardStats> {
        self.reader()?.stats()
    }
}

/// The store's writer, locked: [`ShardStore::writer`] makes one only when
/// the store has a writer that has not failed, so holders need no
/// read-only check of their own.
pub(super) struct WriterGuard<'s>(MutexGuard<'s, Option<Writer>>);

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        match self.0.as_ref() {
            Some(w) => w,
            None => unreachable!("a WriterGuard is made only around a writer"),
        }
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        match self.0.as_mut() {
            Some(w) => w,
            None => unreachable!("a WriterGuard is made only around a writer"),
        }
    }
}
