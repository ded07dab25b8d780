//! Borrowed tensors: what decoding hands out.

use std::fmt;

use bytemuck::checked::{self, CheckedCastError};
use bytemuck::PodCastError;
use ndarray::{ArrayD, ArrayView, ArrayViewD, CowArray, Dimension, Ix0, Ix1, Ix2, Ix3, Ix4, IxDyn};

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::tensor::{check_name, Shape, Tensor, MAX_NDIM};

/// A tensor borrowed from encoded bytes: dtype, name, shape and data, with
/// nothing copied.
///
/// `TensorView` is `Copy` and costs nothing to make: decoding only checks
/// the header and points into the buffer. Element access comes in three
/// forms:
///
/// - [`array`](Self::array) and [`as_slice`](Self::as_slice): zero-copy. They
///   succeed when the element type matches the dtype and the data address is
///   a multiple of the element type's alignment (1 for `u1`/`i1`/`b1`, 2 for
///   16-bit types, 4 for `f4`/`i4`/`u4`/`c8`, 8 for `f8`/`i8`/`u8`/`c16`).
///   Payloads sit 16 bytes apart from the start of their buffer, so any
///   buffer that starts at an 8-byte aligned address (a `Vec<u8>` from the
///   allocator, a memory map, a shard) views every dtype without a copy.
/// - [`cow_array`](Self::cow_array): borrows when aligned, copies when not.
/// - [`to_vec`](Self::to_vec) and [`to_tensor`](Self::to_tensor): always copy.
///
/// A `b1` tensor's bytes are checked to be 0 or 1 before `bool`s are handed
/// out.
///
/// ```
/// use ndarray::array;
/// use tenstore::{decode_buffer, encode_buffer, TensorRef};
///
/// let image = array![[1u8, 2], [3, 4]].into_dyn();
/// let bytes = encode_buffer(&[TensorRef::from_array("image", &image)?])?;
/// let views = decode_buffer(&bytes)?;
/// assert_eq!(views[0].name(), "image");
/// assert_eq!(views[0].shape(), [2, 2]);
/// assert_eq!(views[0].array::<u8>()?, image.view());
/// assert!(views[0].array::<f32>().is_err()); // wrong element type
/// # Ok::<(), tenstore::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    name: &'a str,
    dtype: DType,
    shape: Shape<'a>,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// A view over raw parts, checked: the name must be storable (at most 8
    /// ASCII bytes, no NUL), the shape at most [`MAX_NDIM`](crate::MAX_NDIM)
    /// long, and `data` exactly `product(shape) * itemsize` bytes.
    pub fn new(name: &'a str, dtype: DType, shape: &'a [usize], data: &'a [u8]) -> Result<Self> {
        check_name(name)?;
        if shape.len() > MAX_NDIM {
            return Err(Error::TooManyDims { ndim: shape.len() });
        }
        // As the decoder requires: the non-zero dimensions times the item
        // size fit an isize, whatever a zero dimension makes the length.
        let nonzero = shape
            .iter()
            .filter(|&&d| d > 0)
            .try_fold(dtype.itemsize(), |acc, &d| acc.checked_mul(d));
        if nonzero.is_none_or(|n| n > isize::MAX as usize) {
            return Err(Error::RawShapeOverflow {
                shape: shape.to_vec(),
            });
        }
        let expected = shape
            .iter()
            .try_fold(dtype.itemsize(), |acc, &d| acc.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(Error::RawLength {
                dtype,
                expected: expected.map_or(u64::MAX, |e| e as u64),
                actual: data.len() as u64,
            });
        }
        Ok(TensorView::from_checked(
            name,
            dtype,
            Shape::from(shape),
            data,
        ))
    }

    /// A view whose parts the caller has already checked.
    pub(crate) fn from_checked(
        name: &'a str,
        dtype: DType,
        shape: Shape<'a>,
        data: &'a [u8],
    ) -> Self {
        TensorView {
            name,
            dtype,
            shape,
            data,
        }
    }

    /// The tensor's name (the reference's "info"); empty when unnamed.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The tensor's dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The tensor's shape.
    pub fn shape(&self) -> Shape<'a> {
        self.shape
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.data.len() / self.dtype.itemsize()
    }

    /// The data bytes: elements in C order, little-endian.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Length of the data in bytes.
    pub fn nbytes(&self) -> usize {
        self.data.len()
    }

    /// Whether the data address suits a zero-copy view of the dtype's
    /// element type.
    pub fn is_aligned(&self) -> bool {
        (self.data.as_ptr() as usize).is_multiple_of(self.dtype.align())
    }

    fn check_type<T: Element>(&self) -> Result<()> {
        if T::DTYPE == self.dtype {
            Ok(())
        } else {
            Err(Error::WrongType {
                name: self.name.to_owned(),
                actual: self.dtype,
                requested: T::DTYPE,
            })
        }
    }

    fn cast_error(&self, e: CheckedCastError) -> Error {
        match e {
            CheckedCastError::InvalidBitPattern => self.bad_bool(),
            CheckedCastError::PodCastError(
                PodCastError::TargetAlignmentGreaterAndInputNotAligned,
            ) => Error::Misaligned {
                name: self.name.to_owned(),
                dtype: self.dtype,
                addr: self.data.as_ptr() as usize,
                align: self.dtype.align(),
            },
            // Lengths are multiples of the item size by construction; report
            // the impossible case rather than panic.
            CheckedCastError::PodCastError(_) => self.length_error(),
        }
    }

    /// The error for data whose length disagrees with the shape, which the
    /// constructors rule out: reported rather than panicked on.
    fn length_error(&self) -> Error {
        Error::RawLength {
            dtype: self.dtype,
            expected: (self.shape.num_elements() as u64)
                .saturating_mul(self.dtype.itemsize() as u64),
            actual: self.data.len() as u64,
        }
    }

    fn bad_bool(&self) -> Error {
        let (index, byte) = self
            .data
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, b)| b > 1)
            .unwrap_or((0, 0));
        Error::BadBool {
            name: self.name.to_owned(),
            index,
            byte,
        }
    }

    /// The elements as a slice, without a copy.
    ///
    /// Fails with [`Error::WrongType`] when `T` is not the dtype's element
    /// type, [`Error::Misaligned`] when the data is not aligned for `T`, and
    /// [`Error::BadBool`] for a `b1` byte other than 0 or 1.
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T]> {
        self.check_type::<T>()?;
        if self.data.is_empty() {
            return Ok(&[]);
        }
        checked::try_cast_slice(self.data).map_err(|e| self.cast_error(e))
    }

    /// The tensor as an n-dimensional array view, without a copy.
    ///
    /// Fails as [`as_slice`](Self::as_slice) does.
    pub fn array<T: Element>(&self) -> Result<ArrayViewD<'a, T>> {
        // Up to four dimensions (what `IxDyn` holds inline), through the
        // fixed-rank constructors: far fewer instructions than building a
        // dynamic shape and its strides, and the same view.
        match self.ndim() {
            0 => return Ok(self.array_d::<T, Ix0>()?.into_dyn()),
            1 => return Ok(self.array_d::<T, Ix1>()?.into_dyn()),
            2 => return Ok(self.array_d::<T, Ix2>()?.into_dyn()),
            3 => return Ok(self.array_d::<T, Ix3>()?.into_dyn()),
            4 => return Ok(self.array_d::<T, Ix4>()?.into_dyn()),
            _ => {}
        }
        let slice = self.as_slice::<T>()?;
        self.shape
            .with_dims(|dims| ArrayViewD::from_shape(IxDyn(dims), slice))
            .map_err(|_| self.length_error())
    }

    /// The tensor as an array view of a fixed number of dimensions (`Ix1`,
    /// `Ix2`, ... or `IxDyn`), without a copy: cheaper than
    /// [`array`](Self::array) where the rank is known, since no dynamic
    /// shape is built. Fails as `array` does, and with
    /// [`Error::WrongNdim`] when the tensor's rank is not `D`'s.
    ///
    /// ```
    /// use ndarray::{array, Ix2};
    /// use tenstore::{decode_buffer, encode_buffer, TensorRef};
    ///
    /// let m = array![[1i32, 2, 3], [4, 5, 6]];
    /// let bytes = encode_buffer(&[TensorRef::from_array("m", &m)?])?;
    /// let view = decode_buffer(&bytes)?[0].array_d::<i32, Ix2>()?;
    /// assert_eq!(view, m);
    /// # Ok::<(), tenstore::Error>(())
    /// ```
    pub fn array_d<T: Element, D: Dimension>(&self) -> Result<ArrayView<'a, T, D>> {
        let slice = self.as_slice::<T>()?;
        if D::NDIM.is_some_and(|n| n != self.ndim()) {
            return Err(Error::WrongNdim {
                name: self.name.to_owned(),
                ndim: self.ndim(),
                requested: D::NDIM.unwrap_or(0),
            });
        }
        let mut dim = D::zeros(self.ndim());
        self.shape.fill(dim.slice_mut());
        ArrayView::from_shape(dim, slice).map_err(|_| self.length_error())
    }

    /// The tensor as an array that borrows when the data is aligned for `T`
    /// and is an owned copy when it is not.
    pub fn cow_array<T: Element>(&self) -> Result<CowArray<'a, T, IxDyn>> {
        match self.array::<T>() {
            Ok(view) => Ok(CowArray::from(view)),
            Err(Error::Misaligned { .. }) => Ok(CowArray::from(self.copy_array::<T>()?)),
            Err(e) => Err(e),
        }
    }

    /// The elements, copied into a new vector (works at any alignment).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check_type::<T>()?;
        let size = self.dtype.itemsize();
        let mut out = Vec::with_capacity(self.num_elements());
        for chunk in self.data.chunks_exact(size) {
            match checked::try_pod_read_unaligned::<T>(chunk) {
                Ok(v) => out.push(v),
                Err(e) => return Err(self.cast_error(e)),
            }
        }
        Ok(out)
    }

    fn copy_array<T: Element>(&self) -> Result<ArrayD<T>> {
        let data = self.to_vec::<T>()?;
        self.shape
            .with_dims(|dims| ArrayD::from_shape_vec(IxDyn(dims), data))
            .map_err(|_| self.length_error())
    }

    /// An owned copy of the tensor.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_view(self)
    }
}

