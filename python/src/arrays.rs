//! numpy arrays over borrowed memory, and numpy arrays as encoder input.

use std::os::raw::{c_int, c_void};
use std::sync::Arc;

use numpy::npyffi::{self, npy_intp, NpyTypes, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;
use tenstore::io::MappedFile;
use tenstore::{DType, TensorBuf, TensorRef, TensorView};

use crate::errors::codec_err;
use crate::store::Snap;

/// What keeps the memory of decoded arrays alive: their numpy `base`.
#[pyclass(frozen, module = "tenstore._native")]
pub(crate) struct KeepAlive {
    inner: Holder,
}

enum Holder {
    /// A loaded `.ten` file's map.
    Mapped(TensorBuf<MappedFile>),
    /// A store snapshot.
    Snap(#[allow(dead_code)] Arc<Snap>),
}

impl KeepAlive {
    pub(crate) fn mapped(buf: TensorBuf<MappedFile>) -> Self {
        KeepAlive {
            inner: Holder::Mapped(buf),
        }
    }

    pub(crate) fn snap(snap: Arc<Snap>) -> Self {
        KeepAlive {
            inner: Holder::Snap(snap),
        }
    }

    /// The tensors of a loaded file.
    pub(crate) fn tensors_of<'a>(
        keep: &'a Bound<'_, KeepAlive>,
    ) -> PyResult<tenstore::Tensors<'a>> {
        match &keep.get().inner {
            Holder::Mapped(buf) => Ok(buf.tensors()),
            Holder::Snap(_) => Err(PyTypeError::new_err("not a loaded file")),
        }
    }
}

/// Bytes of a Python object, and the object that keeps them alive.
pub(crate) struct Buffer<'py> {
    /// Holds the memory: a `bytes` object or a numpy array (whose buffer
    /// export keeps a `bytearray`, `memoryview`, zmq frame... from being
    /// resized or freed).
    pub(crate) base: Bound<'py, PyAny>,
    ptr: *const u8,
    len: usize,
}

fn numpy_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    NUMPY
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("numpy")?.unbind()))
        .map(|m| m.bind(py))
}

