//! Finite-difference checks of every backward pass, in f64.
//!
//! For an op `y = f(x)` and a random upstream gradient `G` (the shape of `y`), the backward pass
//! must return the vector-Jacobian product `∂φ/∂x` of the scalar `φ(x) = Σ y·G`. We compare it
//! with central differences `(φ(x + h·e_i) − φ(x − h·e_i)) / 2h` for every coordinate `i`.
//!
//! Tolerance. With `h = 1e-6` in f64 the central difference has truncation error
//! `h²/6 · |φ'''| ≈ 1e-13` (our ops are linear, or smooth with O(1) third derivatives on the
//! inputs drawn here) and rounding error `≈ eps·|φ|/h ≈ 1e-16 · 10 / 1e-6 = 1e-9`. So we require
//! `max_i |analytic_i − numeric_i| ≤ 1e-6 · max(‖analytic‖∞, ‖numeric‖∞, 1e-3)`: a thousand
//! times the expected error, and a million times tighter than any real bug (a missing term, a
//! wrong scale, a shifted index all change some gradient entry by O(its size)). The 1e-3 floor
//! only matters when a whole gradient is (correctly) near 0.
//!
//! Kinks: ReLU and max pool are not differentiable at 0 and at ties. Their inputs are drawn at
//! least 0.05 away from 0 (ReLU) and with every pair of values at least 0.1 apart (max pool), far
//! more than `h`, so no difference straddles a kink.
//!
//! Shapes, strides, paddings and kernel sizes come from proptest, including batch 1, one
//! channel, odd sizes, stride > 1 and padding > 0; case counts are modest so the file runs in a
//! few seconds.

use ndarray::{Array, Array1, Array2, Array4, Dimension, IxDyn, ShapeBuilder};
use proptest::prelude::*;
use proptest::test_runner::Config;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::internals::Conv2dMethod;
use tensor::*;

/// Finite-difference step.
const H: f64 = 1e-6;
/// Relative tolerance on the max-norm (see the file docs).
const TOL: f64 = 1e-6;
/// Floor of the scale the tolerance is relative to.
const FLOOR: f64 = 1e-3;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in [-1, 1).
fn uniform<Sh: ShapeBuilder>(shape: Sh, rng: &mut ChaCha8Rng) -> Array<f64, Sh::Dim> {
    Array::from_shape_simple_fn(shape, || rng.gen_range(-1.0..1.0))
}

/// Uniform magnitude in [0.05, 1.5) with a random sign: never within 0.05 of ReLU's kink.
fn away_from_zero<Sh: ShapeBuilder>(shape: Sh, rng: &mut ChaCha8Rng) -> Array<f64, Sh::Dim> {
    Array::from_shape_simple_fn(shape, || {
        let m = rng.gen_range(0.05..1.5);
        if rng.gen_bool(0.5) {
            m
        } else {
            -m
        }
    })
}

/// Distinct values 0.1 apart in random order: no ties, so max pool's argmax is stable under ±h.
fn separated<Sh: ShapeBuilder>(shape: Sh, rng: &mut ChaCha8Rng) -> Array<f64, Sh::Dim> {
    let mut a = Array::zeros(shape);
    let len = a.len();
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    for (v, &o) in a.iter_mut().zip(&order) {
        *v = o as f64 * 0.1 - len as f64 * 0.05;
    }
    a
}

fn dot<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central-difference gradient of the scalar `phi` at `x`.
fn numeric_grad<D: Dimension>(
    x: &Array<f64, D>,
    phi: impl Fn(&Array<f64, D>) -> f64,
) -> Array<f64, D> {
    let mut xp = x.clone();
    let mut grad = Array::zeros(x.raw_dim());
    for (i, g) in grad.iter_mut().enumerate() {
        let orig = x.as_slice_memory_order().unwrap()[i];
        xp.as_slice_memory_order_mut().unwrap()[i] = orig + H;
        let up = phi(&xp);
        xp.as_slice_memory_order_mut().unwrap()[i] = orig - H;
        let down = phi(&xp);
        xp.as_slice_memory_order_mut().unwrap()[i] = orig;
        *g = (up - down) / (2.0 * H);
    }
    grad
}

