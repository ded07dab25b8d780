//! Tensors: borrowed views (what decoding yields), owned tensors, and the
//! encoders' input type.

mod input;
mod owned;
mod shape;
mod view;

pub(crate) use input::Source;
pub use input::{AsTensorRef, TensorRef};
pub use owned::{AnyArray, Tensor};
pub use shape::{Dims, Shape};
pub use view::TensorView;

use crate::error::{Error, Result};

/// Most dimensions an array may have: NumPy's own limit. Headers that
/// declare more are refused before anything is allocated.
pub const MAX_NDIM: usize = 64;

/// Longest name a tensor can carry: one header word.
pub const MAX_NAME_LEN: usize = 8;

/// Checks that a name fits a header word: at most 8 ASCII bytes, no NUL.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii() && b != 0) {
        Ok(())
    } else {
        Err(Error::BadName {
            name: name.to_owned(),
        })
    }
}
