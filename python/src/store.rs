//! `tenstore.Store`, `tenstore.Reader` and `tenstore.Sample`.
//!
//! Ownership: a Python `Reader` holds an `Arc<Snap>`; a `Snap` owns a Rust
//! `Reader` and the `Arc<Store>` it borrows; every array handed out holds
//! the `Snap` through its numpy base (`KeepAlive`). So the mapped pages an
//! array views stay mapped, and its LMDB read transaction open, until the
//! last array of that snapshot is gone, whatever happens to the Python
//! `Reader` and `Store`.
//!
//! Fork: LMDB forbids using an environment or a transaction of the parent
//! in a child. Every object records the pid that opened it; in a child it
//! reopens by path. What it inherited is released without touching LMDB's
//! shared state: inherited read transactions are leaked (aborting one would
//! clear the parent's reader slot in the shared lock file), inherited LMDB
//! environments are closed (which, in a process that holds no transaction
//! and no lock of them, only unmaps and closes this process's descriptors,
//! and lets heed open the path again), inherited shard stores are leaked
//! (their drop could release the parent's writer lock).

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use tenstore::plan::PlanConfig;
use tenstore::store::{Backend, Order, Reader, Store, StoreOptions};
use tenstore::DType;

use crate::arrays::{array_raw, input_parts, parts_refs, KeepAlive, Part};
use crate::errors::store_err;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent (a swap of an
    // Option), so a panic elsewhere does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `m` from a thread attached to Python without deadlocking against
/// a holder that waits, detached, to attach again: while the lock is taken
/// elsewhere this thread waits detached, so the holder can get the GIL
/// back and finish.
pub(crate) fn lock_attached<'m, T: Send>(py: Python<'_>, m: &'m Mutex<T>) -> MutexGuard<'m, T> {
    loop {
        match m.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => py.detach(|| drop(lock(m))),
        }
    }
}

/// This process's id, cached: `getpid` is a system call, and asking on
/// every `reader[key]` cost about a quarter of a random get. Zero means
/// "ask again"; a fork handler resets it in every child (see
/// [`forget_pid_in_children`]), whoever forks.
static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, AtomicOrdering::Relaxed);
}

/// Installs the fork handler that makes [`pid`] ask again in a child.
pub(crate) fn forget_pid_in_children() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: pthread_atfork only records the handler. The handler runs
        // in the child right after fork (of any thread, through any API),
        // where only async-signal-safe work is allowed: it does one atomic
        // store to a static, which is. The function lives as long as the
        // process, since an extension module is never unloaded.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
        if rc != 0 {
            // Without the handler the cache cannot be trusted after a fork.
            PID_CACHE_OFF.store(true, AtomicOrdering::Relaxed);
        }
    });
}

static PID_CACHE_OFF: AtomicBool = AtomicBool::new(false);

fn pid() -> u32 {
    if PID_CACHE_OFF.load(AtomicOrdering::Relaxed) {
        return std::process::id();
    }
    match PID.load(AtomicOrdering::Relaxed) {
        0 => {
            let p = std::process::id();
            PID.store(p, AtomicOrdering::Relaxed);
            p
        }
        p => p,
    }
}

/// A store handle of one process.
struct Owned {
    store: ManuallyDrop<Arc<Store>>,
    pid: u32,
}

