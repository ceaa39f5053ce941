//! Max pooling layer (no padding, floor mode). Backward re-finds each window's first maximum
//! in the forward input, so the caller passes that input again instead of the layer storing
//! argmax indices.

use crate::avg_pool::pooled_size;
use crate::buffer::Buffer;
use ndarray::{ArrayView4, Ix4};
use tensor::{max_pool2d_backward_into, max_pool2d_into, Pool2dParams};

/// 2-D max pooling over NCHW input, with its output and input-gradient buffers.
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    params: Pool2dParams,
    output: Buffer<Ix4>,
    grad_input: Buffer<Ix4>,
}

impl MaxPool2d {
    /// A pool with window and stride `params`.
    pub fn new(params: Pool2dParams) -> Self {
        MaxPool2d {
            params,
            output: Buffer::new(),
            grad_input: Buffer::new(),
        }
    }

    /// Window and stride.
    pub fn params(&self) -> Pool2dParams {
        self.params
    }

    /// Pools `input`; the layer keeps the output.
    ///
    /// # Panics
    /// If the window does not fit the input.
    pub fn forward(&mut self, input: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        let (n, c, h, w) = input.dim();
        let (oh, ow) = pooled_size(self.params, h, w);
        self.output.set_dim(Ix4(n, c, oh, ow));
        max_pool2d_into(input, self.params, self.output.view_mut());
        self.output.view()
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> ArrayView4<'_, f32> {
        self.output.view()
    }

    /// dL/dinput for upstream gradient `grad_out`; `input` must be the forward input.
    pub fn backward(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_out: ArrayView4<'_, f32>,
    ) -> ArrayView4<'_, f32> {
        self.grad_input.set_dim(input.raw_dim());
        max_pool2d_backward_into(input, grad_out, self.params, self.grad_input.view_mut());
        self.grad_input.view()
    }

    /// dL/dinput from the last backward pass.
    pub fn grad_input(&self) -> ArrayView4<'_, f32> {
        self.grad_input.view()
    }
}
