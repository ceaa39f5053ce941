//! Direct convolution for one input channel and stride 1 (LeNet-5's conv1: 1 → 6 channels,
//! 5×5, padding 2, 28×28), forward and backward, with no im2col columns in memory.
//!
//! Each image is first copied into zero-bordered rows of [`row_stride`] scalars ([`pad_image`]:
//! `ph` zero rows, then per image row `pw` zeros, the row, zeros; then `ph` zero rows), a few KB
//! reused for every image of a chunk, or kept for the backward pass in training: then kernel
//! column `v` of the output columns `j0..j0+m` reads the contiguous `row[j0+v .. j0+v+m]`,
//! with no border cases.
//!
//! * forward: `y[k,i,j] = b[k] + Σ_{u,v} w[k,u,v] · x[i+u−ph, j+v−pw]`. Per output row `i` and
//!   block of [`KB`] channels, the stride-1 taps kernel (`taps.rs`, shared with the shifted
//!   method) runs over the row's `ow` outputs with the taps `(u, v)` at `(i+u−ph)·row_stride + v`,
//!   from the bias; only the kernel rows whose input row lies inside the image are visited.
//! * weight and bias gradients: `dw[k,u,v] = Σ_{i,j} g[k,i,j] · x[i+u−ph, j+v−pw]` and
//!   `db[k] = Σ_{i,j} g[k,i,j]`, with the output columns in the [`L`] vector lanes: for a block
//!   of [`GK`] channels × [`GV`] kernel columns, `GK·GV` accumulators run over the whole
//!   gradient plane, each gradient vector serving `GV` taps and each image vector `GK`
//!   channels (see [`weight_grad_rows`]); per weight, [`L`] lane sums per chunk, added together
//!   once at its end.
//! * input gradient: `dx[r,s] = Σ_{k,u,v} g[k, r+ph−u, s+pw−v] · w[k,u,v]` (the full
//!   correlation of `g` with the flipped kernel), computed as the adjoint of the forward reads:
//!   `dx[i+u−ph, j+v−pw] += w[k,u,v] · g[k,i,j]` over the valid `i`, `j`. LeNet-5 never asks for
//!   it (conv1 is the first layer); it keeps the method complete.
//!
//! The backward kernels are plain Rust over fixed-size arrays, compiled twice — for AVX2 + FMA
//! (with fused multiply-adds; an AVX-512 CPU runs this build) and for the baseline target
//! (separate multiply and add) — and picked at run time like `gemm`'s, by [`Tier::active`]
//! (the forward kernel likewise); the `f32` weight gradient runs in vector registers
//! (`direct_simd.rs`, written over `F32s`, picked by [`plan`]): on AVX2 the same loops, with the
//! same bits as the generic fused code; on AVX-512 the image-row kernel at 16 lanes, each image
//! row loaded once per channel for every tap. Results may differ between these paths in the
//! last bits, never between runs or thread counts.

use super::fused::{epilogue_chunks, Epilogue, GradOut};
use super::taps::{self, block_bias, regroup_weights, BiasAt, Block, Taps};
use super::with_regrouped;
use super::{copy_row, valid_range, Geometry, Kept};
#[cfg(target_arch = "x86_64")]
use super::{direct_simd, direct_winograd};
use crate::parallel::sum;
use crate::{Scalar, Tier};
use ndarray::ArrayView1;
use rayon::prelude::*;

/// Output channels computed together in the forward pass: with 2 vectors of outputs, 12
/// accumulator registers (of AVX2's 16), and LeNet-5's conv1 is one block.
const KB: usize = 6;
/// Output channels per weight-gradient block.
pub(super) const GK: usize = 2;
/// Kernel columns per weight-gradient block: `GK × GV` = 10 accumulator vectors, plus `GK`
/// gradient vectors and one input vector, is 13 of AVX2's 16 registers; a 5-wide kernel row is
/// one block.
pub(super) const GV: usize = 5;
/// Output columns per weight-gradient step: one AVX2 vector of `f32`.
pub(super) const L: usize = 8;
/// Length of one zero-bordered row: what the weight gradient reads ([`grad_stride`] columns,
/// plus `kw` rounded up to [`GV`]), more than the `ow + kw − 1` that the forward pass reads.
pub(super) fn row_stride(g: &Geometry) -> usize {
    grad_stride(g) + g.kw.next_multiple_of(GV) - 1
}

