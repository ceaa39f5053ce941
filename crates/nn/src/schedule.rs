//! Learning rates: the range of a run's base rate ([`check_lr`]) and the schedules
//! ([`LrSchedule`], which `--schedule` names parse into). The rate is recomputed before every
//! batch from the epoch and the batch index, so a resumed run gets exactly the rates an
//! uninterrupted one would.

use serde::{Deserialize, Serialize};

/// Smallest and largest base learning rates: below, f32 steps round to nothing; above, SGD
/// diverges at once (and 1e308 overflows f32).
pub const LR_RANGE: (f64, f64) = (1e-8, 100.0);

/// `lr` if it is a base learning rate in [`LR_RANGE`]: the one check of a run's rate, whether
/// it comes from `--lr` or from a training state file.
pub fn check_lr(lr: f64) -> Result<f64, String> {
    let (lo, hi) = LR_RANGE;
    if lr.is_normal() && (lo..=hi).contains(&lr) {
        Ok(lr)
    } else {
        Err(format!("must be in [{lo:e}, {hi}], found {lr:e}"))
    }
}

/// Epochs between two decays of the step schedule named `step`.
pub const STEP_EVERY: usize = 3;
/// Factor of each decay of the step schedule named `step`.
pub const STEP_GAMMA: f64 = 0.1;

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

    /// `gamma` if it is a step decay's factor, in (0, 1]: the check of `--gamma` and of a
    /// schedule read from a file.
    pub fn check_gamma(gamma: f64) -> Result<f64, String> {
        if gamma > 0.0 && gamma <= 1.0 {
            Ok(gamma)
        } else {
            Err(format!("must be in (0, 1], found {gamma}"))
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
                } else {
                    Self::check_gamma(gamma)
                        .map(|_| ())
                        .map_err(|why| format!("step schedule: gamma {why}"))
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

/// The schedule a `--schedule` name stands for: `cosine` (to 0), `step` (by [`STEP_GAMMA`]
/// every [`STEP_EVERY`] epochs) or `constant` (also `none`).
impl std::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(LrSchedule::Cosine { min_lr: 0.0 }),
            "step" => Ok(LrSchedule::Step {
                every_epochs: STEP_EVERY,
                gamma: STEP_GAMMA,
            }),
            "constant" | "none" => Ok(LrSchedule::Constant),
            _ => Err(format!(
                "unknown schedule {s:?}: expected cosine, step or constant"
            )),
        }
    }
}

impl LrSchedule {
    /// The schedule's `--schedule` name.
    pub fn name(&self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Step { .. } => "step",
            LrSchedule::Cosine { .. } => "cosine",
        }
    }

    /// The schedule with its values, as the first line of `lenet train` shows it.
    pub fn describe(&self) -> String {
        match self {
            LrSchedule::Constant => "constant".into(),
            LrSchedule::Step {
                every_epochs,
                gamma,
            } => format!("×{gamma} every {every_epochs} epochs"),
            LrSchedule::Cosine { min_lr } => format!("cosine to {min_lr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_schedules_and_back() {
        for name in ["cosine", "step", "constant"] {
            assert_eq!(name.parse::<LrSchedule>().unwrap().name(), name);
        }
        assert_eq!("none".parse::<LrSchedule>(), Ok(LrSchedule::Constant));
        assert!("linear"
            .parse::<LrSchedule>()
            .unwrap_err()
            .contains("cosine"));
    }

    #[test]
    fn base_rate_and_gamma_have_one_range_each() {
        assert_eq!(check_lr(0.05), Ok(0.05));
        for bad in [0.0, -0.1, 1e-9, 101.0, f64::NAN, f64::INFINITY] {
            assert!(check_lr(bad).unwrap_err().contains("[1e-8, 100]"), "{bad}");
        }
        assert_eq!(LrSchedule::check_gamma(1.0), Ok(1.0));
        for bad in [0.0, 1.5, f64::NAN] {
            assert!(LrSchedule::check_gamma(bad).is_err(), "{bad}");
        }
    }

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
