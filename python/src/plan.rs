//! `tenstore.Plan`: an epoch plan (`tenstore::plan`) over a reader's
//! snapshot, handing out zero-copy samples in plan order.
//!
//! The Rust plan of the rank (worker 0 of 1) fixes the rank's items; the
//! rank's loader workers take them in turns of `batch_size` items: worker
//! `w` of `K` gets the rank's batches `w, w+K, ...` (batch `b` = items
//! `b·B .. (b+1)·B`). With `batch_size` 1 that is exactly the Rust plan's
//! worker split; with the loader's batch size it makes a torch
//! `DataLoader` (which takes one batch from each worker in turn) hand the
//! rank's items out in plan order, so counting what it handed out gives
//! the consumed prefix exactly.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyString};
use tenstore::plan::{EpochPlan, PlanConfig, PlanError, PlanState, Shuffle, Uneven};
use tenstore::store::Reader;

use crate::errors::{store_err, StoreError};
use crate::store::{lock, sample_of, PySample, Snap};

/// A plan error (bad configuration or saved state) as a `ValueError`.
fn plan_err(e: PlanError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// `None`/`False`/`"none"`, `True`/`"full"`, or `"blocks:N"`.
pub(crate) fn parse_shuffle(shuffle: Option<&Bound<'_, PyAny>>) -> PyResult<Shuffle> {
    let Some(s) = shuffle else {
        return Ok(Shuffle::None);
    };
    if s.is_none() {
        Ok(Shuffle::None)
    } else if let Ok(b) = s.cast::<PyBool>() {
        Ok(if b.is_true() {
            Shuffle::Full
        } else {
            Shuffle::None
        })
    } else if let Ok(text) = s.cast::<PyString>() {
        text.extract::<String>()?.parse().map_err(plan_err)
    } else {
        Err(PyTypeError::new_err(format!(
            "shuffle is None, True/False, \"none\", \"full\" or \"blocks:N\", not {}",
            s.get_type()
        )))
    }
}

pub(crate) fn parse_uneven(uneven: &str) -> PyResult<Uneven> {
    match uneven {
        "drop_last" | "drop-last" => Ok(Uneven::DropLast),
        "pad" => Ok(Uneven::Pad),
        other => Err(PyValueError::new_err(format!(
            "unknown uneven mode {other:?}: \"drop_last\" or \"pad\""
        ))),
    }
}

/// A saved state from its dict (what `Plan.state` returns).
fn state_of(d: &Bound<'_, PyDict>) -> PyResult<PlanState> {
    let field = |name: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(name)?.ok_or_else(|| {
            PyValueError::new_err(format!(
                "the plan state has no {name:?}: it needs samples, seed, epoch, shuffle and consumed"
            ))
        })
    };
    let shuffle = field("shuffle")?;
    Ok(PlanState {
        samples: field("samples")?.extract()?,
        seed: field("seed")?.extract()?,
        epoch: field("epoch")?.extract()?,
        shuffle: parse_shuffle(Some(&shuffle))?,
        consumed: field("consumed")?.extract()?,
    })
}

/// The snapshot's keys in storage order (LMDB: key order), in one buffer.
struct KeyTable {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyTable {
    fn key(&self, i: u64) -> Option<&[u8]> {
        let i = usize::try_from(i).ok()?;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }
}

/// What a `Plan` and its iterators share.
struct Inner {
    snap: Arc<Snap>,
    /// The rank's plan (worker 0 of 1).
    plan: EpochPlan,
    worker: u64,
    num_workers: u64,
    batch: u64,
    /// LMDB only: sample index -> key, listed on first use.
    keys: OnceLock<KeyTable>,
}

impl Inner {
    /// Items of this partition.
    fn len(&self) -> u64 {
        let (b, k, w) = (self.batch, self.num_workers, self.worker);
        let per_rank = self.plan.per_rank();
        let (full, rest) = (per_rank / b, per_rank % b);
        let full_mine = if full > w { (full - w).div_ceil(k) } else { 0 };
        full_mine * b + if rest > 0 && full % k == w { rest } else { 0 }
    }

    /// The rank item of this partition's item `j`.
    fn rank_item(&self, j: u64) -> u64 {
        let b = self.batch;
        (self.worker + (j / b) * self.num_workers) * b + j % b
    }

    /// Sample indices of this partition's items `from..to`, appended.
    fn indices(&self, from: u64, to: u64, out: &mut impl Extend<u64>) {
        let mut j = from;
        while j < to {
            let run = (self.batch - j % self.batch).min(to - j);
            out.extend(self.plan.page(self.rank_item(j), run));
            j += run;
        }
    }

