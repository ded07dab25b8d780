//! Opening a shard store made of arbitrary shard and sidecar bytes: never
//! a panic, never a read outside the files; recovery leaves a store whose
//! visible samples all decode or are reported by verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenstore::store::{ShardOptions, ShardStore};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first two bytes say where the shard ends and the sidecar begins.
    let split = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (shard, idx) = data[2..].split_at(split);
    // On a tmpfs when there is one: the writer's repairs fsync.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    std::fs::write(dir.path().join("000001.ten"), shard).unwrap();
    let mut sidecar = b"tenstore-idx-v1\n".to_vec();
    sidecar.extend_from_slice(idx);
    std::fs::write(dir.path().join("000001.idx"), &sidecar).unwrap();
    std::fs::write(
        dir.path().join("MANIFEST"),
        br#"{"generation":1,"shards":[1]}"#,
    )
    .unwrap();

    let check = |read_only: bool| {
        let Ok(store) = ShardStore::open(
            dir.path(),
            &ShardOptions {
                read_only,
                ..Default::default()
            },
        ) else {
            return;
        };
        let Ok(reader) = store.reader() else { return };
        let problems = reader.verify();
        let mut bad = 0;
        for sample in reader.iter() {
            match sample {
                Ok(s) => {
                    for v in s.iter() {
                        let _ = v.to_tensor();
                    }
                }
                Err(_) => bad += 1,
            }
        }
        // Every sample that does not read is one verify reports.
        assert!(
            bad <= problems.len(),
            "{bad} unreadable, {} reported",
            problems.len()
        );
    };
    check(true);
    // As the writer: recovery cuts what does not belong, then appends work.
    check(false);
    if let Ok(store) = ShardStore::open(dir.path(), &ShardOptions::default()) {
        let x = [1u8, 2, 3];
        let t = tenstore::TensorRef::raw("x", tenstore::DType::U8, &[3], &x).unwrap();
        if store.put(b"fuzz-new", &[t]).is_ok() {
            let r = store.reader().unwrap();
            assert_eq!(r.require(b"fuzz-new").unwrap().get(0).unwrap().data(), &x);
        }
    }
});
