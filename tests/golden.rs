//! The reference's own vectors (written by webdataset.tenbin 1.0.2, copied
//! from shared/golden): every file decodes to the manifest, every encoding
//! reproduces the reference's bytes, every malformed file is refused with
//! the right error.

use std::fs;
use std::path::{Path, PathBuf};

use half::f16;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tenstore::{
    decode_buffer, decode_chunks, decode_list, encode_buffer, encode_chunks, encode_list, load,
    read_all, DType, Error, Tensor, TensorView,
};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn manifest() -> Value {
    serde_json::from_slice(&fs::read(golden().join("manifest.json")).unwrap()).unwrap()
}

fn files() -> Vec<(String, Vec<Value>)> {
    let m = manifest();
    let files = m["files"].as_object().unwrap();
    assert_eq!(files.len(), 10, "manifest lists ten files");
    files
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().clone()))
        .collect()
}

fn multipart(name: &str) -> Vec<Vec<u8>> {
    let dir = golden().join(name.replace(".ten", ".multipart"));
    let mut parts: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    parts.iter().map(|p| fs::read(p).unwrap()).collect()
}

/// The first elements of a view, as JSON numbers, exactly.
fn first_values(v: &TensorView<'_>, n: usize) -> Vec<Value> {
    fn take<T: tenstore::Element>(
        v: &TensorView<'_>,
        n: usize,
        f: impl Fn(T) -> Value,
    ) -> Vec<Value> {
        v.to_vec::<T>()
            .unwrap()
            .into_iter()
            .take(n)
            .map(f)
            .collect()
    }
    match v.dtype() {
        DType::F16 => take(v, n, |x: f16| Value::from(f64::from(x))),
        DType::F32 => take(v, n, |x: f32| Value::from(f64::from(x))),
        DType::F64 => take(v, n, |x: f64| Value::from(x)),
        DType::I8 => take(v, n, |x: i8| Value::from(x)),
        DType::I16 => take(v, n, |x: i16| Value::from(x)),
        DType::I32 => take(v, n, |x: i32| Value::from(x)),
        DType::I64 => take(v, n, |x: i64| Value::from(x)),
        DType::U8 => take(v, n, |x: u8| Value::from(x)),
        DType::U16 => take(v, n, |x: u16| Value::from(x)),
        DType::U32 => take(v, n, |x: u32| Value::from(x)),
        DType::U64 => take(v, n, |x: u64| Value::from(x)),
        other => panic!("golden vectors hold no {other}"),
    }
}

