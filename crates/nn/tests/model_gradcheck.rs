//! Whole-model gradient check by central finite differences, for every architecture variant
//! (the PyTorch parity test covers only ReLU + average pooling). It catches wiring mistakes in
//! `LeNet5::backward` (a wrong layer input, a wrong activation derivative), which show up as
//! O(1) errors; the float32 tolerance is therefore loose.

mod common;

use common::synthetic;
use ndarray::ArrayView4;
use nn::{
    ActivationKind, BatchSource, LeNet5, LeNet5Config, PoolKind, SoftmaxCrossEntropy, IMAGE_LEN,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mean cross-entropy computed in f64 from the f32 logits: an f32 loss (ulp ~2e-7 at 2.3)
/// would hide the small changes a finite difference measures.
fn loss_of(model: &mut LeNet5, x: ArrayView4<'_, f32>, y: &[usize]) -> f64 {
    let logits = model.forward(x);
    let mut total = 0.0;
    for (row, &t) in logits.rows().into_iter().zip(y) {
        let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        total += lse - row[t] as f64;
    }
    total / y.len() as f64
}

#[test]
fn every_variant_matches_finite_differences() {
    let n = 4;
    let data = synthetic(n, 3);
    let mut images = vec![0.0f32; n * IMAGE_LEN];
    let mut labels = vec![0usize; n];
    data.fill_batch(&(0..n).collect::<Vec<_>>(), &mut images, &mut labels);
    let x = ArrayView4::from_shape((n, 1, 28, 28), &images[..]).unwrap();

    for activation in [
        ActivationKind::Relu,
        ActivationKind::Tanh,
        ActivationKind::Sigmoid,
    ] {
        for pooling in [PoolKind::Avg, PoolKind::Max] {
            let config = LeNet5Config {
                activation,
                pooling,
                c1: 3,
                c2: 4,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut model = LeNet5::new(config, &mut rng);
            let mut loss = SoftmaxCrossEntropy::new();
            let logits = model.forward(x);
            loss.forward_backward(logits, &labels);
            model.backward(x, loss.grad_logits(), true);
            let grads: Vec<Vec<f32>> = model.params().iter().map(|p| p.grad.to_vec()).collect();

            let eps = 3e-3f32;
            let mut checked = 0;
            let mut kinks = 0;
            let mut worst = 0.0f64;
            for (pi, name) in nn::PARAM_NAMES.iter().enumerate() {
                for _ in 0..8 {
                    let len = grads[pi].len();
                    let i = rng.gen_range(0..len);
                    let orig = model.params()[pi].value[i];
                    let set = |m: &mut LeNet5, v: f32| {
                        let mut vals = m.params()[pi].value.to_vec();
                        vals[i] = v;
                        m.set_param(name, &vals);
                    };
                    let base = loss_of(&mut model, x, &labels);
                    set(&mut model, orig + eps);
                    let up = loss_of(&mut model, x, &labels);
                    set(&mut model, orig - eps);
                    let down = loss_of(&mut model, x, &labels);
                    set(&mut model, orig);
                    // If the one-sided slopes disagree, the step crossed a kink (ReLU at 0,
                    // a max-pool switch): the difference quotient means nothing there.
                    let (right, left) = ((up - base) / eps as f64, (base - down) / eps as f64);
                    if (right - left).abs() > 0.05 * (right.abs() + left.abs()) + 1e-4 {
                        kinks += 1;
                        continue;
                    }
                    let fd = (up - down) / (2.0 * eps as f64);
                    let g = grads[pi][i] as f64;
                    let err = (fd - g).abs() / (g.abs().max(fd.abs()) + 1e-3);
                    worst = worst.max(err);
                    checked += 1;
                    assert!(
                        err < 0.15,
                        "{activation:?}/{pooling:?} {name}[{i}]: backward {g:e}, finite difference {fd:e}"
                    );
                }
            }
            println!(
                "{activation:?}/{pooling:?}: {checked} entries checked, {kinks} at kinks skipped, \
                 worst relative error {worst:.2e}"
            );
            assert!(
                checked >= 40,
                "too many kinks: only {checked} entries checked"
            );
        }
    }
}
