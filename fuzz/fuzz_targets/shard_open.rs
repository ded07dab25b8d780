//! Opening a shard store made of arbitrary shard and sidecar bytes: never
//! a panic, never a read outside the files; recovery leaves a store whose
//! visible samples all decode or are reported by verify (under their own
//! key), and appending to the recovered store works.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenstore::store::{ShardOptions, ShardStore};

/// The line `verify` starts with for a problem of the sample under `key`.
fn verify_prefix(key: &[u8]) -> String {
    format!("sample {:?}:", key.escape_ascii().to_string())
}

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
        // The manifest and metadata are sound, so both opens must work:
        // damage in the shard and sidecar is for recovery and verify.
        let store = ShardStore::open(
            dir.path(),
            &ShardOptions {
                read_only,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("open (read_only {read_only}) failed: {e}"));
        let reader = store
            .reader()
            .unwrap_or_else(|e| panic!("reader (read_only {read_only}) failed: {e}"));
        let problems = reader.verify();
        let keys: Vec<Vec<u8>> = reader.iter().keys().map(<[u8]>::to_vec).collect();
        let mut bad = 0;
        for key in &keys {
            // A sample that does not read, or a tensor of it that does not
            // convert (a bool byte other than 0 or 1 is stored tenbin and
            // no damage verify looks for).
            let failed = match reader.get(key) {
                Ok(Some(s)) => s.iter().any(|v| match v.to_tensor() {
                    Ok(_) => false,
                    Err(tenstore::Error::BadBool { .. }) => false,
                    Err(_) => true,
                }),
                Ok(None) => panic!("listed key {:?} not found", key.escape_ascii().to_string()),
                Err(_) => true,
            };
            if failed {
                bad += 1;
                let prefix = verify_prefix(key);
                assert!(
                    problems.iter().any(|p| p.starts_with(&prefix)),
                    "sample {:?} does not read, and verify does not report it: {problems:?}",
                    key.escape_ascii().to_string()
                );
            }
        }
        // Every sample that does not read is one verify reports.
        assert!(
            bad <= problems.len(),
            "{bad} unreadable, {} reported",
            problems.len()
        );
        // Iterating in write order reads the same samples.
        let iterated = reader.iter().count();
        assert_eq!(iterated, keys.len());
    };
    check(true);
    // As the writer: recovery cuts what does not belong, then appends work.
    check(false);
    let store = ShardStore::open(dir.path(), &ShardOptions::default())
        .unwrap_or_else(|e| panic!("reopening the recovered store failed: {e}"));
    let x = [1u8, 2, 3];
    let t = tenstore::TensorRef::raw("x", tenstore::DType::U8, &[3], &x).unwrap();
    store
        .put(b"fuzz-new", &[t])
        .unwrap_or_else(|e| panic!("appending to the recovered store failed: {e}"));
    let r = store.reader().unwrap();
    assert_eq!(r.require(b"fuzz-new").unwrap().get(0).unwrap().data(), &x);
});
