//! One interface over both backends: what the CLI and the server use.

use std::ops::Bound;
use std::path::Path;

use crate::plan::{EpochPlan, PlanConfig};
use crate::store::error::{Result, StoreError};
use crate::store::lmdb::{LmdbOptions, LmdbReader, LmdbStore};
use crate::store::shard::{ShardOptions, ShardReader, ShardStore};
use crate::store::{Sample, VerifyReport};
use crate::tensor::AsTensorRef;

/// The two kinds of store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An LMDB environment: random access, updates and deletes in place.
    Lmdb,
    /// Append-only `.ten` shards: write-once datasets, sequential epochs.
    Shard,
}

impl Backend {
    /// `"lmdb"` or `"ten"` (the shard backend's name in the CLI's
    /// `--backend`, the server's `info` and `tenstore.json`: its files are
    /// `.ten` shards).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Lmdb => "lmdb",
            Backend::Shard => "ten",
        }
    }

    /// Tensor names this backend's record layout reserves: a sample holding
    /// a tensor of one of these names is refused with
    /// [`StoreError::ReservedName`] when it is written. Check inputs
    /// against this list to refuse them before writing anything.
    pub fn reserved_names(self) -> &'static [&'static str] {
        use crate::store::shard::layout::{KEY_NAME, TOMB_NAME};
        match self {
            Backend::Lmdb => &[],
            Backend::Shard => &[KEY_NAME, TOMB_NAME],
        }
    }

    /// The backend whose files `dir` holds, if any.
    pub fn detect(dir: &Path) -> Option<Backend> {
        if LmdbStore::holds(dir) {
            Some(Backend::Lmdb)
        } else if ShardStore::holds(dir) {
            Some(Backend::Shard)
        } else {
            None
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "lmdb" => Ok(Backend::Lmdb),
            "ten" => Ok(Backend::Shard),
            other => Err(format!("unknown backend {other:?}: lmdb or ten")),
        }
    }
}

/// How to open a [`Store`].
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Make a new store when the directory holds none, of backend
    /// `backend`.
    pub create: bool,
    /// The backend of a new store (default LMDB). An existing store's
    /// backend is detected from its files.
    pub backend: Option<Backend>,
    /// Open for reading only (no writer lock on shard stores).
    pub read_only: bool,
    /// Options of the LMDB backend.
    pub lmdb: LmdbOptions,
    /// Options of the shard backend.
    pub shard: ShardOptions,
}

/// A store of either backend.
#[derive(Clone)]
pub enum Store {
    /// An LMDB store.
    Lmdb(LmdbStore),
    /// A shard store.
    Shard(ShardStore),
}

/// Counts and sizes of a store of either backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStats {
    /// Which backend.
    pub backend: Backend,
    /// Number of samples.
    pub samples: u64,
    /// Bytes the samples occupy (LMDB pages; live shard records).
    pub bytes: u64,
    /// LMDB's map size; 0 for shard stores.
    pub map_size: u64,
    /// Number of shard files; 0 for LMDB.
    pub shards: u64,
}

impl Store {
    /// Opens the store in `dir`, detecting its backend, or makes one.
    ///
    /// The store is read through memory maps: while it is open, its files
    /// must change only through tenstore (LMDB: through LMDB). A file
    /// truncated by another process can kill a reader with `SIGBUS`, and
    /// one rewritten in place changes bytes under held snapshots; see the
    /// crate docs, "Memory maps".
    pub fn open<P: AsRef<Path>>(dir: P, options: &StoreOptions) -> Result<Store> {
        let dir = dir.as_ref();
        let backend = match Backend::detect(dir) {
            Some(b) => {
                if options.create && options.backend.is_some_and(|want| want != b) {
                    return Err(StoreError::OtherBackend {
                        path: dir.to_owned(),
                        found: b,
                    });
                }
                b
            }
            None => {
                crate::store::refuse_missing(dir, false, options.create, options.read_only)?;
                options.backend.unwrap_or(Backend::Lmdb)
            }
        };
        Ok(match backend {
            Backend::Lmdb => Store::Lmdb(LmdbStore::open(
                dir,
                &LmdbOptions {
                    create: options.create,
                    read_only: options.read_only,
                    ..options.lmdb.clone()
                },
            )?),
            Backend::Shard => Store::Shard(ShardStore::open(
                dir,
                &ShardOptions {
                    create: options.create,
                    read_only: options.read_only,
                    ..options.shard.clone()
                },
            )?),
        })
    }

