//! Times every LeNet-5 kernel, forward and backward, on one f32 batch.
//!
//! ```sh
//! cargo run -p lenet-tensor --release --example lenet_layers -- 64         # batch size (default 64)
//! cargo run -p lenet-tensor --release --example lenet_layers -- 64 conv2   # only lines naming "conv2"
//! ```
//!
//! Each line is the median of 50 runs after 5 warm-up runs, with buffers and convolution plans reused
//! as a training loop would.

use ndarray::{Array1, Array2, Array4};
use std::time::Instant;
use tensor::*;

/// Prints the median time of `f` if `name` contains the filter, and keeps a running total.
struct Timer {
    filter: String,
    total: f64,
}

impl Timer {
    fn time(&mut self, name: &str, mut f: impl FnMut()) {
        if !name.contains(&self.filter) {
            return;
        }
        for _ in 0..5 {
            f();
        }
        let mut t: Vec<f64> = (0..50)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let us = t[t.len() / 2];
        self.total += us;
        println!("{name:<28} {us:>9.1}");
    }
}

fn filled4(shape: (usize, usize, usize, usize), seed: usize) -> Array4<f32> {
    Array4::from_shape_fn(shape, |(a, b, c, d)| {
        (((a * 131 + b * 71 + c * 37 + d * 11 + seed * 7) % 97) as f32) / 97.0 - 0.5
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.parse().expect("batch size"))
        .unwrap_or(64);
    let mut timer = Timer {
        filter: args.next().unwrap_or_default(),
        total: 0.0,
    };
    println!(
        "batch {n}, {} rayon threads (median of 50 runs, µs)",
        rayon::current_num_threads()
    );

    // conv1: 1→6, 5×5, padding 2 on 28×28 (no input gradient: first layer); conv2: 6→16 on 14×14
    for (c, k, hw, pad, name, need_gi) in
        [(1, 6, 28, 2, "conv1", false), (6, 16, 14, 0, "conv2", true)]
    {
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (pad, pad),
        };
        let x = filled4((n, c, hw, hw), 1);
        let w = filled4((k, c, 5, 5), 2);
        let b = Array1::from_elem(k, 0.1_f32);
        let (oh, ow) = p.output_size((hw, hw), (5, 5)).unwrap();
        let mut y = Array4::zeros((n, k, oh, ow));
        let mut plan = Conv2dPlan::new(w.dim(), p);
        timer.time(&format!("{name} forward"), || {
            plan.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut(), None)
        });
        let g = filled4((n, k, oh, ow), 3);
        let mut gi = Array4::zeros(x.raw_dim());
        let mut gw = Array4::zeros(w.raw_dim());
        let mut gb = Array1::zeros(k);
        timer.time(&format!("{name} backward"), || {
            let grads = (
                need_gi.then(|| gi.view_mut()),
                gw.view_mut(),
                Some(gb.view_mut()),
            );
            plan.backward_into(x.view(), w.view(), g.view(), None, grads)
        });
    }

    for (c, hw, name) in [(6, 28, "1"), (16, 10, "2")] {
        let x = filled4((n, c, hw, hw), 4);
        let mut r = x.clone();
        let mut y = Array4::zeros((n, c, hw / 2, hw / 2));
        let p = Pool2dParams::square(2);
        timer.time(&format!("tanh{name} forward"), || {
            Activation::Tanh.forward_into(x.view(), r.view_mut())
        });
        timer.time(&format!("sigmoid{name} forward"), || {
            Activation::Sigmoid.forward_into(x.view(), r.view_mut())
        });
        timer.time(&format!("relu{name} forward"), || {
            Activation::Relu.forward_into(x.view(), r.view_mut())
        });
        timer.time(&format!("pool{name} forward"), || {
            avg_pool2d_into(r.view(), p, y.view_mut())
        });
        let g = filled4((n, c, hw / 2, hw / 2), 5);
        let mut gi = Array4::zeros(x.raw_dim());
        timer.time(&format!("pool{name} backward"), || {
            avg_pool2d_backward_into(g.view(), p, gi.view_mut())
        });
        timer.time(&format!("relu{name} backward"), || {
            Activation::Relu.backward_inplace(r.view(), gi.view_mut())
        });
    }

    for (fan_in, fan_out, name) in [(400, 120, "fc1"), (120, 84, "fc2"), (84, 10, "fc3")] {
        let x = Array2::from_shape_fn((n, fan_in), |(i, j)| ((i * 7 + j) % 13) as f32 / 13.0);
        let w = Array2::from_shape_fn((fan_out, fan_in), |(i, j)| {
            ((i + j * 3) % 11) as f32 / 11.0 - 0.5
        });
        let b = Array1::from_elem(fan_out, 0.1_f32);
        let mut y = Array2::zeros((n, fan_out));
        timer.time(&format!("{name} forward"), || {
            linear_into(x.view(), w.view(), Some(b.view()), y.view_mut())
        });
        let g = y.clone();
        let (mut gi, mut gw, mut gb) = (
            Array2::zeros(x.raw_dim()),
            Array2::zeros(w.raw_dim()),
            Array1::zeros(fan_out),
        );
        timer.time(&format!("{name} backward"), || {
            linear_backward_into(
                x.view(),
                w.view(),
                g.view(),
                Some(gi.view_mut()),
                gw.view_mut(),
                Some(gb.view_mut()),
            )
        });
    }

    let logits = Array2::from_shape_fn((n, 10), |(i, j)| ((i * 3 + j * 5) % 7) as f32 - 3.0);
    let targets: Vec<usize> = (0..n).map(|i| i % 10).collect();
    let mut gl = Array2::zeros((n, 10));
    timer.time("softmax_cross_entropy", || {
        softmax_cross_entropy_into(logits.view(), &targets, gl.view_mut());
    });
    println!("{:<28} {:>9.1}", "sum", timer.total);
}
