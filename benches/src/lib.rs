//! Benchmarks live in `benches/benches/`; run them with `cargo bench -p lenet-benches`.
//!
//! This library holds what several benchmark files share: LeNet-5's flop counts, a robust
//! timer for the printed summaries (medians, so a noisy shared machine hurts less), random
//! inputs and the rayon pool the benchmarks run in.
//!
//! | file | what |
//! | --- | --- |
//! | `matmul.rs` | `tensor::gemm` (α = 1, β = 0) vs ndarray's `general_mat_mul` on LeNet's products and 512³ |
//! | `conv2d.rs` | conv1/conv2 forward and backward at batch 32 and 256 vs an ndarray im2col baseline |
//! | `pool_act_loss.rs` | avg/max pooling forward+backward, relu, softmax cross-entropy at batch 256 |
//! | `train_step.rs` | one full LeNet-5 SGD step (forward, loss, backward, update) at batch 32 and 256 |
//! | `eval.rs` | the evaluation pass over 10,000 images (real test set if `LENET_DATA_DIR` is set) |

use ndarray::{Array, Dimension, ShapeBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// Flops (multiply and add counted separately) of one forward pass of LeNet-5 per image,
/// layer by layer: `2 · outputs · fan-in`.
pub mod flops {
    /// conv1: 6×28×28 outputs, each a 1·5·5 dot product.
    pub const CONV1: u64 = 2 * (6 * 28 * 28) * 25;
    /// conv2: 16×10×10 outputs, each a 6·5·5 dot product.
    pub const CONV2: u64 = 2 * (16 * 10 * 10) * 150;
    /// fc1: 120 outputs of 400 inputs.
    pub const FC1: u64 = 2 * 120 * 400;
    /// fc2: 84 outputs of 120 inputs.
    pub const FC2: u64 = 2 * 84 * 120;
    /// fc3: 10 outputs of 84 inputs.
    pub const FC3: u64 = 2 * 10 * 84;
    /// One evaluated image: the forward products (833,040 flops; pooling, activations and the
    /// loss add about 0.1% and are not counted).
    pub const FORWARD: u64 = CONV1 + CONV2 + FC1 + FC2 + FC3;
    /// One trained image: every product three times (forward, weight gradient, input gradient)
    /// except conv1, which needs no input gradient (2,263,920 flops).
    pub const TRAIN: u64 = 2 * CONV1 + 3 * (CONV2 + FC1 + FC2 + FC3);
    /// One epoch: 60,000 trained and 10,000 evaluated images (about 144.2 GFLOP).
    pub const EPOCH: u64 = 60_000 * TRAIN + 10_000 * FORWARD;
}

/// Flops of one convolution forward pass: `2 · n · k · (c·kh·kw) · (oh·ow)`.
pub fn conv_flops(n: usize, k: usize, ckk: usize, positions: usize) -> u64 {
    2 * (n * k * ckk * positions) as u64
}

/// An array of the given shape filled with uniform values in `[-1, 1)` from a fixed seed.
pub fn random<D: Dimension, Sh: ShapeBuilder<Dim = D>>(shape: Sh, seed: u64) -> Array<f32, D> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array::from_shape_simple_fn(shape, || rng.gen_range(-1.0f32..1.0))
}

/// `n` synthetic 28×28 digits in `[0, 1]` with labels: faint noise plus a bright 6×6 square
/// whose position encodes the class, so a model trained on them learns (and its activations
/// look like those of real data, not like exploding noise).
pub fn synthetic_digits(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0.0f32; n * 784];
    let mut labels = vec![0usize; n];
    for (img, label) in images.chunks_exact_mut(784).zip(labels.iter_mut()) {
        let k = rng.gen_range(0..10);
        *label = k;
        img.iter_mut().for_each(|p| *p = rng.gen_range(0.0..0.3));
        let top = 3 + (k / 5) * 12 + rng.gen_range(0..3);
        let left = 1 + (k % 5) * 5 + rng.gen_range(0..2);
        for i in top..top + 6 {
            img[i * 28 + left..i * 28 + (left + 6).min(28)].fill(1.0);
        }
    }
    (images, labels)
}

/// Median seconds per call of `f` over `reps` samples, each a batch of calls lasting about
/// `batch_secs` (at least one call).
pub fn median_secs(f: &mut dyn FnMut(), reps: usize, batch_secs: f64) -> f64 {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(50));
    let batch = (batch_secs / once.as_secs_f64()).clamp(1.0, 1e6) as usize;
    let mut samples: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_secs_f64() / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median seconds per call of `f(side)` for each `side` in `0..sides`, the sides timed
/// alternately (`rounds` rounds of [`median_secs`] each) so that a burst of load from other
/// processes hits every side alike.
pub fn alternating_medians(
    f: &mut dyn FnMut(usize),
    sides: usize,
    rounds: usize,
    batch_secs: f64,
) -> Vec<f64> {
    let mut times = vec![Vec::new(); sides];
    for _ in 0..rounds.max(1) {
        for (side, t) in times.iter_mut().enumerate() {
            t.push(median_secs(&mut || f(side), 3, batch_secs));
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

/// Worker threads for the benchmarks: `RAYON_NUM_THREADS` if set, else 2 (the `lenet train`
/// default on the 2-core machines this project measures on).
pub fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

/// A rayon pool of `n` threads. The benchmarks run inside one (`pool.install`), as
/// `lenet train` does, so that kernels fork from a worker thread and not from outside the pool.
pub fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("cannot start the rayon pool")
}

/// True when criterion runs the benchmarks as tests (`cargo test --benches`, or a bench target
/// built by `cargo test --workspace`): then the printed summaries are skipped, they only time.
pub fn test_mode() -> bool {
    // criterion's own rule: benchmark only when `--bench` is given and `--test` is not.
    let has = |flag: &str| std::env::args().any(|a| a == flag);
    !has("--bench") || has("--test")
}

#[cfg(test)]
mod tests {
    use super::flops;

    #[test]
    fn flop_counts_match_the_issue() {
        // The issue quotes 2.26 MFLOP per trained image, 0.83 per evaluated one, ~144 GFLOP per
        // epoch; the per-layer constants above must add up to those.
        assert_eq!(flops::FORWARD, 833_040);
        assert_eq!(flops::TRAIN, 2_263_920);
        assert_eq!(flops::EPOCH, 60_000 * 2_263_920 + 10_000 * 833_040);
        assert!((flops::EPOCH as f64 / 1e9 - 144.2).abs() < 0.05);
    }
}