    /// Opens the shard store published at `url` (`s3://bucket/prefix`
    /// or `file:///dir`, see [`crate::remote`]) read-only, its shards
    /// fetched into the bounded cache `remote` names as they are read.
    #[cfg(feature = "s3")]
    pub fn open_remote(
        url: &str,
        remote: &crate::remote::RemoteOptions,
        options: &StoreOptions,
    ) -> Result<Store> {
        crate::remote::open(url, remote, &options.shard)
            .map(Store::Shard)
            .map_err(|e| match e {
                crate::remote::RemoteError::Store(e) => *e,
                e => StoreError::Remote(Box::new(e)),
            })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Lmdb(_) => Backend::Lmdb,
            Store::Shard(_) => Backend::Shard,
        }
    }

    /// Stores one sample under `key`, replacing any sample there.
    pub fn put<T: AsTensorRef>(&self, key: &[u8], tensors: &[T]) -> Result<()> {
        match self {
            Store::Lmdb(s) => s.put(key, tensors),
            Store::Shard(s) => s.put(key, tensors),
        }
    }

    /// Stores many samples, in order, in one commit.
    pub fn put_batch<K: AsRef<[u8]>, S: AsRef<[T]>, T: AsTensorRef>(
        &self,
        samples: &[(K, S)],
    ) -> Result<()> {
        match self {
            Store::Lmdb(s) => s.put_batch(samples),
            Store::Shard(s) => s.put_batch(samples),
        }
    }

    /// Removes samples, all or none.
    pub fn delete_exact<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<()> {
        match self {
            Store::Lmdb(s) => s.delete_exact(keys),
            Store::Shard(s) => s.delete_exact(keys),
        }
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        match self {
            Store::Lmdb(s) => s.flush(),
            Store::Shard(s) => s.flush(),
        }
    }

    /// A read snapshot.
    pub fn reader(&self) -> Result<Reader<'_>> {
        Ok(match self {
            Store::Lmdb(s) => Reader::Lmdb(s.reader()?),
            Store::Shard(s) => Reader::Shard(s.reader()?),
        })
    }

    /// Counts and sizes, in a snapshot of its own (a thread that holds a
    /// reader should ask [`Reader::stats`]: with LMDB, a second snapshot
    /// may have to wait for the map to grow).
    pub fn stats(&self) -> Result<StoreStats> {
        self.reader()?.stats()
    }
}

/// The order to hand out samples in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By key.
    Key,
    /// As written (shard stores); key order for LMDB.
    Written,
    /// A permutation fixed by the seed.
    Shuffled(u64),
}

/// A read snapshot of either backend.
pub enum Reader<'s> {
    /// Of an LMDB store.
    Lmdb(LmdbReader<'s>),
    /// Of a shard store.
    Shard(ShardReader),
}

/// Keys or samples, boxed: the backends' iterators differ.
pub type BoxIter<'r, T> = Box<dyn Iterator<Item = Result<T>> + 'r>;

impl<'s> Reader<'s> {
    /// Counts and sizes as of this snapshot. Opens no second snapshot, so
    /// it never waits for the LMDB map to grow.
    pub fn stats(&self) -> Result<StoreStats> {
        Ok(match self {
            Reader::Lmdb(r) => {
                let st = r.stats()?;
                StoreStats {
                    backend: Backend::Lmdb,
                    samples: st.samples,
                    bytes: st.bytes,
                    map_size: st.map_size,
                    shards: 0,
                }
            }
            Reader::Shard(r) => {
                let st = r.stats()?;
                StoreStats {
                    backend: Backend::Shard,
                    samples: st.samples,
                    bytes: st.live_bytes,
                    map_size: 0,
                    shards: st.shards,
                }
            }
        })
    }

