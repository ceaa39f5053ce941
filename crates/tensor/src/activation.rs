//! Element-wise activations (ReLU, tanh, sigmoid) on arrays of any dimension.
//!
//! Each backward pass is written in terms of the forward *output* `y`, so a layer only has to
//! keep its output: relu' = [y > 0], tanh' = 1 − y², sigmoid' = y·(1 − y).
//!
//! SKELETON: signatures are final; bodies are filled in by the tensor issue.
#![allow(unused_variables)]

use crate::Scalar;
use ndarray::{Array, ArrayView, ArrayViewMut, Dimension};

/// `max(x, 0)` element-wise.
pub fn relu<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>) -> Array<T, D> {
    todo!()
}
/// Like [`relu`], writing into `out` (same shape).
pub fn relu_into<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>, out: ArrayViewMut<'_, T, D>) {
    todo!()
}
/// `grad_out · [y > 0]`, from the forward output `y`.
pub fn relu_backward<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
) -> Array<T, D> {
    todo!()
}
/// Like [`relu_backward`], writing into `grad_input`.
pub fn relu_backward_into<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
    grad_input: ArrayViewMut<'_, T, D>,
) {
    todo!()
}

/// `tanh(x)` element-wise.
pub fn tanh<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>) -> Array<T, D> {
    todo!()
}
/// Like [`tanh`], writing into `out`.
pub fn tanh_into<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>, out: ArrayViewMut<'_, T, D>) {
    todo!()
}
/// `grad_out · (1 − y²)`, from the forward output `y`.
pub fn tanh_backward<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
) -> Array<T, D> {
    todo!()
}
/// Like [`tanh_backward`], writing into `grad_input`.
pub fn tanh_backward_into<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
    grad_input: ArrayViewMut<'_, T, D>,
) {
    todo!()
}

/// `1 / (1 + e^−x)` element-wise, stable for large |x|.
pub fn sigmoid<T: Scalar, D: Dimension>(input: ArrayView<'_, T, D>) -> Array<T, D> {
    todo!()
}
/// Like [`sigmoid`], writing into `out`.
pub fn sigmoid_into<T: Scalar, D: Dimension>(
    input: ArrayView<'_, T, D>,
    out: ArrayViewMut<'_, T, D>,
) {
    todo!()
}
/// `grad_out · y · (1 − y)`, from the forward output `y`.
pub fn sigmoid_backward<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
) -> Array<T, D> {
    todo!()
}
/// Like [`sigmoid_backward`], writing into `grad_input`.
pub fn sigmoid_backward_into<T: Scalar, D: Dimension>(
    output: ArrayView<'_, T, D>,
    grad_out: ArrayView<'_, T, D>,
    grad_input: ArrayViewMut<'_, T, D>,
) {
    todo!()
}
