//! Array headers: dtype word, name word, ndim, dims, as little-endian int64.

use crate::codec::chunk::word;
use crate::dtype::DType;
use crate::error::{escape, Error, Result};
use crate::tensor::MAX_NDIM;
use crate::tensor::{Shape, TensorRef, TensorView};

/// Bytes in the header payload of an array of `ndim` dimensions.
pub(crate) const fn header_len(ndim: usize) -> usize {
    8 * (3 + ndim)
}

/// The longest header payload tenstore accepts.
pub(crate) const MAX_HEADER_LEN: usize = header_len(MAX_NDIM);

/// A header, parsed and checked, borrowing its payload.
#[derive(Clone, Copy)]
pub(crate) struct Header<'a> {
    pub dtype: DType,
    pub name: &'a str,
    /// `8 * ndim` bytes of dimensions, each checked non-negative.
    pub dims: &'a [u8],
    /// `product(dims) * itemsize`, checked not to overflow.
    pub nbytes: u64,
}

/// A word holding NUL-padded ASCII, as `&str`: ASCII bytes other than NUL,
/// then only NULs.
fn ascii_word(w: &[u8]) -> Option<&str> {
    let x = u64::from_le_bytes(word(w));
    if x & HIGH_BITS != 0 {
        return None;
    }
    let end = text_len(x);
    // Only NULs after the text (`end < 8`: a shift by 64 would overflow).
    if end < 8 && x >> (8 * end) != 0 {
        return None;
    }
    ascii_str(w.get(..end)?)
}

/// `bytes` as `&str` when every byte is ASCII (checked here), without the
/// general UTF-8 validation, which costs more than the rest of a header
/// check: decoding turns every name into a `&str` twice (when checking and
/// for each view).
fn ascii_str(bytes: &[u8]) -> Option<&str> {
    if !bytes.is_ascii() {
        return None;
    }
    // SAFETY: every byte was just checked to be ASCII (below 0x80), and a
    // sequence of ASCII bytes is valid UTF-8, one character per byte.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// The high bit of each byte of a word.
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The index of the first NUL byte of a little-endian word whose bytes are
/// all ASCII, or 8 when it has none: the length of the text it holds.
fn text_len(x: u64) -> usize {
    // The lowest byte that is zero is the lowest whose high bit this sets
    // (higher ones may be set by a borrow; they do not matter).
    let zeros = x.wrapping_sub(0x0101_0101_0101_0101) & !x & HIGH_BITS;
    (zeros.trailing_zeros() / 8) as usize
}

/// Parses and checks a header payload of tensor number `tensor`.
pub(crate) fn parse_header(tensor: usize, h: &[u8]) -> Result<Header<'_>> {
    if h.len() < header_len(0) || !h.len().is_multiple_of(8) {
        return Err(Error::BadHeaderLength {
            tensor,
            len: h.len() as u64,
        });
    }
    let field = |name: &'static str, w: &[u8]| Error::BadWord {
        tensor,
        field: name,
        raw: escape(w),
    };
    let dtype = match DType::from_word(u64::from_le_bytes(word(&h[..8]))) {
        Some(d) => d,
        None => {
            // Not a known code: say whether it is a word at all.
            let code = ascii_word(&h[..8]).ok_or_else(|| field("dtype", &h[..8]))?;
            return Err(Error::UnknownDtype {
                tensor,
                code: code.to_owned(),
            });
        }
    };
    let name = ascii_word(&h[8..16]).ok_or_else(|| field("name", &h[8..16]))?;
    let ndim = i64::from_le_bytes(word(&h[16..24]));
    let room = (h.len() - header_len(0)) / 8;
    if usize::try_from(ndim)
        .ok()
        .filter(|&n| n == room && n <= MAX_NDIM)
        .is_none()
    {
        return Err(Error::BadNdim {
            tensor,
            ndim,
            room: room as u64,
        });
    }
    let dims = &h[24..];
    // The byte size, and the product of the non-zero dims (what ndarray
    // requires to fit an isize even when a zero dim makes the array empty).
    let mut nbytes = dtype.itemsize() as u64;
    let mut nonzero = dtype.itemsize() as u64;
    let mut overflow = false;
    for (axis, w) in dims.chunks_exact(8).enumerate() {
        let dim = i64::from_le_bytes(word(w));
        if dim < 0 {
            return Err(Error::NegativeDim { tensor, axis, dim });
        }
        // Keep checking later dims for negatives even once a product
        // overflows, so the first real fault is the one reported.
        nbytes = nbytes.saturating_mul(dim as u64);
        if dim > 0 {
            match nonzero.checked_mul(dim as u64) {
                Some(n) => nonzero = n,
                None => overflow = true,
            }
        }
    }
    if overflow || nonzero > isize::MAX as u64 || usize::try_from(nbytes).is_err() {
        return Err(Error::ShapeOverflow { tensor });
    }
    Ok(Header {
        dtype,
        name,
        dims,
        nbytes,
    })
}

