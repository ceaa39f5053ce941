//! The training step's gradient, data-parallel: the batch cut into shards of images, every
//! shard through the whole network (forward, loss, backward) on its own copy of it, all shards
//! in one parallel region per batch.
//!
//! A batch of N images has the mean loss L = (1/N)·Σ_i ℓ_i, with ℓ_i the cross-entropy of
//! image i. Its rows are cut into k shards of consecutive rows S_0, …, S_{k−1}, as the fully
//! connected layers cut theirs ([`shard_rows`]: k = N/16 shards, at least 1 and at most 4, of
//! ⌈N/k⌉ images, the last one shorter; batch 32 is two shards of 16, 96 four of 24, 256 four
//! of 64, anything below 32 one shard). The cut is a function of N alone. The gradient is a
//! sum over the images, so
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
//! A shard goes through the network in steps of at most [`STEP_ROWS`] consecutive images,
//! forward, loss and backward per step, so that what the backward pass reads back of its
//! step's forward pass (about 50 KB an image in LeNet-5) is still in the core's L2 cache. A
//! shard of 64 images (batch 256) runs as four steps S_{s,0}, …, S_{s,3} and sums their
//! gradients in step order, G_s = ((G_{s,0} + G_{s,1}) + G_{s,2}) + G_{s,3}, in a buffer of
//! its own: a parameter-sized copy after the first step, an addition after each later one
//! (the last adds the sum into its own gradient). The steps too depend on N alone.
//!
//! The cut and the order of every sum depend on N alone, never on the number of threads, so a
//! step has the same bits on any number of threads. Against one backward pass over the whole
//! batch, each image's own terms are the same (rows do not interact; the logit gradients have
//! the same bits when N/|S_s| is a power of two) and only the order in which the parameter
//! gradients add them up differs, so the two agree within the rounding of those sums (tested
//! below).
//!
//! Each shard also fills its rows of the batch from the data source, and augments them when
//! the trainer augments (each image from its own seed, drawn in image order before the region,
//! so the cut changes no bit). Its fully connected layers run on all its rows at once
//! ([`LeNet5::forward_unsplit`]; cut again into row shards of 16, a batch-256 epoch took
//! 1.15–1.19 s on two threads instead of 1.10–1.14 s), while its convolutions may still split
//! their images over threads (rayon's nested parallelism), which lets a thread that finished
//! its shard help with another. A batch costs k − 1 copies of the parameters and k − 1
//! additions of their gradients (61,706 floats each for LeNet-5), both in parallel pieces, in
//! place of a fork and join of the threads around every layer's pass.

use crate::augment::{BatchAugment, Scratch};
use crate::data::{BatchSource, IMAGE_LEN};
use crate::fc_shards::shard_rows;
use crate::lenet5::{LeNet5, IMAGE_SIZE};
use crate::loss::{count_correct, SoftmaxCrossEntropy};
use ndarray::ArrayView4;
use rayon::prelude::*;

/// Images per step of a shard (see the module docs): what the backward pass of 16 LeNet-5
/// images reads back is about 0.8 MB, within a 1 MB L2 cache. Measured on an AMD Zen 4 (1 MB
/// L2), alternated batch-256 epochs: 0.87× the time of one step per shard; steps of 8 took
/// 1.03× the time of steps of 16 (more gradient passes, shorter fully connected products).
pub(crate) const STEP_ROWS: usize = 16;

/// Elements per piece when the parameters are copied to the replicas and the gradients added
/// up: the pieces run in parallel (64 KB of f32; fc1's weight is 12 pieces).
const PIECE: usize = 1 << 14;

/// A batch for [`DataParallel::gradients`]: buffers for its n images (`[n, 1, 28, 28]`,
/// row-major) and labels, and, if they are not filled yet, where each shard fills its rows
/// from.
pub(crate) struct Batch<'a> {
    pub(crate) images: &'a mut [f32],
    pub(crate) labels: &'a mut [usize],
    /// The source and the batch's examples in it, or `None` for buffers already filled.
    pub(crate) fill: Option<(&'a dyn BatchSource, &'a [usize])>,
    /// The augmentation each shard applies to its rows once they are filled, if any.
    pub(crate) augment: Option<BatchAugment<'a>>,
}

/// The state of the data-parallel step: a replica of the model for every shard after the
/// first, and every shard's loss. Both grow to the most shards a batch has needed, and nothing
/// is allocated after that.
#[derive(Debug, Clone, Default)]
pub struct DataParallel {
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
    /// The buffers the shard's augmentation works in (made on the first augmented batch).
    augment: Option<Scratch>,
    /// The sum of the gradients of the steps so far when the shard has several steps, every
    /// parameter's gradient one after the other (made on the first such batch).
    grad_sum: Vec<f32>,
}

