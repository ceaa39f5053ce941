//! Convolution fused with the ReLU and the average pool after it (LeNet-5's
//! `conv → relu → avg_pool`), forward and backward, image by image.
//!
//! * forward: each image's convolution output `y_n` (`[k, oh, ow]`, bias included) is, while
//!   still in cache, turned into the ReLU output `r_n = max(y_n, 0)` and the pooled output
//!   `z_n = avg_pool(r_n)`, in the pass that computes it: no batch-wide ReLU or pooling pass.
//! * backward: with `gz = dL/dz` (`[n, k, poh, pow]`), the convolution-output gradient is
//!   `dL/dy = [r > 0] ⊙ avg_pool_backward(gz)`, where `avg_pool_backward` spreads each window's
//!   gradient, divided by the window area, over the window (`[r > 0]` is ReLU's derivative, and
//!   `y > 0` exactly where `r > 0`). It is built one image at a time into per-chunk scratch right
//!   before that image's weight (and input) gradient reads it: no batch-wide `dL/dy` buffer.
//!
//! Each step runs the same per-plane kernels as the separate ops ([`relu`](crate::relu),
//! [`avg_pool2d`](crate::avg_pool2d), [`avg_pool2d_relu_backward_into`](crate::avg_pool2d_relu_backward_into),
//! the convolution's), in the same order, so the fused op is bit-identical to the composition.

use super::{
    backward, cached_kept, forward_caching, forward_ws, Conv2dCache, Conv2dMethod, Conv2dParams,
    Conv2dWorkspace, Geometry, Kept, Upstream,
};
use crate::pool::{avg_pool_relu_backward_plane, relu_avg_pool_image, Geometry as PoolGeometry};
use crate::shape::{check_shape, Expected};
use crate::{Pool2dParams, Scalar};
use ndarray::{ArrayView1, ArrayView4, ArrayViewMut1, ArrayViewMut4};
use rayon::iter::Either;
use rayon::prelude::*;

/// The outputs the fused forward pass writes besides the convolution output: the ReLU output
/// and its average pool.
#[derive(Debug)]
pub struct ReluPoolOut<'a, T> {
    /// `max(conv, 0)`, `[n, k, oh, ow]`: what the fused backward pass reads as ReLU's mask.
    pub relu: ArrayViewMut4<'a, T>,
    /// The average pool of `relu`, `[n, k, poh, pow]` with `(poh, pow)` from
    /// [`Pool2dParams::output_size`] of `(oh, ow)`.
    pub pooled: ArrayViewMut4<'a, T>,
    /// Window and stride of the average pool (no padding, floor mode).
    pub pool: Pool2dParams,
}

impl<T> ReluPoolOut<'_, T> {
    /// Checks both shapes against the convolution `g`; the pool's geometry.
    #[track_caller]
    pub(super) fn check(&self, g: &Geometry) -> PoolGeometry {
        let op = "conv2d_relu_avg_pool2d";
        let pool = PoolGeometry::new(op, g.output_dim(), self.pool);
        let want = Expected::Shape(g.output_dim());
        check_shape(op, "relu", want, self.relu.dim());
        let want = Expected::Shape(pool.output_dim(g.n, g.k));
        check_shape(op, "pooled", want, self.pooled.dim());
        pool
    }
}

/// [`conv2d_into`](crate::conv2d_into) followed by [`relu`](crate::relu) and
/// [`avg_pool2d`](crate::avg_pool2d), fused: each image's convolution output is rectified and
/// pooled right after it is computed, while it is in cache. Writes the convolution output
/// `out` (`[n, k, oh, ow]`), `fused.relu = max(out, 0)` and `fused.pooled =
/// avg_pool2d(fused.relu)`, each bit-identical to the separate ops. Scratch from `ws`; nothing
/// is kept for a backward pass (see [`conv2d_relu_avg_pool2d_into_caching`]).
///
/// # Panics
/// If the shapes do not agree, the kernel does not fit (see the module docs), or the pool
/// window does not fit the convolution output.
///
/// ```
/// use ndarray::{array, Array4};
/// use tensor::*;
/// let x = Array4::from_shape_fn((2, 1, 5, 5), |(n, _, i, j)| (n + i) as f32 - j as f32);
/// let w = Array4::from_elem((3, 1, 2, 2), 0.25_f32);
/// let b = array![0.5_f32, -1.0, 0.0];
/// let p = Conv2dParams::default(); // 5×5 → 4×4 → pooled 2×2
/// let (mut y, mut r, mut z) =
///     (Array4::zeros((2, 3, 4, 4)), Array4::zeros((2, 3, 4, 4)), Array4::zeros((2, 3, 2, 2)));
/// let fused = ReluPoolOut { relu: r.view_mut(), pooled: z.view_mut(), pool: Pool2dParams::square(2) };
/// conv2d_relu_avg_pool2d_into(x.view(), w.view(), Some(b.view()), p, y.view_mut(), fused,
///                             &mut Conv2dWorkspace::new());
/// let want_y = conv2d(x.view(), w.view(), Some(b.view()), p);
/// assert_eq!(y, want_y);
/// assert_eq!(r, relu(want_y.view()));
/// assert_eq!(z, avg_pool2d(r.view(), Pool2dParams::square(2)));
/// ```
#[track_caller]
pub fn conv2d_relu_avg_pool2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
    out: ArrayViewMut4<'_, T>,
    fused: ReluPoolOut<'_, T>,
    ws: &mut Conv2dWorkspace<T>,
) {
    let op = "conv2d_relu_avg_pool2d";
    let g = Geometry::new(op, input.dim(), weight.dim(), params);
    let method = Conv2dMethod::choose(g.input_dim(), g.weight_dim(), params);
    forward_ws(&g, method, input, weight, bias, out, Some(fused), ws);
}

