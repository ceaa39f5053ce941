//! [`Conv2dPlan`]: one convolution layer's method, kernel tier and what its backward pass
//! reads, for a training loop that calls the same convolution batch after batch.
//!
//! A plan owns what backward reads (state that lives from a forward pass to the backward pass
//! after it); scratch is per thread (`crate::scratch`), shared by every plan and one-shot call
//! the thread runs.

use super::{
    backward_from_input, backward_from_kept, forward_caching, forward_uncached, kept_len,
    Conv2dCache, Conv2dMethod, Conv2dParams, Geometry, GradsMut, ReluPoolOut, Upstream,
};
use crate::{Pool2dParams, Scalar, Tier};
use ndarray::{ArrayView1, ArrayView4, ArrayViewMut1, ArrayViewMut4};

/// Largest amount a training forward pass keeps for backward (im2col columns, about
/// `n·c·kh·kw·h·w` scalars, or the direct and shifted methods' padded images, about 4.7 KB per
/// image for both of LeNet-5's convolutions: kept up to ~890 images). Above it, rebuilding the
/// columns chunk by chunk in cache-resident scratch costs less than streaming them through
/// memory: measured on a Fashion-MNIST epoch, 1 thread, keeping 2–5 MB of columns saved ~10%
/// of CPU time at batch 32 and keeping 35 MB cost ~12% at batch 256.
const MAX_KEPT_BYTES: usize = 4 << 20;

/// One convolution as a training loop runs it, batch after batch: the method picked once for
/// its weight shape and parameters, the kernel tier fixed when the plan is made
/// ([`Tier::active`]: each kernel is then a pure function of that tier and the shapes), and
/// what a training forward pass keeps for the backward pass (the im2col columns, or the
/// zero-bordered images; only when that fits in a few MB, else backward rebuilds it from the
/// input), grown on the first batch and reused. Optionally, a ReLU and an average pool fused
/// after the convolution ([`Conv2dPlan::with_relu_avg_pool`]).
///
/// Scratch is not the plan's: every pass borrows the calling thread's, which grows on the
/// first pass and is reused by every later one, so after the first batch nothing is
/// allocated. The weight, bias and every output stay the caller's. Every result is
/// bit-identical to the one-shot functions' ([`conv2d_into`](crate::conv2d_into),
/// [`conv2d_backward_into`](crate::conv2d_backward_into)).
///
/// ```
/// use ndarray::{Array1, Array4};
/// use tensor::{conv2d_backward, Conv2dParams, Conv2dPlan};
/// let x = Array4::from_shape_fn((4, 2, 6, 6), |(n, c, i, j)| (n + c * i) as f32 - j as f32);
/// let (w, b) = (Array4::from_elem((3, 2, 3, 3), 0.1_f32), Array1::zeros(3));
/// let p = Conv2dParams { stride: (1, 1), padding: (1, 1) };
/// let mut conv = Conv2dPlan::new(w.dim(), p);
/// let mut y = Array4::zeros(conv.output_dim(x.dim()));
/// let (mut gw, mut gb) = (Array4::zeros(w.dim()), Array1::zeros(3));
/// let g = Array4::ones(y.dim());
/// for _step in 0..3 {
///     // allocates on the first step only
///     conv.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut(), None);
///     conv.backward_into(x.view(), w.view(), g.view(), None, (None, gw.view_mut(), Some(gb.view_mut())));
/// }
/// assert_eq!(gw, conv2d_backward(x.view(), w.view(), g.view(), p).weight);
/// ```
#[derive(Debug, Clone)]
pub struct Conv2dPlan<T> {
    weight: (usize, usize, usize, usize),
    params: Conv2dParams,
    method: Conv2dMethod,
    relu_avg_pool: Option<Pool2dParams>,
    /// The kernel tier of every pass.
    pub(super) tier: Tier,
    pub(super) kept: Conv2dCache<T>,
}

