//! SGD against a two-step example computed by hand (in exact decimal arithmetic), with and
//! without Nesterov momentum, and without momentum.

use nn::{ParamMut, Sgd, SgdConfig};

/// Runs two steps from p = [1, −2] with gradients g1 = [0.5, 0.25] then g2 = [−1, 0.5]
/// (the gradient does not depend on p here), lr 0.1, weight decay 0.01.
fn two_steps(momentum: f32, nesterov: bool) -> [Vec<f32>; 2] {
    let mut sgd = Sgd::new(
        SgdConfig {
            lr: 0.1,
            momentum,
            weight_decay: 0.01,
            nesterov,
        },
        [2],
    );
    let mut p = vec![1.0f32, -2.0];
    let mut out = [Vec::new(), Vec::new()];
    for (k, g) in [[0.5f32, 0.25], [-1.0, 0.5]].iter().enumerate() {
        sgd.step(&mut [ParamMut {
            name: "p",
            shape: &[2],
            value: &mut p,
            grad: g,
        }]);
        out[k] = p.clone();
    }
    out
}

fn assert_close(got: &[f32], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (*g as f64 - w).abs() < 1e-6,
            "got {got:?}, want {want:?} (by hand)"
        );
    }
}

#[test]
fn momentum_matches_hand_computation() {
    // Step 1: d = g + 0.01·p = [0.51, 0.23]; buf = d; p = p − 0.1·buf = [0.949, −2.023].
    // Step 2: d = [−1 + 0.00949, 0.5 − 0.02023] = [−0.99051, 0.47977];
    //         buf = 0.9·[0.51, 0.23] + d = [−0.53151, 0.68677];
    //         p = [0.949 + 0.053151, −2.023 − 0.068677] = [1.002151, −2.091677].
    let [s1, s2] = two_steps(0.9, false);
    assert_close(&s1, &[0.949, -2.023]);
    assert_close(&s2, &[1.002151, -2.091677]);
}

#[test]
fn nesterov_matches_hand_computation() {
    // Step 1: d = [0.51, 0.23]; buf = d; d += 0.9·buf → [0.969, 0.437];
    //         p = [1 − 0.0969, −2 − 0.0437] = [0.9031, −2.0437].
    // Step 2: d = [−1 + 0.009031, 0.5 − 0.020437] = [−0.990969, 0.479563];
    //         buf = 0.9·[0.51, 0.23] + d = [−0.531969, 0.686563];
    //         d += 0.9·buf → [−1.4697411, 1.0974697];
    //         p = [0.9031 + 0.14697411, −2.0437 − 0.10974697] = [1.05007411, −2.15344697].
    let [s1, s2] = two_steps(0.9, true);
    assert_close(&s1, &[0.9031, -2.0437]);
    assert_close(&s2, &[1.05007411, -2.15344697]);
}

#[test]
fn plain_sgd_matches_hand_computation() {
    // Step 1: p = [1 − 0.1·0.51, −2 − 0.1·0.23] = [0.949, −2.023].
    // Step 2: d = [−0.99051, 0.47977]; p = [0.949 + 0.099051, −2.023 − 0.047977]
    //         = [1.048051, −2.070977].
    let [s1, s2] = two_steps(0.0, false);
    assert_close(&s1, &[0.949, -2.023]);
    assert_close(&s2, &[1.048051, -2.070977]);
}

#[test]
fn invalid_settings_are_rejected() {
    let ok = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: true,
    };
    assert!(ok.validate().is_ok());
    assert!(SgdConfig {
        momentum: 0.0,
        ..ok
    }
    .validate()
    .is_err());
    assert!(SgdConfig {
        momentum: 1.0,
        ..ok
    }
    .validate()
    .is_err());
    assert!(SgdConfig { lr: f32::NAN, ..ok }.validate().is_err());
    assert!(SgdConfig {
        weight_decay: -1.0,
        ..ok
    }
    .validate()
    .is_err());
}

/// A step updates pieces of each parameter in parallel; every element's update reads that
/// element alone, so a parameter of several pieces (100,000 elements) gets the bits of the
/// element-by-element formula on 1, 2 and 3 threads.
#[test]
fn a_step_has_the_bits_of_the_formula_on_any_thread_count() {
    let n = 100_000;
    let start: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let grads: [Vec<f32>; 2] =
        [0.1f32, 0.7].map(|a| (0..n).map(|i| (i as f32 * a).cos()).collect());
    let config = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: true,
    };
    // the module docs' formula, one element at a time, for two steps
    let mut want = start.clone();
    let mut buf = vec![0.0f32; n];
    for (k, g) in grads.iter().enumerate() {
        for ((v, &g), b) in want.iter_mut().zip(g).zip(&mut buf) {
            let d = g + config.weight_decay * *v;
            *b = if k == 0 { d } else { config.momentum * *b + d };
            *v -= config.lr * (d + config.momentum * *b);
        }
    }
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut sgd = Sgd::new(config, [n]);
        let mut p = start.clone();
        for g in &grads {
            let param = ParamMut {
                name: "p",
                shape: &[n],
                value: &mut p,
                grad: g,
            };
            pool.install(|| sgd.step(&mut [param]));
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p), bits(&want), "{threads} threads");
    }
}
