//! The shard backend: samples appended to memory-mapped `.ten` shard
//! files, made visible by per-shard sidecar indexes.
//!
//! Layout (see `STORE-FORMAT.md`): `NNNNNN.ten` shards, each a valid tenbin
//! stream of records (a `__key__` array, then the sample's tensors;
//! deletions are `__tomb__` arrays); `NNNNNN.idx` sidecars whose records
//! (key, offset, length, crc32c) are the commit points; `MANIFEST`, the
//! list of shards; `LOCK`, the writer's lock; `tenstore.json`.
//!
//! Code: `store` ([`ShardStore`], its options and stats), `writer` (the
//! single writer: append, commit, roll, sync), `files` (atomic writes, the
//! lock, shard files), `recovery` (what a writer cuts when it opens),
//! `compact` (compaction and reindexing); `snapshot` and `reader` (read
//! snapshots), `table` (the key table readers map), `live` (the writer's
//! live keys: the key table plus a delta), `layout` (record and sidecar
//! formats), `index`, `order` (write and key order off the key table),
//! `scan`.

mod compact;
mod files;
mod index;
pub(crate) mod layout;
mod live;
mod order;
mod reader;
mod recovery;
mod scan;
pub(crate) mod snapshot;
pub(crate) mod source;
mod store;
pub(crate) mod table;
mod writer;

pub use compact::ReindexedShard;
pub(crate) use reader::check_plan;
pub use reader::{ShardEntries, ShardReader};
pub use recovery::{Cut, CutReason, RecoveryReport};
pub use snapshot::{KeyTable, LoadReport, Uncovered};
pub use store::{Durability, ShardOptions, ShardStats, ShardStore};
#[doc(hidden)]
pub use table::sidecar_bytes_read;
#[doc(hidden)]
pub use writer::Faults;
