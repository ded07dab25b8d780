//! Remote shard stores on loopback beside their peers:
//! `cargo bench --bench remote`.
//!
//! The store: 2,000 samples of u1 3x64x64 "image", f4 [10] "logits",
//! i8 [1] "label" (12,704 bytes of tenbin each: the `med` sample of
//! `benches/store.rs`), in shards of 4 MiB, published to an in-process S3
//! server (s3s + s3s-fs) on 127.0.0.1.
//!
//! - R1 warm-cache random `get` (every shard cached and mapped) beside
//!   the same `get`s on the local shard store.
//! - R2 cold sequential epoch (empty cache: whole shards fetched ahead of
//!   the reader) beside plain object_store GETs of the same shard objects,
//!   four at a time.
//! - R3 cold random `get` p50 (empty cache: one ranged GET per sample,
//!   each of a sample not read before) beside one raw object_store ranged
//!   GET of as many bytes, the two alternating; three runs of 400 each.
//!
//! Pass `--quick` (after `--`) for fewer rounds.

#[path = "../tests/s3server/mod.rs"]
mod s3server;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array1, Array3};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use tenstore::remote::{self, RemoteOptions};
use tenstore::store::{Backend, Order, ShardOptions, Store, StoreOptions};
use tenstore::Tensor;

