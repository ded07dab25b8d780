//! The serve protocol without sockets: every command, and every bound
//! proven to hold.

use std::borrow::Cow;

use tenstore::serve::{handle, Limits, Reply};
use tenstore::store::{Backend, Store, StoreOptions};
use tenstore::{DType, TensorRef};

fn store(backend: Backend) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            create: true,
            backend: Some(backend),
            ..Default::default()
        },
    )
    .unwrap();
    let data: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; 1000]).collect();
    let batch: Vec<(String, Vec<TensorRef<'_>>)> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                format!("k{i:02}"),
                vec![TensorRef::raw("x", DType::U8, &[1000], d).unwrap()],
            )
        })
        .collect();
    store.put_batch(&batch).unwrap();
    store.flush().unwrap();
    (dir, store)
}

fn ok(reply: Reply<'_>) -> Vec<Vec<u8>> {
    match reply {
        Reply::Ok(frames) => frames.into_iter().map(Cow::into_owned).collect(),
        Reply::Err(e) => panic!("err {e}"),
    }
}

fn err(reply: Reply<'_>) -> String {
    match reply {
        Reply::Err(e) => e,
        Reply::Ok(f) => panic!("ok with {} frames", f.len()),
    }
}

#[test]
fn every_command_on_both_backends() {
    for backend in [Backend::Lmdb, Backend::Shard] {
        let (_dir, store) = store(backend);
        let r = store.reader().unwrap();
        let l = Limits::default();
        let got = ok(handle(&r, &[b"get", b"k03", b"k29"], &l));
        assert_eq!(got.len(), 2);
        assert_eq!(
            tenstore::decode_buffer(&got[0]).unwrap()[0].data(),
            &[3u8; 1000][..]
        );
        assert_eq!(
            tenstore::decode_buffer(&got[1]).unwrap()[0].data(),
            &[29u8; 1000][..]
        );
        let frames = ok(handle(&r, &[b"getm", b"k07"], &l));
        let views = tenstore::decode_list(&frames).unwrap();
        assert_eq!((views[0].name(), views[0].data()), ("x", &[7u8; 1000][..]));
        assert_eq!(ok(handle(&r, &[b"len"], &l)), [b"30".to_vec()]);
        let keys = ok(handle(&r, &[b"keys", b"k1", b"k12", b"3"], &l));
        assert_eq!(keys, [b"k13".to_vec(), b"k14".to_vec(), b"k15".to_vec()]);
        let all = ok(handle(&r, &[b"keys"], &l));
        assert_eq!(all.len(), 30);
        let info = ok(handle(&r, &[b"info"], &l));
        let json: serde_json::Value = serde_json::from_slice(&info[0]).unwrap();
        assert_eq!(json["backend"], backend.name());
        assert_eq!(json["samples"], 30);
        assert!(
            err(handle(&r, &[b"get", b"k03", b"nope"], &l)).contains("no sample with key \"nope\"")
        );
        assert!(err(handle(&r, &[b"fly"], &l)).contains("unknown command"));
        assert!(err(handle(&r, &[], &l)).contains("empty request"));
        assert!(err(handle(&r, &[b"get"], &l)).contains("at least one key"));
        assert!(err(handle(&r, &[b"getm", b"a", b"b"], &l)).contains("exactly one key"));
        assert!(err(handle(&r, &[b"len", b"x"], &l)).contains("no arguments"));
        assert!(err(handle(&r, &[b"keys", b"", b"", b"ten"], &l)).contains("decimal"));
    }
}

