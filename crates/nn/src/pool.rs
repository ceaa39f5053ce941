//! The pooling layer: average or max (no padding, floor mode), one type for both.
//!
//! Each operation of [`Pool2d`] picks its `tensor` kernel by [`PoolKind`] in one `match`, so a
//! new kernel (such as one fused with the layers around the pool) is added as one more arm or
//! method here, and every model using the layer gets it.
//!
//! Average pooling's backward needs only the input's shape; max pooling's re-finds each
//! window's first maximum in the forward input, which the caller passes again (the layer does
//! not store argmax indices).

use crate::buffer::Buffer;
use ndarray::{ArrayView4, ArrayViewMut4, Dimension, Ix4};
use serde::{Deserialize, Serialize};
use tensor::{
    avg_pool2d_backward_into, avg_pool2d_into, max_pool2d_backward_into, max_pool2d_into,
    Activation, Pool2dParams,
};

/// Which pooling a [`Pool2d`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// Mean over the window (LeNet-5's subsampling).
    #[default]
    Avg,
    /// Maximum over the window.
    Max,
}

impl PoolKind {
    /// The lowercase name (`avg`, `max`).
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Avg => "avg",
            PoolKind::Max => "max",
        }
    }
}

impl std::str::FromStr for PoolKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "avg" | "average" => Ok(PoolKind::Avg),
            "max" => Ok(PoolKind::Max),
            _ => Err(format!("unknown pooling {s:?}: expected avg or max")),
        }
    }
}

impl std::fmt::Display for PoolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A 2-D pooling layer over NCHW input, average or max, with its output and input-gradient
/// buffers.
#[derive(Debug, Clone)]
pub struct Pool2d {
    kind: PoolKind,
    params: Pool2dParams,
    output: Buffer<Ix4>,
    grad_input: Buffer<Ix4>,
    /// The shape of the last forward input (average pooling's backward needs nothing else).
    input_dim: Ix4,
}

impl Pool2d {
    /// A pool of the given kind with window and stride `params`.
    pub fn new(kind: PoolKind, params: Pool2dParams) -> Self {
        Pool2d {
            kind,
            params,
            output: Buffer::new(),
            grad_input: Buffer::new(),
            input_dim: Ix4(0, 0, 0, 0),
        }
    }

    /// Which pooling this is.
    pub fn kind(&self) -> PoolKind {
        self.kind
    }

    /// Window and stride.
    pub fn params(&self) -> Pool2dParams {
        self.params
    }

    /// Pools `input`; the layer keeps the output and remembers the input's shape.
    ///
    /// # Panics
    /// If the window does not fit the input.
    pub fn forward(&mut self, input: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        let (kind, params) = (self.kind, self.params);
        let out = self.output_mut(input.raw_dim());
        match kind {
            PoolKind::Avg => avg_pool2d_into(input, params, out),
            PoolKind::Max => max_pool2d_into(input, params, out),
        }
        self.output.view()
    }

    /// Remembers `input_dim` as the forward input's shape and returns the output buffer, shaped
    /// for it: for [`Pool2d::forward`], and for a fused kernel that pools inside the layer
    /// before (`Conv2d::forward_relu_avg_pool`).
    ///
    /// # Panics
    /// If the window does not fit the input.
    pub(crate) fn output_mut(&mut self, input_dim: Ix4) -> ArrayViewMut4<'_, f32> {
        let (n, c, h, w) = input_dim.into_pattern();
        let (oh, ow) = self.params.output_size((h, w)).unwrap_or_else(|| {
            panic!(
                "pool window {:?} stride {:?} does not fit input {h}x{w}",
                self.params.kernel, self.params.stride
            )
        });
        self.input_dim = input_dim;
        self.output.set_dim(Ix4(n, c, oh, ow));
        self.output.view_mut()
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> ArrayView4<'_, f32> {
        self.output.view()
    }

    /// dL/dinput for upstream gradient `grad_out`; `input` must be the forward input (only max
    /// pooling reads it).
    ///
    /// # Panics
    /// If the shapes do not match the last forward pass.
    pub fn backward(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_out: ArrayView4<'_, f32>,
    ) -> ArrayView4<'_, f32> {
        match self.kind {
            PoolKind::Avg => {
                self.grad_input.set_dim(self.input_dim);
                avg_pool2d_backward_into(grad_out, self.params, self.grad_input.view_mut());
            }
            PoolKind::Max => {
                self.grad_input.set_dim(input.raw_dim());
                let gi = self.grad_input.view_mut();
                max_pool2d_backward_into(input, grad_out, self.params, gi);
            }
        }
        self.grad_input.view()
    }

    /// Backward through this pool and the ReLU before it: dL/d(ReLU input) for upstream
    /// gradient `grad_out`, where `relu_output` is the ReLU's output (this pool's last forward
    /// input). Bit-identical to [`Pool2d::backward`] then the ReLU's backward; the result is
    /// also what [`Pool2d::grad_input`] returns afterwards: the pool's gradient, masked in
    /// place.
    ///
    /// # Panics
    /// If `relu_output` or `grad_out` do not have the last forward pass's shapes.
    pub fn backward_relu(
        &mut self,
        relu_output: ArrayView4<'_, f32>,
        grad_out: ArrayView4<'_, f32>,
    ) -> ArrayView4<'_, f32> {
        self.backward(relu_output, grad_out);
        Activation::Relu.backward_inplace(relu_output, self.grad_input.view_mut());
        self.grad_input.view()
    }

    /// dL/dinput from the last backward pass.
    pub fn grad_input(&self) -> ArrayView4<'_, f32> {
        self.grad_input.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn backward_relu_equals_backward_then_relu_for_both_kinds() {
        let x = Array4::from_shape_fn((2, 3, 6, 6), |(n, c, i, j)| {
            ((n * 31 + c * 17 + i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0
        });
        let y = Activation::Relu.forward(x.view());
        let g = Array4::from_shape_fn((2, 3, 3, 3), |(n, c, i, j)| {
            ((n + 2 * c + 3 * i + 5 * j) % 7) as f32 - 3.0
        });
        for kind in [PoolKind::Avg, PoolKind::Max] {
            let mut pool = Pool2d::new(kind, Pool2dParams::square(2));
            pool.forward(y.view());
            let two_steps = Activation::Relu.backward(y.view(), pool.backward(y.view(), g.view()));
            let fused = pool.backward_relu(y.view(), g.view()).to_owned();
            assert_eq!(fused, two_steps, "{kind}");
            assert_eq!(pool.grad_input(), two_steps, "{kind}");
        }
    }
}
