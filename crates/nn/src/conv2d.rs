//! Conv2d layer: owns its weight `[out, in, kh, kw]`, bias `[out]`, their gradients, its output
//! and input-gradient buffers, the convolution workspace and what the forward pass keeps for the
//! backward pass (im2col columns, or for one input channel the zero-bordered images). The math
//! is `tensor::conv2d_*`.

use crate::activation::Activation;
use crate::buffer::Buffer;
use crate::init::uniform_fan_in;
use crate::param::WeightBias;
use crate::pool::Pool2d;
use ndarray::{ArrayView1, ArrayView4, ArrayViewMut4, Ix4};
use rand::Rng;
use tensor::{
    conv2d_backward_into, conv2d_backward_into_cached, conv2d_into, conv2d_into_caching,
    conv2d_relu_avg_pool2d_backward_into, conv2d_relu_avg_pool2d_backward_into_cached,
    conv2d_relu_avg_pool2d_into, conv2d_relu_avg_pool2d_into_caching, Conv2dCache, Conv2dParams,
    Conv2dWorkspace, Pool2dParams, ReluPoolOut,
};

/// Largest amount a training forward pass keeps for backward (`Conv2dCache::kept_len`: im2col
/// columns, about `n·c·kh·kw·h·w` scalars, or the direct and shifted methods' padded images,
/// about 4.7 KB per image for both of LeNet-5's convolutions: kept up to ~890 images). Above it,
/// rebuilding the columns chunk by chunk in cache-resident scratch costs less than streaming
/// them through memory: measured on a Fashion-MNIST epoch, 1 thread, keeping 2–5 MB of
/// columns saved ~10% of CPU time at batch 32 and keeping 35 MB cost ~12% at batch 256.
const MAX_KEPT_BYTES: usize = 4 << 20;

/// What a [`Conv2d`] backward pass starts from.
#[derive(Clone, Copy)]
enum Upstream<'a> {
    /// The gradient of the convolution's output.
    Conv(ArrayView4<'a, f32>),
    /// The gradient of the output of a ReLU then an average pool after it, with the ReLU's
    /// output (the fused layers of [`Conv2d::forward_relu_avg_pool`]).
    ReluAvgPool {
        relu_out: ArrayView4<'a, f32>,
        grad_pooled: ArrayView4<'a, f32>,
        pool: Pool2dParams,
    },
}

/// A 2-D convolution with bias, PyTorch semantics (cross-correlation, zero padding).
#[derive(Debug, Clone)]
pub struct Conv2d {
    wb: WeightBias<4>,
    params: Conv2dParams,
    output: Buffer<Ix4>,
    grad_input: Buffer<Ix4>,
    ws: Conv2dWorkspace<f32>,
    /// What the last training forward pass kept for backward.
    cols: Conv2dCache<f32>,
}

