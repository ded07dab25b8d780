//! The local cache: a directory shared by every process that reads remote
//! stores, whose files never add up to more than its cap.
//!
//! Layout: `ROOT/.lock` (taken while space is counted and reserved);
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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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

/// The cache: its root and cap.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    root: PathBuf,
    cap: u64,
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
        Ok(f) => f.try_lock().is_err(),
        Err(_) => false,
    }
}

/// Marks the store cached in `dir` as open for as long as the returned
/// file lives (a shared lock on its [`IN_USE`] file).
pub(crate) fn hold(dir: &Path) -> Result<File, RemoteError> {
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
    Ok(f)
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
    /// The cache in `root` (made if missing), holding at most `cap` bytes.
    pub fn open(root: &Path, cap: u64) -> Result<Cache, RemoteError> {
        fs::create_dir_all(root).map_err(io(format!("creating cache {}", root.display())))?;
        Ok(Cache {
            root: root.to_owned(),
            cap,
        })
    }

    /// The cap in bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes the cache's files take, as counted against the cap (under
    /// the cache lock, so no entry is half renamed).
    pub fn usage(&self) -> Result<u64, RemoteError> {
        let _lock = self.lock()?;
        Ok(self.walk()?.iter().map(|f| f.disk).sum())
    }

    /// Takes the cache lock: held while space is counted and reserved,
    /// entries evicted, and downloads renamed into place, so every count
    /// sees each file once.
    fn lock(&self) -> Result<File, RemoteError> {
        let lock_path = self.root.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        lock.lock()
            .map_err(io(format!("locking {}", lock_path.display())))?;
        Ok(lock)
    }

    fn walk(&self) -> Result<Vec<Found>, RemoteError> {
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
            out.push(Found {
                path,
                disk: disk_size(meta.len()),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                kind,
            });
        }
        Ok(())
    }

    /// Makes room for `size` more bytes and sets `temp` (an open temporary
    /// file this process holds locked) to that length, under the cache
    /// lock, evicting least recently used entries that no process holds.
    fn reserve(&self, temp: &File, size: u64) -> Result<(), RemoteError> {
        let _lock = self.lock()?;
        let found = self.walk()?;
        let mut total: u64 = found.iter().map(|f| f.disk).sum();
        let need = disk_size(size);
        if total + need > self.cap {
            let mut victims: Vec<&Found> = found.iter().filter(|f| f.kind != Kind::Meta).collect();
            victims.sort_by_key(|f| f.used);
            for v in victims {
                if total + need <= self.cap {
                    break;
                }
                // Locked: mapped by a reader, or being downloaded.
                let Ok(file) = File::open(&v.path) else {
                    continue;
                };
                if file.try_lock().is_err() || !same_file(&file, &v.path) {
                    continue;
                }
                if fs::remove_file(&v.path).is_ok() {
                    total = total.saturating_sub(v.disk);
                }
            }
        }
        if total + need > self.cap {
            return Err(RemoteError::CacheFull {
                dir: self.root.clone(),
                cap: self.cap,
                need,
                pinned: total,
            });
        }
        temp.set_len(size)
            .map_err(io(format!("reserving {size} bytes in the cache")))?;
        Ok(())
    }

    /// Makes sure `entry` holds an object of `size` bytes: if it is not
    /// there, takes the download lock (waiting for another process's
    /// download of it), reserves room and runs `fill`, which writes the
    /// bytes to the file it is handed and checks them; renames the file
    /// into place only when `fill` succeeds.
    pub fn ensure(
        &self,
        entry: &Path,
        size: u64,
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
        // Synced before the rename: after a power loss an entry that is in
        // place holds its checked bytes, never a hole the rename outran
        // (a cached whole shard is later trusted by its size).
        if let Err(e) = temp.flush().and_then(|()| temp.sync_data()) {
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
    /// Holds the shared lock.
    _file: File,
    /// The entry's bytes.
    pub map: Mmap,
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
        let map = unsafe { Mmap::map(&file) }.map_err(io(format!("mapping {}", path.display())))?;
        return Ok(Some(Pinned { _file: file, map }));
    }
}