#[test]
fn each_bound_is_enforced() {
    let (_dir, store) = store(Backend::Lmdb);
    let r = store.reader().unwrap();
    let limits = Limits {
        max_frames: 5,
        max_key_len: 8,
        max_reply_bytes: 3000,
        max_list: 10,
        ..Limits::default()
    };
    // Keys per request.
    let roomy = Limits {
        max_reply_bytes: 1 << 20,
        ..limits.clone()
    };
    let five: Vec<&[u8]> = vec![b"get", b"k01", b"k02", b"k03", b"k04"];
    assert_eq!(ok(handle(&r, &five, &roomy)).len(), 4);
    let six: Vec<&[u8]> = vec![b"get", b"k01", b"k02", b"k03", b"k04", b"k05"];
    assert!(err(handle(&r, &six, &roomy)).contains("at most 5"));
    // Key length.
    assert!(err(handle(&r, &[b"get", b"k0123456789"], &limits)).contains("keys are 1 to 8 bytes"));
    assert!(err(handle(&r, &[b"get", b""], &limits)).contains("keys are 1 to 8 bytes"));
    assert!(
        err(handle(&r, &[b"keys", b"k0123456789", b"", b"5"], &limits)).contains("at most 8 bytes")
    );
    // Reply size: two samples of ~1.2 KB fit in 3,000 bytes, three do not.
    assert_eq!(ok(handle(&r, &[b"get", b"k01", b"k02"], &limits)).len(), 2);
    assert!(
        err(handle(&r, &[b"get", b"k01", b"k02", b"k03"], &limits)).contains("exceed 3000 bytes")
    );
    // List size.
    assert_eq!(
        ok(handle(&r, &[b"keys", b"", b"", b"10"], &limits)).len(),
        10
    );
    assert!(err(handle(&r, &[b"keys", b"", b"", b"11"], &limits)).contains("at most 10"));
    // A default-sized list is capped by max_list too (10,000 > 10).
    assert!(err(handle(&r, &[b"keys"], &limits)).contains("at most 10"));
}

#[test]
fn arbitrary_requests_get_an_answer() {
    let (_dir, store) = store(Backend::Shard);
    let r = store.reader().unwrap();
    let mut rng = 7u64;
    let limits = Limits::default();
    let mut oks = 0;
    for _ in 0..5000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = (rng % 6) as usize;
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|j| {
                let len = ((rng >> (j * 8)) % 12) as usize;
                let pick = [
                    b"get".to_vec(),
                    b"getm".to_vec(),
                    b"keys".to_vec(),
                    b"k05".to_vec(),
                ];
                if len < 4 {
                    pick[len].clone()
                } else {
                    (0..len).map(|x| (rng >> x) as u8).collect()
                }
            })
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        match handle(&r, &refs, &limits) {
            Reply::Ok(parts) => {
                assert!(parts.len() <= limits.max_list);
                check_ok(&refs, &parts);
                oks += 1;
            }
            Reply::Err(msg) => assert!(!msg.is_empty()),
        }
    }
    // Enough of the random requests were valid for the checks to mean
    // something.
    assert!(oks >= 100, "only {oks} ok replies");
}

/// What an ok reply to `request` must hold, on the store of [`store`]
/// (samples k00..k29, each one u1 tensor "x" of 1000 bytes, all `i`).
fn check_ok(request: &[&[u8]], parts: &[Cow<'_, [u8]>]) {
    let sample_no = |key: &[u8]| -> u8 {
        let text = std::str::from_utf8(key).unwrap();
        assert!(text.len() == 3 && text.starts_with('k'), "{text}");
        text[1..].parse().unwrap()
    };
    let shown = format!("{:?}", request);
    match request[0] {
        b"get" => {
            assert_eq!(parts.len(), request.len() - 1, "{shown}");
            for (key, part) in request[1..].iter().zip(parts) {
                let views = tenstore::decode_buffer(part).unwrap();
                assert_eq!(views.len(), 1, "{shown}");
                assert_eq!(views[0].data(), &[sample_no(key); 1000][..], "{shown}");
            }
        }
        b"getm" => {
            assert_eq!(request.len(), 2, "{shown}");
            let views = tenstore::decode_list(parts).unwrap();
            assert_eq!(views.len(), 1, "{shown}");
            assert_eq!(views[0].data(), &[sample_no(request[1]); 1000][..]);
        }
        b"keys" => {
            let prefix = request.get(1).copied().unwrap_or(b"");
            let after = request.get(2).copied().unwrap_or(b"");
            let want: Vec<Vec<u8>> = (0..30)
                .map(|i| format!("k{i:02}").into_bytes())
                .filter(|k| k.starts_with(prefix) && (after.is_empty() || &k[..] > after))
                .collect();
            let got: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
            // A LIMIT may cut the list short; what is there is its start.
            assert!(got.len() <= want.len(), "{shown}: {got:?}");
            assert_eq!(got[..], want[..got.len()], "{shown}");
            if request.len() < 4 {
                assert_eq!(got, want, "{shown}");
            }
        }
        b"len" => assert_eq!(parts, [Cow::Borrowed(&b"30"[..])], "{shown}"),
        b"info" => assert_eq!(parts.len(), 1, "{shown}"),
        other => panic!("ok reply to command {other:?}"),
    }
}
