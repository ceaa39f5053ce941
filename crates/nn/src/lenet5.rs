//! The LeNet-5 model: conv(c1@5x5, pad 2) → act → pool 2 → conv(c2@5x5) → act → pool 2 →
//! flatten → fc(c2·25 → 120) → act → fc(120 → 84) → act → fc(84 → 10).
//!
//! Parameter names and layouts are PyTorch's `state_dict` of the reference model
//! (`conv1.weight` `[c1, 1, 5, 5]`, …, `fc3.bias` `[10]`), so checkpoints load into PyTorch.
//! Every layer keeps its output, so after [`LeNet5::forward`] the model is ready for
//! [`LeNet5::backward`]; evaluation simply never calls backward.

use crate::activation::{Activation, ActivationKind};
use crate::conv2d::Conv2d;
use crate::fc_shards::{shard_rows, FcShards};
use crate::flatten::Flatten;
use crate::linear::Linear;
use crate::param::{ParamMut, ParamRef};
use crate::pool::{Pool2d, PoolKind};
use ndarray::{ArrayView2, ArrayView4, Ix2, Ix4};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use tensor::{Conv2dParams, Pool2dParams};

/// Number of output classes (digits 0-9).
pub const NUM_CLASSES: usize = 10;
/// Input image height and width.
pub const IMAGE_SIZE: usize = 28;

// The architecture, written once: everything else (layers, parameter shapes) derives from it.
/// Side of both convolution kernels.
pub(crate) const KERNEL: usize = 5;
/// Side and stride of both pooling windows.
pub(crate) const POOL: usize = 2;
/// Stride and padding of conv1 and conv2: conv1 pads by 2 to keep 28×28, conv2 does not pad.
pub(crate) const CONV_PARAMS: [Conv2dParams; 2] = [
    Conv2dParams {
        stride: (1, 1),
        padding: (2, 2),
    },
    Conv2dParams {
        stride: (1, 1),
        padding: (0, 0),
    },
];
/// Side of pool2's output planes, which fc1 reads flattened: 28 → pool 14 → conv 10 → pool 5.
pub(crate) const POOL2_SIDE: usize = (IMAGE_SIZE / POOL - KERNEL + 1) / POOL;
/// Outputs of fc1 and fc2 (fc3 has [`NUM_CLASSES`]).
pub(crate) const FC_HIDDEN: [usize; 2] = [120, 84];
/// The state_dict names, in PyTorch's order (the order parameters are initialised in).
pub const PARAM_NAMES: [&str; 10] = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "fc3.weight",
    "fc3.bias",
];

/// Architecture options. The default is the reference model: ReLU, average pooling, 6 and 16
/// channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeNet5Config {
    /// Non-linearity after every layer but the last.
    pub activation: ActivationKind,
    /// Pooling after each convolution.
    pub pooling: PoolKind,
    /// Channels of the first convolution (6 in LeNet-5).
    pub c1: usize,
    /// Channels of the second convolution (16 in LeNet-5); fc1 takes c2·5·5 inputs.
    pub c2: usize,
}

impl Default for LeNet5Config {
    fn default() -> Self {
        LeNet5Config {
            activation: ActivationKind::Relu,
            pooling: PoolKind::Avg,
            c1: 6,
            c2: 16,
        }
    }
}

/// Most channels either convolution may have, whatever the model comes from (a training
/// config, a weights or state file, the web page): it bounds the memory a model needs before
/// anything is sized by it. At 256 and 256 channels the parameters take 10 MB and one image's
/// activations about 3 MB; 1,024 channels made a 117 MB weights file hold the server at 1.5 GB.
pub const MAX_CHANNELS: usize = 256;

impl LeNet5Config {
    /// Checks both channel counts against [`MAX_CHANNELS`]: an error names the field, its value
    /// and the accepted range.
    pub fn check(&self) -> Result<(), String> {
        for (name, c) in [("c1", self.c1), ("c2", self.c2)] {
            if !(1..=MAX_CHANNELS).contains(&c) {
                return Err(format!("{name} must be in 1..={MAX_CHANNELS}, got {c}"));
            }
        }
        Ok(())
    }

    /// (in channels, out channels, stride and padding) of conv1 and conv2.
    fn convs(&self) -> [(usize, usize, Conv2dParams); 2] {
        [
            (1, self.c1, CONV_PARAMS[0]),
            (self.c1, self.c2, CONV_PARAMS[1]),
        ]
    }

