//! What training reports: one [`EpochMetrics`] per epoch and an [`Evaluation`] per data set.

use crate::lenet5::NUM_CLASSES;
use serde::{Deserialize, Serialize};

/// The results of one epoch. Serialises (serde_json) to one JSONL line:
/// `{"epoch":1,"train_loss":0.21,"train_accuracy":0.93,"test_loss":0.07,"test_accuracy":0.9781,
/// "seconds":2.1,"lr":0.05}` plus `val_loss`/`val_accuracy` when a validation set is used.
/// Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches, weighted by batch size (computed during the
    /// epoch, while the weights change, with augmentation if enabled).
    pub train_loss: f64,
    /// Fraction of training examples classified correctly during the epoch.
    pub train_accuracy: f64,
    /// Mean cross-entropy on the test set after the epoch.
    pub test_loss: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Wall time of the epoch's training plus its evaluation, in seconds.
    pub seconds: f64,
    /// Mean cross-entropy on the validation set, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Validation accuracy, if a validation set was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Learning rate of the epoch's first batch.
    pub lr: f64,
}

impl EpochMetrics {
    /// True if every value except the wall time is bit-for-bit equal (what determinism and
    /// resume tests compare).
    pub fn same_results(&self, other: &EpochMetrics) -> bool {
        let bits = |x: f64| x.to_bits();
        let obits = |x: Option<f64>| x.map(f64::to_bits);
        self.epoch == other.epoch
            && bits(self.train_loss) == bits(other.train_loss)
            && bits(self.train_accuracy) == bits(other.train_accuracy)
            && bits(self.test_loss) == bits(other.test_loss)
            && bits(self.test_accuracy) == bits(other.test_accuracy)
            && obits(self.val_loss) == obits(other.val_loss)
            && obits(self.val_accuracy) == obits(other.val_accuracy)
            && bits(self.lr) == bits(other.lr)
    }
}

/// Loss, accuracy and confusion matrix of a model on a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy over all examples.
    pub loss: f64,
    /// `correct / total`.
    pub accuracy: f64,
    /// Examples classified correctly.
    pub correct: usize,
    /// Examples evaluated.
    pub total: usize,
    /// `confusion[true_class][predicted_class]` counts.
    pub confusion: [[u64; NUM_CLASSES]; NUM_CLASSES],
}