impl Owned {
    fn new(store: Arc<Store>) -> Self {
        Owned {
            store: ManuallyDrop::new(store),
            pid: pid(),
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.pid == pid() || matches!(**self.store, Store::Lmdb(_)) {
            // SAFETY: dropped once, here, and never used again. In a forked
            // child an LMDB environment may be closed (see the module
            // docs); shard stores of the parent are leaked instead.
            unsafe { ManuallyDrop::drop(&mut self.store) }
        }
    }
}

/// A read snapshot that owns the store it borrows.
pub(crate) struct Snap {
    /// Borrows `*store` (the `Store` inside the `Arc`'s allocation, which
    /// does not move while any `Arc` of it lives). Declared, and dropped,
    /// before `store`.
    pub(crate) reader: ManuallyDrop<Mutex<Reader<'static>>>,
    store: ManuallyDrop<Arc<Store>>,
    pid: u32,
}

impl Snap {
    fn new(store: Arc<Store>) -> Result<Snap, tenstore::store::StoreError> {
        let reader = store.reader()?;
        // SAFETY: `reader` borrows the `Store` that `store`'s allocation
        // holds. That allocation stays where it is while `Snap` holds the
        // `Arc` (moving an `Arc` moves the pointer, not the `Store`), and
        // `Snap::drop` drops `reader` before it releases `store`, so the
        // borrow never outlives what it borrows. The 'static lifetime never
        // escapes: every use goes through `&self` of a live `Snap`.
        let reader: Reader<'static> = unsafe { std::mem::transmute(reader) };
        Ok(Snap {
            reader: ManuallyDrop::new(Mutex::new(reader)),
            store: ManuallyDrop::new(store),
            pid: pid(),
        })
    }
}

impl Drop for Snap {
    fn drop(&mut self) {
        // SAFETY: each field is dropped at most once, here; `reader` (which
        // borrows `*store`) goes first. In a forked child the reader is
        // leaked, never ended (see the module docs), and only the store
        // handle is released, under the same rule as `Owned`.
        unsafe {
            if self.pid == pid() {
                ManuallyDrop::drop(&mut self.reader);
            }
            drop(Owned {
                store: ManuallyDrop::new(ManuallyDrop::take(&mut self.store)),
                pid: self.pid,
            });
        }
    }
}

/// Stores open in this process, by canonical path: LMDB allows one
/// environment per file per process, so `Store(p)` twice shares it.
static OPEN: Mutex<Option<HashMap<PathBuf, OpenEntry>>> = Mutex::new(None);

/// The pid that opened a store, whether read-only, and the store.
type OpenEntry = (u32, bool, Weak<Store>);
/// A `Reader`'s current snapshot.
type ReaderSlot = Mutex<Option<Arc<Snap>>>;

/// Every store and reader slot, to release what a forked child inherits.
static STORE_SLOTS: Mutex<Vec<Weak<Mutex<Option<Owned>>>>> = Mutex::new(Vec::new());
static READER_SLOTS: Mutex<Vec<Weak<ReaderSlot>>> = Mutex::new(Vec::new());

/// Where a published store's bytes are cached (`cache_dir=`,
/// `cache_size=`); only for URLs.
#[derive(Clone, Debug, Default)]
pub(crate) struct CacheOptions {
    dir: Option<PathBuf>,
    size: Option<u64>,
}

impl CacheOptions {
    /// From the keyword arguments: `cache_size` is a positive byte count
    /// (an int, not a bool) or a string such as `"10G"`; `cache_dir` a
    /// non-empty path, made absolute here so that a pickled copy opened in
    /// another working directory names the same cache.
    fn new(dir: Option<PathBuf>, size: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let size = match size {
            None => None,
            Some(s) if s.is_none() => None,
            Some(s) => Some(cache_size(s)?),
        };
        let dir =
            match dir {
                None => None,
                Some(d) if d.as_os_str().is_empty() => {
                    return Err(PyValueError::new_err(
                        "cache_dir is empty: name a directory (or leave it out for the default)",
                    ))
                }
                Some(d) => Some(std::path::absolute(&d).map_err(|e| {
                    PyValueError::new_err(format!("cache_dir {}: {e}", d.display()))
                })?),
            };
        Ok(CacheOptions { dir, size })
    }

    fn is_set(&self) -> bool {
        self.dir.is_some() || self.size.is_some()
    }

    fn remote(&self) -> tenstore::remote::RemoteOptions {
        let mut o = tenstore::remote::RemoteOptions {
            cache_dir: self.dir.clone(),
            ..Default::default()
        };
        if let Some(size) = self.size {
            o.cache_size = size;
        }
        o
    }

