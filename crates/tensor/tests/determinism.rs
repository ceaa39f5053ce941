//! Results must not depend on the number of threads: the training loop promises bit-identical
//! runs for a given seed, and the convolution weight gradient is a reduction over the batch.
//! Every LeNet-5 kernel is run, forward and backward, on rayon pools of 1, 2 and 3 threads and
//! the results are compared bit for bit.

use ndarray::{Array1, Array2, Array4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::*;

fn random4(shape: (usize, usize, usize, usize), rng: &mut ChaCha8Rng) -> Array4<f32> {
    Array4::from_shape_simple_fn(shape, || rng.gen_range(-1.0..1.0))
}

/// Every output and gradient of one LeNet-5-shaped forward/backward pass, as bit patterns.
fn lenet_kernels(n: usize) -> Vec<Vec<u32>> {
    let r = &mut ChaCha8Rng::seed_from_u64(42);
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut keep = |a: &[f32]| out.push(a.iter().map(|v| v.to_bits()).collect());

    let x = random4((n, 1, 28, 28), r);
    let w1 = random4((6, 1, 5, 5), r);
    let b1 = Array1::from_elem(6, 0.05_f32);
    let p1 = Conv2dParams {
        stride: (1, 1),
        padding: (2, 2),
    };
    let mut c1 = Array4::zeros((n, 6, 28, 28));
    conv2d_into(x.view(), w1.view(), Some(b1.view()), p1, c1.view_mut());
    let c1 = Activation::Relu.forward(c1.view());
    let s1 = avg_pool2d(c1.view(), Pool2dParams::square(2));
    let w2 = random4((16, 6, 5, 5), r);
    let c2 = conv2d(s1.view(), w2.view(), None, Conv2dParams::default());
    let m2 = max_pool2d(c2.view(), Pool2dParams::square(2));
    let flat = m2.into_shape_with_order((n, 400)).unwrap();
    let wf = Array2::from_shape_simple_fn((10, 400), || r.gen_range(-0.05..0.05));
    let logits = linear(flat.view(), wf.view(), None);
    let targets: Vec<usize> = (0..n).map(|i| i % 10).collect();
    let mut dl = Array2::zeros((n, 10));
    let loss = softmax_cross_entropy_into(logits.view(), &targets, dl.view_mut());
    keep(&[loss]);
    keep(c1.as_slice().unwrap());
    keep(logits.as_slice().unwrap());

    let lg = linear_backward(flat.view(), wf.view(), dl.view());
    keep(lg.weight.as_slice().unwrap());
    let dm2 = lg.input.into_shape_with_order((n, 16, 5, 5)).unwrap();
    let dc2 = max_pool2d_backward(c2.view(), dm2.view(), Pool2dParams::square(2));
    let g2 = conv2d_backward(s1.view(), w2.view(), dc2.view(), Conv2dParams::default());
    keep(g2.input.as_slice().unwrap());
    keep(g2.weight.as_slice().unwrap());
    keep(g2.bias.as_slice().unwrap());
    let mut ds1 = avg_pool2d_backward(g2.input.view(), Pool2dParams::square(2), c1.dim());
    Activation::Relu.backward_inplace(c1.view(), ds1.view_mut());
    let (mut gw1, mut gb1) = (Array4::zeros((6, 1, 5, 5)), Array1::zeros(6));
    conv2d_backward_into(
        x.view(),
        w1.view(),
        ds1.view(),
        p1,
        None,
        gw1.view_mut(),
        Some(gb1.view_mut()),
    );
    keep(gw1.as_slice().unwrap());
    keep(gb1.as_slice().unwrap());
    out
}

#[test]
fn every_kernel_is_bit_identical_on_1_2_and_3_threads() {
    for n in [1, 7, 64, 100] {
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| lenet_kernels(n))
        };
        let one = on(1);
        assert_eq!(one, on(2), "batch {n}: 1 vs 2 threads");
        assert_eq!(one, on(3), "batch {n}: 1 vs 3 threads");
        assert_eq!(one, lenet_kernels(n), "batch {n}: global pool");
    }
}
