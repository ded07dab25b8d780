//! Shard store readers: owned snapshots that lend zero-copy samples.

use std::ops::Bound;

use crate::plan::{EpochPlan, PlanError, PlanIter, Shuffle};
use crate::store::error::{Result, StoreError};
use crate::store::shard::index::{EntryRef, Loc};
use crate::store::shard::snapshot::{Hint, RecordFault, Snapshot};
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

    /// Like [`get`](Self::get), but the record's crc32c is checked
    /// whatever [`verify_reads`](super::ShardOptions::verify_reads) says,
    /// as the reader's iterators check it: for a caller that walks its
    /// own list of keys (an epoch plan, a data loader) and wants a scan's
    /// guarantee.
    pub fn get_checked(&self, key: &[u8]) -> Result<Option<Sample<'_>>> {
        self.snap.get_checked(key)
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

    /// Bytes of records this reader holds in memory: those of a remote
    /// store fetched one by one by ranged GETs, which its samples may
    /// borrow and which are freed only when the reader (and every clone
    /// and refresh of it) is dropped. Always 0 for a local store.
    pub fn held_bytes(&self) -> u64 {
        self.snap.held_bytes()
    }

    /// Whether a long-lived reader should be replaced by a fresh one from
    /// [`ShardStore::reader`](super::ShardStore::reader) (not a
    /// [`refresh`](Self::refresh), which keeps what it holds): it holds
    /// more than half the record bytes a reader may hold
    /// ([`RemoteOptions::reader_memory`](crate::remote::RemoteOptions)),
    /// past which reads fail. Never for a local store.
    pub fn needs_renewal(&self) -> bool {
        self.snap.needs_renewal()
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
    /// are read front to back, and the kernel is told so: each shard is
    /// advised `MADV_SEQUENTIAL` while the scan is in it, and the next
    /// few MiB `MADV_WILLNEED` ahead of it). Never fails; samples are
    /// checked as they come, each record's crc32c included (whatever
    /// [`verify_reads`](super::ShardOptions::verify_reads) says), and a
    /// damaged one is an error naming its key and shard.
    pub fn iter(&self) -> Result<ShardEntries<'_>> {
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(ReadAhead::new(&self.snap, self.snap.entries())),
            in_order: true,
        })
    }

    /// Samples in key order, starting at `start`.
    pub fn iter_from(&self, start: Bound<&[u8]>) -> Result<ShardEntries<'_>> {
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(self.snap.sorted_from(start)),
            in_order: false,
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
            in_order: false,
        })
    }

    /// Every sample in an order shuffled by `seed` (the same seed gives the
    /// same order for the same snapshot).
    pub fn iter_shuffled(&self, seed: u64) -> Result<ShardEntries<'_>> {
        // Positions, not entries: 8 bytes a sample, the same order.
        let mut order: Vec<u64> = (0..self.snap.len() as u64).collect();
        crate::store::key::shuffle(&mut order, seed);
        Ok(ShardEntries {
            snap: &self.snap,
            inner: Box::new(order.into_iter().map(move |i| self.live_entry(i))),
            in_order: false,
        })
    }

    /// Samples in the order of an epoch plan made for this snapshot's
    /// [`len`](Self::len) samples in write order (storage order). The
    /// kernel is told what comes next: storage order is read like
    /// [`iter`](Self::iter); a block shuffle advises `MADV_WILLNEED` on
    /// the byte ranges of the window of blocks it enters and of the window
    /// after it, so the next window is read from disk in long runs while
    /// this one is used (windows over 256 MiB are not advised: they would
    /// push themselves out of the page cache). A full shuffle gives no
    /// hint.
    pub fn iter_plan<'r>(&'r self, plan: &'r EpochPlan) -> Result<ShardEntries<'r>> {
        check_plan(plan, self.len()?)?;
        let entries = plan.iter().map(move |i| self.live_entry(i));
        let inner: Box<dyn Iterator<Item = EntryRef<'r>> + 'r> = match plan.config().shuffle {
            Shuffle::None => Box::new(ReadAhead::new(&self.snap, entries)),
            Shuffle::Blocks { .. } => Box::new(Windows {
                reader: self,
                plan,
                it: plan.iter(),
                window: None,
                advised: None,
            }),
            Shuffle::Full => Box::new(entries),
        };
        Ok(ShardEntries {
            snap: &self.snap,
            inner,
            in_order: plan.config().shuffle == Shuffle::None,
        })
    }

    /// The key of the `i`-th sample in write order (`i` below
    /// [`len`](Self::len)).
    pub fn key_at(&self, i: u64) -> Option<&[u8]> {
        self.snap.live_entry(i).map(|e| e.key)
    }

    fn live_entry(&self, i: u64) -> EntryRef<'_> {
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
                    let key = crate::error::escape(e.key);
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
            if let Err(what) = super::snapshot::split_record(bytes, e.key) {
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

/// Bytes advised `MADV_WILLNEED` ahead of a sequential scan, at most; a
/// new advice is given once less than half of it lies ahead.
const AHEAD: u64 = 8 << 20;

/// The largest window of a block shuffle that is advised whole.
const WINDOW_AHEAD_MAX: u64 = 256 << 20;

/// Entries in storage order (possibly with gaps), telling the kernel so.
///
/// The `MADV_SEQUENTIAL` it sets on a shard's map (from where the scan
/// enters it to its end) is undone when the scan is dropped. Maps are
/// shared by clones of a snapshot, so a scan ending while another is
/// still in the same shard leaves that one without the hint: a hint
/// only, which changes no byte anyone reads.
struct ReadAhead<'r, I> {
    snap: &'r Snapshot,
    inner: I,
    /// The shard of the last entry (`usize::MAX`: none yet).
    shard: usize,
    /// `shard` is advised `MADV_WILLNEED` up to this offset.
    advised: u64,
    /// (shard, from) advised `MADV_SEQUENTIAL`.
    marked: Vec<(usize, u64)>,
}

