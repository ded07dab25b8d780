//! read from a stream of arbitrary bytes: never a panic, allocation capped
//! by what arrives; agrees with decode_buffer, and what it reads re-encodes
//! to the stream's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenstore::{decode_buffer, encode_buffer, read_all};

fuzz_target!(|data: &[u8]| {
    let streamed = read_all(&mut &data[..]);
    let buffered = decode_buffer(data);
    // b1 bytes other than 0/1 are refused by the stream reader (it builds
    // bools) but not by decode_buffer (views are checked when used).
    match (&streamed, &buffered) {
        (Ok(tensors), Ok(views)) => {
            assert_eq!(tensors.len(), views.len());
            assert_eq!(encode_buffer(tensors).unwrap(), data);
        }
        (Err(tenstore::Error::BadBool { .. }), Ok(_)) => {}
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "stream {:?} vs buffer {:?}",
            a.as_ref().err(),
            b.as_ref().err()
        ),
    }
});
