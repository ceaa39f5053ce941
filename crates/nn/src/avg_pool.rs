//! Average pooling layer (no padding, floor mode). Backward needs only the input shape.

use crate::buffer::Buffer;
use ndarray::{ArrayView4, Ix4};
use tensor::{
    avg_pool2d_backward_into, avg_pool2d_into, avg_pool2d_relu_backward_into, Pool2dParams,
};

/// 2-D average pooling over NCHW input, with its output and input-gradient buffers.
#[derive(Debug, Clone)]
pub struct AvgPool2d {
    params: Pool2dParams,
    output: Buffer<Ix4>,
    grad_input: Buffer<Ix4>,
    input_dim: Ix4,
}

impl AvgPool2d {
    /// A pool with window and stride `params`.
    pub fn new(params: Pool2dParams) -> Self {
        AvgPool2d {
            params,
            output: Buffer::new(),
            grad_input: Buffer::new(),
            input_dim: Ix4(0, 0, 0, 0),
        }
    }

    /// Window and stride.
    pub fn params(&self) -> Pool2dParams {
        self.params
    }

    /// Pools `input`; the layer keeps the output and remembers the input shape.
    ///
    /// # Panics
    /// If the window does not fit the input.
    pub fn forward(&mut self, input: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        let (n, c, h, w) = input.dim();
        let (oh, ow) = pooled_size(self.params, h, w);
        self.input_dim = input.raw_dim();
        self.output.set_dim(Ix4(n, c, oh, ow));
        avg_pool2d_into(input, self.params, self.output.view_mut());
        self.output.view()
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> ArrayView4<'_, f32> {
        self.output.view()
    }

    /// dL/dinput for upstream gradient `grad_out`, shaped like the last forward input.
    pub fn backward(&mut self, grad_out: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        self.grad_input.set_dim(self.input_dim);
        avg_pool2d_backward_into(grad_out, self.params, self.grad_input.view_mut());
        self.grad_input.view()
    }

    /// Backward through this pool and the ReLU before it in one pass: dL/d(ReLU input) for
    /// upstream gradient `grad_out`, where `relu_output` is the ReLU's output (this pool's last
    /// forward input). Bit-identical to [`AvgPool2d::backward`] then the ReLU's backward; the
    /// result is also what [`AvgPool2d::grad_input`] returns afterwards.
    ///
    /// # Panics
    /// If `relu_output` or `grad_out` do not have the last forward pass's shapes.
    pub fn backward_relu(
        &mut self,
        relu_output: ArrayView4<'_, f32>,
        grad_out: ArrayView4<'_, f32>,
    ) -> ArrayView4<'_, f32> {
        self.grad_input.set_dim(self.input_dim);
        avg_pool2d_relu_backward_into(
            grad_out,
            self.params,
            relu_output,
            self.grad_input.view_mut(),
        );
        self.grad_input.view()
    }

    /// dL/dinput from the last backward pass.
    pub fn grad_input(&self) -> ArrayView4<'_, f32> {
        self.grad_input.view()
    }
}

/// Output size of a pool, panicking with a clear message if the window does not fit.
pub(crate) fn pooled_size(params: Pool2dParams, h: usize, w: usize) -> (usize, usize) {
    params.output_size((h, w)).unwrap_or_else(|| {
        panic!(
            "pool window {:?} stride {:?} does not fit input {h}x{w}",
            params.kernel, params.stride
        )
    })
}
