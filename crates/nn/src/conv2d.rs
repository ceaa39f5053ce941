//! Conv2d layer: owns its weight `[out, in, kh, kw]`, bias `[out]`, their gradients, its output
//! and input-gradient buffers, the convolution workspace and what the forward pass keeps for the
//! backward pass (im2col columns, or for one input channel the zero-bordered images). The math
//! is `tensor::conv2d_*`.

use crate::buffer::Buffer;
use crate::init::uniform_fan_in;
use crate::param::WeightBias;
use ndarray::{ArrayView1, ArrayView4, Ix4};
use rand::Rng;
use tensor::{
    conv2d_backward_into, conv2d_backward_into_cached, conv2d_into, conv2d_into_caching,
    Conv2dCache, Conv2dParams, Conv2dWorkspace,
};

/// Largest amount a training forward pass keeps for backward (`Conv2dCache::kept_len`: im2col
/// columns, about `n·c·kh·kw·h·w` scalars, or the direct method's padded images). Above it,
/// rebuilding the columns chunk by chunk in cache-resident scratch costs less than streaming
/// them through memory: measured on a Fashion-MNIST epoch, 1 thread, keeping 2–5 MB of
/// columns saved ~10% of CPU time at batch 32 and keeping 35 MB cost ~12% at batch 256.
const MAX_KEPT_BYTES: usize = 4 << 20;

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
        let kept = Conv2dCache::<f32>::kept_len(input.dim(), self.wb.weight.dim(), self.params);
        if kept * std::mem::size_of::<f32>() > MAX_KEPT_BYTES {
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
        let grad_input_view = if grad_input {
            self.grad_input.set_dim(input.raw_dim());
            Some(self.grad_input.view_mut())
        } else {
            None
        };
        let weight_dim = self.wb.weight.dim();
        if self
            .cols
            .is_filled_for(input.dim(), weight_dim, self.params)
        {
            // The forward pass kept what backward reads of this input: nothing rebuilt here.
            conv2d_backward_into_cached(
                &self.cols,
                self.wb.weight.view(),
                grad_out,
                self.params,
                grad_input_view,
                self.wb.grad_weight.view_mut(),
                Some(self.wb.grad_bias.view_mut()),
                &mut self.ws,
            );
        } else {
            conv2d_backward_into(
                input,
                self.wb.weight.view(),
                grad_out,
                self.params,
                grad_input_view,
                self.wb.grad_weight.view_mut(),
                Some(self.wb.grad_bias.view_mut()),
                &mut self.ws,
            );
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
