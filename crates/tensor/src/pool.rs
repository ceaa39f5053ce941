//! Average and max pooling over NCHW tensors: no padding, floor mode.
//!
//! SKELETON: signatures are final; bodies are filled in by the tensor issue.
#![allow(unused_variables)]

use crate::Scalar;
use ndarray::{Array4, ArrayView4, ArrayViewMut4};

/// Window size and stride of a pooling op, each as (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window size (kh, kw), both ≥ 1.
    pub kernel: (usize, usize),
    /// Step between windows (sh, sw), both ≥ 1.
    pub stride: (usize, usize),
}

impl Pool2dParams {
    /// A square `k`×`k` window moved by `k`: the usual non-overlapping pool.
    pub fn square(k: usize) -> Self {
        Pool2dParams {
            kernel: (k, k),
            stride: (k, k),
        }
    }

    /// Output size `floor((h - kh) / sh) + 1`, or `None` if the window does not fit.
    pub fn output_size(&self, input: (usize, usize)) -> Option<(usize, usize)> {
        todo!()
    }
}

/// Mean over each window (divided by kh·kw).
pub fn avg_pool2d<T: Scalar>(input: ArrayView4<'_, T>, params: Pool2dParams) -> Array4<T> {
    todo!()
}

/// Like [`avg_pool2d`], writing into `out`.
pub fn avg_pool2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    params: Pool2dParams,
    out: ArrayViewMut4<'_, T>,
) {
    todo!()
}

/// Gradient of [`avg_pool2d`]: each window's upstream gradient, divided by kh·kw, spread over
/// the window (summed where windows overlap). `input_dim` is the forward input's shape.
pub fn avg_pool2d_backward<T: Scalar>(
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
    input_dim: (usize, usize, usize, usize),
) -> Array4<T> {
    todo!()
}

/// Like [`avg_pool2d_backward`], overwriting `grad_input` (whose shape is the forward input's).
pub fn avg_pool2d_backward_into<T: Scalar>(
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
    grad_input: ArrayViewMut4<'_, T>,
) {
    todo!()
}

/// Maximum over each window.
pub fn max_pool2d<T: Scalar>(input: ArrayView4<'_, T>, params: Pool2dParams) -> Array4<T> {
    todo!()
}

/// Like [`max_pool2d`], writing into `out`.
pub fn max_pool2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    params: Pool2dParams,
    out: ArrayViewMut4<'_, T>,
) {
    todo!()
}

/// Gradient of [`max_pool2d`]: each window's upstream gradient goes to the window's first
/// maximum (row-major order), as in PyTorch. The argmax is recomputed from `input`.
pub fn max_pool2d_backward<T: Scalar>(
    input: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
) -> Array4<T> {
    todo!()
}

/// Like [`max_pool2d_backward`], overwriting `grad_input`.
pub fn max_pool2d_backward_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
    grad_input: ArrayViewMut4<'_, T>,
) {
    todo!()
}
