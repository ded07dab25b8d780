//! Epoch plans: deterministic, resumable sample orders split across
//! ranks (processes of a distributed job) and loader workers.
//!
//! An [`EpochPlan`] is made from the number of samples `n` of a store
//! snapshot (its sample list in storage order: key order for LMDB, write
//! order for shard stores) and a [`PlanConfig`]. It hands out *sample
//! indices* into that list; [`Reader::plan_samples`] turns them into
//! zero-copy samples.
//!
//! - **The global order** of an epoch is a permutation of `0..n` fixed by
//!   `(seed, epoch, shuffle)` alone ([`Shuffle`]).
//! - **Partitions.** Rank `r` of `W` takes global positions `r, r+W,
//!   r+2W, ...`; worker `w` of `K` of that rank takes the rank's
//!   positions `w, w+K, ...`. Interleaving every partition position by
//!   position gives back exactly the global order, for any `W` and `K`.
//! - **Equal counts.** [`Uneven::DropLast`] gives every rank `floor(n/W)`
//!   positions (the last `n mod W` positions of the epoch are skipped);
//!   [`Uneven::Pad`] gives every rank `ceil(n/W)` (positions past `n` wrap
//!   to the start of the global order, so a few samples come twice).
//!   Workers of one rank may differ by one position; ranks never do.
//! - **Resumption.** Progress is a *global prefix length* `consumed`: the
//!   positions `0..consumed` of the epoch's global order have been used.
//!   [`EpochPlan::resume_from`] makes the plan of the positions
//!   `consumed..` for any `W` and `K`: its partitions start at
//!   `consumed + r`, `consumed + r + W`, ... and the counts are equal again
//!   over what remains. A partition's iterator reports
//!   [`PlanIter::consumed`] = `start + W·K·i` after `i` items: the prefix
//!   covered when every partition has yielded `i` items. A job saves the
//!   **minimum over all its partitions** (ranks × workers) of that value:
//!   in synchronous data-parallel training every rank has yielded the same
//!   number of samples at each step and the minimum is exact (nothing is
//!   repeated or lost); a partition that ran ahead of the minimum has its
//!   extra samples repeated after the resume, never lost. A rank that
//!   merges its workers' items back in plan order (worker 0's first,
//!   worker 1's first, ...) can instead count the items it received and
//!   use [`EpochPlan::consumed_after`]. [`PlanState`] is that number with
//!   what fixes the order, as a small JSON object.
//! - **Cost.** Nothing is stored per sample: [`Shuffle::Full`] is a
//!   bijective seeded permutation of the index domain computed on the fly
//!   (a Feistel network with cycle-walking), so setting a plan up is
//!   O(1) for any `n`.
//!
//! ```
//! use tenstore::plan::{EpochPlan, PlanConfig, Shuffle, Uneven};
//!
//! // Rank 1 of 3, epoch 2, samples shuffled in blocks of 64.
//! let config = PlanConfig {
//!     seed: 7,
//!     epoch: 2,
//!     shuffle: Shuffle::Blocks { size: 64 },
//!     rank: 1,
//!     world_size: 3,
//!     uneven: Uneven::DropLast,
//!     ..PlanConfig::default()
//! };
//! let plan = EpochPlan::new(1000, config.clone())?;
//! assert_eq!(plan.len(), 333);
//! let mut it = plan.iter();
//! let first: Vec<u64> = it.by_ref().take(10).collect();
//! // Every rank has taken 10: the first 30 global positions are used.
//! let state = it.state();
//! assert_eq!(state.consumed, 30);
//! let json = serde_json::to_string(&state).unwrap();
//!
//! // Later, with 2 ranks: start after position 30 of the same order.
//! let state: tenstore::plan::PlanState = serde_json::from_str(&json).unwrap();
//! let resumed = EpochPlan::resume(&state, 1000, PlanConfig { world_size: 2, ..config })?;
//! assert_eq!(resumed.len(), (1000 - 30) / 2);
//! // Rank 1 of 2 starts at global position 31.
//! assert_eq!(resumed.position(0), 31);
//! assert_eq!(resumed.iter().next(), Some(plan.global(31)));
//! # let _ = first;
//! # Ok::<(), tenstore::plan::PlanError>(())
//! ```
//!
//! [`Reader::plan_samples`]: crate::store::Reader::plan_samples

use std::fmt;
use std::str::FromStr;

