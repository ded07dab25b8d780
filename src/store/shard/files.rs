//! File helpers of the shard writer: atomic replacement, the writer lock,
//! creating and opening shards for append, and listing them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::writer::*;
use crate::store::error::{Result, StoreError};
use crate::store::shard::layout::{idx_name, shard_name, Manifest, IDX_MAGIC, LOCK, MANIFEST};

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::io(what, e)
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, synced, then
/// renamed, then the directory synced.
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing directory {}", dir.display())))
}

pub(super) fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let text =
        serde_json::to_string(m).map_err(|e| StoreError::io("encoding the manifest", e.into()))?;
    write_atomic(dir, MANIFEST, text.as_bytes())
}

/// Takes the writer lock, recording this process's pid in it.
pub(super) fn lock(dir: &Path) -> Result<File> {
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
pub(super) fn create_shard(dir: &Path, no: u32) -> Result<()> {
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
pub(super) fn open_append(path: &Path) -> Result<(File, u64)> {
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

pub(super) fn open_current(dir: &Path, no: u32) -> Result<Current> {
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
pub(super) fn shard_files(dir: &Path) -> Result<Vec<(u32, String)>> {
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
