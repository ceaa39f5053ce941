//! The convolution methods agree: for random shapes with stride 1, the direct method's (one
//! input channel) and the shifted method's (any channels) forward pass and gradients equal the
//! im2col method's to f32 rounding, and both are bit-identical on 1, 2 and 3 threads.
//!
//! Tolerance. Each compared value is a sum of `m` products (`m = c·kh·kw` + the bias for the
//! output, `n·oh·ow` for the weight gradient, at most `k·kh·kw` for the input gradient). Summed
//! in any order in f32, each method is within `m·u·S` of the exact value, where `u = 2⁻²⁴` and
//! `S` is the sum of the products' magnitudes (the same op applied to `|x|`, `|w|`, `|g|`,
//! computed in f64). So the two methods must agree within `2·m·u·S` per element; a wrong index
//! or a lost term changes a value by about `S/m`, far more (`m ≤ 500` here).

use ndarray::{Array1, Array4, ArrayView4, Zip};
use proptest::prelude::*;
use proptest::test_runner::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::internals::Conv2dMethod;
use tensor::*;

const U: f64 = 1.0 / (1u64 << 24) as f64;

struct Case {
    x: Array4<f32>,
    w: Array4<f32>,
    b: Array1<f32>,
    g: Array4<f32>,
    p: Conv2dParams,
}

fn case(
    (n, c, k, h, w): (usize, usize, usize, usize, usize),
    (kh, kw, ph, pw): (usize, usize, usize, usize),
    seed: u64,
) -> Case {
    let r = &mut ChaCha8Rng::seed_from_u64(seed);
    let mut u4 = |s| Array4::from_shape_simple_fn(s, || r.gen_range(-1.0f32..1.0));
    let p = Conv2dParams {
        stride: (1, 1),
        padding: (ph, pw),
    };
    let (oh, ow) = p.output_size((h, w), (kh, kw)).unwrap();
    let (x, wt, g) = (u4((n, c, h, w)), u4((k, c, kh, kw)), u4((n, k, oh, ow)));
    let b = Array1::from_shape_fn(k, |i| i as f32 * 0.25 - 0.5);
    Case { x, w: wt, b, g, p }
}

/// Forward output and the three gradients of one method, in f32.
fn run(c: &Case, m: Conv2dMethod) -> (Array4<f32>, Array4<f32>, Array4<f32>, Array1<f32>) {
    let mut plan = Conv2dPlan::new(c.w.dim(), c.p).with_method(m);
    let mut y = Array4::from_elem(c.g.dim(), f32::NAN);
    let (x, w) = (c.x.view(), c.w.view());
    plan.inference_into(x, w, Some(c.b.view()), y.view_mut(), None);
    let mut gi = Array4::from_elem(c.x.dim(), f32::NAN);
    let mut gw = Array4::from_elem(c.w.dim(), f32::NAN);
    let mut gb = Array1::from_elem(c.b.len(), f32::NAN);
    let grads = (Some(gi.view_mut()), gw.view_mut(), Some(gb.view_mut()));
    plan.backward_into(x, w, c.g.view(), None, grads);
    (y, gi, gw, gb)
}

/// `|a − b| ≤ 2·m·u·S` elementwise, `S` the magnitude sums.
fn close(what: &str, a: ArrayView4<'_, f32>, b: ArrayView4<'_, f32>, s: &Array4<f64>, m: usize) {
    let mut worst = (0.0, 0.0);
    Zip::from(&a).and(&b).and(s).for_each(|&a, &b, &s| {
        let (d, tol) = ((f64::from(a) - f64::from(b)).abs(), 2.0 * m as f64 * U * s);
        if d.is_nan() || d > tol {
            worst = (d, tol);
        }
    });
    assert!(
        worst == (0.0, 0.0),
        "{what}: |a − b| = {:e} > {:e}",
        worst.0,
        worst.1
    );
}

fn abs64(a: &Array4<f32>) -> Array4<f64> {
    a.mapv(|v| f64::from(v.abs()))
}