impl<'r, I> ReadAhead<'r, I> {
    fn new(snap: &'r Snapshot, inner: I) -> Self {
        ReadAhead {
            snap,
            inner,
            shard: usize::MAX,
            advised: 0,
            marked: Vec::new(),
        }
    }

    fn see(&mut self, loc: &Loc) {
        if loc.shard != self.shard {
            self.shard = loc.shard;
            self.advised = loc.offset;
            self.snap
                .advise(loc.shard, loc.offset, u64::MAX, Hint::Sequential);
            self.marked.push((loc.shard, loc.offset));
        }
        let end = loc.offset.saturating_add(loc.len);
        if end.saturating_add(AHEAD / 2) > self.advised {
            let from = self.advised.max(loc.offset);
            let to = end.saturating_add(AHEAD);
            self.snap.advise(loc.shard, from, to, Hint::WillNeed);
            self.advised = to;
        }
    }
}

impl<'r, I: Iterator<Item = EntryRef<'r>>> Iterator for ReadAhead<'r, I> {
    type Item = EntryRef<'r>;

    fn next(&mut self) -> Option<EntryRef<'r>> {
        let e = self.inner.next()?;
        self.see(&e.loc);
        Some(e)
    }
}

impl<I> Drop for ReadAhead<'_, I> {
    fn drop(&mut self) {
        for &(shard, from) in &self.marked {
            self.snap.advise(shard, from, u64::MAX, Hint::Normal);
        }
    }
}

/// The entries of a block-shuffled plan, advising each window's blocks
/// `MADV_WILLNEED` as the order enters the window before it.
struct Windows<'r> {
    reader: &'r ShardReader,
    plan: &'r EpochPlan,
    it: PlanIter<'r>,
    /// The window of the last item.
    window: Option<u64>,
    /// The last window advised.
    advised: Option<u64>,
}

impl Windows<'_> {
    /// Advises the byte ranges of window `w`'s blocks, unless they add up
    /// to more than [`WINDOW_AHEAD_MAX`].
    fn advise(&self, w: u64) {
        let snap = &self.reader.snap;
        // (shard, from, to) of each block, split where a block crosses
        // from one shard into the next.
        let mut ranges: Vec<(usize, u64, u64)> = Vec::new();
        for (first, len) in self.plan.blocks_of_window(w) {
            let (Some(a), Some(b)) = (
                snap.live_entry(first),
                snap.live_entry(first + len.saturating_sub(1)),
            ) else {
                continue;
            };
            let (a, b) = (&a.loc, &b.loc);
            for shard in a.shard..=b.shard {
                let from = if shard == a.shard { a.offset } else { 0 };
                let to = if shard == b.shard {
                    b.offset.saturating_add(b.len)
                } else {
                    snap.shard_len(shard)
                };
                ranges.push((shard, from, to));
            }
        }
        let total = ranges.iter().fold(0u64, |t, &(_, from, to)| {
            t.saturating_add(to.saturating_sub(from))
        });
        if total > WINDOW_AHEAD_MAX {
            return;
        }
        for (shard, from, to) in ranges {
            snap.advise(shard, from, to, Hint::WillNeed);
        }
    }
}

impl<'r> Iterator for Windows<'r> {
    type Item = EntryRef<'r>;

    fn next(&mut self) -> Option<EntryRef<'r>> {
        let p = self.it.next_position()?;
        let w = self.plan.window_index(p);
        if let Some(w) = w.filter(|&w| Some(w) != self.window) {
            self.window = Some(w);
            // The window after this one was advised when this one's
            // predecessor was entered (unless padding wrapped around).
            if self.advised != Some(w) {
                self.advise(w);
            }
            self.advise(w + 1);
            self.advised = Some(w + 1);
        }
        let i = self.it.next()?;
        Some(self.reader.live_entry(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.it.size_hint()
    }
}

/// Samples of a shard snapshot, in the order asked for.
pub struct ShardEntries<'r> {
    snap: &'r Snapshot,
    inner: Box<dyn Iterator<Item = EntryRef<'r>> + 'r>,
    /// Whether the entries come in storage order (records one after
    /// another in each shard): what follows a record is prefetched.
    in_order: bool,
}