impl<'py> Buffer<'py> {
    /// The bytes of `obj`: `bytes`, a C-contiguous numpy array, or anything
    /// with the buffer protocol (through `numpy.frombuffer`, zero-copy).
    pub(crate) fn of(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Buffer<'py>> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            return Ok(Buffer {
                base: obj.clone(),
                ptr: bytes.as_ptr(),
                len: bytes.len(),
            });
        }
        let arr = match obj.cast::<PyUntypedArray>() {
            Ok(a) if a.is_c_contiguous() => a.clone(),
            _ => numpy_module(py)?
                .call_method1("frombuffer", (obj, "u1"))
                .map_err(|e| {
                    PyTypeError::new_err(format!(
                        "expected bytes or a contiguous buffer, got {}: {e}",
                        obj.get_type()
                    ))
                })?
                .cast_into::<PyUntypedArray>()?,
        };
        let len = arr.shape().iter().product::<usize>() * arr.dtype().itemsize();
        // SAFETY: `arr` is a live numpy array; reading its `data` field is
        // what numpy's own PyArray_DATA macro does.
        let ptr = unsafe { (*arr.as_array_ptr()).fields.data as *const u8 };
        Ok(Buffer {
            base: arr.into_any(),
            ptr,
            len,
        })
    }

    /// The bytes.
    ///
    /// # Safety
    ///
    /// The slice must not outlive `self` (its `base` holds the memory).
    pub(crate) unsafe fn bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` and `len` describe the memory of `base`, alive and
        // unmoved while `base` is; the caller keeps the slice within that.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The numpy dtype of a tenbin dtype.
fn descr_of<'py>(py: Python<'py>, dtype: DType) -> PyResult<Bound<'py, PyArrayDescr>> {
    static DESCRS: PyOnceLock<Vec<Py<PyArrayDescr>>> = PyOnceLock::new();
    static BF16: PyOnceLock<Py<PyArrayDescr>> = PyOnceLock::new();
    if dtype == DType::BF16 {
        return BF16
            .get_or_try_init(py, || {
                let ml = py.import("ml_dtypes").map_err(|_| {
                    PyValueError::new_err(
                        "this buffer holds a bf16 tensor: install ml_dtypes (pip install ml_dtypes) to read it as ml_dtypes.bfloat16",
                    )
                })?;
                Ok::<_, PyErr>(PyArrayDescr::new(py, ml.getattr("bfloat16")?)?.unbind())
            })
            .map(|d| d.bind(py).clone());
    }
    let all = DESCRS.get_or_try_init(py, || {
        NUMPY_CODES
            .iter()
            .map(|(_, np)| Ok(PyArrayDescr::new(py, *np)?.unbind()))
            .collect::<PyResult<Vec<_>>>()
    })?;
    let at = NUMPY_CODES
        .iter()
        .position(|(d, _)| *d == dtype)
        .ok_or_else(|| PyValueError::new_err(format!("dtype {dtype} has no numpy equivalent")))?;
    Ok(all[at].bind(py).clone())
}

/// Tenbin dtypes and their numpy spellings (bf16 comes from ml_dtypes).
const NUMPY_CODES: [(DType, &str); 14] = [
    (DType::F16, "<f2"),
    (DType::F32, "<f4"),
    (DType::F64, "<f8"),
    (DType::I8, "i1"),
    (DType::I16, "<i2"),
    (DType::I32, "<i4"),
    (DType::I64, "<i8"),
    (DType::U8, "u1"),
    (DType::U16, "<u2"),
    (DType::U32, "<u4"),
    (DType::U64, "<u8"),
    (DType::Bool, "?"),
    (DType::C64, "<c8"),
    (DType::C128, "<c16"),
];

/// A read-only numpy array over `view`'s bytes with `base` as its base.
///
/// `view`'s bytes must be memory that `base` keeps alive and unmoved.
pub(crate) fn array_of<'py>(
    py: Python<'py>,
    view: &TensorView<'_>,
    base: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let data = view.data();
    array_raw(
        py,
        view.dtype(),
        &view.shape().to_vec(),
        data.as_ptr(),
        data.len(),
        base,
    )
}

/// A read-only numpy array of `dtype` and `shape` at `data` with `base` as
/// its base. `data` must point to `len` bytes that `base` keeps alive and
/// unmoved; the array is made only if `shape × itemsize` is exactly `len`.
///
/// That check is repeated here, after the checking pass, on purpose: the
/// shape is read from the header again, and a writable Python buffer
/// (`bytearray`, a numpy array) can be changed between the two by Python
/// code that runs meanwhile (importing `ml_dtypes`, another thread), so an
/// array whose extent was not compared with its bytes could reach past
/// them.
pub(crate) fn array_raw<'py>(
    py: Python<'py>,
    dtype: DType,
    shape: &[usize],
    data: *const u8,
    len: usize,
    base: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let itemsize = dtype.itemsize();
    let nbytes = shape
        .iter()
        .try_fold(itemsize, |n, &d| n.checked_mul(d))
        .filter(|&n| n == len)
        .ok_or_else(|| {
            crate::errors::FormatError::new_err(format!(
                "the buffer changed while it was decoded: shape {shape:?} of {} no longer fits its {len} data bytes",
                dtype.code()
            ))
        })?;
    debug_assert_eq!(nbytes, len);
    let descr = descr_of(py, dtype)?;
    let nd = shape.len();
    let mut dims: Vec<npy_intp> = Vec::with_capacity(nd);
    for &d in shape.iter() {
        dims.push(npy_intp::try_from(d).map_err(|_| PyValueError::new_err("dimension too large"))?);
    }
    let mut strides: Vec<npy_intp> = vec![0; nd];
    let mut step = itemsize as npy_intp;
    for i in (0..nd).rev() {
        strides[i] = step;
        step = step.saturating_mul(dims[i].max(1));
    }
    let data = data as *mut c_void;
    // SAFETY: NewFromDescr steals a reference to the descriptor, so one is
    // added first. The data pointer is valid for the array's extent
    // (checked above: shape × itemsize is exactly the `len` bytes at
    // `data`, whatever the header says by now) as long
    // as `base` lives, which the array ensures by owning a reference to
    // it (SetBaseObject steals the reference made by `into_ptr`). Flags 0:
    // not writeable; numpy derives contiguity and alignment from the given
    // strides. On failure, the new array is released and the error is
    // fetched from Python.
    unsafe {
        let descr_ptr = descr.as_dtype_ptr();
        pyo3::ffi::Py_INCREF(descr_ptr as *mut pyo3::ffi::PyObject);
        let arr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            descr_ptr,
            nd as c_int,
            dims.as_mut_ptr(),
            strides.as_mut_ptr(),
            data,
            0,
            std::ptr::null_mut(),
        );
        if arr.is_null() {
            return Err(PyErr::fetch(py));
        }
        let arr = Bound::from_owned_ptr(py, arr);
        if PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            arr.as_ptr() as *mut npyffi::PyArrayObject,
            base.clone().into_ptr(),
        ) < 0
        {
            return Err(PyErr::fetch(py));
        }
        Ok(arr)
    }
}

/// One input array, C-contiguous little-endian, as raw parts.
pub(crate) struct Part {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    ptr: usize,
    len: usize,
}

/// The tenbin dtype of a numpy dtype.
fn dtype_of(descr: &Bound<'_, PyArrayDescr>) -> PyResult<DType> {
    let size = descr.itemsize();
    let d = match (descr.kind(), size) {
        (b'f', 2) => DType::F16,
        (b'f', 4) => DType::F32,
        (b'f', 8) => DType::F64,
        (b'i', 1) => DType::I8,
        (b'i', 2) => DType::I16,
        (b'i', 4) => DType::I32,
        (b'i', 8) => DType::I64,
        (b'u', 1) => DType::U8,
        (b'u', 2) => DType::U16,
        (b'u', 4) => DType::U32,
        (b'u', 8) => DType::U64,
        (b'b', 1) => DType::Bool,
        (b'c', 8) => DType::C64,
        (b'c', 16) => DType::C128,
        _ if size == 2 && descr.getattr("name")?.extract::<String>()? == "bfloat16" => DType::BF16,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unsupported array type {}: tenbin stores f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8, bool, bfloat16 (ml_dtypes), complex64, complex128",
                descr.str()?
            )))
        }
    };
    Ok(d)
}

/// The names argument as strings.
pub(crate) fn name_list(names: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    names
        .try_iter()?
        .map(|n| n.and_then(|n| n.extract::<String>()))
        .collect()
}

/// The arrays of `arrays` (anything numpy converts), as raw parts, and the
/// objects that hold their memory (keep them alive while the parts are
/// used).
pub(crate) fn input_parts<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
    names: &[String],
) -> PyResult<(Vec<Part>, Vec<Bound<'py, PyAny>>)> {
    let np = numpy_module(py)?;
    let mut parts = Vec::new();
    let mut keep = Vec::new();
    for (i, obj) in arrays.try_iter()?.enumerate() {
        let obj = obj?;
        let name = names.get(i).cloned().ok_or_else(|| {
            PyValueError::new_err(format!("{} names for more arrays", names.len()))
        })?;
        let mut a = match obj.cast::<PyUntypedArray>() {
            Ok(a) => a.clone(),
            Err(_) => np
                .call_method1("asarray", (&obj,))?
                .cast_into::<PyUntypedArray>()?,
        };
        if a.dtype().byteorder() == b'>' {
            let little = a.dtype().call_method1("newbyteorder", ("<",))?;
            a = a.call_method1("astype", (little,))?.cast_into()?;
        }
        if !a.is_c_contiguous() {
            a = np
                .call_method1("ascontiguousarray", (&a,))?
                .cast_into::<PyUntypedArray>()?;
        }
        let dtype = dtype_of(&a.dtype())?;
        let shape = a.shape().to_vec();
        let len = shape.iter().product::<usize>() * a.dtype().itemsize();
        // SAFETY: reading the data field of a live numpy array, as numpy's
        // PyArray_DATA does.
        let ptr = unsafe { (*a.as_array_ptr()).fields.data as usize };
        parts.push(Part {
            name,
            dtype,
            shape,
            ptr,
            len,
        });
        keep.push(a.into_any());
    }
    if parts.len() != names.len() {
        return Err(PyValueError::new_err(format!(
            "{} arrays but {} names",
            parts.len(),
            names.len()
        )));
    }
    Ok((parts, keep))
}

/// Tensor references over the parts' memory.
///
/// The arrays `input_parts` returned with the parts must stay alive (and
/// unresized) while the references are used; every caller holds them for
/// its whole body.
pub(crate) fn parts_refs(parts: &[Part]) -> PyResult<Vec<TensorRef<'_>>> {
    parts
        .iter()
        .map(|p| {
            let data: &[u8] = if p.len == 0 {
                &[]
            } else {
                // SAFETY: `ptr`/`len` are the data of a C-contiguous numpy
                // array that the caller keeps alive (see above); numpy
                // arrays cannot be resized while referenced.
                unsafe { std::slice::from_raw_parts(p.ptr as *const u8, p.len) }
            };
            TensorRef::raw(&p.name, p.dtype, &p.shape, data).map_err(codec_err)
        })
        .collect()
}