    /// `(cache_dir, cache_size)`, for pickling.
    fn args(&self) -> (Option<PathBuf>, Option<u64>) {
        (self.dir.clone(), self.size)
    }
}

/// A `cache_size=` argument: a positive byte count below 2^64 or a
/// string such as `"10G"`.
fn cache_size(s: &Bound<'_, PyAny>) -> PyResult<u64> {
    let n = if s.is_instance_of::<pyo3::types::PyBool>() {
        None
    } else if s.is_instance_of::<pyo3::types::PyInt>() {
        Some(s.extract::<u64>().map_err(|_| {
            PyValueError::new_err(format!(
                "cache_size {s} is not a byte count: give 1 to 2**64 - 1 bytes"
            ))
        })?)
    } else if let Ok(text) = s.extract::<String>() {
        Some(tenstore::remote::parse_size(&text).map_err(PyValueError::new_err)?)
    } else {
        None
    };
    match n {
        Some(0) => Err(PyValueError::new_err(
            "cache_size 0 leaves no room for any download: give a positive byte count",
        )),
        Some(n) => Ok(n),
        None => Err(PyTypeError::new_err(format!(
            "cache_size is a byte count (int) or a string such as \"10G\", not {}",
            s.get_type()
        ))),
    }
}

/// The URL `path` is (`s3://...`, `file://...`), if it is one.
fn url_of(path: &Path) -> Option<&str> {
    path.to_str().filter(|p| tenstore::remote::is_url(p))
}

/// Checks what `Store(path, ...)` was given: a URL opens read-only (no
/// create, no LMDB); cache options are for URLs only.
fn check_target(
    path: &Path,
    create: bool,
    backend: Option<&str>,
    cache: &CacheOptions,
) -> PyResult<()> {
    match url_of(path) {
        Some(url) if create => Err(PyValueError::new_err(format!(
            "{url}: a published store opens read-only; publish a local store there \
             with `tenstore publish STORE {url}`"
        ))),
        Some(url) if backend.is_some_and(|b| b != "ten") => Err(PyValueError::new_err(format!(
            "{url}: published stores are shard stores (backend \"ten\")"
        ))),
        None if cache.is_set() => Err(PyValueError::new_err(format!(
            "{}: cache_dir and cache_size are for store URLs (s3://, file://), \
             not local directories",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// `path` as Python sees it: a `str` for a URL (a `pathlib.Path` would
/// fold its `//`), else a path.
fn path_obj<'py>(py: Python<'py>, path: &Path) -> PyResult<Bound<'py, PyAny>> {
    match url_of(path) {
        Some(url) => Ok(PyString::new(py, url).into_any()),
        None => Ok(path.to_owned().into_pyobject(py)?.into_any()),
    }
}

fn open_shared(
    path: &Path,
    create: bool,
    backend: Option<Backend>,
    readonly: bool,
    cache: &CacheOptions,
) -> Result<Arc<Store>, tenstore::store::StoreError> {
    if let Some(url) = url_of(path) {
        // Never shared: each open fetches the published manifest afresh
        // (a refresh sees a re-publish), and options may differ.
        return Store::open_remote(url, &cache.remote(), &StoreOptions::default()).map(Arc::new);
    }
    let mut open = lock(&OPEN);
    let map = open.get_or_insert_with(HashMap::new);
    if let Ok(canon) = path.canonicalize() {
        if let Some((p, ro, weak)) = map.get(&canon) {
            if *p == pid() && (readonly || !*ro) {
                if let Some(store) = weak.upgrade() {
                    return Ok(store);
                }
            }
        }
    }
    let options = StoreOptions {
        create,
        backend,
        read_only: readonly,
        ..Default::default()
    };
    let store = Arc::new(Store::open(path, &options)?);
    if let Ok(canon) = path.canonicalize() {
        map.retain(|_, (p, _, w)| *p == pid() && w.strong_count() > 0);
        map.insert(canon, (pid(), readonly, Arc::downgrade(&store)));
    }
    Ok(store)
}

/// Releases what a forked child inherited (registered with
/// `os.register_at_fork`).
#[pyfunction]
fn _after_fork() {
    // The child is single-threaded here; taking each slot drops its
    // content under the fork rules of `Owned` and `Snap`.
    for slot in lock(&STORE_SLOTS).drain(..) {
        if let Some(slot) = slot.upgrade() {
            lock(&slot).take();
        }
    }
    for slot in lock(&READER_SLOTS).drain(..) {
        if let Some(slot) = slot.upgrade() {
            lock(&slot).take();
        }
    }
    lock(&OPEN).take();
}

fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = key.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else if let Ok(s) = key.cast::<PyString>() {
        Ok(s.extract::<String>()?.into_bytes())
    } else {
        Err(PyTypeError::new_err(format!(
            "keys are bytes or str, not {}",
            key.get_type()
        )))
    }
}

fn parse_backend(name: Option<&str>) -> PyResult<Option<Backend>> {
    name.map(|b| b.parse::<Backend>().map_err(PyValueError::new_err))
        .transpose()
}

/// A sample's arrays as (names, arrays): a dict or a list of pairs.
fn named_arrays<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
) -> PyResult<(Vec<String>, Bound<'py, PyList>)> {
    let items = if let Ok(d) = arrays.cast::<PyDict>() {
        d.items().into_any()
    } else {
        arrays.clone()
    };
    let mut names = Vec::new();
    let list = PyList::empty(py);
    for item in items.try_iter()? {
        let item = item?;
        let (name, array): (String, Bound<'py, PyAny>) = item.extract().map_err(|_| {
            PyTypeError::new_err("a sample is a dict name -> array or a list of (name, array)")
        })?;
        names.push(name);
        list.append(array)?;
    }
    Ok((names, list))
}

/// A sample store: LMDB or `.ten` shards.
#[pyclass(module = "tenstore", name = "Store")]
pub(crate) struct PyStore {
    slot: Arc<Mutex<Option<Owned>>>,
    path: PathBuf,
    create: bool,
    backend: Option<String>,
    readonly: bool,
    cache: CacheOptions,
    closed: Mutex<bool>,
}

impl PyStore {
    fn store(&self, py: Python<'_>) -> PyResult<Arc<Store>> {
        // The slot is held while the store opens detached from Python, so
        // other threads wait for it detached too; `closed` is read under
        // it, so a `close` that has begun is never undone by a reopen.
        let mut slot = lock_attached(py, &self.slot);
        if *lock(&self.closed) {
            return Err(PyValueError::new_err("operation on a closed Store"));
        }
        if let Some(o) = &*slot {
            if o.pid == pid() {
                return Ok(Arc::clone(&o.store));
            }
        }
        *slot = None;
        let backend = parse_backend(self.backend.as_deref())?;
        let (path, create, readonly) = (self.path.clone(), self.create, self.readonly);
        let cache = self.cache.clone();
        let store = py
            .detach(|| open_shared(&path, create, backend, readonly, &cache))
            .map_err(store_err)?;
        *slot = Some(Owned::new(Arc::clone(&store)));
        Ok(store)
    }
}

fn prepare<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
) -> PyResult<(Vec<Part>, Vec<Bound<'py, PyAny>>)> {
    let (names, list) = named_arrays(py, arrays)?;
    let (parts, keep) = input_parts(py, list.as_any(), &names)?;
    parts_refs(&parts)?;
    Ok((parts, keep))
}