    /// (in features, out features) of fc1, fc2 and fc3.
    fn fcs(&self) -> [(usize, usize); 3] {
        let [h1, h2] = FC_HIDDEN;
        [
            (self.c2 * POOL2_SIDE * POOL2_SIDE, h1),
            (h1, h2),
            (h2, NUM_CLASSES),
        ]
    }

    /// The shape of each parameter, in [`PARAM_NAMES`] order.
    pub fn param_shapes(&self) -> [Vec<usize>; 10] {
        let convs = self
            .convs()
            .map(|(i, o, _)| [vec![o, i, KERNEL, KERNEL], vec![o]]);
        let fcs = self.fcs().map(|(i, o)| [vec![o, i], vec![o]]);
        let mut shapes = convs.into_iter().chain(fcs).flatten();
        std::array::from_fn(|_| shapes.next().expect("five layers of a weight and a bias"))
    }

    /// Total number of parameters (61,706 for the default).
    pub fn num_params(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }
}

/// Backward through `act → pool`: dL/d(activation input) for the pool's upstream gradient `g`.
/// After a ReLU the pool masks its own gradient ([`Pool2d::backward_relu`], one fused pass for
/// average pooling); the activation layer's own gradient buffer is then not written.
fn pool_act_backward<'a>(
    pool: &'a mut Pool2d,
    act: &'a mut Activation<Ix4>,
    g: ArrayView4<'_, f32>,
) -> ArrayView4<'a, f32> {
    if act.kind() == ActivationKind::Relu {
        return pool.backward_relu(act.output(), g);
    }
    let g = pool.backward(act.output(), g);
    act.backward(g)
}

/// Whether `conv → act → pool` runs as one fused pass: after a ReLU with average pooling (the
/// default model). Other activations and max pooling run the layers one by one.
fn fused(act: &Activation<Ix4>, pool: &Pool2d) -> bool {
    act.kind() == ActivationKind::Relu && pool.kind() == PoolKind::Avg
}

/// Forward through `conv → act → pool`; the pool's output. Fused where [`fused`] says so
/// ([`Conv2d::forward_relu_avg_pool`]: each image rectified and pooled while in cache), else
/// layer by layer. Every layer's output is kept either way.
fn conv_act_pool<'a>(
    pass: Pass,
    conv: &mut Conv2d,
    act: &mut Activation<Ix4>,
    pool: &'a mut Pool2d,
    x: ArrayView4<'_, f32>,
) -> ArrayView4<'a, f32> {
    if fused(act, pool) {
        let training = matches!(pass, Pass::Training);
        conv.forward_relu_avg_pool(x, act, pool, training);
        return pool.output();
    }
    let x = pass.conv(conv, x);
    let x = act.forward(x);
    pool.forward(x)
}

/// Backward through `conv → act → pool` for the pool's upstream gradient `g`: the
/// convolution's parameter gradients and, with `grad_input`, its input gradient (read it with
/// [`Conv2d::grad_input`]). Fused as in [`conv_act_pool`]: each image's conv-output gradient is
/// built right before the convolution's backward reads it.
fn conv_act_pool_backward(
    conv: &mut Conv2d,
    act: &mut Activation<Ix4>,
    pool: &mut Pool2d,
    input: ArrayView4<'_, f32>,
    g: ArrayView4<'_, f32>,
    grad_input: bool,
) {
    if fused(act, pool) {
        conv.backward_relu_avg_pool(input, act.output(), g, pool.params(), grad_input);
        return;
    }
    let g = pool_act_backward(pool, act, g);
    conv.backward(input, g, grad_input);
}

/// How a new model's parameters start: drawn from an RNG, or zero.
enum Init<'a, R: Rng + ?Sized> {
    Random(&'a mut R),
    Zeros,
}

impl<R: Rng + ?Sized> Init<'_, R> {
    fn conv(&mut self, (i, o, params): (usize, usize, Conv2dParams)) -> Conv2d {
        match self {
            Init::Random(rng) => Conv2d::new(i, o, KERNEL, params, &mut **rng),
            Init::Zeros => Conv2d::zeros(i, o, KERNEL, params),
        }
    }

    fn linear(&mut self, (i, o): (usize, usize)) -> Linear {
        match self {
            Init::Random(rng) => Linear::new(i, o, &mut **rng),
            Init::Zeros => Linear::zeros(i, o),
        }
    }
}

/// What a forward pass keeps for a backward pass: with `Training`, the convolutions also keep
/// their im2col columns. Every layer output is kept either way.
#[derive(Clone, Copy)]
enum Pass {
    Training,
    Inference,
}

