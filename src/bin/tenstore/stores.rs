//! Opening stores the way every subcommand does.

use std::path::Path;

use tenstore::store::{Backend, Store, StoreError, StoreOptions};

/// Opens an existing store of either backend, or with `create` makes one
/// of `backend` (LMDB when not given).
pub fn open(path: &Path, create: bool, backend: Option<Backend>) -> Result<Store, StoreError> {
    Store::open(
        path,
        &StoreOptions {
            create,
            backend,
            ..Default::default()
        },
    )
}

/// Like [`open`], for bulk loads: LMDB commits without syncing, and the
/// caller makes everything durable with one `flush` at the end.
pub fn open_bulk(path: &Path, create: bool, backend: Option<Backend>) -> Result<Store, StoreError> {
    Store::open(
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
    )
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
