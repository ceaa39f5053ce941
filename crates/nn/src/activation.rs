//! Element-wise activation layers (ReLU, tanh, sigmoid) for any number of dimensions.
//!
//! The backward pass needs only the layer's own output (relu' = 1 if y > 0 else 0, tanh' = 1 − y²,
//! sigmoid' = y(1 − y)), so the layer keeps its output and nothing else.

use crate::buffer::Buffer;
use ndarray::{ArrayView, ArrayViewMut, Dimension};
use serde::{Deserialize, Serialize};

/// Which non-linearity an [`Activation`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActivationKind {
    /// `max(x, 0)`.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^−x)`.
    Sigmoid,
}

impl ActivationKind {
    /// The lowercase name (`relu`, `tanh`, `sigmoid`).
    pub fn name(self) -> &'static str {
        match self {
            ActivationKind::Relu => "relu",
            ActivationKind::Tanh => "tanh",
            ActivationKind::Sigmoid => "sigmoid",
        }
    }

    /// The `tensor` op.
    pub(crate) fn op(self) -> tensor::Activation {
        match self {
            ActivationKind::Relu => tensor::Activation::Relu,
            ActivationKind::Tanh => tensor::Activation::Tanh,
            ActivationKind::Sigmoid => tensor::Activation::Sigmoid,
        }
    }

    /// `out = f(input)` for arrays of one shape.
    pub(crate) fn apply<D: Dimension>(
        self,
        input: ArrayView<'_, f32, D>,
        out: ArrayViewMut<'_, f32, D>,
    ) {
        self.op().forward_into(input, out);
    }

    /// dL/dinput from the activation's `output` and the upstream gradient `grad_out`.
    pub(crate) fn backward<D: Dimension>(
        self,
        output: ArrayView<'_, f32, D>,
        grad_out: ArrayView<'_, f32, D>,
        grad_input: ArrayViewMut<'_, f32, D>,
    ) {
        self.op().backward_into(output, grad_out, grad_input);
    }
}

impl std::str::FromStr for ActivationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "relu" => Ok(ActivationKind::Relu),
            "tanh" => Ok(ActivationKind::Tanh),
            "sigmoid" => Ok(ActivationKind::Sigmoid),
            _ => Err(format!(
                "unknown activation {s:?}: expected relu, tanh or sigmoid"
            )),
        }
    }
}

impl std::fmt::Display for ActivationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An activation layer with its output and input-gradient buffers (`D`: the array dimension,
/// `Ix4` after a convolution, `Ix2` after a linear layer).
#[derive(Debug, Clone)]
pub struct Activation<D: Dimension> {
    kind: ActivationKind,
    pub(crate) output: Buffer<D>,
    pub(crate) grad_input: Buffer<D>,
}

impl<D: Dimension> Activation<D> {
    /// A layer applying `kind`.
    pub fn new(kind: ActivationKind) -> Self {
        Activation {
            kind,
            output: Buffer::new(),
            grad_input: Buffer::new(),
        }
    }

    /// The non-linearity.
    pub fn kind(&self) -> ActivationKind {
        self.kind
    }

    /// Applies the activation to `input`; the layer keeps the output.
    pub fn forward(&mut self, input: ArrayView<'_, f32, D>) -> ArrayView<'_, f32, D> {
        self.output.set_dim(input.raw_dim());
        self.kind.apply(input, self.output.view_mut());
        self.output.view()
    }

    /// The output buffer, shaped `dim`, for a fused kernel that computes this layer's output
    /// itself (the ReLU of `Conv2d::forward_relu_avg_pool`).
    pub(crate) fn output_mut(&mut self, dim: D) -> ArrayViewMut<'_, f32, D> {
        self.output.set_dim(dim);
        self.output.view_mut()
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> ArrayView<'_, f32, D> {
        self.output.view()
    }

    /// dL/dinput for upstream gradient `grad_out` (shaped like the output), from the kept output.
    ///
    /// # Panics
    /// If `grad_out` is not shaped like the last output.
    pub fn backward(&mut self, grad_out: ArrayView<'_, f32, D>) -> ArrayView<'_, f32, D> {
        self.grad_input.set_dim(self.output.dim());
        let g = self.grad_input.view_mut();
        self.kind.backward(self.output.view(), grad_out, g);
        self.grad_input.view()
    }

    /// dL/dinput from the last backward pass.
    pub fn grad_input(&self) -> ArrayView<'_, f32, D> {
        self.grad_input.view()
    }
}
