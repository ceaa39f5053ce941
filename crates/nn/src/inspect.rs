//! Looking inside a [`LeNet5`]: the output of every layer for some images, and the layer table
//! (output shape, parameter count, FLOPs per image) that `lenet summary` prints and `lenet serve`
//! shows.
//!
//! [`activations`] runs the model's own inference pass ([`LeNet5::forward_inference`], the one
//! `lenet predict` and the evaluator run) and copies out the outputs the model keeps, so the
//! page, `lenet visualize` and `lenet predict` give the same bits for the same image.

use ndarray::{Array2, Array4, ArrayView4};

use crate::lenet5::{
    LeNet5, LeNet5Config, CONV_PARAMS, FC_HIDDEN, IMAGE_SIZE, KERNEL, NUM_CLASSES, POOL, POOL2_SIDE,
};
use crate::pool::PoolKind;

/// The output of every stage of LeNet-5 for a batch of `n` images. The convolution and fc
/// outputs are taken after their activation (the pictures a learner wants to see); only the
/// logits are raw.
#[derive(Debug, Clone)]
pub struct LayerOutputs {
    /// `act(conv1(x))`, `[n, c1, 28, 28]`.
    pub conv1: Array4<f32>,
    /// After the first pooling, `[n, c1, 14, 14]`.
    pub pool1: Array4<f32>,
    /// `act(conv2(·))`, `[n, c2, 10, 10]`.
    pub conv2: Array4<f32>,
    /// After the second pooling, `[n, c2, 5, 5]`.
    pub pool2: Array4<f32>,
    /// `act(fc1(·))`, `[n, 120]`.
    pub fc1: Array2<f32>,
    /// `act(fc2(·))`, `[n, 84]`.
    pub fc2: Array2<f32>,
    /// `fc3(·)`, the logits, `[n, 10]`.
    pub logits: Array2<f32>,
}

/// Runs `model`'s inference pass on `input` (`[n, 1, 28, 28]`) and returns every layer's
/// output. The model's activation buffers are overwritten.
///
/// # Panics
/// If `input` is not `[n, 1, 28, 28]`.
pub fn activations(model: &mut LeNet5, input: ArrayView4<'_, f32>) -> LayerOutputs {
    let (_, c, h, w) = input.dim();
    assert_eq!(
        (c, h, w),
        (1, IMAGE_SIZE, IMAGE_SIZE),
        "inspect::activations: input must be [n, 1, 28, 28]"
    );
    model.forward_inference(input);
    let a = model.activations();
    LayerOutputs {
        conv1: a.act1.to_owned(),
        pool1: a.pool1.to_owned(),
        conv2: a.act2.to_owned(),
        pool2: a.pool2.to_owned(),
        fc1: a.act3.to_owned(),
        fc2: a.act4.to_owned(),
        logits: a.logits.to_owned(),
    }
}

/// One row of the layer table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerRow {
    /// The layer's name (`conv1`, `relu1`, `pool1`, …; parameters are `NAME.weight`/`.bias`).
    pub name: String,
    /// What it does, e.g. `Conv2d 1→6, 5×5, padding 2`.
    pub kind: String,
    /// Output shape for one image, e.g. `[6, 28, 28]`.
    pub output_shape: Vec<usize>,
    /// Number of parameters (weights and biases).
    pub params: usize,
    /// Floating-point operations for one image, counted as 2 × multiply-accumulates of the
    /// convolutions and linear layers; biases, activations and pooling count 0 (they add about
    /// 0.1%).
    pub flops: u64,
}

/// Floating-point operations of one image's training step, counted as [`LayerRow::flops`]
/// counts them: the forward pass, the weight gradients (as many multiply-adds as the forward
/// pass: each weight meets each input it multiplied once more), and the input gradients of
/// every layer but the first (as many again, less conv1's: training never needs dL/dinput).
/// 2,263,920 for the default LeNet-5.
pub fn training_flops(config: &LeNet5Config) -> u64 {
    let table = layer_table(config);
    let forward: u64 = table.iter().map(|r| r.flops).sum();
    3 * forward - table[0].flops
}

