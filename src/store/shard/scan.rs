//! Reading records straight from a shard, without its sidecar: what
//! `reindex` rebuilds sidecars from.

use crate::codec::{decode_pair, read_chunk};
use crate::dtype::DType;
use crate::store::shard::layout::{IdxRecord, DEL, KEY_NAME, PUT, TOMB_NAME};

/// The records of a shard's bytes, up to the first damaged or incomplete
/// chunk, and the offset where the last good record ends.
pub(crate) fn scan(bytes: &[u8]) -> (Vec<IdxRecord>, u64) {
    let mut records = Vec::new();
    // The record being read: kind, key, start.
    let mut open: Option<([u8; 4], Vec<u8>, usize)> = None;
    let mut offset = 0;
    let mut tensor = 0;
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
    while offset < bytes.len() {
        let Ok((header, next)) = read_chunk(bytes, offset) else {
            break;
        };
        let Ok((data, after)) = read_chunk(bytes, next) else {
            break;
        };
        let Ok(view) = decode_pair(tensor, header, data) else {
            break;
        };
        let marker = view.dtype() == DType::U8 && view.ndim() == 1 && !view.data().is_empty();
        if marker && (view.name() == KEY_NAME || view.name() == TOMB_NAME) {
            close(&mut open, offset, &mut records);
            let kind = if view.name() == KEY_NAME { PUT } else { DEL };
            open = Some((kind, view.data().to_vec(), offset));
        } else if open.is_none() {
            // Tensors before any key: not a shard record.
            break;
        }
        tensor += 1;
        offset = after;
    }
    let good_end = match &open {
        Some(_) => offset,
        None => records.last().map_or(0, |r| (r.offset + r.len) as usize),
    };
    close(&mut open, offset, &mut records);
    (records, good_end as u64)
}
