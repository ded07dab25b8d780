//! Shard store readers: owned snapshots that lend zero-copy samples.

use std::ops::Bound;

use crate::plan::{EpochPlan, PlanError};
use crate::store::error::{Result, StoreError};
use crate::store::shard::index::Entry;
use crate::store::shard::snapshot::{RecordFault, Snapshot};
use crate::store::verify::{Problem, VerifyReport};
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

    /// Number of samples in this snapshot. Never fails (the `Result` is
    /// the readers' common shape: LMDB's count can).
    pub fn len(&self) -> Result<u64> {
        Ok(self.snap.len() as u64)
    }

    /// Whether this snapshot holds no sample.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Counts and sizes as of this snapshot (the shard files' sizes as
    /// they are now). Takes no lock; never fails.
    pub fn stats(&self) -> Result<super::ShardStats> {
        Ok(super::ShardStats {
            samples: self.snap.len() as u64,
            live_bytes: self.snap.live_bytes(),
            shard_bytes: self.snap.shard_bytes(),
            shards: self.snap.manifest().shards.len() as u64,
        })
    }

    /// Every sample in write order: the fast path for an epoch (the maps
    /// are read front to back). Never fails; samples are checked as they
    /// come.
    pub fn iter(&self) -> Result<ShardEntries<'_>> {
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(self.snap.entries()),
        })
    }

    /// Samples in key order, starting at `start`.
    pub fn iter_from(&self, start: Bound<&[u8]>) -> Result<ShardEntries<'_>> {
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(self.snap.sorted_from(start)),
        })
    }

    /// Samples whose keys start with `prefix`, in key order.
    pub fn iter_prefix<'r>(&'r self, prefix: &'r [u8]) -> Result<ShardEntries<'r>> {
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(
                self.snap
                    .sorted_from(Bound::Included(prefix))
                    .take_while(move |e| e.key.starts_with(prefix)),
            ),
        })
    }

    /// Every sample in an order shuffled by `seed` (the same seed gives the
    /// same order for the same snapshot).
    pub fn iter_shuffled(&self, seed: u64) -> Result<ShardEntries<'_>> {
        let mut order: Vec<&Entry> = self.snap.entries().collect();
        crate::store::key::shuffle(&mut order, seed);
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(order.into_iter()),
        })
    }

    /// Samples in the order of an epoch plan made for this snapshot's
    /// [`len`](Self::len) samples in write order (storage order): block
    /// shuffles read each block's records front to back.
    pub fn iter_plan<'r>(&'r self, plan: &'r EpochPlan) -> Result<ShardEntries<'r>> {
        check_plan(plan, self.len()?)?;
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

    /// Why a lookup stopped trusting the key table since this reader was
    /// loaded (it reads the sidecars from then on), if one did; see also
    /// [`LoadReport::key_table`](super::LoadReport::key_table).
    pub fn table_damage(&self) -> Option<&str> {
        self.snap.table_damage()
    }

    /// What loading stepped around (torn sidecar tails, records past the
    /// end of their shard).
    pub fn load_report(&self) -> &super::LoadReport {
        &self.snap.report
    }

    /// Checks every live sample: its bytes against the committed crc32c,
    /// its key array and its tenbin structure; and lists what loading
    /// stepped around. Never fails (the `Result` is the readers' common
    /// shape).
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut problems: Vec<Problem> = (self.snap.report.problems().into_iter())
            .map(Problem::Load)
            .collect();
        if let super::KeyTable::Ignored(why) = &self.snap.report.key_table {
            problems.push(Problem::Load(format!("key table not used: {why} (the next writer rewrites it; samples are read from the sidecars)")));
        }
        if matches!(self.snap.report.key_table, super::KeyTable::Used { .. }) {
            // The table spared reading the sidecars: check them too.
            match self.snap.reload_sidecars() {
                Ok(s) => problems.extend(s.report.problems().into_iter().map(|p| {
                    Problem::Load(format!(
                        "{p} (readers use the key table, which still names these samples)"
                    ))
                })),
                Err(e) => problems.push(Problem::Load(format!("reading the sidecars: {e}"))),
            }
        }
        if let Some(why) = self.snap.check_table() {
            problems.push(Problem::Load(format!("key table {}: {why} (samples are read from the sidecars; the next writer rewrites it)", super::table::TABLE)));
        }
        for e in self.snap.entries() {
            let bytes = match self.snap.checked_record(&e.loc) {
                Ok(bytes) => bytes,
                Err(RecordFault::Outside) => {
                    problems.push(Problem::OutsideShard {
                        key: e.key.to_vec(),
                    });
                    continue;
                }
                Err(RecordFault::Unavailable(err)) => {
                    let key = crate::error::escape(&e.key);
                    problems.push(Problem::Load(format!("sample {key}: {err}")));
                    continue;
                }
                Err(RecordFault::Checksum { found, committed }) => {
                    problems.push(Problem::Checksum {
                        key: e.key.to_vec(),
                        found,
                        committed,
                    });
                    continue;
                }
            };
            if let Err(what) = super::snapshot::split_record(bytes, &e.key) {
                problems.push(Problem::Malformed {
                    key: e.key.to_vec(),
                    what: what.to_string(),
                });
            }
        }
        Ok(VerifyReport { problems })
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
