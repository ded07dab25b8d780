//! Inputs the fuzzers found (tests/fuzz_cases/TARGET-NAME), each checked
//! against the same properties as its fuzz target, plus the fault each one
//! exposed.

use std::fs;
use std::path::Path;

use tenstore::{decode_buffer, encode_buffer, read_all, Error, Tensors};

/// The decode_buffer and read_stream targets' properties.
fn check_buffer(data: &[u8]) {
    match decode_buffer(data) {
        Ok(views) => {
            assert_eq!(encode_buffer(&views).unwrap(), data);
            for v in &views {
                match v.to_tensor() {
                    Ok(t) => assert!(t.view() == *v),
                    Err(e) => assert!(matches!(e, Error::BadBool { .. }), "{e}"),
                }
            }
        }
        Err(_) => assert!(Tensors::parse(data).is_err()),
    }
    match (read_all(&mut &data[..]), decode_buffer(data)) {
        (Ok(t), Ok(v)) => assert_eq!(t.len(), v.len()),
        (Err(Error::BadBool { .. }), Ok(_)) | (Err(_), Err(_)) => {}
        (a, b) => panic!("stream {:?} vs buffer {:?}", a.err(), b.err()),
    }
}

#[test]
fn every_fuzz_case_keeps_its_target_properties() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_cases");
    let mut n = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = fs::read(&path).unwrap();
        if name.starts_with("decode_buffer-") || name.starts_with("read_stream-") {
            check_buffer(&data);
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn a_zero_dim_does_not_hide_an_overflowing_shape() {
    // Found by the decode_buffer fuzzer: dims [2^48, 0, 3 * 2^56 + ...]
    // make an empty array, yet no array type can hold that shape, so
    // converting the view failed after decoding had accepted it.
    let data = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz_cases/decode_buffer-zero-dim-overflow.ten"),
    )
    .unwrap();
    let e = decode_buffer(&data).unwrap_err();
    assert!(matches!(e, Error::ShapeOverflow { tensor: 1 }), "{e:?}");
}
