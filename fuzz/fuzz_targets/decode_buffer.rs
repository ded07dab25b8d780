//! decode_buffer on arbitrary bytes: never a panic; whatever decodes
//! re-encodes to the same bytes, and every view converts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenstore::{decode_buffer, encode_buffer, Tensors};

fuzz_target!(|data: &[u8]| {
    let Ok(views) = decode_buffer(data) else {
        assert!(Tensors::parse(data).is_err());
        return;
    };
    // A checked buffer is canonical: encoding its views gives it back.
    assert_eq!(encode_buffer(&views).unwrap(), data);
    let parsed = Tensors::parse(data).unwrap();
    assert_eq!(parsed.len(), views.len());
    for (a, b) in parsed.iter().zip(&views) {
        assert!(a == *b);
        // Every view converts to an owned tensor (b1 bytes may be refused).
        match a.to_tensor() {
            Ok(t) => assert!(t.view() == a),
            Err(e) => assert!(matches!(e, tenstore::Error::BadBool { .. }), "{e}"),
        }
    }
});
