//! Element-wise activations (ReLU, tanh, sigmoid) on arrays of any dimension.
//!
//! Each backward pass is written in terms of the forward *output* `y`, so a layer only has to
//! keep its output: `relu' = [y > 0]`, `tanh' = 1 − y²`, `sigmoid' = y·(1 − y)`.
//!
//! Every function comes in three forms: allocating (`relu`), writing into a caller buffer of the
//! same shape (`relu_into`, which overwrites it), and in place (`relu_inplace`). Large contiguous
//! arrays are split over rayon's threads; the result does not depend on the split.
//!
//! For contiguous `f32` arrays, tanh and sigmoid use branch-free, vectorised versions (within a
//! few ulp of the exact values) instead of libm's scalar calls; `f64` always uses libm.
//!
//! # Panics
//! Every `_into` / backward function panics if its arrays do not all have the same shape.

use crate::fast_math::{sigmoid_f32, tanh_f32};
use crate::parallel::{
    map_inplace, map_inplace_f32, map_into, map_into_f32, zip_map_inplace, zip_map_into,
};
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

/// `max(x, 0)` element-wise.
///
/// ```
/// use ndarray::array;
/// let y = tensor::relu(array![[-1.0_f32, 2.0], [0.5, -3.0]].view());
/// assert_eq!(y, array![[0.0, 2.0], [0.5, 0.0]]);
/// ```
pub fn relu<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>) -> Array<T, D> {
    let mut out = Array::zeros(input.raw_dim());
    relu_into(input, out.view_mut());
    out
}
/// Like [`relu`], overwriting `out` (same shape).
///
/// ```
/// use ndarray::{array, Array1};
/// let mut y = Array1::<f64>::zeros(3);
/// tensor::relu_into(array![-1.0, 0.0, 4.0].view(), y.view_mut());
/// assert_eq!(y, array![0.0, 0.0, 4.0]);
/// ```
#[track_caller]
pub fn relu_into<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>, out: ArrayViewMut<'_, T, D>) {
    map_into("relu", input, out, relu_fwd);
}
/// ReLU in place: `a = max(a, 0)`.
///
/// ```
/// use ndarray::array;
/// let mut a = array![-2.0_f32, 3.0];
/// tensor::relu_inplace(a.view_mut());
/// assert_eq!(a, array![0.0, 3.0]);
/// ```
pub fn relu_inplace<T: Scalar, D: Dimension>(a: ArrayViewMut<'_, T, D>) {
    map_inplace(a, relu_fwd);
}
/// `grad_out · [y > 0]`, from the forward output `y`.
///
/// ```
/// use ndarray::array;
/// let y = array![0.0_f32, 2.0];
/// let g = tensor::relu_backward(y.view(), array![5.0, 7.0].view());
/// assert_eq!(g, array![0.0, 7.0]);
/// ```
#[track_caller]
pub fn relu_backward<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
) -> Array<T, D> {
    let mut gi = Array::zeros(output.raw_dim());
    relu_backward_into(output, grad_out, gi.view_mut());
    gi
}
/// Like [`relu_backward`], overwriting `grad_input`.
///
/// ```
/// use ndarray::{array, Array1};
/// let mut gi = Array1::<f32>::zeros(2);
/// tensor::relu_backward_into(array![0.0, 1.0].view(), array![3.0, 4.0].view(), gi.view_mut());
/// assert_eq!(gi, array![0.0, 4.0]);
/// ```
#[track_caller]
pub fn relu_backward_into<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
    grad_input: ArrayViewMut<'_, T, D>,
) {
    zip_map_into("relu_backward", output, grad_out, grad_input, relu_bwd);
}
/// [`relu_backward`] in place: turns the upstream gradient `grad` into the input gradient.
///
/// ```
/// use ndarray::array;
/// let mut g = array![3.0_f32, 4.0];
/// tensor::relu_backward_inplace(array![0.0, 1.0].view(), g.view_mut());
/// assert_eq!(g, array![0.0, 4.0]);
/// ```
#[track_caller]
pub fn relu_backward_inplace<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad: ArrayViewMut<'_, T, D>,
) {
    zip_map_inplace("relu_backward_inplace", output, grad, relu_bwd);
}