#[pymethods]
impl PyStore {
    /// Checks cache options for a store at `path` as `Store(path,
    /// readonly=True, cache_dir=..., cache_size=...)` would, without
    /// opening it; returns them as opening takes them (`cache_dir`
    /// absolute, `cache_size` in bytes), for datasets that open the store
    /// only in their loader workers.
    #[staticmethod]
    #[pyo3(signature = (path, cache_dir=None, cache_size=None))]
    fn _check_cache(
        path: PathBuf,
        cache_dir: Option<PathBuf>,
        cache_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Option<PathBuf>, Option<u64>)> {
        let cache = CacheOptions::new(cache_dir, cache_size)?;
        check_target(&path, false, None, &cache)?;
        Ok(cache.args())
    }

    #[new]
    #[pyo3(signature = (path, create=false, backend=None, readonly=false, cache_dir=None, cache_size=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        backend: Option<String>,
        readonly: bool,
        cache_dir: Option<PathBuf>,
        cache_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        parse_backend(backend.as_deref())?;
        let cache = CacheOptions::new(cache_dir, cache_size)?;
        check_target(&path, create, backend.as_deref(), &cache)?;
        // A published store is read-only, whatever was asked.
        let readonly = readonly || url_of(&path).is_some();
        let slot = Arc::new(Mutex::new(None));
        lock(&STORE_SLOTS).push(Arc::downgrade(&slot));
        let s = PyStore {
            slot,
            path,
            create,
            backend,
            readonly,
            cache,
            closed: Mutex::new(false),
        };
        s.store(py)?;
        Ok(s)
    }

    /// The store's directory, or its URL (a `str`).
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        path_obj(py, &self.path)
    }

    /// `"lmdb"` or `"ten"`.
    #[getter]
    fn backend(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.store(py)?.backend().name())
    }

    /// Whether the store was opened read-only.
    #[getter]
    fn readonly(&self) -> bool {
        self.readonly
    }

    /// Stores one sample (a dict name -> array, or a list of pairs).
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        arrays: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = key_bytes(key)?;
        let (parts, _keep) = prepare(py, arrays)?;
        let store = self.store(py)?;
        py.detach(|| {
            let refs = parts_refs(&parts)?;
            store.put(&key, &refs).map_err(store_err)
        })
    }

    /// Stores many `(key, arrays)` samples in one commit: all or none.
    fn put_batch(&self, py: Python<'_>, samples: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut batch = Vec::new();
        let mut keep = Vec::new();
        for item in samples.try_iter()? {
            let (key, arrays): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            let (parts, k) = prepare(py, &arrays)?;
            batch.push((key_bytes(&key)?, parts));
            keep.extend(k);
        }
        let store = self.store(py)?;
        py.detach(|| {
            let refs = batch
                .iter()
                .map(|(k, parts)| Ok((k.as_slice(), parts_refs(parts)?)))
                .collect::<PyResult<Vec<_>>>()?;
            store.put_batch(&refs).map_err(store_err)
        })
    }

    /// Removes a key or a list of keys, all or none (KeyError if any is
    /// missing).
    fn delete(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<()> {
        let keys: Vec<Vec<u8>> =
            if keys.is_instance_of::<PyBytes>() || keys.is_instance_of::<PyString>() {
                vec![key_bytes(keys)?]
            } else {
                keys.try_iter()?
                    .map(|k| key_bytes(&k?))
                    .collect::<PyResult<_>>()?
            };
        let store = self.store(py)?;
        py.detach(|| store.delete_exact(&keys)).map_err(store_err)
    }

    /// Makes every write so far durable.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        py.detach(|| store.flush()).map_err(store_err)
    }

    /// A read snapshot.
    fn reader(&self, py: Python<'_>) -> PyResult<PyReader> {
        let store = self.store(py)?;
        PyReader::from_store(
            py,
            store,
            self.path.clone(),
            self.readonly,
            self.cache.clone(),
        )
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let store = self.store(py)?;
        let n = py
            .detach(|| store.reader().and_then(|r| r.len()))
            .map_err(store_err)?;
        Ok(n as usize)
    }

    /// Keys starting with `prefix`, in key order.
    #[pyo3(signature = (prefix=None))]
    fn keys(
        &self,
        py: Python<'_>,
        prefix: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyBytes>>> {
        let r = self.reader(py)?;
        r.keys(py, prefix)
    }

    /// Counts and sizes: path, backend, samples, bytes, map_size, shards.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store(py)?;
        let st = py.detach(|| store.stats()).map_err(store_err)?;
        let d = PyDict::new(py);
        d.set_item("path", self.path.to_string_lossy())?;
        d.set_item("backend", st.backend.name())?;
        d.set_item("samples", st.samples)?;
        d.set_item("bytes", st.bytes)?;
        d.set_item("map_size", st.map_size)?;
        d.set_item("shards", st.shards)?;
        Ok(d)
    }

    /// Releases this handle (arrays and readers keep what they need).
    fn close(&self, py: Python<'_>) {
        let mut slot = lock_attached(py, &self.slot);
        *lock(&self.closed) = true;
        slot.take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> bool {
        self.close(ty.py());
        false
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let cls = py.get_type::<PyStore>();
        let (cache_dir, cache_size) = self.cache.args();
        let args = (
            path_obj(py, &self.path)?,
            false,
            self.backend.clone(),
            self.readonly,
            cache_dir,
            cache_size,
        );
        PyTuple::new(py, [cls.into_any(), args.into_pyobject(py)?.into_any()])
    }

    fn __repr__(&self) -> String {
        format!(
            "tenstore.Store({:?}, readonly={})",
            self.path, self.readonly
        )
    }
}

