//! Opening stores the way every subcommand does.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tenstore::store::{Backend, LmdbOptions, Reader, Store, StoreError, StoreOptions};

/// `--adopt`: writers may adopt an LMDB environment tenstore did not make.
static ADOPT: AtomicBool = AtomicBool::new(false);

/// Sets what `--adopt` asked for, before any store is opened.
pub fn set_adopt(adopt: bool) {
    ADOPT.store(adopt, Ordering::Relaxed);
}

/// `--cache`, `--cache-size` and `--reader-memory`: where and how much
/// remote stores cache.
#[cfg(feature = "s3")]
static REMOTE: std::sync::OnceLock<tenstore::remote::RemoteOptions> = std::sync::OnceLock::new();

/// Sets `--cache`, `--cache-size` and `--reader-memory`, before any store
/// is opened.
#[cfg(feature = "s3")]
pub fn set_remote(
    cache: Option<std::path::PathBuf>,
    cache_size: Option<u64>,
    reader_memory: Option<u64>,
) {
    let defaults = tenstore::remote::RemoteOptions::default();
    let _ = REMOTE.set(tenstore::remote::RemoteOptions {
        cache_dir: cache,
        cache_size: cache_size.unwrap_or(defaults.cache_size),
        reader_memory: reader_memory.unwrap_or(defaults.reader_memory),
        ..defaults
    });
}

/// The options remote stores are opened with.
#[cfg(feature = "s3")]
pub fn remote_options() -> tenstore::remote::RemoteOptions {
    REMOTE.get().cloned().unwrap_or_default()
}

/// Whether `path` is a remote store's URL (`s3://`, `file://`).
pub fn is_url(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|s| s.starts_with("s3://") || s.starts_with("file://"))
}

/// Refuses to write to a URL: published stores are read-only.
fn refuse_url(path: &Path) -> Result<(), StoreError> {
    if is_url(path) {
        return Err(StoreError::Io {
            context: path.display().to_string(),
            source: std::io::Error::other(
                "a published store is read-only: write to a local store and publish it again with `tenstore publish --replace`",
            ),
        });
    }
    Ok(())
}

/// LMDB options with `--adopt` applied.
fn lmdb_options(no_sync: bool) -> LmdbOptions {
    LmdbOptions {
        no_sync,
        adopt: ADOPT.load(Ordering::Relaxed),
        ..Default::default()
    }
}

/// Opens an existing store of either backend, or with `create` makes one
/// of `backend` (LMDB when not given).
pub fn open(path: &Path, create: bool, backend: Option<Backend>) -> Result<Store, StoreError> {
    refuse_url(path)?;
    let store = Store::open(
        path,
        &StoreOptions {
            create,
            backend,
            lmdb: lmdb_options(false),
            ..Default::default()
        },
    )?;
    report_recovery(&store);
    Ok(store)
}

/// Says on stderr what opening a shard store for writing repaired.
fn report_recovery(store: &Store) {
    if let Store::Shard(s) = store {
        if !s.recovery().is_clean() {
            for line in s.recovery().to_string().lines() {
                eprintln!("tenstore: recovery: {line}");
            }
        }
    }
}

/// Says on stderr what a snapshot stepped around; an error (exit 1) if it
/// may have hidden samples, to return once the visible output is written.
pub fn check_skipped(reader: &Reader<'_>) -> Result<(), String> {
    let skipped = reader.skipped();
    for line in &skipped {
        eprintln!("tenstore: damage: {line}");
    }
    if skipped.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the store is damaged ({} problems above): samples may be missing from this answer, or older than the latest; run `tenstore verify` and `tenstore reindex`",
            skipped.len()
        ))
    }
}

/// Like [`open`], for bulk loads: LMDB commits without syncing, and the
/// caller makes everything durable with one `flush` at the end.
pub fn open_bulk(path: &Path, create: bool, backend: Option<Backend>) -> Result<Store, StoreError> {
    refuse_url(path)?;
    let store = Store::open(
        path,
        &StoreOptions {
            create,
            backend,
            lmdb: lmdb_options(true),
            ..Default::default()
        },
    )?;
    report_recovery(&store);
    Ok(store)
}

/// Opens an existing store for reading only: a local directory, or with
/// the `s3` feature a published store's URL (`s3://bucket/prefix`,
/// `file:///dir`) read through the cache. An LMDB store whose lock
/// file this user cannot write (another user's store, a read-only copy) is
/// read without LMDB's lock, with a note on stderr: no writer may run
/// meanwhile.
pub fn open_read(path: &Path) -> Result<Store, StoreError> {
    #[cfg(feature = "s3")]
    if let Some(url) = path.to_str().filter(|_| is_url(path)) {
        return Store::open_remote(
            url,
            &remote_options(),
            &StoreOptions {
                read_only: true,
                ..Default::default()
            },
        );
    }
    let store = Store::open(
        path,
        &StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )?;
    if let Store::Lmdb(s) = &store {
        if s.is_lock_free() {
            eprintln!(
                "tenstore: note: {}: lock.mdb is not writable, reading without LMDB's lock \
                 (results are reliable only if no process writes to the store meanwhile)",
                path.display()
            );
        }
    }
    Ok(store)
}

/// Parses `--backend`.
pub fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}
