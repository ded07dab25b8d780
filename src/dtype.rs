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

/// The dtype table: calls `$callback!` with one row per dtype, in the order
/// of [`DType::ALL`] (reference codes first). Every list of dtypes in
/// tenstore is generated from these rows, so a dtype is added in one place.
///
/// `for_each_dtype!(callback)` expands to `callback! { rows }`, and
/// `for_each_dtype!(callback; args)` to `callback! { args; rows }`, where
/// each row is a parenthesised tuple:
///
/// `(Variant, RustType, "code", itemsize, class, "numpy name", [npy], "doc")`
///
/// - `Variant`: the [`DType`] variant (and the `AnyArray` variant);
/// - `RustType`: the [`Element`] type (paths go through `$crate`);
/// - `"code"`: the tenbin code; `itemsize`: bytes per element;
/// - `class`: `reference` (webdataset's `tenbin` knows it) or `extension`;
/// - `"numpy name"`: what `numpy.dtype()` accepts;
/// - `[npy]`: `["<descr>", "char"]`, the little-endian `.npy` descr and
///   NumPy's one-letter code, or `[]` when `.npy` has no form for it;
/// - `"doc"`: the variant's documentation.
///
/// A callback names the columns it uses and may take the rest as
/// `$($rest:tt)*`. Not a stable interface: it serves tenstore's own modules
/// and tests.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_dtype {
    ($callback:ident $(; $($args:tt)*)?) => {
        $callback! {
            $($($args)* ;)?
            (F16, $crate::half::f16, "f2", 2, reference, "float16", ["<f2", "e"],
                "`f2`: IEEE half precision, [`half::f16`]."),
            (F32, f32, "f4", 4, reference, "float32", ["<f4", "f"], "`f4`: `f32`."),
            (F64, f64, "f8", 8, reference, "float64", ["<f8", "d"], "`f8`: `f64`."),
            (I8, i8, "i1", 1, reference, "int8", ["|i1", "b"], "`i1`: `i8`."),
            (I16, i16, "i2", 2, reference, "int16", ["<i2", "h"], "`i2`: `i16`."),
            (I32, i32, "i4", 4, reference, "int32", ["<i4", "i"], "`i4`: `i32`."),
            (I64, i64, "i8", 8, reference, "int64", ["<i8", "q"], "`i8`: `i64`."),
            (U8, u8, "u1", 1, reference, "uint8", ["|u1", "B"], "`u1`: `u8`."),
            (U16, u16, "u2", 2, reference, "uint16", ["<u2", "H"], "`u2`: `u16`."),
            (U32, u32, "u4", 4, reference, "uint32", ["<u4", "I"],
                "`u4`: `u32` (the reference misspells it and cannot use it; tenstore can)."),
            (U64, u64, "u8", 8, reference, "uint64", ["<u8", "Q"], "`u8`: `u64`."),
            (Bool, bool, "b1", 1, extension, "bool", ["|b1", "?"],
                "`b1` (extension): `bool`, one byte, 0 or 1."),
            (BF16, $crate::half::bf16, "bf16", 2, extension, "bfloat16", [],
                "`bf16` (extension): [`half::bf16`]."),
            (C64, $crate::num_complex::Complex<f32>, "c8", 8, extension, "complex64", ["<c8", "F"],
                "`c8` (extension): `Complex<f32>`, real then imaginary part."),
            (C128, $crate::num_complex::Complex<f64>, "c16", 16, extension, "complex128",
                ["<c16", "D"], "`c16` (extension): `Complex<f64>`, real then imaginary part."),
        }
    };
}

/// What the table says of one dtype, indexed by its discriminant.
struct Row {
    code: &'static str,
    itemsize: usize,
    align: usize,
    reference: bool,
    numpy_name: &'static str,
}

macro_rules! is_reference {
    (reference) => {
        true
    };
    (extension) => {
        false
    };
}

/// Declares [`DType`], its table of facts and the [`Element`] types.
macro_rules! dtypes {
    ($(($v:ident, $t:ty, $code:literal, $size:literal, $class:ident, $numpy:literal,
        [$($npy:tt)*], $doc:literal)),* $(,)?) => {
        /// A tenbin dtype code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum DType {
            $(#[doc = $doc] $v,)*
        }

        /// How many dtypes there are.
        const COUNT: usize = [$(DType::$v),*].len();

        impl DType {
            /// Every dtype, reference codes first.
            pub const ALL: [DType; COUNT] = [$(DType::$v),*];
        }

        /// The table's facts, in the order of [`DType::ALL`].
        const ROWS: [Row; COUNT] = [$(Row {
            code: $code,
            itemsize: $size,
            align: std::mem::align_of::<$t>(),
            reference: is_reference!($class),
            numpy_name: $numpy,
        }),*];

        $(
            impl sealed::Sealed for $t {}
            impl Element for $t {
                const DTYPE: DType = DType::$v;
            }
        )*
    };
}

for_each_dtype!(dtypes);

impl DType {
    /// This dtype's row of the table.
    const fn row(self) -> &'static Row {
        // The variants are declared in the order of the rows and carry no
        // explicit discriminants, so the discriminant is the row's index.
        &ROWS[self as usize]
    }

    /// The tenbin code, e.g. `"f4"`.
    pub const fn code(self) -> &'static str {
        self.row().code
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
        const WORDS: [u64; COUNT] = {
            let mut out = [0u64; COUNT];
            let mut i = 0;
            while i < COUNT {
                out[i] = DType::ALL[i].word();
                i += 1;
            }
            out
        };
        WORDS.iter().position(|&x| x == w).map(|i| DType::ALL[i])
    }

    /// Size of one element in bytes.
    pub const fn itemsize(self) -> usize {
        self.row().itemsize
    }

    /// Alignment the Rust element type needs for a zero-copy view.
    pub const fn align(self) -> usize {
        self.row().align
    }

    /// Whether the reference implementation (webdataset's `tenbin`) can read
    /// and write this dtype. `u4` counts: its table only misspells it.
    pub const fn is_reference(self) -> bool {
        self.row().reference
    }

    /// The NumPy name of the dtype, as `numpy.dtype(name)` accepts it
    /// (`bfloat16` needs the `ml_dtypes` package there).
    pub const fn numpy_name(self) -> &'static str {
        self.row().numpy_name
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Element>() {
        assert_eq!(
            T::DTYPE.itemsize(),
            std::mem::size_of::<T>(),
            "{}",
            T::DTYPE
        );
        // Payloads sit at multiples of 16 bytes: every dtype must view in
        // place there.
        assert!(16 % T::DTYPE.align() == 0, "{}", T::DTYPE);
    }

    macro_rules! check_all {
        ($(($v:ident, $t:ty, $($rest:tt)*)),* $(,)?) => {
            $(check::<$t>();)*
        };
    }

    #[test]
    fn sizes_and_alignments_match_rust_types() {
        for_each_dtype!(check_all);
    }

    #[test]
    fn rows_are_indexed_by_discriminant() {
        for (i, d) in DType::ALL.into_iter().enumerate() {
            assert_eq!(d as usize, i);
        }
        let mut codes: Vec<&str> = DType::ALL.iter().map(|d| d.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), DType::ALL.len(), "codes are distinct");
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
