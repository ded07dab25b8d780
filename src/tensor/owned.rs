//! Owned tensors: a name and an `ndarray` array of any tenbin element type.

use std::any::Any;

use ndarray::{ArrayD, ArrayViewD};

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::tensor::{check_name, Shape, TensorView, MAX_NDIM};

/// Declares [`AnyArray`] and [`dispatch!`] from the dtype table.
macro_rules! any_array {
    ($(($v:ident, $t:ty, $($rest:tt)*)),* $(,)?) => {
        /// An owned array of any tenbin element type, in standard (C) layout.
        ///
        /// The variants are named for the [`DType`] they hold.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        #[allow(missing_docs)]
        pub enum AnyArray {
            $($v(ArrayD<$t>),)*
        }

        /// Runs `$body` with `$a` bound to the typed array inside `$any`.
        macro_rules! dispatch {
            ($any:expr, $a:ident => $body:expr) => {
                match $any {
                    $(AnyArray::$v($a) => $body,)*
                }
            };
        }

        /// The typed array of `view`, copied.
        fn copy_of(view: &TensorView<'_>) -> Result<AnyArray> {
            Ok(match view.dtype() {
                $(DType::$v => AnyArray::$v(view.cow_array::<$t>()?.into_owned()),)*
            })
        }

        impl AnyArray {
            /// Wraps an array in the variant of its element type.
            fn of<T: Element>(array: ArrayD<T>) -> AnyArray {
                let wrapped = match T::DTYPE {
                    $(DType::$v => same_type(array).map(AnyArray::$v),)*
                };
                // `Element` is sealed and the table implements it for each
                // row's type with that row's dtype, so `T` is the type of
                // the variant `T::DTYPE` names.
                wrapped.unwrap_or_else(|| unreachable!("{} is not its own element type", T::DTYPE))
            }
        }
    };
}

crate::for_each_dtype!(any_array);

/// `value` as a `U` when `T` is `U`, else `None`.
fn same_type<T: 'static, U: 'static>(value: T) -> Option<U> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()?
        .take()
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
        dispatch!(self, a => AnyArray::of(a.reversed_axes()))
    }

    fn standard<T: Element>(array: ArrayD<T>) -> AnyArray {
        let array = if array.is_standard_layout() {
            array
        } else {
            array.as_standard_layout().into_owned()
        };
        AnyArray::of(array)
    }

    /// The array if its element type is `T`.
    fn typed<T: Element>(&self) -> Option<&ArrayD<T>> {
        dispatch!(self, a => (a as &dyn Any).downcast_ref())
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
        if array.shape().len() > MAX_NDIM {
            return Err(Error::TooManyDims {
                ndim: array.shape().len(),
            });
        }
        let array = dispatch!(array, a => AnyArray::standard(a));
        Ok(Tensor { name, array })
    }

    /// An owned copy of a view.
    pub fn from_view(view: &TensorView<'_>) -> Result<Tensor> {
        Ok(Tensor {
            name: view.name().to_owned(),
            array: copy_of(view)?,
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
        self.array
            .typed::<T>()
            .map(|a| a.view())
            .ok_or_else(|| self.wrong_type(T::DTYPE))
    }

    /// The array as element type `T`, taken out of the tensor.
    pub fn into_array<T: Element>(self) -> Result<ArrayD<T>> {
        let Tensor { name, array } = self;
        let actual = array.dtype();
        dispatch!(array, a => same_type(a)).ok_or(Error::WrongType {
            name,
            actual,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way into and out of an `AnyArray`, for one element type.
    fn round_trip<T: Element + PartialEq>() {
        let dtype = T::DTYPE;
        // Bytes that are valid for every dtype (bools are 0 or 1).
        let bytes: Vec<u8> = (0..6 * dtype.itemsize()).map(|i| (i % 2) as u8).collect();
        let view = TensorView::new("x", dtype, &[2, 3], &bytes).unwrap();

        let t = Tensor::from_view(&view).unwrap();
        assert_eq!(t.any().dtype(), dtype);
        assert_eq!(t.view().data(), &bytes[..], "{dtype}");
        let array = t.array::<T>().unwrap().to_owned();
        assert_eq!(array.shape(), [2, 3]);

        assert_eq!(t.array::<i64>().is_ok(), dtype == DType::I64, "{dtype}");

        let back = Tensor::new("x", array.clone()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.clone().into_array::<T>().unwrap(), array);
        match back.clone().into_array::<u8>() {
            Ok(_) => assert_eq!(dtype, DType::U8),
            Err(err) => assert!(
                matches!(err, Error::WrongType { actual, requested: DType::U8, .. }
                    if actual == dtype),
                "{dtype}: {err}"
            ),
        }

        let reversed = Tensor::from_any("x", back.any().clone().reversed_axes()).unwrap();
        assert_eq!(reversed.shape(), [3, 2]);
        assert_eq!(
            reversed.array::<T>().unwrap(),
            array.t().as_standard_layout().view()
        );
    }

    macro_rules! round_trip_all {
        ($(($v:ident, $t:ty, $($rest:tt)*)),* $(,)?) => {
            $(round_trip::<$t>();)*
        };
    }

    #[test]
    fn every_dtype_goes_in_and_out_of_any_array() {
        crate::for_each_dtype!(round_trip_all);
    }
}
