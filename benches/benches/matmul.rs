//! `tensor::gemm` (α = 1, β = 0) against ndarray's `general_mat_mul` (the `matrixmultiply` crate) on
//! the products LeNet-5 computes, plus 512³.
//!
//! Run: `cargo bench -p lenet-benches --bench matmul -- --warm-up-time 1 --measurement-time 3`.
//! Criterion reports each product's rate in elements/s where one "element" is one flop
//! (`2·m·n·k` per product), i.e. read `Gelem/s` as GFLOP/s. After the criterion groups a short
//! summary table prints both rates and the ratio ours/ndarray per shape (from interleaved timing
//! runs, so machine noise hits both sides alike). `LENET_KERNEL=portable|avx2|avx512`
//! selects the kernel; the summary names the one that ran. `MATMUL_SUMMARY_ONLY=1` skips the
//! criterion runs and prints only the table.
//!
//! Everything runs inside a rayon pool of `RAYON_NUM_THREADS` threads (default 2), as in
//! `lenet train`: our products above the split threshold (fc1 at batch 256, 512³) use them all;
//! ndarray's `general_mat_mul` is single-threaded. `RAYON_NUM_THREADS=1` compares one thread
//! with one thread.

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use lenet_benches::{pool, threads};
use ndarray::linalg::general_mat_mul;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};
use tensor::{gemm, Tier};

/// One product `C[m, n] = op(A)·op(B)` with inner dimension `k`; `ta`/`tb` say whether the
/// operand is a `.t()` view of a row-major array (as the layers pass them).
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

const fn shape(name: &'static str, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Shape {
    Shape {
        name,
        m,
        n,
        k,
        ta,
        tb,
    }
}

/// LeNet-5's products: convolutions per image (im2col), linear layers per batch (N = 32, 256).
const SHAPES: &[Shape] = &[
    shape("conv1_fwd W.cols", 6, 784, 25, false, false),
    shape("conv2_fwd W.cols", 16, 100, 150, false, false),
    shape("conv1_dW gout.colsT", 6, 25, 784, false, true),
    shape("conv2_dW gout.colsT", 16, 150, 100, false, true),
    shape("conv1_dcols WT.gout", 25, 784, 6, true, false),
    shape("conv2_dcols WT.gout", 150, 100, 16, true, false),
    shape("fc1_fwd x.WT N32", 32, 120, 400, false, true),
    shape("fc1_dx gy.W N32", 32, 400, 120, false, false),
    shape("fc1_dW gyT.x N32", 120, 400, 32, true, false),
    shape("fc2_fwd x.WT N32", 32, 84, 120, false, true),
    shape("fc2_dx gy.W N32", 32, 120, 84, false, false),
    shape("fc2_dW gyT.x N32", 84, 120, 32, true, false),
    shape("fc3_fwd x.WT N32", 32, 10, 84, false, true),
    shape("fc3_dx gy.W N32", 32, 84, 10, false, false),
    shape("fc3_dW gyT.x N32", 10, 84, 32, true, false),
    shape("fc1_fwd x.WT N256", 256, 120, 400, false, true),
    shape("fc1_dx gy.W N256", 256, 400, 120, false, false),
    shape("fc1_dW gyT.x N256", 120, 400, 256, true, false),
    shape("fc2_fwd x.WT N256", 256, 84, 120, false, true),
    shape("fc2_dx gy.W N256", 256, 120, 84, false, false),
    shape("fc2_dW gyT.x N256", 84, 120, 256, true, false),
    shape("fc3_fwd x.WT N256", 256, 10, 84, false, true),
    shape("fc3_dx gy.W N256", 256, 84, 10, false, false),
    shape("fc3_dW gyT.x N256", 10, 84, 256, true, false),
    shape("square 512", 512, 512, 512, false, false),
];

/// The operands of one shape: row-major storage, handed out as plain or `.t()` views.
struct Operands {
    a: Array2<f32>,
    b: Array2<f32>,
    c: Array2<f32>,
    s: Shape,
}