/// Like [`conv2d_relu_avg_pool2d_into`], keeping in `cache` what the convolution's backward
/// pass reads (as [`conv2d_into_caching`](crate::conv2d_into_caching) does), for
/// [`conv2d_relu_avg_pool2d_backward_into_cached`]. Training calls this.
///
/// # Panics
/// As [`conv2d_relu_avg_pool2d_into`].
///
/// ```
/// use ndarray::Array4;
/// use tensor::*;
/// let x = Array4::from_shape_fn((3, 2, 6, 7), |(n, c, i, j)| (n + c + i) as f64 - j as f64);
/// let w = Array4::from_elem((4, 2, 3, 3), 0.1);
/// let (p, pool) = (Conv2dParams::default(), Pool2dParams::square(2)); // 6×7 → 4×5 → 2×2
/// let (mut y, mut r, mut z) =
///     (Array4::zeros((3, 4, 4, 5)), Array4::zeros((3, 4, 4, 5)), Array4::zeros((3, 4, 2, 2)));
/// let mut cache = Conv2dCache::new();
/// let fused = ReluPoolOut { relu: r.view_mut(), pooled: z.view_mut(), pool };
/// conv2d_relu_avg_pool2d_into_caching(x.view(), w.view(), None, p, y.view_mut(), fused, &mut cache);
/// assert!(cache.is_filled_for((3, 2, 6, 7), (4, 2, 3, 3), p));
/// assert_eq!(z, avg_pool2d(relu(conv2d(x.view(), w.view(), None, p).view()).view(), pool));
/// ```
#[track_caller]
pub fn conv2d_relu_avg_pool2d_into_caching<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
    out: ArrayViewMut4<'_, T>,
    fused: ReluPoolOut<'_, T>,
    cache: &mut Conv2dCache<T>,
) {
    let op = "conv2d_relu_avg_pool2d";
    let g = Geometry::new(op, input.dim(), weight.dim(), params);
    forward_caching(&g, input, weight, bias, out, Some(fused), cache);
}

// Backward of z = avg_pool(relu(conv(x))): with gz = dL/dz,
//   dL/dy = [r > 0] ⊙ avg_pool_backward(gz)        (y the convolution output, r = relu(y)),
// then the convolution's own backward of dL/dy (see the parent module), image by image.

