//! The input gradient against central finite differences on the model itself, every pixel of a
//! few digits, and proof that the check is tight enough to catch a backward pass that forgets
//! one of conv1's six channels.
//!
//! Tolerance. The forward pass is f32: a logit of size ~10 carries rounding noise of ~1e-5,
//! which a difference quotient over 2h = 0.02 turns into ~1e-3 of noise on the slope. So the
//! step is h = 1e-2 on pixel values in [0, 1] (smaller would drown the slope in rounding; the
//! network is piecewise linear, so a larger step gains no accuracy and only crosses more ReLU
//! switches), the slopes are computed in f64 from the f32 logits, and a pixel agrees when
//! |backward − fd| ≤ ATOL·S + RTOL·|fd| with S the largest |fd| of the map. A pixel whose
//! one-sided slopes disagree lies at a kink (a ReLU switches within ±h): its difference quotient
//! means nothing and it is skipped; at most [`MAX_KINKS`] of the pixels may be.

#[path = "../../tests/common/strokes.rs"]
mod strokes;

use super::*;
use crate::activation::ActivationKind;
use crate::lenet5::LeNet5Config;
use crate::pool::PoolKind;
use rand::SeedableRng;

/// Finite-difference step on pixel values.
const H: f32 = 1e-2;
/// Absolute tolerance, as a fraction of the map's largest slope.
const ATOL: f64 = 1e-2;
/// Relative tolerance.
const RTOL: f64 = 1e-2;
/// Most pixels that may be skipped as kinks, as a fraction.
const MAX_KINKS: f64 = 0.1;

fn built_in() -> LeNet5 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lenet-cli/assets/lenet5-mnist.safetensors"
    );
    LeNet5::from_weights_file(path).expect("the built-in model loads")
}

/// The logit `class` of `image` with pixel `p` (row-major) changed by `delta`, in f64.
fn logit_at(model: &mut LeNet5, image: &Array2<f32>, class: usize, p: usize, delta: f32) -> f64 {
    let mut x = batch_of_one(image.view());
    x[[0, 0, p / IMAGE_SIZE, p % IMAGE_SIZE]] += delta;
    forward(model, x.view())[class] as f64
}

/// Central differences of logit `class` at every pixel, `None` where the one-sided slopes
/// disagree (a kink).
fn finite_differences(model: &mut LeNet5, image: &Array2<f32>, class: usize) -> Vec<Option<f64>> {
    let base = logit_at(model, image, class, 0, 0.0);
    let n = IMAGE_SIZE * IMAGE_SIZE;
    let slopes: Vec<(f64, f64)> = (0..n)
        .map(|p| {
            let up = logit_at(model, image, class, p, H);
            let down = logit_at(model, image, class, p, -H);
            ((up - base) / H as f64, (base - down) / H as f64)
        })
        .collect();
    let scale = slopes
        .iter()
        .map(|s| s.0.abs().max(s.1.abs()))
        .fold(0.0, f64::max);
    slopes
        .iter()
        .map(|&(right, left)| {
            let kink = (right - left).abs() > ATOL * scale + RTOL * (right.abs() + left.abs());
            (!kink).then_some((right + left) / 2.0)
        })
        .collect()
}

/// How `gradient` compares with `fd`: the worst |error| / (ATOL·S + RTOL·|fd|) over the pixels
/// checked (at most 1 means every one agrees) and the number of kinks skipped.
fn worst_error(gradient: ArrayView2<'_, f32>, fd: &[Option<f64>]) -> (f64, usize) {
    let scale = fd.iter().flatten().fold(0.0, |m: f64, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    for (&g, fd) in gradient.iter().zip(fd) {
        if let Some(fd) = fd {
            let allowed = ATOL * scale + RTOL * fd.abs();
            worst = worst.max((g as f64 - fd).abs() / allowed);
        }
    }
    (worst, fd.iter().filter(|v| v.is_none()).count())
}

fn check_model(model: &mut LeNet5, name: &str) {
    for (label, image) in strokes::stroke_digits().into_iter().step_by(3) {
        let logits = forward(model, batch_of_one(image.view()).view());
        let class = argmax(logits.iter().copied());
        let gradient = logit_gradient(model, image.view(), class);
        let fd = finite_differences(model, &image, class);
        let (worst, kinks) = worst_error(gradient.view(), &fd);
        println!(
            "{name}, digit {label} read as {class}: worst error {worst:.3} of the tolerance, \
             {kinks} of 784 pixels at kinks"
        );
        assert!(
            worst <= 1.0,
            "{name}, digit {label}: backward and finite differences differ"
        );
        assert!(kinks as f64 <= MAX_KINKS * 784.0, "{name}: {kinks} kinks");
    }
}

#[test]
fn the_logit_gradient_matches_central_finite_differences() {
    check_model(&mut built_in(), "built-in model");
    // The other backward path: tanh and max pooling run layer by layer, not fused.
    let config = LeNet5Config {
        activation: ActivationKind::Tanh,
        pooling: PoolKind::Max,
        ..LeNet5Config::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    check_model(
        &mut LeNet5::new(config, &mut rng),
        "random tanh/max-pool model",
    );
}

#[test]
fn the_check_catches_a_backward_pass_missing_one_conv1_channel() {
    let mut model = built_in();
    let (_, image) = strokes::stroke_digits().swap_remove(7);
    let x = batch_of_one(image.view());
    let class = argmax(forward(&mut model, x.view()).iter().copied());
    let fd = finite_differences(&mut model, &image, class);
    let mut upstream = Array2::zeros((1, NUM_CLASSES));
    upstream[[0, class]] = 1.0;
    for k in 0..model.config().c1 {
        let wrong = model.input_gradient_without_conv1_channel(x.view(), upstream.view(), k);
        let (worst, _) = worst_error(wrong.slice(s![0, 0, .., ..]), &fd);
        println!("without conv1 channel {k}: worst error {worst:.1} of the tolerance");
        assert!(
            worst > 1.0,
            "a gradient missing channel {k} passed the check"
        );
    }
}