impl Pass {
    fn conv<'a>(self, conv: &'a mut Conv2d, x: ArrayView4<'_, f32>) -> ArrayView4<'a, f32> {
        match self {
            Pass::Training => conv.forward(x),
            Pass::Inference => conv.forward_inference(x),
        }
    }
}

/// The LeNet-5 network with its parameters, gradients and activation buffers.
#[derive(Debug, Clone)]
pub struct LeNet5 {
    config: LeNet5Config,
    conv1: Conv2d,
    act1: Activation<Ix4>,
    pool1: Pool2d,
    conv2: Conv2d,
    act2: Activation<Ix4>,
    pool2: Pool2d,
    flatten: Flatten,
    fc1: Linear,
    act3: Activation<Ix2>,
    fc2: Linear,
    act4: Activation<Ix2>,
    fc3: Linear,
    /// The fully connected layers' gradient slots, one per row shard after the first
    /// ([`FcShards`]).
    fc_slots: Vec<f32>,
}

/// Views of every intermediate result of the last forward pass (names follow the reference
/// file: `act1` is `act.relu1` there).
#[derive(Debug, Clone, Copy)]
pub struct LeNet5Activations<'a> {
    /// conv1 output `[n, c1, 28, 28]`.
    pub conv1: ArrayView4<'a, f32>,
    /// After the first activation.
    pub act1: ArrayView4<'a, f32>,
    /// After the first pool `[n, c1, 14, 14]`.
    pub pool1: ArrayView4<'a, f32>,
    /// conv2 output `[n, c2, 10, 10]`.
    pub conv2: ArrayView4<'a, f32>,
    /// After the second activation.
    pub act2: ArrayView4<'a, f32>,
    /// After the second pool `[n, c2, 5, 5]`.
    pub pool2: ArrayView4<'a, f32>,
    /// fc1 output `[n, 120]`.
    pub fc1: ArrayView2<'a, f32>,
    /// After the third activation.
    pub act3: ArrayView2<'a, f32>,
    /// fc2 output `[n, 84]`.
    pub fc2: ArrayView2<'a, f32>,
    /// After the fourth activation.
    pub act4: ArrayView2<'a, f32>,
    /// fc3 output (the logits) `[n, 10]`.
    pub logits: ArrayView2<'a, f32>,
}

impl LeNet5 {
    /// A model with PyTorch's default initialisation, drawn from `rng` in state_dict order.
    pub fn new<R: Rng + ?Sized>(config: LeNet5Config, rng: &mut R) -> Self {
        Self::build(config, Init::Random(rng))
    }

    /// A model with every parameter zero, to be filled by [`LeNet5::load_weights`] or
    /// [`LeNet5::set_param`].
    pub fn zeros(config: LeNet5Config) -> Self {
        Self::build(config, Init::<dyn RngCore>::Zeros)
    }

    /// The layers of `config`, initialised in state_dict order (conv1, conv2, fc1, fc2, fc3).
    fn build<R: Rng + ?Sized>(config: LeNet5Config, mut init: Init<'_, R>) -> Self {
        let [conv1, conv2] = config.convs().map(|c| init.conv(c));
        let [fc1, fc2, fc3] = config.fcs().map(|f| init.linear(f));
        let pool = Pool2dParams::square(POOL);
        LeNet5 {
            config,
            conv1,
            act1: Activation::new(config.activation),
            pool1: Pool2d::new(config.pooling, pool),
            conv2,
            act2: Activation::new(config.activation),
            pool2: Pool2d::new(config.pooling, pool),
            flatten: Flatten,
            fc1,
            act3: Activation::new(config.activation),
            fc2,
            act4: Activation::new(config.activation),
            fc3,
            fc_slots: Vec::new(),
        }
    }

    /// The architecture options.
    pub fn config(&self) -> LeNet5Config {
        self.config
    }

