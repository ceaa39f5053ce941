//! The evaluation pass over 10,000 images: nn's `Evaluator` (u8 pixels converted per batch,
//! forward pass, loss, argmax) at eval batch 256 (the `lenet train` default) and 1000 (the batch
//! of PyTorch's inference figure in `compare.py`), and the latency of one image alone
//! (`single_image`: one forward pass at batch 1 on a ready model, what `lenet predict` and
//! `lenet serve` do per request).
//!
//! Data: the real MNIST test set when `LENET_DATA_DIR` is set (read with the mnist crate from
//! `$LENET_DATA_DIR/mnist`), otherwise 10,000 synthetic digits stored as u8 the same way.
//!
//! Run: `cargo bench -p lenet-benches --bench eval -- --warm-up-time 1 --measurement-time 2`.
//! Criterion's throughput is in images (read `Kelem/s` as thousands of images/s). The summary
//! prints images/s and GFLOP/s (833,040 flops per image). `EVAL_SUMMARY_ONLY=1` skips criterion.

use criterion::{Criterion, Throughput};
use lenet_benches::{flops, median_secs, pool, synthetic_digits, test_mode, threads};
use mnist::{DatasetKind, Split};
use ndarray::{Array1, Array3};
use nn::{BatchSource, Evaluator, LeNet5, LeNet5Config};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use tensor::Tier;

/// A u8 split seen as an nn batch source (pixels scaled to `p / 255`), like `lenet`'s own.
struct Source(Split);

impl BatchSource for Source {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn fill_batch(&self, indices: &[usize], images: &mut [f32], labels: &mut [usize]) {
        self.0.write_batch(indices, images, labels);
    }
}

/// The MNIST test set if `LENET_DATA_DIR` is set, else synthetic digits; and a description.
fn test_set() -> (Source, String) {
    if let Some(root) = std::env::var_os("LENET_DATA_DIR") {
        let dir = PathBuf::from(root).join(DatasetKind::Mnist.dir_name());
        let images = mnist::locate_file(&dir, mnist::TEST_IMAGES);
        let labels = mnist::locate_file(&dir, mnist::TEST_LABELS);
        match Split::read(&images, &labels) {
            Ok(split) => {
                return (
                    Source(split),
                    format!("MNIST test set from {}", dir.display()),
                )
            }
            Err(e) => panic!("LENET_DATA_DIR is set but the MNIST test set cannot be read: {e}"),
        }
    }
    let (pixels, labels) = synthetic_digits(10_000, 3);
    let images = Array3::from_shape_vec(
        (10_000, 28, 28),
        pixels.iter().map(|&p| (p * 255.0).round() as u8).collect(),
    )
    .expect("10,000 28×28 images");
    let labels = Array1::from(labels.iter().map(|&l| l as u8).collect::<Vec<_>>());
    let split = Split { images, labels };
    (
        Source(split),
        "10,000 synthetic u8 digits (LENET_DATA_DIR not set)".into(),
    )
}

const BATCHES: [usize; 2] = [256, 1000];

fn model() -> LeNet5 {
    LeNet5::new(LeNet5Config::default(), &mut ChaCha8Rng::seed_from_u64(1))
}

fn bench(cr: &mut Criterion, source: &Source) {
    let mut group = cr.benchmark_group("eval_10k");
    group.throughput(Throughput::Elements(source.len() as u64));
    group.sample_size(10);
    for batch in BATCHES {
        let (model, mut evaluator) = (model(), Evaluator::new(batch));
        group.bench_function(format!("eval_batch{batch}"), |b| {
            b.iter(|| evaluator.evaluate(&model, source))
        });
    }
    group.finish();

    let mut group = cr.benchmark_group("single_image");
    let mut model = model();
    let mut image = ndarray::Array4::<f32>::zeros((1, 1, 28, 28));
    let mut label = [0usize];
    source.fill_batch(
        &[0],
        image.as_slice_mut().expect("standard layout"),
        &mut label,
    );
    group.bench_function("forward_batch1", |b| {
        b.iter(|| std::hint::black_box(model.forward_inference(image.view())[[0, 0]]))
    });
    group.finish();
}

fn summary(source: &Source, what: &str, threads: usize) {
    println!(
        "\nevaluation summary ({what}; gemm kernel: {}, {threads} threads, medians of 5 passes)",
        Tier::active().name()
    );
    println!(
        "{:<12} {:>10} {:>12} {:>9}",
        "eval batch", "s/pass", "images/s", "GFLOP/s"
    );
    for batch in BATCHES {
        let (model, mut evaluator) = (model(), Evaluator::new(batch));
        let mut total = 0;
        let t = median_secs(
            &mut || total = evaluator.evaluate(&model, source).total,
            5,
            0.0,
        );
        assert_eq!(total, source.len());
        let n = source.len() as f64;
        println!(
            "{:<12} {:>10.4} {:>12.0} {:>9.1}",
            batch,
            t,
            n / t,
            n * flops::FORWARD as f64 / t / 1e9
        );
    }
}

fn main() {
    let threads = threads();
    let (source, what) = test_set();
    pool(threads).install(|| {
        let mut cr = Criterion::default().configure_from_args();
        if std::env::var_os("EVAL_SUMMARY_ONLY").is_none() {
            bench(&mut cr, &source);
            cr.final_summary();
        }
        if !test_mode() {
            summary(&source, &what, threads);
        }
    });
}
