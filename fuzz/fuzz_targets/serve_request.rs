//! The serve protocol on arbitrary request frames, against a small store:
//! never a panic; every reply is ok or err with a message, and ok replies
//! to get decode.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tenstore::serve::{handle, Limits, Reply};
use tenstore::store::{Backend, Store, StoreOptions};

fn store() -> &'static Store {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(
                dir.path(),
                &StoreOptions {
                    create: true,
                    backend: Some(Backend::Lmdb),
                    ..Default::default()
                },
            )
            .unwrap();
            for i in 0..20u8 {
                let x = [i; 5];
                let t = tenstore::TensorRef::raw("x", tenstore::DType::U8, &[5], &x).unwrap();
                store.put(format!("k{i}").as_bytes(), &[t]).unwrap();
            }
            (dir, store)
        })
        .1
}

fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&n, rest)) = data.split_first() {
        let n = (n as usize).min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    let reader = store.reader().unwrap();
    let request = frames(data);
    let limits = Limits {
        max_frames: 8,
        max_list: 50,
        max_reply_bytes: 4096,
        ..Limits::default()
    };
    match handle(&reader, &request, &limits) {
        Reply::Ok(parts) => {
            if request.first() == Some(&&b"get"[..]) {
                assert_eq!(parts.len(), request.len() - 1);
                for p in &parts {
                    tenstore::decode_buffer(p).unwrap();
                }
            }
        }
        Reply::Err(msg) => assert!(!msg.is_empty()),
    }
});
