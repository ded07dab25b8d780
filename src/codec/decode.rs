//! Decoding a buffer: one checking pass, then zero-copy views on demand.

use std::fmt;

use crate::codec::chunk::{read_chunk, PREFIX};
use crate::codec::header::{parse_header, view_of_checked};
use crate::codec::prefetch;
use crate::error::{Error, Result};
use crate::tensor::TensorView;

/// A checked tenbin buffer, borrowed: the list of tensors it holds.
///
/// [`Tensors::parse`] walks the buffer once and checks everything (magic,
/// lengths against what is there, padding, headers, shapes against data
/// lengths) without allocating and without touching the data payloads.
/// After that, [`iter`](Self::iter), [`get`](Self::get) and
/// [`get_by_name`](Self::get_by_name) hand out [`TensorView`]s that point
/// into the buffer, again without allocating. Cost: O(number of tensors),
/// whatever their size.
///
/// ```
/// use ndarray::array;
/// use tenstore::{encode_buffer, TensorRef, Tensors};
///
/// let image = array![[0u8, 255], [255, 0]];
/// let logits = array![0.5f32, -1.0];
/// let bytes = encode_buffer(&[
///     TensorRef::from_array("image", &image)?,
///     TensorRef::from_array("logits", &logits)?,
/// ])?;
/// let sample = Tensors::parse(&bytes)?;
/// assert_eq!(sample.len(), 2);
/// let logits_view = sample.get_by_name("logits").unwrap();
/// assert_eq!(logits_view.as_slice::<f32>()?, &[0.5, -1.0]);
/// # Ok::<(), tenstore::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Tensors<'a> {
    buf: &'a [u8],
    toc: Toc,
}

/// Tensors whose positions a parse remembers, for `get` in O(1).
const REMEMBERED: usize = 8;

/// What a parse learned: the count, and where the first tensors' header
/// chunks start (`u32::MAX` where not remembered).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Toc {
    len: usize,
    at: [u32; REMEMBERED],
}

impl<'a> Tensors<'a> {
    /// Checks a whole buffer. An empty buffer is an empty list.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut offset = 0;
        let mut tensor = 0;
        let mut at = [u32::MAX; REMEMBERED];
        while offset < buf.len() {
            if let (Some(slot), Ok(o)) = (at.get_mut(tensor), u32::try_from(offset)) {
                *slot = o;
            }
            let (header, next) = read_chunk(buf, offset)?;
            let header = parse_header(tensor, header)?;
            if next >= buf.len() {
                return Err(Error::MissingData {
                    tensor,
                    offset: offset as u64,
                });
            }
            let (data, after) = read_chunk(buf, next)?;
            header.with_data(tensor, data)?;
            tensor += 1;
            offset = after;
        }
        Ok(Tensors {
            buf,
            toc: Toc { len: tensor, at },
        })
    }

    /// [`parse`](Self::parse) for a buffer that is likely out of cache (a
    /// value looked up in a store): first asks for its start and its end
    /// to be loaded together, so that the walk from chunk to chunk (each
    /// position read from the chunk before) does not wait for one cache
    /// miss after another. The same checks as `parse`.
    pub(crate) fn parse_cold(buf: &'a [u8]) -> Result<Self> {
        prefetch::ends(buf);
        Self::parse(buf)
    }

    /// A buffer that [`parse`](Self::parse) accepted before, with what it
    /// learned.
    pub(crate) fn from_checked(buf: &'a [u8], toc: Toc) -> Self {
        Tensors { buf, toc }
    }

    /// What parsing learned, to rebuild this from the same bytes.
    pub(crate) fn toc(&self) -> Toc {
        self.toc
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.toc.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.toc.len == 0
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The tensors in order.
    pub fn iter(&self) -> Iter<'a> {
        Iter {
            buf: self.buf,
            offset: 0,
            remaining: self.toc.len,
        }
    }

    /// The tensor at `index`: O(1) for the first eight, which the parse
    /// remembers; a walk over the headers before it for later ones.
    pub fn get(&self, index: usize) -> Option<TensorView<'a>> {
        if index >= self.toc.len {
            return None;
        }
        match self.toc.at.get(index) {
            Some(&at) if at != u32::MAX => Iter {
                buf: self.buf,
                offset: at as usize,
                remaining: 1,
            }
            .next(),
            _ => self.iter().nth(index),
        }
    }

    /// The first tensor named `name`.
    pub fn get_by_name(&self, name: &str) -> Option<TensorView<'a>> {
        self.iter().find(|t| t.name() == name)
    }

    /// The tensors collected into a vector.
    pub fn to_vec(&self) -> Vec<TensorView<'a>> {
        self.iter().collect()
    }
}

