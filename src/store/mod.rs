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
pub mod lmdb;
mod lmdb_file;
mod meta;
mod sample;
pub mod shard;

pub use any::{Backend, BoxIter, Order, Reader, Store, StoreOptions, StoreStats};
pub use error::{Result, StoreError};
pub use lmdb::{Entries, LmdbOptions, LmdbReader, LmdbStats, LmdbStore};
pub use meta::{FORMAT_VERSION, META_FILE};
pub use sample::Sample;
pub use shard::{
    Cut, CutReason, Durability, RecoveryReport, ReindexedShard, ShardOptions, ShardReader,
    ShardStats, ShardStore,
};

/// Shuffles `items` in place with a permutation fixed by `seed`
/// (Fisher-Yates over splitmix64).
pub(crate) fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}