/// Row length of one channel of the widened output gradient: `ow` rounded up to [`L`].
pub(super) fn grad_stride(g: &Geometry) -> usize {
    g.ow.next_multiple_of(L)
}

/// Scalars of the forward pass's weights regrouped by [`regroup_weights`].
pub(super) fn weights_len(g: &Geometry) -> usize {
    taps::weights_len::<KB>(g.k, g.kh * g.kw)
}

/// Scalars of per-chunk scratch of the backward pass: one image's zero-bordered rows
/// ([`image_len`], only when they are rebuilt from the input), then the lane sums of the weight
/// and bias gradients ([`lanes_len`]).
pub(super) fn backward_scratch<T: Scalar>(g: &Geometry, kept: Kept<'_, T>) -> usize {
    let image = match kept {
        Kept::Input(_) => image_len(g),
        Kept::Columns(_) | Kept::Images(_) => 0,
    };
    image + work_len::<T>(g) + lanes_len::<T>(g)
}

/// One image's zero-bordered rows ([`pad_image`]): `h + 2·ph` rows of [`row_stride`].
pub(super) fn image_len(g: &Geometry) -> usize {
    (g.h + 2 * g.p.padding.0) * row_stride(g)
}

/// [`L`] lane sums for each weight gradient `dw[k,u,v]` then each bias gradient `db[k]` (for
/// the Winograd kernel, each of its sums `M[k][α][v]` in place of the weights').
fn lanes_len<T: Scalar>(g: &Geometry) -> usize {
    match plan::<T>(g, g.tier) {
        #[cfg(target_arch = "x86_64")]
        WeightGradKernel::Winograd => direct_winograd::lanes_len(g),
        _ => (g.k * g.kh * g.kw + g.k) * L,
    }
}

/// Scalars of the weight-gradient kernel's per-image scratch: the Winograd kernel's
/// transformed rows, else none.
fn work_len<T: Scalar>(g: &Geometry) -> usize {
    match plan::<T>(g, g.tier) {
        #[cfg(target_arch = "x86_64")]
        WeightGradKernel::Winograd => direct_winograd::work_len(g),
        _ => 0,
    }
}

/// Copies one image `x` (`[h, w]`) into `img` ([`image_len`]): `ph` zero rows, then each row
/// of `x` as `pw` zeros, the row, zeros to [`row_stride`], then `ph` zero rows.
pub(super) fn pad_image<T: Scalar>(g: &Geometry, x: &[T], img: &mut [T]) {
    let (s, pw) = (row_stride(g), g.p.padding.1);
    let (above, rest) = img.split_at_mut(g.p.padding.0 * s);
    above.fill(T::zero());
    let (rows, below) = rest.split_at_mut(g.h * s);
    for (src, dst) in x.chunks_exact(g.w).zip(rows.chunks_exact_mut(s)) {
        dst[..pw].fill(T::zero());
        copy_row(&mut dst[pw..pw + g.w], src);
        dst[pw + g.w..].fill(T::zero());
    }
    below.fill(T::zero());
}

