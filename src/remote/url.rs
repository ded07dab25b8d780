//! Store URLs: `s3://bucket/prefix` (configured by the standard AWS
//! environment variables) and `file:///dir`.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use super::error::RemoteError;
use super::RemoteOptions;

/// Whether `s` names a remote store (`s3://` or `file://`) rather than a
/// local directory.
pub fn is_url(s: &str) -> bool {
    s.starts_with("s3://") || s.starts_with("file://")
}

/// Where a published store lives: an object store and a prefix in it.
#[derive(Clone, Debug)]
pub(crate) struct Location {
    /// The URL, as given (without a trailing slash).
    pub url: String,
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix of the store's objects.
    pub prefix: ObjPath,
}

impl Location {
    /// The location of the object named `name` under the prefix.
    pub fn object(&self, name: &str) -> ObjPath {
        self.prefix.child(name)
    }

    /// `URL/name`, for messages.
    pub fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }
}

/// Opens the object store `url` names.
pub(crate) fn parse(url: &str, options: &RemoteOptions) -> Result<Location, RemoteError> {
    let bad = |why: &str| RemoteError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let trimmed = url.trim_end_matches('/');
    if let Some(rest) = trimmed.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name"));
        }
        let prefix = ObjPath::parse(prefix).map_err(|e| bad(&format!("bad prefix: {e}")))?;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry_config(options))
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}s", options.request_timeout.as_secs().max(1)),
            );
        for (key, value) in &options.s3_config {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| bad(&format!("unknown S3 setting {key:?}: {e}")))?;
            builder = builder.with_config(key, value);
        }
        let store = builder
            .build()
            .map_err(|e| bad(&format!("S3 configuration: {e}")))?;
        Ok(Location {
            url: trimmed.to_owned(),
            store: Arc::new(store),
            prefix,
        })
    } else if let Some(dir) = trimmed.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(bad("a file URL needs an absolute path (file:///dir)"));
        }
        std::fs::create_dir_all(dir).map_err(|e| RemoteError::io(format!("creating {dir}"), e))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(&format!("opening the directory: {e}")))?;
        Ok(Location {
            url: trimmed.to_owned(),
            store: Arc::new(store),
            prefix: ObjPath::default(),
        })
    } else {
        Err(bad("not a store URL"))
    }
}

/// Retries with exponential backoff on 5xx, timeouts and dropped
/// connections (object_store's retry logic), `options.retries` times.
fn retry_config(options: &RemoteOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: options.retries,
        retry_timeout: Duration::from_secs(120),
    }
}