impl<'a> Header<'a> {
    /// Pairs the header with its data payload, checking the length.
    pub(crate) fn with_data(self, tensor: usize, data: &'a [u8]) -> Result<TensorView<'a>> {
        if data.len() as u64 != self.nbytes {
            return Err(Error::DataLength {
                tensor,
                dtype: self.dtype,
                expected: self.nbytes,
                actual: data.len() as u64,
            });
        }
        Ok(TensorView::from_checked(
            self.name,
            self.dtype,
            Shape::from_checked_le(self.dims),
            data,
        ))
    }
}

/// Decodes one tensor from its header and data payloads: what a multipart
/// message carries per tensor.
pub fn decode_pair<'a>(tensor: usize, header: &'a [u8], data: &'a [u8]) -> Result<TensorView<'a>> {
    parse_header(tensor, header)?.with_data(tensor, data)
}

/// Rebuilds a view from a header and data payload that
/// [`parse_header`] and [`Header::with_data`] have accepted before. Cheaper
/// than checking again; returns `None` rather than panicking if the
/// payloads are not what was checked.
pub(crate) fn view_of_checked<'a>(h: &'a [u8], data: &'a [u8]) -> Option<TensorView<'a>> {
    let dtype = DType::from_word(u64::from_le_bytes(word(h.get(..8)?)))?;
    // Checked to be ASCII then NULs: the name ends at the first NUL.
    let name = h.get(8..16)?;
    let end = text_len(u64::from_le_bytes(word(name)));
    let name = ascii_str(name.get(..end)?)?;
    let dims = h.get(24..)?;
    Some(TensorView::from_checked(
        name,
        dtype,
        Shape::from_checked_le(dims),
        data,
    ))
}

/// Writes the header payload of `t` into `out`, which must be
/// `header_len(t.shape().len())` bytes.
pub(crate) fn write_header(t: &TensorRef<'_>, out: &mut [u8]) {
    let mut w = [0u8; 8];
    w[..t.dtype().code().len()].copy_from_slice(t.dtype().code().as_bytes());
    out[..8].copy_from_slice(&w);
    let mut w = [0u8; 8];
    w[..t.name().len()].copy_from_slice(t.name().as_bytes());
    out[8..16].copy_from_slice(&w);
    out[16..24].copy_from_slice(&(t.shape().len() as u64).to_le_bytes());
    t.shape().write_le(&mut out[24..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word8(text: &[u8]) -> [u8; 8] {
        let mut w = [0u8; 8];
        w[..text.len()].copy_from_slice(text);
        w
    }

    #[test]
    fn ascii_words_are_text_then_only_nuls() {
        for text in [&b""[..], b"x", b"label", b"1234567", b"12345678"] {
            assert_eq!(ascii_word(&word8(text)), std::str::from_utf8(text).ok());
        }
        // Text after a NUL, anywhere.
        for at in 0..7 {
            let mut w = word8(b"abcdefgh");
            w[at] = 0;
            assert_eq!(ascii_word(&w), None, "NUL at {at}");
        }
        assert_eq!(ascii_word(&word8(b"\0\0\0\0\0\0\0x")), None);
        // A byte above 0x7f, wherever it is, text or padding.
        for at in 0..8 {
            let mut w = word8(b"ab");
            w[at] = 0xc3;
            assert_eq!(ascii_word(&w), None, "0xc3 at {at}");
            w[at] = 0x80;
            assert_eq!(ascii_word(&w), None, "0x80 at {at}");
        }
        // Control characters and DEL are ASCII: kept as the reference does.
        assert_eq!(ascii_word(&word8(b"a\x01\x7f")), Some("a\u{1}\u{7f}"));
    }

    #[test]
    fn text_len_finds_the_first_nul_of_any_ascii_word() {
        for len in 0..=8usize {
            for fill in [b'a', 0x01, 0x7f] {
                let mut w = [0u8; 8];
                w[..len].fill(fill);
                // Later bytes after the first NUL do not move it.
                if len < 7 {
                    w[len + 1] = fill;
                }
                assert_eq!(text_len(u64::from_le_bytes(w)), len, "{w:?}");
            }
        }
    }
}
