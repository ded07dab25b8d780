//! Shard bytes of a remote store for its readers: whole shards mapped from
//! the cache (fetched ahead of a sequential reader, several in parallel),
//! single records fetched by ranged GETs for random lookups.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::{Mmap, MmapMut};

use super::cache::{pin, Cache, Pinned, RANGES};
use super::error::RemoteError;
use super::fetch::Fetcher;
use crate::store::shard::layout::shard_name;
use crate::store::shard::source::{ShardSource, SourceFactory};
use crate::store::{Result, StoreError};

/// Gap (bytes) between consecutive reads that still counts as reading a
/// shard front to back (overwritten records are skipped over).
const SEQ_GAP: u64 = 1 << 20;

/// Consecutive front-to-back reads after which whole shards are fetched.
const SEQ_STREAK: u32 = 3;

/// What every reader of one opened remote store shares.
pub(crate) struct Shared {
    pub fetch: Fetcher,
    pub cache: Cache,
    /// The store's cache directory.
    pub dir: PathBuf,
    /// Shard number -> (size, crc32c), from the published manifest.
    pub shards: HashMap<u32, (u64, u32)>,
    /// Shard numbers in manifest order.
    pub order: Vec<u32>,
    /// Whole shards fetched ahead of a sequential reader.
    pub prefetch: usize,
    /// Shards being prefetched.
    inflight: Mutex<HashSet<u32>>,
    /// Keeps the store's metadata in the cache while it is open.
    _held: std::fs::File,
    /// Ranged records to write to the cache, off the reader's path.
    writes: Mutex<std::sync::mpsc::Sender<(PathBuf, bytes::Bytes)>>,
}

impl Shared {
    pub fn new(
        fetch: Fetcher,
        cache: Cache,
        dir: PathBuf,
        shards: HashMap<u32, (u64, u32)>,
        order: Vec<u32>,
        prefetch: usize,
        held: std::fs::File,
    ) -> Shared {
        let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, bytes::Bytes)>();
        let writer_cache = cache.clone();
        // Ends when the store (the sender) is dropped. Caching a record is
        // best effort: a full cache still served it.
        let _ = std::thread::Builder::new()
            .name("tenstore-cache-writer".into())
            .spawn(move || {
                for (path, b) in rx {
                    let _ = writer_cache.ensure(&path, b.len() as u64, |f| {
                        use std::io::Write;
                        f.write_all(&b)
                            .map_err(|e| RemoteError::io(format!("writing {}", path.display()), e))
                    });
                }
            });
        Shared {
            fetch,
            cache,
            dir,
            shards,
            order,
            prefetch,
            inflight: Mutex::default(),
            _held: held,
            writes: Mutex::new(tx),
        }
    }

    fn info(&self, no: u32) -> Result<(u64, u32), RemoteError> {
        self.shards
            .get(&no)
            .copied()
            .ok_or_else(|| RemoteError::Manifest {
                url: self.fetch.loc.url.clone(),
                object: super::published::PUBLISHED,
                why: format!("it does not list {}", shard_name(no)),
            })
    }

    /// The cache file of whole shard `no`.
    fn shard_path(&self, no: u32) -> PathBuf {
        self.dir.join(shard_name(no))
    }

    /// Whether whole shards this big are fetched (a few must fit the cap).
    fn whole_fits(&self, size: u64) -> bool {
        size.saturating_mul(4) <= self.cache.cap()
    }

    /// Downloads whole shard `no` into the cache unless it is there.
    pub fn ensure_shard(&self, no: u32) -> Result<(), RemoteError> {
        let (size, crc) = self.info(no)?;
        let name = shard_name(no);
        self.cache.ensure(&self.shard_path(no), size, |file| {
            self.fetch.download(&name, size, crc, file)
        })
    }

    /// Starts fetching the shards after `no` (in manifest order) that are
    /// neither cached nor being fetched.
    fn prefetch_after(self: &Arc<Self>, no: u32) {
        let Some(pos) = self.order.iter().position(|&n| n == no) else {
            return;
        };
        for &next in self.order.iter().skip(pos + 1).take(self.prefetch) {
            let Ok((size, _)) = self.info(next) else {
                continue;
            };
            if !self.whole_fits(size) || size == 0 {
                continue;
            }
            if std::fs::metadata(self.shard_path(next)).is_ok_and(|m| m.len() == size) {
                continue;
            }
            if !self
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(next)
            {
                continue;
            }
            let shared = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("tenstore-prefetch".into())
                .spawn(move || {
                    // A failure here is met again, and reported, by the
                    // reader when it gets to this shard.
                    let _ = shared.ensure_shard(next);
                    shared
                        .inflight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&next);
                });
            if spawned.is_err() {
                self.inflight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&next);
            }
        }
    }
}