/// The ReLU and pooled outputs of a plan with the fused ReLU and average pool:
/// `(relu, pooled)`, `[n, k, oh, ow]` and `[n, k, poh, pow]`.
type ReluPool<'a, T> = (ArrayViewMut4<'a, T>, ArrayViewMut4<'a, T>);

impl<T: Scalar> Conv2dPlan<T> {
    /// A plan for a weight of shape `weight` (`[k, c, kh, kw]`) and `params`; it allocates
    /// nothing until its first pass. Shapes are checked by each pass.
    ///
    /// ```
    /// let conv = tensor::Conv2dPlan::<f32>::new((6, 1, 5, 5), Default::default());
    /// assert_eq!(conv.output_dim((32, 1, 28, 28)), (32, 6, 24, 24));
    /// ```
    pub fn new(weight: (usize, usize, usize, usize), params: Conv2dParams) -> Self {
        Conv2dPlan {
            weight,
            params,
            method: Conv2dMethod::choose(weight, params),
            relu_avg_pool: None,
            tier: Tier::active(),
            kept: Conv2dCache::new(),
        }
    }

    /// The same plan with a ReLU and then an average pool of window and stride `pool` fused
    /// after the convolution (LeNet-5's `conv → relu → avg_pool`): each image's output is
    /// rectified and pooled while in cache, and in backward each image's output gradient is
    /// built from the pooled gradient right before it is used. Bit-identical to the separate
    /// ops ([`Activation::Relu`](crate::Activation::Relu), [`avg_pool2d`](crate::avg_pool2d)
    /// and their backward passes).
    ///
    /// ```
    /// use ndarray::{array, Array4};
    /// use tensor::*;
    /// let x = Array4::from_shape_fn((2, 1, 5, 5), |(n, _, i, j)| (n + i) as f32 - j as f32);
    /// let (w, b) = (Array4::from_elem((3, 1, 2, 2), 0.25_f32), array![0.5_f32, -1.0, 0.0]);
    /// let pool = Pool2dParams::square(2); // 5×5 → 4×4 → pooled 2×2
    /// let mut conv = Conv2dPlan::new(w.dim(), Conv2dParams::default()).with_relu_avg_pool(pool);
    /// let (mut y, mut r, mut z) =
    ///     (Array4::zeros((2, 3, 4, 4)), Array4::zeros((2, 3, 4, 4)), Array4::zeros((2, 3, 2, 2)));
    /// let fused = Some((r.view_mut(), z.view_mut()));
    /// conv.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut(), fused);
    /// assert_eq!(r, Activation::Relu.forward(y.view()));
    /// assert_eq!(z, avg_pool2d(r.view(), pool));
    /// // backward from dL/dz: the conv's gradients for dL/dy = relu'(r) ⊙ avg_pool2d_backward(dL/dz)
    /// let gz = Array4::ones(z.dim());
    /// let mut gw = Array4::zeros(w.dim());
    /// conv.backward_into(x.view(), w.view(), gz.view(), Some(r.view()), (None, gw.view_mut(), None));
    /// let gy = Activation::Relu.backward(r.view(), avg_pool2d_backward(gz.view(), pool, y.dim()).view());
    /// assert_eq!(gw, conv2d_backward(x.view(), w.view(), gy.view(), Default::default()).weight);
    /// ```
    pub fn with_relu_avg_pool(mut self, pool: Pool2dParams) -> Self {
        self.relu_avg_pool = Some(pool);
        self
    }

    /// The pool fused after the convolution, if any ([`Conv2dPlan::with_relu_avg_pool`]).
    ///
    /// ```
    /// use tensor::{Conv2dPlan, Pool2dParams};
    /// let conv = Conv2dPlan::<f32>::new((6, 1, 5, 5), Default::default());
    /// assert_eq!(conv.relu_avg_pool(), None);
    /// let fused = conv.with_relu_avg_pool(Pool2dParams::square(2));
    /// assert_eq!(fused.relu_avg_pool(), Some(Pool2dParams::square(2)));
    /// ```
    pub fn relu_avg_pool(&self) -> Option<Pool2dParams> {
        self.relu_avg_pool
    }

