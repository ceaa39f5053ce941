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

    /// For one shard of a batch of `batch_len` rows (`logits` and `targets` are the shard's n
    /// rows): returns the shard's summed loss and keeps the gradient of the *batch's* mean loss
    /// on these rows, `(softmax − onehot)/batch_len`, so that the shards' gradients add up to
    /// the batch's ([`crate::data_parallel`]).
    ///
    /// The gradient is [`SoftmaxCrossEntropy::forward_backward`]'s times `n/batch_len`. When
    /// that ratio is a power of two (batch 32 in shards of 16, 256 in shards of 64) the scaling
    /// is exact, and the gradient has the bits of dividing by `batch_len` directly.
    ///
    /// # Panics
    /// As [`SoftmaxCrossEntropy::forward_backward`], or if `batch_len` is smaller than n.
    pub fn forward_backward_shard(
        &mut self,
        logits: ArrayView2<'_, f32>,
        targets: &[usize],
        batch_len: usize,
    ) -> f64 {
        let n = logits.nrows();
        assert!(
            n <= batch_len,
            "forward_backward_shard: a shard of {n} rows in a batch of {batch_len}"
        );
        let mean = self.forward_backward(logits, targets);
        if n != batch_len {
            let scale = n as f32 / batch_len as f32;
            self.grad_logits.view_mut().mapv_inplace(|g| g * scale);
        }
        f64::from(mean) * n as f64
    }

    /// dL/dlogits from the last [`SoftmaxCrossEntropy::forward_backward`] (or
    /// [`SoftmaxCrossEntropy::forward_backward_shard`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A shard's gradient is the batch-mean gradient on its rows: `grad_out · (softmax −
    /// onehot)/n` with `grad_out = n/batch_len` is `(softmax − onehot)/batch_len`, to the bit when
    /// the ratio is a power of two. Else the two differ by the rounding of a few products and a
    /// difference of terms of at most 1/batch_len each: at most 4 roundings of 2/batch_len, so
    /// 4ε/batch_len.
    #[test]
    fn a_shard_gradient_divides_by_the_batch_size() {
        let rng = &mut ChaCha8Rng::seed_from_u64(1);
        for (n, batch_len) in [(16, 16), (16, 32), (24, 96), (17, 50)] {
            let logits = Array2::from_shape_simple_fn((n, 10), || rng.gen_range(-3.0..3.0));
            let targets: Vec<usize> = (0..n).map(|_| rng.gen_range(0..10)).collect();
            let mut loss = SoftmaxCrossEntropy::new();
            let sum = loss.forward_backward_shard(logits.view(), &targets, batch_len);
            let mean = tensor::cross_entropy(logits.view(), &targets);
            assert_eq!(sum, f64::from(mean) * n as f64);
            let ratio = n as f32 / batch_len as f32;
            let want = tensor::cross_entropy_backward(logits.view(), &targets, ratio);
            let got = loss.grad_logits();
            if ratio.log2().fract() == 0.0 {
                assert_eq!(got, want, "{n} of {batch_len}");
            }
            let bound = 4.0 * f32::EPSILON / batch_len as f32;
            ndarray::Zip::from(got).and(&want).for_each(|&a, &b| {
                assert!((a - b).abs() <= bound, "{n} of {batch_len}: {a} vs {b}");
            });
        }
    }
}
