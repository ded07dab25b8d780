//! Shard store readers: owned snapshots that lend zero-copy samples.

use std::ops::Bound;

use crate::plan::{EpochPlan, PlanError};
use crate::store::error::{Result, StoreError};
use crate::store::shard::index::Entry;
use crate::store::shard::snapshot::Snapshot;
use crate::store::Sample;

/// A read snapshot of a [`ShardStore`](super::ShardStore). It owns its
/// maps (`Send`, `'static`): each loader thread can hold its own, and
/// samples it hands out borrow it. Every tensor views without a copy:
/// payloads are 16-byte aligned within a shard.
#[derive(Clone)]
pub struct ShardReader {
    pub(crate) snap: Snapshot,
}

impl ShardReader {
    /// The sample under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Sample<'_>>> {
        self.snap.get(key)
    }

    /// Like [`get`](Self::get), but a missing key is an error.
    pub fn require(&self, key: &[u8]) -> Result<Sample<'_>> {
        self.get(key)?.ok_or_else(|| StoreError::NotFound {
            key: crate::error::escape(key),
        })
    }

    /// Number of samples in this snapshot.
    pub fn len(&self) -> usize {
        self.snap.len()
    }

    /// Whether this snapshot holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts and sizes as of this snapshot (the shard files' sizes as
    /// they are now). Takes no lock.
    pub fn stats(&self) -> super::ShardStats {
        super::ShardStats {
            samples: self.snap.len() as u64,
            live_bytes: self.snap.live_bytes(),
            shard_bytes: self.snap.shard_bytes(),
            shards: self.snap.manifest().shards.len() as u64,
        }
    }

    /// Every sample in write order: the fast path for an epoch (the maps
    /// are read front to back).
    pub fn iter(&self) -> ShardEntries<'_> {
        ShardEntries {
            snap: &self.snap,
            inner: Box::new(self.snap.entries()),
        }
    }

    /// Samples in key order, starting at `start`.
    pub fn iter_from(&self, start: Bound<&[u8]>) -> ShardEntries<'_> {
        ShardEntries {
            snap: &self.snap,
            inner: Box::new(self.snap.sorted_from(start)),
        }
    }

    /// Samples whose keys start with `prefix`, in key order.
    pub fn iter_prefix<'r>(&'r self, prefix: &'r [u8]) -> ShardEntries<'r> {
        ShardEntries {
            snap: &self.snap,
            inner: Box::new(
                self.snap
                    .sorted_from(Bound::Included(prefix))
                    .take_while(move |e| e.key.starts_with(prefix)),
            ),
        }
    }

    /// Every sample in an order shuffled by `seed` (the same seed gives the
    /// same order for the same snapshot).
    pub fn iter_shuffled(&self, seed: u64) -> ShardEntries<'_> {
        let mut order: Vec<&Entry> = self.snap.entries().collect();
        crate::store::shuffle(&mut order, seed);
        ShardEntries {
            snap: &self.snap,
            inner: Box::new(order.into_iter()),
        }
    }

    /// Samples in the order of an epoch plan made for this snapshot's
    /// [`len`](Self::len) samples in write order (storage order): block
    /// shuffles read each block's records front to back.
    pub fn iter_plan<'r>(&'r self, plan: &'r EpochPlan) -> Result<ShardEntries<'r>> {
        check_plan(plan, self.len() as u64)?;
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(plan.iter().map(move |i| self.live_entry(i))),
        })
    }

    /// The key of the `i`-th sample in write order (`i` below
    /// [`len`](Self::len)).
    pub fn key_at(&self, i: u64) -> Option<&[u8]> {
        self.snap.live_entry(i).map(|e| &*e.key)
    }

    fn live_entry(&self, i: u64) -> &Entry {
        self.snap
            .live_entry(i)
            .expect("plans are checked against the snapshot's sample count")
    }

    /// A new snapshot that sees every sample committed since this one
    /// (remapping shards that grew; reloading after a compaction).
    pub fn refresh(&mut self) -> Result<()> {
        self.snap = self.snap.refresh()?;
        Ok(())
    }

    /// What loading stepped around (torn sidecar tails, records past the
    /// end of their shard).
    pub fn load_report(&self) -> &super::LoadReport {
        &self.snap.report
    }

    /// Checks every live sample: its bytes against the committed crc32c,
    /// its key array and its tenbin structure. Returns one line per
    /// problem.
    pub fn verify(&self) -> Vec<String> {
        let mut problems = self.snap.report.problems();
        for e in self.snap.entries() {
            let Some(bytes) = self.snap.record(&e.loc) else {
                problems.push(format!(
                    "sample {:?}: record outside its shard",
                    e.key.escape_ascii().to_string()
                ));
                continue;
            };
            let crc = crc32c::crc32c(bytes);
            if crc != e.loc.crc {
                problems.push(format!(
                    "sample {:?}: checksum {crc:08x} differs from the committed {:08x}",
                    e.key.escape_ascii().to_string(),
                    e.loc.crc
                ));
                continue;
            }
            if let Err(what) = super::snapshot::split_record(bytes, &e.key) {
                problems.push(format!(
                    "sample {:?}: {what}",
                    e.key.escape_ascii().to_string()
                ));
            }
        }
        problems
    }
}

/// Refuses a plan made for another number of samples.
pub(crate) fn check_plan(plan: &EpochPlan, len: u64) -> Result<()> {
    if plan.samples() != len {
        return Err(PlanError::SampleCount {
            saved: plan.samples(),
            now: len,
        }
        .into());
    }
    Ok(())
}

/// Samples of a shard snapshot, in the order asked for.
pub struct ShardEntries<'r> {
    snap: &'r Snapshot,
    inner: Box<dyn Iterator<Item = &'r Entry> + 'r>,
}

impl<'r> ShardEntries<'r> {
    /// Only the keys.
    pub fn keys(self) -> impl Iterator<Item = &'r [u8]> + 'r {
        self.inner.map(|e| &*e.key)
    }
}

impl<'r> Iterator for ShardEntries<'r> {
    type Item = Result<Sample<'r>>;

    fn next(&mut self) -> Option<Result<Sample<'r>>> {
        let e = self.inner.next()?;
        Some(self.snap.sample_of(e))
    }
}
