//! Reading records straight from a shard, without its sidecar: what
//! `reindex` rebuilds sidecars from, and what recovery and readers use to
//! tell a torn tail from records a damaged sidecar no longer covers.

use crate::codec::{decode_pair, read_chunk};
use crate::dtype::DType;
use crate::error::Error;
use crate::store::shard::layout::{IdxRecord, DEL, KEY_NAME, PUT, TOMB_NAME};

/// Why a scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Every byte was read, ending at a chunk boundary.
    End,
    /// A chunk at this offset runs past the end of the bytes (a torn
    /// write).
    Truncated(u64),
    /// The bytes at this offset are not a chunk of a record (damage, or
    /// zeros a machine crash left).
    Malformed(u64),
}

/// What a scan found.
pub(crate) struct Scan {
    /// Whole records: each is followed by the start of another record, or
    /// (the last one, when `stop` is `End`) by the end of the bytes. A
    /// record that ends at the end of the bytes may have lost trailing
    /// tensors to a torn write: nothing in a shard says how many it had.
    pub records: Vec<IdxRecord>,
    /// The record the scan stopped inside of, torn or damaged: its kind,
    /// key and offset. Not in `records`.
    pub torn: Option<([u8; 4], Vec<u8>, u64)>,
    /// Why the scan stopped.
    pub stop: ScanStop,
}

impl Scan {
    /// Records followed by another record: certainly whole.
    pub fn closed(&self) -> usize {
        match self.stop {
            ScanStop::End => self.records.len().saturating_sub(1),
            _ => self.records.len(),
        }
    }
}

/// Scans the records of a shard's bytes from `start` (the offset of a
/// record boundary) up to the first damaged or incomplete chunk.
pub(crate) fn scan(bytes: &[u8], start: usize) -> Scan {
    let mut records = Vec::new();
    // The record being read: kind, key, start.
    let mut open: Option<([u8; 4], Vec<u8>, usize)> = None;
    let mut offset = start;
    let mut tensor = 0;
    let mut stop = ScanStop::End;
    let close =
        |open: &mut Option<([u8; 4], Vec<u8>, usize)>, end: usize, records: &mut Vec<IdxRecord>| {
            if let Some((kind, key, start)) = open.take() {
                records.push(IdxRecord {
                    kind,
                    key: key.into(),
                    offset: start as u64,
                    len: (end - start) as u64,
                    crc: crc32c::crc32c(&bytes[start..end]),
                });
            }
        };
    let stop_at = |e: &Error, at: usize| match e {
        Error::Truncated { .. } => ScanStop::Truncated(at as u64),
        _ => ScanStop::Malformed(at as u64),
    };
    while offset < bytes.len() {
        let (header, next) = match read_chunk(bytes, offset) {
            Ok(c) => c,
            Err(e) => {
                stop = stop_at(&e, offset);
                break;
            }
        };
        let (data, after) = match read_chunk(bytes, next) {
            Ok(c) => c,
            Err(e) => {
                stop = stop_at(&e, offset);
                break;
            }
        };
        let Ok(view) = decode_pair(tensor, header, data) else {
            stop = ScanStop::Malformed(offset as u64);
            break;
        };
        let marker = view.dtype() == DType::U8 && view.ndim() == 1 && !view.data().is_empty();
        if marker && (view.name() == KEY_NAME || view.name() == TOMB_NAME) {
            close(&mut open, offset, &mut records);
            let kind = if view.name() == KEY_NAME { PUT } else { DEL };
            open = Some((kind, view.data().to_vec(), offset));
        } else if open.is_none() {
            // Tensors before any key: not a shard record.
            stop = ScanStop::Malformed(offset as u64);
            break;
        }
        tensor += 1;
        offset = after;
    }
    let torn = if stop == ScanStop::End {
        close(&mut open, offset, &mut records);
        None
    } else {
        open.map(|(kind, key, at)| (kind, key, at as u64))
    };
    Scan {
        records,
        torn,
        stop,
    }
}
