//! Chunks: the framing every tenbin buffer, file and stream is made of.
//!
//! A chunk is the magic `~TenBin~`, a little-endian int64 payload length
//! `n`, the payload, and zero padding up to a multiple of 64 bytes of `n`.

use crate::error::{escape, Error, Result};

/// The eight bytes every chunk starts with.
pub const MAGIC: [u8; 8] = *b"~TenBin~";

/// Bytes before a chunk's payload: magic and length.
pub(crate) const PREFIX: usize = 16;

/// Payloads are padded to a multiple of this.
pub(crate) const PAD: usize = 64;

/// Zero bytes to write padding from.
pub(crate) const ZEROS: [u8; PAD] = [0; PAD];

/// `n` rounded up to a multiple of 64, or `None` on overflow.
pub(crate) const fn padded(n: usize) -> Option<usize> {
    match n.checked_add(PAD - 1) {
        Some(m) => Some(m / PAD * PAD),
        None => None,
    }
}

/// Zero bytes that follow an `n`-byte payload.
pub(crate) const fn pad_len(n: usize) -> usize {
    (PAD - n % PAD) % PAD
}

/// Bytes a chunk with an `n`-byte payload occupies, saturating: for error
/// messages about lengths that do not fit.
pub(crate) const fn chunk_len_u64(n: u64) -> u64 {
    (n.saturating_add(PAD as u64 - 1) / PAD as u64 * PAD as u64).saturating_add(PREFIX as u64)
}

/// Bytes a chunk with an `n`-byte payload occupies, or `None` on overflow.
pub(crate) const fn chunk_len(n: usize) -> Option<usize> {
    match padded(n) {
        Some(p) => p.checked_add(PREFIX),
        None => None,
    }
}

/// The chunk prefix for an `n`-byte payload.
pub(crate) fn prefix(n: usize) -> [u8; PREFIX] {
    let mut p = [0u8; PREFIX];
    p[..8].copy_from_slice(&MAGIC);
    p[8..].copy_from_slice(&(n as u64).to_le_bytes());
    p
}

/// Checks a chunk prefix read at `offset`; returns the payload length as
/// declared (non-negative, not yet checked against what follows).
pub(crate) fn parse_prefix(p: &[u8; PREFIX], offset: u64) -> Result<u64> {
    if p[..8] != MAGIC {
        return Err(Error::BadMagic {
            offset,
            found: escape(&p[..8]),
        });
    }
    let len = i64::from_le_bytes(word(&p[8..]));
    u64::try_from(len).map_err(|_| Error::NegativeLength { offset, len })
}

/// Eight bytes as an array; `bytes` must be at least 8 long.
pub(crate) fn word(bytes: &[u8]) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[..8]);
    w
}

/// Checks that padding read for the chunk at `offset` is all zero; `start`
/// is the padding's own offset.
pub(crate) fn check_padding(pad: &[u8], offset: u64, start: u64) -> Result<()> {
    // Branch-free over the (at most 63) bytes; find the culprit only when
    // there is one.
    if pad.iter().fold(0u8, |acc, &b| acc | b) == 0 {
        return Ok(());
    }
    let i = pad.iter().position(|&b| b != 0).unwrap_or(0);
    Err(Error::NonZeroPadding {
        offset,
        at: start + i as u64,
    })
}

/// Reads the chunk at `offset` of `buf`, checking magic, length, padding
/// and that all of it is really there. Returns the payload and the offset
/// of the next chunk.
pub(crate) fn read_chunk(buf: &[u8], offset: usize) -> Result<(&[u8], usize)> {
    let available = buf.len().saturating_sub(offset);
    let truncated = |needed: u64| Error::Truncated {
        offset: offset as u64,
        needed,
        available: available as u64,
    };
    let p: &[u8; PREFIX] = buf
        .get(offset..)
        .and_then(|rest| rest.get(..PREFIX))
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| truncated(PREFIX as u64))?;
    let len = parse_prefix(p, offset as u64)?;
    // Checked against what is there before anything is done with it.
    let total = usize::try_from(len)
        .ok()
        .and_then(chunk_len)
        .filter(|&t| t <= available)
        .ok_or_else(|| truncated(chunk_len_u64(len)))?;
    let len = len as usize;
    let start = offset + PREFIX;
    let payload = &buf[start..start + len];
    let end = offset + total;
    check_padding(&buf[start + len..end], offset as u64, (start + len) as u64)?;
    Ok((payload, end))
}

/// Frames byte strings as chunks, one after another: the reference's
/// `encode_chunks`.
///
/// ```
/// use tenstore::{decode_chunks, encode_chunks};
///
/// let buf = encode_chunks(&[&b"abc"[..], &[]]);
/// assert_eq!(buf.len(), (16 + 64) + 16);
/// assert_eq!(decode_chunks(&buf)?, vec![&b"abc"[..], &[]]);
/// # Ok::<(), tenstore::Error>(())
/// ```
pub fn encode_chunks<P: AsRef<[u8]>>(payloads: &[P]) -> Vec<u8> {
    let total = payloads
        .iter()
        .map(|p| chunk_len(p.as_ref().len()).unwrap_or(usize::MAX))
        .fold(0usize, usize::saturating_add);
    let mut out = Vec::with_capacity(total);
    for p in payloads {
        let p = p.as_ref();
        out.extend_from_slice(&prefix(p.len()));
        out.extend_from_slice(p);
        out.extend_from_slice(&ZEROS[..pad_len(p.len())]);
    }
    out
}

/// Splits a buffer into its chunks' payloads, borrowed: the reference's
/// `decode_chunks`, but strict: every chunk must be complete, padding
/// included, and the buffer must end where a chunk ends.
pub fn decode_chunks(buf: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let (payload, next) = read_chunk(buf, offset)?;
        out.push(payload);
        offset = next;
    }
    Ok(out)
}