impl fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorView")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("nbytes", &self.data.len())
            .finish()
    }
}

impl PartialEq for TensorView<'_> {
    /// Equal when name, dtype, shape and data bytes are equal.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.dtype == other.dtype
            && self.shape == other.shape
            && self.data == other.data
    }
}

#[cfg(test)]
mod tests {
    use crate::{encode_buffer, DType, TensorRef, Tensors};

    #[test]
    fn array_has_the_shape_and_elements_at_every_rank() {
        // Ranks 0 to 4 take the fixed-rank path, 5 and 6 the dynamic one;
        // a zero dimension too.
        let shapes: [&[usize]; 9] = [
            &[],
            &[3],
            &[2, 3],
            &[2, 1, 3],
            &[1, 2, 3, 2],
            &[2, 1, 2, 1, 3],
            &[1, 1, 2, 1, 1, 3],
            &[2, 0, 3],
            &[0],
        ];
        for shape in shapes {
            let n: usize = shape.iter().product();
            let values: Vec<i32> = (0..n as i32).map(|i| i * 7 - 5).collect();
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let buf =
                encode_buffer(&[TensorRef::raw("t", DType::I32, shape, &bytes).unwrap()]).unwrap();
            let t = Tensors::parse(&buf).unwrap();
            let a = t.get(0).unwrap().array::<i32>().unwrap();
            assert_eq!(a.shape(), shape, "{shape:?}");
            assert!(a.is_standard_layout(), "{shape:?}");
            assert_eq!(a.iter().copied().collect::<Vec<_>>(), values, "{shape:?}");
            // And the element at the last index of every axis.
            if n > 0 {
                let last: Vec<usize> = shape.iter().map(|d| d - 1).collect();
                assert_eq!(a[&last[..]], values[n - 1], "{shape:?}");
            }
            assert!(t.get(0).unwrap().array::<f32>().is_err());
        }
    }
}