/// Max-norm comparison of an analytic gradient with the numeric one.
fn check<D: Dimension>(
    what: &str,
    analytic: &Array<f64, D>,
    numeric: &Array<f64, D>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(analytic.shape(), numeric.shape(), "{}: shapes differ", what);
    let norm = |a: &Array<f64, D>| a.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0.0_f64, 0);
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        let d = (a - n).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    let scale = norm(analytic).max(norm(numeric)).max(FLOOR);
    prop_assert!(
        worst <= TOL * scale,
        "{}: max |analytic − numeric| = {:.3e} > {:.0e}·{:.3e} at flat index {} (analytic {}, numeric {})",
        what,
        worst,
        TOL,
        scale,
        at,
        analytic.iter().nth(at).unwrap(),
        numeric.iter().nth(at).unwrap()
    );
    Ok(())
}

/// Draws a kernel extent, stride and padding, and an input extent the kernel fits in.
fn conv_dim() -> impl Strategy<Value = (usize, usize, usize, usize)> {
    (1usize..=4, 1usize..=3, 0usize..=2, 0usize..=5).prop_map(|(k, s, p, extra)| {
        let len = k.saturating_sub(2 * p).max(1) + extra;
        (len, k, s, p)
    })
}

/// Checks all three conv2d gradients at one geometry.
fn conv2d_gradcheck(
    n: usize,
    c: usize,
    k: usize,
    (h, kh, sh, ph): (usize, usize, usize, usize),
    (w, kw, sw, pw): (usize, usize, usize, usize),
    seed: u64,
) -> Result<(), TestCaseError> {
    let r = &mut rng(seed);
    let p = Conv2dParams {
        stride: (sh, sw),
        padding: (ph, pw),
    };
    let x = uniform((n, c, h, w), r);
    let wt = uniform((k, c, kh, kw), r);
    let b = uniform(k, r);
    let y = conv2d(x.view(), wt.view(), Some(b.view()), p);
    let g = uniform(y.raw_dim(), r);
    let grads = conv2d_backward(x.view(), wt.view(), g.view(), p);
    let at = format!("conv2d x{:?} w{:?} {p:?}", x.dim(), wt.dim());
    let num_x = numeric_grad(&x, |x| {
        dot(&conv2d(x.view(), wt.view(), Some(b.view()), p), &g)
    });
    check(&format!("{at}: grad_input"), &grads.input, &num_x)?;
    let num_w = numeric_grad(&wt, |wt| {
        dot(&conv2d(x.view(), wt.view(), Some(b.view()), p), &g)
    });
    check(&format!("{at}: grad_weight"), &grads.weight, &num_w)?;
    let num_b = numeric_grad(&b, |b| {
        dot(&conv2d(x.view(), wt.view(), Some(b.view()), p), &g)
    });
    check(&format!("{at}: grad_bias"), &grads.bias, &num_b)?;

    // A plan's buffer-reusing passes, with stale contents, give the same.
    let mut plan = Conv2dPlan::new(wt.dim(), p);
    let mut y2 = Array4::from_elem(y.raw_dim(), f64::NAN);
    plan.forward_into(x.view(), wt.view(), Some(b.view()), y2.view_mut(), None);
    prop_assert_eq!(&y2, &y);
    let mut gw = Array4::from_elem(wt.raw_dim(), f64::NAN);
    let mut gi = Array4::from_elem(x.raw_dim(), f64::NAN);
    let mut gb = Array1::from_elem(k, f64::NAN);
    let bufs = (Some(gi.view_mut()), gw.view_mut(), Some(gb.view_mut()));
    plan.backward_into(x.view(), wt.view(), g.view(), None, bufs);
    prop_assert_eq!((&gi, &gw, &gb), (&grads.input, &grads.weight, &grads.bias));
    Ok(())
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn conv2d_gradients(
        n in 1usize..=3,
        c in 1usize..=3,
        k in 1usize..=3,
        hd in conv_dim(),
        wd in conv_dim(),
        seed in any::<u64>(),
    ) {
        conv2d_gradcheck(n, c, k, hd, wd, seed)?;
    }

    #[test]
    fn avg_pool2d_gradient(
        n in 1usize..=3, c in 1usize..=3,
        (kh, sh, eh) in (1usize..=4, 1usize..=3, 0usize..=5),
        (kw, sw, ew) in (1usize..=4, 1usize..=3, 0usize..=5),
        seed in any::<u64>(),
    ) {
        let r = &mut rng(seed);
        let p = Pool2dParams { kernel: (kh, kw), stride: (sh, sw) };
        let x = uniform((n, c, kh + eh, kw + ew), r);
        let y = avg_pool2d(x.view(), p);
        let g = uniform(y.raw_dim(), r);
        let gi = avg_pool2d_backward(g.view(), p, x.dim());
        let num = numeric_grad(&x, |x| dot(&avg_pool2d(x.view(), p), &g));
        check(&format!("avg_pool2d x{:?} {p:?}", x.dim()), &gi, &num)?;
    }

    #[test]
    fn max_pool2d_gradient(
        n in 1usize..=3, c in 1usize..=3,
        (kh, sh, eh) in (1usize..=4, 1usize..=3, 0usize..=5),
        (kw, sw, ew) in (1usize..=4, 1usize..=3, 0usize..=5),
        seed in any::<u64>(),
    ) {
        let r = &mut rng(seed);
        let p = Pool2dParams { kernel: (kh, kw), stride: (sh, sw) };
        let x = separated((n, c, kh + eh, kw + ew), r);
        let y = max_pool2d(x.view(), p);
        let g = uniform(y.raw_dim(), r);
        let gi = max_pool2d_backward(x.view(), g.view(), p);
        let num = numeric_grad(&x, |x| dot(&max_pool2d(x.view(), p), &g));
        check(&format!("max_pool2d x{:?} {p:?}", x.dim()), &gi, &num)?;
    }

    #[test]
    fn linear_gradients(n in 1usize..=5, fan_in in 1usize..=9, fan_out in 1usize..=6, seed in any::<u64>()) {
        let r = &mut rng(seed);
        let x = uniform((n, fan_in), r);
        let w = uniform((fan_out, fan_in), r);
        let b = uniform(fan_out, r);
        let g = uniform((n, fan_out), r);
        let grads = linear_backward(x.view(), w.view(), g.view());
        let at = format!("linear x[{n}, {fan_in}] w[{fan_out}, {fan_in}]");
        let num_x = numeric_grad(&x, |x| dot(&linear(x.view(), w.view(), Some(b.view())), &g));
        check(&format!("{at}: grad_input"), &grads.input, &num_x)?;
        let num_w = numeric_grad(&w, |w| dot(&linear(x.view(), w.view(), Some(b.view())), &g));
        check(&format!("{at}: grad_weight"), &grads.weight, &num_w)?;
        let num_b = numeric_grad(&b, |b| dot(&linear(x.view(), w.view(), Some(b.view())), &g));
        check(&format!("{at}: grad_bias"), &grads.bias, &num_b)?;
    }

    /// The products every backward pass is built from: for C = A·B, dA = G·Bᵀ and dB = Aᵀ·G,
    /// computed with gemm on transposed views (both accumulate and overwrite forms).
    #[test]
    fn matmul_gradients(m in 1usize..=7, k in 1usize..=7, n in 1usize..=7, seed in any::<u64>()) {
        let r = &mut rng(seed);
        let a = uniform((m, k), r);
        let b = uniform((k, n), r);
        let g = uniform((m, n), r);
        let mut da = Array2::from_elem((m, k), f64::NAN);
        gemm(1.0, g.view(), b.t(), 0.0, da.view_mut());
        let mut db = Array2::ones((k, n));
        gemm(2.0, a.t(), g.view(), -1.0, db.view_mut()); // 2·AᵀG − 1, then undo below
        db.mapv_inplace(|v| (v + 1.0) / 2.0);
        let num_a = numeric_grad(&a, |a| dot(&matmul(a.view(), b.view()), &g));
        check(&format!("matmul [{m}, {k}]·[{k}, {n}]: grad_a"), &da, &num_a)?;
        let num_b = numeric_grad(&b, |b| dot(&matmul(a.view(), b.view()), &g));
        check(&format!("matmul [{m}, {k}]·[{k}, {n}]: grad_b"), &db, &num_b)?;
    }
}

