//! Sample stores: keys mapped to lists of named tensors, read back as
//! zero-copy views.
//!
//! - [`LmdbStore`]: samples in an LMDB environment (via heed), for random
//!   access, updates and deletes.

mod error;
mod gate;
pub mod lmdb;
mod meta;
mod sample;
pub mod shard;

pub use error::{Result, StoreError};
pub use lmdb::{Entries, LmdbOptions, LmdbReader, LmdbStats, LmdbStore};
pub use meta::{FORMAT_VERSION, META_FILE};
pub use sample::Sample;
pub use shard::{Durability, RecoveryReport, ShardOptions, ShardReader, ShardStats, ShardStore};