/// Makes a [`ReaderSource`] per reader.
pub(crate) struct Factory(pub Arc<Shared>);

impl SourceFactory for Factory {
    fn source(&self) -> Arc<dyn ShardSource> {
        Arc::new(ReaderSource {
            shared: Arc::clone(&self.0),
            shards: Mutex::default(),
            records: Mutex::default(),
            seq: Mutex::default(),
        })
    }
}

#[derive(Default)]
struct Seq {
    last: Option<(u32, u64)>,
    streak: u32,
}

/// One reader's view: the shards it has mapped and the records it has
/// fetched, kept (and the shards locked against eviction) until the
/// reader is dropped, since its samples borrow them. A reader maps whole
/// shards up to half the cache's cap; past that it reads records by
/// ranged GETs (kept in memory), so a long pass never starves other
/// readers of cache room.
pub(crate) struct ReaderSource {
    shared: Arc<Shared>,
    shards: Mutex<HashMap<u32, Box<Pinned>>>,
    records: Mutex<HashMap<(u32, u64, u64), Mmap>>,
    seq: Mutex<Seq>,
}

/// Extends a borrow of bytes held by a [`ReaderSource`] to the source's
/// own lifetime.
///
/// # Safety
/// `bytes` must point into a memory map owned by a value in
/// `ReaderSource::shards` or `ReaderSource::records`, which are only ever
/// inserted into, never removed from or replaced, until the source drops.
unsafe fn extend<'a>(bytes: &[u8]) -> &'a [u8] {
    // SAFETY: by the contract above the map, whose pages do not move when
    // the map value is moved inside its hash table, lives as long as the
    // source the returned borrow is tied to, and is read-only.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) }
}

fn store_err(e: RemoteError) -> StoreError {
    StoreError::Remote(Box::new(e))
}

impl ReaderSource {
    /// Whether this read continues a front-to-back pass.
    fn sequential(&self, no: u32, offset: u64, len: u64) -> bool {
        let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        let order = &self.shared.order;
        let next_of = |n: u32| {
            let pos = order.iter().position(|&m| m == n)?;
            order.get(pos + 1).copied()
        };
        let follows = match seq.last {
            Some((n, end)) if n == no => offset >= end && offset - end <= SEQ_GAP,
            // The first records of the next shard in write order.
            Some((n, _)) => next_of(n) == Some(no) && offset <= SEQ_GAP,
            None => false,
        };
        seq.streak = if follows { seq.streak + 1 } else { 0 };
        seq.last = Some((no, offset + len));
        seq.streak >= SEQ_STREAK
    }