/// Shapes of 1 to 3 dimensions for the element-wise ops.
fn any_shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=5, 1..=3)
}

fn activation_check(
    name: &str,
    x: Array<f64, IxDyn>,
    g: Array<f64, IxDyn>,
    act: Activation,
) -> Result<(), TestCaseError> {
    let y = act.forward(x.view());
    let gi = act.backward(y.view(), g.view());
    let num = numeric_grad(&x, |x| dot(&act.forward(x.view()), &g));
    check(&format!("{name} x{:?}", x.shape()), &gi, &num)
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn relu_gradient(shape in any_shape(), seed in any::<u64>()) {
        let r = &mut rng(seed);
        let x = away_from_zero(IxDyn(&shape), r);
        let g = uniform(IxDyn(&shape), r);
        activation_check("relu", x, g, Activation::Relu)?;
    }

    #[test]
    fn tanh_gradient(shape in any_shape(), seed in any::<u64>()) {
        let r = &mut rng(seed);
        let x = uniform(IxDyn(&shape), r) * 3.0;
        let g = uniform(IxDyn(&shape), r);
        activation_check("tanh", x, g, Activation::Tanh)?;
    }

    #[test]
    fn sigmoid_gradient(shape in any_shape(), seed in any::<u64>()) {
        let r = &mut rng(seed);
        let x = uniform(IxDyn(&shape), r) * 6.0;
        let g = uniform(IxDyn(&shape), r);
        activation_check("sigmoid", x, g, Activation::Sigmoid)?;
    }

    #[test]
    fn log_softmax_gradient(n in 1usize..=5, classes in 1usize..=8, seed in any::<u64>()) {
        let r = &mut rng(seed);
        let x = uniform((n, classes), r) * 3.0;
        let g = uniform((n, classes), r);
        let y = log_softmax(x.view());
        let gi = log_softmax_backward(y.view(), g.view());
        let num = numeric_grad(&x, |x| dot(&log_softmax(x.view()), &g));
        check(&format!("log_softmax x[{n}, {classes}]"), &gi, &num)?;
    }

    #[test]
    fn cross_entropy_gradients(n in 1usize..=6, classes in 1usize..=8, seed in any::<u64>()) {
        let r = &mut rng(seed);
        let x = uniform((n, classes), r) * 3.0;
        let targets: Vec<usize> = (0..n).map(|_| r.gen_range(0..classes)).collect();
        let upstream = r.gen_range(-2.0..2.0);
        let at = format!("cross_entropy x[{n}, {classes}] targets {targets:?}");
        let loss = |x: &Array2<f64>| cross_entropy(x.view(), &targets);
        let num = numeric_grad(&x, |x| upstream * loss(x));
        let gi = cross_entropy_backward(x.view(), &targets, upstream);
        check(&format!("{at}: cross_entropy_backward"), &gi, &num)?;

        // the fused training form: same loss, gradient for an upstream gradient of 1
        let mut fused = Array2::from_elem((n, classes), f64::NAN);
        let l = softmax_cross_entropy_into(x.view(), &targets, fused.view_mut());
        prop_assert!((l - loss(&x)).abs() <= 1e-14 * l.abs().max(1.0), "{}: fused loss {} vs {}", at, l, loss(&x));
        let num1 = numeric_grad(&x, loss);
        check(&format!("{at}: softmax_cross_entropy_into"), &fused, &num1)?;

        // and the loss is −mean(log_softmax[target]): ties the two ops together
        let ls = log_softmax(x.view());
        let direct = -(0..n).map(|i| ls[[i, targets[i]]]).sum::<f64>() / n as f64;
        prop_assert!((direct - l).abs() <= 1e-12 * l.abs().max(1.0));
    }
}

