//! Opening stores the way every subcommand does.

use std::path::Path;

use tenstore::store::{Backend, Reader, Store, StoreError, StoreOptions};

/// Opens an existing store of either backend, or with `create` makes one
/// of `backend` (LMDB when not given).
pub fn open(path: &Path, create: bool, backend: Option<Backend>) -> Result<Store, StoreError> {
    let store = Store::open(
        path,
        &StoreOptions {
            create,
            backend,
            ..Default::default()
        },
    )?;
    report_recovery(&store);
    Ok(store)
}

/// Says on stderr what opening a shard store for writing repaired.
fn report_recovery(store: &Store) {
    if let Store::Ten(s) = store {
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
            lmdb: tenstore::store::LmdbOptions {
                no_sync: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    report_recovery(&store);
    Ok(store)
}

/// Opens an existing store for reading only.
pub fn open_read(path: &Path) -> Result<Store, StoreError> {
    Store::open(
        path,
        &StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )
}

/// Parses `--backend`.
pub fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}
