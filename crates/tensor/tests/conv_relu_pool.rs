//! A [`Conv2dPlan`] with the fused `conv → relu → avg_pool` equals the composition of the
//! separate ops bit for bit (forward outputs; weight, bias and input gradients), for both convolution methods, odd
//! sizes, overlapping and dropping pool windows, and 1, 2 and 3 threads; and their buffers are
//! reused without growing.
//!
//! Bit-identity is expected, not a tolerance: the fused op runs the same convolution kernels on
//! the same chunks of the batch, the same ReLU and the same per-plane pooling code, in the same
//! order; only where the intermediate values live changes.

use ndarray::{Array1, Array4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::internals::Conv2dMethod;
use tensor::*;

fn random4(shape: (usize, usize, usize, usize), rng: &mut ChaCha8Rng) -> Array4<f32> {
    Array4::from_shape_simple_fn(shape, || rng.gen_range(-1.0..1.0))
}

/// One geometry: input, weight, convolution parameters, pool parameters.
type Case = (
    (usize, usize, usize, usize),
    (usize, usize, usize, usize),
    Conv2dParams,
    Pool2dParams,
);

fn cases() -> Vec<Case> {
    let conv = |s, p| Conv2dParams {
        stride: (s, s),
        padding: (p, p),
    };
    let pool = |k, s| Pool2dParams {
        kernel: (k, k),
        stride: (s, s),
    };
    vec![
        // LeNet-5's conv1 and conv2, 45 images (chunks of 2, a short last one), parallel.
        ((45, 1, 28, 28), (6, 1, 5, 5), conv(1, 2), pool(2, 2)),
        ((45, 6, 14, 14), (16, 6, 5, 5), conv(1, 0), pool(2, 2)),
        // Odd outputs (9×7 → 4×3: the last row and column are outside every window), direct.
        ((3, 1, 9, 7), (4, 1, 3, 3), conv(1, 1), pool(2, 2)),
        // The same with two channels: im2col.
        ((5, 2, 9, 7), (3, 2, 3, 3), conv(1, 1), pool(2, 2)),
        // Stride 2 (im2col even with one channel), overlapping 3×3 windows of stride 2.
        ((4, 1, 13, 11), (5, 1, 3, 3), conv(2, 1), pool(3, 2)),
        // A single image, a pool of 1×1 (ReLU alone).
        ((1, 3, 6, 5), (2, 3, 2, 2), conv(1, 0), pool(1, 1)),
    ]
}

/// Every output and gradient of one fused forward and backward pass (cached and uncached
/// backward), as raw bits.
type Results = Vec<Vec<u32>>;

fn bits(a: &[f32]) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// The separate ops: a plain plan's forward pass (caching) → relu → avg_pool2d, then
/// avg_pool2d_backward → relu backward → the plan's backward pass (from what it kept).
/// Returns [y, r, z, gx, gw, gb].
fn composed(case: &Case, seed: u64) -> Results {
    let (xd, wd, p, pool) = *case;
    let r = &mut ChaCha8Rng::seed_from_u64(seed);
    let (x, w, b) = (random4(xd, r), random4(wd, r), random4((1, 1, 1, wd.0), r));
    let b = b.into_shape_with_order(wd.0).unwrap();
    let mut plan = Conv2dPlan::new(wd, p);
    let mut y = Array4::zeros(plan.output_dim(xd));
    plan.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut(), None);
    let relu_out = Activation::Relu.forward(y.view());
    let z = avg_pool2d(relu_out.view(), pool);
    let gz = random4(z.dim(), r);
    let gy = avg_pool2d_backward(gz.view(), pool, y.dim());
    let gy = Activation::Relu.backward(relu_out.view(), gy.view());
    let (mut gx, mut gw, mut gb) = (Array4::zeros(xd), Array4::zeros(wd), Array1::zeros(wd.0));
    let grads = (Some(gx.view_mut()), gw.view_mut(), Some(gb.view_mut()));
    plan.backward_into(x.view(), w.view(), gy.view(), None, grads);
    [y, relu_out, z, gx, gw]
        .iter()
        .map(|a| bits(a.as_slice().unwrap()))
        .chain([bits(gb.as_slice().unwrap())])
        .collect()
}