    /// Runs the network on `input` (`[n, 1, 28, 28]`) and returns the logits `[n, 10]`.
    /// Every intermediate result is kept for [`LeNet5::backward`] and [`LeNet5::activations`].
    /// Buffers grow to the largest batch seen and are reused afterwards.
    ///
    /// # Panics
    /// If the input is not `[n, 1, 28, 28]`-compatible (1 channel, at least 28×28 after padding).
    pub fn forward(&mut self, input: ArrayView4<'_, f32>) -> ArrayView2<'_, f32> {
        self.forward_pass(input, Pass::Training, shard_rows(input.dim().0))
    }

    /// Like [`LeNet5::forward`], for evaluation: the convolutions do not keep their im2col
    /// columns for a backward pass (less memory traffic at large batches). The logits are
    /// bit-identical to [`LeNet5::forward`]'s, and every layer output is kept the same way
    /// (read them with [`LeNet5::activations`]); a [`LeNet5::backward`] afterwards is still
    /// correct (it rebuilds the columns).
    ///
    /// This is the inference pass: `lenet predict` runs it, the page and `lenet visualize`
    /// through [`crate::inspect::activations`], the evaluator in its two halves
    /// ([`LeNet5::features_inference`] per shard, [`LeNet5::classify`] per block). An image's
    /// logits have the same bits whatever the batch around it (tested below).
    ///
    /// # Panics
    /// If the input is not `[n, 1, 28, 28]`-compatible (1 channel, at least 28×28 after padding).
    pub fn forward_inference(&mut self, input: ArrayView4<'_, f32>) -> ArrayView2<'_, f32> {
        self.forward_pass(input, Pass::Inference, shard_rows(input.dim().0))
    }

    /// [`LeNet5::forward`] for one shard of a data-parallel training step
    /// ([`crate::data_parallel`]), which is already one thread's work: the fully connected
    /// layers run on all of its rows at once, not in row shards of their own. The outputs have
    /// the same bits as [`LeNet5::forward`]'s (rows do not interact, and gemm's route does not
    /// depend on the row count).
    pub(crate) fn forward_unsplit(&mut self, input: ArrayView4<'_, f32>) -> ArrayView2<'_, f32> {
        self.forward_pass(input, Pass::Training, input.dim().0)
    }

    /// The one forward pass of [`LeNet5::forward`], [`LeNet5::forward_inference`] and
    /// [`LeNet5::forward_unsplit`]: the fully connected layers in shards of `fc_rows` rows.
    fn forward_pass(
        &mut self,
        input: ArrayView4<'_, f32>,
        pass: Pass,
        fc_rows: usize,
    ) -> ArrayView2<'_, f32> {
        self.convolutions(input, pass);
        let (x, fc) = self.fc_parts();
        fc.forward(x, fc_rows);
        self.fc3.output()
    }

    /// Both `conv → act → pool` blocks: pool2's output is fc1's input.
    fn convolutions(&mut self, input: ArrayView4<'_, f32>, pass: Pass) {
        let x = conv_act_pool(
            pass,
            &mut self.conv1,
            &mut self.act1,
            &mut self.pool1,
            input,
        );
        conv_act_pool(pass, &mut self.conv2, &mut self.act2, &mut self.pool2, x);
    }

    /// The first half of [`LeNet5::forward_inference`]: the convolution blocks, up to fc1's
    /// input `[n, c2·5·5]` (pool2's output, flattened).
    pub(crate) fn features_inference(&mut self, input: ArrayView4<'_, f32>) -> ArrayView2<'_, f32> {
        self.convolutions(input, Pass::Inference);
        self.flatten.forward(self.pool2.output())
    }

    /// The second half: the logits of `features` (fc1's input rows, as
    /// [`LeNet5::features_inference`] gives them), all rows in one product per layer on the
    /// calling thread. The evaluator gathers the features of several shards for it.
    pub(crate) fn classify(&mut self, features: ArrayView2<'_, f32>) -> ArrayView2<'_, f32> {
        let (_, fc) = self.fc_parts();
        fc.forward(features, features.nrows());
        self.fc3.output()
    }

    /// pool2's flattened output and the fully connected layers, borrowed apart.
    fn fc_parts(&mut self) -> (ArrayView2<'_, f32>, FcShards<'_>) {
        let x = self.flatten.forward(self.pool2.output());
        let fc = FcShards {
            fc: [&mut self.fc1, &mut self.fc2, &mut self.fc3],
            act: [&mut self.act3, &mut self.act4],
            slots: &mut self.fc_slots,
        };
        (x, fc)
    }

    /// The logits of the last forward pass.
    pub fn logits(&self) -> ArrayView2<'_, f32> {
        self.fc3.output()
    }

    /// Every intermediate result of the last forward pass.
    pub fn activations(&self) -> LeNet5Activations<'_> {
        LeNet5Activations {
            conv1: self.conv1.output(),
            act1: self.act1.output(),
            pool1: self.pool1.output(),
            conv2: self.conv2.output(),
            act2: self.act2.output(),
            pool2: self.pool2.output(),
            fc1: self.fc1.output(),
            act3: self.act3.output(),
            fc2: self.fc2.output(),
            act4: self.act4.output(),
            logits: self.fc3.output(),
        }
    }

    /// Backpropagates `grad_logits` (dL/dlogits, `[n, 10]`) through the network after a
    /// [`LeNet5::forward`] on the same `input`, overwriting every parameter gradient. With
    /// `grad_input`, also computes dL/dinput (read it with [`LeNet5::grad_input`]); training
    /// does not need it.
    ///
    /// # Panics
    /// If the shapes differ from the last forward pass.
    pub fn backward(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_logits: ArrayView2<'_, f32>,
        grad_input: bool,
    ) {
        let fc_rows = shard_rows(grad_logits.nrows());
        self.backward_pass(input, grad_logits, grad_input, fc_rows);
    }

    /// [`LeNet5::backward`] without the input gradient after [`LeNet5::forward_unsplit`], the
    /// fully connected layers on all rows at once: their parameter gradients are one sum over
    /// the rows instead of a sum of row shards' sums.
    pub(crate) fn backward_unsplit(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_logits: ArrayView2<'_, f32>,
    ) {
        self.backward_pass(input, grad_logits, false, grad_logits.nrows());
    }

    /// The one backward pass of [`LeNet5::backward`] and [`LeNet5::backward_unsplit`]: the
    /// fully connected layers in shards of `fc_rows` rows.
    fn backward_pass(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_logits: ArrayView2<'_, f32>,
        grad_input: bool,
        fc_rows: usize,
    ) {
        // Each layer's forward input is the previous layer's kept output.
        let (flat, fc) = self.fc_parts();
        fc.backward(flat, grad_logits, fc_rows);
        let g = self
            .flatten
            .backward(self.fc1.grad_input(), self.pool2.output().dim());
        let (conv2, act2, pool2) = (&mut self.conv2, &mut self.act2, &mut self.pool2);
        conv_act_pool_backward(conv2, act2, pool2, self.pool1.output(), g, true);
        let (conv1, act1, pool1) = (&mut self.conv1, &mut self.act1, &mut self.pool1);
        conv_act_pool_backward(
            conv1,
            act1,
            pool1,
            input,
            self.conv2.grad_input(),
            grad_input,
        );
    }

    /// dL/dinput `[n, 1, 28, 28]` from the last [`LeNet5::backward`] called with `grad_input`.
    pub fn grad_input(&self) -> ArrayView4<'_, f32> {
        self.conv1.grad_input()
    }

    /// Every parameter with its gradient, in [`PARAM_NAMES`] order, for an optimizer.
    pub fn params_mut(&mut self) -> [ParamMut<'_>; 10] {
        let [a, b] = self.conv1.params_mut();
        let [c, d] = self.conv2.params_mut();
        let [e, f] = self.fc1.params_mut();
        let [g, h] = self.fc2.params_mut();
        let [i, j] = self.fc3.params_mut();
        let mut names = PARAM_NAMES.into_iter();
        [a, b, c, d, e, f, g, h, i, j].map(|(shape, value, grad)| ParamMut {
            name: names.next().unwrap(),
            shape,
            value,
            grad,
        })
    }

    /// Every parameter with its gradient, in [`PARAM_NAMES`] order.
    pub fn params(&self) -> [ParamRef<'_>; 10] {
        let [a, b] = self.conv1.params_ref();
        let [c, d] = self.conv2.params_ref();
        let [e, f] = self.fc1.params_ref();
        let [g, h] = self.fc2.params_ref();
        let [i, j] = self.fc3.params_ref();
        let mut names = PARAM_NAMES.into_iter();
        [a, b, c, d, e, f, g, h, i, j].map(|(shape, value, grad)| ParamRef {
            name: names.next().unwrap(),
            shape,
            value,
            grad,
        })
    }

    /// The parameter called `name` (a state_dict name), if there is one.
    pub fn param(&self, name: &str) -> Option<ParamRef<'_>> {
        self.params().into_iter().find(|p| p.name == name)
    }

