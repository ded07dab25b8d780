//! The shard backend: samples appended to memory-mapped `.ten` shard
//! files, made visible by per-shard sidecar indexes.
//!
//! Layout (see `STORE-FORMAT.md`): `NNNNNN.ten` shards, each a valid tenbin
//! stream of records (a `__key__` array, then the sample's tensors;
//! deletions are `__tomb__` arrays); `NNNNNN.idx` sidecars whose records
//! (key, offset, length, crc32c) are the commit points; `MANIFEST`, the
//! list of shards; `LOCK`, the writer's lock; `tenstore.json`.

mod index;
pub(crate) mod layout;
mod reader;
mod scan;
pub(crate) mod snapshot;
mod writer;

pub(crate) use reader::check_plan;
pub use reader::{ShardEntries, ShardReader};
pub use snapshot::{LoadReport, Uncovered};
#[doc(hidden)]
pub use writer::Faults;
pub use writer::{
    Cut, CutReason, Durability, RecoveryReport, ReindexedShard, ShardOptions, ShardStats,
    ShardStore,
};
