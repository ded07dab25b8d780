//! Shard bytes that are not local files: the hook through which a shard
//! store published to object storage is read through a local cache
//! (`crate::remote`). A snapshot with a source reads its manifest, sidecars
//! and key table from its directory as usual, and asks the source for
//! shard lengths and record bytes instead of mapping shard files.

use std::sync::Arc;

use crate::store::error::Result;

/// Where one reader's shard bytes come from.
pub(crate) trait ShardSource: Send + Sync {
    /// The length of shard `no`.
    fn shard_len(&self, no: u32) -> Result<u64>;

    /// The bytes `offset..offset + len` of shard `no`, whose crc32c is
    /// `crc` (the sidecar's). The bytes stay valid and unchanged as long
    /// as the source lives.
    fn record(&self, no: u32, offset: u64, len: u64, crc: u32) -> Result<&[u8]>;

    /// Bytes of records this source holds in memory for its reader
    /// (records fetched one by one), freed only when it is dropped.
    fn held_bytes(&self) -> u64 {
        0
    }

    /// Whether a long-lived reader should be replaced by a fresh one
    /// (with a fresh source) before it next reads: it holds more than
    /// half the record bytes it may hold.
    fn needs_renewal(&self) -> bool {
        false
    }
}

/// Makes a [`ShardSource`] for each new reader of a store, so that what a
/// reader keeps mapped is released when the reader is dropped.
pub(crate) trait SourceFactory: Send + Sync {
    /// A source for a new reader.
    fn source(&self) -> Arc<dyn ShardSource>;
}