/// Gradients of [`conv2d_relu_avg_pool2d_into`]'s pooled output: with `grad_pooled` = dL/dz,
/// the convolution-output gradient `dL/dy = [relu_out > 0] ⊙ avg_pool2d_backward(grad_pooled)`
/// is built one image at a time into per-chunk scratch of `ws`, and the convolution's input
/// (optional), weight and bias gradients computed from it as
/// [`conv2d_backward_into`](crate::conv2d_backward_into) does. Bit-identical to
/// [`avg_pool2d_relu_backward_into`](crate::avg_pool2d_relu_backward_into) then
/// [`conv2d_backward_into`](crate::conv2d_backward_into). `relu_out` is the forward pass's
/// `fused.relu`, `pool` its `fused.pool`.
///
/// # Panics
/// If the shapes do not agree with the forward pass's (see the module docs).
///
/// ```
/// use ndarray::{Array1, Array4};
/// use tensor::*;
/// let x = Array4::from_shape_fn((2, 1, 6, 6), |(n, _, i, j)| (n + i) as f32 - j as f32);
/// let w = Array4::from_shape_fn((2, 1, 3, 3), |(k, _, u, v)| (k + u) as f32 - v as f32);
/// let (p, pool) = (Conv2dParams { stride: (1, 1), padding: (1, 1) }, Pool2dParams::square(2));
/// let y = conv2d(x.view(), w.view(), None, p);
/// let r = relu(y.view());
/// let gz = Array4::from_shape_fn((2, 2, 3, 3), |(n, k, i, j)| (n + k + i * j) as f32);
/// let (mut gw, mut gb) = (Array4::zeros(w.dim()), Array1::zeros(2));
/// conv2d_relu_avg_pool2d_backward_into(x.view(), w.view(), r.view(), gz.view(), p, pool, None,
///                                      gw.view_mut(), Some(gb.view_mut()), &mut Conv2dWorkspace::new());
/// let gy = relu_backward(r.view(), avg_pool2d_backward(gz.view(), pool, y.dim()).view());
/// let want = conv2d_backward(x.view(), w.view(), gy.view(), p);
/// assert_eq!((gw, gb), (want.weight, want.bias));
/// ```
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn conv2d_relu_avg_pool2d_backward_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    relu_out: ArrayView4<'_, T>,
    grad_pooled: ArrayView4<'_, T>,
    params: Conv2dParams,
    pool: Pool2dParams,
    grad_input: Option<ArrayViewMut4<'_, T>>,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
    ws: &mut Conv2dWorkspace<T>,
) {
    let op = "conv2d_relu_avg_pool2d_backward";
    let g = Geometry::new(op, input.dim(), weight.dim(), params);
    let method = Conv2dMethod::choose_backward(g.input_dim(), g.weight_dim(), params);
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    let upstream = Upstream::ReluAvgPool {
        grad: grad_pooled,
        relu: relu_out,
        pool,
    };
    let grads = (grad_input, grad_weight, grad_bias);
    backward(&g, method, Kept::Input(x), weight, upstream, grads, ws);
}

/// Like [`conv2d_relu_avg_pool2d_backward_into`], reading what
/// [`conv2d_relu_avg_pool2d_into_caching`] kept in `cache` instead of the input. Bit-identical
/// to it.
///
/// # Panics
/// If `cache` was not filled by a forward pass with this weight shape and `params`, or the
/// other shapes do not agree with the forward pass's.
///
/// ```
/// use ndarray::{Array1, Array4};
/// use tensor::*;
/// let x = Array4::from_shape_fn((2, 1, 7, 7), |(n, _, i, j)| (n * i) as f32 - j as f32);
/// let w = Array4::from_elem((3, 1, 3, 3), 0.5_f32);
/// let (p, pool) = (Conv2dParams { stride: (1, 1), padding: (1, 1) }, Pool2dParams::square(2));
/// let (mut y, mut r, mut z) =
///     (Array4::zeros((2, 3, 7, 7)), Array4::zeros((2, 3, 7, 7)), Array4::zeros((2, 3, 3, 3)));
/// let mut cache = Conv2dCache::new();
/// let fused = ReluPoolOut { relu: r.view_mut(), pooled: z.view_mut(), pool };
/// conv2d_relu_avg_pool2d_into_caching(x.view(), w.view(), None, p, y.view_mut(), fused, &mut cache);
/// let gz = Array4::from_elem((2, 3, 3, 3), 1.0_f32);
/// let mut ws = Conv2dWorkspace::new();
/// let (mut gw, mut gw_cached) = (Array4::zeros(w.dim()), Array4::zeros(w.dim()));
/// conv2d_relu_avg_pool2d_backward_into(x.view(), w.view(), r.view(), gz.view(), p, pool, None,
///                                      gw.view_mut(), None, &mut ws);
/// conv2d_relu_avg_pool2d_backward_into_cached(&cache, w.view(), r.view(), gz.view(), p, pool,
///                                             None, gw_cached.view_mut(), None, &mut ws);
/// assert_eq!(gw, gw_cached);
/// ```
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn conv2d_relu_avg_pool2d_backward_into_cached<T: Scalar>(
    cache: &Conv2dCache<T>,
    weight: ArrayView4<'_, T>,
    relu_out: ArrayView4<'_, T>,
    grad_pooled: ArrayView4<'_, T>,
    params: Conv2dParams,
    pool: Pool2dParams,
    grad_input: Option<ArrayViewMut4<'_, T>>,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
    ws: &mut Conv2dWorkspace<T>,
) {
    let op = "conv2d_relu_avg_pool2d_backward_cached";
    let (g, kept) = cached_kept(op, cache, weight.dim(), params);
    let upstream = Upstream::ReluAvgPool {
        grad: grad_pooled,
        relu: relu_out,
        pool,
    };
    let grads = (grad_input, grad_weight, grad_bias);
    backward(&g, cache.method, kept, weight, upstream, grads, ws);
}

