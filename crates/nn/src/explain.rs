//! Why the network gives its answer, and how little it takes to make it give another: a
//! saliency map and a targeted adversarial search. Both rest on one quantity, the gradient of
//! something computed from the logits with respect to the input pixels, and both take it from
//! the model's own backward pass: [`LeNet5::backward`] with `grad_input`, which continues the
//! chain rule of training one step further, through conv1 to its input (a step training skips,
//! since no parameter lies before conv1).
//!
//! # Saliency: |∂z_c/∂x|
//!
//! For an image x with logits z(x) and a class c, the saliency of pixel p is |∂z_c/∂x_p|: how
//! strongly a small change of that one pixel moves the class's logit (Simonyan, Vedaldi and
//! Zisserman 2013, "Deep inside convolutional networks"). Backpropagating the one-hot upstream
//! gradient e_c from the logits gives every ∂z_c/∂x_p in one pass: through fc3, fc2, fc1, the
//! pools and activations exactly as in training, then through conv1, whose input gradient is the
//! transposed convolution of its output gradient δ with its weights w:
//! ∂z_c/∂x = Σ_k convT(δ_k, w_k) (`tensor::conv2d_backward`'s `grad_input`).
//!
//! With ReLU and average pooling the network is piecewise linear in x, so this is the exact slope
//! of z_c wherever no ReLU switches on or off: a central finite difference agrees with it up to
//! f32 rounding (the tests check every pixel whose small change switches no ReLU).
//!
//! # Fooling the network: targeted iterative FGSM
//!
//! To make the network read a target class t, lower the cross-entropy L(x) = −log softmax(z(x))_t.
//! Its gradient with respect to the logits is softmax(z) − e_t, and the backward pass turns that
//! into ∇x L. Among steps d with every |d_p| ≤ α, the one that lowers the linearised loss
//! L + ⟨∇x L, d⟩ most is d = −α·sign(∇x L) (the max-norm ball's steepest descent): the fast
//! gradient sign method (Goodfellow, Shlens and Szegedy 2014). Repeating small such steps
//! (Kurakin, Goodfellow and Bengio 2016) and projecting back after each one gives
//!
//! x ← clip(x − α·sign(∇x L), [max(0, x₀ − ε), min(1, x₀ + ε)]),
//!
//! so the result stays a valid image (pixels in [0, 1]) within ε of the original x₀ in the
//! max-norm: no pixel changes by more than ε. The interval contains x₀, so it is never empty.
//! The search stops as soon as the network reads t, or after the given number of steps.
//! That such small changes exist at all for networks that classify well is what Szegedy et al.
//! (2013, "Intriguing properties of neural networks") called adversarial examples.

use ndarray::{s, Array1, Array2, Array4, ArrayView2, ArrayView4, Axis, Zip};

use crate::lenet5::{LeNet5, IMAGE_SIZE, NUM_CLASSES};
use crate::loss::{argmax, softmax};

/// The signed gradient ∂z_class/∂x of one logit with respect to the pixels of `image` (28×28),
/// from one forward and one backward pass of `model` (which overwrite its buffers and parameter
/// gradients, not its parameters).
///
/// # Panics
/// If `image` is not 28×28 or `class` is not below [`NUM_CLASSES`].
pub fn logit_gradient(model: &mut LeNet5, image: ArrayView2<'_, f32>, class: usize) -> Array2<f32> {
    assert!(
        class < NUM_CLASSES,
        "logit_gradient: class {class} is not 0-9"
    );
    let x = batch_of_one(image);
    let logits = forward(model, x.view());
    let mut upstream = Array1::zeros(logits.len());
    upstream[class] = 1.0;
    input_gradient(model, x.view(), upstream)
}

/// The saliency map of `image` for `class`: |∂z_class/∂x|, 28×28 (see the module
/// documentation).
///
/// # Panics
/// As [`logit_gradient`].
pub fn saliency(model: &mut LeNet5, image: ArrayView2<'_, f32>, class: usize) -> Array2<f32> {
    logit_gradient(model, image, class).mapv(f32::abs)
}

/// What the adversarial search is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttackConfig {
    /// The class the network should read, 0-9.
    pub target: usize,
    /// The largest change of any pixel (max-norm bound), in (0, 1].
    pub epsilon: f32,
    /// The most gradient steps to take, at least 1.
    pub steps: usize,
    /// How far each step moves a pixel, in (0, 1].
    pub step_size: f32,
}

impl AttackConfig {
    /// A search with the default step size, [`AttackConfig::default_step_size`].
    pub fn new(target: usize, epsilon: f32, steps: usize) -> AttackConfig {
        AttackConfig {
            target,
            epsilon,
            steps,
            step_size: Self::default_step_size(epsilon, steps),
        }
    }

    /// 2.5·ε/steps (Madry et al. 2018): enough for the search to cross the whole ε-box and back
    /// within its steps, in steps small enough to stop close to where the answer flips.
    pub fn default_step_size(epsilon: f32, steps: usize) -> f32 {
        (2.5 * epsilon / steps.max(1) as f32).min(1.0)
    }

