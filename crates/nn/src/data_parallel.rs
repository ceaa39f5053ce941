//! The training step's gradient, data-parallel: the batch cut into shards of images, every
//! shard through the whole network (forward, loss, backward) on its own copy of it, all shards
//! in one parallel region per batch.
//!
//! A batch of N images has the mean loss L = (1/N)·Σ_i ℓ_i, with ℓ_i the cross-entropy of
//! image i. Its rows are cut into k shards of consecutive rows S_0, …, S_{k−1}
//! ([`shard_rows`]: k and the cut are a function of N alone). The gradient is a sum over the
//! images, so
//!
//! ```text
//! dL/dθ = Σ_i (1/N)·dℓ_i/dθ = G_0 + G_1 + … + G_{k−1},   G_s = Σ_{i ∈ S_s} (1/N)·dℓ_i/dθ
//! ```
//!
//! and G_s is what a backward pass over shard s alone gives when its logit gradient is
//! `(softmax − onehot)/N`: the batch's N, not the shard's |S_s|
//! ([`SoftmaxCrossEntropy::forward_backward_shard`]). Shard 0 runs on the model itself; shard
//! s > 0 on replica s, a second [`LeNet5`] with its own activations, convolution plans and
//! gradients, whose parameters are copied from the model before each batch. After the region
//! the replicas' gradients are added into the model's in shard order,
//! `((G_0 + G_1) + G_2) + G_3`, and the optimizer then steps the model alone. The batch's loss
//! is `(Σ_s Σ_{i ∈ S_s} ℓ_i)/N` and its correct predictions the shards' counts added.
//!
//! The cut and the order of every sum depend on N alone, never on the number of threads, so a
//! step has the same bits on any number of threads. Against one backward pass over the whole
//! batch, each image's own terms are the same (rows do not interact; the logit gradients have
//! the same bits when N/|S_s| is a power of two) and only the order in which the parameter
//! gradients add them up differs, so the two agree within the rounding of those sums (tested
//! below).
//!
//! Each shard's tensor operations may still split their images over threads (rayon's nested
//! parallelism), which lets a thread that finished its shard help with another. A batch costs
//! k − 1 copies of the parameters and k − 1 additions of their gradients (61,706 floats each
//! for LeNet-5), in place of a fork and join of the threads around every layer's pass.

use crate::data::IMAGE_LEN;
use crate::lenet5::{LeNet5, IMAGE_SIZE};
use crate::loss::{count_correct, SoftmaxCrossEntropy};
use ndarray::ArrayView4;
use rayon::prelude::*;
use std::ops::Range;

/// Fewest images per shard (for a batch of at least two shards): at 16 images a shard's
/// activations stay in a core's L2 cache (the evaluator's `SHARD`), and the fully connected
/// layers still multiply 16 rows per read of their weights.
const MIN_ROWS: usize = 16;
/// Most shards: enough for the few cores this runs on; each shard past the first costs a copy
/// of the parameters and an addition of its gradients per batch.
const MAX_SHARDS: usize = 4;

/// How many shards a batch of `n` images is cut into (a function of `n` alone): `n / 16`, at
/// least 1 and at most 4. Batch 32 is two shards, 96 and 256 four, anything below 32 one.
pub(crate) fn shard_count(n: usize) -> usize {
    (n / MIN_ROWS).clamp(1, MAX_SHARDS)
}

/// The rows of shard `s` of a batch of `n` images: consecutive, the shards' sizes differing by
/// at most one (batch 32: 0..16 and 16..32; 96: four of 24; 256: four of 64; 50: 16, 17, 17).
pub(crate) fn shard_rows(n: usize, s: usize) -> Range<usize> {
    let k = shard_count(n);
    s * n / k..(s + 1) * n / k
}

/// The state of the data-parallel step: a replica of the model for every shard after the
/// first, and every shard's loss. Both grow to the most shards a batch has needed, and nothing
/// is allocated after that.
#[derive(Debug, Clone, Default)]
pub(crate) struct DataParallel {
    /// The copies that run shards 1, 2, … (shard 0 runs on the model).
    replicas: Vec<LeNet5>,
    /// One per shard, shard 0 included.
    shards: Vec<Shard>,
}

/// One shard's loss (with its logit-gradient buffer) and what its last pass found.
#[derive(Debug, Clone, Default)]
struct Shard {
    loss: SoftmaxCrossEntropy,
    /// The shard's summed loss, Σ_{i ∈ S_s} ℓ_i.
    loss_sum: f64,
    /// The shard's correct predictions.
    correct: usize,
}

