use ndarray::LinalgScalar;
use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;

/// The element types every kernel accepts: `f32` (the fast path) and `f64` (for gradient checks).
pub trait Scalar:
    LinalgScalar + Float + Sum + Debug + Display + Default + Send + Sync + 'static
{
    /// Converts an `f64` constant (a tolerance, `1/n`, …) to this type.
    fn from_f64(x: f64) -> Self;
}

impl Scalar for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Scalar for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
}