    /// The sample under `key`; it borrows the snapshot and the key.
    pub fn get<'r>(&'r self, key: &'r [u8]) -> Result<Option<Sample<'r>>> {
        match self {
            Reader::Lmdb(r) => r.get(key),
            Reader::Shard(r) => r.get(key),
        }
    }

    /// Like [`get`](Self::get), with a scan's check: a shard record's
    /// crc32c is checked whatever `verify_reads` says
    /// ([`ShardReader::get_checked`]). LMDB stores keep no checksums, so
    /// for them this is `get`.
    pub fn get_checked<'r>(&'r self, key: &'r [u8]) -> Result<Option<Sample<'r>>> {
        match self {
            Reader::Lmdb(r) => r.get(key),
            Reader::Shard(r) => r.get_checked(key),
        }
    }

    /// Like [`get_checked`](Self::get_checked), but a missing key is an
    /// error.
    pub fn require_checked<'r>(&'r self, key: &'r [u8]) -> Result<Sample<'r>> {
        self.get_checked(key)?.ok_or_else(|| StoreError::NotFound {
            key: crate::error::escape(key),
        })
    }

    /// Like [`get`](Self::get), but a missing key is an error.
    pub fn require<'r>(&'r self, key: &'r [u8]) -> Result<Sample<'r>> {
        self.get(key)?.ok_or_else(|| StoreError::NotFound {
            key: crate::error::escape(key),
        })
    }

