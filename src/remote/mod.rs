//! Shard stores on S3-compatible object storage (or a `file://`
//! directory), read through a bounded local cache.
//!
//! [`publish`] uploads a local shard store; [`open`] opens a published
//! one read-only as a [`ShardStore`] whose readers fetch shard bytes into
//! the cache: whole shards ahead of a sequential reader (several in
//! parallel), one ranged GET per record for random lookups, every byte
//! checked against its published crc32c. Once bytes are local they are
//! read with the same zero-copy views as a local store.
//!
//! `s3://` URLs are configured by the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...). Requests are retried with
//! backoff on 5xx, timeouts and dropped connections.
//!
//! The async runtime (tokio) stays inside this module: its API is
//! synchronous. Modules: `url` (URLs to object stores), `published` (the
//! published manifest), `fetch` (requests), `cache` (the bounded cache),
//! `source` (readers' shard bytes), `publish`.

mod cache;
mod error;
mod fetch;
mod publish;
mod published;
mod source;
mod url;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::RemoteError;
pub use publish::{publish, PublishReport};
pub use published::{Object, Published, PUBLISHED};
pub use url::is_url;

use crate::store::shard::layout::MANIFEST;
use crate::store::shard::{ShardOptions, ShardStore};

/// The default cache cap: 10 GiB.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

/// Metadata objects fetched at once when a store is opened.
const METADATA_FETCHES: usize = 8;

/// The default bound of ranged records one reader holds: 256 MiB.
pub const DEFAULT_READER_MEMORY: u64 = 256 << 20;