    /// Copies every parameter from `other` (same config), without allocating.
    ///
    /// # Panics
    /// If the configs' shapes differ.
    pub fn copy_params_from(&mut self, other: &LeNet5) {
        for (dst, src) in self.params_mut().into_iter().zip(other.params()) {
            assert_eq!(dst.shape, src.shape, "copy_params_from: {} shape", dst.name);
            dst.value.copy_from_slice(src.value);
        }
    }

    /// Every parameter gradient, writable, in [`PARAM_NAMES`] order (the data-parallel training
    /// step adds its shards' gradients with it, [`crate::data_parallel`]).
    pub(crate) fn grads_mut(&mut self) -> [&mut [f32]; 10] {
        let [a, b] = self.conv1.grads_mut();
        let [c, d] = self.conv2.grads_mut();
        let [e, f] = self.fc1.grads_mut();
        let [g, h] = self.fc2.grads_mut();
        let [i, j] = self.fc3.grads_mut();
        [a, b, c, d, e, f, g, h, i, j]
    }

    /// Sets the parameter `name` to `values` (row-major, the parameter's shape).
    ///
    /// # Panics
    /// If there is no such parameter or the length is wrong.
    pub fn set_param(&mut self, name: &str, values: &[f32]) {
        let mut params = self.params_mut();
        let p = params
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("LeNet5 has no parameter {name:?}"));
        assert_eq!(
            p.value.len(),
            values.len(),
            "set_param {name}: expected {} values, got {}",
            p.value.len(),
            values.len()
        );
        p.value.copy_from_slice(values);
    }
}

