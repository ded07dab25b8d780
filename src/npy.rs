//! NumPy `.npy` files in and out, for the numeric dtypes tenbin has.
//!
//! Reading accepts format versions 1 to 3, little- and big-endian numeric
//! dtypes (`f2 f4 f8 i1..i8 u1..u8 b1 c8 c16`), and Fortran order (converted
//! to C order). Object arrays, strings, structured and datetime dtypes are
//! refused. Writing produces version 1.0 files in C order, little-endian.
//!
//! ```
//! use ndarray::array;
//! use tenstore::{npy, Tensor};
//!
//! let t = Tensor::new("w", array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn())?;
//! let bytes = npy::to_bytes(&t.view())?;
//! assert!(bytes.starts_with(b"\x93NUMPY"));
//! let back = npy::from_bytes("w", &bytes)?;
//! assert_eq!(back, t);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::dtype::DType;
use crate::tensor::{Tensor, TensorView};

/// Errors of the `.npy` layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// Not an `.npy` file, or a damaged header.
    #[error("not a valid .npy file: {0}")]
    Malformed(String),
    /// A dtype tenbin cannot hold.
    #[error("dtype {descr:?} cannot be stored: only numeric dtypes (float16/32/64, int8..64, uint8..64, bool, complex64/128) can")]
    Unsupported {
        /// NumPy's dtype description, e.g. `"|O"` or `"<U5"`.
        descr: String,
    },
    /// A tensor whose dtype has no `.npy` form (`bf16`).
    #[error("dtype {0} has no standard .npy form")]
    NoNpyForm(DType),
    /// The data is shorter or longer than the header says.
    #[error(".npy data is {actual} bytes; its header says {expected}")]
    DataLength {
        /// From the header.
        expected: u64,
        /// Really there.
        actual: u64,
    },
    /// The array cannot be a tensor (e.g. too many dimensions).
    #[error(transparent)]
    Codec(#[from] crate::error::Error),
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// The header's fields we use.
struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
}

/// Parses an `.npy` file's bytes into a tensor named `name`.
pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Tensor, NpyError> {
    let bad = |m: &str| NpyError::Malformed(m.to_owned());
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header length"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(NpyError::Malformed(format!("unknown format version {v}"))),
    };
    let text = bytes
        .get(
            start
                ..start
                    .checked_add(hlen)
                    .ok_or_else(|| bad("header length overflows"))?,
        )
        .ok_or_else(|| bad("header runs past the end of the file"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("header is not text"))?;
    let header = parse_header(text)?;
    let data = &bytes[start + hlen..];

    let (dtype, big) = dtype_of(&header.descr)?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape overflows"))?;
    let expected = count
        .checked_mul(dtype.itemsize())
        .ok_or_else(|| bad("shape overflows"))?;
    if data.len() != expected {
        return Err(NpyError::DataLength {
            expected: expected as u64,
            actual: data.len() as u64,
        });
    }
    let swapped;
    let data: &[u8] = if big && dtype.itemsize() > 1 {
        swapped = byteswapped(data, dtype);
        &swapped
    } else {
        data
    };
    if header.fortran && header.shape.len() > 1 {
        // A Fortran array of shape (a, b, c) has the bytes of a C array of
        // shape (c, b, a); reversing its axes gives the array.
        let reversed: Vec<usize> = header.shape.iter().rev().copied().collect();
        let view = TensorView::new(name, dtype, &reversed, data)?;
        let t = view.to_tensor()?;
        return Ok(Tensor::from_any(name, t.any().clone().reversed_axes())?);
    }
    Ok(TensorView::new(name, dtype, &header.shape, data)?.to_tensor()?)
}

/// Big-endian elements turned little-endian; complex numbers swap each of
/// their two parts.
fn byteswapped(data: &[u8], dtype: DType) -> Vec<u8> {
    let part = match dtype {
        DType::C64 => 4,
        DType::C128 => 8,
        d => d.itemsize(),
    };
    let mut out = data.to_vec();
    for chunk in out.chunks_exact_mut(part) {
        chunk.reverse();
    }
    out
}