/// A read snapshot of a store.
#[pyclass(module = "tenstore", name = "Reader")]
pub(crate) struct PyReader {
    slot: Arc<Mutex<Option<Arc<Snap>>>>,
    path: PathBuf,
    readonly: bool,
    cache: CacheOptions,
}

impl PyReader {
    fn from_store(
        py: Python<'_>,
        store: Arc<Store>,
        path: PathBuf,
        readonly: bool,
        cache: CacheOptions,
    ) -> PyResult<Self> {
        let snap = py.detach(|| Snap::new(store)).map_err(store_err)?;
        let slot = Arc::new(Mutex::new(Some(Arc::new(snap))));
        lock(&READER_SLOTS).push(Arc::downgrade(&slot));
        Ok(PyReader {
            slot,
            path,
            readonly,
            cache,
        })
    }

    fn snap(&self, py: Python<'_>) -> PyResult<Arc<Snap>> {
        let mut slot = lock_attached(py, &self.slot);
        if let Some(s) = &*slot {
            if s.pid == pid() {
                return Ok(Arc::clone(s));
            }
        }
        *slot = None;
        let (path, readonly, cache) = (self.path.clone(), self.readonly, self.cache.clone());
        let snap = py
            .detach(|| Snap::new(open_shared(&path, false, None, readonly, &cache)?))
            .map_err(store_err)?;
        let snap = Arc::new(snap);
        *slot = Some(Arc::clone(&snap));
        Ok(snap)
    }

