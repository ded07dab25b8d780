//! The remote layer's error type.

use std::path::PathBuf;

/// Everything that can go wrong publishing a store to object storage or
/// reading one through the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A store URL this build cannot use.
    #[error("{url}: {why} (use s3://BUCKET/PREFIX or file:///ABSOLUTE/DIR)")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },

    /// Nothing has been published at the URL (or a publish has not
    /// finished: its manifest is written last).
    #[error("{url}: no published tenstore here (no {object}); publish one with `tenstore publish STORE {url}`")]
    NotPublished {
        /// The URL.
        url: String,
        /// The object that is missing.
        object: &'static str,
    },

    /// A multipart part size S3 would refuse (at completion, after every
    /// part was uploaded).
    #[error("{url}: parts of {part_size} bytes are too small for S3, which wants at least 5 MiB (5242880 bytes) a part; raise the part size")]
    PartSize {
        /// The URL.
        url: String,
        /// The part size given.
        part_size: usize,
    },

    /// A store is already published at the URL.
    #[error("{url}: a store is already published here; pass --replace to replace it")]
    AlreadyPublished {
        /// The URL.
        url: String,
    },

    /// Only shard stores are published.
    #[error("{path}: an LMDB store cannot be published; convert it to a shard store first: `tenstore import --create --backend ten NEW_DIR {path}`, then `tenstore publish NEW_DIR URL`")]
    NotShardStore {
        /// The store's directory.
        path: PathBuf,
    },

    /// The local store to publish has damage a reader steps around.
    #[error("{path}: the store is damaged ({problems}); run `tenstore verify` and `tenstore reindex` before publishing")]
    Damaged {
        /// The store's directory.
        path: PathBuf,
        /// What its snapshot stepped around.
        problems: String,
    },

    /// The published manifest cannot be read.
    #[error("{url}: unreadable published manifest {object} ({why}); publish the store again with --replace")]
    Manifest {
        /// The URL.
        url: String,
        /// The manifest object.
        object: &'static str,
        /// What is wrong.
        why: String,
    },

    /// A request failed after every retry.
    #[error("{op} {object}: {source} (after the retries; check the endpoint, AWS_* credentials and network)")]
    Request {
        /// What was being done (`GET`, `PUT`, ...).
        op: &'static str,
        /// The object's location.
        object: String,
        /// object_store's error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// The server returned bytes whose checksum or length differ from
    /// the published ones, on every attempt.
    #[error("GET {object} {range}: the server returned wrong bytes {attempts} times (crc32c {found:08x}, published {expected:08x}); the object store is damaged or a proxy alters data")]
    Checksum {
        /// The object's location.
        object: String,
        /// Which bytes (`bytes a..b` or `whole object`).
        range: String,
        /// Attempts made.
        attempts: u32,
        /// The checksum of the last bytes received.
        found: u32,
        /// The checksum published.
        expected: u32,
    },

    /// The cache cannot hold an object without evicting entries that
    /// readers still map (or the metadata alone).
    #[error("cache {dir}: {need} more bytes do not fit under the cap of {cap} bytes ({pinned} bytes are mapped by open readers or are store metadata); pass a larger --cache-size or drop readers")]
    CacheFull {
        /// The cache directory.
        dir: PathBuf,
        /// The cap.
        cap: u64,
        /// Bytes needed.
        need: u64,
        /// Bytes that cannot be evicted now.
        pinned: u64,
    },

    /// A reader already holds as many bytes of records fetched by ranged
    /// GETs as it may (its samples borrow them until it is dropped).
    #[error("this reader holds {held} bytes of records fetched by ranged reads, and {need} more would pass its bound of {limit} bytes; take a fresh reader (dropping this one frees them) or raise the bound (--reader-memory)")]
    ReaderFull {
        /// Bytes the reader holds.
        held: u64,
        /// Bytes the next record needs.
        need: u64,
        /// The bound.
        limit: u64,
    },

    /// A local file operation of the cache or the publisher failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// Reading the local store to publish failed.
    #[error("{0}")]
    Store(Box<crate::store::StoreError>),
}

impl RemoteError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RemoteError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn request(
        op: &'static str,
        object: impl Into<String>,
        e: object_store::Error,
    ) -> Self {
        RemoteError::Request {
            op,
            object: object.into(),
            source: Box::new(e),
        }
    }
}

impl From<crate::store::StoreError> for RemoteError {
    fn from(e: crate::store::StoreError) -> Self {
        RemoteError::Store(Box::new(e))
    }
}
