//! The on-disk layout of a shard store: record framing in shards, sidecar
//! index records, the manifest. See `STORE-FORMAT.md` for the prose.

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec::{encode_to, encoded_len};
use crate::dtype::DType;
use crate::tensor::{AsTensorRef, Shape, TensorRef, TensorView};

/// Name of the array that opens every sample record: its data is the key.
pub const KEY_NAME: &str = "__key__";

/// Name of the array that forms a tombstone record: its data is the key of
/// the deleted sample.
pub const TOMB_NAME: &str = "__tomb__";

/// First bytes of every sidecar file.
pub const IDX_MAGIC: &[u8; 16] = b"tenstore-idx-v1\n";

/// Size of a sidecar record before its key.
pub const IDX_FIXED: usize = 32;

/// Kind tags of sidecar records.
pub const PUT: [u8; 4] = *b"PUT ";
/// A deletion.
pub const DEL: [u8; 4] = *b"DEL ";

/// The manifest file: which shards make up the store.
pub const MANIFEST: &str = "MANIFEST";

/// The writer's lock file.
pub const LOCK: &str = "LOCK";

/// File name of shard `n`.
pub fn shard_name(n: u32) -> String {
    format!("{n:06}.ten")
}

/// File name of the sidecar of shard `n`.
pub fn idx_name(n: u32) -> String {
    format!("{n:06}.idx")
}

/// Bytes the key array takes at the start of a record for a key of
/// `key_len` bytes: its header chunk and data chunk.
pub fn key_array_len(key_len: usize) -> usize {
    let header = 16 + 64; // 32-byte header payload, padded to 64
    header + 16 + key_len.div_ceil(64) * 64
}

/// The key array of a record (or tombstone).
/// `name` is one of the constants above (ASCII, at most 8 bytes) and the
/// shape is the key's length, so the parts need no checking.
fn key_array<'a>(name: &'a str, key: &'a [u8], shape: &'a [usize; 1]) -> TensorRef<'a> {
    TensorRef::from(TensorView::from_checked(
        name,
        DType::U8,
        Shape::from(&shape[..]),
        key,
    ))
}

/// Length of the record for `key` and `tensors`.
pub fn record_len<T: AsTensorRef>(key: &[u8], tensors: &[T]) -> crate::Result<usize> {
    key_array_len(key.len())
        .checked_add(encoded_len(tensors)?)
        .ok_or(crate::Error::TooLarge)
}

/// Writes a sample record: the key array, then the tensors.
pub fn write_record<W: io::Write + ?Sized, T: AsTensorRef>(
    out: &mut W,
    key: &[u8],
    tensors: &[T],
) -> io::Result<()> {
    let shape = [key.len()];
    encode_to(&[key_array(KEY_NAME, key, &shape)], out)?;
    encode_to(tensors, out)
}

/// The bytes of a tombstone record for `key`.
pub fn tombstone(key: &[u8]) -> Vec<u8> {
    let shape = [key.len()];
    let mut out = Vec::with_capacity(key_array_len(key.len()));
    // Writing to a Vec cannot fail.
    let _ = encode_to(&[key_array(TOMB_NAME, key, &shape)], &mut out);
    out
}

/// A sidecar record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxRecord {
    /// `PUT` or `DEL`.
    pub kind: [u8; 4],
    /// The sample's key (shared with the index that holds it).
    pub key: Arc<[u8]>,
    /// Offset of the record in the shard.
    pub offset: u64,
    /// Length of the record in the shard.
    pub len: u64,
    /// crc32c of the record's bytes in the shard.
    pub crc: u32,
}

/// Bytes a sidecar record of a `key_len`-byte key takes.
pub const fn idx_len(key_len: usize) -> usize {
    IDX_FIXED + key_len.div_ceil(8) * 8
}

/// Encodes a sidecar record.
pub fn encode_idx(kind: [u8; 4], key: &[u8], offset: u64, len: u64, crc: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(IDX_FIXED + key.len().div_ceil(8) * 8);
    r.extend_from_slice(&kind);
    r.extend_from_slice(&(key.len() as u32).to_le_bytes());
    r.extend_from_slice(&offset.to_le_bytes());
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&crc.to_le_bytes());
    let own = crc32c::crc32c_append(crc32c::crc32c(&r), key);
    r.extend_from_slice(&own.to_le_bytes());
    r.extend_from_slice(key);
    r.resize(IDX_FIXED + key.len().div_ceil(8) * 8, 0);
    r
}

