//! LeNet-5's two convolutions, forward and backward, at batch 32 and 256, in steady state:
//! a `Conv2dPlan`'s `inference_into` / `backward_into` (the thread's scratch reused, nothing kept
//! from forward to backward) with caller-owned outputs. Backward computes the weight and bias
//! gradients, plus the input gradient for conv2 only (conv1's input gradient is never needed in
//! training).
//!
//! **Baseline** (in this file, timed in the same run): a straightforward im2col convolution on
//! ndarray — per image, copy the windows into a column matrix, then ndarray's
//! `general_mat_mul` (the `matrixmultiply` crate) for `W·cols`, `g·colsᵀ` and `Wᵀ·g`, then
//! col2im — single-threaded, into preallocated buffers (no allocation in its loop either).
//!
//! **Methods**: the method a plan picks for each layer (`Conv2dMethod::Direct` for conv1, one
//! input channel; `Conv2dMethod::Shifted` for conv2, stride 1) against `Conv2dMethod::Im2col`
//! on the same layer, forward and backward (as in training: weight and bias gradient, plus the
//! input gradient for conv2), both forced on a plan (`Conv2dPlan::with_method`, the
//! `bench-internals` feature); the summary prints their alternating medians and the ratio.
//!
//! Run: `cargo bench -p lenet-benches --bench conv2d -- --warm-up-time 1 --measurement-time 2`.
//! Criterion reports elements/s with one element = one flop (read `Gelem/s` as GFLOP/s). A
//! summary table follows: GFLOP/s of ours on the bench pool (2 threads unless
//! `RAYON_NUM_THREADS` says otherwise), ours on 1 thread and the baseline, from alternating
//! timings, and the ratios. `CONV_SUMMARY_ONLY=1` skips the criterion runs.

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use lenet_benches::{alternating_medians, conv_flops, pool, random, test_mode, threads};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array1, Array2, Array4, ArrayView2, ArrayView3, ArrayViewMut3, Axis};
use tensor::internals::Conv2dMethod;
use tensor::{Conv2dParams, Conv2dPlan, Tier};

/// One LeNet-5 convolution at one batch size.
#[derive(Clone, Copy)]
struct Layer {
    name: &'static str,
    c: usize,
    k: usize,
    hw: usize,
    pad: usize,
    /// Whether training needs the input gradient (conv2 yes, conv1 no).
    grad_input: bool,
}

const LAYERS: [Layer; 2] = [
    Layer {
        name: "conv1",
        c: 1,
        k: 6,
        hw: 28,
        pad: 2,
        grad_input: false,
    },
    Layer {
        name: "conv2",
        c: 6,
        k: 16,
        hw: 14,
        pad: 0,
        grad_input: true,
    },
];

const KS: usize = 5;

/// Inputs, parameters, outputs and scratch of one layer at one batch size, for both
/// implementations.
struct Case {
    l: Layer,
    n: usize,
    x: Array4<f32>,
    w: Array4<f32>,
    b: Array1<f32>,
    g: Array4<f32>,
    y: Array4<f32>,
    gx: Array4<f32>,
    gw: Array4<f32>,
    gb: Array1<f32>,
    /// The plan the layer would get, then one per forced method (chosen method, im2col).
    plan: Conv2dPlan<f32>,
    forced: [(Conv2dMethod, Conv2dPlan<f32>); 2],
    base: Baseline,
}

impl Case {
    fn new(l: Layer, n: usize) -> Self {
        let o = l.hw + 2 * l.pad - KS + 1;
        Case {
            l,
            n,
            x: random((n, l.c, l.hw, l.hw), 1),
            w: random((l.k, l.c, KS, KS), 2) * 0.2,
            b: random(l.k, 3),
            g: random((n, l.k, o, o), 4),
            y: Array4::zeros((n, l.k, o, o)),
            gx: Array4::zeros((n, l.c, l.hw, l.hw)),
            gw: Array4::zeros((l.k, l.c, KS, KS)),
            gb: Array1::zeros(l.k),
            plan: Conv2dPlan::new((l.k, l.c, KS, KS), Self::params_of(l)),
            forced: methods(l).map(|(m, _)| {
                let plan = Conv2dPlan::new((l.k, l.c, KS, KS), Self::params_of(l));
                (m, plan.with_method(m))
            }),
            base: Baseline::new(l, n),
        }
    }

    fn params_of(l: Layer) -> Conv2dParams {
        Conv2dParams {
            stride: (1, 1),
            padding: (l.pad, l.pad),
        }
    }

    fn out_hw(&self) -> usize {
        self.l.hw + 2 * self.l.pad - KS + 1
    }