/// The layers of a LeNet-5 with `config`, input to logits, as `torchinfo` lists them for PyTorch.
pub fn layer_table(config: &LeNet5Config) -> Vec<LayerRow> {
    let (c1, c2) = (config.c1, config.c2);
    let act = config.activation.name();
    let pool = match config.pooling {
        PoolKind::Avg => "AvgPool2d",
        PoolKind::Max => "MaxPool2d",
    };
    let pool = format!("{pool} {POOL}×{POOL}, stride {POOL}");
    let k2 = KERNEL * KERNEL;
    // Plane sides: conv1 keeps 28 with its padding, pool halves, conv2 shrinks by KERNEL − 1.
    let s1 = IMAGE_SIZE + 2 * CONV_PARAMS[0].padding.0 + 1 - KERNEL;
    let (p1, s2, p2) = (s1 / POOL, s1 / POOL + 1 - KERNEL, POOL2_SIDE);
    let flat = c2 * p2 * p2;
    let [h1, h2] = FC_HIDDEN;
    let row = |name: &str, kind: String, shape: &[usize], params: usize, macs: usize| LayerRow {
        name: name.to_string(),
        kind,
        output_shape: shape.to_vec(),
        params,
        flops: 2 * macs as u64,
    };
    let conv = |i: usize, o: usize, side: usize, pad: usize| {
        let padding = if pad > 0 {
            format!(", padding {pad}")
        } else {
            String::new()
        };
        let kind = format!("Conv2d {i}→{o}, {KERNEL}×{KERNEL}{padding}");
        (kind, o * i * k2 + o, o * side * side * i * k2)
    };
    let linear = |i: usize, o: usize| (format!("Linear {i}→{o}"), i * o + o, i * o);
    let (conv1, conv2) = (
        conv(1, c1, s1, CONV_PARAMS[0].padding.0),
        conv(c1, c2, s2, 0),
    );
    let (fc1, fc2, fc3) = (linear(flat, h1), linear(h1, h2), linear(h2, NUM_CLASSES));
    vec![
        row("conv1", conv1.0, &[c1, s1, s1], conv1.1, conv1.2),
        row("act1", act.to_string(), &[c1, s1, s1], 0, 0),
        row("pool1", pool.clone(), &[c1, p1, p1], 0, 0),
        row("conv2", conv2.0, &[c2, s2, s2], conv2.1, conv2.2),
        row("act2", act.to_string(), &[c2, s2, s2], 0, 0),
        row("pool2", pool, &[c2, p2, p2], 0, 0),
        row("flatten", "Flatten".to_string(), &[flat], 0, 0),
        row("fc1", fc1.0, &[h1], fc1.1, fc1.2),
        row("act3", act.to_string(), &[h1], 0, 0),
        row("fc2", fc2.0, &[h2], fc2.1, fc2.2),
        row("act4", act.to_string(), &[h2], 0, 0),
        row("fc3", fc3.0, &[NUM_CLASSES], fc3.1, fc3.2),
    ]
}

/// How a layer of the feature extractor reads its input plane: a `kernel`×`kernel` window moved
/// by `stride`, over the input padded by `padding` on each side. Composed from the input up,
/// these give the receptive field of any unit (see [`receptive_field`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    /// The layer (`conv1`, `pool1`, `conv2`, `pool2`).
    pub name: &'static str,
    /// Side of the window.
    pub kernel: usize,
    /// Step between two windows.
    pub stride: usize,
    /// Zero padding on each side of the input.
    pub padding: usize,
}

/// The windows of the four layers that see planes, from the input up: conv1 (5×5, padding 2),
/// pool1 (2×2, stride 2), conv2 (5×5), pool2 (2×2, stride 2), from the model's constants.
pub fn windows() -> [Window; 4] {
    let conv = |name, i: usize| Window {
        name,
        kernel: KERNEL,
        stride: CONV_PARAMS[i].stride.0,
        padding: CONV_PARAMS[i].padding.0,
    };
    let pool = |name| Window {
        name,
        kernel: POOL,
        stride: POOL,
        padding: 0,
    };
    [
        conv("conv1", 0),
        pool("pool1"),
        conv("conv2", 1),
        pool("pool2"),
    ]
}

