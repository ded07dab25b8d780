//! The local cache: a directory shared by every process that reads remote
//! stores, whose files never add up to more than its cap.
//!
//! Layout: everything lives in `DIR/v2/` (ROOT below) of the cache
//! directory DIR the user names, so that versions that kept no running
//! total (files directly in DIR) never share this accounting: each keeps
//! its own files and cap. ROOT's own `.inuse` is locked (shared) by every
//! process with the cache open, which keeps those versions from evicting
//! the lock file.
//!
//! `ROOT/.lock` (taken while space is counted and reserved; it
//! holds the running total of the bytes the cache's files take, see
//! [`Cache::reserve`]);
//! `ROOT/ID/` per published store (ID: the URL's hash and the published
//! manifest's checksum) laid out as a shard store: its manifest, sidecars,
//! key table and `tenstore.json` (fetched at open, never evicted), and
//! whole shards `NNNNNN.ten` as they are fetched; `ROOT/ID/.ranges/`,
//! single records fetched by ranged GETs; `ROOT/ID/.tmp/`, downloads in
//! progress; `ROOT/ID/.inuse`, locked (shared) by every process that has
//! the store open: the metadata of stores nobody has open is evictable
//! too.
//!
//! Every entry is written to a temporary file, reserved at its full size
//! under the cache lock (evicting least recently used entries first), and
//! renamed into place only after its checksum matched: a process killed
//! mid-download leaves only a temporary file, which the next reservation
//! reclaims. A download holds an exclusive lock on its temporary file, so
//! other processes wanting the same object wait for it and use its result.
//! Readers that map a shard hold a shared lock on it; eviction skips
//! locked files, so no mapped shard is ever deleted. Every entry is a copy
//! of a published object: evicting one never loses data.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use memmap2::Mmap;

use super::error::RemoteError;

/// Disk block size entries are rounded up to when counted.
const BLOCK: u64 = 4096;

/// The directory of temporary files within a store's cache directory.
pub(crate) const TMP: &str = ".tmp";

/// The directory of ranged records within a store's cache directory.
pub(crate) const RANGES: &str = ".ranges";

/// The file in a store's cache directory that every process with the
/// store open holds a shared lock on: the metadata of a store nobody has
/// open may be evicted.
pub(crate) const IN_USE: &str = ".inuse";

/// Bytes a file of `len` bytes is counted as.
pub fn disk_size(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

/// The directory of this cache layout in the directory the user names.
pub(crate) const LAYOUT: &str = "v2";

/// The lock file's name in the cache root.
const LOCK: &str = ".lock";

/// Length of the state record kept in the lock file (see [`State`]): room
/// for the magic, a 36-character boot id and any `u64` total.
const STATE_LEN: usize = 128;

/// First word of the state record.
const STATE_MAGIC: &str = "tenstore-cache-total-v1";

/// The cache: its root and cap.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    /// `DIR/v2`.
    root: PathBuf,
    cap: u64,
    /// A shared lock on `ROOT/.inuse` while a handle lives: versions that
    /// keep their files in DIR see ROOT as a store directory in use, and
    /// evict nothing in it.
    _open: Arc<Locked>,
    /// Walks of the whole cache this handle made (recounts).
    walks: Arc<AtomicU64>,
}

/// This boot's id (Linux), or an empty string: a running total written
/// before a reboot is not trusted (a power loss may have kept a file's new
/// length but not the total counting it).
fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

/// The cache lock, held; it reads and writes the running total kept in
/// the lock file.
///
/// The total is the bytes the cache's files take as counted against the
/// cap, or more, never less: every reservation adds its size to it before
/// the file grows, under this lock, and evictions subtract what they
/// removed. Files only shrink or disappear outside the lock (a reset
/// download, stale metadata removed at open), which makes it overcount,
/// never undercount. A process killed between updating the total and
/// growing the file leaves an overcount too. An overcount costs at most a
/// recount: a reservation that would pass the cap counts the files again
/// before evicting. A total that is missing, unreadable or written in
/// another boot is not trusted: it is counted again.
struct State {
    file: Locked,
    path: PathBuf,
}

