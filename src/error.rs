//! The codec layer's error type.
//!
//! Every way a tenbin buffer, frame list, stream or file can be refused has a
//! variant of its own, carrying the facts a user needs to find the fault: the
//! byte offset of the chunk, the index of the tensor, the value that was read
//! and what was expected.

use std::io;
use std::path::PathBuf;

use crate::dtype::DType;

/// Every dtype code, each after a space, for [`Error::UnknownDtype`].
const KNOWN_CODES: &str = {
    macro_rules! codes {
        ($(($v:ident, $t:ty, $code:literal, $($rest:tt)*)),* $(,)?) => {
            concat!($(" ", $code),*)
        };
    }
    crate::for_each_dtype!(codes)
};

/// Result alias for the codec layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while encoding or decoding tenbin data.
///
/// Offsets are byte offsets from the start of the buffer (or stream); `tensor`
/// is the zero-based index of the array in its list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ends before a chunk (its 16-byte prefix, payload or padding)
    /// is complete.
    #[error("truncated input: the chunk at byte {offset} needs {needed} bytes but only {available} remain")]
    Truncated {
        /// Offset of the chunk that is cut short.
        offset: u64,
        /// Bytes the chunk needs from its offset (prefix, payload and padding).
        needed: u64,
        /// Bytes that are really there from its offset.
        available: u64,
    },

    /// A chunk does not start with the magic `~TenBin~`.
    #[error("not a tenbin chunk at byte {offset}: magic is {found:?}, expected \"~TenBin~\"")]
    BadMagic {
        /// Offset of the chunk.
        offset: u64,
        /// The eight bytes found instead, escaped.
        found: String,
    },

    /// A chunk's length field is negative.
    #[error("chunk at byte {offset} declares a negative length ({len})")]
    NegativeLength {
        /// Offset of the chunk.
        offset: u64,
        /// The length field as read.
        len: i64,
    },

    /// The zero padding after a payload holds a non-zero byte.
    #[error("chunk at byte {offset} has a non-zero padding byte at byte {at}")]
    NonZeroPadding {
        /// Offset of the chunk.
        offset: u64,
        /// Offset of the first non-zero padding byte.
        at: u64,
    },

    /// A header chunk has no data chunk after it.
    #[error("tensor {tensor}: the header chunk at byte {offset} has no data chunk after it")]
    MissingData {
        /// Index of the tensor.
        tensor: usize,
        /// Offset of the lone header chunk.
        offset: u64,
    },

    /// A header payload is shorter than three words or not a whole number of
    /// words.
    #[error("tensor {tensor}: header payload is {len} bytes; it must be 8 * (3 + ndim) bytes")]
    BadHeaderLength {
        /// Index of the tensor.
        tensor: usize,
        /// Length of the header payload in bytes.
        len: u64,
    },

    /// A header's ndim disagrees with the length of its payload, or exceeds
    /// [`MAX_NDIM`](crate::MAX_NDIM).
    #[error("tensor {tensor}: header declares ndim {ndim}, but its payload holds room for {room} dimensions (at most {max} are allowed)", max = crate::tensor::MAX_NDIM)]
    BadNdim {
        /// Index of the tensor.
        tensor: usize,
        /// The ndim word as read.
        ndim: i64,
        /// How many dimension words the payload really holds.
        room: u64,
    },

    /// A dimension is negative.
    #[error("tensor {tensor}: dimension {axis} is negative ({dim})")]
    NegativeDim {
        /// Index of the tensor.
        tensor: usize,
        /// Axis of the bad dimension.
        axis: usize,
        /// The dimension as read.
        dim: i64,
    },

    /// The product of the dimensions times the item size does not fit in
    /// memory addresses.
    #[error("tensor {tensor}: the shape is too large: its dimensions multiply past what memory can address")]
    ShapeOverflow {
        /// Index of the tensor.
        tensor: usize,
    },

    /// The data chunk's length differs from what dtype and shape require.
    #[error(
        "tensor {tensor}: data is {actual} bytes, but dtype {dtype} and its shape need {expected}"
    )]
    DataLength {
        /// Index of the tensor.
        tensor: usize,
        /// The tensor's dtype.
        dtype: DType,
        /// product(shape) * itemsize.
        expected: u64,
        /// Length of the data payload.
        actual: u64,
    },

    /// A dtype code that tenbin does not know.
    #[error("tensor {tensor}: unknown dtype code {code:?} (known:{known})", known = KNOWN_CODES)]
    UnknownDtype {
        /// Index of the tensor.
        tensor: usize,
        /// The code found, escaped.
        code: String,
    },

    /// A name or dtype word that is not NUL-padded ASCII.
    #[error("tensor {tensor}: the {field} word {raw:?} is not NUL-padded ASCII")]
    BadWord {
        /// Index of the tensor.
        tensor: usize,
        /// `"name"` or `"dtype"`.
        field: &'static str,
        /// The eight bytes, escaped.
        raw: String,
    },

    /// A name that cannot be encoded: longer than 8 bytes, not ASCII, or
    /// holding a NUL byte.
    #[error("tensor name {name:?} cannot be stored: names are at most 8 ASCII bytes with no NUL")]
    BadName {
        /// The name as given.
        name: String,
    },

    /// An array with more dimensions than tenstore allows.
    #[error("an array of {ndim} dimensions cannot be encoded (at most {max} are allowed)", max = crate::tensor::MAX_NDIM)]
    TooManyDims {
        /// The array's ndim.
        ndim: usize,
    },

    /// Raw data whose length disagrees with its dtype and shape.
    #[error(
        "raw tensor data is {actual} bytes, but dtype {dtype} and the given shape need {expected}"
    )]
    RawLength {
        /// The dtype given.
        dtype: DType,
        /// product(shape) * itemsize, or `u64::MAX` when that overflows.
        expected: u64,
        /// Length of the data given.
        actual: u64,
    },

    /// A shape whose element count cannot be addressed: its non-zero
    /// dimensions (times the item size) multiply past `isize::MAX`, even
    /// when a zero dimension makes the array empty.
    #[error("shape {shape:?} is too large: the product of its non-zero dimensions overflows what memory can address (even an empty array must have a shape whose other dimensions multiply to an addressable count)")]
    RawShapeOverflow {
        /// The shape given.
        shape: Vec<usize>,
    },

    /// A view or array was asked for as an element type that is not its
    /// dtype.
    #[error("tensor {name:?} has dtype {actual}, not {requested}")]
    WrongType {
        /// The tensor's name.
        name: String,
        /// The tensor's dtype.
        actual: DType,
        /// The dtype of the element type asked for.
        requested: DType,
    },

    /// A fixed-rank view was asked for with the wrong number of dimensions.
    #[error("tensor {name:?} has {ndim} dimensions, not {requested}")]
    WrongNdim {
        /// The tensor's name.
        name: String,
        /// The tensor's ndim.
        ndim: usize,
        /// The ndim asked for.
        requested: usize,
    },

    /// A zero-copy view was asked for, but the data is not aligned for its
    /// element type. [`TensorView::cow_array`](crate::TensorView::cow_array)
    /// copies in that case.
    #[error("tensor {name:?}: data at address {addr:#x} is not aligned to {align} bytes for {dtype}; use cow_array() to copy")]
    Misaligned {
        /// The tensor's name.
        name: String,
        /// The tensor's dtype.
        dtype: DType,
        /// Address of the data.
        addr: usize,
        /// Alignment the element type needs.
        align: usize,
    },

    /// A `b1` (bool) tensor holds a byte that is neither 0 nor 1.
    #[error("tensor {name:?}: bool element {index} is byte {byte}, not 0 or 1")]
    BadBool {
        /// The tensor's name.
        name: String,
        /// Index of the element.
        index: usize,
        /// The byte found.
        byte: u8,
    },

    /// The output slice given to [`encode_into`](crate::encode_into) has the
    /// wrong length.
    #[error("output buffer is {actual} bytes; the encoding needs exactly {expected}")]
    OutputLength {
        /// [`encoded_len`](crate::encoded_len) of the tensors.
        expected: usize,
        /// Length of the slice given.
        actual: usize,
    },

    /// Tensors whose encoding would not fit in memory addresses.
    #[error("the encoding of these tensors would be larger than the address space")]
    TooLarge,

    /// A multipart message with an odd number of frames.
    #[error(
        "multipart message has {frames} frames; it needs a header and a data frame per tensor"
    )]
    OddFrames {
        /// Number of frames received.
        frames: usize,
    },

    /// A file name without the `.ten` extension, refused as the reference
    /// does unless told not to check.
    #[error(
        "{path:?}: file name should end in .ten (pass check_extension: false to skip this check)"
    )]
    Extension {
        /// The path given.
        path: PathBuf,
    },

    /// An I/O error from a stream or file, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "reading tenbin stream" or a path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Escapes arbitrary bytes for an error message.
pub(crate) fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_dtype_lists_every_code_in_table_order() {
        let e = Error::UnknownDtype {
            tensor: 2,
            code: "f3".into(),
        };
        assert_eq!(
            e.to_string(),
            "tensor 2: unknown dtype code \"f3\" (known: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1 bf16 c8 c16)"
        );
    }
}