/// A batch large enough that conv2d splits it into chunks of several images and runs them on
/// rayon's threads: the partial weight/bias sums and their reduction are checked too.
#[test]
fn conv2d_gradients_for_a_chunked_parallel_batch() {
    let (n, c, k) = (70, 2, 3); // 70 images: 24 chunks of 3 (the last has 1)
    let p = Conv2dParams {
        stride: (2, 1),
        padding: (1, 2),
    };
    let r = &mut rng(7);
    let x = uniform((n, c, 7, 6), r);
    let w = uniform((k, c, 3, 4), r);
    let b = uniform(k, r);
    let y = conv2d(x.view(), w.view(), Some(b.view()), p);
    let g = uniform(y.raw_dim(), r);
    let grads = conv2d_backward(x.view(), w.view(), g.view(), p);
    let fwd = |x: &Array4<f64>, w: &Array4<f64>, b: &Array1<f64>| {
        dot(&conv2d(x.view(), w.view(), Some(b.view()), p), &g)
    };
    check(
        "chunked conv2d: grad_weight",
        &grads.weight,
        &numeric_grad(&w, |w| fwd(&x, w, &b)),
    )
    .unwrap();
    check(
        "chunked conv2d: grad_bias",
        &grads.bias,
        &numeric_grad(&b, |b| fwd(&x, &w, b)),
    )
    .unwrap();
    check(
        "chunked conv2d: grad_input",
        &grads.input,
        &numeric_grad(&x, |x| fwd(x, &w, &b)),
    )
    .unwrap();
}