impl DataParallel {
    /// The gradient of the batch's mean loss into `model`'s parameter gradients, shard by
    /// shard as the module docs say, for the batch `images` (`n` images of [`IMAGE_LEN`] pixels,
    /// row-major) with `labels` (n). Returns the batch's mean loss and its correct predictions.
    /// The model's parameters are left unchanged; its layer outputs are shard 0's.
    ///
    /// When the loss is not finite, the gradients are left unfinished: the caller must not step.
    pub(crate) fn gradients(
        &mut self,
        model: &mut LeNet5,
        images: &[f32],
        labels: &[usize],
    ) -> (f32, usize) {
        let n = labels.len();
        assert_eq!(
            images.len(),
            n * IMAGE_LEN,
            "DataParallel: one image per label"
        );
        let k = shard_count(n);
        self.prepare(model, k);
        let copies = rayon::iter::once(&mut *model).chain(self.replicas[..k - 1].par_iter_mut());
        let shards = copies.zip(self.shards[..k].par_iter_mut()).enumerate();
        shards.for_each(|(s, (net, shard))| {
            let rows = shard_rows(n, s);
            let pixels = rows.start * IMAGE_LEN..rows.end * IMAGE_LEN;
            shard.run(net, &images[pixels], &labels[rows], n);
        });
        for replica in &self.replicas[..k - 1] {
            model.add_grads_from(replica);
        }
        let shards = &self.shards[..k];
        let loss_sum: f64 = shards.iter().map(|s| s.loss_sum).sum();
        let correct = shards.iter().map(|s| s.correct).sum();
        ((loss_sum / n as f64) as f32, correct)
    }

    /// Replicas for shards 1..k holding `model`'s parameters, and k shard states.
    fn prepare(&mut self, model: &LeNet5, k: usize) {
        let config = model.config();
        if self.replicas.first().is_some_and(|r| r.config() != config) {
            self.replicas.clear();
        }
        while self.replicas.len() < k - 1 {
            self.replicas.push(LeNet5::zeros(config));
        }
        if self.shards.len() < k {
            self.shards.resize_with(k, Shard::default);
        }
        for replica in &mut self.replicas[..k - 1] {
            replica.copy_params_from(model);
        }
    }
}