    /// Whether a long-lived reader should be replaced by a fresh one
    /// ([`ShardReader::needs_renewal`]); never for LMDB or local stores.
    pub fn needs_renewal(&self) -> bool {
        match self {
            Reader::Lmdb(_) => false,
            Reader::Shard(r) => r.needs_renewal(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> Result<u64> {
        match self {
            Reader::Lmdb(r) => r.len(),
            Reader::Shard(r) => r.len(),
        }
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Keys in key order that start with `prefix` and come after `after`
    /// (exclusive).
    pub fn keys<'r>(
        &'r self,
        prefix: &'r [u8],
        after: Option<&'r [u8]>,
    ) -> Result<BoxIter<'r, &'r [u8]>> {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        Ok(match self {
            Reader::Lmdb(r) => Box::new(
                r.iter_from(start)?
                    .keys()
                    .take_while(move |k| k.as_ref().map_or(true, |k| k.starts_with(prefix))),
            ),
            Reader::Shard(r) => Box::new(
                r.iter_from(start)?
                    .keys()
                    .take_while(move |k| k.starts_with(prefix))
                    .map(Ok),
            ),
        })
    }

    /// The keys of [`samples`](Self::samples)`(order)`, in the same
    /// order, without reading (or checking) the samples.
    pub fn keys_in(&self, order: Order) -> Result<BoxIter<'_, &[u8]>> {
        Ok(match (self, order) {
            (_, Order::Key) | (Reader::Lmdb(_), Order::Written) => self.keys(b"", None)?,
            (Reader::Lmdb(r), Order::Shuffled(seed)) => {
                Box::new(r.keys_shuffled(seed)?.into_iter().map(Ok))
            }
            (Reader::Shard(r), Order::Written) => Box::new(r.iter()?.keys().map(Ok)),
            (Reader::Shard(r), Order::Shuffled(seed)) => {
                Box::new(r.iter_shuffled(seed)?.keys().map(Ok))
            }
        })
    }

    /// Every sample in `order`.
    pub fn samples(&self, order: Order) -> Result<BoxIter<'_, Sample<'_>>> {
        Ok(match (self, order) {
            (Reader::Lmdb(r), Order::Key | Order::Written) => Box::new(r.iter()?),
            (Reader::Lmdb(r), Order::Shuffled(seed)) => Box::new(r.iter_shuffled(seed)?),
            (Reader::Shard(r), Order::Key) => Box::new(r.iter_from(Bound::Unbounded)?),
            (Reader::Shard(r), Order::Written) => Box::new(r.iter()?),
            (Reader::Shard(r), Order::Shuffled(seed)) => Box::new(r.iter_shuffled(seed)?),
        })
    }

    /// The epoch plan of `config` over this snapshot's samples in storage
    /// order (key order for LMDB, write order for shard stores).
    pub fn plan(&self, config: PlanConfig) -> Result<EpochPlan> {
        Ok(EpochPlan::new(self.len()?, config)?)
    }

    /// The samples of `plan`'s partition, in its order. The plan must have
    /// been made for this snapshot's sample count
    /// ([`StoreError::Plan`] otherwise). Shard stores read block shuffles
    /// block by block, front to back; LMDB stores list their keys once
    /// (one pointer per sample) and look each sample up.
    pub fn plan_samples<'r>(&'r self, plan: &'r EpochPlan) -> Result<BoxIter<'r, Sample<'r>>> {
        Ok(match self {
            Reader::Shard(r) => Box::new(r.iter_plan(plan)?),
            Reader::Lmdb(r) => {
                crate::store::shard::check_plan(plan, r.len()?)?;
                let keys = r.iter()?.keys().collect::<Result<Vec<&[u8]>>>()?;
                crate::store::shard::check_plan(plan, keys.len() as u64)?;
                Box::new(plan.iter().map(move |i| r.require(keys[i as usize])))
            }
        })
    }

    /// The keys of `plan`'s partition items `from..from + limit`, in plan
    /// order: what the serve protocol's `plan` command pages through. On
    /// LMDB stores this walks the keys once and holds only the page.
    pub fn plan_keys<'r>(
        &'r self,
        plan: &EpochPlan,
        from: u64,
        limit: u64,
    ) -> Result<Vec<&'r [u8]>> {
        match self {
            Reader::Shard(r) => {
                crate::store::shard::check_plan(plan, r.len()?)?;
                Ok(plan
                    .page(from, limit)
                    .map(|i| r.key_at(i).expect("the plan's count was checked"))
                    .collect())
            }
            Reader::Lmdb(r) => {
                crate::store::shard::check_plan(plan, r.len()?)?;
                // (sample index, place in the page), by sample index.
                let mut want: Vec<(u64, usize)> = plan
                    .page(from, limit)
                    .enumerate()
                    .map(|(j, i)| (i, j))
                    .collect();
                want.sort_unstable();
                let mut out: Vec<&[u8]> = vec![&[]; want.len()];
                let mut next = want.iter().peekable();
                for (i, key) in r.iter()?.keys().enumerate() {
                    let Some(&&(target, _)) = next.peek() else {
                        break;
                    };
                    if i as u64 != target {
                        continue;
                    }
                    let key = key?;
                    while let Some(&&(t, j)) = next.peek() {
                        if t != target {
                            break;
                        }
                        out[j] = key;
                        next.next();
                    }
                }
                if next.peek().is_some() {
                    // The snapshot is fixed, so its keys cannot run out.
                    return Err(StoreError::io(
                        "listing the keys of a plan",
                        std::io::Error::other("the snapshot listed fewer keys than it counts"),
                    ));
                }
                Ok(out)
            }
        }
    }

    /// A snapshot that sees every commit so far.
    pub fn refresh(&mut self) -> Result<()> {
        match self {
            Reader::Lmdb(r) => r.refresh(),
            Reader::Shard(r) => r.refresh(),
        }
    }

    /// What this snapshot stepped around that may hold samples (a damaged
    /// sidecar, whole records no sidecar commits, records past the end of
    /// their shard), one line each: empty when it hides nothing. Listings
    /// and lookups of a snapshot with such damage can miss samples, or
    /// return an older version of one. Always empty for LMDB.
    pub fn skipped(&self) -> Vec<String> {
        match self {
            Reader::Lmdb(_) => Vec::new(),
            Reader::Shard(r) if r.load_report().hides_records() => r.load_report().problems(),
            Reader::Shard(_) => Vec::new(),
        }
    }

    /// Checks every sample (tenbin structure; checksums on shard stores):
    /// an empty report when all is well.
    pub fn verify(&self) -> Result<VerifyReport> {
        match self {
            Reader::Lmdb(r) => r.verify(),
            Reader::Shard(r) => r.verify(),
        }
    }
}
