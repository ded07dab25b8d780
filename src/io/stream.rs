//! Streams: the reference's `write` and `read`, over `std::io`.

use std::io::{ErrorKind, Read, Write};

use bytemuck::Pod;
use ndarray::{ArrayD, IxDyn};

use crate::codec::{
    check_padding, chunk_len_u64, encode_to, pad_len, parse_header, parse_prefix, Header,
    MAX_HEADER_LEN, PREFIX,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{AnyArray, AsTensorRef, Tensor};

/// Writes `tensors` to a stream as chunks: the reference's `write`.
///
/// Each tensor costs three `write_all` calls (header and prefixes, data,
/// padding), so wrap an unbuffered writer that has many small tensors in a
/// `BufWriter`.
///
/// ```
/// use tenstore::{read, write, DType, TensorRef};
///
/// let mut stream = Vec::new();
/// write(&mut stream, &[TensorRef::raw("a", DType::I16, &[1], &[5, 0])?])?;
/// let back = read(&mut stream.as_slice(), usize::MAX)?;
/// assert_eq!(back[0].array::<i16>()?[[0]], 5);
/// # Ok::<(), tenstore::Error>(())
/// ```
pub fn write<W: Write + ?Sized, T: AsTensorRef>(stream: &mut W, tensors: &[T]) -> Result<()> {
    encode_to(tensors, stream).map_err(|e| Error::io("writing a tenbin stream", e))
}

/// Reads at most `n` tensors from a stream: the reference's `read`. An
/// empty stream (or one that ends cleanly between tensors) yields what was
/// read so far.
///
/// Nothing is allocated on the word of a length field alone: headers are
/// capped at [`MAX_NDIM`](crate::MAX_NDIM) dimensions and read into a stack
/// buffer, a data length must equal what the header's dtype and shape need,
/// and data buffers grow only as the bytes really arrive.
pub fn read<R: Read + ?Sized>(stream: &mut R, n: usize) -> Result<Vec<Tensor>> {
    let mut rd = Reader {
        inner: stream,
        offset: 0,
    };
    let mut out = Vec::new();
    while out.len() < n {
        let Some((offset, hlen)) = rd.prefix()? else {
            break;
        };
        let tensor = out.len();
        let hlen = usize::try_from(hlen)
            .ok()
            .filter(|&l| l <= MAX_HEADER_LEN)
            .ok_or(Error::BadHeaderLength { tensor, len: hlen })?;
        let mut hbuf = [0u8; MAX_HEADER_LEN];
        rd.exact(&mut hbuf[..hlen], offset, hlen as u64)?;
        rd.padding(offset, hlen as u64)?;
        let header = parse_header(tensor, &hbuf[..hlen])?;
        let Some((data_offset, dlen)) = rd.prefix()? else {
            return Err(Error::MissingData { tensor, offset });
        };
        if dlen != header.nbytes {
            return Err(Error::DataLength {
                tensor,
                dtype: header.dtype,
                expected: header.nbytes,
                actual: dlen,
            });
        }
        let array = rd.array(&header, data_offset)?;
        rd.padding(data_offset, dlen)?;
        out.push(Tensor::from_any(header.name, array)?);
    }
    Ok(out)
}

/// Reads every tensor up to the end of the stream.
pub fn read_all<R: Read + ?Sized>(stream: &mut R) -> Result<Vec<Tensor>> {
    read(stream, usize::MAX)
}

/// First allocation for a data payload; it doubles as bytes arrive.
const FIRST_STEP: usize = 1 << 20;

struct Reader<'r, R: ?Sized> {
    inner: &'r mut R,
    /// Bytes consumed so far.
    offset: u64,
}

impl<R: Read + ?Sized> Reader<'_, R> {
    /// Reads until `buf` is full or the stream ends; returns the count.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!(
                            "reading a tenbin stream at byte {}",
                            self.offset + got as u64
                        ),
                        e,
                    ))
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Fills `buf` from the chunk at `chunk` with payload length `len`, or
    /// reports the truncation.
    fn exact(&mut self, buf: &mut [u8], chunk: u64, len: u64) -> Result<()> {
        let got = self.fill(buf)?;
        if got < buf.len() {
            return Err(Error::Truncated {
                offset: chunk,
                needed: chunk_len_u64(len),
                available: self.offset - chunk,
            });
        }
        Ok(())
    }

    /// Reads a chunk prefix: `None` at a clean end of stream, else the
    /// chunk's offset and declared payload length.
    fn prefix(&mut self) -> Result<Option<(u64, u64)>> {
        let offset = self.offset;
        let mut p = [0u8; PREFIX];
        match self.fill(&mut p)? {
            0 => Ok(None),
            PREFIX => Ok(Some((offset, parse_prefix(&p, offset)?))),
            got => Err(Error::Truncated {
                offset,
                needed: PREFIX as u64,
                available: got as u64,
            }),
        }
    }

    /// Reads and checks the padding after a payload of `len` bytes.
    fn padding(&mut self, chunk: u64, len: u64) -> Result<()> {
        let mut pad = [0u8; 64];
        let n = pad_len((len % 64) as usize);
        let start = self.offset;
        self.exact(&mut pad[..n], chunk, len)?;
        check_padding(&pad[..n], chunk, start)
    }

    /// Reads a typed vector of `count` elements, growing it only as the
    /// bytes arrive.
    fn elements<T: Pod>(&mut self, count: usize, chunk: u64, len: u64) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        let mut v: Vec<T> = Vec::new();
        while v.len() < count {
            let step = v.len().max(FIRST_STEP / size).max(1);
            let old = v.len();
            v.resize(old + step.min(count - old), T::zeroed());
            self.exact(bytemuck::cast_slice_mut(&mut v[old..]), chunk, len)?;
        }
        Ok(v)
    }

    /// Reads the data payload described by `header` into an owned array.
    fn array(&mut self, header: &Header<'_>, chunk: u64) -> Result<AnyArray> {
        let len = header.nbytes;
        let count = (len / header.dtype.itemsize() as u64) as usize;
        let dims: Vec<usize> = crate::tensor::Shape::from_checked_le(header.dims).to_vec();
        macro_rules! read_array {
            (@one Bool, $t:ty) => {{
                let bytes = self.elements::<u8>(count, chunk, len)?;
                if let Some((index, &byte)) = bytes.iter().enumerate().find(|(_, &b)| b > 1) {
                    return Err(Error::BadBool {
                        name: header.name.to_owned(),
                        index,
                        byte,
                    });
                }
                AnyArray::Bool(shaped(
                    header.dtype,
                    &dims,
                    bytes.into_iter().map(|b| b == 1).collect(),
                )?)
            }};
            (@one $v:ident, $t:ty) => {{
                let v = self.elements::<$t>(count, chunk, len)?;
                AnyArray::$v(shaped(header.dtype, &dims, v)?)
            }};
            ($(($v:ident, $t:ty, $($rest:tt)*)),* $(,)?) => {
                match header.dtype {
                    $(DType::$v => read_array!(@one $v, $t),)*
                }
            };
        }
        Ok(crate::for_each_dtype!(read_array))
    }
}

/// Puts elements into shape. The count was derived from the shape, so this
/// cannot fail; the impossible case is reported rather than panicked on.
fn shaped<T>(dtype: DType, dims: &[usize], v: Vec<T>) -> Result<ArrayD<T>> {
    let actual = (v.len() * dtype.itemsize()) as u64;
    ArrayD::from_shape_vec(IxDyn(dims), v).map_err(|_| Error::RawLength {
        dtype,
        expected: dims.iter().product::<usize>() as u64 * dtype.itemsize() as u64,
        actual,
    })
}
