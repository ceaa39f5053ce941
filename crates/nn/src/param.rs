//! Named views of a model's parameters and their gradients, for optimizers and checkpoints.

use ndarray::{Array, Array1, Dim, Dimension, IntoDimension};

/// One parameter tensor with its gradient, borrowed from a model.
#[derive(Debug)]
pub struct ParamMut<'a> {
    /// The PyTorch state_dict name, e.g. `conv1.weight`.
    pub name: &'static str,
    /// The shape in PyTorch's layout, e.g. `[6, 1, 5, 5]`.
    pub shape: &'a [usize],
    /// The values, row-major.
    pub value: &'a mut [f32],
    /// dL/dvalue from the last backward pass, same layout.
    pub grad: &'a [f32],
}

/// One parameter tensor with its gradient, read-only.
#[derive(Debug, Clone, Copy)]
pub struct ParamRef<'a> {
    /// The PyTorch state_dict name, e.g. `conv1.weight`.
    pub name: &'static str,
    /// The shape in PyTorch's layout.
    pub shape: &'a [usize],
    /// The values, row-major.
    pub value: &'a [f32],
    /// dL/dvalue from the last backward pass, same layout.
    pub grad: &'a [f32],
}

/// A layer's weight and bias with their gradients, in PyTorch's layouts; `N` is the weight's
/// rank (4 for `Conv2d`, 2 for `Linear`). Both layers lend their parameters through it.
#[derive(Debug, Clone)]
pub(crate) struct WeightBias<const N: usize>
where
    Dim<[usize; N]>: Dimension,
{
    pub(crate) weight: Array<f32, Dim<[usize; N]>>,
    pub(crate) bias: Array1<f32>,
    pub(crate) grad_weight: Array<f32, Dim<[usize; N]>>,
    pub(crate) grad_bias: Array1<f32>,
    /// Kept beside the arrays so that `params_mut` can lend a shape and mutable values at once.
    pub(crate) weight_shape: [usize; N],
    bias_shape: [usize; 1],
}

impl<const N: usize> WeightBias<N>
where
    Dim<[usize; N]>: Dimension,
    [usize; N]: IntoDimension<Dim = Dim<[usize; N]>>,
{
    /// Zero weight `weight_shape` and zero bias of `weight_shape[0]` (the output count).
    pub(crate) fn zeros(weight_shape: [usize; N]) -> Self {
        let out = weight_shape[0];
        WeightBias {
            weight: Array::zeros(weight_shape),
            bias: Array1::zeros(out),
            grad_weight: Array::zeros(weight_shape),
            grad_bias: Array1::zeros(out),
            weight_shape,
            bias_shape: [out],
        }
    }

    /// (shape, value, gradient) of the weight and of the bias, for optimizers.
    pub(crate) fn params_mut(&mut self) -> [(&[usize], &mut [f32], &[f32]); 2] {
        [
            (
                &self.weight_shape[..],
                self.weight.as_slice_mut().unwrap(),
                self.grad_weight.as_slice().unwrap(),
            ),
            (
                &self.bias_shape[..],
                self.bias.as_slice_mut().unwrap(),
                self.grad_bias.as_slice().unwrap(),
            ),
        ]
    }

    /// The weight and bias gradients, writable (to add another copy's gradients into them).
    pub(crate) fn grads_mut(&mut self) -> [&mut [f32]; 2] {
        [
            self.grad_weight.as_slice_mut().unwrap(),
            self.grad_bias.as_slice_mut().unwrap(),
        ]
    }

    /// Read-only form of `params_mut`.
    pub(crate) fn params_ref(&self) -> [(&[usize], &[f32], &[f32]); 2] {
        [
            (
                &self.weight_shape[..],
                self.weight.as_slice().unwrap(),
                self.grad_weight.as_slice().unwrap(),
            ),
            (
                &self.bias_shape[..],
                self.bias.as_slice().unwrap(),
                self.grad_bias.as_slice().unwrap(),
            ),
        ]
    }
}