/// How to reach object storage and where to cache.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// The cache directory (default: [`default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Bytes the cache may hold on disk (default 10 GiB).
    pub cache_size: u64,
    /// Retries of a failed request (5xx, timeout, dropped connection),
    /// with exponential backoff (default 8).
    pub retries: usize,
    /// Timeout of one request, its body included (default 10 minutes:
    /// whole shards are fetched in one request).
    pub request_timeout: Duration,
    /// Whole shards fetched ahead of a sequential reader (default 4).
    pub prefetch: usize,
    /// Bytes of records fetched by ranged GETs that one reader may hold
    /// (default 256 MiB). Its samples borrow them, so they stay in memory
    /// until the reader is dropped; a read past this bound fails with
    /// [`RemoteError::ReaderFull`] instead of exhausting memory. A
    /// long-lived reader renews itself before the bound
    /// ([`ShardReader::needs_renewal`](crate::store::shard::ShardReader::needs_renewal)).
    pub reader_memory: u64,
    /// Files larger than this are published by multipart upload, in
    /// parts of this size (default 16 MiB; at least 1 byte). For `s3://`
    /// URLs at least 5 MiB, which S3 wants (all but the last part):
    /// smaller is refused before any upload.
    pub part_size: usize,
    /// S3 settings applied over the environment's, as object_store
    /// configuration keys (`aws_endpoint`, `aws_allow_http`, ...).
    pub s3_config: Vec<(String, String)>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            cache_dir: None,
            cache_size: DEFAULT_CACHE_SIZE,
            retries: 8,
            request_timeout: Duration::from_secs(600),
            prefetch: 4,
            reader_memory: DEFAULT_READER_MEMORY,
            part_size: publish::PART_SIZE,
            s3_config: Vec::new(),
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/tenstore`, else
/// `$HOME/.cache/tenstore`, else `tenstore-cache` in the temporary
/// directory.
pub fn default_cache_dir() -> PathBuf {
    let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    if let Some(x) = non_empty("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("tenstore");
    }
    if let Some(h) = non_empty("HOME") {
        return PathBuf::from(h).join(".cache").join("tenstore");
    }
    std::env::temp_dir().join("tenstore-cache")
}

/// Parses a byte count with an optional suffix: `10G`, `512M`, `64k`,
/// `1GiB`, `100` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a byte count (e.g. 10G, 512M, 1000000)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// Bytes the files of the cache in `dir` take, as counted against its cap
/// (each file rounded up to 4 KiB blocks).
pub fn cache_usage(dir: &Path) -> Result<u64, RemoteError> {
    cache::Cache::open(dir, u64::MAX)?.usage()
}

/// Opens the store published at `url` read-only. Fetches the published
/// manifest and the store's metadata (manifest, sidecars, key table,
/// `tenstore.json`) into the cache; shards are fetched as readers need
/// them.
pub fn open(
    url: &str,
    options: &RemoteOptions,
    shard: &ShardOptions,
) -> Result<ShardStore, RemoteError> {
    let loc = url::parse(url, options)?;
    let fetch = fetch::Fetcher::new(loc)?;
    let raw = fetch
        .get_optional(PUBLISHED)?
        .ok_or_else(|| RemoteError::NotPublished {
            url: fetch.loc.url.clone(),
            object: PUBLISHED,
        })?;
    let bad = |why: String| RemoteError::Manifest {
        url: fetch.loc.url.clone(),
        object: PUBLISHED,
        why,
    };
    let published: Published = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
    published.check().map_err(bad)?;
    if published.get(MANIFEST).is_none() {
        return Err(bad(format!("it does not list {MANIFEST}")));
    }
    let root = options.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let cache = cache::Cache::open(&root, options.cache_size)?;
    let id = format!(
        "{:08x}{:08x}-{:08x}",
        crc32c::crc32c(fetch.loc.url.as_bytes()),
        crc32c::crc32c(format!("{}/", fetch.loc.url).as_bytes()),
        crc32c::crc32c(&raw)
    );
    let dir = cache.root().join(id);
    // Before the metadata is checked: from here on it is not evicted.
    let held = cache::hold(&dir)?;
    let mut shards = HashMap::new();
    let mut missing = Vec::new();
    for o in &published.objects {
        if let Some(no) = o
            .name
            .strip_suffix(".ten")
            .and_then(|n| n.parse::<u32>().ok())
        {
            shards.insert(no, (o.size, o.crc32c));
            continue;
        }
        let path = dir.join(&o.name);
        let fresh = std::fs::read(&path)
            .is_ok_and(|b| b.len() as u64 == o.size && crc32c::crc32c(&b) == o.crc32c);
        if !fresh {
            let _ = std::fs::remove_file(&path);
            missing.push((o, path));
        }
    }
    // Fetched several at a time (a sidecar per shard: one after the other,
    // their round trips would add up).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let fetch_missing = || -> Result<(), RemoteError> {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((o, path)) = missing.get(i) else {
                return Ok(());
            };
            cache.ensure(path, o.size, false, |f| {
                fetch.download(&o.name, o.size, o.crc32c, f)
            })?;
        }
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..missing.len().min(METADATA_FETCHES))
            .map(|_| scope.spawn(fetch_missing))
            .collect();
        let mut result = fetch_missing();
        for h in helpers {
            let r = h.join().unwrap_or_else(|_| {
                Err(RemoteError::io(
                    "fetching the store's metadata",
                    std::io::Error::other("a fetching thread panicked"),
                ))
            });
            result = result.and(r);
        }
        result
    })?;
    let manifest = crate::store::shard::snapshot::read_manifest(&dir)?.ok_or_else(|| {
        bad(format!(
            "{MANIFEST} is missing from the cache after fetching it"
        ))
    })?;
    for no in &manifest.shards {
        if !shards.contains_key(no) {
            return Err(bad(format!(
                "it does not list shard {}",
                crate::store::shard::layout::shard_name(*no)
            )));
        }
    }
    let shared = Arc::new(source::Shared::new(
        fetch,
        cache,
        dir.clone(),
        shards,
        manifest.shards,
        options,
        held,
    ));
    Ok(ShardStore::open_with_source(
        &dir,
        shard,
        Arc::new(source::Factory(shared)),
    )?)
}