/// The fused plan, twice over the same buffers (the second time from stale contents, checking
/// what the plan holds does not grow): the training forward pass (keeping what backward reads)
/// and the backward pass from it; then the inference forward pass and the backward pass from
/// the input. Returns [y, r, z, gx, gw, gb] of each, 12 in all.
fn fused(case: &Case, seed: u64) -> Results {
    let (xd, wd, p, pool) = *case;
    let r = &mut ChaCha8Rng::seed_from_u64(seed);
    let (x, w, b) = (random4(xd, r), random4(wd, r), random4((1, 1, 1, wd.0), r));
    let b = b.into_shape_with_order(wd.0).unwrap();
    let (oh, ow) = p.output_size((xd.2, xd.3), (wd.2, wd.3)).unwrap();
    let yd = (xd.0, wd.0, oh, ow);
    let (poh, pow) = pool.output_size((oh, ow)).unwrap();
    let nan = |d| Array4::from_elem(d, f32::NAN);
    let (mut y, mut relu_out, mut z) = (nan(yd), nan(yd), nan((xd.0, wd.0, poh, pow)));
    let gz = random4(z.dim(), r);
    let (mut gx, mut gw, mut gb) = (nan(xd), nan(wd), Array1::from_elem(wd.0, f32::NAN));
    let mut plan = Conv2dPlan::new(wd, p).with_relu_avg_pool(pool);
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    for cached in [true, true, false, false] {
        let fused = Some((relu_out.view_mut(), z.view_mut()));
        let bias = Some(b.view());
        if cached {
            plan.forward_into(x.view(), w.view(), bias, y.view_mut(), fused);
        } else {
            plan.inference_into(x.view(), w.view(), bias, y.view_mut(), fused);
        }
        let grads = (Some(gx.view_mut()), gw.view_mut(), Some(gb.view_mut()));
        plan.backward_into(x.view(), w.view(), gz.view(), Some(relu_out.view()), grads);
        sizes.push(plan.held_len());
        for a in [&y, &relu_out, &z, &gx, &gw] {
            out.push(bits(a.as_slice().unwrap()));
        }
        out.push(bits(gb.as_slice().unwrap()));
    }
    assert_eq!(
        sizes[0], sizes[1],
        "{case:?}: cached pass grew what the plan holds"
    );
    assert_eq!(
        sizes[2], sizes[3],
        "{case:?}: uncached pass grew what the plan holds"
    );
    out
}

fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn fused_equals_the_separate_ops_bit_for_bit_on_1_2_and_3_threads() {
    let mut methods = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        methods.push(Conv2dMethod::choose(case.1, case.2));
        let want = on_threads(1, || composed(case, i as u64));
        for threads in [1, 2, 3] {
            let got = on_threads(threads, || fused(case, i as u64));
            let names = [
                "y",
                "relu",
                "pooled",
                "grad_input",
                "grad_weight",
                "grad_bias",
            ];
            for (j, got) in got.iter().enumerate() {
                let form = ["cached", "cached again", "uncached", "uncached again"][j / 6];
                assert!(
                    *got == want[j % 6],
                    "{case:?}, {threads} threads, {form}: {} differs from the separate ops",
                    names[j % 6]
                );
            }
        }
    }
    // Every convolution method is covered.
    assert!(methods.contains(&Conv2dMethod::Direct));
    assert!(methods.contains(&Conv2dMethod::Shifted));
    assert!(methods.contains(&Conv2dMethod::Im2col));
}

#[test]
#[should_panic(expected = "conv2d_relu_avg_pool2d: pooled must be (1, 1, 2, 2), got (1, 1, 3, 3)")]
fn a_wrong_pooled_shape_panics() {
    let mut y = Array4::<f32>::zeros((1, 1, 4, 4));
    let mut r = y.clone();
    let mut z = Array4::zeros((1, 1, 3, 3));
    let pool = Pool2dParams::square(2);
    let mut plan = Conv2dPlan::new((1, 1, 3, 3), Conv2dParams::default()).with_relu_avg_pool(pool);
    plan.forward_into(
        Array4::zeros((1, 1, 6, 6)).view(),
        Array4::zeros((1, 1, 3, 3)).view(),
        None,
        y.view_mut(),
        Some((r.view_mut(), z.view_mut())),
    );
}

