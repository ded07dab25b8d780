//! `tenstore.json`: the store's metadata, kept beside the data and outside
//! the sample keyspace.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::error::{Result, StoreError};

/// The metadata file's name.
pub const META_FILE: &str = "tenstore.json";

/// Version of the store layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(crate) struct Meta {
    /// `"lmdb"` or `"ten"`.
    pub backend: String,
    /// Layout version.
    pub version: u32,
}

impl Meta {
    /// Checks the metadata in `dir` if there is any (a plain environment
    /// without it is accepted), or writes it when `create` is set and there
    /// is none.
    pub(crate) fn check_or_create(dir: &Path, backend: &str, create: bool) -> Result<()> {
        let path = dir.join(META_FILE);
        let expected = format!("{backend} version {FORMAT_VERSION}");
        match fs::read(&path) {
            Ok(bytes) => {
                let meta: Meta =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Format {
                        path: path.clone(),
                        found: format!("unreadable JSON ({e})"),
                        expected: expected.clone(),
                    })?;
                if meta.backend != backend || meta.version > FORMAT_VERSION {
                    return Err(StoreError::Format {
                        path,
                        found: format!("{} version {}", meta.backend, meta.version),
                        expected,
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if create {
                    let meta = Meta {
                        backend: backend.to_owned(),
                        version: FORMAT_VERSION,
                    };
                    let text = serde_json::to_string_pretty(&meta)
                        .map_err(|e| StoreError::io("encoding metadata", e.into()))?;
                    fs::write(&path, text + "\n")
                        .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
                }
                Ok(())
            }
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
    }
}