    fn ordered_keys(&self, py: Python<'_>, order: Order) -> PyResult<(Arc<Snap>, Vec<Vec<u8>>)> {
        let snap = self.snap(py)?;
        let keys = {
            let reader = lock(&snap.reader);
            reader
                .keys_in(order)
                .and_then(|it| it.map(|k| k.map(<[u8]>::to_vec)).collect())
                .map_err(store_err)?
        };
        Ok((snap, keys))
    }
}

/// One tensor of a sample, located under the snapshot's lock.
struct Located {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: *const u8,
    len: usize,
}

/// How a sample is read: a random get (a shard record's crc32c checked
/// only with `verify_reads`) or as part of a scan (always checked, as the
/// library's iterators check it).
#[derive(Clone, Copy)]
pub(crate) enum Read {
    Get,
    Scan,
}

pub(crate) fn sample_of(
    py: Python<'_>,
    snap: &Arc<Snap>,
    key: &[u8],
    read: Read,
) -> PyResult<Option<PySample>> {
    let located: Vec<Located> = {
        let reader = lock(&snap.reader);
        let got = match read {
            Read::Get => reader.get(key),
            Read::Scan => reader.get_checked(key),
        };
        let Some(sample) = got.map_err(store_err)? else {
            return Ok(None);
        };
        sample
            .iter()
            .map(|v| Located {
                name: v.name().to_owned(),
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data: v.data().as_ptr(),
                len: v.data().len(),
            })
            .collect()
    };
    // The arrays are made outside the lock (making them may run Python
    // code); their memory stays valid while the snapshot lives, which
    // `keep` ensures.
    let keep = Bound::new(py, KeepAlive::snap(Arc::clone(snap)))?.into_any();
    let mut names = Vec::with_capacity(located.len());
    let mut arrays = Vec::with_capacity(located.len());
    for t in located {
        arrays.push(array_raw(py, t.dtype, &t.shape, t.data, t.len, &keep)?.unbind());
        names.push(t.name);
    }
    Ok(Some(PySample {
        key: PyBytes::new(py, key).unbind(),
        names,
        arrays,
    }))
}

fn parse_order(order: &str, seed: Option<u64>) -> PyResult<Order> {
    match order {
        "key" => Ok(Order::Key),
        "write" | "written" => Ok(Order::Written),
        "shuffle" | "shuffled" => Ok(Order::Shuffled(seed.unwrap_or(0))),
        other => Err(PyValueError::new_err(format!(
            "order {other:?}: \"key\", \"write\" or \"shuffle\""
        ))),
    }
}