    fn slice_of<'a>(&'a self, map: &Mmap, no: u32, offset: u64, len: u64) -> Result<&'a [u8]> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(usize::try_from(len).ok()?));
        match (start, end) {
            (Some(s), Some(e)) if e <= map.len() => {
                // SAFETY: `map` is a value of `self.shards` or
                // `self.records` (see `extend`).
                Ok(unsafe { extend(&map[s..e]) })
            }
            _ => Err(StoreError::Corrupt {
                key: format!("record at {}:{offset}", shard_name(no)),
                what: "its record lies outside its shard".into(),
            }),
        }
    }

    fn pinned_shard(&self, no: u32, offset: u64, len: u64) -> Result<Option<&[u8]>> {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        match shards.get(&no) {
            Some(p) => self.slice_of(&p.map, no, offset, len).map(Some),
            None => Ok(None),
        }
    }

    /// Maps the cached whole shard `no` if it is there.
    fn pin_shard(&self, no: u32, size: u64) -> Result<bool> {
        if size == 0 || !self.may_pin(size) {
            return Ok(false);
        }
        let Some(p) = pin(&self.shared.shard_path(no), size).map_err(store_err)? else {
            return Ok(false);
        };
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(no)
            .or_insert_with(|| Box::new(p));
        Ok(true)
    }

    /// Whether this reader may keep `size` more bytes of shards mapped:
    /// at most half the cache, so other readers and processes keep room.
    fn may_pin(&self, size: u64) -> bool {
        let pinned: u64 = (self.shards.lock().unwrap_or_else(PoisonError::into_inner))
            .values()
            .map(|p| p.map.len() as u64)
            .sum();
        pinned + size <= self.shared.cache.cap() / 2
    }

    fn range(&self, no: u32, offset: u64, len: u64, crc: u32) -> Result<&[u8]> {
        let key = (no, offset, len);
        if let Some(m) = self
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return self.slice_of(m, no, 0, len);
        }
        let name = shard_name(no);
        let path = self
            .shared
            .dir
            .join(RANGES)
            .join(format!("{name}.{offset}.{len}"));
        let bytes = match read_checked(&path, len, crc) {
            Some(b) => b,
            None => {
                let b = self
                    .shared
                    .fetch
                    .get_range(&name, offset, len, crc)
                    .map_err(store_err)?;
                // Cached by the writer thread, off this reader's path.
                let _ = (self.shared.writes.lock())
                    .unwrap_or_else(PoisonError::into_inner)
                    .send((path, b.clone()));
                b.to_vec()
            }
        };
        // Page-aligned, so the record's tensors keep the alignment they
        // have in the shard.
        let mut anon = MmapMut::map_anon(bytes.len().max(1))
            .map_err(|e| StoreError::io("allocating a record buffer", e))?;
        anon[..bytes.len()].copy_from_slice(&bytes);
        let map = anon
            .make_read_only()
            .map_err(|e| StoreError::io("sealing a record buffer", e))?;
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let m = records.entry(key).or_insert(map);
        self.slice_of(m, no, 0, len)
    }
}

/// The bytes of a cached range, if it is there and still matches.
fn read_checked(path: &Path, len: u64, crc: u32) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    (bytes.len() as u64 == len && crc32c::crc32c(&bytes) == crc).then(|| {
        let _ =
            std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        bytes
    })
}

impl ShardSource for ReaderSource {
    fn shard_len(&self, no: u32) -> Result<u64> {
        Ok(self.shared.info(no).map_err(store_err)?.0)
    }

    fn record(&self, no: u32, offset: u64, len: u64, crc: u32) -> Result<&[u8]> {
        if let Some(b) = self.pinned_shard(no, offset, len)? {
            return Ok(b);
        }
        let (size, _) = self.shared.info(no).map_err(store_err)?;
        if self.pin_shard(no, size)? {
            if self.sequential(no, offset, len) {
                self.shared.prefetch_after(no);
            }
            return self
                .pinned_shard(no, offset, len)
                .map(Option::unwrap_or_default);
        }
        if self.sequential(no, offset, len) && self.shared.whole_fits(size) && self.may_pin(size) {
            self.shared.prefetch_after(no);
            match self.shared.ensure_shard(no) {
                Ok(()) => {
                    if self.pin_shard(no, size)? {
                        return self
                            .pinned_shard(no, offset, len)
                            .map(Option::unwrap_or_default);
                    }
                }
                // No room for the whole shard: read its records one by one.
                Err(RemoteError::CacheFull { .. }) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        self.range(no, offset, len, crc)
    }
}
