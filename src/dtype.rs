//! Element types: the tenbin dtype codes and the Rust types behind them.
//!
//! The reference (`webdataset.tenbin`) knows eleven codes. tenstore adds
//! four extension codes, `b1`, `bf16`, `c8` and `c16`, which the reference
//! refuses ("unsupported array type"): use them only for data that Rust
//! (or an updated reader) consumes.
//!
//! ```
//! use tenstore::{DType, Element};
//!
//! assert_eq!(DType::from_code("u4"), Some(DType::U32));
//! assert_eq!(<f32 as Element>::DTYPE.code(), "f4");
//! assert_eq!(DType::C128.itemsize(), 16);
//! assert!(!DType::BF16.is_reference());
//! ```

use std::fmt;

use bytemuck::{CheckedBitPattern, NoUninit};
use half::{bf16, f16};
use ndarray::ArrayD;
use num_complex::Complex;

use crate::tensor::AnyArray;

/// A tenbin dtype code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// `f2`: IEEE half precision, [`half::f16`].
    F16,
    /// `f4`: `f32`.
    F32,
    /// `f8`: `f64`.
    F64,
    /// `i1`: `i8`.
    I8,
    /// `i2`: `i16`.
    I16,
    /// `i4`: `i32`.
    I32,
    /// `i8`: `i64`.
    I64,
    /// `u1`: `u8`.
    U8,
    /// `u2`: `u16`.
    U16,
    /// `u4`: `u32` (the reference misspells it and cannot use it; tenstore can).
    U32,
    /// `u8`: `u64`.
    U64,
    /// `b1` (extension): `bool`, one byte, 0 or 1.
    Bool,
    /// `bf16` (extension): [`half::bf16`].
    BF16,
    /// `c8` (extension): `Complex<f32>`, real then imaginary part.
    C64,
    /// `c16` (extension): `Complex<f64>`, real then imaginary part.
    C128,
}

impl DType {
    /// Every dtype, reference codes first.
    pub const ALL: [DType; 15] = [
        DType::F16,
        DType::F32,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::BF16,
        DType::C64,
        DType::C128,
    ];

    /// The tenbin code, e.g. `"f4"`.
    pub const fn code(self) -> &'static str {
        match self {
            DType::F16 => "f2",
            DType::F32 => "f4",
            DType::F64 => "f8",
            DType::I8 => "i1",
            DType::I16 => "i2",
            DType::I32 => "i4",
            DType::I64 => "i8",
            DType::U8 => "u1",
            DType::U16 => "u2",
            DType::U32 => "u4",
            DType::U64 => "u8",
            DType::Bool => "b1",
            DType::BF16 => "bf16",
            DType::C64 => "c8",
            DType::C128 => "c16",
        }
    }

    /// The dtype with this tenbin code, if any.
    pub fn from_code(code: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The header word of this dtype: its code, NUL-padded to 8 bytes, as
    /// a little-endian integer.
    pub(crate) const fn word(self) -> u64 {
        let code = self.code().as_bytes();
        let mut w = [0u8; 8];
        let mut i = 0;
        while i < code.len() {
            w[i] = code[i];
            i += 1;
        }
        u64::from_le_bytes(w)
    }

    /// The dtype whose header word is `w`: an integer compare per dtype,
    /// for the decoder's hot path.
    pub(crate) fn from_word(w: u64) -> Option<DType> {
        const WORDS: [u64; 15] = {
            let mut out = [0u64; 15];
            let mut i = 0;
            while i < 15 {
                out[i] = DType::ALL[i].word();
                i += 1;
            }
            out
        };
        WORDS.iter().position(|&x| x == w).map(|i| DType::ALL[i])
    }

    /// Size of one element in bytes.
    pub const fn itemsize(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    /// Alignment the Rust element type needs for a zero-copy view.
    pub const fn align(self) -> usize {
        match self {
            DType::C64 => 4,
            DType::C128 => 8,
            other => other.itemsize(),
        }
    }

    /// Whether the reference implementation (webdataset's `tenbin`) can read
    /// and write this dtype. `u4` counts: its table only misspells it.
    pub const fn is_reference(self) -> bool {
        !matches!(self, DType::Bool | DType::BF16 | DType::C64 | DType::C128)
    }

    /// The NumPy name of the dtype, as `numpy.dtype(name)` accepts it
    /// (`bfloat16` needs the `ml_dtypes` package there).
    pub const fn numpy_name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::BF16 => "bfloat16",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is the element type of a tenbin dtype.
///
/// Implemented for `f16`, `bf16`, `f32`, `f64`, the signed and unsigned
/// integers of 8 to 64 bits, `bool`, `Complex<f32>` and `Complex<f64>`.
/// Sealed: the set of dtypes is the format's, not the user's.
pub trait Element:
    sealed::Sealed + CheckedBitPattern + NoUninit + Copy + Send + Sync + fmt::Debug + 'static
{
    /// The dtype whose elements this type holds.
    const DTYPE: DType;

    #[doc(hidden)]
    fn into_any(array: ArrayD<Self>) -> AnyArray;

    #[doc(hidden)]
    fn any_ref(array: &AnyArray) -> Option<&ArrayD<Self>>;

    #[doc(hidden)]
    fn any_into(array: AnyArray) -> Result<ArrayD<Self>, AnyArray>;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;

            fn into_any(array: ArrayD<Self>) -> AnyArray {
                AnyArray::$d(array)
            }

            fn any_ref(array: &AnyArray) -> Option<&ArrayD<Self>> {
                match array {
                    AnyArray::$d(a) => Some(a),
                    _ => None,
                }
            }

            fn any_into(array: AnyArray) -> Result<ArrayD<Self>, AnyArray> {
                match array {
                    AnyArray::$d(a) => Ok(a),
                    other => Err(other),
                }
            }
        }
    )*};
}

element! {
    f16 => F16, f32 => F32, f64 => F64,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    bool => Bool, bf16 => BF16,
    Complex<f32> => C64, Complex<f64> => C128,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Element>() {
        assert_eq!(T::DTYPE.itemsize(), std::mem::size_of::<T>());
        assert_eq!(T::DTYPE.align(), std::mem::align_of::<T>());
    }

    #[test]
    fn sizes_and_alignments_match_rust_types() {
        check::<f16>();
        check::<bf16>();
        check::<f32>();
        check::<f64>();
        check::<i8>();
        check::<i16>();
        check::<i32>();
        check::<i64>();
        check::<u8>();
        check::<u16>();
        check::<u32>();
        check::<u64>();
        check::<bool>();
        check::<Complex<f32>>();
        check::<Complex<f64>>();
    }

    #[test]
    fn codes_round_trip_and_are_at_most_eight_bytes() {
        for d in DType::ALL {
            assert!(d.code().len() <= 8);
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::from_code("unit32"), None);
        assert_eq!(DType::from_code(""), None);
        assert_eq!(DType::ALL.iter().filter(|d| d.is_reference()).count(), 11);
        for d in DType::ALL {
            let mut w = [0u8; 8];
            w[..d.code().len()].copy_from_slice(d.code().as_bytes());
            assert_eq!(DType::from_word(u64::from_le_bytes(w)), Some(d));
        }
        assert_eq!(
            DType::from_word(u64::from_le_bytes(*b"f4\0\0\0\0\0x")),
            None
        );
    }
}