    fn forward_flops(&self) -> u64 {
        let o = self.out_hw();
        conv_flops(self.n, self.l.k, self.l.c * KS * KS, o * o)
    }

    /// Weight gradient, plus the input gradient when the layer needs it (same size each).
    fn backward_flops(&self) -> u64 {
        self.forward_flops() * if self.l.grad_input { 2 } else { 1 }
    }

    /// Flops of the forward pass, or of the backward pass when `backward`.
    fn flops(&self, backward: bool) -> u64 {
        if backward {
            self.backward_flops()
        } else {
            self.forward_flops()
        }
    }

    fn ours_forward(&mut self) {
        let (x, w, b) = (black_box(self.x.view()), self.w.view(), Some(self.b.view()));
        self.plan.inference_into(x, w, b, self.y.view_mut(), None);
    }

    fn ours_backward(&mut self) {
        let gx = self.l.grad_input.then(|| self.gx.view_mut());
        let grads = (gx, self.gw.view_mut(), Some(self.gb.view_mut()));
        let (x, w) = (black_box(self.x.view()), self.w.view());
        self.plan.backward_into(x, w, self.g.view(), None, grads);
    }

    /// Forward by a forced method.
    fn method_forward(&mut self, m: Conv2dMethod) {
        let (x, w, b) = (black_box(self.x.view()), self.w.view(), Some(self.b.view()));
        let y = self.y.view_mut();
        let i = self.forced.iter().position(|(fm, _)| *fm == m).unwrap();
        self.forced[i].1.inference_into(x, w, b, y, None);
    }

    /// The training backward pass (as [`Case::ours_backward`]) by a forced method.
    fn method_backward(&mut self, m: Conv2dMethod) {
        let gx = self.l.grad_input.then(|| self.gx.view_mut());
        let grads = (gx, self.gw.view_mut(), Some(self.gb.view_mut()));
        let (x, w) = (black_box(self.x.view()), self.w.view());
        let i = self.forced.iter().position(|(fm, _)| *fm == m).unwrap();
        self.forced[i]
            .1
            .backward_into(x, w, self.g.view(), None, grads);
    }

    fn base_forward(&mut self) {
        self.base
            .forward(black_box(&self.x), &self.w, &self.b, &mut self.y);
    }

    fn base_backward(&mut self) {
        let gx = self.l.grad_input.then_some(&mut self.gx);
        self.base.backward(
            black_box(&self.x),
            &self.w,
            &self.g,
            gx,
            &mut self.gw,
            &mut self.gb,
        );
    }
}

/// The baseline's buffers: one column matrix and its gradient, reused for every image.
struct Baseline {
    l: Layer,
    o: usize,
    cols: Array2<f32>,
    dcols: Array2<f32>,
}

impl Baseline {
    fn new(l: Layer, _n: usize) -> Self {
        let o = l.hw + 2 * l.pad - KS + 1;
        let ckk = l.c * KS * KS;
        Baseline {
            l,
            o,
            cols: Array2::zeros((ckk, o * o)),
            dcols: Array2::zeros((ckk, o * o)),
        }
    }