impl DataParallel {
    /// An empty state: replicas and shard states grow on the first batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The training step's gradient (what [`Trainer`](crate::Trainer) runs each batch) of a
    /// batch already in `images` (`[n, 1, 28, 28]`, row-major; left unchanged) and `labels`,
    /// into `model`'s parameter gradients: returns the batch's mean loss and its correct
    /// predictions. Step the optimizer after it, e.g. `sgd.step(&mut model.params_mut())`.
    ///
    /// ```
    /// use nn::{data_parallel::DataParallel, LeNet5, LeNet5Config};
    /// let mut model = LeNet5::zeros(LeNet5Config::default());
    /// let (mut images, mut labels) = (vec![0.5; 32 * 784], (0..32).map(|i| i % 10).collect::<Vec<_>>());
    /// let (loss, _) = DataParallel::new().batch_gradients(&mut model, &mut images, &mut labels);
    /// assert!((loss - 10f32.ln()).abs() < 1e-5); // all-zero weights: uniform over 10 classes
    /// ```
    pub fn batch_gradients(
        &mut self,
        model: &mut LeNet5,
        images: &mut [f32],
        labels: &mut [usize],
    ) -> (f32, usize) {
        let fill = None;
        self.gradients(
            model,
            Batch {
                images,
                labels,
                fill,
                augment: None,
            },
        )
    }

    /// The gradient of the batch's mean loss into `model`'s parameter gradients, shard by
    /// shard as the module docs say. Returns the batch's mean loss and its correct
    /// predictions. The model's parameters are left unchanged; its layer outputs are those of
    /// shard 0's last step.
    ///
    /// When the loss is not finite, the gradients are left unfinished: the caller must not step.
    pub(crate) fn gradients(&mut self, model: &mut LeNet5, batch: Batch<'_>) -> (f32, usize) {
        let n = batch.labels.len();
        assert_eq!(
            batch.images.len(),
            n * IMAGE_LEN,
            "DataParallel: 1 image per label"
        );
        let r = shard_rows(n);
        let k = n.div_ceil(r);
        self.prepare(model, k);
        let copies = rayon::iter::once(&mut *model).chain(self.replicas[..k - 1].par_iter_mut());
        let rows = batch.images.par_chunks_mut(r * IMAGE_LEN);
        let rows = rows.zip(batch.labels.par_chunks_mut(r)).enumerate();
        let (fill, augment) = (batch.fill, batch.augment);
        copies.zip(&mut self.shards[..k]).zip(rows).for_each(
            |((net, shard), (s, (images, labels)))| {
                if let Some((source, indices)) = fill {
                    source.fill_batch(&indices[s * r..][..labels.len()], images, labels);
                }
                if let Some(aug) = augment {
                    aug.rows(s * r, images, aug.scratch(&mut shard.augment));
                }
                shard.run(net, images, labels, n);
            },
        );
        add_grads(model, &self.replicas[..k - 1]);
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
        copy_params(model, &mut self.replicas[..k - 1]);
    }
}

/// Copies `model`'s parameters into every replica, pieces of each parameter in parallel.
fn copy_params(model: &LeNet5, replicas: &mut [LeNet5]) {
    replicas.par_iter_mut().for_each(|replica| {
        let pairs = replica.params_mut().into_par_iter().zip(model.params());
        pairs.for_each(|(dst, src)| {
            let pieces = dst
                .value
                .par_chunks_mut(PIECE)
                .zip(src.value.par_chunks(PIECE));
            pieces.for_each(|(d, s)| d.copy_from_slice(s));
        });
    });
}

/// Adds the replicas' parameter gradients into `model`'s: every element gets replica 1's,
/// then replica 2's, …, so pieces of each parameter run in parallel and the result has the
/// bits of adding one replica after the other.
fn add_grads(model: &mut LeNet5, replicas: &[LeNet5]) {
    let grads = model.grads_mut().into_par_iter().enumerate();
    grads.for_each(|(i, sum)| {
        sum.par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(c, piece)| {
                for replica in replicas {
                    let part = &replica.params()[i].grad[c * PIECE..][..piece.len()];
                    add(piece, part);
                }
            });
    });
}

