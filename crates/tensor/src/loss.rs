//! Numerically stable `log_softmax` over rows, and mean cross-entropy with integer targets,
//! fused so that the loss and its gradient `(softmax − onehot)/N` come from one pass.
//!
//! SKELETON: signatures are final; bodies are filled in by the tensor issue.
#![allow(unused_variables)]

use crate::Scalar;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// `log_softmax` of each row of `input` (`[n, classes]`): `x − max − ln Σ e^(x − max)`.
pub fn log_softmax<T: Scalar>(input: ArrayView2<'_, T>) -> Array2<T> {
    todo!()
}
/// Like [`log_softmax`], writing into `out`.
pub fn log_softmax_into<T: Scalar>(input: ArrayView2<'_, T>, out: ArrayViewMut2<'_, T>) {
    todo!()
}
/// Gradient of [`log_softmax`] from its output `y`: `g − softmax · Σ_row g`, with softmax = e^y.
pub fn log_softmax_backward<T: Scalar>(
    output: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
) -> Array2<T> {
    todo!()
}
/// Like [`log_softmax_backward`], writing into `grad_input`.
pub fn log_softmax_backward_into<T: Scalar>(
    output: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
    grad_input: ArrayViewMut2<'_, T>,
) {
    todo!()
}

/// Mean cross-entropy of `logits` (`[n, classes]`) against integer `targets` (length n):
/// `−(1/n) Σ_i log_softmax(logits)[i, targets[i]]`.
///
/// # Panics
/// If `targets.len() != n` or a target is not below the number of classes.
pub fn cross_entropy<T: Scalar>(logits: ArrayView2<'_, T>, targets: &[usize]) -> T {
    todo!()
}
/// Gradient of [`cross_entropy`] for an upstream gradient `grad_out`:
/// `grad_out · (softmax(logits) − onehot(targets)) / n`.
pub fn cross_entropy_backward<T: Scalar>(
    logits: ArrayView2<'_, T>,
    targets: &[usize],
    grad_out: T,
) -> Array2<T> {
    todo!()
}
/// Like [`cross_entropy_backward`], writing into `grad_logits`.
pub fn cross_entropy_backward_into<T: Scalar>(
    logits: ArrayView2<'_, T>,
    targets: &[usize],
    grad_out: T,
    grad_logits: ArrayViewMut2<'_, T>,
) {
    todo!()
}
/// Fused forward and backward for training: returns the mean loss and writes its gradient
/// (for an upstream gradient of 1) into `grad_logits`, from a single softmax pass.
pub fn softmax_cross_entropy_into<T: Scalar>(
    logits: ArrayView2<'_, T>,
    targets: &[usize],
    grad_logits: ArrayViewMut2<'_, T>,
) -> T {
    todo!()
}
