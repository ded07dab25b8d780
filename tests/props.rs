//! Property tests: round trips for random tensors, and no panic on any
//! input.

use proptest::prelude::*;
use tenstore::{
    decode_buffer, decode_list, encode_buffer, encode_into, encode_list, encoded_len, read_all,
    write, DType, Tensor, TensorRef, TensorView, Tensors,
};

#[derive(Debug, Clone)]
struct Raw {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn raw_tensor() -> impl Strategy<Value = Raw> {
    (
        "[a-zA-Z0-9_]{0,8}",
        prop::sample::select(DType::ALL.to_vec()),
        prop::collection::vec(0usize..5, 0..5),
    )
        .prop_flat_map(|(name, dtype, shape)| {
            let n = shape.iter().product::<usize>() * dtype.itemsize();
            let bytes = if dtype == DType::Bool {
                prop::collection::vec(0u8..2, n).boxed()
            } else {
                prop::collection::vec(any::<u8>(), n).boxed()
            };
            bytes.prop_map(move |data| Raw {
                name: name.clone(),
                dtype,
                shape: shape.clone(),
                data,
            })
        })
}

fn refs(raws: &[Raw]) -> Vec<TensorRef<'_>> {
    raws.iter()
        .map(|r| TensorRef::raw(&r.name, r.dtype, &r.shape, &r.data).unwrap())
        .collect()
}

fn same(view: &TensorView<'_>, raw: &Raw) -> bool {
    view.name() == raw.name
        && view.dtype() == raw.dtype
        && view.shape() == raw.shape[..]
        && view.data() == &raw.data[..]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("TENSTORE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn buffers_round_trip(raws in prop::collection::vec(raw_tensor(), 0..6)) {
        let refs = refs(&raws);
        let bytes = encode_buffer(&refs).unwrap();
        prop_assert_eq!(bytes.len(), encoded_len(&refs).unwrap());
        let views = decode_buffer(&bytes).unwrap();
        prop_assert_eq!(views.len(), raws.len());
        for (v, r) in views.iter().zip(&raws) {
            prop_assert!(same(v, r), "{:?} vs {:?}", v, r);
        }
        let parsed = Tensors::parse(&bytes).unwrap();
        for r in &raws {
            let found = parsed.get_by_name(&r.name).unwrap();
            prop_assert_eq!(found.name(), r.name.as_str());
            // The first tensor of that name, whole.
            let first = raws.iter().find(|x| x.name == r.name).unwrap();
            prop_assert!(same(&found, first), "{:?} vs {:?}", found, first);
        }
        // A name no tensor has (the strategy never makes '~').
        prop_assert!(parsed.get_by_name("~absent").is_none());
        let mut into = vec![0xFFu8; bytes.len()];
        encode_into(&refs, &mut into).unwrap();
        prop_assert_eq!(&into, &bytes);
    }

    #[test]
    fn frames_round_trip(raws in prop::collection::vec(raw_tensor(), 0..6)) {
        let refs = refs(&raws);
        let frames = encode_list(&refs);
        prop_assert_eq!(frames.len(), 2 * raws.len());
        let views = decode_list(&frames).unwrap();
        prop_assert_eq!(views.len(), raws.len());
        for (v, r) in views.iter().zip(&raws) {
            prop_assert!(same(v, r));
        }
    }

    #[test]
    fn streams_and_owned_tensors_round_trip(raws in prop::collection::vec(raw_tensor(), 0..6)) {
        let refs = refs(&raws);
        let mut stream = Vec::new();
        write(&mut stream, &refs).unwrap();
        prop_assert_eq!(&stream, &encode_buffer(&refs).unwrap());
        let owned: Vec<Tensor> = read_all(&mut stream.as_slice()).unwrap();
        prop_assert_eq!(owned.len(), raws.len());
        for (t, r) in owned.iter().zip(&raws) {
            prop_assert!(same(&t.view(), r));
        }
        prop_assert_eq!(encode_buffer(&owned).unwrap(), stream);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let a = decode_buffer(&bytes).is_ok();
        let b = read_all(&mut bytes.as_slice()).is_ok();
        prop_assert_eq!(a, b, "buffer and stream decoders agree");
        let split = bytes.len() / 2;
        let frames = [&bytes[..split], &bytes[split..]];
        let _ = decode_list(&frames);
    }

    #[test]
    fn damaged_encodings_are_refused_or_decode_consistently(
        raws in prop::collection::vec(raw_tensor(), 1..4),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = encode_buffer(&refs(&raws)).unwrap();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let from_buffer = decode_buffer(&bytes);
        let from_stream = read_all(&mut bytes.as_slice());
        // The stream reader builds bools and refuses bytes other than 0/1;
        // the buffer decoder hands out views and checks them when used.
        // Where both fail they may name different faults (the stream stops
        // at the first, a bool byte; the buffer at a later header).
        let agree = matches!(
            (&from_buffer, &from_stream),
            (Ok(_), Ok(_)) | (Ok(_), Err(tenstore::Error::BadBool { .. })) | (Err(_), Err(_))
        );
        prop_assert!(agree, "buffer {:?} vs stream {:?}", from_buffer.as_ref().err(), from_stream.as_ref().err());
        if let Ok(views) = from_buffer {
            // Whatever decodes re-encodes to the same bytes.
            prop_assert_eq!(encode_buffer(&views).unwrap(), bytes.clone());
        }
    }
}