    /// The same plan computing by `method` instead of [`Conv2dMethod::choose`]'s (to compare
    /// or benchmark methods).
    ///
    /// # Panics
    /// If `method` does not support this weight shape and parameters.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    #[track_caller]
    pub fn with_method(mut self, method: Conv2dMethod) -> Self {
        assert!(
            method.supports(self.weight, self.params),
            "Conv2dPlan: method {method:?} does not support weight {:?} and {:?}",
            self.weight,
            self.params
        );
        self.method = method;
        self
    }

    /// Number of scalars the plan holds: what a training forward pass keeps for backward (it
    /// only ever grows).
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    pub fn held_len(&self) -> usize {
        self.kept.kept.len()
    }

    /// Shape of the convolution output for an input of shape `input` (`[n, c, h, w]`).
    ///
    /// # Panics
    /// If the input does not fit the weight (see [`conv2d`](crate::conv2d)).
    #[track_caller]
    pub fn output_dim(&self, input: (usize, usize, usize, usize)) -> (usize, usize, usize, usize) {
        Geometry::new("conv2d", input, self.weight, self.params).output_dim()
    }

    /// The training forward pass: overwrites `out` (`[n, k, oh, ow]`) with the convolution of
    /// `input` by `weight` plus `bias`, and, for a plan with the fused ReLU and pool,
    /// `relu_pool = Some((relu, pooled))` with its ReLU and pooled outputs. Keeps what the
    /// backward pass reads of `input` when that fits in a few MB: the caller leaves `input`
    /// untouched until [`Conv2dPlan::backward_into`].
    ///
    /// # Panics
    /// If the shapes do not agree, `weight` is not the plan's shape, or `relu_pool` is given
    /// to a plan without the fused ReLU and pool or missing from one with it.
    #[track_caller]
    pub fn forward_into(
        &mut self,
        input: ArrayView4<'_, T>,
        weight: ArrayView4<'_, T>,
        bias: Option<ArrayView1<'_, T>>,
        out: ArrayViewMut4<'_, T>,
        relu_pool: Option<ReluPool<'_, T>>,
    ) {
        let g = self.geometry(input.dim(), weight.dim());
        let epi = self.epilogue(relu_pool);
        if kept_len(&g, self.method) * std::mem::size_of::<T>() <= MAX_KEPT_BYTES {
            forward_caching(
                &g,
                self.method,
                input,
                weight,
                bias,
                out,
                epi,
                &mut self.kept,
            );
        } else {
            self.kept.invalidate();
            forward_uncached(&g, self.method, input, weight, bias, out, epi);
        }
    }

    /// Like [`Conv2dPlan::forward_into`], keeping nothing for backward: for inference, where
    /// no backward pass follows (it touches less memory). The outputs are bit-identical.
    ///
    /// # Panics
    /// As [`Conv2dPlan::forward_into`].
    ///
    /// ```
    /// use ndarray::{Array1, Array4};
    /// use tensor::{conv2d, Conv2dParams, Conv2dPlan};
    /// let x = Array4::from_shape_fn((3, 2, 7, 7), |(n, c, i, j)| (n + 2 * c + i) as f32 - j as f32);
    /// let w = Array4::from_shape_fn((4, 2, 3, 3), |(k, c, u, v)| (k + c + u * v) as f32 / 8.0);
    /// let b = Array1::from_vec(vec![0.5_f32, -0.5, 0.0, 1.0]);
    /// let p = Conv2dParams { stride: (2, 2), padding: (1, 1) };
    /// let mut conv = Conv2dPlan::new(w.dim(), p);
    /// let mut y = Array4::zeros(conv.output_dim(x.dim())); // [3, 4, 4, 4]
    /// conv.inference_into(x.view(), w.view(), Some(b.view()), y.view_mut(), None);
    /// assert_eq!(y, conv2d(x.view(), w.view(), Some(b.view()), p));
    /// ```
    #[track_caller]
    pub fn inference_into(
        &mut self,
        input: ArrayView4<'_, T>,
        weight: ArrayView4<'_, T>,
        bias: Option<ArrayView1<'_, T>>,
        out: ArrayViewMut4<'_, T>,
        relu_pool: Option<ReluPool<'_, T>>,
    ) {
        let g = self.geometry(input.dim(), weight.dim());
        let epi = self.epilogue(relu_pool);
        self.kept.invalidate();
        forward_uncached(&g, self.method, input, weight, bias, out, epi);
    }

