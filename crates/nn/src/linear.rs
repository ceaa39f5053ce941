//! Linear (fully connected) layer: `y = x·Wᵀ + b` with `W` as `[out, in]` (PyTorch's layout).
//! Owns its parameters, their gradients and its output / input-gradient buffers.

use crate::buffer::Buffer;
use crate::init::uniform_fan_in;
use crate::param::WeightBias;
use ndarray::{ArrayView1, ArrayView2, Ix2};
use rand::Rng;
use tensor::{linear_backward_into, linear_into};

/// A fully connected layer with bias.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) wb: WeightBias<2>,
    pub(crate) output: Buffer<Ix2>,
    pub(crate) grad_input: Buffer<Ix2>,
}

impl Linear {
    /// A layer with PyTorch's default initialisation drawn from `rng` (weight first, then bias):
    /// both U(−1/√in, 1/√in).
    pub fn new<R: Rng + ?Sized>(in_features: usize, out_features: usize, rng: &mut R) -> Self {
        let mut layer = Self::zeros(in_features, out_features);
        uniform_fan_in(layer.wb.weight.as_slice_mut().unwrap(), in_features, rng);
        uniform_fan_in(layer.wb.bias.as_slice_mut().unwrap(), in_features, rng);
        layer
    }

    /// A layer whose weight and bias are all zero (to be loaded from a checkpoint).
    pub fn zeros(in_features: usize, out_features: usize) -> Self {
        Linear {
            wb: WeightBias::zeros([out_features, in_features]),
            output: Buffer::new(),
            grad_input: Buffer::new(),
        }
    }

    /// The weight, `[out, in]`.
    pub fn weight(&self) -> ArrayView2<'_, f32> {
        self.wb.weight.view()
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> ArrayView1<'_, f32> {
        self.wb.bias.view()
    }

    /// dL/dweight from the last [`Linear::backward`].
    pub fn grad_weight(&self) -> ArrayView2<'_, f32> {
        self.wb.grad_weight.view()
    }

    /// dL/dbias from the last [`Linear::backward`].
    pub fn grad_bias(&self) -> ArrayView1<'_, f32> {
        self.wb.grad_bias.view()
    }

    /// `x·Wᵀ + b` for `input` `[n, in]`; the layer keeps the output.
    ///
    /// # Panics
    /// If the input does not have `in` features.
    pub fn forward(&mut self, input: ArrayView2<'_, f32>) -> ArrayView2<'_, f32> {
        let (n, f) = input.dim();
        let [out, fin] = self.wb.weight_shape;
        assert_eq!(
            f, fin,
            "Linear: input has {f} features, the layer expects {fin}"
        );
        self.output.set_dim(Ix2(n, out));
        linear_into(
            input,
            self.wb.weight.view(),
            Some(self.wb.bias.view()),
            self.output.view_mut(),
        );
        self.output.view()
    }

    /// The output of the last forward pass, `[n, out]`.
    pub fn output(&self) -> ArrayView2<'_, f32> {
        self.output.view()
    }

    /// Overwrites the parameter gradients for upstream gradient `grad_out` (`[n, out]`); `input`
    /// must be the forward input. With `grad_input`, also computes dL/dinput.
    ///
    /// # Panics
    /// If the shapes do not match.
    pub fn backward(
        &mut self,
        input: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
        grad_input: bool,
    ) {
        let grad_input_view = if grad_input {
            self.grad_input.set_dim(input.raw_dim());
            Some(self.grad_input.view_mut())
        } else {
            None
        };
        linear_backward_into(
            input,
            self.wb.weight.view(),
            grad_out,
            grad_input_view,
            self.wb.grad_weight.view_mut(),
            Some(self.wb.grad_bias.view_mut()),
        );
    }

    /// dL/dinput from the last [`Linear::backward`] that asked for it, `[n, in]`.
    pub fn grad_input(&self) -> ArrayView2<'_, f32> {
        self.grad_input.view()
    }

    /// (shape, value, gradient) of the weight and of the bias, for optimizers.
    pub(crate) fn params_mut(&mut self) -> [(&[usize], &mut [f32], &[f32]); 2] {
        self.wb.params_mut()
    }

    /// The weight and bias gradients, writable.
    pub(crate) fn grads_mut(&mut self) -> [&mut [f32]; 2] {
        self.wb.grads_mut()
    }

    /// Read-only form of `params_mut`.
    pub(crate) fn params_ref(&self) -> [(&[usize], &[f32], &[f32]); 2] {
        self.wb.params_ref()
    }
}