impl Shard {
    /// Forward, loss and backward of one shard of a batch of `batch_len` images on `net`, step
    /// by step: its parameter gradients G_s into `net`'s, its summed loss and correct count
    /// into `self`. A non-finite loss skips the backward passes from its step on.
    fn run(&mut self, net: &mut LeNet5, images: &[f32], labels: &[usize], batch_len: usize) {
        let steps = labels.len().div_ceil(STEP_ROWS);
        let images = images.chunks(STEP_ROWS * IMAGE_LEN);
        (self.loss_sum, self.correct) = (0.0, 0);
        for (i, (images, labels)) in images.zip(labels.chunks(STEP_ROWS)).enumerate() {
            if !self.step(net, images, labels, batch_len) {
                return;
            }
            // The last step adds the sum so far into its own gradient in `net`: the same
            // bits as adding its gradient into the sum (a + b = b + a exactly), one pass fewer.
            match i {
                _ if steps == 1 => {}
                0 => self.sum_grads(net, |sum, g| sum.copy_from_slice(g)),
                _ if i + 1 < steps => self.sum_grads(net, |sum, g| add(sum, g)),
                _ => self.sum_grads(net, |sum, g| add(g, sum)),
            }
        }
    }

    /// One step of [`Shard::run`]: its loss and correct count added into `self`, its
    /// parameter gradients into `net`'s. Whether its loss is finite (else no backward pass).
    fn step(&mut self, net: &mut LeNet5, images: &[f32], labels: &[usize], n: usize) -> bool {
        let x = ArrayView4::from_shape((labels.len(), 1, IMAGE_SIZE, IMAGE_SIZE), images)
            .expect("whole images");
        let logits = net.forward_unsplit(x);
        self.correct += count_correct(logits, labels);
        let loss_sum = self.loss.forward_backward_shard(logits, labels, n);
        self.loss_sum += loss_sum;
        if loss_sum.is_finite() {
            net.backward_unsplit(x, self.loss.grad_logits());
        }
        loss_sum.is_finite()
    }

    /// `f(sum, grad)` for each of `net`'s parameter gradients and its part of the shard's
    /// gradient sum (grown to the parameter count once).
    fn sum_grads(&mut self, net: &mut LeNet5, f: impl Fn(&mut [f32], &mut [f32])) {
        let grads = net.grads_mut();
        let len = grads.iter().map(|g| g.len()).sum();
        if self.grad_sum.len() < len {
            self.grad_sum.resize(len, 0.0);
        }
        let mut sum = &mut self.grad_sum[..];
        for g in grads {
            let (part, rest) = sum.split_at_mut(g.len());
            f(part, g);
            sum = rest;
        }
    }
}