impl State {
    /// The running total, if it is there and trusted.
    fn total(&self) -> Option<u64> {
        let mut buf = [0u8; STATE_LEN];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        parse_total(std::str::from_utf8(&buf[..n]).ok()?, boot_id())
    }

    /// Cuts the lock file back to its state record's length (it is
    /// counted at its length: garbage written past the record would take
    /// room forever). Called when the cache is counted again.
    fn trim(&self) -> Result<(), RemoteError> {
        let len = (self.file.metadata())
            .map_err(io(format!("reading {}", self.path.display())))?
            .len();
        if len > STATE_LEN as u64 {
            self.file
                .set_len(STATE_LEN as u64)
                .map_err(io(format!("truncating {}", self.path.display())))?;
        }
        Ok(())
    }

    /// Records `total` as the running total (one fixed-length write, so
    /// the lock file's length never changes once written).
    fn set_total(&self, total: u64) -> Result<(), RemoteError> {
        let mut line = format!("{STATE_MAGIC} boot={} total={total}", boot_id());
        if line.len() >= STATE_LEN {
            // A boot id longer than Linux's: kept out, so never trusted.
            line = format!("{STATE_MAGIC} boot=? total={total}");
        }
        let mut buf = [b' '; STATE_LEN];
        buf[..line.len()].copy_from_slice(line.as_bytes());
        buf[STATE_LEN - 1] = b'\n';
        self.file
            .write_all_at(&buf, 0)
            .map_err(io(format!("writing {}", self.path.display())))
    }
}

/// A file this process holds a `flock` lock on, released explicitly when
/// dropped.
///
/// Closing a descriptor releases its lock only when it is the last one
/// open on the file description: a child forked (Python's DataLoader
/// workers) while the lock is held keeps a copy and would hold the lock
/// for as long as it lives. An explicit unlock releases it for every copy.
#[derive(Debug)]
pub(crate) struct Locked(File);

impl std::ops::Deref for Locked {
    type Target = File;
    fn deref(&self) -> &File {
        &self.0
    }
}

impl std::ops::DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut File {
        &mut self.0
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The total a state record gives, if it was written in boot `boot`: never
/// when the boot id is unknown (empty), since then a record written before
/// a reboot could not be told from one written since.
fn parse_total(text: &str, boot: &str) -> Option<u64> {
    if boot.is_empty() {
        return None;
    }
    let mut words = text.split_ascii_whitespace();
    if words.next()? != STATE_MAGIC {
        return None;
    }
    if words.next()?.strip_prefix("boot=")? != boot {
        return None;
    }
    words.next()?.strip_prefix("total=")?.parse().ok()
}

/// What a file in the cache is, for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A shard or ranged record: evictable.
    Data,
    /// A download in progress (locked) or abandoned (not locked).
    Temp,
    /// Store metadata and lock files: kept.
    Meta,
}

