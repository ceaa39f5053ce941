//! The pooling choice of a model: average or max, behind one type.

use crate::avg_pool::AvgPool2d;
use crate::max_pool::MaxPool2d;
use ndarray::ArrayView4;
use serde::{Deserialize, Serialize};
use tensor::Pool2dParams;

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

/// An average or a max pooling layer.
#[derive(Debug, Clone)]
pub enum Pool2d {
    /// Average pooling.
    Avg(AvgPool2d),
    /// Max pooling.
    Max(MaxPool2d),
}

impl Pool2d {
    /// A pool of the given kind with window and stride `params`.
    pub fn new(kind: PoolKind, params: Pool2dParams) -> Self {
        match kind {
            PoolKind::Avg => Pool2d::Avg(AvgPool2d::new(params)),
            PoolKind::Max => Pool2d::Max(MaxPool2d::new(params)),
        }
    }

    /// Which pooling this is.
    pub fn kind(&self) -> PoolKind {
        match self {
            Pool2d::Avg(_) => PoolKind::Avg,
            Pool2d::Max(_) => PoolKind::Max,
        }
    }

    /// Pools `input`; the layer keeps the output.
    pub fn forward(&mut self, input: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        match self {
            Pool2d::Avg(p) => p.forward(input),
            Pool2d::Max(p) => p.forward(input),
        }
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> ArrayView4<'_, f32> {
        match self {
            Pool2d::Avg(p) => p.output(),
            Pool2d::Max(p) => p.output(),
        }
    }

    /// dL/dinput for `grad_out`; `input` must be the forward input (only max pooling reads it).
    pub fn backward(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_out: ArrayView4<'_, f32>,
    ) -> ArrayView4<'_, f32> {
        match self {
            Pool2d::Avg(p) => p.backward(grad_out),
            Pool2d::Max(p) => p.backward(input, grad_out),
        }
    }

    /// dL/dinput from the last backward pass.
    pub fn grad_input(&self) -> ArrayView4<'_, f32> {
        match self {
            Pool2d::Avg(p) => p.grad_input(),
            Pool2d::Max(p) => p.grad_input(),
        }
    }
}