/// The tenbin dtype of a NumPy descr, and whether it is big-endian.
fn dtype_of(descr: &str) -> Result<(DType, bool), NpyError> {
    let unsupported = || NpyError::Unsupported {
        descr: descr.to_owned(),
    };
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => descr.split_at(1),
        _ => ("|", descr),
    };
    macro_rules! from_npy {
        ($(($v:ident, $t:ty, $code:literal, $size:literal, $class:ident, $numpy:literal,
            [$($descr:literal, $char:literal)?], $($rest:tt)*)),* $(,)?) => {
            match code {
                $($($code | $char => DType::$v,)?)*
                _ => return Err(unsupported()),
            }
        };
    }
    let dtype = crate::for_each_dtype!(from_npy);
    Ok((dtype, order == ">"))
}

/// The little-endian descr of a dtype.
fn descr_of(dtype: DType) -> Result<&'static str, NpyError> {
    macro_rules! to_npy {
        ($(($v:ident, $t:ty, $code:literal, $size:literal, $class:ident, $numpy:literal,
            [$($descr:literal, $char:literal)?], $($rest:tt)*)),* $(,)?) => {
            match dtype {
                $($(DType::$v => Ok($descr),)?)*
                other => Err(NpyError::NoNpyForm(other)),
            }
        };
    }
    crate::for_each_dtype!(to_npy)
}

/// Parses the Python dict literal of an `.npy` header.
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let bad = |m: String| NpyError::Malformed(m);
    let field = |key: &str| -> Result<&str, NpyError> {
        let pat = format!("'{key}':");
        let at = text
            .find(&pat)
            .ok_or_else(|| bad(format!("header has no {key:?}")))?;
        Ok(text[at + pat.len()..].trim_start())
    };
    let descr_rest = field("descr")?;
    let descr = if let Some(rest) = descr_rest.strip_prefix('\'') {
        let end = rest
            .find('\'')
            .ok_or_else(|| bad("unterminated descr".into()))?;
        rest[..end].to_owned()
    } else {
        // A list: a structured dtype.
        let end = descr_rest.find(']').map_or(descr_rest.len(), |e| e + 1);
        return Err(NpyError::Unsupported {
            descr: descr_rest[..end].to_owned(),
        });
    };
    let fortran = field("fortran_order")?;
    let fortran = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err(bad("fortran_order is neither True nor False".into()));
    };
    let shape = field("shape")?;
    let shape = shape
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .ok_or_else(|| bad("shape is not a tuple".into()))?
        .0;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| bad(format!("bad dimension {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Header {
        descr,
        fortran,
        shape,
    })
}

/// Encodes a tensor as an `.npy` file (version 1.0, C order,
/// little-endian).
pub fn to_bytes(t: &TensorView<'_>) -> Result<Vec<u8>, NpyError> {
    let descr = descr_of(t.dtype())?;
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts at a multiple of 64, ending with a newline.
    let total = MAGIC.len() + 4 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + dict.len() + t.nbytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(t.data());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_with_an_npy_form_round_trips() {
        for dtype in DType::ALL {
            let bytes: Vec<u8> = (0..4 * dtype.itemsize()).map(|i| (i % 2) as u8).collect();
            let t = TensorView::new("t", dtype, &[2, 2], &bytes).unwrap();
            match to_bytes(&t) {
                Ok(file) => {
                    let back = from_bytes("t", &file).unwrap();
                    assert_eq!(back.view(), t, "{dtype}");
                    let (descr, big) = dtype_of(descr_of(dtype).unwrap()).unwrap();
                    assert_eq!((descr, big), (dtype, false));
                }
                Err(NpyError::NoNpyForm(d)) => assert_eq!((d, dtype), (DType::BF16, DType::BF16)),
                Err(e) => panic!("{dtype}: {e}"),
            }
        }
    }

    #[test]
    fn one_letter_codes_and_big_endian_descrs_are_read() {
        assert_eq!(dtype_of("e").unwrap(), (DType::F16, false));
        assert_eq!(dtype_of("?").unwrap(), (DType::Bool, false));
        assert_eq!(dtype_of("D").unwrap(), (DType::C128, false));
        assert_eq!(dtype_of(">i4").unwrap(), (DType::I32, true));
        assert!(matches!(
            dtype_of("<bf16"),
            Err(NpyError::Unsupported { .. })
        ));
        assert!(matches!(dtype_of("<U5"), Err(NpyError::Unsupported { .. })));
    }
}