/// `a·b + c`, fused when the instruction set has it.
#[inline(always)]
fn madd<T: Scalar, const FMA: bool>(a: T, b: T, c: T) -> T {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The forward pass over contiguous `x` (`[n, 1, h, w]`), `w` (`[k, 1, kh, kw]`) and `y`
/// (`[n, k, oh, ow]`). `images` holds one slot per chunk, where image `i` of the chunk is
/// padded ([`pad_image`]) at `i·img_stride` (0: one buffer reused; [`image_len`]: every image
/// kept, for the backward pass). The weights are regrouped once ([`with_regrouped`]) for all
/// chunks. With `epi`, each image's output then goes through the fused ReLU and pool while in
/// cache.
pub(super) fn forward<T: Scalar>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<ArrayView1<'_, T>>,
    y: &mut [T],
    (images, img_stride): (&mut [T], usize),
    epi: Option<Epilogue<'_, T>>,
) {
    let (in_img, out_img, img) = (g.h * g.w, g.k * g.positions(), image_len(g));
    let slot_len = g.slot_len(img, img_stride);
    let top = g.p.padding.0 * row_stride(g);
    let isa = g.tier;
    let regroup = |wt: &mut [T]| regroup_weights::<T, KB>(w, g.kh * g.kw, wt);
    with_regrouped(weights_len(g), regroup, |wt| {
        y.par_chunks_mut(g.per_chunk * out_img)
            .zip(x.par_chunks(g.per_chunk * in_img))
            .zip(images.par_chunks_mut(slot_len))
            .zip(epilogue_chunks(g, epi))
            .with_min_len(g.min_chunks_per_task())
            .for_each(|(((y, x), slot), mut epi)| {
                let images = y.chunks_exact_mut(out_img).zip(x.chunks_exact(in_img));
                for (i, (y_n, x_n)) in images.enumerate() {
                    let image = &mut slot[i * img_stride..][..img];
                    pad_image(g, x_n, image);
                    forward_image(isa, g, &image[top..], wt, bias, y_n);
                    if let Some(epi) = epi.as_mut() {
                        epi.image(i, y_n);
                    }
                }
            });
    });
}

