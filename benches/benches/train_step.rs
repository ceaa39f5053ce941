//! One full LeNet-5 training step as `lenet train` runs it — the data-parallel gradient
//! (`nn::data_parallel`: forward, fused softmax cross-entropy and backward, shard by shard) and
//! the SGD update — at batch 32
//! (SGD lr 0.01, no momentum) and batch 256 (lr 0.05, momentum 0.9), the two settings of the
//! issue's epoch comparison with PyTorch. The batch is fixed (filling it from u8 data is not
//! timed here; `lenet train` times that too).
//!
//! Run: `cargo bench -p lenet-benches --bench train_step -- --warm-up-time 1 --measurement-time 2`.
//! Criterion's throughput is in flops (2,263,920 per trained image, see `lenet_benches::flops`),
//! so read `Gelem/s` as GFLOP/s. The summary adds images/s and the time the 1,875 (or 235)
//! steps of a 60,000-image epoch would take. `STEP_SUMMARY_ONLY=1` skips the criterion runs.

use criterion::{Criterion, Throughput};
use lenet_benches::{flops, median_secs, pool, synthetic_digits, test_mode, threads};
use nn::data_parallel::DataParallel;
use nn::{LeNet5, LeNet5Config, Sgd, SgdConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor::Tier;

/// Model, loss, optimizer and one batch.
struct Step {
    model: LeNet5,
    step: DataParallel,
    sgd: Sgd,
    images: Vec<f32>,
    labels: Vec<usize>,
    last_loss: f32,
}

impl Step {
    fn new(batch: usize, lr: f32, momentum: f32) -> Self {
        let model = LeNet5::new(LeNet5Config::default(), &mut ChaCha8Rng::seed_from_u64(1));
        let config = SgdConfig {
            lr,
            momentum,
            weight_decay: 0.0,
            nesterov: false,
        };
        let sgd = Sgd::new(config, model.params().iter().map(|p| p.value.len()));
        let (images, labels) = synthetic_digits(batch, 7);
        Step {
            model,
            step: DataParallel::new(),
            sgd,
            images,
            labels,
            last_loss: f32::NAN,
        }
    }

    fn run(&mut self) {
        let (images, labels) = (&mut self.images, &mut self.labels);
        (self.last_loss, _) = self.step.batch_gradients(&mut self.model, images, labels);
        self.sgd.step(&mut self.model.params_mut());
    }
}

/// (batch, lr, momentum) of the two epoch settings.
const SETTINGS: [(usize, f32, f32); 2] = [(32, 0.01, 0.0), (256, 0.05, 0.9)];

fn bench(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("train_step");
    for (batch, lr, momentum) in SETTINGS {
        let mut step = Step::new(batch, lr, momentum);
        group.throughput(Throughput::Elements(flops::TRAIN * batch as u64));
        group.bench_function(format!("lenet5_n{batch}"), |b| b.iter(|| step.run()));
        assert!(step.last_loss.is_finite(), "training diverged");
    }
    group.finish();
}

fn summary(threads: usize) {
    println!(
        "\ntrain step summary (gemm kernel: {}, {threads} threads, medians of 50 ms batches of steps)",
        Tier::active().name()
    );
    println!(
        "{:<8} {:>10} {:>10} {:>9} {:>16}",
        "batch", "ms/step", "images/s", "GFLOP/s", "60k-image train"
    );
    for (batch, lr, momentum) in SETTINGS {
        let mut step = Step::new(batch, lr, momentum);
        let t = median_secs(&mut || step.run(), 9, 0.05);
        assert!(step.last_loss.is_finite(), "training diverged");
        println!(
            "{:<8} {:>10.3} {:>10.0} {:>9.1} {:>15.2}s",
            batch,
            t * 1e3,
            batch as f64 / t,
            (flops::TRAIN * batch as u64) as f64 / t / 1e9,
            t * 60_000usize.div_ceil(batch) as f64
        );
    }
}

fn main() {
    let threads = threads();
    pool(threads).install(|| {
        let mut cr = Criterion::default().configure_from_args();
        if std::env::var_os("STEP_SUMMARY_ONLY").is_none() {
            bench(&mut cr);
            cr.final_summary();
        }
        if !test_mode() {
            summary(threads);
        }
    });
}
