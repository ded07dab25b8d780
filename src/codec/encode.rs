//! Encoding: lengths up front, then one pass into the final destination.

use std::io::{self, Write};

use crate::codec::chunk::{chunk_len, pad_len, prefix, PREFIX, ZEROS};
use crate::codec::header::{header_len, write_header, MAX_HEADER_LEN};
use crate::error::{Error, Result};
use crate::tensor::{AsTensorRef, Source, TensorRef};

/// Bytes one tensor takes when encoded: its header and data chunks.
fn tensor_len(t: &TensorRef<'_>) -> Option<usize> {
    chunk_len(header_len(t.shape().len()))?.checked_add(chunk_len(t.nbytes())?)
}

/// The exact length of the encoding of `tensors`, computed from their
/// headers alone.
///
/// ```
/// use tenstore::{encode_buffer, encoded_len, TensorRef, DType};
///
/// let t = [TensorRef::raw("x", DType::F32, &[2], &[0; 8])?];
/// assert_eq!(encoded_len(&t)?, 16 + 64 + 16 + 64);
/// assert_eq!(encode_buffer(&t)?.len(), encoded_len(&t)?);
/// # Ok::<(), tenstore::Error>(())
/// ```
pub fn encoded_len<T: AsTensorRef>(tensors: &[T]) -> Result<usize> {
    tensors
        .iter()
        .try_fold(0usize, |acc, t| {
            acc.checked_add(tensor_len(&t.as_tensor_ref())?)
        })
        .ok_or(Error::TooLarge)
}

/// Writes the header chunk of `t` and the prefix of its data chunk: the
/// small part, built on the stack and written at once.
fn write_head<W: Write + ?Sized>(t: &TensorRef<'_>, out: &mut W) -> io::Result<()> {
    const HEAD: usize = PREFIX + MAX_HEADER_LEN + 64 + PREFIX;
    let mut head = [0u8; HEAD];
    let hlen = header_len(t.shape().len());
    head[..PREFIX].copy_from_slice(&prefix(hlen));
    write_header(t, &mut head[PREFIX..PREFIX + hlen]);
    let data_at = PREFIX + hlen + pad_len(hlen);
    head[data_at..data_at + PREFIX].copy_from_slice(&prefix(t.nbytes()));
    out.write_all(&head[..data_at + PREFIX])
}

/// Writes the data payload and padding of `t`.
fn write_data<W: Write + ?Sized>(t: &TensorRef<'_>, out: &mut W) -> io::Result<()> {
    match t.source() {
        Source::Bytes(b) => out.write_all(b)?,
        Source::Strided(a) => a.write_c_order(&mut |run| out.write_all(run))?,
    }
    out.write_all(&ZEROS[..pad_len(t.nbytes())])
}

/// Encodes `tensors` into any writer, in one pass, with no intermediate
/// buffer: the engine behind every encoder.
pub(crate) fn encode_to<T: AsTensorRef, W: Write + ?Sized>(
    tensors: &[T],
    out: &mut W,
) -> io::Result<()> {
    for t in tensors {
        let t = t.as_tensor_ref();
        write_head(&t, out)?;
        write_data(&t, out)?;
    }
    Ok(())
}

/// Encodes `tensors` into `out`, which must be exactly
/// [`encoded_len`]`(tensors)` bytes: for writing straight into memory
/// reserved elsewhere (an LMDB value, a memory map, a message).
///
/// ```
/// use tenstore::{decode_buffer, encode_into, encoded_len, TensorRef, DType};
///
/// let t = [TensorRef::raw("x", DType::U8, &[3], &[7, 8, 9])?];
/// let mut out = vec![0xAA; encoded_len(&t)?];
/// encode_into(&t, &mut out)?;
/// assert_eq!(decode_buffer(&out)?[0].data(), &[7, 8, 9]);
/// # Ok::<(), tenstore::Error>(())
/// ```
pub fn encode_into<T: AsTensorRef>(tensors: &[T], out: &mut [u8]) -> Result<()> {
    let expected = encoded_len(tensors)?;
    if out.len() != expected {
        return Err(Error::OutputLength {
            expected,
            actual: out.len(),
        });
    }
    let mut cursor: &mut [u8] = out;
    encode_to(tensors, &mut cursor).map_err(|e| Error::io("encoding into a buffer", e))
}

/// Encodes `tensors` into a new buffer of exactly the right size: the
/// reference's `encode_buffer`.
pub fn encode_buffer<T: AsTensorRef>(tensors: &[T]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded_len(tensors)?);
    encode_to(tensors, &mut out).map_err(|e| Error::io("encoding into a vector", e))?;
    Ok(out)
}