/// The LeNet-5 geometries themselves (conv1: 1→6, 5×5, padding 2 on 28×28; conv2: 6→16 on 14×14),
/// with a small batch, on the weight and bias (the input gradient is covered above).
#[test]
fn conv2d_gradients_at_lenet_shapes() {
    for (x_dim, w_dim, pad) in [
        ((2, 1, 28, 28), (6, 1, 5, 5), 2),
        ((2, 6, 14, 14), (16, 6, 5, 5), 0),
    ] {
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (pad, pad),
        };
        let r = &mut rng(11);
        let x = uniform(x_dim, r);
        let w = uniform(w_dim, r) * 0.2;
        let b = uniform(w_dim.0, r);
        let y = conv2d(x.view(), w.view(), Some(b.view()), p);
        let g = uniform(y.raw_dim(), r);
        let grads = conv2d_backward(x.view(), w.view(), g.view(), p);
        let fwd = |w: &Array4<f64>, b: &Array1<f64>| {
            dot(&conv2d(x.view(), w.view(), Some(b.view()), p), &g)
        };
        check(
            &format!("conv2d {w_dim:?}: grad_weight"),
            &grads.weight,
            &numeric_grad(&w, |w| fwd(w, &b)),
        )
        .unwrap();
        check(
            &format!("conv2d {w_dim:?}: grad_bias"),
            &grads.bias,
            &numeric_grad(&b, |b| fwd(&w, b)),
        )
        .unwrap();
    }
}

/// Draws a kernel extent and padding (any, stride 1) and an input extent the kernel fits in.
/// Kernels up to 7 wide: one or two kernel-column blocks of the weight-gradient kernel (5).
fn direct_dim() -> impl Strategy<Value = (usize, usize, usize, usize)> {
    (1usize..=7, 0usize..=3, 0usize..=6).prop_map(|(k, p, extra)| {
        let len = k.saturating_sub(2 * p).max(1) + extra;
        (len, k, 1, p)
    })
}

/// All three gradients of a stride-1 method (direct: one input channel; shifted: any), forced
/// on a plan ([`Conv2dPlan::with_method`]), against central differences of its own forward pass. Up to
/// 7 output channels: full and short channel blocks of both the direct forward and
/// weight-gradient kernels.
fn conv2d_method_gradcheck(
    m: Conv2dMethod,
    (n, c, k): (usize, usize, usize),
    hd: (usize, usize, usize, usize),
    wd: (usize, usize, usize, usize),
    seed: u64,
) -> Result<(), TestCaseError> {
    let ((h, kh, _, ph), (w, kw, _, pw)) = (hd, wd);
    let r = &mut rng(seed);
    let p = Conv2dParams {
        stride: (1, 1),
        padding: (ph, pw),
    };
    let x = uniform((n, c, h, w), r);
    let wt = uniform((k, c, kh, kw), r);
    let b = uniform(k, r);
    let fwd = |x: &Array4<f64>, wt: &Array4<f64>, b: &Array1<f64>| {
        let (oh, ow) = p.output_size((h, w), (kh, kw)).unwrap();
        let mut y = Array4::from_elem((n, k, oh, ow), f64::NAN);
        let mut plan = Conv2dPlan::new(wt.dim(), p).with_method(m);
        plan.inference_into(x.view(), wt.view(), Some(b.view()), y.view_mut(), None);
        y
    };
    let g = uniform(fwd(&x, &wt, &b).raw_dim(), r);
    let mut gi = Array4::from_elem(x.raw_dim(), f64::NAN);
    let mut gw = Array4::from_elem(wt.raw_dim(), f64::NAN);
    let mut gb = Array1::from_elem(k, f64::NAN);
    let grads = (Some(gi.view_mut()), gw.view_mut(), Some(gb.view_mut()));
    let mut plan = Conv2dPlan::new(wt.dim(), p).with_method(m);
    plan.backward_into(x.view(), wt.view(), g.view(), None, grads);
    let at = format!("{m:?} conv2d x{:?} w{:?} {p:?}", x.dim(), wt.dim());
    let num_x = numeric_grad(&x, |x| dot(&fwd(x, &wt, &b), &g));
    check(&format!("{at}: grad_input"), &gi, &num_x)?;
    let num_w = numeric_grad(&wt, |wt| dot(&fwd(&x, wt, &b), &g));
    check(&format!("{at}: grad_weight"), &gw, &num_w)?;
    let num_b = numeric_grad(&b, |b| dot(&fwd(&x, &wt, b), &g));
    check(&format!("{at}: grad_bias"), &gb, &num_b)?;
    Ok(())
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn conv2d_direct_gradients(
        n in 1usize..=3,
        k in 1usize..=7,
        hd in direct_dim(),
        wd in direct_dim(),
        seed in any::<u64>(),
    ) {
        conv2d_method_gradcheck(Conv2dMethod::Direct, (n, 1, k), hd, wd, seed)?;
    }

    #[test]
    fn conv2d_shifted_gradients(
        n in 1usize..=2,
        c in 1usize..=3,
        k in 1usize..=4,
        hd in direct_dim(),
        wd in direct_dim(),
        seed in any::<u64>(),
    ) {
        conv2d_method_gradcheck(Conv2dMethod::Shifted, (n, c, k), hd, wd, seed)?;
    }
}

