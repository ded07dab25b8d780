//! Encoder input: any tensor-like value, borrowed, in one type.

use std::fmt;

use ndarray::{ArrayBase, Data, Dimension};

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::tensor::{check_name, Shape, Tensor, TensorView, MAX_NDIM};

/// A tensor to encode, borrowed from wherever it lives: an `ndarray` array
/// or view of any element type and layout, a decoded [`TensorView`], an
/// owned [`Tensor`], or raw parts (dtype, shape, bytes).
///
/// Its name and shape were checked when it was made, so encoding it cannot
/// fail. A non-contiguous array (a transposed or sliced view) is written in
/// C order straight from its strides, with no temporary copy.
///
/// ```
/// use ndarray::{array, Array2};
/// use tenstore::{decode_buffer, encode_buffer, DType, TensorRef};
///
/// let weights: Array2<f32> = array![[1., 2.], [3., 4.]];
/// let transposed = weights.t(); // not contiguous: written in C order
/// let label = [7u8];
/// let bytes = encode_buffer(&[
///     TensorRef::from_array("wt", &transposed)?,
///     TensorRef::raw("label", DType::U8, &[1], &label)?,
/// ])?;
/// let views = decode_buffer(&bytes)?;
/// assert_eq!(views[0].as_slice::<f32>()?, &[1., 3., 2., 4.]);
/// assert_eq!(views[1].data(), &[7]);
/// # Ok::<(), tenstore::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct TensorRef<'a> {
    name: &'a str,
    dtype: DType,
    shape: Shape<'a>,
    data: Source<'a>,
}

/// Where the data bytes come from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Contiguous little-endian bytes in C order.
    Bytes(&'a [u8]),
    /// An array whose elements must be gathered in C order.
    Strided(&'a dyn Strided),
}

/// An array that can write its elements' bytes in C order.
pub(crate) trait Strided {
    /// Calls `sink` with consecutive runs of the element bytes, in C order.
    fn write_c_order(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()>;
}

impl<S, D, T> Strided for ArrayBase<S, D>
where
    S: Data<Elem = T>,
    D: Dimension,
    T: Element,
{
    fn write_c_order(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        // Gather into a small stack buffer and hand it on in runs.
        const RUN: usize = 8192;
        let mut buf = [0u8; RUN];
        let mut used = 0;
        let size = std::mem::size_of::<T>();
        for elem in self.iter() {
            if used + size > RUN {
                sink(&buf[..used])?;
                used = 0;
            }
            buf[used..used + size].copy_from_slice(bytemuck::bytes_of(elem));
            used += size;
        }
        if used > 0 {
            sink(&buf[..used])?;
        }
        Ok(())
    }
}

impl<'a> TensorRef<'a> {
    /// A tensor from an `ndarray` array or view of any element type,
    /// dimension and layout. The name must be storable (at most 8 ASCII
    /// bytes, no NUL; empty for none).
    pub fn from_array<S, D, T>(name: &'a str, array: &'a ArrayBase<S, D>) -> Result<Self>
    where
        S: Data<Elem = T>,
        D: Dimension,
        T: Element,
    {
        check_name(name)?;
        if array.ndim() > MAX_NDIM {
            return Err(Error::TooManyDims { ndim: array.ndim() });
        }
        let data = match array.as_slice() {
            Some(elems) => Source::Bytes(bytemuck::cast_slice(elems)),
            None => Source::Strided(array),
        };
        Ok(TensorRef {
            name,
            dtype: T::DTYPE,
            shape: Shape::from(array.shape()),
            data,
        })
    }

    /// A tensor from raw parts: `data` holds the elements in C order,
    /// little-endian, and must be exactly `product(shape) * itemsize` bytes.
    pub fn raw(name: &'a str, dtype: DType, shape: &'a [usize], data: &'a [u8]) -> Result<Self> {
        Ok(TensorRef::from(TensorView::new(name, dtype, shape, data)?))
    }

    /// The name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> Shape<'a> {
        self.shape
    }

    /// Length of the data in bytes.
    pub fn nbytes(&self) -> usize {
        match self.data {
            Source::Bytes(b) => b.len(),
            Source::Strided(_) => self.shape.num_elements() * self.dtype.itemsize(),
        }
    }

    pub(crate) fn source(&self) -> Source<'a> {
        self.data
    }
}

impl<'a> From<TensorView<'a>> for TensorRef<'a> {
    fn from(v: TensorView<'a>) -> Self {
        TensorRef {
            name: v.name(),
            dtype: v.dtype(),
            shape: v.shape(),
            data: Source::Bytes(v.data()),
        }
    }
}

impl fmt::Debug for TensorRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorRef")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("nbytes", &self.nbytes())
            .finish()
    }
}

/// Anything the encoders take as a tensor: [`TensorRef`], [`TensorView`],
/// [`Tensor`], and references to them.
pub trait AsTensorRef {
    /// The tensor as encoder input.
    fn as_tensor_ref(&self) -> TensorRef<'_>;
}

impl AsTensorRef for TensorRef<'_> {
    fn as_tensor_ref(&self) -> TensorRef<'_> {
        *self
    }
}

impl AsTensorRef for TensorView<'_> {
    fn as_tensor_ref(&self) -> TensorRef<'_> {
        TensorRef::from(*self)
    }
}

impl AsTensorRef for Tensor {
    fn as_tensor_ref(&self) -> TensorRef<'_> {
        TensorRef::from(self.view())
    }
}

impl<T: AsTensorRef + ?Sized> AsTensorRef for &T {
    fn as_tensor_ref(&self) -> TensorRef<'_> {
        (**self).as_tensor_ref()
    }
}
