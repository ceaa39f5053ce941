//! Evaluation: loss, accuracy and confusion matrix of a model over a whole source, in large
//! batches, without gradients.
//!
//! Each batch is cut into blocks of [`FC_BLOCK`] consecutive images, and each rayon thread runs
//! its share of the blocks on its own copy of the model: the convolutions one shard of
//! [`SHARD`] images at a time, so that a shard's activations stay in the core's cache, then the
//! fully connected layers once for the whole block, so that each of their weight matrices is
//! packed for a block's rows at once. The threads meet once per batch instead of once per
//! layer. Blocks and shards depend on the batch size only and the losses are added in shard
//! order, so the result has the same bits on any number of threads.
//!
//! The two halves are [`LeNet5::forward_inference`]'s own ([`LeNet5::features_inference`],
//! [`LeNet5::classify`]): each image gets the logits `lenet predict` and the page compute for it,
//! to the bit.

use crate::data::{BatchSource, IMAGE_LEN};
use crate::lenet5::{LeNet5, IMAGE_SIZE, NUM_CLASSES};
use crate::loss::{argmax, cross_entropy_loss};
use crate::metrics::Evaluation;
use ndarray::{ArrayView2, ArrayView4, Axis};
use rayon::prelude::*;

/// Images one thread runs through the whole network at a time. Measured on a 2-vCPU AMD EPYC
/// (one thread, forward passes of LeNet-5): 31 µs per image in shards of 16, 34–38 µs in
/// shards of 8, 40 µs at 32 and 39–44 µs at 256, where a layer's output for the whole batch no
/// longer fits in the core's L2 cache.
pub const SHARD: usize = 16;

/// Images whose fully connected layers run as one product per layer: 8 shards. Measured on a
/// 2-vCPU AMD EPYC, `ours infer`: the fully connected layers took 18% of a one-thread pass in
/// shards of 16, half of it repacking their weights for every shard.
pub const FC_BLOCK: usize = 8 * SHARD;

/// Reusable evaluation buffers for batches of up to `batch_size` examples.
#[derive(Debug, Clone)]
pub struct Evaluator {
    batch_size: usize,
    indices: Vec<usize>,
    images: Vec<f32>,
    labels: Vec<usize>,
    /// One worker per thread (made on the first call, its model refreshed on every call).
    workers: Vec<Worker>,
    /// The summed loss of each shard of the current batch.
    shard_loss: Vec<f64>,
}

/// What one thread evaluates with: its copy of the model, its tally, and the fc1 inputs of a
/// block of images.
#[derive(Debug, Clone)]
struct Worker {
    model: LeNet5,
    tally: Tally,
    /// `[FC_BLOCK, c2·5·5]`.
    features: Vec<f32>,
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
        for t in self.workers.iter().map(|w| &w.tally) {
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
        if self.workers.len() != threads || self.workers[0].model.config() != config {
            // fc1.weight is [h1, c2·5·5]: a block's features are FC_BLOCK rows of its width
            let width = config.param_shapes()[4][1];
            let worker = |_| Worker {
                model: LeNet5::zeros(config),
                tally: Tally::default(),
                features: vec![0.0; FC_BLOCK * width],
            };
            self.workers = (0..threads).map(worker).collect();
        }
        for worker in &mut self.workers {
            worker.model.copy_params_from(model);
            worker.tally = Tally::default();
        }
    }

    /// Runs the first `n` images of the buffers, each thread on a contiguous run of blocks;
    /// adds to the threads' tallies and returns the batch's summed loss.
    fn run_batch(&mut self, n: usize) -> f64 {
        let shards = n.div_ceil(SHARD);
        let per_thread = n.div_ceil(FC_BLOCK).div_ceil(self.workers.len()) * FC_BLOCK;
        let images = self.images[..n * IMAGE_LEN].par_chunks(per_thread * IMAGE_LEN);
        let labels = self.labels[..n].par_chunks(per_thread);
        let losses = self.shard_loss[..shards].par_chunks_mut(per_thread / SHARD);
        let workers = self.workers.par_iter_mut();
        images.zip(labels).zip(losses).zip(workers).for_each(
            |(((images, labels), losses), worker)| {
                let blocks = images
                    .chunks(FC_BLOCK * IMAGE_LEN)
                    .zip(labels.chunks(FC_BLOCK));
                for ((x, t), loss) in blocks.zip(losses.chunks_mut(FC_BLOCK / SHARD)) {
                    worker.block(x, t, loss);
                }
            },
        );
        self.shard_loss[..shards].iter().sum()
    }
}

impl Worker {
    /// One block: the convolutions shard by shard, their features gathered, the fully
    /// connected layers once; each shard's summed loss into `losses`, predictions into the tally.
    fn block(&mut self, images: &[f32], labels: &[usize], losses: &mut [f64]) {
        let n = labels.len();
        let width = self.features.len() / FC_BLOCK;
        let rows = self.features.chunks_exact_mut(SHARD * width);
        for (x, rows) in images.chunks(SHARD * IMAGE_LEN).zip(rows) {
            let x = ArrayView4::from_shape((x.len() / IMAGE_LEN, 1, IMAGE_SIZE, IMAGE_SIZE), x)
                .expect("a shard of the batch buffer");
            let f = self.model.features_inference(x);
            let f = f.as_slice().expect("pool2's output is contiguous");
            rows[..f.len()].copy_from_slice(f);
        }
        let features = ArrayView2::from_shape((n, width), &self.features[..n * width])
            .expect("the block's features");
        let logits = self.model.classify(features);
        let shards = logits
            .axis_chunks_iter(Axis(0), SHARD)
            .zip(labels.chunks(SHARD));
        for ((logits, t), loss) in shards.zip(losses) {
            *loss = cross_entropy_loss(logits, t) as f64 * t.len() as f64;
            self.tally.add(logits, t);
        }
    }
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
        // 75 images in batches of 40: shards of 16, 16, 8 and then 16, 16, 3, one block each;
        // 300 in one batch: blocks of 128, 128 and 44 (2 shards of 16 and one of 12).
        for (n, batch) in [(75, 40), (300, 300)] {
            let (mut model, source) = model_and_source(n);
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| Evaluator::new(batch).evaluate(&model, &source))
            };
            let one = run(1);
            for threads in [2, 3, 5] {
                let e = run(threads);
                assert_eq!(e.loss.to_bits(), one.loss.to_bits(), "{threads} threads");
                assert_eq!((e.correct, e.confusion), (one.correct, one.confusion));
            }
            assert_eq!(one.total, n);
            let counted: u64 = one.confusion.iter().flatten().sum();
            assert_eq!(counted, n as u64);
            let (loss, correct) = reference(&mut model, &source);
            assert!(
                (one.loss - loss).abs() < 1e-5 * loss,
                "{} vs {loss}",
                one.loss
            );
            assert_eq!(one.correct, correct);
        }
    }
}