    /// The global prefix covered once every partition of the job has
    /// yielded `items` items (see `tenstore::plan::PlanIter::consumed`).
    fn consumed(&self, items: u64) -> u64 {
        let (b, k) = (self.batch, self.num_workers);
        let rank_prefix = (items / b) * k * b + items % b;
        self.plan.consumed_after(rank_prefix)
    }

    /// The key of sample `i` (storage order).
    fn key(&self, py: Python<'_>, i: u64) -> PyResult<Vec<u8>> {
        {
            let reader = lock(&self.snap.reader);
            if let Reader::Shard(r) = &*reader {
                return r.key_at(i).map(<[u8]>::to_vec).ok_or_else(|| missing(i));
            }
        }
        let table = match self.keys.get() {
            Some(t) => t,
            None => {
                let t = py.detach(|| self.list_keys())?;
                self.keys.get_or_init(|| t)
            }
        };
        table.key(i).map(<[u8]>::to_vec).ok_or_else(|| missing(i))
    }

    fn list_keys(&self) -> PyResult<KeyTable> {
        let reader = lock(&self.snap.reader);
        let mut t = KeyTable {
            bytes: Vec::new(),
            ends: Vec::new(),
        };
        for k in reader.keys(b"", None).map_err(store_err)? {
            t.bytes.extend_from_slice(k.map_err(store_err)?);
            t.ends.push(t.bytes.len());
        }
        if t.ends.len() as u64 != self.plan.samples() {
            return Err(StoreError::new_err(format!(
                "the snapshot listed {} keys but counts {} samples",
                t.ends.len(),
                self.plan.samples()
            )));
        }
        Ok(t)
    }

