//! Shapes: the dimensions of a tensor, borrowed from a decoded header or
//! from an array, without an allocation.

use std::fmt;

use crate::tensor::MAX_NDIM;

/// The dimensions of a tensor, borrowed.
///
/// A decoded tensor's shape points into its header (little-endian int64
/// words, already checked to be non-negative and to fit a `usize`); an
/// array's shape points at the array's own `&[usize]`. Either way nothing is
/// copied or allocated.
///
/// ```
/// use tenstore::Shape;
///
/// let dims = [3usize, 32, 32];
/// let shape = Shape::from(&dims[..]);
/// assert_eq!(shape.len(), 3);
/// assert_eq!(shape.get(1), Some(32));
/// assert_eq!(shape.num_elements(), 3072);
/// assert_eq!(shape, [3, 32, 32]);
/// ```
#[derive(Clone, Copy)]
pub struct Shape<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// `8 * ndim` bytes of little-endian int64, each known to be in
    /// `0..=usize::MAX`.
    Le(&'a [u8]),
    Native(&'a [usize]),
}

impl<'a> Shape<'a> {
    /// A shape over header words that the decoder has checked: every word
    /// is a non-negative int64 that fits a `usize`.
    pub(crate) fn from_checked_le(words: &'a [u8]) -> Self {
        Shape(Repr::Le(words))
    }

    /// Number of dimensions.
    pub fn len(&self) -> usize {
        match self.0 {
            Repr::Le(b) => b.len() / 8,
            Repr::Native(d) => d.len(),
        }
    }

    /// Whether this is the shape of a 0-d (scalar) tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size of one axis.
    pub fn get(&self, axis: usize) -> Option<usize> {
        match self.0 {
            Repr::Le(b) => {
                let start = axis.checked_mul(8)?;
                let word = b.get(start..start.checked_add(8)?)?;
                Some(le_word(word) as usize)
            }
            Repr::Native(d) => d.get(axis).copied(),
        }
    }

    /// The dimensions in order.
    pub fn iter(&self) -> Dims<'a> {
        Dims(*self, 0)
    }

    /// The dimensions as a new vector.
    pub fn to_vec(&self) -> Vec<usize> {
        self.iter().collect()
    }

    /// The number of elements: the product of the dimensions, 1 for a
    /// scalar. Decoded shapes are checked not to overflow; an array's shape
    /// cannot.
    pub fn num_elements(&self) -> usize {
        self.iter().fold(1usize, |acc, d| acc.saturating_mul(d))
    }

    /// The dimensions as little-endian int64 words, as a header holds them.
    pub(crate) fn write_le(&self, out: &mut [u8]) {
        match self.0 {
            Repr::Le(b) => out[..b.len()].copy_from_slice(b),
            Repr::Native(d) => {
                for (slot, &dim) in out.chunks_exact_mut(8).zip(d) {
                    slot.copy_from_slice(&(dim as u64).to_le_bytes());
                }
            }
        }
    }

    /// Calls `f` with the dimensions as a `&[usize]`, built on the stack.
    pub(crate) fn with_dims<R>(&self, f: impl FnOnce(&[usize]) -> R) -> R {
        match self.0 {
            Repr::Native(d) => f(d),
            // Most shapes are short: a small buffer spares zeroing room
            // for MAX_NDIM dimensions on every view.
            Repr::Le(_) if self.len() <= SHORT => {
                let mut buf = [0usize; SHORT];
                self.fill(&mut buf);
                f(&buf[..self.len()])
            }
            Repr::Le(_) => {
                let mut buf = [0usize; MAX_NDIM];
                let n = self.fill(&mut buf);
                f(&buf[..n])
            }
        }
    }
}

/// Dimensions [`Shape::with_dims`] builds without room for `MAX_NDIM`.
const SHORT: usize = 8;

impl Shape<'_> {
    /// Writes the dimensions into `buf` (as many as fit); returns how many.
    pub(crate) fn fill(&self, buf: &mut [usize]) -> usize {
        let mut n = 0;
        match self.0 {
            // A word at a time, without the bounds checks of `get`: what
            // every decoded view's construction runs.
            Repr::Le(b) => {
                for (slot, w) in buf.iter_mut().zip(b.chunks_exact(8)) {
                    *slot = le_word(w) as usize;
                    n += 1;
                }
            }
            Repr::Native(d) => {
                for (slot, &dim) in buf.iter_mut().zip(d) {
                    *slot = dim;
                    n += 1;
                }
            }
        }
        n
    }
}

fn le_word(word: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(word);
    u64::from_le_bytes(w)
}

impl<'a> From<&'a [usize]> for Shape<'a> {
    fn from(dims: &'a [usize]) -> Self {
        Shape(Repr::Native(dims))
    }
}

impl<'a> IntoIterator for Shape<'a> {
    type Item = usize;
    type IntoIter = Dims<'a>;
    fn into_iter(self) -> Dims<'a> {
        self.iter()
    }
}

impl PartialEq for Shape<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Shape<'_> {}

impl PartialEq<[usize]> for Shape<'_> {
    fn eq(&self, other: &[usize]) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter().copied())
    }
}

impl<const N: usize> PartialEq<[usize; N]> for Shape<'_> {
    fn eq(&self, other: &[usize; N]) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for Shape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over the dimensions of a [`Shape`].
#[derive(Clone)]
pub struct Dims<'a>(Shape<'a>, usize);

impl Iterator for Dims<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let d = self.0.get(self.1)?;
        self.1 += 1;
        Some(d)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.len() - self.1;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Dims<'_> {}