impl<'a> IntoIterator for Tensors<'a> {
    type Item = TensorView<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Tensors<'a> {
    type Item = TensorView<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Tensors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over the tensors of a checked buffer.
#[derive(Clone)]
pub struct Iter<'a> {
    buf: &'a [u8],
    offset: usize,
    remaining: usize,
}

impl<'a> Iter<'a> {
    /// The payload of the (checked) chunk at `self.offset`, advancing past
    /// it.
    fn payload(&mut self) -> Option<&'a [u8]> {
        let start = self.offset.checked_add(PREFIX)?;
        let len_word = self.buf.get(self.offset + 8..start)?;
        let len = usize::try_from(u64::from_le_bytes(len_word.try_into().ok()?)).ok()?;
        let payload = self.buf.get(start..start.checked_add(len)?)?;
        self.offset = crate::codec::chunk::chunk_len(len)?.checked_add(self.offset)?;
        Some(payload)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = TensorView<'a>;

    fn next(&mut self) -> Option<TensorView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let header = self.payload();
        let data = self.payload();
        // The buffer was checked by `Tensors::parse`; should it somehow not
        // hold what was checked, the iteration ends instead of panicking.
        match view_of_checked(header?, data?) {
            Some(v) => {
                self.remaining -= 1;
                Some(v)
            }
            None => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Decodes a tenbin buffer into views of its tensors: the reference's
/// `decode_buffer`. Checks everything first, so it either returns every
/// tensor or an error.
///
/// ```
/// let bytes = std::fs::read("tests/golden/matrix.ten")?;
/// let tensors = tenstore::decode_buffer(&bytes)?;
/// assert_eq!(tensors[0].name(), "weights");
/// assert_eq!(tensors[0].shape(), [3, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_buffer(buf: &[u8]) -> Result<Vec<TensorView<'_>>> {
    Ok(Tensors::parse(buf)?.to_vec())
}

/// A checked tenbin buffer that owns its bytes, of whatever kind: a
/// `Vec<u8>`, a memory map ([`load`](crate::load) returns one), a received
/// message. It lends [`Tensors`] views for as long as it lives.
///
/// ```
/// use tenstore::{encode_buffer, TensorBuf, TensorRef};
///
/// let bytes = encode_buffer(&[TensorRef::raw("x", tenstore::DType::U8, &[3], &[1, 2, 3])?])?;
/// let buf = TensorBuf::new(bytes)?;
/// assert_eq!(buf.tensors().get(0).unwrap().data(), &[1, 2, 3]);
/// # Ok::<(), tenstore::Error>(())
/// ```
pub struct TensorBuf<D> {
    data: D,
    toc: Toc,
}

impl<D: AsRef<[u8]>> TensorBuf<D> {
    /// Checks the bytes and takes ownership of them.
    pub fn new(data: D) -> Result<Self> {
        let toc = Tensors::parse(data.as_ref())?.toc();
        Ok(TensorBuf { data, toc })
    }

    /// The tensors, borrowed from this buffer.
    pub fn tensors(&self) -> Tensors<'_> {
        Tensors::from_checked(self.data.as_ref(), self.toc)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.toc.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.toc.len == 0
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// Gives the bytes back.
    pub fn into_inner(self) -> D {
        self.data
    }
}

impl<D: AsRef<[u8]>> fmt::Debug for TensorBuf<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TensorBuf").field(&self.tensors()).finish()
    }
}