impl Conv2d {
    /// A layer with PyTorch's default initialisation drawn from `rng` (weight first, then bias):
    /// both U(−1/√fan_in, 1/√fan_in) with fan_in = in_channels·kernel².
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        params: Conv2dParams,
        rng: &mut R,
    ) -> Self {
        let mut layer = Self::zeros(in_channels, out_channels, kernel, params);
        let fan_in = in_channels * kernel * kernel;
        uniform_fan_in(layer.wb.weight.as_slice_mut().unwrap(), fan_in, rng);
        uniform_fan_in(layer.wb.bias.as_slice_mut().unwrap(), fan_in, rng);
        layer
    }

    /// A layer whose weight and bias are all zero (to be loaded from a checkpoint).
    pub fn zeros(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        params: Conv2dParams,
    ) -> Self {
        Conv2d {
            wb: WeightBias::zeros([out_channels, in_channels, kernel, kernel]),
            params,
            output: Buffer::new(),
            grad_input: Buffer::new(),
            ws: Conv2dWorkspace::new(),
            cols: Conv2dCache::new(),
        }
    }

    /// The weight, `[out, in, kh, kw]`.
    pub fn weight(&self) -> ArrayView4<'_, f32> {
        self.wb.weight.view()
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> ArrayView1<'_, f32> {
        self.wb.bias.view()
    }

    /// dL/dweight from the last [`Conv2d::backward`].
    pub fn grad_weight(&self) -> ArrayView4<'_, f32> {
        self.wb.grad_weight.view()
    }

    /// dL/dbias from the last [`Conv2d::backward`].
    pub fn grad_bias(&self) -> ArrayView1<'_, f32> {
        self.wb.grad_bias.view()
    }

    /// Stride and padding.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }

    /// Runs the convolution on `input` (`[n, in, h, w]`) and returns the output, which the layer
    /// keeps for the next layer and for backward. It also keeps what the backward pass reads of
    /// the input (its im2col columns, or its zero-bordered images) when that fits in a few MB,
    /// so that [`Conv2d::backward`] on the same input does not rebuild it.
    ///
    /// # Panics
    /// If the input has the wrong channel count or is smaller than the kernel.
    pub fn forward(&mut self, input: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        self.set_output_dim(input.dim());
        if !self.worth_keeping(input.dim()) {
            return self.forward_inference(input);
        }
        conv2d_into_caching(
            input,
            self.wb.weight.view(),
            Some(self.wb.bias.view()),
            self.params,
            self.output.view_mut(),
            &mut self.cols,
        );
        self.output.view()
    }

    /// Like [`Conv2d::forward`], keeping nothing for backward: for evaluation, where no
    /// backward pass follows (it touches less memory). A later [`Conv2d::backward`] still works:
    /// it rebuilds what it needs from its input.
    ///
    /// # Panics
    /// If the input has the wrong channel count or is smaller than the kernel.
    pub fn forward_inference(&mut self, input: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        self.set_output_dim(input.dim());
        self.cols.invalidate();
        conv2d_into(
            input,
            self.wb.weight.view(),
            Some(self.wb.bias.view()),
            self.params,
            self.output.view_mut(),
            &mut self.ws,
        );
        self.output.view()
    }

    /// Whether a training forward pass keeps what backward reads of an input of shape `input`
    /// (see [`MAX_KEPT_BYTES`]).
    fn worth_keeping(&self, input: (usize, usize, usize, usize)) -> bool {
        let kept = Conv2dCache::<f32>::kept_len(input, self.wb.weight.dim(), self.params);
        kept * std::mem::size_of::<f32>() <= MAX_KEPT_BYTES
    }

    /// The convolution, then `act` (a ReLU) and `pool` (an average pool) in one fused pass
    /// (`tensor::conv2d_relu_avg_pool2d_*`): each image's output is rectified and pooled while
    /// in cache. Afterwards this layer's, `act`'s and `pool`'s outputs are what
    /// [`Conv2d::forward`], [`Activation::forward`] and [`Pool2d::forward`] would have left
    /// (bit-identical). With `training`, keeps what backward reads, as [`Conv2d::forward`] does;
    /// [`Conv2d::backward_relu_avg_pool`] is the matching backward pass.
    ///
    /// # Panics
    /// If the input has the wrong channel count or is smaller than the kernel, or the pool
    /// window does not fit the output.
    pub(crate) fn forward_relu_avg_pool(
        &mut self,
        input: ArrayView4<'_, f32>,
        act: &mut Activation<Ix4>,
        pool: &mut Pool2d,
        training: bool,
    ) {
        self.set_output_dim(input.dim());
        let out_dim = self.output.dim();
        let keep = training && self.worth_keeping(input.dim());
        let fused = ReluPoolOut {
            pool: pool.params(),
            relu: act.output_mut(out_dim),
            pooled: pool.output_mut(out_dim),
        };
        let (weight, bias) = (self.wb.weight.view(), Some(self.wb.bias.view()));
        let out = self.output.view_mut();
        if keep {
            conv2d_relu_avg_pool2d_into_caching(
                input,
                weight,
                bias,
                self.params,
                out,
                fused,
                &mut self.cols,
            );
        } else {
            self.cols.invalidate();
            conv2d_relu_avg_pool2d_into(input, weight, bias, self.params, out, fused, &mut self.ws);
        }
    }

    fn set_output_dim(&mut self, (n, c, h, w): (usize, usize, usize, usize)) {
        let [k, cin, kh, kw] = self.wb.weight_shape;
        assert_eq!(
            c, cin,
            "Conv2d: input has {c} channels, the layer expects {cin}"
        );
        let (oh, ow) = self
            .params
            .output_size((h, w), (kh, kw))
            .unwrap_or_else(|| panic!("Conv2d: kernel {kh}x{kw} does not fit input {h}x{w}"));
        self.output.set_dim(Ix4(n, k, oh, ow));
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> ArrayView4<'_, f32> {
        self.output.view()
    }

    /// Overwrites the weight and bias gradients for upstream gradient `grad_out` (shaped like the
    /// output); `input` must be the input of the last [`Conv2d::forward`] (what it kept is used
    /// when its shape matches). With `grad_input`, also computes dL/dinput,
    /// readable through [`Conv2d::grad_input`].
    ///
    /// # Panics
    /// If the shapes do not match the last forward pass.
    pub fn backward(
        &mut self,
        input: ArrayView4<'_, f32>,
        grad_out: ArrayView4<'_, f32>,
        grad_input: bool,
    ) {
        self.backward_from(input, Upstream::Conv(grad_out), grad_input);
    }

    /// The backward pass of [`Conv2d::forward_relu_avg_pool`]: overwrites the weight and bias
    /// gradients (and with `grad_input`, dL/dinput) for `grad_pooled`, the gradient of the
    /// pool's output, where `relu_out` is the ReLU's output and `pool` the pool's window. Each
    /// image's conv-output gradient is built right before its own weight gradient reads it
    /// (bit-identical to the pool's and ReLU's backward passes, then [`Conv2d::backward`]).
    ///
    /// # Panics
    /// If the shapes do not match the last forward pass.
    pub(crate) fn backward_relu_avg_pool(
        &mut self,
        input: ArrayView4<'_, f32>,
        relu_out: ArrayView4<'_, f32>,
        grad_pooled: ArrayView4<'_, f32>,
        pool: Pool2dParams,
        grad_input: bool,
    ) {
        let upstream = Upstream::ReluAvgPool {
            relu_out,
            grad_pooled,
            pool,
        };
        self.backward_from(input, upstream, grad_input);
    }

    /// The one backward pass of [`Conv2d::backward`] and [`Conv2d::backward_relu_avg_pool`]:
    /// from what the forward pass kept when it matches `input`, else from `input`.
    fn backward_from(&mut self, input: ArrayView4<'_, f32>, up: Upstream<'_>, grad_input: bool) {
        let gi: Option<ArrayViewMut4<'_, f32>> = if grad_input {
            self.grad_input.set_dim(input.raw_dim());
            Some(self.grad_input.view_mut())
        } else {
            None
        };
        let (w, p, ws) = (self.wb.weight.view(), self.params, &mut self.ws);
        let (gw, gb) = (
            self.wb.grad_weight.view_mut(),
            Some(self.wb.grad_bias.view_mut()),
        );
        // When the forward pass kept what backward reads of this input, nothing is rebuilt.
        let cache = Some(&self.cols).filter(|c| c.is_filled_for(input.dim(), w.dim(), p));
        match (up, cache) {
            (Upstream::Conv(g), Some(c)) => conv2d_backward_into_cached(c, w, g, p, gi, gw, gb, ws),
            (Upstream::Conv(g), None) => conv2d_backward_into(input, w, g, p, gi, gw, gb, ws),
            (
                Upstream::ReluAvgPool {
                    relu_out: r,
                    grad_pooled: g,
                    pool,
                },
                Some(c),
            ) => conv2d_relu_avg_pool2d_backward_into_cached(c, w, r, g, p, pool, gi, gw, gb, ws),
            (
                Upstream::ReluAvgPool {
                    relu_out: r,
                    grad_pooled: g,
                    pool,
                },
                None,
            ) => conv2d_relu_avg_pool2d_backward_into(input, w, r, g, p, pool, gi, gw, gb, ws),
        }
    }

    /// dL/dinput from the last [`Conv2d::backward`] that asked for it.
    pub fn grad_input(&self) -> ArrayView4<'_, f32> {
        self.grad_input.view()
    }

    /// (shape, value, gradient) of the weight and of the bias, for optimizers.
    pub(crate) fn params_mut(&mut self) -> [(&[usize], &mut [f32], &[f32]); 2] {
        self.wb.params_mut()
    }

    /// Read-only form of `params_mut`.
    pub(crate) fn params_ref(&self) -> [(&[usize], &[f32], &[f32]); 2] {
        self.wb.params_ref()
    }
}
