//! Owned tensors: a name and an `ndarray` array of any tenbin element type.

use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD};
use num_complex::Complex;

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::tensor::{check_name, Shape, TensorView};

/// An owned array of any tenbin element type, in standard (C) layout.
///
/// The variants are named for the [`DType`] they hold.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum AnyArray {
    F16(ArrayD<f16>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    Bool(ArrayD<bool>),
    BF16(ArrayD<bf16>),
    C64(ArrayD<Complex<f32>>),
    C128(ArrayD<Complex<f64>>),
}

/// Runs `$body` with `$a` bound to the typed array inside `$any`.
macro_rules! dispatch {
    ($any:expr, $a:ident => $body:expr) => {
        match $any {
            AnyArray::F16($a) => $body,
            AnyArray::F32($a) => $body,
            AnyArray::F64($a) => $body,
            AnyArray::I8($a) => $body,
            AnyArray::I16($a) => $body,
            AnyArray::I32($a) => $body,
            AnyArray::I64($a) => $body,
            AnyArray::U8($a) => $body,
            AnyArray::U16($a) => $body,
            AnyArray::U32($a) => $body,
            AnyArray::U64($a) => $body,
            AnyArray::Bool($a) => $body,
            AnyArray::BF16($a) => $body,
            AnyArray::C64($a) => $body,
            AnyArray::C128($a) => $body,
        }
    };
}

impl AnyArray {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        fn of<T: Element>(_: &ArrayD<T>) -> DType {
            T::DTYPE
        }
        dispatch!(self, a => of(a))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        dispatch!(self, a => a.shape())
    }

    /// The elements' bytes in C order (the array is always in standard
    /// layout).
    pub fn as_bytes(&self) -> &[u8] {
        fn bytes<T: Element>(a: &ArrayD<T>) -> &[u8] {
            a.as_slice().map_or(&[], bytemuck::cast_slice)
        }
        dispatch!(self, a => bytes(a))
    }

    /// The array with its axes in reverse order (a transpose), as a view
    /// made owned; [`Tensor::from_any`] puts it back in standard layout.
    pub fn reversed_axes(self) -> AnyArray {
        dispatch!(self, a => Element::into_any(a.reversed_axes()))
    }

    fn standard<T: Element>(array: ArrayD<T>) -> AnyArray {
        let array = if array.is_standard_layout() {
            array
        } else {
            array.as_standard_layout().into_owned()
        };
        T::into_any(array)
    }
}

/// An owned tensor: a name and an array.
///
/// ```
/// use ndarray::ArrayD;
/// use tenstore::{decode_buffer, encode_buffer, Tensor};
///
/// let label = Tensor::new("label", ArrayD::from_elem(vec![1], 7i64))?;
/// let bytes = encode_buffer(&[&label])?;
/// let back = decode_buffer(&bytes)?[0].to_tensor()?;
/// assert_eq!(back, label);
/// assert_eq!(back.array::<i64>()?[[0]], 7);
/// # Ok::<(), tenstore::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    name: String,
    array: AnyArray,
}

impl Tensor {
    /// A named tensor. The name must be storable: at most 8 ASCII bytes,
    /// no NUL; empty for none. An array not in standard layout is copied
    /// into it.
    pub fn new<T: Element>(name: impl Into<String>, array: ArrayD<T>) -> Result<Tensor> {
        Tensor::from_any(name, AnyArray::standard(array))
    }

    /// A named tensor from an array of any element type.
    pub fn from_any(name: impl Into<String>, array: AnyArray) -> Result<Tensor> {
        let name = name.into();
        check_name(&name)?;
        if array.shape().len() > crate::MAX_NDIM {
            return Err(Error::TooManyDims {
                ndim: array.shape().len(),
            });
        }
        let array = dispatch!(array, a => AnyArray::standard(a));
        Ok(Tensor { name, array })
    }

    /// An owned copy of a view.
    pub fn from_view(view: &TensorView<'_>) -> Result<Tensor> {
        fn copy<T: Element>(view: &TensorView<'_>) -> Result<AnyArray> {
            Ok(T::into_any(view.cow_array::<T>()?.into_owned()))
        }
        let array = match view.dtype() {
            DType::F16 => copy::<f16>(view)?,
            DType::F32 => copy::<f32>(view)?,
            DType::F64 => copy::<f64>(view)?,
            DType::I8 => copy::<i8>(view)?,
            DType::I16 => copy::<i16>(view)?,
            DType::I32 => copy::<i32>(view)?,
            DType::I64 => copy::<i64>(view)?,
            DType::U8 => copy::<u8>(view)?,
            DType::U16 => copy::<u16>(view)?,
            DType::U32 => copy::<u32>(view)?,
            DType::U64 => copy::<u64>(view)?,
            DType::Bool => copy::<bool>(view)?,
            DType::BF16 => copy::<bf16>(view)?,
            DType::C64 => copy::<Complex<f32>>(view)?,
            DType::C128 => copy::<Complex<f64>>(view)?,
        };
        Ok(Tensor {
            name: view.name().to_owned(),
            array,
        })
    }

    /// The name; empty when unnamed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.array.dtype()
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.array.shape()
    }

    /// The array, of whatever element type.
    pub fn any(&self) -> &AnyArray {
        &self.array
    }

    /// The array as element type `T`, or [`Error::WrongType`].
    pub fn array<T: Element>(&self) -> Result<ArrayViewD<'_, T>> {
        T::any_ref(&self.array)
            .map(|a| a.view())
            .ok_or_else(|| self.wrong_type(T::DTYPE))
    }

    /// The array as element type `T`, taken out of the tensor.
    pub fn into_array<T: Element>(self) -> Result<ArrayD<T>> {
        let Tensor { name, array } = self;
        T::any_into(array).map_err(|array| Error::WrongType {
            name,
            actual: array.dtype(),
            requested: T::DTYPE,
        })
    }

    fn wrong_type(&self, requested: DType) -> Error {
        Error::WrongType {
            name: self.name.clone(),
            actual: self.dtype(),
            requested,
        }
    }

    /// The tensor as a borrowed view.
    pub fn view(&self) -> TensorView<'_> {
        TensorView::from_checked(
            &self.name,
            self.dtype(),
            Shape::from(self.shape()),
            self.array.as_bytes(),
        )
    }
}

impl<T: Element> TryFrom<(&str, ArrayD<T>)> for Tensor {
    type Error = Error;
    fn try_from((name, array): (&str, ArrayD<T>)) -> Result<Tensor> {
        Tensor::new(name, array)
    }
}