impl<'r> ShardEntries<'r> {
    /// Only the keys.
    pub fn keys(self) -> impl Iterator<Item = &'r [u8]> + 'r {
        self.inner.map(|e| e.key)
    }
}

impl<'r> Iterator for ShardEntries<'r> {
    type Item = Result<Sample<'r>>;

    fn next(&mut self) -> Option<Result<Sample<'r>>> {
        let e = self.inner.next()?;
        // Every record's crc32c is checked, whatever `verify_reads` says.
        Some(if self.in_order {
            self.snap.sample_in_order(&e)
        } else {
            self.snap.sample_of(&e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlanConfig, Uneven};
    use crate::store::{ShardOptions, ShardStore};
    use crate::{DType, TensorRef};

    /// A store of `n` samples (key `k{i}`, one u8 array holding `i` as
    /// 8 bytes) spread over shards of about 4 KiB.
    fn store(dir: &std::path::Path, n: u64) -> ShardStore {
        let options = ShardOptions {
            create: true,
            shard_limit: 4096,
            ..ShardOptions::default()
        };
        let store = ShardStore::open(dir, &options).unwrap();
        for i in 0..n {
            let data = i.to_le_bytes();
            let t = TensorRef::raw("x", DType::U8, &[8], &data).unwrap();
            store.put(format!("k{i:05}").as_bytes(), &[t]).unwrap();
        }
        store.flush().unwrap();
        store
    }

    fn value(s: Result<crate::store::Sample<'_>>) -> u64 {
        let s = s.unwrap();
        u64::from_le_bytes(s.tensors().get(0).unwrap().data().try_into().unwrap())
    }

    /// Block shuffles whose blocks cross shard boundaries, padded, and
    /// storage order: the advising readers hand out exactly the plan's
    /// samples.
    #[test]
    fn advising_readers_follow_plans_across_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 300;
        let reader = store(tmp.path(), n).reader().unwrap();
        assert!(
            reader.stats().unwrap().shards > 5,
            "blocks should cross shards"
        );
        for shuffle in [
            Shuffle::None,
            Shuffle::Full,
            Shuffle::Blocks { size: 7 },
            Shuffle::Blocks { size: 64 },
        ] {
            for rank in 0..2 {
                let config = PlanConfig {
                    seed: 3,
                    shuffle,
                    rank,
                    world_size: 2,
                    num_workers: 2,
                    worker: 1,
                    uneven: Uneven::Pad,
                    ..PlanConfig::default()
                };
                let plan = EpochPlan::new(n, config).unwrap();
                let got: Vec<u64> = reader.iter_plan(&plan).unwrap().map(value).collect();
                let want: Vec<u64> = plan.iter().collect();
                assert_eq!(got, want, "{shuffle} rank {rank}");
            }
        }
        let all: Vec<u64> = reader.iter().unwrap().map(value).collect();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    /// The `VmFlags` of this process's maps of `file`.
    fn vm_flags(file: &std::path::Path) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = file.to_str().unwrap();
        let mut inside = false;
        let mut out = Vec::new();
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                inside = line.ends_with(name);
            } else if let (true, Some(flags)) = (inside, line.strip_prefix("VmFlags:")) {
                out.push(flags.trim().to_string());
            }
        }
        out
    }

    /// A write-order scan marks the shard it reads `MADV_SEQUENTIAL`
    /// (`sr` in smaps) while it runs, and undoes it when dropped.
    #[cfg(target_os = "linux")]
    #[test]
    fn scans_mark_shards_sequential_while_they_run() {
        let tmp = tempfile::tempdir().unwrap();
        let reader = store(tmp.path(), 40).reader().unwrap();
        let no = reader.snap.manifest().shards[0];
        let name = crate::store::shard::layout::shard_name(no);
        let first = std::fs::canonicalize(tmp.path().join(name)).unwrap();
        let sequential = |flags: &[String]| flags.iter().any(|f| f.split(' ').any(|x| x == "sr"));
        let before = vm_flags(&first);
        assert!(!before.is_empty(), "the reader maps {}", first.display());
        assert!(!sequential(&before), "{before:?}");
        let mut scan = reader.iter().unwrap();
        assert_eq!(value(scan.next().unwrap()), 0);
        let during = vm_flags(&first);
        assert!(sequential(&during), "{during:?}");
        assert_eq!(scan.count(), 39);
        let after = vm_flags(&first);
        assert!(!sequential(&after), "{after:?}");
    }
}