/// The direct method at LeNet-5's conv1 (1→6, 5×5, padding 2, 28×28) and with a batch of 70
/// (chunks of 3 images, parallel), on the weight and bias.
#[test]
fn conv2d_direct_gradients_at_conv1_and_chunked() {
    for n in [2, 70] {
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (2, 2),
        };
        let (h, m) = (if n == 2 { 28 } else { 9 }, Conv2dMethod::Direct);
        let r = &mut rng(13);
        let x = uniform((n, 1, h, h), r);
        let w = uniform((6, 1, 5, 5), r) * 0.2;
        let b = uniform(6, r);
        let fwd = |w: &Array4<f64>, b: &Array1<f64>| {
            let mut y = Array4::zeros((n, 6, h, h));
            let mut plan = Conv2dPlan::new(w.dim(), p).with_method(m);
            plan.inference_into(x.view(), w.view(), Some(b.view()), y.view_mut(), None);
            y
        };
        let g = uniform((n, 6, h, h), r);
        let (mut gw, mut gb) = (Array4::zeros(w.dim()), Array1::zeros(6));
        let grads = (None, gw.view_mut(), Some(gb.view_mut()));
        let mut plan = Conv2dPlan::new(w.dim(), p).with_method(m);
        plan.backward_into(x.view(), w.view(), g.view(), None, grads);
        let num_w = numeric_grad(&w, |w| dot(&fwd(w, &b), &g));
        check(&format!("direct n={n}: grad_weight"), &gw, &num_w).unwrap();
        let num_b = numeric_grad(&b, |b| dot(&fwd(&w, b), &g));
        check(&format!("direct n={n}: grad_bias"), &gb, &num_b).unwrap();
    }
}

/// One spatial dimension of a convolution: (input extent, kernel, stride, padding).
type ConvDim = (usize, usize, usize, usize);

