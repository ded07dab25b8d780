//! Epoch plans (`tenstore::plan`): properties over random sample counts,
//! seeds, up to 64 ranks and 16 workers, every shuffle and both uneven
//! modes; then plans followed by readers of both backends.

use std::collections::HashSet;

use proptest::prelude::*;
use tenstore::ndarray::Array1;
use tenstore::plan::{EpochPlan, PlanConfig, PlanState, Shuffle, Uneven, BLOCK_WINDOW};
use tenstore::store::{Backend, Store, StoreOptions};
use tenstore::TensorRef;

fn shuffles() -> impl Strategy<Value = Shuffle> {
    prop_oneof![
        Just(Shuffle::None),
        Just(Shuffle::Full),
        (1u64..40).prop_map(|size| Shuffle::Blocks { size }),
    ]
}

fn unevens() -> impl Strategy<Value = Uneven> {
    prop_oneof![Just(Uneven::DropLast), Just(Uneven::Pad)]
}

/// The whole epoch's global order (one rank, one worker, no dropping).
fn global(n: u64, seed: u64, epoch: u64, shuffle: Shuffle) -> Vec<u64> {
    let config = PlanConfig {
        seed,
        epoch,
        shuffle,
        ..PlanConfig::default()
    };
    EpochPlan::new(n, config).unwrap().iter().collect()
}

fn config(
    seed: u64,
    shuffle: Shuffle,
    uneven: Uneven,
    (rank, world): (u64, u64),
    (worker, workers): (u64, u64),
) -> PlanConfig {
    PlanConfig {
        seed,
        epoch: 3,
        shuffle,
        rank,
        world_size: world,
        worker,
        num_workers: workers,
        uneven,
    }
}

