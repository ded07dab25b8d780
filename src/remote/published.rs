//! The published manifest: the object a publish writes last, listing
//! every object of the store with its size and crc32c. Readers open a
//! store by reading it, so a store whose publish did not finish is not
//! visible, and every byte fetched is checked against it.

use serde::{Deserialize, Serialize};

/// Name of the published manifest object.
pub const PUBLISHED: &str = "tenstore-published.json";

/// The format tag of the published manifest.
pub const FORMAT: &str = "tenstore-published-v1";

/// One object of a published store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Its name under the prefix (`000000.ten`, `MANIFEST`, ...).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// crc32c of its bytes.
    pub crc32c: u32,
}

/// The published manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The layout's name and version: `tenstore-published-v1`.
    pub format: String,
    /// Every object, shards first.
    pub objects: Vec<Object>,
}

impl Published {
    /// The entry of `name`.
    pub fn get(&self, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.name == name)
    }

    /// Checks what a reader relies on: the format, and names that are
    /// plain file names (no path separators), so they can name cache
    /// files.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {:?}, this tenstore reads {FORMAT:?}",
                self.format
            ));
        }
        for o in &self.objects {
            let ok = !o.name.is_empty()
                && o.name != "."
                && o.name != ".."
                && !o.name.starts_with('.')
                && o.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
            if !ok {
                return Err(format!("object name {:?} is not a plain file name", o.name));
            }
        }
        Ok(())
    }
}