/// For the saliency tests ([`crate::explain`]): a backward pass that forgets one term.
#[cfg(test)]
impl LeNet5 {
    /// dL/dinput `[n, 1, 28, 28]` for `grad_logits` with conv1's output channel `k` left out of
    /// the last step (its output gradient zeroed before conv1's backward), after a forward pass
    /// on `input`: what a backward pass missing that channel's contribution would give.
    pub(crate) fn input_gradient_without_conv1_channel(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_logits: ArrayView2<'_, f32>,
        k: usize,
    ) -> ndarray::Array4<f32> {
        self.forward(input);
        self.backward(input, grad_logits, false);
        // conv2's input gradient is dL/d(pool1 output); back through pool1 and act1 by hand.
        let g = pool_act_backward(&mut self.pool1, &mut self.act1, self.conv2.grad_input());
        let mut g = g.to_owned();
        g.index_axis_mut(ndarray::Axis(1), k).fill(0.0);
        self.conv1.backward(input, g.view(), true);
        self.conv1.grad_input().to_owned()
    }
}

/// For the data-parallel tests ([`crate::data_parallel`]): how large the sums behind each
/// parameter gradient are.
#[cfg(test)]
impl LeNet5 {
    /// After [`LeNet5::forward`] and [`LeNet5::backward`] on `input` with `grad_logits`, for the
    /// default model (ReLU, average pooling) and in [`PARAM_NAMES`] order: for every parameter
    /// gradient, the number m of products each of its entries adds up (images × output
    /// positions) and, per entry, the sum of their magnitudes, Σ|g·x| (Σ|g| for a bias; for
    /// the convolutions' weights on the AVX-512 tier, plus those of Winograd's transformed
    /// terms: [`winograd_terms`]),
    /// computed in f64 from the kept layer inputs and output gradients.
    pub(crate) fn grad_magnitudes(
        &self,
        input: ArrayView4<'_, f32>,
        grad_logits: ArrayView2<'_, f32>,
    ) -> Vec<(usize, Vec<f64>)> {
        assert!(fused(&self.act1, &self.pool1) && fused(&self.act2, &self.pool2));
        let abs = |a: f32| f64::from(a.abs());
        // A convolution's output gradient: the pooled gradient spread back, where ReLU passed.
        let conv_grad = |act: &Activation<Ix4>, pool: &Pool2d, pooled: ArrayView4<'_, f32>| {
            let pooled = pooled.mapv(abs);
            let y = act.output();
            let spread = tensor::avg_pool2d_backward(pooled.view(), pool.params(), y.dim());
            ndarray::Zip::from(&spread)
                .and(y)
                .map_collect(|&g, &y| if y > 0.0 { g } else { 0.0 })
        };
        let pooled2 = self
            .fc1
            .grad_input()
            .into_shape_with_order(self.pool2.output().dim());
        let g2 = conv_grad(
            &self.act2,
            &self.pool2,
            pooled2.expect("fc1's input is pool2's"),
        );
        let g1 = conv_grad(&self.act1, &self.pool1, self.conv2.grad_input());
        let mut v = Vec::new();
        // Both weight gradients run Winograd's F(2, 5) on the AVX-512 tier only.
        let winograd = tensor::Tier::active() == tensor::Tier::Avx512;
        for (conv, x, g, transformed) in [
            (&self.conv1, input, g1, winograd),
            (&self.conv2, self.pool1.output(), g2, winograd),
        ] {
            let w = conv.weight().mapv(f64::from);
            let grads =
                tensor::conv2d_backward(x.mapv(abs).view(), w.view(), g.view(), conv.params());
            let m = g.len() / g.dim().1;
            let mut sums: Vec<f64> = grads.weight.iter().copied().collect();
            if transformed {
                let x = zero_bordered(x, conv.params().padding);
                for (s, t) in sums.iter_mut().zip(winograd_terms(x.view(), g.view())) {
                    *s += t;
                }
            }
            v.push((m, sums));
            v.push((m, grads.bias.to_vec()));
        }
        let flat = self.flatten.forward(self.pool2.output());
        let fcs = [
            (&self.fc1, flat, self.act3.grad_input()),
            (&self.fc2, self.act3.output(), self.act4.grad_input()),
            (&self.fc3, self.act4.output(), grad_logits),
        ];
        for (fc, x, g) in fcs {
            let w = fc.weight().mapv(f64::from);
            let (x, g) = (x.mapv(abs), g.mapv(abs));
            let grads = tensor::linear_backward(x.view(), w.view(), g.view());
            v.push((x.nrows(), grads.weight.iter().copied().collect()));
            v.push((x.nrows(), grads.bias.to_vec()));
        }
        v
    }
}

