//! 2-D convolution (cross-correlation, as in PyTorch) through im2col + matmul, NCHW layout.
//!
//! SKELETON: signatures are final; bodies are filled in by the tensor issue.
#![allow(unused_variables, dead_code)]

use crate::Scalar;
use ndarray::{Array1, Array4, ArrayView1, ArrayView4, ArrayViewMut1, ArrayViewMut4};

/// Stride and zero padding of a convolution, each as (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between neighbouring output positions, (sh, sw). Both must be ≥ 1.
    pub stride: (usize, usize),
    /// Zeros added on each side of the input, (ph, pw).
    pub padding: (usize, usize),
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
        }
    }
}

impl Conv2dParams {
    /// Output spatial size for an input of `(h, w)` and a kernel of `(kh, kw)`:
    /// `floor((h + 2p - kh) / s) + 1`, or `None` if the kernel does not fit or a stride is 0.
    pub fn output_size(
        &self,
        input: (usize, usize),
        kernel: (usize, usize),
    ) -> Option<(usize, usize)> {
        todo!()
    }
}

/// Scratch memory for im2col/col2im, grown on first use and reused afterwards.
#[derive(Debug, Default, Clone)]
pub struct Conv2dWorkspace<T> {
    cols: Vec<T>,
}

impl<T: Scalar> Conv2dWorkspace<T> {
    /// An empty workspace; it grows to the size the first call needs.
    pub fn new() -> Self {
        Conv2dWorkspace { cols: Vec::new() }
    }
}

/// The three gradients of a convolution.
#[derive(Debug, Clone)]
pub struct Conv2dGrads<T> {
    /// dL/dinput, `[n, c, h, w]`.
    pub input: Array4<T>,
    /// dL/dweight, `[k, c, kh, kw]`.
    pub weight: Array4<T>,
    /// dL/dbias, `[k]`.
    pub bias: Array1<T>,
}

/// `y[n,k,i,j] = b[k] + Σ_{c,u,v} x[n,c,i·sh+u−ph, j·sw+v−pw] · w[k,c,u,v]`.
pub fn conv2d<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
) -> Array4<T> {
    todo!()
}

/// Like [`conv2d`], writing into `out` (`[n, k, oh, ow]`), with scratch from `ws`.
pub fn conv2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
    out: ArrayViewMut4<'_, T>,
    ws: &mut Conv2dWorkspace<T>,
) {
    todo!()
}

/// Gradients of [`conv2d`] for the upstream gradient `grad_out` (`[n, k, oh, ow]`).
pub fn conv2d_backward<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Conv2dParams,
) -> Conv2dGrads<T> {
    todo!()
}

/// Like [`conv2d_backward`], overwriting caller-owned buffers. `grad_input` and `grad_bias` are
/// optional: the first layer of a network needs no input gradient.
pub fn conv2d_backward_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Conv2dParams,
    grad_input: Option<ArrayViewMut4<'_, T>>,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
    ws: &mut Conv2dWorkspace<T>,
) {
    todo!()
}
