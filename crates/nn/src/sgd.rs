//! Stochastic gradient descent with momentum, weight decay and optional Nesterov, with
//! PyTorch's exact update (`torch.optim.SGD`, dampening 0), per parameter p with gradient g:
//!
//! ```text
//! d = g + weight_decay · p
//! buf = d                      at the first step
//! buf = momentum · buf + d     afterwards
//! d = d + momentum · buf       with Nesterov, else d = buf
//! p = p − lr · d
//! ```
//!
//! Weight decay applies to every parameter, biases included (PyTorch's default with one
//! parameter group). The momentum buffers are allocated once, when the optimizer is made.

use crate::param::ParamMut;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`Sgd`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Learning rate (the schedule may change it through [`Sgd::set_lr`]).
    pub lr: f32,
    /// Momentum factor μ (0 disables momentum).
    pub momentum: f32,
    /// L2 penalty added to the gradient: `g + weight_decay · p`.
    pub weight_decay: f32,
    /// Nesterov momentum (needs momentum > 0).
    pub nesterov: bool,
}

impl SgdConfig {
    /// Checks the values, returning a message naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        // The rate of a step, which a schedule takes down to 0; a run's base rate has its own
        // range (`check_lr`).
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(format!("lr must be a finite number ≥ 0, got {}", self.lr));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "weight decay must be a finite number ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if self.nesterov && self.momentum <= 0.0 {
            return Err("Nesterov momentum needs momentum > 0".to_string());
        }
        Ok(())
    }
}

/// The optimizer: its hyper-parameters, the current learning rate and one momentum buffer per
/// parameter.
#[derive(Debug, Clone)]
pub struct Sgd {
    config: SgdConfig,
    lr: f32,
    buffers: Vec<Vec<f32>>,
    steps: u64,
}

impl Sgd {
    /// An optimizer for parameters with the given element counts (in the order
    /// [`Sgd::step`] will receive them). Momentum buffers are allocated here.
    pub fn new(config: SgdConfig, param_sizes: impl IntoIterator<Item = usize>) -> Self {
        let buffers = if config.momentum != 0.0 {
            param_sizes.into_iter().map(|n| vec![0.0; n]).collect()
        } else {
            Vec::new()
        };
        Sgd {
            config,
            lr: config.lr,
            buffers,
            steps: 0,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> SgdConfig {
        self.config
    }

    /// The learning rate the next step uses.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Sets the learning rate for the next steps (what a scheduler does).
    pub fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    /// Number of steps taken so far (0 means the momentum buffers are not yet initialised).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The momentum buffers, one per parameter (empty without momentum).
    pub fn momentum_buffers(&self) -> &[Vec<f32>] {
        &self.buffers
    }

    /// Restores the state saved from [`Sgd::steps`] and [`Sgd::momentum_buffers`].
    ///
    /// # Panics
    /// If the buffer count or sizes differ from this optimizer's.
    pub fn restore_state(&mut self, steps: u64, buffers: &[Vec<f32>]) {
        assert_eq!(buffers.len(), self.buffers.len(), "Sgd: buffer count");
        for (dst, src) in self.buffers.iter_mut().zip(buffers) {
            assert_eq!(dst.len(), src.len(), "Sgd: buffer size");
            dst.copy_from_slice(src);
        }
        self.steps = steps;
    }

    /// Updates every parameter from its gradient.
    ///
    /// # Panics
    /// If the parameters do not match the sizes given to [`Sgd::new`].
    pub fn step(&mut self, params: &mut [ParamMut<'_>]) {
        let SgdConfig {
            momentum,
            weight_decay: wd,
            nesterov,
            ..
        } = self.config;
        let lr = self.lr;
        let first = self.steps == 0;
        if momentum == 0.0 {
            for p in params.iter_mut() {
                assert_eq!(p.value.len(), p.grad.len(), "Sgd: {} gradient size", p.name);
                for (v, &g) in p.value.iter_mut().zip(p.grad.iter()) {
                    let d = g + wd * *v;
                    *v -= lr * d;
                }
            }
        } else {
            assert_eq!(params.len(), self.buffers.len(), "Sgd: parameter count");
            for (p, buf) in params.iter_mut().zip(self.buffers.iter_mut()) {
                assert_eq!(p.value.len(), buf.len(), "Sgd: {} size", p.name);
                assert_eq!(p.grad.len(), buf.len(), "Sgd: {} gradient size", p.name);
                for ((v, &g), b) in p.value.iter_mut().zip(p.grad.iter()).zip(buf.iter_mut()) {
                    let d = g + wd * *v;
                    *b = if first { d } else { momentum * *b + d };
                    let d = if nesterov { d + momentum * *b } else { *b };
                    *v -= lr * d;
                }
            }
        }
        self.steps += 1;
    }
}
