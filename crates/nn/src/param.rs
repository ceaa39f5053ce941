//! Named views of a model's parameters and their gradients, for optimizers and checkpoints.

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
