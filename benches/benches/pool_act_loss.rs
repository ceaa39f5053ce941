//! The memory-bound passes of a LeNet-5 step at batch 256, as nn calls them (`_into` forms,
//! caller-owned outputs): 2×2/2 average and max pooling forward and backward after conv1
//! (`[256, 6, 28, 28]`) and conv2 (`[256, 16, 10, 10]`), ReLU forward and backward on conv1's
//! output, and the fused softmax cross-entropy (loss and gradient) on `[256, 10]` logits.
//!
//! Run: `cargo bench -p lenet-benches --bench pool_act_loss -- --warm-up-time 1 --measurement-time 2`.
//! Criterion's throughput is in input elements per second. The summary prints µs per call,
//! elements/s and the bytes read + written per second (these passes do ~1 flop per element, so
//! memory bandwidth is their measure). `POOL_SUMMARY_ONLY=1` skips the criterion runs.

use criterion::{black_box, Criterion, Throughput};
use lenet_benches::{median_secs, pool, random, test_mode, threads};
use ndarray::{Array2, Array4};
use tensor::{
    avg_pool2d_backward_into, avg_pool2d_into, max_pool2d_backward_into, max_pool2d_into,
    softmax_cross_entropy_into, Activation, Pool2dParams,
};

const BATCH: usize = 256;

/// Buffers for every pass, filled once.
struct Bufs {
    /// conv outputs (pool inputs), pooled outputs and their gradients, per layer.
    x: [Array4<f32>; 2],
    y: [Array4<f32>; 2],
    gy: [Array4<f32>; 2],
    gx: [Array4<f32>; 2],
    /// ReLU on conv1's output.
    relu_y: Array4<f32>,
    logits: Array2<f32>,
    targets: Vec<usize>,
    glogits: Array2<f32>,
}

impl Bufs {
    fn new() -> Self {
        let dims = [(6, 28), (16, 10)];
        let x = dims.map(|(c, hw)| random((BATCH, c, hw, hw), c as u64));
        let y = dims.map(|(c, hw)| Array4::zeros((BATCH, c, hw / 2, hw / 2)));
        let gy = dims.map(|(c, hw)| random((BATCH, c, hw / 2, hw / 2), 10 + c as u64));
        let gx = dims.map(|(c, hw)| Array4::zeros((BATCH, c, hw, hw)));
        Bufs {
            relu_y: Array4::zeros(x[0].raw_dim()),
            x,
            y,
            gy,
            gx,
            logits: random((BATCH, 10), 20) * 3.0,
            targets: (0..BATCH).map(|i| (i * 7) % 10).collect(),
            glogits: Array2::zeros((BATCH, 10)),
        }
    }
}

/// One benchmarked pass: its name, elements of input, bytes moved, and the call.
struct Pass {
    name: String,
    elements: u64,
    bytes: u64,
    run: Box<dyn Fn(&mut Bufs)>,
}

impl Pass {
    fn new(name: String, elements: u64, bytes: u64, run: impl Fn(&mut Bufs) + 'static) -> Self {
        Pass {
            name,
            elements,
            bytes,
            run: Box::new(run),
        }
    }
}

fn passes() -> Vec<Pass> {
    let p = Pool2dParams::square(2);
    let mut v = Vec::new();
    for (i, layer) in ["pool1 6x28x28", "pool2 16x10x10"].into_iter().enumerate() {
        let e = [6 * 28 * 28, 16 * 10 * 10][i] as u64 * BATCH as u64;
        // Forward reads x and writes y (¼ of x); avg backward reads gy and writes gx; max
        // backward also reads x to find each window's maximum.
        let bytes = 4 * (e + e / 4);
        v.push(Pass::new(format!("avg_fwd {layer}"), e, bytes, move |b| {
            avg_pool2d_into(black_box(b.x[i].view()), p, b.y[i].view_mut())
        }));
        v.push(Pass::new(format!("avg_bwd {layer}"), e, bytes, move |b| {
            avg_pool2d_backward_into(black_box(b.gy[i].view()), p, b.gx[i].view_mut())
        }));
        v.push(Pass::new(format!("max_fwd {layer}"), e, bytes, move |b| {
            max_pool2d_into(black_box(b.x[i].view()), p, b.y[i].view_mut())
        }));
        v.push(Pass::new(
            format!("max_bwd {layer}"),
            e,
            bytes + 4 * e,
            move |b| {
                let (x, gy) = (b.x[i].view(), b.gy[i].view());
                max_pool2d_backward_into(black_box(x), gy, p, b.gx[i].view_mut())
            },
        ));
    }
    let e = (6 * 28 * 28 * BATCH) as u64;
    v.push(Pass::new("relu_fwd 6x28x28".into(), e, 8 * e, |b| {
        Activation::Relu.forward_into(black_box(b.x[0].view()), b.relu_y.view_mut())
    }));
    v.push(Pass::new("relu_bwd 6x28x28".into(), e, 12 * e, |b| {
        Activation::Relu.backward_into(
            black_box(b.relu_y.view()),
            b.x[0].view(),
            b.gx[0].view_mut(),
        )
    }));
    let e = (BATCH * 10) as u64;
    v.push(Pass::new("softmax_xent 10".into(), e, 8 * e, |b| {
        black_box(softmax_cross_entropy_into(
            black_box(b.logits.view()),
            &b.targets,
            b.glogits.view_mut(),
        ));
    }));
    v
}

fn bench(cr: &mut Criterion, bufs: &mut Bufs) {
    for p in passes() {
        let mut group = cr.benchmark_group("pool_act_loss");
        group.throughput(Throughput::Elements(p.elements));
        group.bench_function(format!("{} n{BATCH}", p.name), |b| b.iter(|| (p.run)(bufs)));
        group.finish();
    }
}

fn summary(bufs: &mut Bufs, threads: usize) {
    println!("\npool/activation/loss summary (batch {BATCH}, {threads} threads, medians)");
    println!(
        "{:<24} {:>10} {:>12} {:>10}",
        "pass", "µs/call", "Gelem/s", "GB/s"
    );
    for p in passes() {
        let t = median_secs(&mut || (p.run)(bufs), 7, 0.02);
        println!(
            "{:<24} {:>10.1} {:>12.2} {:>10.1}",
            p.name,
            t * 1e6,
            p.elements as f64 / t / 1e9,
            p.bytes as f64 / t / 1e9
        );
    }
}

fn main() {
    let threads = threads();
    let mut bufs = Bufs::new();
    pool(threads).install(|| {
        let mut cr = Criterion::default().configure_from_args();
        if std::env::var_os("POOL_SUMMARY_ONLY").is_none() {
            bench(&mut cr, &mut bufs);
            cr.final_summary();
        }
        if !test_mode() {
            summary(&mut bufs, threads);
        }
    });
}