    /// The backward pass: overwrites `grads = (grad_input, grad_weight, grad_bias)` (input
    /// gradient and bias gradient optional: the first layer of a network needs no input
    /// gradient). `input` is the forward pass's input; what that pass kept of it is read
    /// instead when it has its shape. `grad_out` is dL/d(convolution output), or for a plan
    /// with the fused ReLU and pool dL/d(pooled output), with `relu_out` the forward pass's
    /// ReLU output.
    ///
    /// # Panics
    /// If the shapes do not agree with the forward pass's, `weight` is not the plan's shape,
    /// or `relu_out` is given to a plan without the fused ReLU and pool or missing from one
    /// with it.
    #[track_caller]
    pub fn backward_into(
        &mut self,
        input: ArrayView4<'_, T>,
        weight: ArrayView4<'_, T>,
        grad_out: ArrayView4<'_, T>,
        relu_out: Option<ArrayView4<'_, T>>,
        grads: (
            Option<ArrayViewMut4<'_, T>>,
            ArrayViewMut4<'_, T>,
            Option<ArrayViewMut1<'_, T>>,
        ),
    ) {
        self.check_weight("conv2d_backward", weight.dim());
        let upstream = match (self.relu_avg_pool, relu_out) {
            (None, None) => Upstream::Conv(grad_out),
            (Some(pool), Some(relu)) => Upstream::ReluAvgPool {
                grad: grad_out,
                relu,
                pool,
            },
            (pool, _) => panic!(
                "conv2d_backward: relu_out must be given exactly when the plan fuses a ReLU \
                 and an average pool (it fuses {pool:?})"
            ),
        };
        let grads: GradsMut<'_, T> = grads;
        let p = self.params;
        if self.kept.is_filled_for(input.dim(), weight.dim(), p) {
            backward_from_kept((&self.kept, self.tier), weight, upstream, p, grads);
        } else {
            backward_from_input((self.method, self.tier), input, weight, upstream, p, grads);
        }
    }

    /// The checked geometry of a forward pass.
    #[track_caller]
    fn geometry(
        &self,
        input: (usize, usize, usize, usize),
        weight: (usize, usize, usize, usize),
    ) -> Geometry {
        self.check_weight("conv2d", weight);
        let g = Geometry::new("conv2d", input, weight, self.params).on(self.tier);
        self.method.check("conv2d", &g);
        g
    }

    #[track_caller]
    fn check_weight(&self, op: &str, weight: (usize, usize, usize, usize)) {
        assert!(
            weight == self.weight,
            "{op}: weight {weight:?} is not the plan's {:?}",
            self.weight
        );
    }

    /// The fused outputs, checked against the plan's option.
    #[track_caller]
    fn epilogue<'a>(&self, relu_pool: Option<ReluPool<'a, T>>) -> Option<ReluPoolOut<'a, T>> {
        match (self.relu_avg_pool, relu_pool) {
            (None, None) => None,
            (Some(pool), Some((relu, pooled))) => Some(ReluPoolOut { relu, pooled, pool }),
            (pool, _) => panic!(
                "conv2d: (relu, pooled) outputs must be given exactly when the plan fuses a \
                 ReLU and an average pool (it fuses {pool:?})"
            ),
        }
    }
}