/// Every partition's items placed at their global positions: `None` where
/// no partition has an item; panics if two partitions claim a position.
fn merged(
    n: u64,
    seed: u64,
    shuffle: Shuffle,
    uneven: Uneven,
    world: u64,
    workers: u64,
    resume: Option<u64>,
) -> (Vec<Option<u64>>, Vec<u64>) {
    let mut at: Vec<Option<u64>> = vec![None; (n + world) as usize];
    let mut per_rank = vec![0u64; world as usize];
    for r in 0..world {
        for w in 0..workers {
            let mut plan =
                EpochPlan::new(n, config(seed, shuffle, uneven, (r, world), (w, workers))).unwrap();
            if let Some(k) = resume {
                plan = plan.resume_from(k);
            }
            let mut it = plan.iter();
            let mut i = 0;
            while let Some(p) = it.next_position() {
                let sample = it.next().unwrap();
                assert_eq!(p, plan.position(i));
                assert!(at[p as usize].is_none(), "position {p} twice");
                at[p as usize] = Some(sample);
                i += 1;
            }
            assert_eq!(i, plan.len());
            per_rank[r as usize] += i;
        }
    }
    (at, per_rank)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_global_order_is_a_permutation(
        n in 0u64..5000, seed: u64, epoch in 0u64..1000, shuffle in shuffles(),
    ) {
        let order = global(n, seed, epoch, shuffle);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        // The same inputs give the same order.
        prop_assert_eq!(&order, &global(n, seed, epoch, shuffle));
        if shuffle == Shuffle::None {
            prop_assert_eq!(order, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn partitions_interleave_to_the_global_order_with_equal_rank_counts(
        n in 0u64..3000, seed: u64, shuffle in shuffles(), uneven in unevens(),
        world in 1u64..=64, workers in 1u64..=16,
    ) {
        let order = global(n, seed, 3, shuffle);
        let (at, per_rank) = merged(n, seed, shuffle, uneven, world, workers, None);
        let want = match uneven {
            Uneven::DropLast => n / world,
            Uneven::Pad => n.div_ceil(world),
        };
        for (r, &count) in per_rank.iter().enumerate() {
            prop_assert_eq!(count, want, "rank {} of {}", r, world);
        }
        let end = want * world;
        for (p, got) in at.iter().enumerate() {
            let p = p as u64;
            if p < end {
                // Positions past n wrap to the start (padding).
                prop_assert_eq!(*got, Some(order[(p % n) as usize]), "position {}", p);
            } else {
                prop_assert_eq!(*got, None);
            }
        }
        if uneven == Uneven::DropLast {
            // Without padding no sample comes twice.
            let seen: HashSet<u64> = at.iter().flatten().copied().collect();
            prop_assert_eq!(seen.len() as u64, end);
        } else if n > 0 {
            // With padding every sample comes at least once.
            let seen: HashSet<u64> = at.iter().flatten().copied().collect();
            prop_assert_eq!(seen.len() as u64, n);
        }
    }

    #[test]
    fn resuming_gives_the_rest_of_the_order_for_any_world(
        n in 0u64..3000, seed: u64, shuffle in shuffles(), uneven in unevens(),
        world in 1u64..=64, workers in 1u64..=16, frac in 0.0f64..=1.1,
        world2 in 1u64..=64, workers2 in 1u64..=16,
    ) {
        let order = global(n, seed, 3, shuffle);
        let k = (n as f64 * frac) as u64;
        // Another world and worker count: exactly the positions from k on.
        let (at, per_rank) = merged(n, seed, shuffle, uneven, world2, workers2, Some(k));
        let rest = n.saturating_sub(k);
        let want = match uneven {
            Uneven::DropLast => rest / world2,
            Uneven::Pad => rest.div_ceil(world2),
        };
        prop_assert!(per_rank.iter().all(|&c| c == want));
        for (p, got) in at.iter().enumerate() {
            let p = p as u64;
            if p >= k && p < k + want * world2 {
                prop_assert_eq!(*got, Some(order[(p % n) as usize]), "position {}", p);
            } else {
                prop_assert_eq!(*got, None, "position {}", p);
            }
        }
        // The same world and workers, resumed where every partition has
        // yielded c items: each partition continues exactly.
        let c = (k / (world * workers)).min(3);
        for r in 0..world {
            for w in 0..workers {
                let plan = EpochPlan::new(
                    n, config(seed, shuffle, uneven, (r, world), (w, workers)),
                ).unwrap();
                let mut it = plan.iter();
                for _ in 0..c {
                    if it.next().is_none() {
                        break;
                    }
                }
                let consumed = it.consumed();
                let resumed = plan.clone().resume_from(consumed);
                let continued: Vec<u64> = it.collect();
                let after: Vec<u64> = resumed.iter().collect();
                prop_assert_eq!(continued, after, "rank {} worker {}", r, w);
            }
        }
    }

    #[test]
    fn epochs_differ_and_seeds_repeat(
        n in 200u64..3000, seed: u64, epoch in 0u64..1000,
        shuffle in prop_oneof![Just(Shuffle::Full), (1u64..20).prop_map(|size| Shuffle::Blocks { size })],
    ) {
        let a = global(n, seed, epoch, shuffle);
        prop_assert_ne!(&a, &global(n, seed, epoch + 1, shuffle));
        prop_assert_ne!(&a, &global(n, seed ^ 1, epoch, shuffle));
        prop_assert_ne!(&a, &(0..n).collect::<Vec<_>>());
        prop_assert_eq!(a, global(n, seed, epoch, shuffle));
    }

    #[test]
    fn block_shuffles_stay_within_a_few_blocks(
        n in 1u64..5000, seed: u64, size in 1u64..64,
    ) {
        let order = global(n, seed, 0, Shuffle::Blocks { size });
        // Any aligned stretch of one window's length touches at most two
        // windows' blocks.
        let span = (size * BLOCK_WINDOW) as usize;
        for chunk in order.chunks(span) {
            let blocks: HashSet<u64> = chunk.iter().map(|i| i / size).collect();
            prop_assert!(blocks.len() as u64 <= 2 * BLOCK_WINDOW, "{} blocks", blocks.len());
        }
    }

    #[test]
    fn states_round_trip_through_json(
        samples: u64, seed: u64, epoch: u64, shuffle in shuffles(), consumed: u64,
    ) {
        let state = PlanState { samples, seed, epoch, shuffle, consumed };
        let json = serde_json::to_string(&state).unwrap();
        prop_assert!(json.len() < 160, "{}", json);
        prop_assert_eq!(serde_json::from_str::<PlanState>(&json).unwrap(), state);
    }
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let bad = |c: PlanConfig| EpochPlan::new(10, c).unwrap_err().to_string();
    let base = PlanConfig::default();
    assert_eq!(
        bad(PlanConfig {
            world_size: 0,
            ..base.clone()
        }),
        "world_size must be at least 1"
    );
    assert_eq!(
        bad(PlanConfig {
            rank: 4,
            world_size: 4,
            ..base.clone()
        }),
        "rank 4 is out of range: there are 4 (numbered from 0)"
    );
    assert!(bad(PlanConfig {
        worker: 2,
        num_workers: 2,
        ..base.clone()
    })
    .starts_with("worker 2"));
    assert!(bad(PlanConfig {
        num_workers: 0,
        ..base.clone()
    })
    .starts_with("num_workers"));
    assert!(bad(PlanConfig {
        shuffle: Shuffle::Blocks { size: 0 },
        ..base.clone()
    })
    .contains("block size"));
    for s in ["blocks:0", "blocks:", "blocks:x", "Full", ""] {
        assert!(s.parse::<Shuffle>().is_err(), "{s:?}");
    }
    assert_eq!(
        "blocks:12".parse::<Shuffle>().unwrap(),
        Shuffle::Blocks { size: 12 }
    );
    // A saved state for another sample count.
    let state = EpochPlan::new(10, base.clone()).unwrap().state(4);
    let err = EpochPlan::resume(&state, 11, base).unwrap_err();
    assert!(err.to_string().contains("for 10 samples"), "{err}");
}

#[test]
fn plan_setup_is_constant_time_and_sampling_is_lazy() {
    // 100 M samples: nothing is allocated per sample; the first and last
    // items come out directly.
    let n = 100_000_000;
    for shuffle in [Shuffle::Full, Shuffle::Blocks { size: 1000 }] {
        let plan = EpochPlan::new(
            n,
            PlanConfig {
                shuffle,
                rank: 5,
                world_size: 8,
                ..PlanConfig::default()
            },
        )
        .unwrap();
        assert_eq!(plan.len(), n / 8);
        let last = plan.page(plan.len() - 1, 1).next().unwrap();
        assert!(last < n);
        assert_eq!(plan.global(plan.position(plan.len() - 1)), last);
    }
}

/// A store of `n` samples `k%05d` written in reverse key order, each with
/// its number as tensor "i".
fn store(dir: &std::path::Path, backend: Backend, n: u64) -> Store {
    let store = Store::open(
        dir,
        &StoreOptions {
            create: true,
            backend: Some(backend),
            ..Default::default()
        },
    )
    .unwrap();
    for i in (0..n).rev() {
        let a = Array1::from(vec![i]);
        store
            .put(
                format!("k{i:05}").as_bytes(),
                &[TensorRef::from_array("i", &a).unwrap()],
            )
            .unwrap();
    }
    store.flush().unwrap();
    store
}

#[test]
fn readers_follow_plans_on_both_backends() {
    let n = 500;
    for backend in [Backend::Lmdb, Backend::Shard] {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path(), backend, n);
        let reader = store.reader().unwrap();
        // Storage order: keys for LMDB, write order (reversed) for shards.
        let storage = |i: u64| match backend {
            Backend::Lmdb => i,
            Backend::Shard => n - 1 - i,
        };
        for shuffle in [Shuffle::None, Shuffle::Full, Shuffle::Blocks { size: 16 }] {
            let mut all = Vec::new();
            for rank in 0..3 {
                let plan = reader
                    .plan(PlanConfig {
                        seed: 9,
                        shuffle,
                        rank,
                        world_size: 3,
                        ..PlanConfig::default()
                    })
                    .unwrap();
                let got: Vec<u64> = reader
                    .plan_samples(&plan)
                    .unwrap()
                    .map(|s| {
                        let s = s.unwrap();
                        // LMDB values need not be 8-byte aligned: read the bytes.
                        let data = s.tensors().get(0).unwrap().data();
                        let v = u64::from_le_bytes(data.try_into().unwrap());
                        assert_eq!(s.key(), format!("k{v:05}").as_bytes());
                        v
                    })
                    .collect();
                let want: Vec<u64> = plan.iter().map(storage).collect();
                assert_eq!(got, want, "{backend:?} {shuffle} rank {rank}");
                // The keys of the same partition, in pages of 7.
                let mut keys = Vec::new();
                let mut from = 0;
                loop {
                    let page = reader.plan_keys(&plan, from, 7).unwrap();
                    if page.is_empty() {
                        break;
                    }
                    from += page.len() as u64;
                    keys.extend(page.iter().map(|k| k.to_vec()));
                }
                let want_keys: Vec<Vec<u8>> = got
                    .iter()
                    .map(|v| format!("k{v:05}").into_bytes())
                    .collect();
                assert_eq!(keys, want_keys);
                all.extend(got);
            }
            all.sort_unstable();
            // The union is the epoch's first 3 * floor(n / 3) positions.
            let config = PlanConfig {
                seed: 9,
                shuffle,
                ..PlanConfig::default()
            };
            let mut want: Vec<u64> = EpochPlan::new(n, config)
                .unwrap()
                .iter()
                .take((n - n % 3) as usize)
                .map(storage)
                .collect();
            want.sort_unstable();
            assert_eq!(all, want, "{backend:?} {shuffle}");
        }
        // A plan for another count is refused.
        let plan = EpochPlan::new(n + 1, PlanConfig::default()).unwrap();
        assert!(reader.plan_samples(&plan).is_err());
        assert!(reader.plan_keys(&plan, 0, 10).is_err());
    }
}

/// The README's plan example is the module's doc test (which runs).
#[test]
fn the_readme_example_is_the_tested_one() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let module = std::fs::read_to_string(root.join("src/plan.rs")).unwrap();
    let section = &readme[readme.find("## Epoch plans").unwrap()..];
    let start = section.find("```rust\n").unwrap() + 8;
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let doc: String = module
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| *l != "```")
        .skip(1)
        .take_while(|l| *l != "```")
        .filter(|l| !l.starts_with("# "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(block, doc);
}
