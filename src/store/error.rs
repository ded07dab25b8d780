//! The store layer's error type.

use std::path::PathBuf;

/// Result alias for the store layer.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong opening, writing or reading a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The path holds no store and creation was not asked for.
    #[error("{path}: no tenstore here (no LMDB data.mdb or shard files); pass create to make a new store")]
    NotAStore {
        /// The path given.
        path: PathBuf,
    },

    /// The store's metadata names a format this version cannot read.
    #[error(
        "{path}: store format {found:?} is not supported by this tenstore (it reads {expected:?})"
    )]
    Format {
        /// The metadata file.
        path: PathBuf,
        /// What the file says.
        found: String,
        /// What this version reads.
        expected: String,
    },

    /// A key that cannot be stored: empty, or longer than the backend allows.
    #[error("key of {len} bytes cannot be stored: keys are 1 to {max} bytes")]
    BadKey {
        /// Length of the key given.
        len: usize,
        /// The longest key the backend stores.
        max: usize,
    },

    /// No sample under this key.
    #[error("no sample with key {key:?}")]
    NotFound {
        /// The key, escaped.
        key: String,
    },

    /// A stored value, or input to store, that is not valid tenbin.
    #[error("sample {key:?}: {source}")]
    Codec {
        /// The key of the sample, escaped.
        key: String,
        /// What is wrong with its bytes.
        #[source]
        source: crate::Error,
    },

    /// A stored sample whose bytes are damaged.
    #[error("sample {key:?} is damaged: {what}")]
    Corrupt {
        /// The key, escaped.
        key: String,
        /// What is wrong.
        what: String,
    },

    /// Another process holds the store's writer lock.
    #[error("store {path} is locked by pid {pid} (one writer at a time); readers need no lock")]
    Locked {
        /// The store.
        path: PathBuf,
        /// The process holding the lock, as it recorded itself.
        pid: String,
    },

    /// A shard store whose damaged sidecars (no header, a complete record
    /// failing its checksum, valid records after a damaged one) hide whole
    /// records: opening it for writing would have to cut them, so it is
    /// refused and nothing is changed.
    #[error("{path}: {what}. Nothing was changed. Run `tenstore reindex {path}` to index every whole record of the shards (keeping the checksums of the sidecar records that are still valid), then `tenstore verify {path}`")]
    NeedsReindex {
        /// The store.
        path: PathBuf,
        /// What is uncommitted, where.
        what: String,
    },

    /// A shard store's writer stopped taking writes: an earlier append
    /// failed after sidecar records of its batch may have become visible,
    /// so cutting the batch off again could pull bytes from under readers.
    #[error("store {path}: an earlier write failed while committing ({cause}); this handle takes no more writes: reopen the store (its recovery cuts off the torn tail), once the cause is fixed")]
    WriterFailed {
        /// The store.
        path: PathBuf,
        /// What failed.
        cause: String,
    },

    /// A tensor name the store reserves for its own records.
    #[error("tensor name {name:?} is reserved by the shard store's record layout")]
    ReservedName {
        /// The name.
        name: String,
    },

    /// A store file that is damaged: LMDB's `data.mdb` cut short or with
    /// broken meta pages. Nothing was mapped or changed.
    #[error("{path} is damaged: {what}")]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong, and what to do.
        what: String,
    },

    /// A sample whose encoded buffer is larger than the backend can store
    /// as one value. Checked before anything is written.
    #[error("sample {key:?} encodes to {len} bytes, more than the {max} bytes one LMDB value can hold (one write on this system moves at most 2 GiB); store it in a `ten` (shard) store (`--backend ten`)")]
    TooLarge {
        /// The key, escaped.
        key: String,
        /// The encoded length.
        len: usize,
        /// The largest value this store takes.
        max: usize,
    },

    /// An LMDB environment tenstore did not create (no `tenstore.json`)
    /// opened for writing without adopting it.
    #[error("{path} is an LMDB environment tenstore did not create (it has no tenstore.json): it opens read-only; to write to it, adopt it (`--adopt`, or `LmdbOptions::adopt`), which writes tenstore.json")]
    Foreign {
        /// The environment's directory.
        path: PathBuf,
    },

    /// A store of the other backend already in the directory a new store
    /// of this backend was asked for.
    #[error("{} already holds a {} store", path.display(), found.name())]
    OtherBackend {
        /// The directory.
        path: PathBuf,
        /// The backend of the store there.
        found: crate::store::Backend,
    },

    /// A write to a store opened read-only.
    #[error("{} is open read-only", path.display())]
    ReadOnly {
        /// The store's directory.
        path: PathBuf,
    },

    /// `LmdbOptions::no_lock` asked of a store opened for writing.
    #[error("no_lock opens only read-only: a writer needs LMDB's lock file")]
    NoLockWriter,

    /// A read through an LMDB reader whose last refresh failed: it holds
    /// no snapshot.
    #[error("this reader's last refresh failed; refresh it again or make a new one")]
    RefreshFailed,

    /// The map is full and could not grow because transactions of this
    /// process stayed open.
    #[error("the store's map is full and cannot grow while this process keeps {readers} read snapshot(s) open{}: drop or refresh readers before writing", blocked_how(*.held_here, *.waited_ms))]
    GrowBlocked {
        /// Transactions still open.
        readers: usize,
        /// How long the writer waited (0 when it held snapshots itself).
        waited_ms: u64,
        /// Snapshots the writing thread itself held: it cannot wait for
        /// them, so it gave up at once.
        held_here: usize,
    },

    /// Another process grew the LMDB map; this process can adopt the new
    /// size only with none of its transactions open, and some stayed open.
    #[error("another process grew the store's map, and this process can use the new size only once none of its read snapshots is open, but {readers} stayed open{}: drop or refresh readers, then try again", blocked_how(*.held_here, *.waited_ms))]
    AdoptBlocked {
        /// Transactions still open.
        readers: usize,
        /// How long the reader waited (0 when it held snapshots itself).
        waited_ms: u64,
        /// Snapshots the calling thread itself held: it cannot wait for
        /// them, so it gave up at once.
        held_here: usize,
    },

    /// An error from LMDB, with what was being done.
    #[error("{context}: {source}")]
    Lmdb {
        /// What was being done.
        context: String,
        /// LMDB's error.
        #[source]
        source: heed::Error,
    },

    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// An epoch plan that does not fit this snapshot, or a bad plan
    /// configuration.
    #[error("{0}")]
    Plan(#[from] crate::plan::PlanError),

    /// Fetching a remote store's bytes failed (see [`crate::remote`]).
    #[cfg(feature = "s3")]
    #[error("{0}")]
    Remote(Box<crate::remote::RemoteError>),
}

/// How a map change was blocked, for the messages above.
fn blocked_how(held_here: usize, waited_ms: u64) -> String {
    if held_here > 0 {
        format!(
            " ({held_here} of them held by the asking thread itself, which therefore did not wait)"
        )
    } else {
        format!(" for more than {waited_ms} ms")
    }
}

impl StoreError {
    pub(crate) fn lmdb(context: impl Into<String>, source: heed::Error) -> Self {
        StoreError::Lmdb {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn codec(key: &[u8], source: crate::Error) -> Self {
        StoreError::Codec {
            key: crate::error::escape(key),
            source,
        }
    }
}