/// One image's output from its zero-bordered rows (from the first image row on) and the
/// weights regrouped by [`regroup_weights`], on `isa`: per output row `i` and block of [`KB`]
/// channels, one [`taps::forward`] run over the `ow` outputs, from the bias, with the taps
/// `(u, v)` of the kernel rows whose input row is inside the image, at `(i+u−ph)·row_stride + v`.
fn forward_image<T: Scalar>(
    isa: Tier,
    g: &Geometry,
    rows: &[T],
    wt: &[T],
    bias: Option<ArrayView1<'_, T>>,
    y: &mut [T],
) {
    let (s, ph, kk, plane) = (row_stride(g), g.p.padding.0, g.kh * g.kw, g.positions());
    for i in 0..g.oh {
        // kernel rows u with 0 ≤ i + u − ph < h
        let u0 = ph.saturating_sub(i).min(g.kh);
        let u1 = (g.h + ph).saturating_sub(i).min(g.kh).max(u0);
        let taps = Taps {
            planes: 1,
            plane: 0,
            rows: u1 - u0,
            row: s,
            cols: g.kw,
        };
        for (k0, wt) in (0..g.k).step_by(KB).zip(wt.chunks_exact(KB * kk)) {
            let blk = Block::<T, KB> {
                taps,
                src: &rows[(i + u0).saturating_sub(ph) * s..],
                wt: &wt[u0 * g.kw * KB..],
                bias: block_bias(bias, k0),
                at: BiasAt::First,
                n: g.ow,
            };
            let out = &mut y[k0 * plane + i * g.ow..];
            taps::forward(isa, &blk, (out, plane, KB.min(g.k - k0)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward. y[k,i,j] = b[k] + Σ_{u,v} w[k,u,v]·x[i+u−ph, j+v−pw] is linear in w, b and x:
//   dL/dw[k,u,v] = Σ_{n,i,j} g[n,k,i,j] · x[n, i+u−ph, j+v−pw]   (0 in the padding),
//   dL/db[k]     = Σ_{n,i,j} g[n,k,i,j],
//   dL/dx[n,r,c] = Σ_{k,u,v} g[n,k, r+ph−u, c+pw−v] · w[k,u,v]   (terms with i, j in range).
// ---------------------------------------------------------------------------------------------

/// One chunk of the backward pass: overwrites the chunk's partial weight and bias gradients
/// (`[k, kh·kw]` then `[k]`, after the [`backward_scratch`] in `slot`), summed over its images
/// in order, and, when `gi` is given, its images' input gradients. `gbuf` is where `go` builds
/// an image's output gradient when it must ([`GradOut::scratch_len`]).
pub(super) fn backward_chunk<T: Scalar>(
    g: &Geometry,
    kept: Kept<'_, T>,
    w: &[T],
    (go, gbuf): (GradOut<'_, T>, &mut [T]),
    chunk: usize,
    slot: &mut [T],
    mut gi: Option<&mut [T]>,
) {
    let in_img = g.h * g.w;
    let isa = g.tier;
    let (lanes_len, work_len) = (lanes_len::<T>(g), work_len::<T>(g));
    let (scratch, rest) = slot.split_at_mut(backward_scratch(g, kept) - lanes_len - work_len);
    let (work, rest) = rest.split_at_mut(work_len);
    let (lanes, part) = rest.split_at_mut(lanes_len);
    lanes.fill(T::zero());
    let first = chunk * g.per_chunk;
    let last = (first + g.per_chunk).min(g.n);
    for n in first..last {
        let g_n = go.image(g, n, gbuf);
        let img: &[T] = match kept {
            Kept::Input(x) => {
                pad_image(g, &x[n * in_img..][..in_img], scratch);
                scratch
            }
            Kept::Images(all) => &all[n * image_len(g)..][..image_len(g)],
            Kept::Columns(_) => unreachable!("the direct method never keeps columns"),
        };
        weight_grad_image(isa, g, img, g_n, (work, lanes));
        if let Some(gi) = gi.as_deref_mut() {
            input_grad_image(g, w, g_n, &mut gi[(n - first) * in_img..][..in_img]);
        }
    }
    // The chunk's dW then db: each one's L lanes added in a fixed order (Winograd's sums
    // transformed back first).
    #[cfg(target_arch = "x86_64")]
    if plan::<T>(g, isa) == WeightGradKernel::Winograd {
        let lanes = T::as_f32_slice(lanes).expect("the plan's f32");
        let part = T::as_f32_slice_mut(part).expect("the plan's f32");
        return direct_winograd::finish(g, lanes, part);
    }
    for (d, l) in part.iter_mut().zip(lanes.chunks_exact(L)) {
        *d = sum(l);
    }
}

/// Adds one image's weight and bias gradients, lane by lane, to `lanes` ([`lanes_len`]), by
/// the kernel [`plan`] picks for `isa`: `Σ_{i,j} g[k,i,j] · img[i+u][j+v]` for `dw[k,u,v]`
/// and `Σ_{i,j} g[k,i,j]` for `db[k]`, each of a weight's [`L`] lanes summing a fixed subset
/// of the terms in a fixed order (lane `l`: the columns `j ≡ l mod L`, at 16 lanes folded from
/// `j ≡ l` and `j ≡ l + 8 mod 16`). Both fused AVX2 paths (the `f32` vector kernel, the
/// generic code compiled for AVX2) give the same bits.
fn weight_grad_image<T: Scalar>(
    isa: Tier,
    g: &Geometry,
    img: &[T],
    g_n: &[T],
    (work, lanes): (&mut [T], &mut [T]),
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Scalar>(g: &Geometry, img: &[T], g_n: &[T], lanes: &mut [T]) {
            if let (Some(img), Some(g_n)) = (T::as_f32_slice(img), T::as_f32_slice(g_n)) {
                let lanes = T::as_f32_slice_mut(lanes).expect("f32 like the image");
                return direct_simd::weight_grad_rows(g, img, g_n, lanes);
            }
            weight_grad_rows::<T, true>(g, img, g_n, lanes)
        }
        match plan::<T>(g, isa) {
            WeightGradKernel::Winograd => {
                let img = T::as_f32_slice(img).expect("the plan's f32");
                let g_n = T::as_f32_slice(g_n).expect("the plan's f32");
                let work = T::as_f32_slice_mut(work).expect("the plan's f32");
                let lanes = T::as_f32_slice_mut(lanes).expect("the plan's f32");
                return direct_winograd::weight_grad_image(g, img, g_n, work, lanes);
            }
            WeightGradKernel::Avx512 => {
                let img = T::as_f32_slice(img).expect("the plan's f32");
                let g_n = T::as_f32_slice(g_n).expect("the plan's f32");
                let lanes = T::as_f32_slice_mut(lanes).expect("the plan's f32");
                return direct_simd::weight_grad_image_rows(g, img, g_n, lanes);
            }
            // SAFETY: `isa` is a tier the CPU has (the caller's), and the AVX2 build needs no
            // more than it (the plan's kernel needs no more than the tier).
            WeightGradKernel::Avx2 => return unsafe { avx2(g, img, g_n, lanes) },
            WeightGradKernel::Baseline => {}
        }
    }
    let _ = (isa, work);
    weight_grad_rows::<T, false>(g, img, g_n, lanes)
}

/// The kernels of [`weight_grad_image`] (elsewhere than on x86-64 only the tests ask for them:
/// every tier is portable there).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WeightGradKernel {
    /// The generic code compiled for the baseline target (separate multiply and add).
    Baseline,
    /// `f32`: the `GK × GV` kernel at 8 lanes (`direct_simd::weight_grad_rows`); other
    /// scalars: the generic code compiled for AVX2 + FMA. The same bits.
    Avx2,
    /// `f32`: the image-row kernel at 16 lanes (`direct_simd::weight_grad_image_rows`).
    Avx512,
    /// `f32`, 5 × 5 kernels with an even number of output rows (conv1): Winograd's F(2, 5)
    /// transposed down the rows at 16 lanes (`direct_winograd.rs`).
    Winograd,
}

impl crate::tier::Needs for WeightGradKernel {
    fn needs(&self) -> Tier {
        match self {
            WeightGradKernel::Baseline => Tier::Portable,
            WeightGradKernel::Avx2 => Tier::Avx2,
            WeightGradKernel::Avx512 | WeightGradKernel::Winograd => Tier::Avx512,
        }
    }
}

/// The weight-gradient kernel for `T` on `tier` and `g`'s shapes: for `f32` on AVX-512,
/// Winograd's kernel where it fits (conv1), else the 16-lane image-row kernel (each measured
/// faster there: docs/performance.md); the AVX2 build from the AVX2 tier up otherwise.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]
pub(super) fn plan<T: Scalar>(g: &Geometry, tier: Tier) -> WeightGradKernel {
    let f32s = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
    match tier {
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 if f32s && direct_winograd::fits(g) => WeightGradKernel::Winograd,
        Tier::Avx512 if f32s => WeightGradKernel::Avx512,
        Tier::Avx512 | Tier::Avx2 => WeightGradKernel::Avx2,
        Tier::Portable => WeightGradKernel::Baseline,
    }
}

/// The weight and bias gradients of one image `g_n` (`[k, oh, ow]`), from `img`
/// ([`pad_image`]). For each block of [`GK`] channels and [`GV`] kernel columns `v0..v0+GV` of
/// kernel row `u`, `GK × GV` accumulators of [`L`] lanes run over every output row `i` and
/// column block `j0`: `acc[b][t] += g[k0+b][i][j0..j0+L] · img[i+u][j0+v0+t..][..L]`, so each
/// gradient vector loaded serves `GV` taps and each input vector `GK` channels (the last column
/// block of a row reads zeros past `ow`). On the first pass over a channel block, `GK` more
/// accumulators sum the gradient itself (the bias gradient). Then all are added to `lanes`.
/// A short last block repeats channel `k − 1` and reads past the kernel's columns (into the
/// zero border); those sums are dropped.
#[inline(always)]
fn weight_grad_rows<T: Scalar, const FMA: bool>(
    g: &Geometry,
    img: &[T],
    g_n: &[T],
    lanes: &mut [T],
) {
    let (s, plane, xlen) = (row_stride(g), g.positions(), grad_stride(g) + GV - 1);
    for k0 in (0..g.k).step_by(GK) {
        let ch: [usize; GK] = std::array::from_fn(|b| (k0 + b).min(g.k - 1));
        for u in 0..g.kh {
            for v0 in (0..g.kw).step_by(GV) {
                let mut acc = [[[T::zero(); L]; GV]; GK];
                let mut bias = [[T::zero(); L]; GK];
                for i in 0..g.oh {
                    let xrow = &img[(i + u) * s + v0..][..xlen];
                    for j0 in (0..g.ow).step_by(L) {
                        let xw = &xrow[j0..][..L + GV - 1];
                        for b in 0..GK {
                            let src = &g_n[ch[b] * plane + i * g.ow + j0..][..L.min(g.ow - j0)];
                            let mut gv = [T::zero(); L];
                            gv[..src.len()].copy_from_slice(src);
                            for (t, a) in acc[b].iter_mut().enumerate() {
                                for (l, a) in a.iter_mut().enumerate() {
                                    *a = madd::<T, FMA>(gv[l], xw[t + l], *a);
                                }
                            }
                            for (d, &gl) in bias[b].iter_mut().zip(&gv) {
                                *d = *d + gl;
                            }
                        }
                    }
                }
                let first = u == 0 && v0 == 0;
                add_lanes(g, (k0, u, v0), &acc, first.then_some(&bias), lanes);
            }
        }
    }
}

/// `lanes[k0+b][u][v0+t] += acc[b][t]` for the real channels `k0 + b < k` and kernel columns
/// `v0 + t < kw`, and, when given, `lanes[db k0+b] += bias[b]`.
#[inline(always)]
pub(super) fn add_lanes<T: Scalar, const BK: usize>(
    g: &Geometry,
    (k0, u, v0): (usize, usize, usize),
    acc: &[[[T; L]; GV]; BK],
    bias: Option<&[[T; L]; BK]>,
    lanes: &mut [T],
) {
    let add = |lanes: &mut [T], at: usize, a: &[T; L]| {
        for (d, &a) in lanes[at * L..][..L].iter_mut().zip(a) {
            *d = *d + a;
        }
    };
    for (b, acc) in acc.iter().enumerate().take(g.k - k0) {
        for (t, a) in acc.iter().enumerate().take(g.kw - v0) {
            add(lanes, ((k0 + b) * g.kh + u) * g.kw + v0 + t, a);
        }
        if let Some(bias) = bias {
            add(lanes, g.k * g.kh * g.kw + k0 + b, &bias[b]);
        }
    }
}

/// Overwrites one image's input gradient `dx` (`[h, w]`) with
/// `Σ_{k,u,v} w[k,u,v] · g[k, r+ph−u, c+pw−v]`, as the scatter
/// `dx[i+u−ph, j+v−pw] += w[k,u,v] · g[k,i,j]` over the `(i, j)` whose input is inside.
fn input_grad_image<T: Scalar>(g: &Geometry, w: &[T], g_n: &[T], dx: &mut [T]) {
    let (ph, pw) = g.p.padding;
    let (kk, plane) = (g.kh * g.kw, g.positions());
    dx.fill(T::zero());
    for (k, g_k) in g_n.chunks_exact(plane).enumerate() {
        for u in 0..g.kh {
            let (i0, i1) = valid_range(g.oh, 1, u, ph, g.h);
            for v in 0..g.kw {
                let (j0, j1) = valid_range(g.ow, 1, v, pw, g.w);
                if j0 == j1 {
                    continue; // the whole column range reads padding
                }
                let wv = w[k * kk + u * g.kw + v];
                for i in i0..i1 {
                    let src = &g_k[i * g.ow + j0..i * g.ow + j1];
                    let dst = &mut dx[(i + u - ph) * g.w + j0 + v - pw..][..j1 - j0];
                    for (d, &gv) in dst.iter_mut().zip(src) {
                        *d = *d + wv * gv;
                    }
                }
            }
        }
    }
}

/// The generic weight gradient with fused multiply-adds, on any CPU: what the `f32` AVX2
/// intrinsics must equal bit for bit.
#[cfg(all(test, target_arch = "x86_64"))]
pub(super) fn weight_grad_rows_fma(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    weight_grad_rows::<f32, true>(g, img, g_n, lanes)
}

#[cfg(test)]
mod tests {
    /// On every tier, whatever this machine has, for conv1 and two shapes Winograd's kernel
    /// does not fit (an odd number of output rows, a 3 × 7 kernel): the weight-gradient kernel
    /// needs no more than the tier; `f32` on AVX-512 runs Winograd's kernel where it fits and
    /// the 16-lane image-row kernel elsewhere (each measured faster there); other scalars keep
    /// the AVX2 build.
    #[test]
    fn every_tier_runs_what_it_has_and_nothing_slower() {
        use crate::tier::{check_plan, on_x86};
        use WeightGradKernel::{Avx2, Avx512, Baseline, Winograd};
        let at = |(h, kh, kw): (usize, usize, usize)| {
            let p = Conv2dParams {
                stride: (1, 1),
                padding: (kh / 2, kw / 2),
            };
            Geometry::new("t", (32, 1, h, 28), (6, 1, kh, kw), p)
        };
        let (conv1, odd, wide) = (at((28, 5, 5)), at((27, 5, 5)), at((28, 3, 7)));
        for (g, avx512) in [
            (&conv1, on_x86(Winograd, Avx512)),
            (&odd, Avx512),
            (&wide, Avx512),
        ] {
            let what = format!("direct weight gradient, {}×{} output", g.oh, g.ow);
            check_plan(&what, |t| plan::<f32>(g, t), &[Avx2, Avx512, Winograd]);
            check_plan(&what, |t| plan::<f64>(g, t), &[Avx2]);
            assert_eq!(plan::<f32>(g, Tier::Avx512), avx512, "{what}");
            assert_eq!(plan::<f32>(g, Tier::Avx2), Avx2, "{what}");
            assert_eq!(plan::<f64>(g, Tier::Avx512), Avx2, "{what}");
            assert_eq!(plan::<f32>(g, Tier::Portable), Baseline, "{what}");
        }
    }

    use super::super::taps::same_bits;
    use super::super::tests::pseudo;
    use super::*;
    use crate::Conv2dParams;

    /// `y[k,i,j]` as one chain from the bias over the kernel rows inside the image and every
    /// kernel column (zeros in the padding), `u` then `v` ascending: fused (`FMA`) or not.
    fn chain(g: &Geometry, x: &[f32], w: &[f32], b: &[f32], fma: bool) -> Vec<f32> {
        let (ph, pw) = g.p.padding;
        let mut y = Vec::new();
        for k in 0..g.k {
            for i in 0..g.oh {
                for j in 0..g.ow {
                    let mut acc = b[k];
                    for u in (0..g.kh).filter(|&u| (ph..g.h + ph).contains(&(i + u))) {
                        for v in 0..g.kw {
                            let col = (j + v).checked_sub(pw).filter(|&c| c < g.w);
                            let xv = col.map_or(0.0, |c| x[(i + u - ph) * g.w + c]);
                            let wv = w[(k * g.kh + u) * g.kw + v];
                            acc = if fma {
                                wv.mul_add(xv, acc)
                            } else {
                                wv * xv + acc
                            };
                        }
                    }
                    y.push(acc);
                }
            }
        }
        y
    }

    /// The forward pass gives the bits of the chain above (fused on AVX2, not on the portable
    /// path): LeNet-5's conv1, a short channel block, rows that end mid-vector and output rows
    /// whose kernel reads only padding.
    #[test]
    fn forward_is_one_chain_per_output_from_the_bias() {
        for isa in Tier::available() {
            for &(k, h, w, kh, kw, ph, pw) in &[
                (6, 28, 28, 5, 5, 2, 2),
                (7, 9, 11, 3, 7, 1, 3),
                (2, 4, 19, 1, 2, 3, 0),
            ] {
                let p = Conv2dParams {
                    stride: (1, 1),
                    padding: (ph, pw),
                };
                let g = Geometry::new("t", (1, 1, h, w), (k, 1, kh, kw), p);
                let f32s =
                    |a: ndarray::Array4<f64>| a.mapv(|v| v as f32).into_raw_vec_and_offset().0;
                let (x, wts) = (
                    f32s(pseudo((1, 1, h, w), 3)),
                    f32s(pseudo((k, 1, kh, kw), 4)),
                );
                let b: Vec<f32> = (0..k).map(|i| i as f32 * 0.375 - 1.0).collect();
                let mut img = vec![f32::NAN; image_len(&g)];
                pad_image(&g, &x, &mut img);
                let mut wt = vec![f32::NAN; weights_len(&g)];
                regroup_weights::<f32, KB>(&wts, kh * kw, &mut wt);
                let mut y = vec![f32::NAN; k * g.positions()];
                let rows = &img[ph * row_stride(&g)..];
                forward_image(isa, &g, rows, &wt, Some(ArrayView1::from(&b)), &mut y);
                let want = chain(&g, &x, &wts, &b, isa != Tier::Portable);
                same_bits(
                    &y,
                    &want,
                    &format!("{isa:?}, k {k} {h}×{w} {kh}×{kw} {p:?}"),
                );
            }
        }
    }
}