#[pymethods]
impl PyReader {
    /// The sample under `key` (KeyError if there is none).
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<PySample> {
        let k = key_bytes(key)?;
        let snap = self.snap(py)?;
        sample_of(py, &snap, &k, Read::Get)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    /// The sample under `key`, or `default`. `verify=True` checks a
    /// shard record's crc32c as the iterators and plans do (a damaged
    /// record raises `FormatError`); without it a random get does not, for
    /// speed. LMDB stores keep no checksums.
    #[pyo3(signature = (key, default=None, verify=false))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
        verify: bool,
    ) -> PyResult<Py<PyAny>> {
        let k = key_bytes(key)?;
        let snap = self.snap(py)?;
        let read = if verify { Read::Scan } else { Read::Get };
        Ok(match sample_of(py, &snap, &k, read)? {
            Some(s) => Py::new(py, s)?.into_any(),
            None => default.unwrap_or_else(|| py.None()),
        })
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = key_bytes(key)?;
        let snap = self.snap(py)?;
        let reader = lock(&snap.reader);
        Ok(reader.get(&k).map_err(store_err)?.is_some())
    }

    /// Keys starting with `prefix`, in key order.
    #[pyo3(signature = (prefix=None))]
    fn keys(
        &self,
        py: Python<'_>,
        prefix: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyBytes>>> {
        let prefix = prefix.map(key_bytes).transpose()?.unwrap_or_default();
        let snap = self.snap(py)?;
        let reader = lock(&snap.reader);
        let it = reader.keys(&prefix, None).map_err(store_err)?;
        it.map(|k| k.map(|k| PyBytes::new(py, k).unbind()).map_err(store_err))
            .collect()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let snap = self.snap(py)?;
        let reader = lock(&snap.reader);
        Ok(reader.len().map_err(store_err)? as usize)
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<SampleIter> {
        self.samples(py, "key", None)
    }

    /// Samples in `order`: "key", "write" (shard stores; key order for
    /// LMDB) or "shuffle" (a permutation fixed by `seed`).
    #[pyo3(signature = (order="key", seed=None))]
    fn samples(&self, py: Python<'_>, order: &str, seed: Option<u64>) -> PyResult<SampleIter> {
        let order = parse_order(order, seed)?;
        let (snap, keys) = self.ordered_keys(py, order)?;
        Ok(SampleIter {
            snap,
            keys: keys.into_iter(),
        })
    }

    /// Every key in `order` ("key", "write" or "shuffle" with `seed`).
    #[pyo3(signature = (order="key", seed=None))]
    #[pyo3(name = "ordered_keys")]
    fn ordered_keys_py(
        &self,
        py: Python<'_>,
        order: &str,
        seed: Option<u64>,
    ) -> PyResult<Vec<Py<PyBytes>>> {
        let order = parse_order(order, seed)?;
        let (_, keys) = self.ordered_keys(py, order)?;
        Ok(keys.iter().map(|k| PyBytes::new(py, k).unbind()).collect())
    }

    /// The epoch plan of one partition (rank `rank` of `world_size`,
    /// loader worker `worker` of `num_workers`) over this snapshot; see
    /// `tenstore.Plan`. `shuffle`: None, True (full), "none", "full" or
    /// "blocks:N"; `uneven`: "drop_last" or "pad"; `batch_size`: workers
    /// take the rank's items in turns of this many; `consumed`: start after
    /// that many global positions; `state`: a dict of `Plan.state` to
    /// resume (its seed, epoch, shuffle and consumed win).
    #[pyo3(signature = (seed=0, epoch=0, shuffle=None, rank=0, world_size=1, worker=0, num_workers=1, uneven="drop_last", batch_size=1, consumed=0, state=None))]
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        py: Python<'_>,
        seed: u64,
        epoch: u64,
        shuffle: Option<&Bound<'_, PyAny>>,
        rank: u64,
        world_size: u64,
        worker: u64,
        num_workers: u64,
        uneven: &str,
        batch_size: u64,
        consumed: u64,
        state: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<crate::plan::PyPlan> {
        let config = PlanConfig {
            seed,
            epoch,
            shuffle: crate::plan::parse_shuffle(shuffle)?,
            rank,
            world_size,
            worker,
            num_workers,
            uneven: crate::plan::parse_uneven(uneven)?,
        };
        let snap = self.snap(py)?;
        crate::plan::make_plan(py, snap, config, batch_size, consumed, state)
    }

    /// Moves to a snapshot that sees every commit so far.
    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let (path, readonly, cache) = (self.path.clone(), self.readonly, self.cache.clone());
        // The old snapshot is released first (LMDB cannot adopt a map that
        // another process grew while this process has one open).
        lock_attached(py, &self.slot).take();
        let snap = py
            .detach(|| Snap::new(open_shared(&path, false, None, readonly, &cache)?))
            .map_err(store_err)?;
        *lock_attached(py, &self.slot) = Some(Arc::new(snap));
        Ok(())
    }

    /// The store's directory, or its URL (a `str`).
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        path_obj(py, &self.path)
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let f = py.import("tenstore._native")?.getattr("_open_reader")?;
        let (cache_dir, cache_size) = self.cache.args();
        let args = (
            path_obj(py, &self.path)?,
            self.readonly,
            cache_dir,
            cache_size,
        );
        PyTuple::new(py, [f, args.into_pyobject(py)?.into_any()])
    }
}