/// What can be wrong with a plan's configuration or saved state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `world_size` or `num_workers` is zero.
    #[error("{what} must be at least 1")]
    Zero {
        /// `world_size`, `num_workers` or the block size.
        what: &'static str,
    },
    /// A rank or worker number not below its count.
    #[error("{what} {index} is out of range: there are {count} (numbered from 0)")]
    OutOfRange {
        /// `rank` or `worker`.
        what: &'static str,
        /// The number given.
        index: u64,
        /// `world_size` or `num_workers`.
        count: u64,
    },
    /// A shuffle spelled wrongly.
    #[error("unknown shuffle {0:?}: none, full or blocks:N (N samples per block, N >= 1)")]
    BadShuffle(String),
    /// A saved state made for a snapshot of another size.
    #[error("the saved plan state is for {saved} samples but the store now holds {now}: the order would differ, so resuming would repeat or skip samples")]
    SampleCount {
        /// Samples the state was made for.
        saved: u64,
        /// Samples now.
        now: u64,
    },
}

/// How an epoch's global order is shuffled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Shuffle {
    /// Storage order: key order (LMDB) or write order (shard stores).
    #[default]
    None,
    /// A seeded permutation of the whole epoch.
    Full,
    /// Storage order cut into blocks of `size` samples (the last one may be
    /// shorter); the blocks are permuted, and the samples of each window of
    /// [`BLOCK_WINDOW`] consecutive blocks (in permuted order) are permuted
    /// among themselves. A reader touches about `BLOCK_WINDOW · size`
    /// samples of storage at a time, in long runs.
    Blocks {
        /// Samples per block, at least 1.
        size: u64,
    },
}

/// Blocks per window of [`Shuffle::Blocks`]: samples mix across this many
/// blocks.
pub const BLOCK_WINDOW: u64 = 4;

impl fmt::Display for Shuffle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shuffle::None => f.write_str("none"),
            Shuffle::Full => f.write_str("full"),
            Shuffle::Blocks { size } => write!(f, "blocks:{size}"),
        }
    }
}

impl FromStr for Shuffle {
    type Err = PlanError;
    /// `none`, `full` or `blocks:N`.
    fn from_str(s: &str) -> Result<Shuffle, PlanError> {
        match s {
            "none" => Ok(Shuffle::None),
            "full" => Ok(Shuffle::Full),
            _ => s
                .strip_prefix("blocks:")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n >= 1)
                .map(|size| Shuffle::Blocks { size })
                .ok_or_else(|| PlanError::BadShuffle(s.chars().take(64).collect())),
        }
    }
}

impl serde::Serialize for Shuffle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Shuffle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shuffle, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What to do with the `n mod world_size` positions that would make rank
/// counts unequal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Uneven {
    /// Skip them: every rank gets `floor(n / world_size)`.
    #[default]
    DropLast,
    /// Wrap around to the start of the global order: every rank gets
    /// `ceil(n / world_size)`.
    Pad,
}

impl FromStr for Uneven {
    type Err = String;
    /// `drop-last` or `pad`.
    fn from_str(s: &str) -> Result<Uneven, String> {
        match s {
            "drop-last" => Ok(Uneven::DropLast),
            "pad" => Ok(Uneven::Pad),
            other => Err(format!("unknown uneven mode {other:?}: drop-last or pad")),
        }
    }
}

/// Everything that fixes one partition of one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlanConfig {
    /// Seed of the shuffles.
    pub seed: u64,
    /// Epoch number: each epoch has its own order.
    pub epoch: u64,
    /// How the global order is shuffled.
    pub shuffle: Shuffle,
    /// This process's rank, below `world_size`.
    pub rank: u64,
    /// Number of ranks, at least 1.
    pub world_size: u64,
    /// This loader worker, below `num_workers`.
    pub worker: u64,
    /// Loader workers per rank, at least 1.
    pub num_workers: u64,
    /// Equal rank counts by dropping or by padding.
    pub uneven: Uneven,
}

impl Default for PlanConfig {
    /// Seed 0, epoch 0, no shuffle, one rank, one worker, drop last.
    fn default() -> Self {
        PlanConfig {
            seed: 0,
            epoch: 0,
            shuffle: Shuffle::None,
            rank: 0,
            world_size: 1,
            worker: 0,
            num_workers: 1,
            uneven: Uneven::DropLast,
        }
    }
}

