//! Element-wise activations (ReLU, tanh, sigmoid) on arrays of any dimension.
//!
//! Each backward pass is written in terms of the forward *output* `y`, so a layer only has to
//! keep its output: `relu' = [y > 0]`, `tanh' = 1 − y²`, `sigmoid' = y·(1 − y)`.
//!
//! One type, [`Activation`], names the function; its methods are the forward pass (allocating,
//! or `_into` a caller buffer of the same shape, which it overwrites) and the backward pass
//! (allocating, `_into`, or in place over the upstream gradient). Large contiguous arrays are
//! split over rayon's threads; the result does not depend on the split.
//!
//! For contiguous `f32` arrays, tanh and sigmoid use branch-free, vectorised versions (within a
//! few ulp of the exact values) instead of libm's scalar calls; `f64` always uses libm.
//!
//! # Panics
//! Every `_into` / backward function panics if its arrays do not all have the same shape.

use crate::fast_math::{sigmoid_f32, tanh_f32};
use crate::parallel::{map_into, map_into_f32, zip_map_inplace, zip_map_into};
use crate::Scalar;
use ndarray::{Array, ArrayView, ArrayViewMut, Dimension};

// ---------------------------------------------------------------------------------------------
// ReLU: y = max(x, 0)
// ---------------------------------------------------------------------------------------------

pub(crate) fn relu_fwd<T: Scalar>(x: T) -> T {
    // `x > 0 ? x : 0` rather than `max`, so that NaN propagates as in PyTorch.
    if x > T::zero() || x.is_nan() {
        x
    } else {
        T::zero()
    }
}

// dy/dx = 1 where x > 0, else 0; and x > 0 exactly where y > 0, so the mask comes from y.
pub(crate) fn relu_bwd<T: Scalar>(y: T, g: T) -> T {
    if y > T::zero() {
        g
    } else {
        T::zero()
    }
}

// ---------------------------------------------------------------------------------------------
// tanh: y = tanh(x)
// ---------------------------------------------------------------------------------------------

// d tanh(x)/dx = 1 − tanh²(x) = 1 − y².
fn tanh_bwd<T: Scalar>(y: T, g: T) -> T {
    g * (T::one() - y * y)
}

// ---------------------------------------------------------------------------------------------
// sigmoid: y = 1 / (1 + e^−x)
// ---------------------------------------------------------------------------------------------

// Stable in both tails: e^−x overflows for very negative x, so there use the equal form
// e^x / (1 + e^x), whose exponential only underflows (harmlessly) to 0.
fn sigmoid_fwd<T: Scalar>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

// dσ/dx = e^−x / (1 + e^−x)² = σ·(1 − σ) = y·(1 − y).
fn sigmoid_bwd<T: Scalar>(y: T, g: T) -> T {
    g * y * (T::one() - y)
}

// ---------------------------------------------------------------------------------------------
// The activations, forward and backward
// ---------------------------------------------------------------------------------------------

/// An element-wise non-linearity: its forward pass, and its backward pass from the forward
/// *output* `y` (so a layer keeps only its output).
///
/// ```
/// use ndarray::array;
/// use tensor::Activation;
/// let x = array![[-1.0_f32, 2.0], [0.5, -3.0]];
/// let y = Activation::Relu.forward(x.view());
/// assert_eq!(y, array![[0.0, 2.0], [0.5, 0.0]]);
/// // dL/dx for dL/dy = 1: relu' = [y > 0]
/// let gx = Activation::Relu.backward(y.view(), ndarray::Array2::ones((2, 2)).view());
/// assert_eq!(gx, array![[0.0, 1.0], [1.0, 0.0]]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(x, 0)` (NaN stays NaN, as in PyTorch); `relu' = [y > 0]`.
    Relu,
    /// `tanh(x)`; `tanh' = 1 − y²`.
    Tanh,
    /// `1 / (1 + e^−x)`, stable in both tails; `sigmoid' = y·(1 − y)`.
    Sigmoid,
}

impl Activation {
    /// `f(input)`, element-wise, in a new array.
    ///
    /// ```
    /// use ndarray::array;
    /// let y = tensor::Activation::Sigmoid.forward(array![0.0_f64].view());
    /// assert_eq!(y[0], 0.5);
    /// ```
    pub fn forward<T: Scalar, D: Dimension>(self, input: ArrayView<'_, T, D>) -> Array<T, D> {
        let mut out = Array::zeros(input.raw_dim());
        self.forward_into(input, out.view_mut());
        out
    }

    /// `out = f(input)`, element-wise; `out` has the input's shape.
    ///
    /// # Panics
    /// If `out` does not have the input's shape.
    ///
    /// ```
    /// use ndarray::{array, Array1};
    /// let mut y = Array1::<f64>::zeros(3);
    /// tensor::Activation::Relu.forward_into(array![-1.0, 0.0, 4.0].view(), y.view_mut());
    /// assert_eq!(y, array![0.0, 0.0, 4.0]);
    /// ```
    #[track_caller]
    pub fn forward_into<T: Scalar, D: Dimension>(
        self,
        input: ArrayView<'_, T, D>,
        out: ArrayViewMut<'_, T, D>,
    ) {
        match self {
            Activation::Relu => map_into("relu", input, out, relu_fwd),
            Activation::Tanh => map_into_f32("tanh", input, out, T::tanh, tanh_f32),
            Activation::Sigmoid => map_into_f32("sigmoid", input, out, sigmoid_fwd, sigmoid_f32),
        }
    }