// ---------------------------------------------------------------------------------------------
// tanh: y = tanh(x)
// ---------------------------------------------------------------------------------------------

// d tanh(x)/dx = 1 − tanh²(x) = 1 − y².
fn tanh_bwd<T: Scalar>(y: T, g: T) -> T {
    g * (T::one() - y * y)
}

/// `tanh(x)` element-wise.
///
/// ```
/// use ndarray::array;
/// let y = tensor::tanh(array![0.0_f64, 1.0].view());
/// assert_eq!(y[0], 0.0);
/// assert!((y[1] - 1.0_f64.tanh()).abs() < 1e-15);
/// ```
pub fn tanh<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>) -> Array<T, D> {
    let mut out = Array::zeros(input.raw_dim());
    tanh_into(input, out.view_mut());
    out
}
/// Like [`tanh`], overwriting `out`.
///
/// ```
/// use ndarray::{array, Array1};
/// let mut y = Array1::<f32>::zeros(1);
/// tensor::tanh_into(array![0.0_f32].view(), y.view_mut());
/// assert_eq!(y[0], 0.0);
/// ```
#[track_caller]
pub fn tanh_into<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>, out: ArrayViewMut<'_, T, D>) {
    map_into_f32("tanh", input, out, T::tanh, tanh_f32);
}
/// tanh in place.
///
/// ```
/// use ndarray::array;
/// let mut a = array![0.0_f32, 100.0];
/// tensor::tanh_inplace(a.view_mut());
/// assert_eq!(a, array![0.0, 1.0]);
/// ```
pub fn tanh_inplace<T: Scalar, D: Dimension>(a: ArrayViewMut<'_, T, D>) {
    map_inplace_f32(a, T::tanh, tanh_f32);
}
/// `grad_out · (1 − y²)`, from the forward output `y`.
///
/// ```
/// use ndarray::array;
/// let g = tensor::tanh_backward(array![0.0_f32, 0.5].view(), array![2.0, 2.0].view());
/// assert_eq!(g, array![2.0, 1.5]);
/// ```
#[track_caller]
pub fn tanh_backward<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
) -> Array<T, D> {
    let mut gi = Array::zeros(output.raw_dim());
    tanh_backward_into(output, grad_out, gi.view_mut());
    gi
}
/// Like [`tanh_backward`], overwriting `grad_input`.
///
/// ```
/// use ndarray::{array, Array1};
/// let mut gi = Array1::<f32>::zeros(1);
/// tensor::tanh_backward_into(array![0.5_f32].view(), array![4.0].view(), gi.view_mut());
/// assert_eq!(gi[0], 3.0);
/// ```
#[track_caller]
pub fn tanh_backward_into<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
    grad_input: ArrayViewMut<'_, T, D>,
) {
    zip_map_into("tanh_backward", output, grad_out, grad_input, tanh_bwd);
}
/// [`tanh_backward`] in place on the upstream gradient `grad`.
///
/// ```
/// use ndarray::array;
/// let mut g = array![4.0_f32];
/// tensor::tanh_backward_inplace(array![0.5_f32].view(), g.view_mut());
/// assert_eq!(g[0], 3.0);
/// ```
#[track_caller]
pub fn tanh_backward_inplace<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad: ArrayViewMut<'_, T, D>,
) {
    zip_map_inplace("tanh_backward_inplace", output, grad, tanh_bwd);
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

/// `1 / (1 + e^−x)` element-wise, stable for large |x|.
///
/// ```
/// use ndarray::array;
/// let y = tensor::sigmoid(array![0.0_f32, -1000.0, 1000.0].view());
/// assert_eq!(y, array![0.5, 0.0, 1.0]);
/// ```
pub fn sigmoid<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>) -> Array<T, D> {
    let mut out = Array::zeros(input.raw_dim());
    sigmoid_into(input, out.view_mut());
    out
}
/// Like [`sigmoid`], overwriting `out`.
///
/// ```
/// use ndarray::{array, Array1};
/// let mut y = Array1::<f64>::zeros(1);
/// tensor::sigmoid_into(array![0.0].view(), y.view_mut());
/// assert_eq!(y[0], 0.5);
/// ```
#[track_caller]
pub fn sigmoid_into<T: Scalar, D: Dimension>(
    input: ArrayView<'_, T, D>,
    out: ArrayViewMut<'_, T, D>,
) {
    map_into_f32("sigmoid", input, out, sigmoid_fwd, sigmoid_f32);
}
/// sigmoid in place.
///
/// ```
/// use ndarray::array;
/// let mut a = array![0.0_f32];
/// tensor::sigmoid_inplace(a.view_mut());
/// assert_eq!(a[0], 0.5);
/// ```
pub fn sigmoid_inplace<T: Scalar, D: Dimension>(a: ArrayViewMut<'_, T, D>) {
    map_inplace_f32(a, sigmoid_fwd, sigmoid_f32);
}
/// `grad_out · y · (1 − y)`, from the forward output `y`.
///
/// ```
/// use ndarray::array;
/// let g = tensor::sigmoid_backward(array![0.5_f32].view(), array![2.0].view());
/// assert_eq!(g[0], 0.5);
/// ```
#[track_caller]
pub fn sigmoid_backward<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
) -> Array<T, D> {
    let mut gi = Array::zeros(output.raw_dim());
    sigmoid_backward_into(output, grad_out, gi.view_mut());
    gi
}
/// Like [`sigmoid_backward`], overwriting `grad_input`.
///
/// ```
/// use ndarray::{array, Array1};
/// let mut gi = Array1::<f32>::zeros(1);
/// tensor::sigmoid_backward_into(array![0.5_f32].view(), array![4.0].view(), gi.view_mut());
/// assert_eq!(gi[0], 1.0);
/// ```
#[track_caller]
pub fn sigmoid_backward_into<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
    grad_input: ArrayViewMut<'_, T, D>,
) {
    zip_map_into(
        "sigmoid_backward",
        output,
        grad_out,
        grad_input,
        sigmoid_bwd,
    );
}
/// [`sigmoid_backward`] in place on the upstream gradient `grad`.
///
/// ```
/// use ndarray::array;
/// let mut g = array![4.0_f32];
/// tensor::sigmoid_backward_inplace(array![0.5_f32].view(), g.view_mut());
/// assert_eq!(g[0], 1.0);
/// ```
#[track_caller]
pub fn sigmoid_backward_inplace<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad: ArrayViewMut<'_, T, D>,
) {
    zip_map_inplace("sigmoid_backward_inplace", output, grad, sigmoid_bwd);
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
    fn strided_views_and_inplace_agree_with_allocating_forms() {
        // a transposed (non-contiguous) 3-D view takes the Zip path
        let a = Array3::from_shape_fn((3, 4, 5), |(i, j, k)| {
            (i as f64 - 1.3) * (j as f64 - 1.7) + k as f64 * 0.1 - 0.2
        });
        let v = a.view().reversed_axes();
        macro_rules! check {
            ($fwd:ident, $inplace:ident) => {
                let y = $fwd(v);
                let mut z = v.to_owned();
                $inplace(z.view_mut());
                assert_eq!(y, z);
            };
        }
        check!(relu, relu_inplace);
        check!(tanh, tanh_inplace);
        check!(sigmoid, sigmoid_inplace);
    }

    #[test]
    #[should_panic(expected = "relu: out must have the input's shape")]
    fn shape_mismatch_panics() {
        let mut out = ndarray::Array1::<f32>::zeros(2);
        relu_into(array![1.0_f32, 2.0, 3.0].view(), out.view_mut());
    }

    #[test]
    fn large_arrays_take_the_parallel_path_and_match() {
        let n = 100_000;
        let x = ndarray::Array1::from_shape_fn(n, |i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0);
        let y = sigmoid(x.view());
        let t = tanh(x.view());
        // the f32 fast path, element by element; and the generic path on a strided view
        let strided = sigmoid(x.slice(ndarray::s![..;2]));
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
        let gi = tanh_backward(y.view(), g.view());
        let mut gi2 = g.clone();
        tanh_backward_inplace(y.view(), gi2.view_mut());
        assert_eq!(gi, gi2);
        assert_eq!(gi[5], 2.0 * (1.0 - y[5] * y[5]));
    }
}