    /// cols[(c, u, v), (i, j)] = x[c, i + u − pad, j + v − pad] (0 in the padding).
    fn im2col(&mut self, x: ArrayView3<'_, f32>) {
        let (l, o) = (self.l, self.o);
        for c in 0..l.c {
            for u in 0..KS {
                for v in 0..KS {
                    let mut row = self.cols.row_mut((c * KS + u) * KS + v);
                    for i in 0..o {
                        for j in 0..o {
                            let (yi, xj) = (
                                (i + u) as isize - l.pad as isize,
                                (j + v) as isize - l.pad as isize,
                            );
                            let inside = (0..l.hw as isize).contains(&yi)
                                && (0..l.hw as isize).contains(&xj);
                            row[i * o + j] = if inside {
                                x[[c, yi as usize, xj as usize]]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col`: dx[c, i + u − pad, j + v − pad] += dcols[(c, u, v), (i, j)].
    fn col2im(&self, mut dx: ArrayViewMut3<'_, f32>) {
        let (l, o) = (self.l, self.o);
        dx.fill(0.0);
        for c in 0..l.c {
            for u in 0..KS {
                for v in 0..KS {
                    let row = self.dcols.row((c * KS + u) * KS + v);
                    for i in 0..o {
                        for j in 0..o {
                            let (yi, xj) = (
                                (i + u) as isize - l.pad as isize,
                                (j + v) as isize - l.pad as isize,
                            );
                            if (0..l.hw as isize).contains(&yi) && (0..l.hw as isize).contains(&xj)
                            {
                                dx[[c, yi as usize, xj as usize]] += row[i * o + j];
                            }
                        }
                    }
                }
            }
        }
    }

    fn weight2(w: &Array4<f32>) -> ArrayView2<'_, f32> {
        let (k, c, kh, kw) = w.dim();
        w.view().into_shape_with_order((k, c * kh * kw)).unwrap()
    }

    fn forward(&mut self, x: &Array4<f32>, w: &Array4<f32>, b: &Array1<f32>, y: &mut Array4<f32>) {
        let w2 = Self::weight2(w);
        let (k, pos) = (self.l.k, self.o * self.o);
        for n in 0..x.len_of(Axis(0)) {
            self.im2col(x.index_axis(Axis(0), n));
            let mut y_n = y.index_axis_mut(Axis(0), n);
            let mut y2 = y_n.view_mut().into_shape_with_order((k, pos)).unwrap();
            for (mut row, &bk) in y2.rows_mut().into_iter().zip(b) {
                row.fill(bk);
            }
            general_mat_mul(1.0, &w2, &self.cols, 1.0, &mut y2);
        }
    }

    fn backward(
        &mut self,
        x: &Array4<f32>,
        w: &Array4<f32>,
        g: &Array4<f32>,
        mut gx: Option<&mut Array4<f32>>,
        gw: &mut Array4<f32>,
        gb: &mut Array1<f32>,
    ) {
        let w2 = Self::weight2(w);
        let (k, pos) = (self.l.k, self.o * self.o);
        let ckk = self.l.c * KS * KS;
        let mut gw2 = gw.view_mut().into_shape_with_order((k, ckk)).unwrap();
        gw2.fill(0.0);
        gb.fill(0.0);
        for n in 0..x.len_of(Axis(0)) {
            let g_n = g
                .slice(s![n, .., .., ..])
                .into_shape_with_order((k, pos))
                .unwrap();
            self.im2col(x.index_axis(Axis(0), n));
            general_mat_mul(1.0, &g_n, &self.cols.t(), 1.0, &mut gw2);
            *gb += &g_n.sum_axis(Axis(1));
            if let Some(gx) = gx.as_deref_mut() {
                general_mat_mul(1.0, &w2.t(), &g_n, 0.0, &mut self.dcols);
                self.col2im(gx.index_axis_mut(Axis(0), n));
            }
        }
    }
}

/// Largest |a − b| relative to max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Both implementations must agree before their times mean anything.
fn check_agreement(case: &mut Case) {
    case.ours_forward();
    let y = case.y.clone();
    case.base_forward();
    let fwd = rel_diff(y.as_slice().unwrap(), case.y.as_slice().unwrap());
    case.ours_backward();
    let (gx, gw, gb) = (case.gx.clone(), case.gw.clone(), case.gb.clone());
    case.base_backward();
    let bwd = [
        rel_diff(gw.as_slice().unwrap(), case.gw.as_slice().unwrap()),
        rel_diff(gb.as_slice().unwrap(), case.gb.as_slice().unwrap()),
        rel_diff(gx.as_slice().unwrap(), case.gx.as_slice().unwrap()),
    ];
    assert!(
        fwd < 1e-4 && bwd.iter().all(|&d| d < 1e-4),
        "{} n={}: ours and the baseline disagree (forward {fwd:e}, backward {bwd:?})",
        case.l.name,
        case.n
    );
}

fn bench_conv(cr: &mut Criterion) {
    for l in LAYERS {
        for n in [32, 256] {
            let mut case = Case::new(l, n);
            check_agreement(&mut case);
            let label = format!("n{n}");
            let mut group = cr.benchmark_group(format!("conv2d/{}_forward", l.name));
            group.throughput(Throughput::Elements(case.forward_flops()));
            group.bench_function(BenchmarkId::new("ours", &label), |b| {
                b.iter(|| case.ours_forward())
            });
            group.bench_function(BenchmarkId::new("baseline_ndarray_im2col", &label), |b| {
                b.iter(|| case.base_forward())
            });
            group.finish();
            let mut group = cr.benchmark_group(format!("conv2d/{}_backward", l.name));
            group.throughput(Throughput::Elements(case.backward_flops()));
            group.bench_function(BenchmarkId::new("ours", &label), |b| {
                b.iter(|| case.ours_backward())
            });
            group.bench_function(BenchmarkId::new("baseline_ndarray_im2col", &label), |b| {
                b.iter(|| case.base_backward())
            });
            group.finish();
        }
    }
}

/// The method the plain entry points pick for each layer, then the im2col method it replaces.
fn methods(l: Layer) -> [(Conv2dMethod, &'static str); 2] {
    let chosen = match l.c {
        1 => (Conv2dMethod::Direct, "direct"),
        _ => (Conv2dMethod::Shifted, "shifted"),
    };
    [chosen, (Conv2dMethod::Im2col, "im2col")]
}

/// Each layer by each method, forward and backward, at batch 32 and 256.
fn bench_methods(cr: &mut Criterion) {
    for l in LAYERS {
        for n in [32, 256] {
            let mut case = Case::new(l, n);
            let label = format!("n{n}");
            for backward in [false, true] {
                let op = if backward { "backward" } else { "forward" };
                let mut group = cr.benchmark_group(format!("conv2d/{}_{op}_method", l.name));
                group.throughput(Throughput::Elements(case.flops(backward)));
                for (m, name) in methods(l) {
                    group.bench_function(BenchmarkId::new(name, &label), |b| match backward {
                        false => b.iter(|| case.method_forward(m)),
                        true => b.iter(|| case.method_backward(m)),
                    });
                }
                group.finish();
            }
        }
    }
}

/// Each layer's two methods timed alternately on the bench pool: GFLOP/s and the ratio
/// im2col time / chosen method's time.
fn methods_summary(threads: usize) {
    println!("\nconvolutions by method ({threads} threads, GFLOP/s, medians of alternating runs)");
    println!(
        "{:<12} {:>5} {:>8} {:>8} {:>8} {:>16}",
        "op", "batch", "method", "chosen", "im2col", "im2col/chosen"
    );
    for l in LAYERS {
        let ms = methods(l);
        for n in [32, 256] {
            let mut case = Case::new(l, n);
            for backward in [false, true] {
                let flops = case.flops(backward) as f64;
                let run = |c: &mut Case, side: usize| match backward {
                    false => c.method_forward(ms[side].0),
                    true => c.method_backward(ms[side].0),
                };
                let t = alternating_medians(&mut |side| run(&mut case, side), 2, 5, 0.02);
                println!(
                    "{:<12} {:>5} {:>8} {:>8.1} {:>8.1} {:>15.2}x",
                    format!("{}_{}", l.name, if backward { "bwd" } else { "fwd" }),
                    n,
                    ms[0].1,
                    flops / t[0] / 1e9,
                    flops / t[1] / 1e9,
                    t[1] / t[0]
                );
            }
        }
    }
}

/// GFLOP/s table: ours on the bench pool, ours on one thread, the single-threaded baseline.
fn summary(threads: usize) {
    let one = pool(1);
    println!(
        "\nconv2d summary (gemm kernel: {}, GFLOP/s, medians of alternating runs)",
        Tier::active().name()
    );
    println!(
        "{:<16} {:>5} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "op",
        "batch",
        format!("ours {threads}t"),
        "ours 1t",
        "base 1t",
        "1t/base",
        format!("{threads}t/base")
    );
    for l in LAYERS {
        for n in [32, 256] {
            let mut case = Case::new(l, n);
            for backward in [false, true] {
                let flops = case.flops(backward) as f64;
                let run = |c: &mut Case, side: usize| match (side, backward) {
                    (0, false) => c.ours_forward(),
                    (0, true) => c.ours_backward(),
                    (_, false) => c.base_forward(),
                    (_, true) => c.base_backward(),
                };
                let t = alternating_medians(&mut |side| run(&mut case, side), 2, 3, 0.02);
                let (t_ours, t_base) = (t[0], t[1]);
                // The one-thread pool's thread grows its own scratch in the untimed first call.
                let t_one =
                    one.install(|| alternating_medians(&mut |_| run(&mut case, 0), 1, 3, 0.02)[0]);
                let gf = |t: f64| flops / t / 1e9;
                println!(
                    "{:<16} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.2}x {:>9.2}x",
                    format!("{}_{}", l.name, if backward { "bwd" } else { "fwd" }),
                    n,
                    gf(t_ours),
                    gf(t_one),
                    gf(t_base),
                    t_base / t_one,
                    t_base / t_ours
                );
            }
        }
    }
}

fn main() {
    let threads = threads();
    pool(threads).install(|| {
        let mut cr = Criterion::default().configure_from_args();
        if std::env::var_os("CONV_SUMMARY_ONLY").is_none() {
            bench_conv(&mut cr);
            bench_methods(&mut cr);
            cr.final_summary();
        }
        if !test_mode() {
            summary(threads);
            methods_summary(threads);
        }
    });
}
