//! Sample stores: keys mapped to lists of named tensors, read back as
//! zero-copy views.
//!
//! - [`LmdbStore`]: samples in an LMDB environment (via heed), for random
//!   access, updates and deletes.
//! - [`ShardStore`]: samples appended to memory-mapped `.ten` shards, for
//!   write-once datasets and sequential epochs.
//! - [`Store`] and [`Reader`]: either backend behind one interface.
//!
//! **Precondition of every `open`:** both backends read memory maps, so
//! while a store is open, its files must change only through tenstore
//! (LMDB: through LMDB). Truncating one from outside can kill a reader
//! with `SIGBUS`; rewriting one changes bytes under held snapshots. The
//! crate docs ("Memory maps") say exactly what outside modification does
//! and why `open` is safe nevertheless; the README's Guarantees say it
//! too.

mod any;
mod error;
mod gate;
pub mod key;
pub mod lmdb;
mod lmdb_file;
mod meta;
mod sample;
pub mod shard;
mod verify;

pub use any::{Backend, BoxIter, Order, Reader, Store, StoreOptions, StoreStats};
pub use error::{Result, StoreError};
pub use key::MAX_KEY_LEN;
pub use lmdb::{Entries, LmdbOptions, LmdbReader, LmdbStats, LmdbStore};
pub use meta::{FORMAT_VERSION, META_FILE};
pub use sample::Sample;
pub use shard::{
    Cut, CutReason, Durability, RecoveryReport, ReindexedShard, ShardOptions, ShardReader,
    ShardStats, ShardStore,
};
pub use verify::{Problem, VerifyReport};

/// The rule every backend's `open` starts with: a path that holds no store
/// (`exists` is false) is refused with [`StoreError::NotAStore`] unless
/// `create` is set and `read_only` is not, so a mistyped path is never
/// silently made into a new, empty store.
pub(crate) fn refuse_missing(
    path: &std::path::Path,
    exists: bool,
    create: bool,
    read_only: bool,
) -> Result<()> {
    if !exists && (!create || read_only) {
        return Err(StoreError::NotAStore {
            path: path.to_owned(),
        });
    }
    Ok(())
}
