//! Learning-rate schedules. The rate is recomputed before every batch from the epoch and the
//! batch index, so a resumed run gets exactly the rates an uninterrupted one would.

use serde::{Deserialize, Serialize};

/// How the learning rate changes during training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs (PyTorch's `StepLR`, stepped per epoch).
    Step {
        /// Epochs between decays (≥ 1).
        every_epochs: usize,
        /// Factor applied at each decay.
        gamma: f64,
    },
    /// Cosine annealing from the base rate down to `min_lr` over all the training steps,
    /// updated per batch: `lr = min + (base − min)·(1 + cos(π·t/T))/2`, with t the global batch
    /// index (from 0) and T the number of batches in all epochs.
    Cosine {
        /// The rate approached at the end of the last epoch.
        min_lr: f64,
    },
}

impl Default for LrSchedule {
    /// Cosine annealing to 0.
    fn default() -> Self {
        LrSchedule::Cosine { min_lr: 0.0 }
    }
}

impl LrSchedule {
    /// The rate for batch `batch` (from 0) of epoch `epoch` (from 0), with `batches_per_epoch`
    /// batches per epoch and `epochs` epochs in total.
    pub fn lr(
        &self,
        base_lr: f64,
        epoch: usize,
        batch: usize,
        batches_per_epoch: usize,
        epochs: usize,
    ) -> f64 {
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step {
                every_epochs,
                gamma,
            } => {
                // Saturates: any gamma^i32::MAX is already 0, 1 or infinite.
                let decays = i32::try_from(epoch / every_epochs.max(1)).unwrap_or(i32::MAX);
                base_lr * gamma.powi(decays)
            }
            LrSchedule::Cosine { min_lr } => {
                // In f64, which cannot overflow for any epoch count (and is exact below 2^53,
                // where the products of usize were).
                let per_epoch = batches_per_epoch as f64;
                let total = (per_epoch * epochs as f64).max(1.0);
                let t = epoch as f64 * per_epoch + batch as f64;
                let progress = (t / total).min(1.0);
                min_lr + (base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// Checks the values, returning a message naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step {
                every_epochs,
                gamma,
            } => {
                if every_epochs == 0 {
                    Err("step schedule: every_epochs must be ≥ 1".into())
                } else if !(gamma.is_finite() && gamma > 0.0) {
                    Err(format!("step schedule: gamma must be > 0, got {gamma}"))
                } else {
                    Ok(())
                }
            }
            LrSchedule::Cosine { min_lr } => {
                if min_lr.is_finite() && min_lr >= 0.0 {
                    Ok(())
                } else {
                    Err(format!("cosine schedule: min_lr must be ≥ 0, got {min_lr}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_base_and_halves_midway() {
        let s = LrSchedule::Cosine { min_lr: 0.0 };
        assert_eq!(s.lr(0.1, 0, 0, 100, 10), 0.1);
        assert!((s.lr(0.1, 5, 0, 100, 10) - 0.05).abs() < 1e-12);
        let last = s.lr(0.1, 9, 99, 100, 10);
        assert!(last > 0.0 && last < 1e-5, "{last}");
    }

    /// Epoch counts whose products overflow usize give a rate, not a panic.
    #[test]
    fn huge_epoch_counts_do_not_overflow() {
        let cosine = LrSchedule::Cosine { min_lr: 0.0 };
        let lr = cosine.lr(0.1, usize::MAX - 1, 7, 1000, usize::MAX);
        assert!((0.0..=0.1).contains(&lr), "{lr}");
        let step = LrSchedule::Step {
            every_epochs: 1,
            gamma: 0.5,
        };
        assert_eq!(step.lr(0.1, usize::MAX, 0, 1000, usize::MAX), 0.0);
    }

    #[test]
    fn step_decays_every_n_epochs() {
        let s = LrSchedule::Step {
            every_epochs: 3,
            gamma: 0.1,
        };
        assert_eq!(s.lr(1.0, 2, 50, 100, 10), 1.0);
        assert!((s.lr(1.0, 3, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 6, 0, 100, 10) - 0.01).abs() < 1e-12);
    }
}
