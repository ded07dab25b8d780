//! Shard bytes of a remote store for its readers: whole shards mapped from
//! the cache (fetched ahead of a sequential reader, several in parallel),
//! single records fetched by ranged GETs for random lookups.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Bytes of ranged records one reader may hold (see [`Arena`]).
    pub reader_memory: u64,
    /// Shards being prefetched.
    inflight: Mutex<HashSet<u32>>,
    /// Keeps the store's metadata in the cache while it is open.
    _held: super::cache::Locked,
    /// Ranged records to write to the cache, off the reader's path.
    writes: Mutex<std::sync::mpsc::SyncSender<(PathBuf, bytes::Bytes)>>,
    /// Bytes of ranged records queued for the writer thread.
    queued: Arc<AtomicU64>,
}

/// At most this many bytes of ranged records wait to be written to the
/// cache; past it a record is not cached (the queue must not grow while
/// the writer waits on the cache lock or a slow disk).
const WRITE_QUEUE_BYTES: u64 = 64 << 20;

/// At most this many ranged records wait to be written to the cache.
const WRITE_QUEUE_RECORDS: usize = 1024;

impl Shared {
    pub fn new(
        fetch: Fetcher,
        cache: Cache,
        dir: PathBuf,
        shards: HashMap<u32, (u64, u32)>,
        order: Vec<u32>,
        options: &super::RemoteOptions,
        held: super::cache::Locked,
    ) -> Shared {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<(PathBuf, bytes::Bytes)>(WRITE_QUEUE_RECORDS);
        let queued = Arc::new(AtomicU64::new(0));
        let writer_queued = queued.clone();
        let writer_cache = cache.clone();
        // Ends when the store (the sender) is dropped. Caching a record is
        // best effort: a full cache still served it.
        let _ = std::thread::Builder::new()
            .name("tenstore-cache-writer".into())
            .spawn(move || {
                for (path, b) in rx {
                    let _ = writer_cache.ensure(&path, b.len() as u64, false, |f| {
                        use std::io::Write;
                        f.write_all(&b)
                            .map_err(|e| RemoteError::io(format!("writing {}", path.display()), e))
                    });
                    writer_queued.fetch_sub(b.len() as u64, Ordering::Relaxed);
                }
            });
        Shared {
            fetch,
            cache,
            dir,
            shards,
            order,
            prefetch: options.prefetch,
            reader_memory: options.reader_memory,
            inflight: Mutex::default(),
            _held: held,
            writes: Mutex::new(tx),
            queued,
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
        self.cache.ensure(&self.shard_path(no), size, true, |file| {
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
            pins_full: AtomicBool::new(false),
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
/// ranged GETs into its [`Arena`] (in memory, bounded by
/// `Shared::reader_memory`), so a long pass never starves other readers
/// of cache room.
pub(crate) struct ReaderSource {
    shared: Arc<Shared>,
    shards: Mutex<HashMap<u32, Box<Pinned>>>,
    records: Mutex<Arena>,
    seq: Mutex<Seq>,
    /// A pass wanted a whole shard past this reader's share of the cache:
    /// a fresh reader would map it instead of reading record by record.
    pins_full: AtomicBool,
}

/// Size of the arena's chunks (a record larger than this gets a chunk of
/// its own size).
const CHUNK: usize = 16 << 20;

/// A ranged record is placed at an arena address congruent to its shard
/// offset modulo this. Chunks start on page boundaries, so every tensor
/// keeps the alignment it has within its shard up to 64 bytes: payloads
/// are 16-byte aligned in shards (`ShardReader`'s zero-copy views need
/// no more), and 64 covers any cache-line alignment a writer chose, while
/// wasting at most 63 bytes per record (page-aligning would waste up to
/// 4 KiB per small record).
const ALIGN: u64 = 64;

/// One page-aligned anonymous chunk of an [`Arena`].
struct Chunk {
    /// Owns the pages. Never read or written through again after `base`
    /// is taken (every access goes through `base`), and never dropped
    /// before its reader source.
    _map: MmapMut,
    /// The chunk's first byte.
    base: *mut u8,
    /// The chunk's length.
    len: usize,
    /// Bytes from `base` on that are handed out; the rest is unwritten
    /// and unborrowed.
    used: usize,
}

// SAFETY: `base` points into the anonymous map `_map` owns, which is not
// tied to any thread; the chunk is only reached through the reader
// source's `Mutex<Arena>`, so moving it to another thread shares nothing
// unsynchronized.
unsafe impl Send for Chunk {}

/// The records a reader has fetched by ranged GETs, copied into larger
/// anonymous chunks (one map per record would exhaust the process's map
/// count after ~65,000 records). Append-only: a chunk is never removed,
/// and bytes below a chunk's `used` mark are never written again, so a
/// record's bytes stay valid and unchanged as long as the source lives.
#[derive(Default)]
struct Arena {
    chunks: Vec<Chunk>,
    /// Record `(shard, offset, len)` -> (chunk, start within it).
    records: HashMap<(u32, u64, u64), (usize, usize)>,
    /// Bytes taken in the chunks (records and their alignment padding).
    held: u64,
}

impl Arena {
    /// The bytes of record `key` if this arena holds them.
    ///
    /// # Safety
    /// The returned borrow must not outlive the arena (callers tie it to
    /// their `ReaderSource`, which owns the arena).
    unsafe fn get<'a>(&self, key: (u32, u64, u64)) -> Option<&'a [u8]> {
        let &(c, start) = self.records.get(&key)?;
        let chunk = &self.chunks[c];
        // SAFETY: `place` wrote `key.2` bytes at `start` of chunk `c`,
        // below its `used` mark, so they lie in the chunk's map, which
        // lives (its pages unmoved when the `Chunk` value moves in the
        // vector, chunks never removed) as long as the arena: the caller
        // keeps the borrow within that. Those bytes are never written
        // again, so no mutable access aliases the borrow.
        Some(unsafe { std::slice::from_raw_parts(chunk.base.add(start), key.2 as usize) })
    }

    /// Copies record `key` (`bytes`) into the arena unless that would
    /// make it hold more than `limit` bytes.
    ///
    /// # Safety
    /// As for [`get`](Self::get): the returned borrow must not outlive
    /// the arena.
    unsafe fn place<'a>(
        &mut self,
        key: (u32, u64, u64),
        bytes: &[u8],
        limit: u64,
    ) -> Result<&'a [u8], RemoteError> {
        // SAFETY: the caller keeps the borrow within the arena's life.
        if let Some(b) = unsafe { self.get(key) } {
            return Ok(b);
        }
        let len = bytes.len();
        let want = (key.1 % ALIGN) as usize;
        // Padding so that the start is congruent to `want` modulo ALIGN.
        let pad_at = |used: usize| (want + ALIGN as usize - used % ALIGN as usize) % ALIGN as usize;
        let fits = self.chunks.last().and_then(|c| {
            let start = c.used.checked_add(pad_at(c.used))?;
            (start.checked_add(len)? <= c.len).then_some(start)
        });
        let (pad, new_chunk) = match (fits, self.chunks.last()) {
            (Some(start), Some(c)) => (start - c.used, false),
            _ => (want, true),
        };
        let need = (pad + len) as u64;
        if self.held.saturating_add(need) > limit {
            return Err(RemoteError::ReaderFull {
                held: self.held,
                need,
                limit,
            });
        }
        if new_chunk {
            let size = CHUNK
                .min(usize::try_from(limit).unwrap_or(usize::MAX))
                .max(want + len)
                .max(1);
            let mut map = MmapMut::map_anon(size)
                .map_err(|e| RemoteError::io("allocating a record buffer", e))?;
            let base = map.as_mut_ptr();
            self.chunks.push(Chunk {
                _map: map,
                base,
                len: size,
                used: 0,
            });
        }
        let c = self.chunks.len() - 1;
        let chunk = &mut self.chunks[c];
        let start = chunk.used + pad;
        // SAFETY: `start + len <= chunk.len` (checked above for the last
        // chunk; a new chunk has room for `want + len`), so the bytes lie
        // in the chunk's writable map; they are at or above its `used`
        // mark, so no borrow handed out covers them; `bytes` is another
        // allocation, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), chunk.base.add(start), len) };
        chunk.used = start + len;
        self.held += need;
        self.records.insert(key, (c, start));
        // SAFETY: the caller keeps the borrow within the arena's life.
        Ok(unsafe { self.get(key) }.unwrap_or_default())
    }
}

/// Extends a borrow of bytes of a shard mapped by a [`ReaderSource`] to
/// the source's own lifetime.
///
/// # Safety
/// `bytes` must point into a memory map owned by a value in
/// `ReaderSource::shards`, which is only ever inserted into, never removed
/// from or replaced, until the source drops.
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
                // SAFETY: `map` is a value of `self.shards` (see
                // `extend`).
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

    /// Bytes of ranged records this reader holds.
    fn held(&self) -> u64 {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
    }

    fn range(&self, no: u32, offset: u64, len: u64, crc: u32) -> Result<&[u8]> {
        let key = (no, offset, len);
        // SAFETY: the arena is `self.records`, owned by this source, and
        // the borrow returned is tied to `&self`.
        if let Some(b) = unsafe {
            self.records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
        } {
            return Ok(b);
        }
        let limit = self.shared.reader_memory;
        let held = self.held();
        if held.saturating_add(len) > limit {
            // Refused before anything is fetched.
            return Err(store_err(RemoteError::ReaderFull {
                held,
                need: len,
                limit,
            }));
        }
        let name = shard_name(no);
        let path = self
            .shared
            .dir
            .join(RANGES)
            .join(format!("{name}.{offset}.{len}"));
        let bytes = match read_checked(&path, len, crc) {
            Some(b) => bytes::Bytes::from(b),
            None => {
                let b = self
                    .shared
                    .fetch
                    .get_range(&name, offset, len, crc)
                    .map_err(store_err)?;
                // Cached by the writer thread, off this reader's path; not
                // cached when the queue is full (best effort: it was served).
                let queued = &self.shared.queued;
                let size = b.len() as u64;
                if queued.fetch_add(size, Ordering::Relaxed) + size <= WRITE_QUEUE_BYTES {
                    let sent = (self.shared.writes.lock())
                        .unwrap_or_else(PoisonError::into_inner)
                        .try_send((path, b.clone()));
                    if sent.is_err() {
                        queued.fetch_sub(size, Ordering::Relaxed);
                    }
                } else {
                    queued.fetch_sub(size, Ordering::Relaxed);
                }
                b
            }
        };
        // SAFETY: as above, the borrow returned is tied to `&self`, which
        // owns the arena.
        unsafe {
            self.records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .place(key, &bytes, limit)
        }
        .map_err(store_err)
    }
}

/// The bytes of a cached range, if it is there and still matches. A file
/// there that does not match (its bytes lost to a power loss) is removed,
/// so that the record fetched instead replaces it: the cache would keep a
/// file of the right length. Removed outside the cache lock, which makes
/// the running total overcount, never undercount.
fn read_checked(path: &Path, len: u64, crc: u32) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() as u64 != len || crc32c::crc32c(&bytes) != crc {
        let _ = std::fs::remove_file(path);
        return None;
    }
    let _ = std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    Some(bytes)
}

impl ShardSource for ReaderSource {
    fn held_bytes(&self) -> u64 {
        self.held()
    }

    fn needs_renewal(&self) -> bool {
        self.held() > self.shared.reader_memory / 2 || self.pins_full.load(Ordering::Relaxed)
    }

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
        let whole = self.sequential(no, offset, len) && self.shared.whole_fits(size);
        if whole && !self.may_pin(size) {
            self.pins_full.store(true, Ordering::Relaxed);
        } else if whole {
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
