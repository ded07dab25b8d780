//! Opening stores the way every subcommand does.

use std::path::Path;

use tenstore::store::{LmdbOptions, LmdbStore};

/// Opens an existing store, or makes one with `create`.
pub fn open(path: &Path, create: bool) -> Result<LmdbStore, tenstore::store::StoreError> {
    LmdbStore::open(
        path,
        &LmdbOptions {
            create,
            ..Default::default()
        },
    )
}

/// Opens an existing store for reading.
pub fn open_read(path: &Path) -> Result<LmdbStore, tenstore::store::StoreError> {
    open(path, false)
}

/// A key given on the command line, as bytes.
pub fn key_bytes(key: &str) -> &[u8] {
    key.as_bytes()
}