/// Why reading a sidecar stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdxStop {
    /// It ended cleanly.
    End,
    /// A record is cut short or fails its checksum at this offset: a torn
    /// tail (or damage), and nothing after it is trusted.
    Torn(u64),
}

/// Decodes the records of a sidecar file's bytes, stopping at the first
/// record that is incomplete or fails its checksum. Returns the records,
/// the length of the valid prefix and why it stopped.
///
/// `bytes` are the sidecar's bytes from offset `start` on (0: the whole
/// file, magic included); offsets returned are file offsets.
pub fn decode_idx(bytes: &[u8], start: u64, max_key: usize) -> (Vec<IdxRecord>, u64, IdxStop) {
    let mut out = Vec::new();
    let mut at = 0;
    if start == 0 {
        if bytes.len() < IDX_MAGIC.len() || &bytes[..IDX_MAGIC.len()] != IDX_MAGIC {
            return (out, 0, IdxStop::Torn(0));
        }
        at = IDX_MAGIC.len();
    }
    while at < bytes.len() {
        match decode_one(&bytes[at..], max_key) {
            Some((rec, used)) => {
                out.push(rec);
                at += used;
            }
            None => return (out, start + at as u64, IdxStop::Torn(start + at as u64)),
        }
    }
    (out, start + at as u64, IdxStop::End)
}

/// Valid sidecar records after a damaged one: every record that decodes,
/// with its own checksum holding, at an 8-byte aligned file offset after
/// `from` (records start at such offsets). `bytes` is the whole file.
pub fn resync_idx(bytes: &[u8], from: u64, max_key: usize) -> Vec<(u64, IdxRecord)> {
    let mut out = Vec::new();
    let mut at = (from as usize + 8) / 8 * 8;
    while at + IDX_FIXED <= bytes.len() {
        match decode_one(&bytes[at..], max_key) {
            Some((rec, used)) => {
                out.push((at as u64, rec));
                at += used;
            }
            None => at += 8,
        }
    }
    out
}

/// Whether the bytes at a sidecar's first bad record look like a torn
/// write (zeros, or the start of a record cut short) rather than damage
/// (a complete record failing its checksum, or bytes no record starts
/// with).
pub fn torn_like(tail: &[u8], max_key: usize) -> bool {
    if tail.iter().all(|&b| b == 0) {
        return true;
    }
    let n = tail.len().min(4);
    if tail[..n] != PUT[..n] && tail[..n] != DEL[..n] {
        return false;
    }
    if tail.len() < 8 {
        return true;
    }
    let key_len = u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]) as usize;
    (1..=max_key).contains(&key_len) && tail.len() < idx_len(key_len)
}

fn decode_one(b: &[u8], max_key: usize) -> Option<(IdxRecord, usize)> {
    let fixed = b.get(..IDX_FIXED)?;
    let word4 = |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
    let word8 = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&fixed[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let kind = [fixed[0], fixed[1], fixed[2], fixed[3]];
    if kind != PUT && kind != DEL {
        return None;
    }
    let key_len = word4(4) as usize;
    if key_len == 0 || key_len > max_key {
        return None;
    }
    let used = idx_len(key_len);
    let key = b.get(IDX_FIXED..IDX_FIXED + key_len)?;
    let padding = b.get(IDX_FIXED + key_len..used)?;
    let own = crc32c::crc32c_append(crc32c::crc32c(&fixed[..28]), key);
    if own != word4(28) || padding.iter().any(|&p| p != 0) {
        return None;
    }
    Some((
        IdxRecord {
            kind,
            key: Arc::from(key),
            offset: word8(8),
            len: word8(16),
            crc: word4(24),
        },
        used,
    ))
}

/// The manifest: the shards that make up the store, in write order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Bumped by every change of the shard list.
    pub generation: u64,
    /// Shard numbers in write order; the last one is the one appended to.
    pub shards: Vec<u32>,
}