/// The convolutions' weight gradients run Winograd's F(2, 5) on the AVX-512 tier (`tensor`'s
/// `conv2d/winograd.rs` and `conv2d/direct_winograd.rs`), whose per-image sums are taken over
/// transformed terms,
/// `G[α][u]·(A·g)[α]·(Bᵀ·x)[α]` per tile of two output rows, which cancel to the direct sum only
/// up to rounding: an entry whose direct terms are all zero can come out as a rounding residue.
/// The sum of their magnitudes is at most `13·W`, with `W[k][c][u][v] = Σ_{n,t,j} (|g[2t][j]| +
/// |g[2t+1][j]|) · Σ_{l<6} |x[2t+l][j+v]|` and 13 ≥ Σ_α max_u|G[α][u]|·max|Aᵀ[·][α]|·max_l|Bᵀ[α][l]|
/// (1/4·1·5 + 2·(1/6·1·4) + 2·(2/3·2·2) + 1·1·5 = 12.9): these `13·W` per entry, in f64.
/// `x` is the zero-bordered input ([`zero_bordered`]).
#[cfg(test)]
fn winograd_terms(x: ArrayView4<'_, f32>, g: ArrayView4<'_, f64>) -> Vec<f64> {
    let ((n, c, _, _), (_, k, oh, ow)) = (x.dim(), g.dim());
    let mut w = vec![0.0; k * c * 25];
    for (ni, kk, ci, v) in columns(n, k, c) {
        let mut sum = 0.0;
        for t in 0..oh / 2 {
            for j in 0..ow {
                let gs = g[[ni, kk, 2 * t, j]].abs() + g[[ni, kk, 2 * t + 1, j]].abs();
                let xs: f64 = (0..6)
                    .map(|l| f64::from(x[[ni, ci, 2 * t + l, j + v]].abs()))
                    .sum();
                sum += gs * xs;
            }
        }
        for u in 0..5 {
            w[((kk * c + ci) * 5 + u) * 5 + v] += 13.0 * sum;
        }
    }
    w
}

/// `x` with `padding` zeros around each plane, as the convolution reads it.
#[cfg(test)]
fn zero_bordered(x: ArrayView4<'_, f32>, (ph, pw): (usize, usize)) -> ndarray::Array4<f32> {
    let (n, c, h, w) = x.dim();
    let mut out = ndarray::Array4::zeros((n, c, h + 2 * ph, w + 2 * pw));
    out.slice_mut(ndarray::s![.., .., ph..ph + h, pw..pw + w])
        .assign(&x);
    out
}

