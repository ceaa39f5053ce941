//! Conv2d layer: owns its weight `[out, in, kh, kw]`, bias `[out]`, their gradients, its output
//! and input-gradient buffers, and the [`Conv2dPlan`] that computes it (the plan holds what the
//! forward pass keeps for the backward pass; scratch is `tensor`'s, per thread).

use crate::activation::Activation;
use crate::buffer::Buffer;
use crate::init::uniform_fan_in;
use crate::param::WeightBias;
use crate::pool::Pool2d;
use ndarray::{ArrayView1, ArrayView4, ArrayViewMut4, Ix4};
use rand::Rng;
use tensor::{Conv2dParams, Conv2dPlan, Pool2dParams};

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
    /// The convolution's plan: plain, or with the ReLU and average pool after it fused
    /// ([`Conv2d::forward_relu_avg_pool`]).
    plan: Conv2dPlan<f32>,
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
        let weight = (out_channels, in_channels, kernel, kernel);
        Conv2d {
            wb: WeightBias::zeros([out_channels, in_channels, kernel, kernel]),
            params,
            output: Buffer::new(),
            grad_input: Buffer::new(),
            plan: Conv2dPlan::new(weight, params),
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
    /// keeps for the next layer and for backward. Its plan also keeps what the backward pass
    /// reads of the input when that fits in a few MB, so that [`Conv2d::backward`] on the same
    /// input does not rebuild it.
    ///
    /// # Panics
    /// If the input has the wrong channel count or is smaller than the kernel.
    pub fn forward(&mut self, input: ArrayView4<'_, f32>) -> ArrayView4<'_, f32> {
        self.set_output_dim(input.dim());
        self.set_plan(None);
        let (w, b) = (self.wb.weight.view(), Some(self.wb.bias.view()));
        let out = self.output.view_mut();
        self.plan.forward_into(input, w, b, out, None);
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
        self.set_plan(None);
        let (w, b) = (self.wb.weight.view(), Some(self.wb.bias.view()));
        let out = self.output.view_mut();
        self.plan.inference_into(input, w, b, out, None);
        self.output.view()
    }

    /// The convolution, then `act` (a ReLU) and `pool` (an average pool) in one fused pass
    /// (a [`Conv2dPlan`] with the ReLU and pool fused): each image's output is rectified and
    /// pooled while in cache. Afterwards this layer's, `act`'s and `pool`'s outputs are what
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
        self.set_plan(Some(pool.params()));
        let out_dim = self.output.dim();
        let fused = Some((act.output_mut(out_dim), pool.output_mut(out_dim)));
        let (w, b) = (self.wb.weight.view(), Some(self.wb.bias.view()));
        let out = self.output.view_mut();
        if training {
            self.plan.forward_into(input, w, b, out, fused);
        } else {
            self.plan.inference_into(input, w, b, out, fused);
        }
    }

    /// Makes the plan one with the ReLU and average pool `pool` fused after the convolution,
    /// or with none: a new plan (keeping nothing yet) when the last pass asked for the other
    /// kind.
    fn set_plan(&mut self, pool: Option<Pool2dParams>) {
        if self.plan.relu_avg_pool() != pool {
            let plan = Conv2dPlan::new(self.wb.weight.dim(), self.params);
            self.plan = match pool {
                Some(pool) => plan.with_relu_avg_pool(pool),
                None => plan,
            };
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
    /// the plan reads what its forward pass kept when it matches `input`, else `input`.
    fn backward_from(&mut self, input: ArrayView4<'_, f32>, up: Upstream<'_>, grad_input: bool) {
        self.set_plan(match up {
            Upstream::Conv(_) => None,
            Upstream::ReluAvgPool { pool, .. } => Some(pool),
        });
        let gi: Option<ArrayViewMut4<'_, f32>> = if grad_input {
            self.grad_input.set_dim(input.raw_dim());
            Some(self.grad_input.view_mut())
        } else {
            None
        };
        let w = self.wb.weight.view();
        let grads = (
            gi,
            self.wb.grad_weight.view_mut(),
            Some(self.wb.grad_bias.view_mut()),
        );
        match up {
            Upstream::Conv(g) => self.plan.backward_into(input, w, g, None, grads),
            Upstream::ReluAvgPool {
                relu_out,
                grad_pooled,
                ..
            } => self
                .plan
                .backward_into(input, w, grad_pooled, Some(relu_out), grads),
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

    /// The weight and bias gradients, writable.
    pub(crate) fn grads_mut(&mut self) -> [&mut [f32]; 2] {
        self.wb.grads_mut()
    }

    /// Read-only form of `params_mut`.
    pub(crate) fn params_ref(&self) -> [(&[usize], &[f32], &[f32]); 2] {
        self.wb.params_ref()
    }
}
