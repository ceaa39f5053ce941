//! Fully connected layer: `y = x·Wᵀ + b`, with `W` as `[out, in]` (PyTorch's layout).
//!
//! Every product goes through [`gemm`] with transposed *views* (`w.t()`, `g.t()`): nothing is
//! copied or transposed in memory. The bias gradient is a column sum done serially in row order,
//! so it is deterministic.
//!
//! # Panics
//! Every function panics if the shapes do not agree: `x` `[n, in]`, `W` `[out, in]`, `b` `[out]`,
//! `y` and `grad_out` `[n, out]`.

use crate::shape::{check_shape, Expected};
use crate::{gemm, Scalar};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// The three gradients of a linear layer, as [`linear_backward`] returns them.
///
/// ```
/// use ndarray::array;
/// use tensor::{linear_backward, LinearGrads};
/// let (x, w) = (array![[1.0_f64, 2.0, 3.0]], array![[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]);
/// let LinearGrads { input, weight, bias } = linear_backward(x.view(), w.view(), array![[1.0, 2.0]].view());
/// assert_eq!(input, array![[2.0, 1.0, 0.0]]); // g·W
/// assert_eq!(weight, array![[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]); // gᵀ·x
/// assert_eq!(bias, array![1.0, 2.0]);
/// ```
#[derive(Debug, Clone)]
pub struct LinearGrads<T> {
    /// dL/dx, `[n, in]`.
    pub input: Array2<T>,
    /// dL/dW, `[out, in]`.
    pub weight: Array2<T>,
    /// dL/db, `[out]`.
    pub bias: Array1<T>,
}

/// Panics unless `weight` is `[out, in]` for an `input` of `[n, in]`.
#[track_caller]
fn check_weight(op: &str, input: (usize, usize), weight: (usize, usize)) {
    let expected = Expected::FitFor {
        other: "input",
        other_shape: [input.0, input.1],
        shape: [weight.0, input.1],
    };
    check_shape(op, "weight", expected, [weight.0, weight.1]);
}

/// `y = x·Wᵀ + b` for `x` `[n, in]`, `W` `[out, in]`, `b` `[out]`.
///
/// # Panics
/// If the shapes do not agree (see the module docs).
///
/// ```
/// use ndarray::array;
/// let x = array![[1.0_f32, 2.0]];
/// let w = array![[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]];
/// let y = tensor::linear(x.view(), w.view(), Some(array![0.5, 0.0, 0.0].view()));
/// assert_eq!(y, array![[1.5, 3.0, -2.0]]);
/// ```
#[track_caller]
pub fn linear<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
) -> Array2<T> {
    check_weight("linear", input.dim(), weight.dim());
    let mut out = Array2::zeros((input.nrows(), weight.nrows()));
    linear_into(input, weight, bias, out.view_mut());
    out
}

/// Like [`linear`], overwriting `out` (`[n, out]`).
///
/// # Panics
/// If the shapes do not agree (see the module docs).
///
/// ```
/// use ndarray::{array, Array2};
/// let mut y = Array2::<f64>::zeros((2, 1));
/// tensor::linear_into(array![[1.0, 1.0], [2.0, 0.0]].view(), array![[3.0, 4.0]].view(), None, y.view_mut());
/// assert_eq!(y, array![[7.0], [6.0]]);
/// ```
#[track_caller]
pub fn linear_into<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    mut out: ArrayViewMut2<'_, T>,
) {
    check_weight("linear", input.dim(), weight.dim());
    let out_dim = (input.nrows(), weight.nrows());
    check_shape("linear", "out", Expected::Shape(out_dim), out.dim());
    match bias {
        Some(b) => {
            check_shape("linear", "bias", Expected::Shape(weight.nrows()), b.len());
            // Start every row from b, then accumulate x·Wᵀ on top: one pass over `out`.
            out.rows_mut().into_iter().for_each(|mut r| r.assign(&b));
            gemm(T::one(), input, weight.t(), T::one(), out);
        }
        None => gemm(T::one(), input, weight.t(), T::zero(), out),
    }
}

