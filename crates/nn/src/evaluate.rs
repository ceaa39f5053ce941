//! Evaluation: loss, accuracy and confusion matrix of a model over a whole source, in large
//! batches, without gradients.
//!
//! Each batch is cut into shards of [`SHARD`] consecutive images, and each rayon thread runs its
//! share of the shards through the whole network, one shard at a time, on its own copy of the
//! model: a shard's activations stay in the core's cache, and the threads meet once per batch
//! instead of once per layer. The shards depend on the batch size only and their losses are
//! added in shard order, so the result has the same bits on any number of threads.

use crate::data::{BatchSource, IMAGE_LEN};
use crate::lenet5::{LeNet5, IMAGE_SIZE, NUM_CLASSES};
use crate::loss::{argmax, cross_entropy_loss};
use crate::metrics::Evaluation;
use ndarray::{ArrayView2, ArrayView4};
use rayon::prelude::*;

/// Images one thread runs through the whole network at a time. Measured on a 2-vCPU AMD EPYC
/// (one thread, forward passes of LeNet-5): 31 µs per image in shards of 16, 34–38 µs in
/// shards of 8, 40 µs at 32 and 39–44 µs at 256, where a layer's output for the whole batch no
/// longer fits in the core's L2 cache.
pub const SHARD: usize = 16;

/// Reusable evaluation buffers for batches of up to `batch_size` examples.
#[derive(Debug, Clone)]
pub struct Evaluator {
    batch_size: usize,
    indices: Vec<usize>,
    images: Vec<f32>,
    labels: Vec<usize>,
    /// One copy of the model per thread (made on the first call, refreshed on every call).
    workers: Vec<LeNet5>,
    /// Each thread's count of correct predictions and its confusion matrix.
    tallies: Vec<Tally>,
    /// The summed loss of each shard of the current batch.
    shard_loss: Vec<f64>,
}

/// Correct predictions and the confusion matrix (`[target][prediction]`) of some examples.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    correct: usize,
    confusion: [[u64; NUM_CLASSES]; NUM_CLASSES],
}

impl Tally {
    fn add(&mut self, logits: ArrayView2<'_, f32>, labels: &[usize]) {
        for (row, &t) in logits.rows().into_iter().zip(labels) {
            let p = argmax(row.iter().copied());
            self.correct += usize::from(p == t);
            if t < NUM_CLASSES {
                self.confusion[t][p] += 1;
            }
        }
    }
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
            workers: Vec::new(),
            tallies: Vec::new(),
            shard_loss: vec![0.0; batch_size.div_ceil(SHARD)],
        }
    }

    /// Evaluates `model` on every example of `source`, in order. An empty source gives loss
    /// and accuracy NaN.
    pub fn evaluate(&mut self, model: &LeNet5, source: &dyn BatchSource) -> Evaluation {
        self.copy_model(model);
        let total = source.len();
        let mut loss_sum = 0.0f64;
        let mut start = 0;
        while start < total {
            let n = self.batch_size.min(total - start);
            self.indices.clear();
            self.indices.extend(start..start + n);
            source.fill_batch(
                &self.indices,
                &mut self.images[..n * IMAGE_LEN],
                &mut self.labels[..n],
            );
            loss_sum += self.run_batch(n);
            start += n;
        }
        let mut all = Tally::default();
        for t in &self.tallies {
            all.correct += t.correct;
            for (row, trow) in all.confusion.iter_mut().zip(&t.confusion) {
                for (a, b) in row.iter_mut().zip(trow) {
                    *a += b;
                }
            }
        }
        Evaluation {
            loss: loss_sum / total as f64,
            accuracy: all.correct as f64 / total as f64,
            correct: all.correct,
            total,
            confusion: all.confusion,
        }
    }

    /// One model copy per thread of the current pool, holding `model`'s weights, and zeroed
    /// tallies. Allocates only when the thread count or the architecture changed.
    fn copy_model(&mut self, model: &LeNet5) {
        let threads = rayon::current_num_threads().max(1);
        let config = model.config();
        if self.workers.len() != threads || self.workers[0].config() != config {
            self.workers = (0..threads).map(|_| LeNet5::zeros(config)).collect();
            self.tallies = vec![Tally::default(); threads];
        }
        for worker in &mut self.workers {
            worker.copy_params_from(model);
        }
        self.tallies.fill(Tally::default());
    }

    /// Runs the first `n` images of the buffers, shard by shard, each thread on a contiguous run
    /// of shards; adds to the threads' tallies and returns the batch's summed loss.
    fn run_batch(&mut self, n: usize) -> f64 {
        let shards = n.div_ceil(SHARD);
        let per_thread = shards.div_ceil(self.workers.len());
        let images = self.images[..n * IMAGE_LEN].par_chunks(per_thread * SHARD * IMAGE_LEN);
        let labels = self.labels[..n].par_chunks(per_thread * SHARD);
        let losses = self.shard_loss[..shards].par_chunks_mut(per_thread);
        let workers = self.workers.par_iter_mut().zip(self.tallies.par_iter_mut());
        images.zip(labels).zip(losses).zip(workers).for_each(
            |(((images, labels), losses), (model, tally))| {
                let shards = images.chunks(SHARD * IMAGE_LEN).zip(labels.chunks(SHARD));
                for ((x, t), loss) in shards.zip(losses) {
                    let x = ArrayView4::from_shape((t.len(), 1, IMAGE_SIZE, IMAGE_SIZE), x)
                        .expect("a shard of the batch buffer");
                    let logits = model.forward_inference(x);
                    *loss = cross_entropy_loss(logits, t) as f64 * t.len() as f64;
                    tally.add(logits, t);
                }
            },
        );
        self.shard_loss[..shards].iter().sum()
    }
}

