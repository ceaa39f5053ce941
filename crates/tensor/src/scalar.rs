use ndarray::LinalgScalar;
use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;

/// The element types every kernel accepts: `f32` (the fast path) and `f64` (for gradient checks).
///
/// Sealed: the kernels pick their fast paths by type, so no other type can implement it.
///
/// ```
/// fn total<T: tensor::Scalar>(a: ndarray::ArrayView2<'_, T>) -> T {
///     a.sum()
/// }
/// assert_eq!(total(ndarray::array![[1.0_f32, 2.0]].view()), 3.0);
/// ```
pub trait Scalar:
    sealed::Sealed + LinalgScalar + Float + Sum + Debug + Display + Default + Send + Sync + 'static
{
    /// Converts an `f64` constant (a tolerance, `1/n`, …) to this type.
    ///
    /// ```
    /// use tensor::Scalar;
    /// assert_eq!(<f32 as Scalar>::from_f64(0.1), 0.1_f32); // rounded to the nearest f32
    /// assert_eq!(<f64 as Scalar>::from_f64(0.1), 0.1_f64);
    /// ```
    fn from_f64(x: f64) -> Self;

    /// The slice itself when `Self` is `f32`, else `None`: lets a kernel take an `f32`-only
    /// fast path (vectorised `tanh`, `sigmoid`) without `unsafe` casts.
    ///
    /// ```
    /// use tensor::Scalar;
    /// assert_eq!(f32::as_f32_slice(&[1.0, 2.0]), Some(&[1.0_f32, 2.0][..]));
    /// assert_eq!(f64::as_f32_slice(&[1.0, 2.0]), None);
    /// ```
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]> {
        let _ = s;
        None
    }

    /// Mutable form of [`Scalar::as_f32_slice`].
    ///
    /// ```
    /// use tensor::Scalar;
    /// let mut v = [1.0_f32, 2.0];
    /// f32::as_f32_slice_mut(&mut v).unwrap()[0] = 3.0;
    /// assert_eq!(v, [3.0, 2.0]);
    /// assert!(f64::as_f32_slice_mut(&mut [1.0]).is_none());
    /// ```
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        let _ = s;
        None
    }
}

impl Scalar for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl Scalar for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
}

mod sealed {
    /// The private supertrait that keeps [`Scalar`](super::Scalar) to `f32` and `f64`.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}