// y_ij = Σ_k x_ik W_jk + b_j, with upstream g = dL/dy:
//   dL/dx_ik = Σ_j g_ij W_jk    →  dx = g·W
//   dL/dW_jk = Σ_i g_ij x_ik    →  dW = gᵀ·x
//   dL/db_j  = Σ_i g_ij         →  db = column sums of g
/// Gradients of [`linear`] for the upstream gradient `grad_out` (`[n, out]`).
///
/// # Panics
/// If the shapes do not agree (see the module docs).
///
/// ```
/// use ndarray::array;
/// let x = array![[1.0_f32, 2.0], [3.0, 4.0]];
/// let w = array![[1.0, -1.0]];
/// let g = tensor::linear_backward(x.view(), w.view(), array![[1.0], [1.0]].view());
/// assert_eq!(g.input, array![[1.0, -1.0], [1.0, -1.0]]);
/// assert_eq!(g.weight, array![[4.0, 6.0]]);
/// assert_eq!(g.bias, array![2.0]);
/// ```
#[track_caller]
pub fn linear_backward<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
) -> LinearGrads<T> {
    check_weight("linear_backward", input.dim(), weight.dim());
    let mut grads = LinearGrads {
        input: Array2::zeros(input.raw_dim()),
        weight: Array2::zeros(weight.raw_dim()),
        bias: Array1::zeros(weight.nrows()),
    };
    linear_backward_into(
        input,
        weight,
        grad_out,
        Some(grads.input.view_mut()),
        grads.weight.view_mut(),
        Some(grads.bias.view_mut()),
    );
    grads
}

/// Like [`linear_backward`], overwriting caller-owned buffers; `grad_input` and `grad_bias` are
/// optional.
///
/// # Panics
/// If the shapes do not agree (see the module docs).
///
/// ```
/// use ndarray::{array, Array2};
/// let x = array![[1.0_f64, 2.0]];
/// let mut gw = Array2::zeros((1, 2));
/// tensor::linear_backward_into(x.view(), array![[0.0, 0.0]].view(), array![[3.0]].view(), None, gw.view_mut(), None);
/// assert_eq!(gw, array![[3.0, 6.0]]);
/// ```
#[track_caller]
pub fn linear_backward_into<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
    grad_input: Option<ArrayViewMut2<'_, T>>,
    grad_weight: ArrayViewMut2<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
) {
    let op = "linear_backward";
    check_weight(op, input.dim(), weight.dim());
    let out_dim = (input.nrows(), weight.nrows());
    check_shape(op, "grad_out", Expected::Shape(out_dim), grad_out.dim());
    let grad_weight_dim = grad_weight.dim();
    check_shape(
        op,
        "grad_weight",
        Expected::ShapeOf("weight", weight.dim()),
        grad_weight_dim,
    );
    if let Some(gi) = grad_input {
        check_shape(
            op,
            "grad_input",
            Expected::ShapeOf("input", input.dim()),
            gi.dim(),
        );
        gemm(T::one(), grad_out, weight, T::zero(), gi);
    }
    gemm(T::one(), grad_out.t(), input, T::zero(), grad_weight);
    if let Some(mut gb) = grad_bias {
        check_shape(op, "grad_bias", Expected::Shape(weight.nrows()), gb.len());
        gb.fill(T::zero());
        for row in grad_out.rows() {
            gb.zip_mut_with(&row, |b, &g| *b = *b + g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn into_forms_overwrite_stale_buffers() {
        let x = array![[1.0_f32, -2.0, 0.5], [0.0, 3.0, 1.0]];
        let w = array![[0.5_f32, 1.0, -1.0], [2.0, 0.0, 0.25]];
        let b = array![0.1_f32, -0.2];
        let mut y = Array2::from_elem((2, 2), f32::NAN);
        linear_into(x.view(), w.view(), Some(b.view()), y.view_mut());
        assert_eq!(y, linear(x.view(), w.view(), Some(b.view())));
        let g = array![[1.0_f32, 2.0], [-1.0, 0.5]];
        let (mut gi, mut gw, mut gb) = (
            Array2::from_elem((2, 3), f32::NAN),
            Array2::from_elem((2, 3), f32::NAN),
            Array1::from_elem(2, f32::NAN),
        );
        linear_backward_into(
            x.view(),
            w.view(),
            g.view(),
            Some(gi.view_mut()),
            gw.view_mut(),
            Some(gb.view_mut()),
        );
        let grads = linear_backward(x.view(), w.view(), g.view());
        assert_eq!((gi, gw, gb), (grads.input, grads.weight, grads.bias));
    }

    #[test]
    #[should_panic(expected = "linear: input is [1, 3] but weight is [2, 4]")]
    fn mismatched_weight_panics() {
        linear(
            Array2::<f32>::zeros((1, 3)).view(),
            Array2::zeros((2, 4)).view(),
            None,
        );
    }

    #[test]
    #[should_panic(expected = "linear: bias must be 2, got 3")]
    fn mismatched_bias_panics() {
        let b = Array1::<f32>::zeros(3);
        linear(
            Array2::<f32>::zeros((1, 3)).view(),
            Array2::zeros((2, 3)).view(),
            Some(b.view()),
        );
    }
}