/// `sum += part`, element by element.
fn add(sum: &mut [f32], part: &[f32]) {
    sum.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::ActivationKind;
    use crate::data::InMemorySource;
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

    /// [`DataParallel::gradients`] of `images` and `labels` on `net`: with `from_source`, the
    /// shards fill blank buffers from a source holding them, else the buffers come filled.
    fn gradients(
        dp: &mut DataParallel,
        net: &mut LeNet5,
        (images, labels): (&[f32], &[usize]),
        from_source: bool,
    ) -> (f32, usize) {
        let source = InMemorySource::new(images.to_vec(), labels.to_vec());
        let indices: Vec<usize> = (0..labels.len()).collect();
        let (mut x, mut t) = (images.to_vec(), labels.to_vec());
        let fill = if from_source {
            x.fill(f32::NAN);
            t.fill(usize::MAX);
            Some((&source as &dyn BatchSource, &indices[..]))
        } else {
            None
        };
        let batch = Batch {
            images: &mut x,
            labels: &mut t,
            fill,
            augment: None,
        };
        dp.gradients(net, batch)
    }

    fn grads(model: &LeNet5) -> Vec<Vec<f32>> {
        model.params().iter().map(|p| p.grad.to_vec()).collect()
    }

    fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
        v.iter()
            .map(|g| g.iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    /// The rows of every shard of a batch of `n`.
    fn shards(n: usize) -> Vec<std::ops::Range<usize>> {
        let r = shard_rows(n);
        (0..n.div_ceil(r))
            .map(|s| s * r..((s + 1) * r).min(n))
            .collect()
    }

    /// Shards that fill and augment their own rows give the bits of the batch augmented
    /// whole by `Augmenter::apply` (from the same generator state) and then cut, on 1, 2 and 3
    /// threads, for batches of one shard, two and four (the seeds are drawn in image order
    /// before the region, each image's transform from its own seed).
    #[test]
    fn shards_augment_their_rows_as_the_whole_batch_would_be() {
        use crate::augment::{AugmentConfig, Augmenter};
        for n in [20, 32, 70] {
            let (model, images, labels) = setup(n, LeNet5Config::default(), 11);
            let mut augmented = images.clone();
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            Augmenter::new(AugmentConfig::default()).apply(&mut augmented, &mut rng);
            let mut want_net = model.clone();
            let want = gradients(
                &mut DataParallel::new(),
                &mut want_net,
                (&augmented, &labels),
                false,
            );
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
                let mut net = model.clone();
                let got = pool.unwrap().install(|| {
                    let mut aug = Augmenter::new(AugmentConfig::default());
                    let mut rng = ChaCha8Rng::seed_from_u64(5);
                    let source = InMemorySource::new(images.clone(), labels.clone());
                    let indices: Vec<usize> = (0..n).collect();
                    let (mut x, mut t) = (vec![f32::NAN; n * IMAGE_LEN], vec![usize::MAX; n]);
                    let batch = Batch {
                        images: &mut x,
                        labels: &mut t,
                        fill: Some((&source as &dyn BatchSource, &indices[..])),
                        augment: aug.begin_batch(n, &mut rng),
                    };
                    DataParallel::new().gradients(&mut net, batch)
                });
                let at = format!("batch {n}, {threads} threads");
                assert_eq!(got.0.to_bits(), want.0.to_bits(), "{at}: loss");
                assert_eq!(got.1, want.1, "{at}: correct");
                assert_eq!(bits(&grads(&net)), bits(&grads(&want_net)), "{at}");
            }
        }
    }

    #[test]
    fn shards_are_a_function_of_the_batch_size() {
        for (n, sizes) in [
            (1, &[1][..]),
            (31, &[31]),
            (32, &[16, 16]),
            (50, &[17, 17, 16]),
            (64, &[16, 16, 16, 16]),
            (96, &[24, 24, 24, 24]),
            (256, &[64, 64, 64, 64]),
            (1001, &[251, 251, 251, 248]),
        ] {
            let got: Vec<usize> = shards(n).iter().map(|r| r.len()).collect();
            assert_eq!(got, sizes, "n = {n}");
        }
    }

    /// `sum += part` for every parameter, or `sum = part` when `sum` is empty.
    fn add_all(sum: &mut Vec<Vec<f32>>, part: Vec<Vec<f32>>) {
        if sum.is_empty() {
            *sum = part;
            return;
        }
        for (sum, part) in sum.iter_mut().zip(&part) {
            add(sum, part);
        }
    }

    /// The gradients, mean loss and correct count of the batch: each shard's steps of
    /// [`STEP_ROWS`] images run one by one on a copy of `model`, their gradients added in step
    /// order, and the shards' sums added in shard order.
    fn by_hand(model: &LeNet5, images: &[f32], labels: &[usize]) -> (Vec<Vec<f32>>, f32, usize) {
        let n = labels.len();
        let mut sums: Vec<Vec<f32>> = Vec::new();
        let (mut loss_sum, mut correct) = (0.0f64, 0);
        for rows in shards(n) {
            let mut net = model.clone();
            let mut shard_sum = Vec::new();
            let end = rows.end;
            for step in rows.step_by(STEP_ROWS).map(|i| i..(i + STEP_ROWS).min(end)) {
                let x = view(&images[step.start * IMAGE_LEN..step.end * IMAGE_LEN]);
                let mut loss = SoftmaxCrossEntropy::new();
                let logits = net.forward_unsplit(x);
                correct += count_correct(logits, &labels[step.clone()]);
                loss_sum += loss.forward_backward_shard(logits, &labels[step], n);
                net.backward_unsplit(x, loss.grad_logits());
                add_all(&mut shard_sum, grads(&net));
            }
            add_all(&mut sums, shard_sum);
        }
        (sums, (loss_sum / n as f64) as f32, correct)
    }

    /// The sharded gradient, loss and count have the bits of the shards run one by one on
    /// copies of the model (the loss gradient over the batch's n) and added in shard order,
    /// on 1, 2 and 3 threads, with the batch filled before or by the shards; the model's
    /// parameters do not change.
    #[test]
    fn the_gradient_is_the_shards_gradients_added_in_order_on_any_thread_count() {
        let tanh_max = LeNet5Config {
            activation: ActivationKind::Tanh,
            pooling: PoolKind::Max,
            ..LeNet5Config::default()
        };
        let default = LeNet5Config::default();
        let sizes = [
            (20, default),
            (32, default),
            (50, tanh_max),
            (96, default),
            (256, default),
        ];
        for (n, config) in sizes {
            let (model, images, labels) = setup(n, config, n as u64);
            let (want, want_loss, correct) = by_hand(&model, &images, &labels);
            let mut dp = DataParallel::default();
            for (threads, from_source) in [(1, false), (2, false), (3, false), (2, true)] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut net = model.clone();
                let batch = (&images[..], &labels[..]);
                let (loss, right) =
                    pool.install(|| gradients(&mut dp, &mut net, batch, from_source));
                let what = format!("n = {n}, {threads} threads, filled by shards {from_source}");
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
            let mut dp = DataParallel::default();
            let (got_loss, got_correct) = gradients(&mut dp, &mut net, (&images, &labels), false);
            assert_eq!(got_correct, whole_correct, "n = {n}");
            // each step's mean loss is rounded to f32 once, as the whole batch's is
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