    /// Why this configuration cannot run, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let unit = |v: f32| v.is_finite() && v > 0.0 && v <= 1.0;
        if self.target >= NUM_CLASSES {
            return Err(format!("target {} is not a class 0-9", self.target));
        }
        if !unit(self.epsilon) {
            return Err(format!("epsilon {} is not in (0, 1]", self.epsilon));
        }
        if self.steps == 0 {
            return Err("steps must be at least 1".to_string());
        }
        if !unit(self.step_size) {
            return Err(format!("step size {} is not in (0, 1]", self.step_size));
        }
        Ok(())
    }
}

/// The outcome of [`targeted_attack`].
#[derive(Debug, Clone, PartialEq)]
pub struct Attack {
    /// The changed image, 28×28, every pixel in [0, 1] and within ε of the original.
    pub adversarial: Array2<f32>,
    /// `adversarial − original`, every value in [−ε, ε].
    pub perturbation: Array2<f32>,
    /// The network's probabilities for the changed image.
    pub probabilities: Vec<f32>,
    /// The class it reads in the changed image.
    pub prediction: usize,
    /// Whether that is the target.
    pub reached: bool,
    /// Gradient steps taken (0 when the original already reads as the target).
    pub steps_taken: usize,
}

/// Searches for an image within `config.epsilon` of `image` (28×28, pixels in [0, 1]) in the
/// max-norm that `model` reads as `config.target`, by targeted iterative FGSM (see the module
/// documentation). Uses `model`'s buffers as [`logit_gradient`] does.
///
/// # Panics
/// If `image` is not 28×28, has a pixel outside [0, 1], or [`AttackConfig::check`] fails.
pub fn targeted_attack(
    model: &mut LeNet5,
    image: ArrayView2<'_, f32>,
    config: &AttackConfig,
) -> Attack {
    if let Err(why) = config.check() {
        panic!("targeted_attack: {why}");
    }
    assert!(
        image.iter().all(|v| (0.0..=1.0).contains(v)),
        "targeted_attack: pixels must be in [0, 1]"
    );
    let x0 = batch_of_one(image);
    let lo = x0.mapv(|v| (v - config.epsilon).max(0.0));
    let hi = x0.mapv(|v| (v + config.epsilon).min(1.0));
    let mut x = x0.clone();
    let mut steps_taken = 0;
    loop {
        let logits = forward(model, x.view());
        let prediction = argmax(logits.iter().copied());
        if prediction == config.target || steps_taken == config.steps {
            let adversarial = x.slice(s![0, 0, .., ..]).to_owned();
            return Attack {
                perturbation: &adversarial - &image,
                adversarial,
                probabilities: softmax_row(logits),
                prediction,
                reached: prediction == config.target,
                steps_taken,
            };
        }
        // dL/dz = softmax(z) − e_t for L = −log softmax(z)_t.
        let mut upstream = Array1::from(softmax_row(logits));
        upstream[config.target] -= 1.0;
        let grad = input_gradient(model, x.view(), upstream);
        let step = config.step_size;
        Zip::from(x.slice_mut(s![0, 0, .., ..]))
            .and(&grad)
            .and(lo.slice(s![0, 0, .., ..]))
            .and(hi.slice(s![0, 0, .., ..]))
            .for_each(|x, &g, &lo, &hi| *x = (*x - step * sign(g)).max(lo).min(hi));
        steps_taken += 1;
    }
}

/// +1, −1, or 0 for a zero gradient (a pixel the loss does not depend on stays put;
/// `f32::signum` would give +1).
fn sign(g: f32) -> f32 {
    if g > 0.0 {
        1.0
    } else if g < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `image` as the model's input `[1, 1, 28, 28]`.
fn batch_of_one(image: ArrayView2<'_, f32>) -> Array4<f32> {
    assert_eq!(
        image.dim(),
        (IMAGE_SIZE, IMAGE_SIZE),
        "explain: the image must be 28×28"
    );
    let mut x = Array4::zeros((1, 1, IMAGE_SIZE, IMAGE_SIZE));
    x.slice_mut(s![0, 0, .., ..]).assign(&image);
    x
}

/// The logits of the one image in `x`, by the model's own forward pass (which keeps every
/// layer's output for [`input_gradient`]).
fn forward(model: &mut LeNet5, x: ArrayView4<'_, f32>) -> Array1<f32> {
    model.forward(x).row(0).to_owned()
}

/// ∂(upstream · z)/∂x for the one image in `x`, 28×28, after [`forward`] on the same `x`:
/// the model's backward pass with conv1's input gradient.
fn input_gradient(
    model: &mut LeNet5,
    x: ArrayView4<'_, f32>,
    upstream: Array1<f32>,
) -> Array2<f32> {
    let upstream = upstream.insert_axis(Axis(0));
    model.backward(x, upstream.view(), true);
    model.grad_input().slice(s![0, 0, .., ..]).to_owned()
}

/// Softmax of one row of logits.
fn softmax_row(logits: Array1<f32>) -> Vec<f32> {
    softmax(logits.insert_axis(Axis(0)).view()).row(0).to_vec()
}

#[cfg(test)]
mod tests;