fn check_against_manifest(file: &str, views: &[TensorView<'_>], expected: &[Value]) {
    assert_eq!(views.len(), expected.len(), "{file}: tensor count");
    for (v, e) in views.iter().zip(expected) {
        let what = format!("{file}/{}", e["name"]);
        assert_eq!(v.name(), e["name"].as_str().unwrap(), "{what}: name");
        assert_eq!(
            v.dtype().code(),
            e["dtype"].as_str().unwrap(),
            "{what}: dtype"
        );
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(v.shape().to_vec(), shape, "{what}: shape");
        assert_eq!(
            v.nbytes() as u64,
            e["nbytes"].as_u64().unwrap(),
            "{what}: nbytes"
        );
        let sha = format!("{:x}", Sha256::digest(v.data()));
        assert_eq!(sha, e["sha256"].as_str().unwrap(), "{what}: sha256");
        let first = e["first"].as_array().unwrap();
        assert_eq!(&first_values(v, first.len()), first, "{what}: first values");
    }
}

#[test]
fn every_golden_buffer_decodes_to_the_manifest() {
    for (file, expected) in files() {
        let bytes = fs::read(golden().join(&file)).unwrap();
        let views = decode_buffer(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_against_manifest(&file, &views, &expected);
    }
}

#[test]
fn every_golden_multipart_message_decodes_to_the_manifest() {
    for (file, expected) in files() {
        let frames = multipart(&file);
        let views = decode_list(&frames).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_against_manifest(&file, &views, &expected);
    }
}

#[test]
fn every_golden_file_loads_and_streams_to_the_manifest() {
    for (file, expected) in files() {
        let path = golden().join(&file);
        // SAFETY: the test's own copy of the vectors; nothing writes it.
        let mapped = unsafe { load(&path) }.unwrap();
        check_against_manifest(&file, &mapped.tensors().to_vec(), &expected);

        let owned: Vec<Tensor> = read_all(&mut fs::File::open(&path).unwrap()).unwrap();
        let views: Vec<TensorView<'_>> = owned.iter().map(Tensor::view).collect();
        check_against_manifest(&file, &views, &expected);
    }
}

#[test]
fn re_encoding_reproduces_the_reference_bytes() {
    for (file, _) in files() {
        let bytes = fs::read(golden().join(&file)).unwrap();
        let views = decode_buffer(&bytes).unwrap();
        assert_eq!(
            encode_buffer(&views).unwrap(),
            bytes,
            "{file}: encode_buffer"
        );

        let owned: Vec<Tensor> = views.iter().map(|v| v.to_tensor().unwrap()).collect();
        assert_eq!(
            encode_buffer(&owned).unwrap(),
            bytes,
            "{file}: encode_buffer of owned tensors"
        );

        let frames: Vec<Vec<u8>> = encode_list(&views).iter().map(|f| f.to_vec()).collect();
        assert_eq!(frames, multipart(&file), "{file}: encode_list");

        let chunks = decode_chunks(&bytes).unwrap();
        assert_eq!(chunks.len(), 2 * views.len());
        assert_eq!(encode_chunks(&chunks), bytes, "{file}: encode_chunks");

        let mut stream = Vec::new();
        tenstore::write(&mut stream, &views).unwrap();
        assert_eq!(stream, bytes, "{file}: write");
    }
}

/// Which reader refused a malformed vector.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// `decode_buffer`, with the whole buffer at hand.
    Buffer,
    /// `read_all`, from a stream of unknown length.
    Stream,
    /// `load`, a mapped file.
    Load,
}

/// What each malformed vector must be refused as, by each reader.
fn expected_error(file: &str, via: Via, e: &Error) -> bool {
    match file {
        "truncated_header.ten" => matches!(e, Error::Truncated { offset: 0, .. }),
        "truncated_data.ten" => matches!(
            e,
            Error::Truncated {
                offset: 3328,
                needed: 80,
                available: 60
            }
        ),
        "bad_magic.ten" => matches!(e, Error::BadMagic { offset: 0, .. }),
        "negative_len.ten" => matches!(
            e,
            Error::NegativeLength {
                offset: 0,
                len: -64
            }
        ),
        // With the bytes at hand, the claim is more than there is; a stream
        // cannot know that and refuses a header length no tensor needs.
        "huge_len.ten" if via == Via::Stream => matches!(
            e,
            Error::BadHeaderLength {
                tensor: 0,
                len: 0x4000_0000_0000_0000
            }
        ),
        "huge_len.ten" => matches!(
            e,
            Error::Truncated {
                offset: 0,
                needed: 0x4000_0000_0000_0010,
                available: 3488,
            }
        ),
        "huge_ndim.ten" => matches!(
            e,
            Error::BadNdim {
                tensor: 0,
                ndim: 1099511627776,
                room: 3
            }
        ),
        "shape_overflow.ten" => matches!(e, Error::ShapeOverflow { tensor: 0 }),
        "unknown_dtype.ten" => matches!(e, Error::UnknownDtype { tensor: 0, code } if code == "zz"),
        "shape_mismatch.ten" => matches!(
            e,
            Error::DataLength {
                tensor: 0,
                expected: 2048,
                actual: 3072,
                ..
            }
        ),
        "header_only.ten" => matches!(
            e,
            Error::MissingData {
                tensor: 0,
                offset: 0
            }
        ),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn every_malformed_vector_is_refused_with_its_own_error() {
    let m = manifest();
    let bad = m["bad"].as_object().unwrap();
    assert_eq!(bad.len(), 10);
    for file in bad.keys() {
        let path = golden().join("bad").join(file);
        let bytes = fs::read(&path).unwrap();

        let e = decode_buffer(&bytes).expect_err(file);
        assert!(
            expected_error(file, Via::Buffer, &e),
            "{file}: decode_buffer gave {e:?}"
        );
        assert!(!e.to_string().is_empty());

        let e = read_all(&mut bytes.as_slice()).expect_err(file);
        assert!(
            expected_error(file, Via::Stream, &e),
            "{file}: read gave {e:?}"
        );

        // SAFETY: the test's own copy of the vectors; nothing writes it.
        let e = unsafe { load(&path) }.expect_err(file);
        assert!(
            expected_error(file, Via::Load, &e),
            "{file}: load gave {e:?}"
        );
    }
}

#[test]
fn error_messages_say_where() {
    let bytes = fs::read(golden().join("bad/shape_mismatch.ten")).unwrap();
    let msg = decode_buffer(&bytes).unwrap_err().to_string();
    assert_eq!(
        msg,
        "tensor 0: data is 3072 bytes, but dtype u1 and its shape need 2048"
    );
    let bytes = fs::read(golden().join("bad/bad_magic.ten")).unwrap();
    let msg = decode_buffer(&bytes).unwrap_err().to_string();
    assert_eq!(
        msg,
        "not a tenbin chunk at byte 0: magic is \"~TenBun~\", expected \"~TenBin~\""
    );
}

#[test]
fn fixed_rank_views_match_dynamic_ones() {
    use ndarray::{Ix0, Ix2, Ix3};
    let bytes = fs::read(golden().join("sample.ten")).unwrap();
    let views = decode_buffer(&bytes).unwrap();
    let image3 = views[0].array_d::<u8, Ix3>().unwrap();
    assert_eq!(image3.shape(), &[3, 32, 32]);
    assert_eq!(image3.into_dyn(), views[0].array::<u8>().unwrap());
    let e = views[0].array_d::<u8, Ix2>().unwrap_err();
    assert!(
        matches!(
            e,
            Error::WrongNdim {
                ndim: 3,
                requested: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        views[0].array_d::<f32, Ix3>(),
        Err(Error::WrongType { .. })
    ));
    let scalar = fs::read(golden().join("scalar.ten")).unwrap();
    let s = decode_buffer(&scalar).unwrap();
    assert_eq!(s[0].array_d::<f64, Ix0>().unwrap()[()], 1.020732912808432);
}