/// A side-by-side timing, not a check (run it with `cargo test --release -p lenet-tensor --test
/// conv_relu_pool -- --ignored --nocapture`): one training step of each LeNet-5 block
/// (caching forward, cached backward without the input gradient, every buffer reused as `nn`
/// does), fused and as separate ops, alternated 50 times, on the current rayon pool; prints the
/// fastest of each and their ratio.
#[test]
#[ignore]
fn time_fused_against_the_separate_ops() {
    for n in [32, 256] {
        for (case, name) in cases().into_iter().take(2).zip(["conv1", "conv2"]) {
            let case = ((n, case.0 .1, case.0 .2, case.0 .3), case.1, case.2, case.3);
            let mut s = Step::new(&case);
            let (mut best_fused, mut best_separate) = (f64::MAX, f64::MAX);
            for _ in 0..50 {
                let t = std::time::Instant::now();
                s.fused();
                best_fused = best_fused.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                s.separate();
                best_separate = best_separate.min(t.elapsed().as_secs_f64());
            }
            assert_eq!(s.gw, s.gw_separate);
            println!(
                "{name} batch {n}: fused {:.3} ms, separate {:.3} ms, fused/separate {:.3}",
                best_fused * 1e3,
                best_separate * 1e3,
                best_fused / best_separate
            );
        }
    }
}

/// Every buffer of one block's training step, allocated once.
struct Step {
    case: Case,
    x: Array4<f32>,
    w: Array4<f32>,
    b: Array1<f32>,
    y: Array4<f32>,
    relu_out: Array4<f32>,
    z: Array4<f32>,
    gz: Array4<f32>,
    gy: Array4<f32>,
    gw: Array4<f32>,
    gw_separate: Array4<f32>,
    gb: Array1<f32>,
    fused_plan: Conv2dPlan<f32>,
    plan: Conv2dPlan<f32>,
}

impl Step {
    fn new(case: &Case) -> Self {
        let (xd, wd, p, pool) = *case;
        let r = &mut ChaCha8Rng::seed_from_u64(0);
        let (oh, ow) = p.output_size((xd.2, xd.3), (wd.2, wd.3)).unwrap();
        let yd = (xd.0, wd.0, oh, ow);
        let (poh, pow) = pool.output_size((oh, ow)).unwrap();
        Step {
            case: *case,
            x: random4(xd, r),
            w: random4(wd, r),
            b: Array1::from_elem(wd.0, 0.1),
            y: Array4::zeros(yd),
            relu_out: Array4::zeros(yd),
            z: Array4::zeros((xd.0, wd.0, poh, pow)),
            gz: random4((xd.0, wd.0, poh, pow), r),
            gy: Array4::zeros(yd),
            gw: Array4::zeros(wd),
            gw_separate: Array4::zeros(wd),
            gb: Array1::zeros(wd.0),
            fused_plan: Conv2dPlan::new(wd, p).with_relu_avg_pool(pool),
            plan: Conv2dPlan::new(wd, p),
        }
    }

    fn fused(&mut self) {
        let fused = Some((self.relu_out.view_mut(), self.z.view_mut()));
        let (x, w, b) = (self.x.view(), self.w.view(), Some(self.b.view()));
        let plan = &mut self.fused_plan;
        plan.forward_into(x, w, b, self.y.view_mut(), fused);
        let grads = (None, self.gw.view_mut(), Some(self.gb.view_mut()));
        plan.backward_into(x, w, self.gz.view(), Some(self.relu_out.view()), grads);
    }

    fn separate(&mut self) {
        let (_, _, _, pool) = self.case;
        let (x, w, b) = (self.x.view(), self.w.view(), Some(self.b.view()));
        self.plan.forward_into(x, w, b, self.y.view_mut(), None);
        Activation::Relu.forward_into(self.y.view(), self.relu_out.view_mut());
        avg_pool2d_into(self.relu_out.view(), pool, self.z.view_mut());
        avg_pool2d_backward_into(self.gz.view(), pool, self.gy.view_mut());
        Activation::Relu.backward_inplace(self.relu_out.view(), self.gy.view_mut());
        let grads = (None, self.gw_separate.view_mut(), Some(self.gb.view_mut()));
        self.plan.backward_into(x, w, self.gy.view(), None, grads);
    }
}