/// Progress through an epoch, enough to resume it: serializes to a small
/// JSON object such as
/// `{"samples":1000,"seed":7,"epoch":2,"shuffle":"blocks:64","consumed":30}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PlanState {
    /// Samples in the snapshot the plan was made for (resuming against
    /// another count is refused: the order would differ).
    pub samples: u64,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Epoch number.
    pub epoch: u64,
    /// The shuffle.
    pub shuffle: Shuffle,
    /// Global positions `0..consumed` of the epoch's order are used.
    pub consumed: u64,
}

/// The splitmix64 finalizer: a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A key derived from the seed, the epoch and a purpose.
fn derive(seed: u64, epoch: u64, salt: u64) -> u64 {
    mix(mix(seed ^ 0x243F_6A88_85A3_08D3).wrapping_add(epoch) ^ mix(salt ^ 0x1319_8A2E_0370_7344))
}

const ROUNDS: usize = 6;

/// A seeded bijection of `0..n`: a balanced Feistel network over the
/// smallest power-of-four domain that holds `n` (at most `4n`), walked
/// until the value falls below `n` (cycle-walking keeps it a bijection
/// of `0..n`; on average fewer than four steps).
#[derive(Clone, Debug)]
struct Feistel {
    n: u64,
    half: u32,
    mask: u64,
    keys: [u64; ROUNDS],
}

impl Feistel {
    fn new(n: u64, key: u64) -> Feistel {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let half = bits.div_ceil(2);
        let mut keys = [0; ROUNDS];
        for (i, k) in keys.iter_mut().enumerate() {
            *k = mix(key
                .wrapping_add(i as u64 + 1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        Feistel {
            n,
            half,
            mask: (1u64 << half) - 1,
            keys,
        }
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half, x & self.mask);
        for k in self.keys {
            let f = mix(r ^ k) & self.mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half) | r
    }

    fn decrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half, x & self.mask);
        for k in self.keys.iter().rev() {
            let f = mix(l ^ k) & self.mask;
            (l, r) = (r ^ f, l);
        }
        (l << self.half) | r
    }

    /// The `i < n` whose image is `j < n`.
    fn invert(&self, j: u64) -> u64 {
        if self.n <= 1 {
            return j;
        }
        let mut x = j;
        loop {
            x = self.decrypt(x);
            if x < self.n {
                return x;
            }
        }
    }

    /// The image of `i < n`.
    fn apply(&self, i: u64) -> u64 {
        if self.n <= 1 {
            return i;
        }
        let mut x = i;
        loop {
            x = self.encrypt(x);
            if x < self.n {
                return x;
            }
        }
    }
}

/// One window of a block shuffle: up to [`BLOCK_WINDOW`] blocks.
#[derive(Clone, Debug, Default)]
struct Window {
    /// Window number.
    index: u64,
    /// First global position.
    start: u64,
    /// (first sample, samples) of its blocks, in permuted order.
    blocks: [(u64, u64); BLOCK_WINDOW as usize],
    nblocks: usize,
    inner: Option<Feistel>,
}

/// The global order of one epoch.
#[derive(Clone, Debug)]
enum Global {
    Identity,
    Full(Feistel),
    Blocks {
        size: u64,
        /// Number of blocks.
        nblocks: u64,
        /// Samples short in the last (partial) block, 0 if none.
        deficit: u64,
        /// Slot of the partial block in the permuted order.
        partial_slot: u64,
        perm: Feistel,
        seed: u64,
        epoch: u64,
    },
}

impl Global {
    fn new(n: u64, seed: u64, epoch: u64, shuffle: Shuffle) -> Global {
        match shuffle {
            Shuffle::None => Global::Identity,
            Shuffle::Full => Global::Full(Feistel::new(n, derive(seed, epoch, 1))),
            Shuffle::Blocks { size } => {
                let nblocks = n.div_ceil(size);
                let perm = Feistel::new(nblocks, derive(seed, epoch, 2));
                let tail = n % size;
                let (deficit, partial_slot) = if tail == 0 {
                    (0, u64::MAX)
                } else {
                    // Where the last block lands.
                    (size - tail, perm.invert(nblocks - 1))
                };
                Global::Blocks {
                    size,
                    nblocks,
                    deficit,
                    partial_slot,
                    perm,
                    seed,
                    epoch,
                }
            }
        }
    }

    /// The first global position of window `w` (of a block shuffle).
    fn window_start(&self, w: u64) -> u64 {
        let Global::Blocks {
            size,
            nblocks,
            deficit,
            partial_slot,
            ..
        } = *self
        else {
            return 0;
        };
        let slots = (w.saturating_mul(BLOCK_WINDOW)).min(nblocks);
        let short = if partial_slot < slots { deficit } else { 0 };
        slots * size - short
    }