const SAMPLES: usize = 2000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn make_store(dir: &Path) -> Vec<String> {
    let store = Store::open(
        dir,
        &StoreOptions {
            create: true,
            backend: Some(Backend::Shard),
            shard: ShardOptions {
                shard_limit: 4 << 20,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let mut keys = Vec::new();
    let mut batch = Vec::new();
    for i in 0..SAMPLES {
        let image =
            Array3::<u8>::from_shape_fn((3, 64, 64), |(c, y, x)| (c + y * 7 + x * 13 + i) as u8);
        let logits = Array1::<f32>::from_shape_fn(10, |j| (i * 10 + j) as f32);
        let label = Array1::<i64>::from_elem(1, (i % 1000) as i64);
        let key = format!("{i:08}");
        batch.push((
            key.clone(),
            vec![
                Tensor::new("image", image.into_dyn()).unwrap(),
                Tensor::new("logits", logits.into_dyn()).unwrap(),
                Tensor::new("label", label.into_dyn()).unwrap(),
            ],
        ));
        keys.push(key);
        if batch.len() == 256 {
            store.put_batch(&batch).unwrap();
            batch.clear();
        }
    }
    store.put_batch(&batch).unwrap();
    store.flush().unwrap();
    keys
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let keys = make_store(&local);
    let server = s3server::start(&tmp.path().join("s3"));
    let url = format!("s3://{}/bench", s3server::BUCKET);
    let opts = |cache: &Path| RemoteOptions {
        cache_dir: Some(cache.to_owned()),
        s3_config: server.s3_config(),
        ..Default::default()
    };
    let report = remote::publish(&local, &url, false, &opts(&tmp.path().join("c0"))).unwrap();
    let shards: Vec<(String, u64)> = report
        .published
        .objects
        .iter()
        .filter(|o| o.name.ends_with(".ten"))
        .map(|o| (o.name.clone(), o.size))
        .collect();
    let total: u64 = shards.iter().map(|s| s.1).sum();
    println!(
        "store: {SAMPLES} samples of 12,704 bytes, {} shards, {:.1} MB",
        shards.len(),
        total as f64 / 1e6
    );
    let mut rng = Rng(7);
    let order: Vec<usize> = (0..20_000)
        .map(|_| (rng.next() % SAMPLES as u64) as usize)
        .collect();

    // R1: warm-cache random get beside the local store.
    let local_store = Store::open(
        &local,
        &StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let warm_cache = tmp.path().join("warm");
    let remote_store =
        Store::open_remote(&url, &opts(&warm_cache), &StoreOptions::default()).unwrap();
    let lr = local_store.reader().unwrap();
    let rr = remote_store.reader().unwrap();
    assert_eq!(rr.samples(Order::Written).unwrap().count(), SAMPLES); // warm it
    let get_all = |r: &tenstore::store::Reader<'_>| {
        let t = Instant::now();
        for &i in &order {
            let s = r.require(keys[i].as_bytes()).unwrap();
            black_box(s.get(0).unwrap().data()[100]);
        }
        order.len() as f64 / t.elapsed().as_secs_f64()
    };
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(get_all(&rr));
        peer.push(get_all(&lr));
    }
    let (o, p) = (median(&mut ours), median(&mut peer));
    println!(
        "R1 warm random get: remote {:.0} gets/s, local shard store {:.0} gets/s: {:.2}x",
        o,
        p,
        o / p
    );
    drop(rr);
    drop(remote_store);

    // R2: cold sequential epoch beside plain GETs of the shard objects.
    let loc_store: Arc<dyn ObjectStore> = {
        let mut b = AmazonS3Builder::new().with_bucket_name(s3server::BUCKET);
        for (k, v) in server.s3_config() {
            b = b.with_config(k.parse::<AmazonS3ConfigKey>().unwrap(), v);
        }
        Arc::new(b.build().unwrap())
    };
    // The same shape as the runtime tenstore's remote reads run on (4
    // workers), so the two differ only in what they do per request.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let cache = tmp.path().join(format!("cold{round}"));
        let t = Instant::now();
        let store = Store::open_remote(&url, &opts(&cache), &StoreOptions::default()).unwrap();
        let r = store.reader().unwrap();
        let mut n = 0;
        for s in r.samples(Order::Written).unwrap() {
            black_box(s.unwrap().get(0).unwrap().data()[100]);
            n += 1;
        }
        ours.push(n as f64 / t.elapsed().as_secs_f64());
        drop(r);
        drop(store);
        let _ = std::fs::remove_dir_all(&cache);

        let t = Instant::now();
        rt.block_on(async {
            use futures_util::StreamExt;
            let gets = futures_util::stream::iter(shards.iter().map(|(name, _)| {
                let s = loc_store.clone();
                let p = ObjPath::from(format!("bench/{name}"));
                async move { s.get(&p).await.unwrap().bytes().await.unwrap().len() }
            }))
            .buffered(4)
            .collect::<Vec<usize>>()
            .await;
            black_box(gets);
        });
        peer.push(SAMPLES as f64 / t.elapsed().as_secs_f64());
    }
    let (o, p) = (median(&mut ours), median(&mut peer));
    println!(
        "R2 cold sequential epoch: remote {:.0} samples/s, plain GETs of the shards {:.0} samples/s: {:.2}x",
        o,
        p,
        o / p
    );

    // R3: cold random get p50 beside one raw ranged GET, alternating one
    // of each so both see the same load. Every get is of a sample not
    // fetched before (a permutation of the keys), in a fresh cache.
    let n = if quick { 100 } else { 400 };
    let mut distinct: Vec<usize> = (0..SAMPLES).collect();
    for i in (1..distinct.len()).rev() {
        distinct.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let name = &shards[0].0;
    let p = ObjPath::from(format!("bench/{name}"));
    for round in 0..if quick { 1 } else { 3 } {
        let cache = tmp.path().join(format!("cold-random{round}"));
        let store = Store::open_remote(&url, &opts(&cache), &StoreOptions::default()).unwrap();
        let r = store.reader().unwrap();
        let (mut ours, mut peer) = (Vec::new(), Vec::new());
        for (k, &i) in distinct.iter().skip(round * n).take(n).enumerate() {
            let t = Instant::now();
            let s = r.require(keys[i].as_bytes()).unwrap();
            black_box(s.get(0).unwrap().data()[100]);
            ours.push(t.elapsed().as_secs_f64());

            let start = (k as u64 * 12_800) % (shards[0].1 - 13_000);
            let t = Instant::now();
            let b = rt.block_on(async {
                let o = GetOptions {
                    range: Some(GetRange::Bounded(start..start + 12_800)),
                    ..Default::default()
                };
                loc_store
                    .get_opts(&p, o)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            });
            black_box(b);
            peer.push(t.elapsed().as_secs_f64());
        }
        drop(r);
        drop(store);
        let (o, p) = (median(&mut ours), median(&mut peer));
        println!(
            "R3 cold random get p50 (run {round}): remote {:.0} us, one raw ranged GET {:.0} us: {:.2}x",
            o * 1e6,
            p * 1e6,
            o / p
        );
    }
}
