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
use rayon::prelude::*;
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

    /// Updates every parameter from its gradient. Pieces of each parameter are updated in
    /// parallel: every element's update reads that element alone, so the bits are the same on
    /// any number of threads.
    ///
    /// # Panics
    /// If the parameters do not match the sizes given to [`Sgd::new`].
    pub fn step(&mut self, params: &mut [ParamMut<'_>]) {
        let update = Update {
            config: self.config,
            lr: self.lr,
            first: self.steps == 0,
        };
        if update.config.momentum == 0.0 {
            params.par_iter_mut().for_each(|p| {
                assert_eq!(p.value.len(), p.grad.len(), "Sgd: {} gradient size", p.name);
                let pieces = p.value.par_chunks_mut(PIECE).zip(p.grad.par_chunks(PIECE));
                pieces.for_each(|(v, g)| update.plain(v, g));
            });
        } else {
            assert_eq!(params.len(), self.buffers.len(), "Sgd: parameter count");
            let pairs = params.par_iter_mut().zip(self.buffers.par_iter_mut());
            pairs.for_each(|(p, buf)| {
                assert_eq!(p.value.len(), buf.len(), "Sgd: {} size", p.name);
                assert_eq!(p.grad.len(), buf.len(), "Sgd: {} gradient size", p.name);
                let pieces = p.value.par_chunks_mut(PIECE).zip(p.grad.par_chunks(PIECE));
                let pieces = pieces.zip(buf.par_chunks_mut(PIECE));
                pieces.for_each(|((v, g), b)| update.with_momentum(v, g, b));
            });
        }
        self.steps += 1;
    }
}

/// Elements per piece of a parameter updated on one thread (64 KB of f32).
const PIECE: usize = 1 << 14;

/// What one step applies to every element (the formulas in the module docs).
#[derive(Clone, Copy)]
struct Update {
    config: SgdConfig,
    /// The step's learning rate.
    lr: f32,
    /// True at the first step, which starts the momentum buffers.
    first: bool,
}

impl Update {
    /// Without momentum: `p −= lr · (g + weight_decay · p)`.
    fn plain(self, values: &mut [f32], grads: &[f32]) {
        let (lr, wd) = (self.lr, self.config.weight_decay);
        for (v, &g) in values.iter_mut().zip(grads) {
            let d = g + wd * *v;
            *v -= lr * d;
        }
    }

    /// With momentum, updating the momentum buffer `buf` too.
    fn with_momentum(self, values: &mut [f32], grads: &[f32], buf: &mut [f32]) {
        let SgdConfig {
            momentum,
            weight_decay: wd,
            nesterov,
            ..
        } = self.config;
        for ((v, &g), b) in values.iter_mut().zip(grads).zip(buf) {
            let d = g + wd * *v;
            *b = if self.first { d } else { momentum * *b + d };
            let d = if nesterov { d + momentum * *b } else { *b };
            *v -= self.lr * d;
        }
    }
}