    fn window(&self, w: u64) -> Window {
        let Global::Blocks {
            size,
            nblocks,
            partial_slot,
            deficit,
            ref perm,
            seed,
            epoch,
        } = *self
        else {
            return Window::default();
        };
        let start = self.window_start(w);
        let count = self.window_start(w + 1) - start;
        let mut out = Window {
            index: w,
            start,
            ..Window::default()
        };
        let first = w * BLOCK_WINDOW;
        for slot in first..(first + BLOCK_WINDOW).min(nblocks) {
            let b = perm.apply(slot);
            let len = if slot == partial_slot {
                size - deficit
            } else {
                size
            };
            out.blocks[out.nblocks] = (b * size, len);
            out.nblocks += 1;
        }
        out.inner = Some(Feistel::new(
            count,
            derive(seed, epoch, 3 ^ w.wrapping_mul(0x9E37_79B9)),
        ));
        out
    }

    /// The window holding global position `p < n`.
    fn window_of(&self, p: u64) -> u64 {
        let Global::Blocks { size, .. } = *self else {
            return 0;
        };
        let w = p / (size * BLOCK_WINDOW);
        if p >= self.window_start(w + 1) {
            w + 1
        } else {
            w
        }
    }

    /// The sample at global position `p < n`, with a window cache.
    fn at(&self, p: u64, cache: &mut Option<Window>) -> u64 {
        match self {
            Global::Identity => p,
            Global::Full(f) => f.apply(p),
            Global::Blocks { .. } => {
                let w = self.window_of(p);
                if cache.as_ref().is_none_or(|c| c.index != w) {
                    *cache = Some(self.window(w));
                }
                let win = cache.as_ref().expect("set above");
                let inner = win.inner.as_ref().expect("windows have a permutation");
                let mut o = inner.apply(p - win.start);
                for &(first, len) in &win.blocks[..win.nblocks] {
                    if o < len {
                        return first + o;
                    }
                    o -= len;
                }
                unreachable!("a window's offset lies in one of its blocks")
            }
        }
    }
}

/// One partition (rank and worker) of one epoch's order, from a start.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    n: u64,
    config: PlanConfig,
    global: Global,
    /// Global positions used before this plan.
    start: u64,
    /// Positions per rank.
    per_rank: u64,
}

impl EpochPlan {
    /// The plan of a whole epoch of `n` samples.
    pub fn new(n: u64, config: PlanConfig) -> Result<EpochPlan, PlanError> {
        if config.world_size == 0 {
            return Err(PlanError::Zero { what: "world_size" });
        }
        if config.num_workers == 0 {
            return Err(PlanError::Zero {
                what: "num_workers",
            });
        }
        if config.rank >= config.world_size {
            return Err(PlanError::OutOfRange {
                what: "rank",
                index: config.rank,
                count: config.world_size,
            });
        }
        if config.worker >= config.num_workers {
            return Err(PlanError::OutOfRange {
                what: "worker",
                index: config.worker,
                count: config.num_workers,
            });
        }
        if config.shuffle == (Shuffle::Blocks { size: 0 }) {
            return Err(PlanError::Zero { what: "block size" });
        }
        let global = Global::new(n, config.seed, config.epoch, config.shuffle);
        let mut plan = EpochPlan {
            n,
            config,
            global,
            start: 0,
            per_rank: 0,
        };
        plan.set_start(0);
        Ok(plan)
    }

    fn set_start(&mut self, consumed: u64) {
        let rest = self.n.saturating_sub(consumed);
        let w = self.config.world_size;
        self.start = consumed;
        self.per_rank = match self.config.uneven {
            Uneven::DropLast => rest / w,
            Uneven::Pad => rest.div_ceil(w),
        };
    }

    /// The plan of the positions after the first `consumed` of the same
    /// epoch order (see the module documentation). `consumed >= n` leaves
    /// nothing: every sample was used (what lies past `n` is padding).
    pub fn resume_from(mut self, consumed: u64) -> EpochPlan {
        self.set_start(consumed);
        self
    }

    /// The plan that resumes `state` over a snapshot of `n` samples, for
    /// the partition of `config` (whose seed, epoch and shuffle are taken
    /// from the state).
    pub fn resume(state: &PlanState, n: u64, config: PlanConfig) -> Result<EpochPlan, PlanError> {
        if state.samples != n {
            return Err(PlanError::SampleCount {
                saved: state.samples,
                now: n,
            });
        }
        let config = PlanConfig {
            seed: state.seed,
            epoch: state.epoch,
            shuffle: state.shuffle,
            ..config
        };
        Ok(EpochPlan::new(n, config)?.resume_from(state.consumed))
    }

