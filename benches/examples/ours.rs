//! Our side of `benches/scripts/compare.py`: one measurement per run, printed as one line.
//!
//! ```text
//! cargo run --release -p lenet-benches --example ours -- sgemm THREADS [SIZE]
//! cargo run --release -p lenet-benches --example ours -- infer THREADS FASHION_MNIST_DIR
//! ```
//!
//! `sgemm` times `tensor::gemm` (α = 1, β = 0) on `SIZE³` f32 row-major operands (default 512) inside a
//! rayon pool of `THREADS` threads and prints `sgemm SIZE THREADS KERNEL GFLOP/s` (median of 15
//! samples of about 50 ms each, after a warm-up). `infer` runs nn's `Evaluator` (batch 1000, as
//! PyTorch's reference) over the 10,000 test images of the folder and prints
//! `infer THREADS KERNEL IMAGES/s` (median of 5 passes after one warm-up pass). The kernel path
//! follows `LENET_KERNEL`.

use lenet_benches::{median_secs, pool, random};
use mnist::Split;
use ndarray::Array2;
use nn::{BatchSource, Evaluator, LeNet5, LeNet5Config};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::ExitCode;
use tensor::{gemm, Tier};

/// A u8 split seen as an nn batch source (pixels scaled to `p / 255`).
struct Source(Split);

impl BatchSource for Source {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn fill_batch(&self, indices: &[usize], images: &mut [f32], labels: &mut [usize]) {
        self.0.write_batch(indices, images, labels);
    }
}

/// GFLOP/s of `size³` row-major products on the current pool.
fn sgemm(size: usize) -> f64 {
    let a: Array2<f32> = random((size, size), 1);
    let b: Array2<f32> = random((size, size), 2);
    let mut c = Array2::<f32>::zeros((size, size));
    let secs = median_secs(
        &mut || gemm(1.0, a.view(), b.view(), 0.0, c.view_mut()),
        15,
        0.05,
    );
    2.0 * (size * size * size) as f64 / secs / 1e9
}

/// Images per second of the evaluation pass over the test set in `dir`.
fn infer(dir: &Path) -> Result<f64, String> {
    let images = mnist::locate_file(dir, mnist::TEST_IMAGES);
    let labels = mnist::locate_file(dir, mnist::TEST_LABELS);
    let source = Source(Split::read(&images, &labels).map_err(|e| e.to_string())?);
    let model = LeNet5::new(LeNet5Config::default(), &mut ChaCha8Rng::seed_from_u64(0));
    let mut evaluator = Evaluator::new(1000);
    let mut seen = 0;
    let secs = median_secs(
        &mut || seen = evaluator.evaluate(&model, &source).total,
        5,
        0.0,
    );
    if seen != source.len() {
        return Err(format!("evaluated {seen} of {} images", source.len()));
    }
    Ok(source.len() as f64 / secs)
}

fn run(args: &[String]) -> Result<String, String> {
    let usage = "usage: ours sgemm THREADS [SIZE] | ours infer THREADS FASHION_MNIST_DIR";
    let threads: usize = args
        .get(1)
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .ok_or(usage)?;
    let kernel = Tier::active().name();
    match (args[0].as_str(), args.get(2)) {
        ("sgemm", size) => {
            let size = size.map_or(Ok(512), |s| s.parse().map_err(|_| usage))?;
            let rate = pool(threads).install(|| sgemm(size));
            Ok(format!("sgemm {size} {threads} {kernel} {rate:.1}"))
        }
        ("infer", Some(dir)) => {
            let rate = pool(threads).install(|| infer(Path::new(dir)))?;
            Ok(format!("infer {threads} {kernel} {rate:.0}"))
        }
        _ => Err(usage.into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: ours sgemm THREADS [SIZE] | ours infer THREADS FASHION_MNIST_DIR");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ours: {e}");
            ExitCode::FAILURE
        }
    }
}
