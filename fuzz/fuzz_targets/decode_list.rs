//! decode_list on arbitrary frames: never a panic; whatever decodes
//! re-encodes to the same frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenstore::{decode_list, encode_list};

/// Splits the input into frames: each frame is a two-byte little-endian
/// length followed by that many bytes (cut short at the end).
fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let frames = frames(data);
    let Ok(views) = decode_list(&frames) else {
        return;
    };
    let again = encode_list(&views);
    assert_eq!(again.len(), frames.len());
    for (a, b) in again.iter().zip(&frames) {
        assert_eq!(&a[..], *b);
    }
});