    /// Samples in the snapshot this plan orders.
    pub fn samples(&self) -> u64 {
        self.n
    }

    /// The configuration.
    pub fn config(&self) -> &PlanConfig {
        &self.config
    }

    /// Global positions used before this plan starts.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Positions each rank gets (equal for all ranks).
    pub fn per_rank(&self) -> u64 {
        self.per_rank
    }

    /// Global position one past the last that any rank gets.
    pub fn end(&self) -> u64 {
        self.start + self.per_rank * self.config.world_size
    }

    /// Positions this partition (rank and worker) gets.
    pub fn len(&self) -> u64 {
        let (w, k) = (self.config.worker, self.config.num_workers);
        if self.per_rank > w {
            (self.per_rank - w).div_ceil(k)
        } else {
            0
        }
    }

    /// Whether this partition gets nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample at global position `p` of the epoch (positions from `n`
    /// on wrap to the start, as padding does). `n` must not be 0.
    pub fn global(&self, p: u64) -> u64 {
        let q = if p < self.n { p } else { p % self.n.max(1) };
        self.global.at(q, &mut None)
    }

    /// The global position of this partition's `i`-th item.
    pub fn position(&self, i: u64) -> u64 {
        let c = &self.config;
        self.start + c.rank + c.world_size * (c.worker + c.num_workers * i)
    }

    /// The prefix consumed once a rank has received `rank_items` of its
    /// positions in order (its workers' items merged back in plan order),
    /// every rank as many.
    pub fn consumed_after(&self, rank_items: u64) -> u64 {
        (self.start + rank_items.min(self.per_rank) * self.config.world_size).min(self.end())
    }

    /// The state to save once every partition of the job has `consumed`
    /// as its [`PlanIter::consumed`] (or the minimum over partitions).
    pub fn state(&self, consumed: u64) -> PlanState {
        PlanState {
            samples: self.n,
            seed: self.config.seed,
            epoch: self.config.epoch,
            shuffle: self.config.shuffle,
            consumed,
        }
    }

    /// This partition's sample indices, in order.
    pub fn iter(&self) -> PlanIter<'_> {
        PlanIter {
            plan: self,
            i: 0,
            len: self.len(),
            cache: None,
        }
    }

    /// The sample indices of this partition's items `from..from + limit`.
    pub fn page(&self, from: u64, limit: u64) -> PlanIter<'_> {
        let len = self.len();
        PlanIter {
            plan: self,
            i: from.min(len),
            len: from.saturating_add(limit).min(len),
            cache: None,
        }
    }

    /// Whether consecutive items of this plan read storage in long runs
    /// (block shuffles): readers may prefetch ahead.
    pub fn is_blocked(&self) -> bool {
        matches!(self.config.shuffle, Shuffle::Blocks { .. })
    }

    /// For block shuffles, the storage ranges (first sample, samples) of
    /// the window holding global position `p` (positions from `n` on wrap,
    /// as padding does): the samples the order visits around `p`. Empty
    /// for other shuffles.
    pub fn window_blocks(&self, p: u64) -> Vec<(u64, u64)> {
        match self.window_index(p) {
            Some(w) => self.blocks_of_window(w),
            None => Vec::new(),
        }
    }

    /// For block shuffles, the number of the window holding global position
    /// `p` (positions from `n` on wrap, as padding does): windows are
    /// visited in increasing order, so a reader that sees the number change
    /// knows the order has moved on to [`blocks_of_window`] of the new one,
    /// and the one after it comes next. `None` for other shuffles and for
    /// an empty snapshot.
    ///
    /// [`blocks_of_window`]: Self::blocks_of_window
    pub fn window_index(&self, p: u64) -> Option<u64> {
        if !self.is_blocked() || self.n == 0 {
            return None;
        }
        Some(self.global.window_of(p % self.n))
    }

    /// Number of windows of a block shuffle (0 for other shuffles).
    pub fn windows(&self) -> u64 {
        match self.global {
            Global::Blocks { nblocks, .. } => nblocks.div_ceil(BLOCK_WINDOW),
            _ => 0,
        }
    }

    /// The storage ranges (first sample, samples) of window `w` of a block
    /// shuffle, in the order the blocks were permuted to; empty past the
    /// last window and for other shuffles.
    pub fn blocks_of_window(&self, w: u64) -> Vec<(u64, u64)> {
        if w >= self.windows() {
            return Vec::new();
        }
        let win = self.global.window(w);
        win.blocks[..win.nblocks].to_vec()
    }
}