/// Compares method `a` (a = the first values in messages) with im2col.
fn compare(c: &Case, a: Conv2dMethod) {
    let (y1, gi1, gw1, gb1) = run(c, a);
    let (y2, gi2, gw2, gb2) = run(c, Conv2dMethod::Im2col);
    let ((n, ..), (k, ch, kh, kw)) = (c.x.dim(), c.w.dim());
    let (oh, ow) = (c.g.dim().2, c.g.dim().3);
    let (ax, aw, ag) = (abs64(&c.x), abs64(&c.w), abs64(&c.g));
    let ab = c.b.mapv(|v| f64::from(v.abs()));
    let at = format!(
        "{a:?} vs im2col, x{:?} w{:?} {:?}",
        c.x.dim(),
        c.w.dim(),
        c.p
    );
    let s_y = conv2d(ax.view(), aw.view(), Some(ab.view()), c.p);
    close(
        &format!("{at}: output"),
        y1.view(),
        y2.view(),
        &s_y,
        ch * kh * kw + 1,
    );
    let s = conv2d_backward(ax.view(), aw.view(), ag.view(), c.p);
    close(
        &format!("{at}: grad_input"),
        gi1.view(),
        gi2.view(),
        &s.input,
        k * kh * kw,
    );
    close(
        &format!("{at}: grad_weight"),
        gw1.view(),
        gw2.view(),
        &s.weight,
        n * oh * ow,
    );
    let as4 = |a: Array1<f32>| a.into_shape_with_order((1, 1, 1, k)).unwrap();
    let (gb1, gb2) = (as4(gb1), as4(gb2));
    let s_b = s.bias.into_shape_with_order((1, 1, 1, k)).unwrap();
    close(
        &format!("{at}: grad_bias"),
        gb1.view(),
        gb2.view(),
        &s_b,
        n * oh * ow,
    );
}

proptest! {
    #![proptest_config(Config { cases: 96, failure_persistence: None, ..Config::default() })]

    #[test]
    fn direct_equals_im2col(
        n in 1usize..=4, k in 1usize..=8,
        (kh, ph, eh) in (1usize..=6, 0usize..=3, 0usize..=30),
        (kw, pw, ew) in (1usize..=6, 0usize..=3, 0usize..=40),
        seed in any::<u64>(),
    ) {
        let h = kh.saturating_sub(2 * ph).max(1) + eh;
        let w = kw.saturating_sub(2 * pw).max(1) + ew;
        compare(&case((n, 1, k, h, w), (kh, kw, ph, pw), seed), Conv2dMethod::Direct);
    }

    #[test]
    fn shifted_equals_im2col(
        n in 1usize..=3, c in 1usize..=4, k in 1usize..=8,
        (kh, ph, eh) in (1usize..=6, 0usize..=3, 0usize..=20),
        (kw, pw, ew) in (1usize..=6, 0usize..=3, 0usize..=20),
        seed in any::<u64>(),
    ) {
        let h = kh.saturating_sub(2 * ph).max(1) + eh;
        let w = kw.saturating_sub(2 * pw).max(1) + ew;
        compare(&case((n, c, k, h, w), (kh, kw, ph, pw), seed), Conv2dMethod::Shifted);
    }
}

#[test]
fn direct_equals_im2col_at_conv1_shapes() {
    for n in [1, 32, 45] {
        let c = case((n, 1, 6, 28, 28), (5, 5, 2, 2), n as u64);
        compare(&c, Conv2dMethod::Direct);
        compare(&c, Conv2dMethod::Shifted);
    }
}

#[test]
fn shifted_equals_im2col_at_conv2_shapes() {
    for n in [1, 32, 45] {
        let c = case((n, 6, 16, 14, 14), (5, 5, 0, 0), n as u64);
        compare(&c, Conv2dMethod::Shifted);
    }
}

#[test]
fn direct_and_shifted_methods_are_bit_identical_on_1_2_and_3_threads() {
    let conv1 = case((45, 1, 6, 28, 28), (5, 5, 2, 2), 3);
    let conv2 = case((45, 6, 16, 14, 14), (5, 5, 0, 0), 4);
    for (c, m) in [
        (&conv1, Conv2dMethod::Direct),
        (&conv2, Conv2dMethod::Shifted),
    ] {
        let on = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            pool.install(|| run(c, m))
        };
        let one = on(1);
        for t in [2, 3] {
            assert_eq!(on(t), one, "{m:?}, {t} threads");
        }
    }
}

/// A kernel wider than the padded input's last columns: some kernel columns read only padding
/// for every output column (the input gradient must skip them, not index before the row).
#[test]
fn direct_equals_im2col_when_a_kernel_column_reads_only_padding() {
    let c = case((1, 1, 2, 4, 1), (3, 6, 1, 3), 5);
    compare(&c, Conv2dMethod::Direct);
    compare(&c, Conv2dMethod::Shifted);
}
