//! Requests to the object store, run on a small tokio runtime kept inside
//! this module: whole objects streamed into a file, ranges into memory,
//! every byte checked against the crc32c it was published with.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use futures_util::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};

use super::error::RemoteError;
use super::url::Location;

/// Attempts at fetching bytes whose checksum does not match, or whose
/// body is cut short (each attempt also has object_store's retries).
pub(crate) const CHECK_ATTEMPTS: u32 = 3;

/// The object store of one URL and the runtime that drives its requests.
pub(crate) struct Fetcher {
    rt: tokio::runtime::Runtime,
    /// Where the store's objects are.
    pub loc: Location,
}

impl Fetcher {
    /// A fetcher for `loc`, with its own runtime.
    pub fn new(loc: Location) -> Result<Fetcher, RemoteError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            // Downloads write to their files from the workers: enough of
            // them that one waiting on the disk leaves the network busy.
            .worker_threads(4)
            .thread_name("tenstore-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::io("starting the remote I/O runtime", e))?;
        Ok(Fetcher { rt, loc })
    }

    /// Runs `f` to completion on the runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The whole object `name`, or `None` if there is none.
    pub fn get_optional(&self, name: &str) -> Result<Option<bytes::Bytes>, RemoteError> {
        let path = self.loc.object(name);
        let store = &self.loc.store;
        let got = self.block_on(async {
            match store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map_err(|e| RemoteError::request("GET", self.loc.describe(name), e))
    }

    /// Writes the object `name` to `file` (from its start), checking its
    /// size and crc32c; retries a body that is cut short or wrong.
    pub fn download(
        &self,
        name: &str,
        size: u64,
        crc: u32,
        file: &mut File,
    ) -> Result<(), RemoteError> {
        let path = self.loc.object(name);
        let what = self.loc.describe(name);
        let mut last = None;
        for _ in 0..CHECK_ATTEMPTS {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| RemoteError::io(format!("writing the download of {what}"), e))?;
            let got: Result<(u64, u32), object_store::Error> = self.block_on(async {
                let mut stream = self.loc.store.get(&path).await?.into_stream();
                let (mut n, mut c) = (0u64, 0u32);
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    c = crc32c::crc32c_append(c, &chunk);
                    n += chunk.len() as u64;
                    if n > size {
                        break;
                    }
                    file.write_all(&chunk)
                        .map_err(|e| object_store::Error::Generic {
                            store: "cache",
                            source: Box::new(e),
                        })?;
                }
                Ok((n, c))
            });
            match got {
                Ok((n, c)) if n == size && c == crc => return Ok(()),
                Ok((_, c)) => last = Some(c),
                Err(object_store::Error::Generic {
                    store: "cache",
                    source,
                }) => {
                    return Err(RemoteError::io(
                        format!("writing the download of {what}"),
                        std::io::Error::other(source),
                    ))
                }
                // A body cut short is retried; anything else already was.
                Err(e) if is_body_error(&e) => last = None,
                Err(e) => return Err(RemoteError::request("GET", what, e)),
            }
        }
        Err(RemoteError::Checksum {
            object: what,
            range: "whole object".into(),
            attempts: CHECK_ATTEMPTS,
            found: last.unwrap_or(0),
            expected: crc,
        })
    }

    /// Bytes `offset..offset + len` of object `name`, checked against
    /// `crc`; retried when wrong.
    pub fn get_range(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        crc: u32,
    ) -> Result<bytes::Bytes, RemoteError> {
        let path = self.loc.object(name);
        let what = self.loc.describe(name);
        let mut found = 0;
        for _ in 0..CHECK_ATTEMPTS {
            let got = self.block_on(async {
                let options = GetOptions {
                    range: Some(GetRange::Bounded(offset..offset + len)),
                    ..Default::default()
                };
                self.loc.store.get_opts(&path, options).await?.bytes().await
            });
            match got {
                Ok(bytes) => {
                    found = crc32c::crc32c(&bytes);
                    if bytes.len() as u64 == len && found == crc {
                        return Ok(bytes);
                    }
                }
                Err(e) if is_body_error(&e) => {}
                Err(e) => return Err(RemoteError::request("GET", what, e)),
            }
        }
        Err(RemoteError::Checksum {
            object: what,
            range: format!("bytes {offset}..{}", offset + len),
            attempts: CHECK_ATTEMPTS,
            found,
            expected: crc,
        })
    }

    /// Uploads `bytes` as object `name` in one request.
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        let path = self.loc.object(name);
        self.block_on(self.loc.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| RemoteError::request("PUT", self.loc.describe(name), e))
    }

    /// Deletes object `name` (none there is fine).
    pub fn delete(&self, name: &str) -> Result<(), RemoteError> {
        let path = self.loc.object(name);
        match self.block_on(self.loc.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(RemoteError::request("DELETE", self.loc.describe(name), e)),
        }
    }
}

/// Whether an error is a body cut short mid-stream (worth fetching again)
/// rather than a failed request, which object_store has already retried.
fn is_body_error(e: &object_store::Error) -> bool {
    let text = e.to_string();
    text.contains("body") || text.contains("connection") || text.contains("decode")
}