/// Opens a reader by path or URL (what unpickling a `Reader` does).
#[pyfunction]
#[pyo3(signature = (path, readonly, cache_dir=None, cache_size=None))]
fn _open_reader(
    py: Python<'_>,
    path: PathBuf,
    readonly: bool,
    cache_dir: Option<PathBuf>,
    cache_size: Option<u64>,
) -> PyResult<PyReader> {
    let cache = CacheOptions {
        dir: cache_dir,
        size: cache_size,
    };
    check_target(&path, false, None, &cache)?;
    let store = py
        .detach(|| open_shared(&path, false, None, readonly, &cache))
        .map_err(store_err)?;
    PyReader::from_store(py, store, path, readonly, cache)
}

/// Samples of one snapshot in a fixed order.
#[pyclass(module = "tenstore")]
pub(crate) struct SampleIter {
    snap: Arc<Snap>,
    keys: std::vec::IntoIter<Vec<u8>>,
}

#[pymethods]
impl SampleIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<PySample>> {
        for key in self.keys.by_ref() {
            if let Some(s) = sample_of(py, &self.snap, &key, Read::Scan)? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn __len__(&self) -> usize {
        self.keys.len()
    }
}

/// A stored sample: a read-only mapping name -> numpy array, in stored
/// order, viewing the snapshot's pages.
#[pyclass(frozen, module = "tenstore", name = "Sample", mapping)]
pub(crate) struct PySample {
    key: Py<PyBytes>,
    names: Vec<String>,
    arrays: Vec<Py<PyAny>>,
}

#[pymethods]
impl PySample {
    /// The key.
    #[getter]
    fn key(&self, py: Python<'_>) -> Py<PyBytes> {
        self.key.clone_ref(py)
    }

    /// Tensor names in stored order.
    #[getter]
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The arrays in stored order.
    #[getter]
    fn arrays(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.arrays.iter().map(|a| a.clone_ref(py)).collect()
    }

    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.arrays[i].clone_ref(py))
            .ok_or_else(|| PyKeyError::new_err(name.to_owned()))
    }

    fn __contains__(&self, name: &Bound<'_, PyAny>) -> bool {
        name.extract::<String>()
            .is_ok_and(|n| self.names.contains(&n))
    }

    fn __len__(&self) -> usize {
        self.names.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, &self.names)?
            .as_any()
            .try_iter()
            .map(Bound::into_any)
    }

    /// The names.
    fn keys(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The arrays.
    fn values(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.arrays(py)
    }

    /// `(name, array)` pairs.
    fn items(&self, py: Python<'_>) -> Vec<(String, Py<PyAny>)> {
        self.names
            .iter()
            .cloned()
            .zip(self.arrays.iter().map(|a| a.clone_ref(py)))
            .collect()
    }

    /// The array named `name`, or `default`.
    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> Py<PyAny> {
        self.__getitem__(py, name)
            .unwrap_or_else(|_| default.unwrap_or_else(|| py.None()))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Sample(key={}, names={:?})",
            self.key.bind(py).repr()?,
            self.names
        ))
    }
}

/// Adds the store classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()?;
    m.add_class::<PyReader>()?;
    m.add_class::<PySample>()?;
    m.add_class::<SampleIter>()?;
    m.add_class::<KeepAlive>()?;
    m.add_function(wrap_pyfunction!(_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_open_reader, m)?)?;
    Ok(())
}