/// Every `(image, out channel, in channel, kernel column)` of [`winograd_terms`].
#[cfg(test)]
fn columns(n: usize, k: usize, c: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).flat_map(move |ni| {
        (0..k).flat_map(move |kk| (0..c).flat_map(move |ci| (0..5).map(move |v| (ni, kk, ci, v))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Both blocks of the default model layer by layer (the unfused path), after a forward
    /// pass of `model`: every output and gradient the fused path wrote.
    fn layer_by_layer(model: &LeNet5, x: ArrayView4<'_, f32>, pass: Pass) -> Vec<Array4<f32>> {
        let mut m = model.clone();
        let y = pass.conv(&mut m.conv1, x);
        let y = m.act1.forward(y);
        let p1 = m.pool1.forward(y).to_owned();
        let y = pass.conv(&mut m.conv2, p1.view());
        let y = m.act2.forward(y);
        m.pool2.forward(y);
        // the same upstream gradient as the fused backward got: fc1's, unflattened
        let g = m
            .flatten
            .backward(model.fc1.grad_input(), m.pool2.output().dim());
        let g = pool_act_backward(&mut m.pool2, &mut m.act2, g);
        m.conv2.backward(p1.view(), g, true);
        let g = pool_act_backward(&mut m.pool1, &mut m.act1, m.conv2.grad_input());
        m.conv1.backward(x, g, true);
        outputs(&m)
    }

    fn outputs(m: &LeNet5) -> Vec<Array4<f32>> {
        let a = m.activations();
        let mut v: Vec<Array4<f32>> = [a.conv1, a.act1, a.pool1, a.conv2, a.act2, a.pool2]
            .iter()
            .map(|a| a.to_owned())
            .collect();
        v.extend([m.conv1.grad_weight(), m.conv2.grad_weight()].map(|g| g.to_owned()));
        v.extend([m.conv2.grad_input(), m.conv1.grad_input()].map(|g| g.to_owned()));
        v.extend([m.conv1.grad_bias(), m.conv2.grad_bias()].map(|g| {
            g.to_owned()
                .into_shape_with_order((1, 1, 1, g.len()))
                .unwrap()
        }));
        v
    }

    #[test]
    fn the_fused_blocks_equal_the_layers_one_by_one() {
        let rng = &mut ChaCha8Rng::seed_from_u64(5);
        let mut model = LeNet5::new(LeNet5Config::default(), rng);
        // 1 image (serial) and 45 (chunked, parallel)
        for n in [1, 45] {
            let x = Array4::from_shape_simple_fn((n, 1, 28, 28), || rng.gen_range(-1.0..1.0));
            let gl = ndarray::Array2::from_shape_simple_fn((n, 10), || rng.gen_range(-1.0..1.0));
            for pass in [Pass::Training, Pass::Inference] {
                model.forward_pass(x.view(), pass, shard_rows(n));
                model.backward(x.view(), gl.view(), true);
                let want = layer_by_layer(&model, x.view(), pass);
                assert!(outputs(&model) == want, "n = {n}: fused differs");
            }
        }
    }

    #[test]
    fn an_image_gets_the_same_logits_in_any_batch_and_either_pass() {
        // The promise `lenet predict`, the page and `lenet eval` rest on: one image's logits do
        // not depend on the images around it nor on the pass (the evaluator runs shards of 16
        // and blocks of 128, the page one image, predict all its files at once).
        for pooling in [PoolKind::Avg, PoolKind::Max] {
            let rng = &mut ChaCha8Rng::seed_from_u64(5);
            let config = LeNet5Config {
                pooling,
                ..LeNet5Config::default()
            };
            let mut model = LeNet5::new(config, rng);
            let x = Array4::from_shape_simple_fn((300, 1, 28, 28), || rng.gen_range(0.0..1.0));
            let all = model.forward_inference(x.view()).to_owned();
            assert_eq!(model.forward(x.view()), all, "{pooling:?}: training pass");
            let unsplit = model.forward_unsplit(x.view());
            assert_eq!(unsplit, all, "{pooling:?}: fully connected layers unsplit");
            for (i, n) in [(0, 1), (17, 1), (299, 1), (100, 128), (150, 16)] {
                let part = model.forward_inference(x.slice(ndarray::s![i..i + n, .., .., ..]));
                assert_eq!(
                    part,
                    all.slice(ndarray::s![i..i + n, ..]),
                    "{pooling:?} {i}"
                );
            }
            let (rows, width) = (16, config.c2 * POOL2_SIDE * POOL2_SIDE);
            let features = model
                .features_inference(x.slice(ndarray::s![40..56, .., .., ..]))
                .to_owned();
            assert_eq!(features.dim(), (rows, width));
            let logits = model.classify(features.view());
            assert_eq!(
                logits,
                all.slice(ndarray::s![40..56, ..]),
                "{pooling:?} halves"
            );
        }
    }
}
