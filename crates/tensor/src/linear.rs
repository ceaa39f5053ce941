//! Fully connected layer: `y = x·Wᵀ + b`, with `W` as `[out, in]` (PyTorch's layout).
//!
//! SKELETON: signatures are final; bodies are filled in by the tensor issue.
#![allow(unused_variables)]

use crate::Scalar;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// The three gradients of a linear layer.
#[derive(Debug, Clone)]
pub struct LinearGrads<T> {
    /// dL/dx, `[n, in]`.
    pub input: Array2<T>,
    /// dL/dW, `[out, in]`.
    pub weight: Array2<T>,
    /// dL/db, `[out]`.
    pub bias: Array1<T>,
}

/// `y = x·Wᵀ + b` for `x` `[n, in]`, `W` `[out, in]`, `b` `[out]`.
pub fn linear<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
) -> Array2<T> {
    todo!()
}

/// Like [`linear`], writing into `out` (`[n, out]`).
pub fn linear_into<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    out: ArrayViewMut2<'_, T>,
) {
    todo!()
}

/// Gradients of [`linear`] for the upstream gradient `grad_out` (`[n, out]`).
pub fn linear_backward<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
) -> LinearGrads<T> {
    todo!()
}

/// Like [`linear_backward`], overwriting caller-owned buffers; `grad_input` and `grad_bias` are
/// optional.
pub fn linear_backward_into<T: Scalar>(
    input: ArrayView2<'_, T>,
    weight: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
    grad_input: Option<ArrayViewMut2<'_, T>>,
    grad_weight: ArrayViewMut2<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
) {
    todo!()
}