impl Operands {
    fn new(s: Shape, rng: &mut ChaCha8Rng) -> Self {
        let mut random = |r, c| Array2::from_shape_fn((r, c), |_| rng.gen_range(-1.0f32..1.0));
        let a = if s.ta {
            random(s.k, s.m)
        } else {
            random(s.m, s.k)
        };
        let b = if s.tb {
            random(s.n, s.k)
        } else {
            random(s.k, s.n)
        };
        Operands {
            a,
            b,
            c: Array2::zeros((s.m, s.n)),
            s,
        }
    }

    fn flops(&self) -> u64 {
        2 * (self.s.m * self.s.n * self.s.k) as u64
    }
}

fn run_ours(o: &mut Operands) {
    let Operands { a, b, c, s } = o;
    let av = if s.ta { a.t() } else { a.view() };
    let bv = if s.tb { b.t() } else { b.view() };
    gemm(1.0, black_box(av), black_box(bv), 0.0, c.view_mut());
}

fn run_ndarray(o: &mut Operands) {
    let Operands { a, b, c, s } = o;
    let av = if s.ta { a.t() } else { a.view() };
    let bv = if s.tb { b.t() } else { b.view() };
    general_mat_mul(1.0, &black_box(av), &black_box(bv), 0.0, c);
}

fn bench_matmul(cr: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for &s in SHAPES {
        let mut o = Operands::new(s, &mut rng);
        let mut group = cr.benchmark_group(format!("matmul/{}", s.name));
        group.throughput(Throughput::Elements(o.flops()));
        let label = format!("{}x{}x{}", s.m, s.n, s.k);
        group.bench_function(BenchmarkId::new("ours", &label), |bench| {
            bench.iter(|| run_ours(&mut o))
        });
        group.bench_function(BenchmarkId::new("ndarray", &label), |bench| {
            bench.iter(|| run_ndarray(&mut o))
        });
        group.finish();
    }
}

/// Median seconds per call of `f`, timed in batches of about 2 ms.
fn median_time(f: &mut dyn FnMut(), reps: usize) -> f64 {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(50));
    let batch = (2e-3 / once.as_secs_f64()).clamp(1.0, 100_000.0) as usize;
    let mut samples: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_secs_f64() / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[reps / 2]
}

/// Prints GFLOP/s of both implementations and their ratio, timing them alternately.
fn summary() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!(
        "\nmatmul summary (kernel: {}, {} threads for ours, GFLOP/s, median of alternating 2 ms \
         batches)",
        Tier::active().name(),
        rayon::current_num_threads()
    );
    println!(
        "{:<24} {:>15} {:>9} {:>9} {:>7}",
        "shape", "m x n x k", "ours", "ndarray", "ratio"
    );
    for &s in SHAPES {
        if !filter.is_empty() && !filter.iter().any(|f| s.name.contains(f.as_str())) {
            continue;
        }
        let mut o = Operands::new(s, &mut rng);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            ours.push(median_time(&mut || run_ours(&mut o), 5));
            theirs.push(median_time(&mut || run_ndarray(&mut o), 5));
        }
        ours.sort_by(f64::total_cmp);
        theirs.sort_by(f64::total_cmp);
        let gflops = |t: f64| o.flops() as f64 / t / 1e9;
        let (to, tn) = (ours[2], theirs[2]);
        println!(
            "{:<24} {:>15} {:>9.1} {:>9.1} {:>6.2}x",
            s.name,
            format!("{}x{}x{}", s.m, s.n, s.k),
            gflops(to),
            gflops(tn),
            tn / to
        );
    }
}

criterion_group!(benches, bench_matmul);

fn main() {
    pool(threads()).install(|| {
        // `MATMUL_SUMMARY_ONLY=1` skips criterion and prints only the quick table (for tuning).
        if std::env::var_os("MATMUL_SUMMARY_ONLY").is_none() {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
        summary();
    });
}