/// The input pixels that unit (`row`, `col`) of `layer`'s output sees: the inclusive ranges
/// `[first, last]` of rows and of columns of the 28×28 input, clipped to the image (padding
/// sees no pixel). `None` for a layer that is not one of [`windows`].
pub fn receptive_field(layer: &str, row: usize, col: usize) -> Option<[[usize; 2]; 2]> {
    let all = windows();
    let depth = all.iter().position(|w| w.name == layer)? + 1;
    let side = |unit: usize| {
        // Walk down: output range [a, b] of a layer reads input [a·s − p, b·s − p + k − 1].
        let (mut a, mut b) = (unit as isize, unit as isize);
        for w in all[..depth].iter().rev() {
            let (k, s, p) = (w.kernel as isize, w.stride as isize, w.padding as isize);
            (a, b) = (a * s - p, b * s - p + k - 1);
        }
        let last = IMAGE_SIZE as isize - 1;
        [a.clamp(0, last) as usize, b.clamp(0, last) as usize]
    };
    Some([side(row), side(col)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::ActivationKind;

    #[test]
    fn receptive_fields_grow_through_the_layers() {
        // conv1 unit (10, 10) sees rows 8..=12 (5×5 around it, padding 2).
        assert_eq!(receptive_field("conv1", 10, 10), Some([[8, 12], [8, 12]]));
        // Corners are clipped to the image: padding sees no pixel.
        assert_eq!(receptive_field("conv1", 0, 27), Some([[0, 2], [25, 27]]));
        // pool1 unit i: conv1 units 2i, 2i+1 → input 2i−2 ..= 2i+3.
        assert_eq!(receptive_field("pool1", 5, 5), Some([[8, 13], [8, 13]]));
        // conv2 unit i: pool1 i..=i+4 → 14 input pixels, 2i−2 ..= 2i+11.
        assert_eq!(receptive_field("conv2", 3, 4), Some([[4, 17], [6, 19]]));
        // pool2 unit i: 16 input pixels, 4i−2 ..= 4i+13.
        assert_eq!(receptive_field("pool2", 2, 4), Some([[6, 21], [14, 27]]));
        assert_eq!(receptive_field("fc1", 0, 0), None);
    }
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn images(n: usize, seed: u64) -> Array4<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array4::from_shape_simple_fn((n, 1, 28, 28), || rng.gen_range(0.0f32..1.0))
    }

    #[test]
    fn logits_match_the_model_for_every_config() {
        for activation in [
            ActivationKind::Relu,
            ActivationKind::Tanh,
            ActivationKind::Sigmoid,
        ] {
            for pooling in [PoolKind::Avg, PoolKind::Max] {
                let config = LeNet5Config {
                    activation,
                    pooling,
                    ..LeNet5Config::default()
                };
                let mut model = LeNet5::new(config, &mut ChaCha8Rng::seed_from_u64(3));
                let x = images(3, 5);
                let expected = model.clone().forward_inference(x.view()).to_owned();
                let outputs = activations(&mut model, x.view());
                assert_eq!(outputs.logits.dim(), (3, NUM_CLASSES));
                assert_eq!(outputs.logits, expected, "{config:?}");
            }
        }
    }

    #[test]
    fn intermediate_outputs_have_the_table_shapes_and_the_activation_range() {
        let config = LeNet5Config {
            c1: 4,
            c2: 8,
            ..LeNet5Config::default()
        };
        let mut model = LeNet5::new(config, &mut ChaCha8Rng::seed_from_u64(1));
        let o = activations(&mut model, images(2, 2).view());
        let table = layer_table(&config);
        let shape_of = |name: &str| {
            let mut s = vec![2];
            s.extend(&table.iter().find(|r| r.name == name).unwrap().output_shape);
            s
        };
        assert_eq!(o.conv1.shape(), &shape_of("conv1")[..]);
        assert_eq!(o.pool1.shape(), &shape_of("pool1")[..]);
        assert_eq!(o.conv2.shape(), &shape_of("conv2")[..]);
        assert_eq!(o.pool2.shape(), &shape_of("pool2")[..]);
        assert_eq!(o.fc1.shape(), &shape_of("fc1")[..]);
        assert_eq!(o.fc2.shape(), &shape_of("fc2")[..]);
        assert_eq!(o.logits.shape(), &shape_of("fc3")[..]);
        // ReLU outputs are non-negative; avg pooling of them too.
        assert!(o.conv1.iter().chain(o.pool2.iter()).all(|&v| v >= 0.0));
        assert!(o.fc2.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn layer_table_counts_every_parameter_and_the_forward_flops() {
        let config = LeNet5Config::default();
        let table = layer_table(&config);
        let params: usize = table.iter().map(|r| r.params).sum();
        assert_eq!(params, config.num_params());
        assert_eq!(params, 61_706);
        // conv1 156, conv2 2,416, fc1 48,120, fc2 10,164, fc3 850.
        let by_name = |n: &str| table.iter().find(|r| r.name == n).unwrap().params;
        assert_eq!(
            [
                by_name("conv1"),
                by_name("conv2"),
                by_name("fc1"),
                by_name("fc2"),
                by_name("fc3")
            ],
            [156, 2_416, 48_120, 10_164, 850]
        );
        // The forward pass of one image: 833,040 flops (the benches' count).
        assert_eq!(table.iter().map(|r| r.flops).sum::<u64>(), 833_040);
        // Training: forward and weight gradients (833,040 each), input gradients but conv1's
        // (833,040 − 235,200).
        assert_eq!(table[0].flops, 235_200);
        assert_eq!(training_flops(&config), 2_263_920);
        assert_eq!(table.last().unwrap().output_shape, vec![NUM_CLASSES]);
        let wide = LeNet5Config {
            c1: 8,
            c2: 20,
            ..config
        };
        assert_eq!(
            layer_table(&wide).iter().map(|r| r.params).sum::<usize>(),
            wide.num_params()
        );
    }
}