/// All three gradients of the fused `conv → relu → avg_pool` plan
/// ([`Conv2dPlan::with_relu_avg_pool`]) against central differences of its own forward
/// pass, `φ = Σ pooled · G`. ReLU's kink: a case is drawn again if any convolution output lies
/// within 1e-5 of 0; a step of `h` in one coordinate moves each output by at most
/// `h · max(|x|, |w|, 1) = 1e-6` (inputs, weights and bias are in [-1, 1)), so no difference
/// straddles the kink. (About one output in 10⁵ is that close, so few cases are redrawn.)
fn conv_relu_pool_gradcheck(
    n: usize,
    c: usize,
    k: usize,
    (hd, wd): (ConvDim, ConvDim),
    pool: Pool2dParams,
    seed: u64,
) -> Result<(), TestCaseError> {
    let ((h, kh, sh, ph), (w, kw, sw, pw)) = (hd, wd);
    let p = Conv2dParams {
        stride: (sh, sw),
        padding: (ph, pw),
    };
    let (oh, ow) = p.output_size((h, w), (kh, kw)).unwrap();
    let Some((poh, pow)) = pool.output_size((oh, ow)) else {
        return Err(TestCaseError::reject("the pool window does not fit"));
    };
    let r = &mut rng(seed);
    let x = uniform((n, c, h, w), r);
    let wt = uniform((k, c, kh, kw), r);
    let b = uniform(k, r);
    let y = conv2d(x.view(), wt.view(), Some(b.view()), p);
    prop_assume!(
        y.iter().all(|v| v.abs() > 1e-5),
        "an output near ReLU's kink"
    );
    let fwd = |x: &Array4<f64>, wt: &Array4<f64>, b: &Array1<f64>| {
        let (mut y, mut relu) = (Array4::zeros((n, k, oh, ow)), Array4::zeros((n, k, oh, ow)));
        let mut pooled = Array4::zeros((n, k, poh, pow));
        let fused = Some((relu.view_mut(), pooled.view_mut()));
        let mut plan = Conv2dPlan::new(wt.dim(), p).with_relu_avg_pool(pool);
        plan.inference_into(x.view(), wt.view(), Some(b.view()), y.view_mut(), fused);
        (relu, pooled)
    };
    let (relu, pooled) = fwd(&x, &wt, &b);
    let g = uniform(pooled.raw_dim(), r);
    let (mut gi, mut gw, mut gb) = (
        Array4::zeros(x.dim()),
        Array4::zeros(wt.dim()),
        Array1::zeros(k),
    );
    let grads = (Some(gi.view_mut()), gw.view_mut(), Some(gb.view_mut()));
    let mut plan = Conv2dPlan::new(wt.dim(), p).with_relu_avg_pool(pool);
    plan.backward_into(x.view(), wt.view(), g.view(), Some(relu.view()), grads);
    let at = format!(
        "conv_relu_pool x{:?} w{:?} {p:?} {pool:?}",
        x.dim(),
        wt.dim()
    );
    let phi = |x: &Array4<f64>, wt: &Array4<f64>, b: &Array1<f64>| dot(&fwd(x, wt, b).1, &g);
    check(
        &format!("{at}: grad_input"),
        &gi,
        &numeric_grad(&x, |x| phi(x, &wt, &b)),
    )?;
    check(
        &format!("{at}: grad_weight"),
        &gw,
        &numeric_grad(&wt, |wt| phi(&x, wt, &b)),
    )?;
    check(
        &format!("{at}: grad_bias"),
        &gb,
        &numeric_grad(&b, |b| phi(&x, &wt, b)),
    )?;
    Ok(())
}

proptest! {
    #![proptest_config(config(150))]

    /// One input channel (the direct method where the stride is 1) and several (im2col), odd
    /// sizes, pool windows that overlap, leave gaps or drop the last rows and columns.
    #[test]
    fn conv2d_relu_avg_pool2d_gradients(
        n in 1usize..=3,
        c in 1usize..=3,
        k in 1usize..=4,
        hd in conv_dim(),
        wd in conv_dim(),
        (pk, ps) in (1usize..=3, 1usize..=3),
        seed in any::<u64>(),
    ) {
        let pool = Pool2dParams { kernel: (pk, pk), stride: (ps, ps) };
        conv_relu_pool_gradcheck(n, c, k, (hd, wd), pool, seed)?;
    }
}

/// The fused op with LeNet-5's conv1 kernel (direct method, 1→6, 5×5, padding 2, 2×2 pool) on
/// 12×12 images, and on 6×6 ones with a batch of 40 (chunks of 2, parallel).
#[test]
fn conv2d_relu_avg_pool2d_gradients_at_conv1_and_chunked() {
    for (n, side, seed) in [(2, 12, 21), (40, 6, 22)] {
        let same = (side, 5, 1, 2);
        // drawn again (10 tries) while a convolution output is near ReLU's kink (see
        // conv_relu_pool_gradcheck)
        let checked = (0..10).find_map(|t| {
            let pool = Pool2dParams::square(2);
            match conv_relu_pool_gradcheck(n, 1, 6, (same, same), pool, seed + 100 * t) {
                Err(TestCaseError::Reject(_)) => None,
                other => Some(other),
            }
        });
        checked.expect("10 draws near the kink").unwrap();
    }
}
