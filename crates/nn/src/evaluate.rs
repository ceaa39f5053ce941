//! Evaluation: loss, accuracy and confusion matrix of a model over a whole source, in large
//! batches, without gradients.

use crate::data::{BatchSource, IMAGE_LEN};
use crate::lenet5::{LeNet5, IMAGE_SIZE, NUM_CLASSES};
use crate::loss::{argmax, cross_entropy_loss};
use crate::metrics::Evaluation;
use ndarray::ArrayView4;

/// Reusable evaluation buffers for batches of up to `batch_size` examples.
#[derive(Debug, Clone)]
pub struct Evaluator {
    batch_size: usize,
    indices: Vec<usize>,
    images: Vec<f32>,
    labels: Vec<usize>,
}

impl Evaluator {
    /// Buffers for batches of `batch_size` (e.g. 1000) examples.
    ///
    /// # Panics
    /// If `batch_size` is 0.
    pub fn new(batch_size: usize) -> Self {
        assert!(batch_size > 0, "Evaluator: batch size must be ≥ 1");
        Evaluator {
            batch_size,
            indices: Vec::with_capacity(batch_size),
            images: vec![0.0; batch_size * IMAGE_LEN],
            labels: vec![0; batch_size],
        }
    }

    /// Evaluates `model` on every example of `source`, in order. An empty source gives loss
    /// and accuracy NaN.
    pub fn evaluate(&mut self, model: &mut LeNet5, source: &dyn BatchSource) -> Evaluation {
        let total = source.len();
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        let mut confusion = [[0u64; NUM_CLASSES]; NUM_CLASSES];
        let mut start = 0;
        while start < total {
            let n = self.batch_size.min(total - start);
            self.indices.clear();
            self.indices.extend(start..start + n);
            let images = &mut self.images[..n * IMAGE_LEN];
            let labels = &mut self.labels[..n];
            source.fill_batch(&self.indices, images, labels);
            let x = ArrayView4::from_shape((n, 1, IMAGE_SIZE, IMAGE_SIZE), &*images)
                .expect("batch buffer matches its shape");
            let logits = model.forward_inference(x);
            loss_sum += cross_entropy_loss(logits, labels) as f64 * n as f64;
            for (row, &t) in logits.rows().into_iter().zip(labels.iter()) {
                let p = argmax(row.iter().copied());
                correct += usize::from(p == t);
                if t < NUM_CLASSES {
                    confusion[t][p] += 1;
                }
            }
            start += n;
        }
        Evaluation {
            loss: loss_sum / total as f64,
            accuracy: correct as f64 / total as f64,
            correct,
            total,
            confusion,
        }
    }
}

/// Evaluates `model` on `source` in batches of `batch_size` (allocating its own buffers).
pub fn evaluate(model: &mut LeNet5, source: &dyn BatchSource, batch_size: usize) -> Evaluation {
    Evaluator::new(batch_size).evaluate(model, source)
}