/// Evaluates `model` on `source` in batches of `batch_size` (allocating its own buffers).
pub fn evaluate(model: &LeNet5, source: &dyn BatchSource, batch_size: usize) -> Evaluation {
    Evaluator::new(batch_size).evaluate(model, source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::InMemorySource;
    use crate::lenet5::LeNet5Config;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn model_and_source(n: usize) -> (LeNet5, InMemorySource) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let model = LeNet5::new(LeNet5Config::default(), &mut rng);
        let images = (0..n * IMAGE_LEN)
            .map(|_| rng.gen_range(0.0..1.0))
            .collect();
        let labels = (0..n).map(|i| i % NUM_CLASSES).collect();
        (model, InMemorySource::new(images, labels))
    }

    /// The definition: one forward pass over the whole set, outside any shard.
    fn reference(model: &mut LeNet5, source: &InMemorySource) -> (f64, usize) {
        let n = source.len();
        let (mut images, mut labels) = (vec![0.0; n * IMAGE_LEN], vec![0; n]);
        source.fill_batch(&(0..n).collect::<Vec<_>>(), &mut images, &mut labels);
        let x = ArrayView4::from_shape((n, 1, IMAGE_SIZE, IMAGE_SIZE), &images[..]).unwrap();
        let logits = model.forward_inference(x);
        let mut tally = Tally::default();
        tally.add(logits, &labels);
        (cross_entropy_loss(logits, &labels) as f64, tally.correct)
    }

    #[test]
    fn shards_give_the_same_bits_on_any_number_of_threads_and_match_one_pass() {
        // 75 images in batches of 40: shards of 16, 16, 8 and then 16, 16, 3.
        let (mut model, source) = model_and_source(75);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| Evaluator::new(40).evaluate(&model, &source))
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            let e = run(threads);
            assert_eq!(e.loss.to_bits(), one.loss.to_bits(), "{threads} threads");
            assert_eq!((e.correct, e.confusion), (one.correct, one.confusion));
        }
        assert_eq!(one.total, 75);
        let counted: u64 = one.confusion.iter().flatten().sum();
        assert_eq!(counted, 75);
        let (loss, correct) = reference(&mut model, &source);
        assert!(
            (one.loss - loss).abs() < 1e-5 * loss,
            "{} vs {loss}",
            one.loss
        );
        assert_eq!(one.correct, correct);
    }
}