    fn sample(&self, py: Python<'_>, i: u64) -> PyResult<PySample> {
        let key = self.key(py, i)?;
        sample_of(py, &self.snap, &key, crate::store::Read::Scan)?.ok_or_else(|| missing(i))
    }
}

fn missing(i: u64) -> PyErr {
    StoreError::new_err(format!(
        "sample {i} of the plan is not in its snapshot (the snapshot changed under the plan)"
    ))
}

/// Makes the plan of `Reader.plan`.
pub(crate) fn make_plan(
    py: Python<'_>,
    snap: Arc<Snap>,
    config: PlanConfig,
    batch_size: u64,
    consumed: u64,
    state: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyPlan> {
    if batch_size == 0 {
        return Err(plan_err(PlanError::Zero { what: "batch_size" }));
    }
    let n = py.detach(|| lock(&snap.reader).len()).map_err(store_err)?;
    // Checks rank, worker and shuffle as the Rust plan does.
    EpochPlan::new(n, config.clone()).map_err(plan_err)?;
    let rank_config = PlanConfig {
        worker: 0,
        num_workers: 1,
        ..config.clone()
    };
    let plan = match state {
        Some(d) => EpochPlan::resume(&state_of(d)?, n, rank_config).map_err(plan_err)?,
        None => EpochPlan::new(n, rank_config)
            .map_err(plan_err)?
            .resume_from(consumed),
    };
    Ok(PyPlan {
        inner: Arc::new(Inner {
            snap,
            plan,
            worker: config.worker,
            num_workers: config.num_workers,
            batch: batch_size,
            keys: OnceLock::new(),
        }),
    })
}

/// One partition (rank and worker) of an epoch plan over a reader's
/// snapshot. Iterating it gives zero-copy `Sample`s in plan order.
#[pyclass(frozen, module = "tenstore", name = "Plan")]
pub(crate) struct PyPlan {
    inner: Arc<Inner>,
}

fn page_bounds(len: u64, start: u64, limit: Option<u64>) -> (u64, u64) {
    let from = start.min(len);
    let to = limit.map_or(len, |l| from.saturating_add(l).min(len));
    (from, to)
}

#[pymethods]
impl PyPlan {
    /// Items of this partition.
    fn __len__(&self) -> usize {
        usize::try_from(self.inner.len()).unwrap_or(usize::MAX)
    }

    /// Samples of the snapshot the plan orders.
    #[getter]
    fn num_samples(&self) -> u64 {
        self.inner.plan.samples()
    }

    /// Global positions used before this plan (the resume point).
    #[getter]
    fn start(&self) -> u64 {
        self.inner.plan.start()
    }

    /// Items each rank gets (equal for all ranks).
    #[getter]
    fn per_rank(&self) -> u64 {
        self.inner.plan.per_rank()
    }

    /// Global position one past the last any rank gets.
    #[getter]
    fn end(&self) -> u64 {
        self.inner.plan.end()
    }

    /// The configuration: seed, epoch, shuffle, rank, world_size, worker,
    /// num_workers, uneven, batch_size.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.plan.config();
        let d = PyDict::new(py);
        d.set_item("seed", c.seed)?;
        d.set_item("epoch", c.epoch)?;
        d.set_item("shuffle", c.shuffle.to_string())?;
        d.set_item("rank", c.rank)?;
        d.set_item("world_size", c.world_size)?;
        d.set_item("worker", self.inner.worker)?;
        d.set_item("num_workers", self.inner.num_workers)?;
        let uneven = match c.uneven {
            Uneven::DropLast => "drop_last",
            Uneven::Pad => "pad",
        };
        d.set_item("uneven", uneven)?;
        d.set_item("batch_size", self.inner.batch)?;
        Ok(d)
    }

    /// Global positions of this partition's items `start..start+limit`.
    #[pyo3(signature = (start=0, limit=None))]
    fn positions(&self, start: u64, limit: Option<u64>) -> Vec<u64> {
        let (from, to) = page_bounds(self.inner.len(), start, limit);
        (from..to)
            .map(|j| self.inner.plan.position(self.inner.rank_item(j)))
            .collect()
    }

    /// Sample indices (in storage order: key order for LMDB, write order
    /// for shard stores) of items `start..start+limit`.
    #[pyo3(signature = (start=0, limit=None))]
    fn indices(&self, start: u64, limit: Option<u64>) -> Vec<u64> {
        let (from, to) = page_bounds(self.inner.len(), start, limit);
        let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
        self.inner.indices(from, to, &mut out);
        out
    }

    /// Keys of items `start..start+limit`, in plan order.
    #[pyo3(signature = (start=0, limit=None))]
    fn keys(&self, py: Python<'_>, start: u64, limit: Option<u64>) -> PyResult<Vec<Py<PyBytes>>> {
        self.indices(start, limit)
            .into_iter()
            .map(|i| Ok(PyBytes::new(py, &self.inner.key(py, i)?).unbind()))
            .collect()
    }

    /// The samples from item `start` on, in plan order.
    #[pyo3(signature = (start=0))]
    fn samples(&self, start: u64) -> PlanSamples {
        let len = self.inner.len();
        PlanSamples {
            inner: Arc::clone(&self.inner),
            next: start.min(len),
            len,
            buf: VecDeque::new(),
        }
    }

    fn __iter__(&self) -> PlanSamples {
        self.samples(0)
    }

    /// The global prefix consumed once this rank has received
    /// `rank_items` of its items in plan order (every rank as many).
    fn consumed_after(&self, rank_items: u64) -> u64 {
        self.inner.plan.consumed_after(rank_items)
    }

    /// The saved state for `consumed` (a dict: samples, seed, epoch,
    /// shuffle, consumed; the JSON of `tenstore::plan::PlanState`).
    fn state<'py>(&self, py: Python<'py>, consumed: u64) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.plan.state(consumed);
        let d = PyDict::new(py);
        d.set_item("samples", s.samples)?;
        d.set_item("seed", s.seed)?;
        d.set_item("epoch", s.epoch)?;
        d.set_item("shuffle", s.shuffle.to_string())?;
        d.set_item("consumed", s.consumed)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = self.inner.plan.config();
        format!(
            "Plan(samples={}, seed={}, epoch={}, shuffle={:?}, rank={}/{}, worker={}/{}, items={})",
            self.inner.plan.samples(),
            c.seed,
            c.epoch,
            c.shuffle.to_string(),
            c.rank,
            c.world_size,
            self.inner.worker,
            self.inner.num_workers,
            self.inner.len()
        )
    }
}

/// Sample indices computed per refill of a `PlanSamples` buffer.
const CHUNK: u64 = 256;

/// A partition's samples in plan order; it counts what it yielded.
#[pyclass(module = "tenstore", name = "PlanSamples")]
pub(crate) struct PlanSamples {
    inner: Arc<Inner>,
    next: u64,
    len: u64,
    buf: VecDeque<u64>,
}

#[pymethods]
impl PlanSamples {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<PySample>> {
        if self.buf.is_empty() {
            let to = self.next.saturating_add(CHUNK).min(self.len);
            self.inner.indices(self.next, to, &mut self.buf);
            self.next = to;
        }
        match self.buf.pop_front() {
            Some(i) => self.inner.sample(py, i).map(Some),
            None => Ok(None),
        }
    }

    /// Items left.
    fn __len__(&self) -> usize {
        usize::try_from(self.len - self.next + self.buf.len() as u64).unwrap_or(usize::MAX)
    }

    /// Items of the partition yielded (counting from item 0 of the plan).
    #[getter]
    fn items(&self) -> u64 {
        self.next - self.buf.len() as u64
    }

    /// The global prefix covered once every partition of the job has
    /// yielded as many items as this one: save the minimum over all
    /// partitions (ranks and workers).
    #[getter]
    fn consumed(&self) -> u64 {
        self.inner.consumed(self.items())
    }
}

/// Adds the plan classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPlan>()?;
    m.add_class::<PlanSamples>()?;
    Ok(())
}