/// A partition's sample indices; it knows how far the epoch got.
#[derive(Clone, Debug)]
pub struct PlanIter<'p> {
    plan: &'p EpochPlan,
    i: u64,
    len: u64,
    cache: Option<Window>,
}

impl PlanIter<'_> {
    /// Items yielded so far (counting from the start of the partition).
    pub fn items(&self) -> u64 {
        self.i
    }

    /// The global position of the next item (None at the end).
    pub fn next_position(&self) -> Option<u64> {
        (self.i < self.len).then(|| self.plan.position(self.i))
    }

    /// The global prefix covered when every partition has yielded as many
    /// items as this one: `start + world_size · num_workers · items`,
    /// at most the plan's end.
    pub fn consumed(&self) -> u64 {
        let c = &self.plan.config;
        let stride = c.world_size.saturating_mul(c.num_workers);
        self.plan
            .start
            .saturating_add(stride.saturating_mul(self.i))
            .min(self.plan.end())
    }

    /// [`consumed`](Self::consumed) with what fixes the order.
    pub fn state(&self) -> PlanState {
        self.plan.state(self.consumed())
    }
}

impl Iterator for PlanIter<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.i >= self.len {
            return None;
        }
        let p = self.plan.position(self.i);
        self.i += 1;
        let n = self.plan.n;
        let q = if p < n { p } else { p % n };
        Some(self.plan.global.at(q, &mut self.cache))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.len - self.i).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for PlanIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(n: u64, size: u64, seed: u64, world_size: u64, uneven: Uneven) -> EpochPlan {
        let config = PlanConfig {
            seed,
            epoch: 3,
            shuffle: Shuffle::Blocks { size },
            world_size,
            uneven,
            ..PlanConfig::default()
        };
        EpochPlan::new(n, config).unwrap()
    }

    /// Every global position's sample lies in a block of the window
    /// `window_index` names, windows never go back, and the windows' blocks
    /// cover every sample exactly once: what a reader prefetching by
    /// window relies on.
    #[test]
    fn windows_hold_their_positions_and_cover_the_store() {
        for (n, size, seed) in [
            (1000, 7, 1),
            (1024, 64, 2),
            (5, 3, 3),
            (1, 1, 4),
            (333, 1000, 5),
        ] {
            let plan = blocks(n, size, seed, 1, Uneven::DropLast);
            let mut seen = vec![0u32; n as usize];
            for w in 0..plan.windows() {
                for (first, len) in plan.blocks_of_window(w) {
                    assert!(
                        len >= 1 && first + len <= n,
                        "{n} {size}: block {first}+{len}"
                    );
                    for i in first..first + len {
                        seen[i as usize] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{n} {size}: {seen:?}");
            assert!(plan.blocks_of_window(plan.windows()).is_empty());
            let mut last = 0;
            for p in 0..n {
                let w = plan.window_index(p).unwrap();
                assert!(w >= last, "{n} {size}: window {w} after {last} at {p}");
                last = w;
                let i = plan.global(p);
                let inside = plan
                    .window_blocks(p)
                    .iter()
                    .any(|&(first, len)| (first..first + len).contains(&i));
                assert!(inside, "{n} {size}: sample {i} at {p} outside window {w}");
            }
            assert_eq!(last + 1, plan.windows(), "{n} {size}");
        }
    }

    /// Padding positions past `n` wrap to the windows of the start.
    #[test]
    fn padded_positions_wrap_to_the_first_window() {
        let plan = blocks(10, 3, 9, 4, Uneven::Pad);
        assert_eq!(plan.end(), 12);
        assert_eq!(plan.window_index(10), plan.window_index(0));
        assert_eq!(plan.window_blocks(11), plan.window_blocks(1));
    }

    #[test]
    fn other_shuffles_have_no_windows() {
        for shuffle in [Shuffle::None, Shuffle::Full] {
            let config = PlanConfig {
                shuffle,
                ..PlanConfig::default()
            };
            let plan = EpochPlan::new(100, config).unwrap();
            assert_eq!(plan.windows(), 0);
            assert_eq!(plan.window_index(5), None);
            assert!(plan.window_blocks(5).is_empty());
            assert!(plan.blocks_of_window(0).is_empty());
        }
        assert_eq!(blocks(0, 4, 1, 1, Uneven::DropLast).window_index(0), None);
    }
}