/// The fused forward pass's extra outputs for the whole batch: the ReLU output (`[n, k, oh,
/// ow]`) and the pooled output (`[n, k, poh, pow]`), contiguous.
pub(super) struct Epilogue<'a, T> {
    pub(super) relu: &'a mut [T],
    pub(super) pooled: &'a mut [T],
    pub(super) pool: PoolGeometry,
}

/// [`Epilogue`]'s outputs for the images of one batch chunk.
pub(super) struct EpilogueChunk<'a, T> {
    relu: &'a mut [T],
    pooled: &'a mut [T],
    pool: PoolGeometry,
}

/// One item per batch chunk: that chunk's part of the epilogue outputs, or `None` for every
/// chunk when there is no epilogue (a plain convolution). Zipped with the chunks of the output.
pub(super) fn epilogue_chunks<'a, T: Scalar>(
    g: &Geometry,
    epi: Option<Epilogue<'a, T>>,
) -> impl IndexedParallelIterator<Item = Option<EpilogueChunk<'a, T>>> + 'a {
    let chunks = g.chunks;
    let per_chunk = g.per_chunk;
    match epi {
        Some(Epilogue { relu, pooled, pool }) => {
            let (r_img, p_img) = (g.k * pool.in_plane(), g.k * pool.out_plane());
            Either::Left(
                relu.par_chunks_mut(per_chunk * r_img)
                    .zip(pooled.par_chunks_mut(per_chunk * p_img))
                    .map(move |(relu, pooled)| Some(EpilogueChunk { relu, pooled, pool })),
            )
        }
        None => Either::Right(rayon::iter::repeat_n((), chunks).map(|_| None)),
    }
}

impl<T: Scalar> EpilogueChunk<'_, T> {
    /// For image `i` of the chunk, from its convolution output `y_n` (`[k, oh, ow]`): the ReLU
    /// output `r = max(y_n, 0)` and, plane by plane, its average pool.
    pub(super) fn image(&mut self, i: usize, y_n: &[T]) {
        let k = y_n.len() / self.pool.in_plane();
        let r = &mut self.relu[i * y_n.len()..][..y_n.len()];
        let z = &mut self.pooled[i * k * self.pool.out_plane()..][..k * self.pool.out_plane()];
        relu_avg_pool_image(&self.pool, y_n, r, z);
    }
}

/// The convolution-output gradient the backward pass reads, image by image.
#[derive(Clone, Copy)]
pub(super) enum GradOut<'a, T> {
    /// `dL/dy` of the whole batch (`[n, k, oh, ow]`, contiguous), read in place.
    Conv(&'a [T]),
    /// `dL/dz` after a ReLU and an average pool (`[n, k, poh, pow]`) and the ReLU output `r`
    /// (`[n, k, oh, ow]`): `dL/dy = [r > 0] ⊙ avg_pool_backward(dL/dz)`, built per image.
    ReluAvgPool {
        grad: &'a [T],
        relu: &'a [T],
        pool: PoolGeometry,
    },
}

impl<T: Scalar> GradOut<'_, T> {
    /// Scalars of per-chunk scratch [`GradOut::image`] needs: one image's `dL/dy` when it is
    /// built, else none.
    pub(super) fn scratch_len(&self, g: &Geometry) -> usize {
        match self {
            GradOut::Conv(_) => 0,
            GradOut::ReluAvgPool { .. } => g.k * g.positions(),
        }
    }

    /// `dL/dy` of image `n` (`[k, oh, ow]`): a slice of the batch's, or built into `buf`
    /// ([`GradOut::scratch_len`] scalars).
    pub(super) fn image<'s>(&'s self, g: &Geometry, n: usize, buf: &'s mut [T]) -> &'s [T] {
        let out_img = g.k * g.positions();
        match *self {
            GradOut::Conv(go) => &go[n * out_img..][..out_img],
            GradOut::ReluAvgPool { grad, relu, pool } => {
                let (pin, pout) = (pool.in_plane(), pool.out_plane());
                let buf = &mut buf[..out_img];
                let gz = grad[n * g.k * pout..][..g.k * pout].chunks_exact(pout);
                let r = relu[n * out_img..][..out_img].chunks_exact(pin);
                for ((gz, r), gy) in gz.zip(r).zip(buf.chunks_exact_mut(pin)) {
                    avg_pool_relu_backward_plane(&pool, gz, r, gy);
                }
                buf
            }
        }
    }
}