    /// dL/dinput `= grad_out · f'`, with `f'` from the forward output `output`, in a new array.
    ///
    /// # Panics
    /// If `output` and `grad_out` differ in shape.
    ///
    /// ```
    /// use ndarray::array;
    /// let g = tensor::Activation::Tanh.backward(array![0.5_f32].view(), array![2.0].view());
    /// assert_eq!(g[0], 2.0 * (1.0 - 0.25));
    /// ```
    #[track_caller]
    pub fn backward<T: Scalar, D: Dimension>(
        self,
        output: ArrayView<'_, T, D>,
        grad_out: ArrayView<'_, T, D>,
    ) -> Array<T, D> {
        let mut grad_input = Array::zeros(output.raw_dim());
        self.backward_into(output, grad_out, grad_input.view_mut());
        grad_input
    }

    /// Like [`Activation::backward`], overwriting `grad_input`.
    ///
    /// # Panics
    /// If `output`, `grad_out` and `grad_input` are not all of one shape.
    ///
    /// ```
    /// use ndarray::{array, Array1};
    /// let mut gi = Array1::<f32>::zeros(2);
    /// let (y, g) = (array![0.0, 1.0], array![3.0, 4.0]);
    /// tensor::Activation::Relu.backward_into(y.view(), g.view(), gi.view_mut());
    /// assert_eq!(gi, array![0.0, 4.0]);
    /// ```
    #[track_caller]
    pub fn backward_into<T: Scalar, D: Dimension>(
        self,
        output: ArrayView<'_, T, D>,
        grad_out: ArrayView<'_, T, D>,
        grad_input: ArrayViewMut<'_, T, D>,
    ) {
        let (y, g, gi) = (output, grad_out, grad_input);
        match self {
            Activation::Relu => zip_map_into("relu_backward", y, g, gi, relu_bwd),
            Activation::Tanh => zip_map_into("tanh_backward", y, g, gi, tanh_bwd),
            Activation::Sigmoid => zip_map_into("sigmoid_backward", y, g, gi, sigmoid_bwd),
        }
    }

    /// [`Activation::backward_into`] in place: turns the upstream gradient `grad` into the
    /// input gradient (bit-identical).
    ///
    /// # Panics
    /// If `output` and `grad` differ in shape.
    ///
    /// ```
    /// use ndarray::array;
    /// let mut g = array![4.0_f32];
    /// tensor::Activation::Sigmoid.backward_inplace(array![0.5_f32].view(), g.view_mut());
    /// assert_eq!(g[0], 1.0);
    /// ```
    #[track_caller]
    pub fn backward_inplace<T: Scalar, D: Dimension>(
        self,
        output: ArrayView<'_, T, D>,
        grad: ArrayViewMut<'_, T, D>,
    ) {
        match self {
            Activation::Relu => zip_map_inplace("relu_backward_inplace", output, grad, relu_bwd),
            Activation::Tanh => zip_map_inplace("tanh_backward_inplace", output, grad, tanh_bwd),
            Activation::Sigmoid => {
                zip_map_inplace("sigmoid_backward_inplace", output, grad, sigmoid_bwd)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        for &x in &[-800.0_f64, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0] {
            let s = sigmoid_fwd(x);
            assert!(
                s.is_finite() && (0.0..=1.0).contains(&s),
                "sigmoid({x}) = {s}"
            );
            assert!((s + sigmoid_fwd(-x) - 1.0).abs() < 1e-15);
        }
        assert!(
            (sigmoid_fwd(-30.0_f64) - (-30.0_f64).exp() / (1.0 + (-30.0_f64).exp())).abs() < 1e-25
        );
    }

    #[test]
    fn relu_propagates_nan() {
        assert!(relu_fwd(f32::NAN).is_nan());
    }

    #[test]
    fn strided_views_agree_with_contiguous_copies() {
        // a transposed (non-contiguous) 3-D view takes the Zip path
        let a = Array3::from_shape_fn((3, 4, 5), |(i, j, k)| {
            (i as f64 - 1.3) * (j as f64 - 1.7) + k as f64 * 0.1 - 0.2
        });
        let v = a.view().reversed_axes();
        let contiguous = v.as_standard_layout().into_owned();
        for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
            assert_eq!(act.forward(v), act.forward(contiguous.view()), "{act:?}");
        }
    }

    #[test]
    #[should_panic(expected = "relu: out must have the input's shape")]
    fn shape_mismatch_panics() {
        let mut out = ndarray::Array1::<f32>::zeros(2);
        Activation::Relu.forward_into(array![1.0_f32, 2.0, 3.0].view(), out.view_mut());
    }

    #[test]
    fn large_arrays_take_the_parallel_path_and_match() {
        let n = 100_000;
        let x = ndarray::Array1::from_shape_fn(n, |i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0);
        let y = Activation::Sigmoid.forward(x.view());
        let t = Activation::Tanh.forward(x.view());
        // the f32 fast path, element by element; and the generic path on a strided view
        let strided = Activation::Sigmoid.forward(x.slice(ndarray::s![..;2]));
        for i in (0..n).step_by(997) {
            assert_eq!(y[i], sigmoid_f32(x[i]));
            assert_eq!(t[i], tanh_f32(x[i]));
            assert!((y[i] - sigmoid_fwd(x[i])).abs() <= 1e-6 * y[i]);
            assert!((t[i] - x[i].tanh()).abs() <= 1e-6 * t[i].abs());
        }
        for i in (0..n / 2).step_by(997) {
            assert_eq!(strided[i], sigmoid_fwd(x[2 * i]));
        }
        let g = ndarray::Array1::from_elem(n, 2.0_f32);
        let gi = Activation::Tanh.backward(y.view(), g.view());
        let mut gi2 = g.clone();
        Activation::Tanh.backward_inplace(y.view(), gi2.view_mut());
        assert_eq!(gi, gi2);
        assert_eq!(gi[5], 2.0 * (1.0 - y[5] * y[5]));
    }
}
