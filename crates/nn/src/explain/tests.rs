//! The input gradient against central finite differences on the model itself, at every pixel of
//! a few digits where the difference quotient means something, and proof that the check is
//! tight enough to catch a backward pass that forgets one of conv1's six channels.
//!
//! Kinks. With ReLU and average pooling the network is piecewise linear: while no ReLU switches
//! on or off, a logit is exactly linear in the pixels, and a central difference equals the
//! gradient up to rounding. A pixel whose ±h change switches some ReLU (the on/off pattern, the
//! sign of every conv1, conv2, fc1 and fc2 output, differs at x ± h·e_p from the one at x) is
//! therefore skipped. On a blank background that is most pixels (about 690 of 784): four of the
//! built-in model's conv1 biases are within 7e-4 of 0, so on x = 0 those channels sit right at
//! their switch. The digits are therefore checked on grey paper too (background 0.1: 300 to 600
//! kinks). The tanh model is smooth and has no kinks: every pixel is checked there.
//!
//! Tolerance. The forward pass is f32: a logit of ~16 carries rounding noise of a few 1e-6,
//! which a quotient over 2h = 0.02 turns into ~2e-4 on a slope (measured: slopes of ~0.2 agree
//! to 2e-4). So the step is h = 1e-2 on pixel values in [0, 1] (a smaller one drowns the slope
//! in rounding, a larger one switches more ReLUs and adds O(h²) error for tanh), the slopes are
//! computed in f64 from the f32 logits, and a pixel agrees when |backward − fd| ≤ ATOL·S +
//! RTOL·|fd|, S the largest |fd| of the map (~0.6 for the built-in model). Measured, the worst
//! pixel uses 2 to 8% of that (rounding only), while a backward pass that leaves out one conv1
//! channel's term exceeds it 14 to 38 times (the second test): the tolerance leaves room for
//! other kernel tiers' rounding and still catches a missing term.

#[path = "../../tests/common/strokes.rs"]
mod strokes;

use super::*;
use crate::activation::ActivationKind;
use crate::lenet5::LeNet5Config;
use rand::SeedableRng;

/// Finite-difference step on pixel values.
const H: f32 = 1e-2;
/// Absolute tolerance, as a fraction of the map's largest slope.
const ATOL: f64 = 1e-2;
/// Relative tolerance.
const RTOL: f64 = 1e-2;
/// Fewest pixels of an image that must be checked (not at a kink): 84 to 95 are on the plain
/// digits, 179 to 481 on grey.
const MIN_CHECKED: usize = 60;

fn built_in() -> LeNet5 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lenet-cli/assets/lenet5-mnist.safetensors"
    );
    LeNet5::from_weights_file(path).expect("the built-in model loads")
}

/// The logit `class` of `image` with pixel `p` (row-major) changed by `delta`, in f64, and
/// the on/off pattern of every ReLU (empty for other activations).
fn logit_at(
    model: &mut LeNet5,
    image: &Array2<f32>,
    class: usize,
    p: usize,
    delta: f32,
) -> (f64, Vec<bool>) {
    let mut x = batch_of_one(image.view());
    x[[0, 0, p / IMAGE_SIZE, p % IMAGE_SIZE]] += delta;
    let logit = forward(model, x.view())[class] as f64;
    let mut pattern = Vec::new();
    if model.config().activation == ActivationKind::Relu {
        let a = model.activations();
        let outputs = a.conv1.iter().chain(&a.conv2).chain(&a.fc1).chain(&a.fc2);
        pattern.extend(outputs.map(|&v| v > 0.0));
    }
    (logit, pattern)
}

/// Central differences of logit `class` at every pixel, `None` at a kink (where the ±h change
/// switches some ReLU).
fn finite_differences(model: &mut LeNet5, image: &Array2<f32>, class: usize) -> Vec<Option<f64>> {
    let (_, pattern) = logit_at(model, image, class, 0, 0.0);
    (0..IMAGE_SIZE * IMAGE_SIZE)
        .map(|p| {
            let (up, up_pattern) = logit_at(model, image, class, p, H);
            let (down, down_pattern) = logit_at(model, image, class, p, -H);
            let linear = up_pattern == pattern && down_pattern == pattern;
            linear.then_some((up - down) / (2.0 * H as f64))
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
    // Four digits, plain and on grey paper (background 0.1, away from conv1's switches).
    let grey = |x: f32| 0.1 + 0.9 * x;
    let digits = strokes::stroke_digits().into_iter().step_by(3);
    let on_grey = digits.clone().map(|(d, x)| (d, x.mapv(grey)));
    for (label, image) in digits.chain(on_grey) {
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
        assert!(784 - kinks >= MIN_CHECKED, "{name}: {kinks} kinks");
    }
}

#[test]
fn the_logit_gradient_matches_central_finite_differences() {
    check_model(&mut built_in(), "built-in model");
    // The other backward path: with tanh the layers run one by one, not fused.
    let config = LeNet5Config {
        activation: ActivationKind::Tanh,
        ..LeNet5Config::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    check_model(&mut LeNet5::new(config, &mut rng), "random tanh model");
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
