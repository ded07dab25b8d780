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

/// Opens an existing store for reading only. An LMDB store whose lock
/// file this user cannot write (another user's store, a read-only copy) is
/// read without LMDB's lock, with a note on stderr: no writer may run
/// meanwhile.
pub fn open_read(path: &Path) -> Result<Store, StoreError> {
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
