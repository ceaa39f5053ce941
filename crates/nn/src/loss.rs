//! Softmax cross-entropy (mean over the batch, as `F.cross_entropy`), accuracy counting and
//! probabilities for prediction. The math is `tensor`'s fused kernel.

use crate::buffer::Buffer;
use ndarray::{Array2, ArrayView2, Ix2};

/// Fused softmax + cross-entropy for training, owning the dL/dlogits buffer.
#[derive(Debug, Clone, Default)]
pub struct SoftmaxCrossEntropy {
    grad_logits: Buffer<Ix2>,
}

impl SoftmaxCrossEntropy {
    /// A loss with an empty gradient buffer (it grows on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the mean loss of `logits` (`[n, classes]`) against `targets` and keeps its
    /// gradient `(softmax − onehot)/n`, readable through [`SoftmaxCrossEntropy::grad_logits`].
    ///
    /// # Panics
    /// If `targets.len() != n` or a target is out of range.
    pub fn forward_backward(&mut self, logits: ArrayView2<'_, f32>, targets: &[usize]) -> f32 {
        self.grad_logits.set_dim(logits.raw_dim());
        tensor::softmax_cross_entropy_into(logits, targets, self.grad_logits.view_mut())
    }

    /// dL/dlogits from the last [`SoftmaxCrossEntropy::forward_backward`].
    pub fn grad_logits(&self) -> ArrayView2<'_, f32> {
        self.grad_logits.view()
    }
}

/// Mean cross-entropy of `logits` against `targets`, without a gradient (for evaluation).
///
/// # Panics
/// If `targets.len()` differs from the number of rows or a target is out of range.
pub fn cross_entropy_loss(logits: ArrayView2<'_, f32>, targets: &[usize]) -> f32 {
    tensor::cross_entropy(logits, targets)
}

/// How many rows have their largest logit (the first one on ties) at the target class.
///
/// # Panics
/// If `targets.len()` differs from the number of rows.
pub fn count_correct(logits: ArrayView2<'_, f32>, targets: &[usize]) -> usize {
    assert_eq!(
        logits.nrows(),
        targets.len(),
        "count_correct: one target per row"
    );
    logits
        .rows()
        .into_iter()
        .zip(targets)
        .filter(|(row, &t)| argmax(row.iter().copied()) == t)
        .count()
}

/// Index of the largest value (the first one on ties; NaN never wins). 0 for no values.
pub fn argmax(values: impl IntoIterator<Item = f32>) -> usize {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, v) in values.into_iter().enumerate() {
        if v > best_value || i == 0 {
            best = i;
            best_value = v;
        }
    }
    best
}

/// Row-wise softmax probabilities of `logits` (for prediction; allocates the result).
pub fn softmax(logits: ArrayView2<'_, f32>) -> Array2<f32> {
    tensor::log_softmax(logits).mapv(f32::exp)
}
