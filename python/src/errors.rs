//! The package's exceptions and the mapping of Rust errors onto them.

use pyo3::exceptions::{PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use tenstore::store::StoreError as RustStoreError;

pyo3::create_exception!(
    tenstore,
    FormatError,
    PyValueError,
    "Bytes that are not valid tenbin; the message names the byte offset or tensor index."
);
pyo3::create_exception!(
    tenstore,
    StoreError,
    PyOSError,
    "A store could not be opened, read or written (locks, LMDB faults, I/O)."
);

/// A codec error as a Python exception.
pub(crate) fn codec_err(e: tenstore::Error) -> PyErr {
    match e {
        tenstore::Error::Io { .. } => PyOSError::new_err(e.to_string()),
        e => FormatError::new_err(e.to_string()),
    }
}

/// A store error as a Python exception.
pub(crate) fn store_err(e: RustStoreError) -> PyErr {
    match &e {
        RustStoreError::NotFound { .. } => PyKeyError::new_err(e.to_string()),
        RustStoreError::Codec { .. } | RustStoreError::Corrupt { .. } => {
            FormatError::new_err(e.to_string())
        }
        RustStoreError::BadKey { .. }
        | RustStoreError::ReservedName { .. }
        | RustStoreError::Plan(_) => PyValueError::new_err(e.to_string()),
        _ => StoreError::new_err(e.to_string()),
    }
}
