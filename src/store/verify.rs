//! What `verify` finds, the same for both backends.

use std::fmt;

/// The result of checking every sample of a snapshot
/// ([`crate::store::Reader::verify`], [`crate::store::LmdbReader::verify`],
/// [`crate::store::ShardReader::verify`]). Displays as one line per
/// problem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
}

/// One problem [`VerifyReport`] lists.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Something loading the snapshot stepped around that may hold
    /// samples (shard stores: a torn sidecar, records no sidecar commits,
    /// records past the end of their shard), described.
    Load(String),
    /// A sample whose record lies outside its shard (shard stores).
    OutsideShard {
        /// The sample's key.
        key: Vec<u8>,
    },
    /// A sample whose bytes differ from the crc32c committed with them
    /// (shard stores).
    Checksum {
        /// The sample's key.
        key: Vec<u8>,
        /// The checksum of the bytes there now.
        found: u32,
        /// The checksum committed with the sample.
        committed: u32,
    },
    /// A sample that is not valid tenbin, or (shard stores) whose key
    /// array does not name it.
    Malformed {
        /// The sample's key.
        key: Vec<u8>,
        /// What is wrong.
        what: String,
    },
}

impl VerifyReport {
    /// Whether every sample checked out.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// The problems, each as the line [`Display`](fmt::Display) prints.
    pub fn lines(&self) -> Vec<String> {
        self.problems.iter().map(Problem::to_string).collect()
    }
}

fn key_text(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Load(what) => f.write_str(what),
            Problem::OutsideShard { key } => {
                write!(f, "sample {:?}: record outside its shard", key_text(key))
            }
            Problem::Checksum {
                key,
                found,
                committed,
            } => write!(
                f,
                "sample {:?}: checksum {found:08x} differs from the committed {committed:08x}",
                key_text(key)
            ),
            Problem::Malformed { key, what } => {
                write!(f, "sample {:?}: {what}", key_text(key))
            }
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