impl Shard {
    /// Forward, loss and backward of one shard of a batch of `batch_len` images on `net`: its
    /// parameter gradients G_s into `net`'s, its summed loss and correct count into `self`.
    /// A non-finite loss skips the backward pass.
    fn run(&mut self, net: &mut LeNet5, images: &[f32], labels: &[usize], batch_len: usize) {
        let x = ArrayView4::from_shape((labels.len(), 1, IMAGE_SIZE, IMAGE_SIZE), images)
            .expect("whole images");
        let logits = net.forward(x);
        self.correct = count_correct(logits, labels);
        self.loss_sum = self.loss.forward_backward_shard(logits, labels, batch_len);
        if self.loss_sum.is_finite() {
            net.backward(x, self.loss.grad_logits(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::ActivationKind;
    use crate::lenet5::LeNet5Config;
    use crate::pool::PoolKind;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A random model and batch of `n` images with their labels.
    fn setup(n: usize, config: LeNet5Config, seed: u64) -> (LeNet5, Vec<f32>, Vec<usize>) {
        let rng = &mut ChaCha8Rng::seed_from_u64(seed);
        let model = LeNet5::new(config, rng);
        let images = (0..n * IMAGE_LEN)
            .map(|_| rng.gen_range(0.0..1.0))
            .collect();
        let labels = (0..n).map(|_| rng.gen_range(0..10)).collect();
        (model, images, labels)
    }

    /// `[n, 1, 28, 28]` over `images`.
    fn view(images: &[f32]) -> ArrayView4<'_, f32> {
        let n = images.len() / IMAGE_LEN;
        ArrayView4::from_shape((n, 1, IMAGE_SIZE, IMAGE_SIZE), images).unwrap()
    }

    fn grads(model: &LeNet5) -> Vec<Vec<f32>> {
        model.params().iter().map(|p| p.grad.to_vec()).collect()
    }

    fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
        v.iter()
            .map(|g| g.iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    #[test]
    fn shards_are_a_function_of_the_batch_size() {
        for (n, sizes) in [
            (1, &[1][..]),
            (31, &[31]),
            (32, &[16, 16]),
            (50, &[16, 17, 17]),
            (64, &[16, 16, 16, 16]),
            (96, &[24, 24, 24, 24]),
            (256, &[64, 64, 64, 64]),
            (1001, &[250, 250, 250, 251]),
        ] {
            let k = shard_count(n);
            let rows: Vec<_> = (0..k).map(|s| shard_rows(n, s)).collect();
            let got: Vec<usize> = rows.iter().map(|r| r.len()).collect();
            assert_eq!(got, sizes, "n = {n}");
            assert_eq!(rows[0].start, 0);
            assert!(rows.windows(2).all(|w| w[0].end == w[1].start), "n = {n}");
            assert_eq!(rows[k - 1].end, n);
        }
    }

    /// The sharded gradient, loss and count have the bits of the shards run one by one on
    /// copies of the model (the loss gradient over the batch's n) and added in shard order,
    /// on 1, 2 and 3 threads; the model's parameters do not change.
    #[test]
    fn the_gradient_is_the_shards_gradients_added_in_order_on_any_thread_count() {
        let tanh_max = LeNet5Config {
            activation: ActivationKind::Tanh,
            pooling: PoolKind::Max,
            ..LeNet5Config::default()
        };
        let default = LeNet5Config::default();
        for (n, config) in [(20, default), (32, default), (50, tanh_max), (96, default)] {
            let (model, images, labels) = setup(n, config, n as u64);
            let mut want: Vec<Vec<f32>> = Vec::new();
            let (mut loss_sum, mut correct) = (0.0f64, 0);
            for s in 0..shard_count(n) {
                let rows = shard_rows(n, s);
                let x = view(&images[rows.start * IMAGE_LEN..rows.end * IMAGE_LEN]);
                let mut net = model.clone();
                let mut loss = SoftmaxCrossEntropy::new();
                let logits = net.forward(x);
                correct += count_correct(logits, &labels[rows.clone()]);
                loss_sum += loss.forward_backward_shard(logits, &labels[rows], n);
                net.backward(x, loss.grad_logits(), false);
                let g = grads(&net);
                if want.is_empty() {
                    want = g;
                } else {
                    for (sum, part) in want.iter_mut().zip(&g) {
                        sum.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
                    }
                }
            }
            let want_loss = (loss_sum / n as f64) as f32;
            let mut dp = DataParallel::default();
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut net = model.clone();
                let (loss, right) = pool.install(|| dp.gradients(&mut net, &images, &labels));
                let what = format!("n = {n}, {threads} threads");
                assert_eq!(bits(&grads(&net)), bits(&want), "{what}: gradients");
                assert_eq!(loss.to_bits(), want_loss.to_bits(), "{what}: loss");
                assert_eq!(right, correct, "{what}: correct");
                let values = |m: &LeNet5| m.params().map(|p| p.value.to_vec());
                assert!(values(&net) == values(&model), "{what}: parameters moved");
            }
        }
    }

    /// Against one backward pass over the whole batch. Each image's own terms are the same in
    /// both (rows do not interact, and with shards of n/2^j images the loss gradient
    /// `(softmax − onehot)/n` has the same bits), so every parameter gradient entry is a sum of
    /// the same m products t_j (images × output positions) added in another order. Any order
    /// of adding m terms, each product rounded at most once, is within m·u·Σ|t_j| of the exact
    /// sum (u = ε/2, to first order), so the two results are within m·ε·Σ|t_j| of each other.
    #[test]
    fn the_gradient_is_the_whole_batch_gradient_up_to_the_order_of_its_sums() {
        for n in [32, 64, 128] {
            let (model, images, labels) = setup(n, LeNet5Config::default(), 7);
            let x = view(&images);
            let mut whole = model.clone();
            let mut loss = SoftmaxCrossEntropy::new();
            let logits = whole.forward(x);
            let whole_correct = count_correct(logits, &labels);
            let whole_loss = loss.forward_backward(logits, &labels);
            whole.backward(x, loss.grad_logits(), false);
            let magnitudes = whole.grad_magnitudes(x, loss.grad_logits());

            let mut net = model.clone();
            let (got_loss, got_correct) =
                DataParallel::default().gradients(&mut net, &images, &labels);
            assert_eq!(got_correct, whole_correct, "n = {n}");
            // each shard's mean loss is rounded to f32 once, as the whole batch's is
            let tolerance = 2.0 * f32::EPSILON * whole_loss;
            assert!((got_loss - whole_loss).abs() <= tolerance, "n = {n}: loss");
            let (mut worst, mut differ) = (0.0f64, 0);
            let pairs = net.params().into_iter().zip(whole.params());
            for ((p, q), (m, sums)) in pairs.zip(&magnitudes) {
                assert_eq!(p.grad.len(), sums.len(), "{}", p.name);
                for ((&a, &b), &sum) in p.grad.iter().zip(q.grad).zip(sums) {
                    let bound = *m as f64 * f64::from(f32::EPSILON) * sum;
                    let error = f64::from(a - b).abs();
                    assert!(
                        error <= bound,
                        "n = {n}, {}: {a} vs {b}, bound {bound}",
                        p.name
                    );
                    worst = worst.max(error / bound);
                    differ += usize::from(a != b);
                }
            }
            println!("n = {n}: {differ} entries differ, at most {worst:.1e} of their bound");
        }
    }
}
