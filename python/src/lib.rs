//! `tenstore._native`: the compiled half of the `tenstore` Python package.
//!
//! Arrays handed to Python are numpy arrays whose data pointer is inside
//! the decoded buffer, the memory-mapped file or the store snapshot, made
//! read-only, with a `base` object that keeps that memory alive. The pure
//! Python modules (`tenstore.tenbin`, `tenstore.data`) build on this.

#![deny(missing_docs)]

mod arrays;
mod errors;
mod plan;
mod store;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList, PyTuple};

use arrays::{array_of, input_parts, name_list, parts_refs, Buffer, KeepAlive, Part};
use errors::codec_err;

/// Bytes above which encoding runs with the GIL released.
const DETACH_BYTES: usize = 64 * 1024;

/// Decodes a tenbin buffer: `(arrays, names)`, arrays viewing `buf`.
#[pyfunction]
fn decode_buffer<'py>(py: Python<'py>, buf: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let buffer = Buffer::of(py, buf)?;
    // SAFETY: `buffer.base` keeps the bytes alive and unmoved (bytes are
    // immutable; other objects are held through a numpy export that stops
    // resizing) for as long as `buffer` lives, and the slice dies with it.
    let bytes = unsafe { buffer.bytes() };
    let tensors = tenstore::Tensors::parse(bytes).map_err(codec_err)?;
    let arrays = PyList::empty(py);
    let names = PyList::empty(py);
    for view in tensors.iter() {
        arrays.append(array_of(py, &view, &buffer.base)?)?;
        names.append(view.name())?;
    }
    PyTuple::new(py, [arrays.into_any(), names.into_any()])
}

/// Decodes header/data frame pairs: `(arrays, names)`, each array viewing
/// its data frame.
#[pyfunction]
fn decode_list<'py>(py: Python<'py>, frames: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let frames: Vec<Bound<'py, PyAny>> = frames.try_iter()?.collect::<PyResult<_>>()?;
    if !frames.len().is_multiple_of(2) {
        return Err(errors::FormatError::new_err(format!(
            "{} frames: a tensor is a header frame and a data frame, so the count must be even",
            frames.len()
        )));
    }
    let arrays = PyList::empty(py);
    let names = PyList::empty(py);
    for (i, pair) in frames.chunks(2).enumerate() {
        let header = Buffer::of(py, &pair[0])?;
        let data = Buffer::of(py, &pair[1])?;
        // SAFETY: as in `decode_buffer`: each `Buffer` keeps its bytes alive
        // and unmoved while it lives, and the slices die before it.
        let (h, d) = unsafe { (header.bytes(), data.bytes()) };
        let view = tenstore::decode_pair(i, h, d).map_err(codec_err)?;
        arrays.append(array_of(py, &view, &data.base)?)?;
        names.append(view.name())?;
    }
    PyTuple::new(py, [arrays.into_any(), names.into_any()])
}

/// The chunks of a buffer as `(offset, length)` pairs of their payloads.
#[pyfunction]
fn chunk_spans(py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<Vec<(usize, usize)>> {
    let buffer = Buffer::of(py, buf)?;
    // SAFETY: as in `decode_buffer`.
    let bytes = unsafe { buffer.bytes() };
    let start = bytes.as_ptr() as usize;
    let chunks = tenstore::decode_chunks(bytes).map_err(codec_err)?;
    Ok(chunks
        .iter()
        .map(|c| (c.as_ptr() as usize - start, c.len()))
        .collect())
}

/// Encodes arrays with names into one tenbin buffer (a `bytearray`).
#[pyfunction]
fn encode_buffer<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
    names: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyByteArray>> {
    let names = name_list(names)?;
    let (parts, _keep) = input_parts(py, arrays, &names)?;
    let refs = parts_refs(&parts)?;
    let len = tenstore::encoded_len(&refs).map_err(codec_err)?;
    drop(refs);
    PyByteArray::new_with(py, len, |out| {
        let encode = |out: &mut [u8]| -> Result<(), tenstore::Error> {
            tenstore::encode_into(&parts_refs_unchecked(&parts), out)
        };
        if len > DETACH_BYTES {
            py.detach(|| encode(out))
        } else {
            encode(out)
        }
        .map_err(codec_err)
    })
}

/// The header frame of one array: what `encode_list` sends before its data.
#[pyfunction]
fn encode_header<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let names = vec![name.to_owned()];
    let list = PyList::new(py, [array])?;
    let (parts, keep) = input_parts(py, list.as_any(), &names)?;
    let refs = parts_refs(&parts)?;
    let frames = tenstore::encode_list(&refs);
    let header = pyo3::types::PyBytes::new(py, &frames[0]);
    Ok((
        header.into_any(),
        keep.into_iter().next().expect("one array"),
    ))
}

fn parts_refs_unchecked(parts: &[Part]) -> Vec<tenstore::TensorRef<'_>> {
    // Already checked by `parts_refs` before the length was computed.
    parts_refs(parts).unwrap_or_default()
}

/// Saves arrays to a `.ten` file (written beside it and renamed).
#[pyfunction]
#[pyo3(signature = (path, arrays, names, nocheck=false))]
fn save(
    py: Python<'_>,
    path: std::path::PathBuf,
    arrays: &Bound<'_, PyAny>,
    names: &Bound<'_, PyAny>,
    nocheck: bool,
) -> PyResult<()> {
    let names = name_list(names)?;
    let (parts, _keep) = input_parts(py, arrays, &names)?;
    parts_refs(&parts)?;
    let options = tenstore::FileOptions {
        check_extension: !nocheck,
        ..Default::default()
    };
    py.detach(|| tenstore::save_with(&path, &parts_refs_unchecked(&parts), &options))
        .map_err(codec_err)
}

/// Memory-maps a `.ten` file: `(arrays, names)`, arrays viewing the map.
#[pyfunction]
#[pyo3(signature = (path, nocheck=false))]
fn load<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    nocheck: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let options = tenstore::FileOptions {
        check_extension: !nocheck,
        ..Default::default()
    };
    // SAFETY: `load_with` requires that nobody truncates or rewrites the
    // file while it is mapped. That is the contract `tenstore.tenbin.load`
    // documents to its callers (as numpy.memmap does); files written by
    // `save` (ours or the Rust crate's) are replaced by rename, never
    // rewritten in place.
    let buf = py
        .detach(|| unsafe { tenstore::load_with(&path, &options) })
        .map_err(codec_err)?;
    let keep = Bound::new(py, KeepAlive::mapped(buf))?;
    let tensors = KeepAlive::tensors_of(&keep)?;
    let base = keep.as_any();
    let arrays = PyList::empty(py);
    let names = PyList::empty(py);
    for view in tensors.iter() {
        arrays.append(array_of(py, &view, base)?)?;
        names.append(view.name())?;
    }
    PyTuple::new(py, [arrays.into_any(), names.into_any()])
}

/// The compiled module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    store::forget_pid_in_children();
    m.add("FormatError", py.get_type::<errors::FormatError>())?;
    m.add("StoreError", py.get_type::<errors::StoreError>())?;
    m.add_function(wrap_pyfunction!(decode_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(decode_list, m)?)?;
    m.add_function(wrap_pyfunction!(chunk_spans, m)?)?;
    m.add_function(wrap_pyfunction!(encode_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(encode_header, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    store::register(m)?;
    plan::register(m)?;
    Ok(())
}
