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
//! Each step runs the same per-plane kernels as the separate ops
//! ([`Activation::Relu`](crate::Activation::Relu), [`avg_pool2d`](crate::avg_pool2d),
//! [`avg_pool2d_backward`](crate::avg_pool2d_backward), the convolution's), in the same order,
//! so the fused pass is bit-identical to the composition. A [`Conv2dPlan`](super::Conv2dPlan)
//! built [`with_relu_avg_pool`](super::Conv2dPlan::with_relu_avg_pool) runs it.

use super::Geometry;
use crate::pool::{avg_pool_relu_backward_plane, relu_avg_pool_image, Geometry as PoolGeometry};
use crate::shape::{check_shape, Expected};
use crate::{Pool2dParams, Scalar};
use ndarray::ArrayViewMut4;
use rayon::iter::Either;
use rayon::prelude::*;

/// The outputs the fused forward pass writes besides the convolution output: the ReLU output
/// and its average pool.
#[derive(Debug)]
pub(super) struct ReluPoolOut<'a, T> {
    /// `max(conv, 0)`, `[n, k, oh, ow]`: what the fused backward pass reads as ReLU's mask.
    pub(super) relu: ArrayViewMut4<'a, T>,
    /// The average pool of `relu`, `[n, k, poh, pow]` with `(poh, pow)` from
    /// [`Pool2dParams::output_size`] of `(oh, ow)`.
    pub(super) pooled: ArrayViewMut4<'a, T>,
    /// Window and stride of the average pool (no padding, floor mode).
    pub(super) pool: Pool2dParams,
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

// Backward of z = avg_pool(relu(conv(x))): with gz = dL/dz,
//   dL/dy = [r > 0] ⊙ avg_pool_backward(gz)        (y the convolution output, r = relu(y)),
// then the convolution's own backward of dL/dy (see the parent module), image by image.

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

/// Scalars of one image's output gradient `dL/dy` (`[k, oh, ow]`), which the fused backward
/// pass builds in per-chunk scratch ([`GradOut::image`]).
pub(super) fn grad_image_len(g: &Geometry) -> usize {
    g.k * g.positions()
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
            GradOut::ReluAvgPool { .. } => grad_image_len(g),
        }
    }

    /// Whether it is the fused ReLU and pool's gradient.
    pub(super) fn is_fused(&self) -> bool {
        matches!(self, GradOut::ReluAvgPool { .. })
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