struct Found {
    path: PathBuf,
    disk: u64,
    used: SystemTime,
    kind: Kind,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> RemoteError {
    move |e| RemoteError::io(context, e)
}

/// Whether a process has the store cached in `dir` open.
fn in_use(dir: &Path) -> bool {
    match File::open(dir.join(IN_USE)) {
        Ok(f) => match f.try_lock() {
            Ok(()) => {
                drop(Locked(f));
                false
            }
            Err(_) => true,
        },
        Err(_) => false,
    }
}

/// Marks the store cached in `dir` as open for as long as the returned
/// file lives (a shared lock on its [`IN_USE`] file).
pub(crate) fn hold(dir: &Path) -> Result<Locked, RemoteError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(IN_USE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    f.lock_shared()
        .map_err(io(format!("locking {}", path.display())))?;
    Ok(Locked(f))
}

/// Whether `file` is still the file at `path` (not unlinked or replaced
/// since it was opened).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Cache {
    /// The cache in directory `dir` (its files in `dir/v2`, made if
    /// missing), holding at most `cap` bytes.
    pub fn open(dir: &Path, cap: u64) -> Result<Cache, RemoteError> {
        if dir.as_os_str().is_empty() {
            return Err(RemoteError::io(
                "the cache directory is an empty path: name a directory (--cache DIR)",
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        let root = dir.join(LAYOUT);
        fs::create_dir_all(&root).map_err(io(format!("creating cache {}", root.display())))?;
        let open = hold(&root)?;
        Ok(Cache {
            root,
            cap,
            _open: Arc::new(open),
            walks: Arc::default(),
        })
    }

    /// The directory the cache's files are in (`DIR/v2`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many times this handle counted the whole cache.
    #[cfg(test)]
    fn walks(&self) -> u64 {
        self.walks.load(Ordering::Relaxed)
    }

    /// The cap in bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes the cache's files take, as counted against the cap (counted
    /// under the cache lock, so no entry is half renamed; the running
    /// total is set to the count).
    pub fn usage(&self) -> Result<u64, RemoteError> {
        let lock = self.lock()?;
        lock.trim()?;
        let total = self.walk()?.iter().map(|f| f.disk).sum();
        lock.set_total(total)?;
        Ok(total)
    }

    /// Takes the cache lock: held while space is counted and reserved,
    /// entries evicted, and downloads renamed into place, so every count
    /// sees each file once.
    fn lock(&self) -> Result<State, RemoteError> {
        let path = self.root.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        file.lock()
            .map_err(io(format!("locking {}", path.display())))?;
        Ok(State {
            file: Locked(file),
            path,
        })
    }

    /// Every file in the cache (the cache lock held).
    fn walk(&self) -> Result<Vec<Found>, RemoteError> {
        self.walks.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        self.walk_dir(&self.root, 0, false, &mut out)?;
        Ok(out)
    }

    fn walk_dir(
        &self,
        dir: &Path,
        depth: u32,
        unused: bool,
        out: &mut Vec<Found>,
    ) -> Result<(), RemoteError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(RemoteError::io(format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            let path = entry.path();
            if meta.is_dir() {
                if depth < 2 {
                    // A store directory nobody has open (probed without
                    // keeping the lock: a process opening it meanwhile
                    // fetches whatever metadata is then missing again).
                    let unused = unused || (depth == 0 && !in_use(&path));
                    self.walk_dir(&path, depth + 1, unused, out)?;
                }
                continue;
            }
            let parent = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            let kind = match depth {
                2 if parent == TMP => Kind::Temp,
                2 if parent == RANGES => Kind::Data,
                1 if name.ends_with(".ten") => Kind::Data,
                1 if unused && name != IN_USE => Kind::Data,
                _ => Kind::Meta,
            };
            // The lock file is counted at the length its state record
            // gives it, whether or not that is written yet.
            let len = if depth == 0 && name == LOCK {
                meta.len().max(STATE_LEN as u64)
            } else {
                meta.len()
            };
            out.push(Found {
                path,
                disk: disk_size(len),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                kind,
            });
        }
        Ok(())
    }

    /// Makes room for `size` more bytes and sets `temp` (an open temporary
    /// file this process holds locked) to that length, under the cache
    /// lock.
    ///
    /// When the running total (see [`State`]) leaves room, that is all:
    /// the total grows by the reservation first, then the file. Otherwise
    /// (or when the total is not trusted) the cache is counted again, and
    /// least recently used entries that no process holds are evicted until
    /// the reservation fits with [`headroom`](Self::headroom) to spare (or
    /// at least fits), so that a full cache is not walked for every
    /// download.
    fn reserve(&self, temp: &File, size: u64) -> Result<(), RemoteError> {
        let lock = self.lock()?;
        let need = disk_size(size);
        let mut total = match lock.total() {
            Some(t) if t.saturating_add(need) <= self.cap => t,
            _ => {
                lock.trim()?;
                self.make_room(need)?
            }
        };
        if total.saturating_add(need) > self.cap {
            // The cache being full is the error to report; a total not
            // recorded is only counted again next time.
            let _ = lock.set_total(total);
            return Err(RemoteError::CacheFull {
                dir: self.root.clone(),
                cap: self.cap,
                need,
                pinned: total,
            });
        }
        total += need;
        // Counted before the file grows: a process killed between the two
        // leaves an overcount, never an undercount.
        lock.set_total(total)?;
        if let Err(e) = temp.set_len(size) {
            let _ = lock.set_total(total - need);
            return Err(RemoteError::io(
                format!("reserving {size} bytes in the cache"),
                e,
            ));
        }
        Ok(())
    }

    /// Spare room an eviction leaves beyond the reservation that needed
    /// it: a 16th of the cap, at most 256 MiB.
    fn headroom(&self) -> u64 {
        (self.cap / 16).min(256 << 20)
    }

    /// Counts the cache (the lock held) and evicts least recently used
    /// entries no process holds until `need` more bytes fit with
    /// [`headroom`](Self::headroom) to spare, or as close to it as they
    /// can; returns the bytes left.
    fn make_room(&self, need: u64) -> Result<u64, RemoteError> {
        let found = self.walk()?;
        let mut total: u64 = found.iter().map(|f| f.disk).sum();
        let goal = self.cap.saturating_sub(self.headroom());
        if total.saturating_add(need) <= goal {
            return Ok(total);
        }
        let mut victims: Vec<&Found> = found.iter().filter(|f| f.kind != Kind::Meta).collect();
        victims.sort_by_key(|f| f.used);
        for v in victims {
            if total.saturating_add(need) <= goal {
                break;
            }
            // Locked: mapped by a reader, or being downloaded.
            let Ok(file) = File::open(&v.path) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue;
            }
            let file = Locked(file);
            if !same_file(&file, &v.path) {
                continue;
            }
            if fs::remove_file(&v.path).is_ok() {
                total = total.saturating_sub(v.disk);
            }
        }
        Ok(total)
    }

    /// Makes sure `entry` holds an object of `size` bytes: if it is not
    /// there, takes the download lock (waiting for another process's
    /// download of it), reserves room and runs `fill`, which writes the
    /// bytes to the file it is handed and checks them; renames the file
    /// into place only when `fill` succeeds. With `durable`, the bytes are
    /// synced before the rename: for entries later trusted by their size
    /// alone (whole shards); entries checked by their checksum whenever
    /// they are read (metadata, ranged records) need not wait for the disk.
    pub fn ensure(
        &self,
        entry: &Path,
        size: u64,
        durable: bool,
        fill: impl FnOnce(&mut File) -> Result<(), RemoteError>,
    ) -> Result<(), RemoteError> {
        if fs::metadata(entry).is_ok_and(|m| m.len() == size) {
            return Ok(());
        }
        let dir = entry.parent().unwrap_or(&self.root);
        let store_dir = if dir.ends_with(RANGES) {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        let tmp_dir = store_dir.join(TMP);
        fs::create_dir_all(&tmp_dir).map_err(io(format!("creating {}", tmp_dir.display())))?;
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp_path = tmp_dir.join(&name);
        let mut temp = loop {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&temp_path)
                .map_err(io(format!("opening {}", temp_path.display())))?;
            f.lock()
                .map_err(io(format!("locking {}", temp_path.display())))?;
            // Unlocked on every way out of this function.
            let f = Locked(f);
            if same_file(&f, &temp_path) {
                break f;
            }
        };
        // Another process may have finished it while this one waited.
        if fs::metadata(entry).is_ok_and(|m| m.len() == size) {
            return Ok(());
        }
        let reset = |f: &File| f.set_len(0);
        reset(&temp).map_err(io(format!("truncating {}", temp_path.display())))?;
        self.reserve(&temp, size)?;
        if let Err(e) = fill(&mut temp) {
            let _ = reset(&temp);
            return Err(e);
        }
        // Synced before the rename when durable: after a power loss an
        // entry that is in place holds its checked bytes, never a hole the
        // rename outran (a cached whole shard is later trusted by its size).
        let synced = temp
            .flush()
            .and_then(|()| if durable { temp.sync_data() } else { Ok(()) });
        if let Err(e) = synced {
            let _ = reset(&temp);
            return Err(RemoteError::io(
                format!("writing {}", temp_path.display()),
                e,
            ));
        }
        let _lock = self.lock()?;
        fs::rename(&temp_path, entry)
            .map_err(io(format!("moving {} into the cache", temp_path.display())))?;
        Ok(())
    }
}

/// A cache entry mapped by a reader: the shared lock held on the file
/// keeps eviction away from it while the map lives.
pub(crate) struct Pinned {
    /// The entry's bytes (dropped before the lock is released).
    pub map: Mmap,
    /// Holds the shared lock.
    _file: Locked,
}

/// Maps the entry at `path` holding a shared lock, if it is there with
/// `size` bytes; marks it used now (for LRU eviction).
pub(crate) fn pin(path: &Path, size: u64) -> Result<Option<Pinned>, RemoteError> {
    loop {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RemoteError::io(format!("opening {}", path.display()), e)),
        };
        file.lock_shared()
            .map_err(io(format!("locking {}", path.display())))?;
        let file = Locked(file);
        if !same_file(&file, path) {
            // Evicted (or replaced) between the open and the lock.
            continue;
        }
        let len = file
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?
            .len();
        if len != size {
            return Ok(None);
        }
        let _ = file.set_modified(SystemTime::now());
        // SAFETY: cache entries are immutable once renamed into place: they
        // are written only as temporary files, and removed (unlinked, never
        // truncated or rewritten) only by eviction, which skips files with
        // a lock held, as this one is for as long as the map lives (both
        // are kept together in `Pinned`). The cache directory belongs to
        // tenstore: files changed there by anything else break this, as for
        // a store's own files (crate docs, "Memory maps").
        let map =
            unsafe { Mmap::map(&*file) }.map_err(io(format!("mapping {}", path.display())))?;
        return Ok(Some(Pinned { map, _file: file }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Puts `bytes` in the cache as `name` of store directory `st`.
    fn put(cache: &Cache, st: &str, name: &str, bytes: &[u8]) -> Result<(), RemoteError> {
        let entry = cache.root.join(st).join(name);
        cache.ensure(&entry, bytes.len() as u64, false, |f| {
            f.write_all(bytes).map_err(|e| RemoteError::io("test", e))
        })
    }

    /// (bytes the files take, the running total), under the cache lock
    /// (counted by a handle of its own, so `cache.walks()` is unchanged).
    fn counted(cache: &Cache) -> (u64, Option<u64>) {
        let cache = Cache::open(cache.root.parent().unwrap(), cache.cap).unwrap();
        let lock = cache.lock().unwrap();
        let disk = cache.walk().unwrap().iter().map(|f| f.disk).sum();
        (disk, lock.total())
    }

    /// Whether a fresh open of `path` can take an exclusive lock (retried
    /// a while: another handle's release is not awaited by a clock).
    fn lockable(path: &Path) -> bool {
        (0..200).any(|_| {
            let ok = File::open(path).is_ok_and(|f| f.try_lock().is_ok());
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            ok
        })
    }

    /// A descriptor duplicated while a lock is held (as a forked child
    /// inherits it) must not keep the lock once the holder lets it go.
    #[test]
    fn locks_are_released_for_copies_of_the_descriptor_too() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path(), 1 << 20).unwrap();
        let mut copies = Vec::new();

        // The cache lock.
        let state = cache.lock().unwrap();
        copies.push(state.file.try_clone().unwrap());
        drop(state);
        assert!(lockable(&cache.root.join(LOCK)), "cache lock kept");

        // A download's temporary file, finished (the entry keeps its
        // inode) and failed.
        let entry = cache.root.join("s/0.ten");
        cache
            .ensure(&entry, 10, false, |f| {
                copies.push(f.try_clone().unwrap());
                f.write_all(&[1; 10]).map_err(|e| RemoteError::io("t", e))
            })
            .unwrap();
        assert!(lockable(&entry), "finished download's lock kept");
        let failed = cache.root.join("s/1.ten");
        let err = cache.ensure(&failed, 10, false, |f| {
            copies.push(f.try_clone().unwrap());
            Err(RemoteError::io("failed", std::io::Error::other("x")))
        });
        assert!(err.is_err());
        assert!(lockable(&cache.root.join("s").join(TMP).join("1.ten")));

        // A mapped entry.
        let pinned = pin(&entry, 10).unwrap().unwrap();
        copies.push(pinned._file.try_clone().unwrap());
        drop(pinned);
        assert!(lockable(&entry), "pin kept");

        // A store held open.
        let held = hold(&cache.root.join("s")).unwrap();
        copies.push(held.try_clone().unwrap());
        assert!(in_use(&cache.root.join("s")));
        drop(held);
        assert!(!in_use(&cache.root.join("s")), "store kept in use");
        assert_eq!(copies.len(), 5);
    }

    #[test]
    fn a_total_is_trusted_only_in_the_boot_that_wrote_it() {
        let rec = |boot: &str| format!("{STATE_MAGIC} boot={boot} total=5");
        assert_eq!(parse_total(&rec("b1"), "b1"), Some(5));
        assert_eq!(parse_total(&rec("b1"), "b2"), None);
        // No boot id to compare: a record from before a reboot would
        // look the same.
        assert_eq!(parse_total(&rec(""), ""), None);
    }

    /// Files of a version that kept them directly in the cache directory
    /// (and no running total) are neither counted nor evicted.
    #[test]
    fn files_of_the_older_layout_are_not_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("0123-old");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("000000.ten"), [7; 3 * 4096]).unwrap();
        fs::write(tmp.path().join(LOCK), "").unwrap();
        let cap = 4 * 4096;
        let cache = Cache::open(tmp.path(), cap).unwrap();
        // Fits only if the older files are not counted against the cap.
        put(&cache, "s", "0.ten", &[1; 2 * 4096]).unwrap();
        assert_eq!(cache.usage().unwrap(), 3 * 4096);
        assert_eq!(fs::read(old.join("000000.ten")).unwrap(), [7; 3 * 4096]);
        assert!(cache.root.join("s/0.ten").is_file());
    }

    #[test]
    fn garbage_past_the_state_record_is_cut_when_the_cache_is_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path(), 1 << 20).unwrap();
        fs::write(cache.root.join(LOCK), vec![b'x'; 10_000]).unwrap();
        put(&cache, "s", "0.ten", &[1; 100]).unwrap();
        assert_eq!(
            fs::metadata(cache.root.join(LOCK)).unwrap().len(),
            STATE_LEN as u64
        );
        assert_eq!(cache.usage().unwrap(), 2 * 4096);
    }

    #[test]
    fn an_empty_cache_directory_is_refused() {
        let e = Cache::open(Path::new(""), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("empty path"), "{e}");
    }

    #[test]
    fn a_total_of_any_size_is_recorded_and_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path(), u64::MAX).unwrap();
        let lock = cache.lock().unwrap();
        for total in [0, 9_999_999, 10_000_000, 10 << 30, u64::MAX] {
            lock.set_total(total).unwrap();
            assert_eq!(lock.total(), Some(total));
        }
    }

    /// Entries counted at 20 MB each (sparse files, so the test writes
    /// little): totals past 10^7 are trusted like small ones.
    #[test]
    fn reservations_with_room_in_a_large_cache_do_not_count_it() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path(), 1 << 30).unwrap();
        let size = 20_000_000;
        for i in 0..10 {
            let entry = cache.root.join("s").join(format!("{i}.ten"));
            // Reserving sets the file's length: a sparse entry.
            cache.ensure(&entry, size, false, |_| Ok(())).unwrap();
        }
        assert_eq!(cache.walks(), 1);
        let (disk, total) = counted(&cache);
        assert_eq!(total, Some(disk));
        assert!(disk > 10 * size, "{disk}");
    }

    #[test]
    fn a_reservation_with_room_does_not_count_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path(), 1 << 20).unwrap();
        for i in 0..20 {
            put(&cache, "s", &format!("{i}.ten"), &[i as u8; 5000]).unwrap();
        }
        // Only the first reservation, with no total yet, counted.
        assert_eq!(cache.walks(), 1);
        let (disk, total) = counted(&cache);
        assert_eq!(total, Some(disk));
        assert_eq!(disk, 20 * 8192 + 4096);
    }

    #[test]
    fn a_total_that_is_garbage_or_from_another_boot_is_counted_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = 64 * 4096;
        let cache = Cache::open(tmp.path(), cap).unwrap();
        for i in 0..15 {
            put(&cache, "s", &format!("{i}.ten"), &[1; 4096]).unwrap();
        }
        let forged = |text: &str| {
            let mut line = text.as_bytes().to_vec();
            line.resize(STATE_LEN, b' ');
            fs::write(cache.root.join(LOCK), line).unwrap();
        };
        let boot = boot_id();
        // A total of 0 trusted would let 60 more blocks in beside the 16.
        for bad in [
            format!("{STATE_MAGIC} boot=another-boot total=0"),
            "garbage".to_owned(),
            format!("{STATE_MAGIC} boot={boot} total=not-a-number"),
        ] {
            forged(&bad);
            let walks = cache.walks();
            put(&cache, "s", "big.ten", &[2; 60 * 4096]).unwrap();
            assert_eq!(cache.walks(), walks + 1, "{bad}");
            let (disk, total) = counted(&cache);
            assert!(disk <= cap, "{disk} > {cap} after {bad:?}");
            assert_eq!(total, Some(disk));
            fs::remove_file(cache.root.join("s/big.ten")).unwrap();
        }
    }

    #[test]
    fn a_full_cache_evicts_with_headroom_and_is_not_counted_at_every_reservation() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = 256 * 4096;
        let cache = Cache::open(tmp.path(), cap).unwrap();
        for i in 0..600 {
            put(&cache, "s", &format!("{i}.ten"), &[3; 4096]).unwrap();
            let (disk, _) = counted(&cache);
            assert!(disk <= cap);
        }
        // Each count evicts a 16th of the cap: about 16 blocks per count,
        // not one count per reservation.
        assert!(cache.walks() <= 600 / 8, "{} counts", cache.walks());
    }

    /// Several handles (as processes would) downloading at once, some
    /// failing and some dying mid-download (a panic drops the temporary
    /// file unreset and unlocked, as a kill -9 leaves it): bytes on disk
    /// never pass the cap and the running total never undercounts them.
    #[test]
    fn the_total_never_undercounts_and_the_cap_holds_across_handles() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = 40 * 4096;
        let root = tmp.path().to_owned();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checker = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let cache = Cache::open(&root, cap).unwrap();
                let mut samples = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (disk, total) = counted(&cache);
                    assert!(disk <= cap, "{disk} bytes on disk, over the cap {cap}");
                    if let Some(t) = total {
                        assert!(t >= disk, "the total {t} undercounts {disk} bytes");
                    }
                    samples += 1;
                }
                samples
            })
        };
        let workers: Vec<_> = (0..4u64)
            .map(|w| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let cache = Cache::open(&root, cap).unwrap();
                    let mut rng = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..150 {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let len = 1 + (rng % 20_000) as usize;
                        let name = format!("{}.ten", rng % 50);
                        let entry = root.join(LAYOUT).join(format!("st{}", rng % 2)).join(&name);
                        let fate = (rng >> 20) % 4;
                        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            cache.ensure(&entry, len as u64, false, |f| match fate {
                                0 => Err(RemoteError::io("failed", std::io::Error::other("x"))),
                                1 => panic!("killed mid-download"),
                                _ => f
                                    .write_all(&vec![fate as u8; len])
                                    .map_err(|e| RemoteError::io("test", e)),
                            })
                        }));
                        if let Ok(Err(e)) = got {
                            assert!(
                                matches!(e, RemoteError::CacheFull { .. } | RemoteError::Io { .. }),
                                "{e}"
                            );
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        assert!(checker.join().unwrap() > 0);
        let cache = Cache::open(&root, cap).unwrap();
        let (disk, total) = counted(&cache);
        assert!(disk <= cap);
        assert!(total.unwrap() >= disk);
        assert_eq!(cache.usage().unwrap(), disk);
    }
}
