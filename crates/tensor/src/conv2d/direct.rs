//! Direct convolution for one input channel and stride 1 (LeNet-5's conv1: 1 → 6 channels,
//! 5×5, padding 2, 28×28), forward and backward, with no im2col columns in memory.
//!
//! Each image is first copied into `h` zero-bordered rows of [`row_stride`] scalars (`pw`
//! zeros, the row, zeros), a few KB reused for every image of a chunk: then a kernel column
//! `v` of output columns `j0..j0+L` reads the contiguous `row[j0+v .. j0+v+L]`, with no border
//! cases. Rows above and below the image are not stored: the loops run over the kernel rows
//! (or output rows) whose input row lies inside it.
//!
//! * forward: `y[k,i,j] = b[k] + Σ_{u,v} w[k,u,v] · x[i+u−ph, j+v−pw]`. Per output row `i`, a
//!   block of [`KB`] channels × `FW` columns stays in registers for the whole `(u, v)` sum:
//!   every input vector loaded is used `KB` times, every weight is broadcast over `FW` lanes.
//! * weight gradient: `dw[k,u,v] = Σ_{i,j} g[k,i,j] · x[i+u−ph, j+v−pw]`. The image is laid
//!   out as `h + 2·ph` zero-bordered rows (zero rows above and below) and the gradient with the
//!   same row stride (zeros past `ow`): then, with `q = i·stride + j`, the sum is one long dot
//!   product `Σ_q g[k][q] · x[q + u·stride + v]` over contiguous memory, the padding columns
//!   of `g` contributing exactly 0. For [`GKB`] channels and one kernel position `(u, v)`,
//!   [`CB`]-lane partial sums stay in registers along `q`, then are added to per-weight lane
//!   sums; the lanes are added together once per chunk.
//! * input gradient: `dx[r,s] = Σ_{k,u,v} g[k, r+ph−u, s+pw−v] · w[k,u,v]` (the full
//!   correlation of `g` with the flipped kernel), computed as the adjoint of the forward reads:
//!   `dx[i+u−ph, j+v−pw] += w[k,u,v] · g[k,i,j]` over the valid `i`, `j`. LeNet-5 never asks for
//!   it (conv1 is the first layer); it keeps the method complete.
//!
//! The kernels are plain Rust over fixed-size arrays, compiled three times — for AVX-512, for
//! AVX2 + FMA (with fused multiply-adds) and for the baseline target (separate multiply and
//! add) — and picked at run time like `gemm`'s, by [`GemmKernel::active`]. Results may differ
//! between these paths in the last bits, never between runs or thread counts.

use super::{copy_row, valid_range, Geometry};
use crate::parallel::sum;
use crate::{GemmKernel, Scalar};
use ndarray::ArrayView1;
use rayon::prelude::*;

/// Output channels computed together in the forward pass: with `FW` = 2 vectors of columns,
/// 12 accumulator registers (of AVX2's 16, AVX-512's 32), and LeNet-5's conv1 is one block.
const KB: usize = 6;
/// Output channels per weight-gradient block: `GKB ×` [`CB`] lanes are 12 AVX2 registers.
const GKB: usize = 3;
/// Output columns per weight-gradient block (4 AVX2 vectors, 2 AVX-512 ones): whole vectors
/// of contiguous, non-overlapping columns, and LeNet-5's 28 columns are one block.
const CB: usize = 32;
/// Widest forward column block (AVX-512: 2 × 16 lanes); the rows are padded for it.
const MAX_FW: usize = 32;

/// Length of one zero-bordered row: every column block of `ow` (rounded up to [`MAX_FW`]) plus
/// the `kw − 1` columns its last window reaches past it.
fn row_stride(g: &Geometry) -> usize {
    g.ow.next_multiple_of(MAX_FW.max(CB)) + g.kw - 1
}

/// Scalars of per-chunk scratch: one image's zero-bordered rows, then the weights regrouped
/// for the forward pass (see [`regroup_weights`]).
pub(super) fn pad_len(g: &Geometry) -> usize {
    g.h * row_stride(g) + g.k.next_multiple_of(KB) * g.kh * g.kw
}

/// Scalars of per-chunk scratch of the backward pass: one image with zero rows above and below
/// ([`image_len`]), one image's gradient in rows of [`row_stride`] ([`grad_len`] per channel),
/// then the lane sums of the weight gradient (`[k rounded up to GKB, kh, kw, CB]`).
pub(super) fn backward_scratch(g: &Geometry) -> usize {
    image_len(g) + g.k * grad_len(g) + lanes_len(g)
}

/// `h + 2·ph` rows of [`row_stride`], plus what the last dot product reads past them.
fn image_len(g: &Geometry) -> usize {
    (g.h + 2 * g.p.padding.0) * row_stride(g) + g.kw + CB
}

/// One channel of the gradient in rows of [`row_stride`], rounded up to whole [`CB`] blocks.
fn grad_len(g: &Geometry) -> usize {
    (g.oh * row_stride(g)).next_multiple_of(CB)
}

fn lanes_len(g: &Geometry) -> usize {
    g.k.next_multiple_of(GKB) * g.kh * g.kw * CB
}

/// Copies one image's gradient `g_n` (`[k, oh, ow]`) into `gw`: per channel, `oh` rows of
/// [`row_stride`] (zeros past `ow`), zeros to [`grad_len`].
fn widen_grad<T: Scalar>(g: &Geometry, g_n: &[T], gw: &mut [T]) {
    let s = row_stride(g);
    for (src, dst) in g_n
        .chunks_exact(g.oh * g.ow)
        .zip(gw.chunks_exact_mut(grad_len(g)))
    {
        for (src, dst) in src.chunks_exact(g.ow).zip(dst.chunks_mut(s)) {
            dst[..g.ow].copy_from_slice(src);
            dst[g.ow..].fill(T::zero());
        }
        dst[g.oh * s..].fill(T::zero());
    }
}

/// Copies one image into `img` ([`image_len`]): `ph` zero rows, the zero-bordered rows of
/// [`pad_rows`], `ph` zero rows and the zero tail.
fn pad_image<T: Scalar>(g: &Geometry, x: &[T], img: &mut [T]) {
    let top = g.p.padding.0 * row_stride(g);
    let (above, rest) = img.split_at_mut(top);
    above.fill(T::zero());
    let (rows, below) = rest.split_at_mut(g.h * row_stride(g));
    pad_rows(g, x, rows);
    below.fill(T::zero());
}

/// Writes `w` (`[k, kh, kw]`) as `[k/KB, kh, kw, KB]` into `wt`: the [`KB`] weights that one
/// input vector meets are adjacent, read with no index arithmetic in the inner loop. A short
/// last block repeats channel `k − 1` (computed, not stored).
fn regroup_weights<T: Scalar>(g: &Geometry, w: &[T], wt: &mut [T]) {
    let kk = g.kh * g.kw;
    for (k0, block) in (0..g.k).step_by(KB).zip(wt.chunks_exact_mut(KB * kk)) {
        for (uv, lanes) in block.chunks_exact_mut(KB).enumerate() {
            for (b, l) in lanes.iter_mut().enumerate() {
                *l = w[(k0 + b).min(g.k - 1) * kk + uv];
            }
        }
    }
}

/// Copies image `x` (`[h, w]`) into `rows`: row `r` is `pw` zeros, `x[r]`, then zeros.
fn pad_rows<T: Scalar>(g: &Geometry, x: &[T], rows: &mut [T]) {
    let pw = g.p.padding.1;
    for (src, dst) in x
        .chunks_exact(g.w)
        .zip(rows.chunks_exact_mut(row_stride(g)))
    {
        dst[..pw].fill(T::zero());
        copy_row(&mut dst[pw..pw + g.w], src);
        dst[pw + g.w..].fill(T::zero());
    }
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
/// (`[n, k, oh, ow]`), with one [`pad_len`] scratch per chunk in `pads`.
pub(super) fn forward<T: Scalar>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<ArrayView1<'_, T>>,
    y: &mut [T],
    pads: &mut [T],
) {
    let (in_img, out_img) = (g.h * g.w, g.k * g.positions());
    let isa = GemmKernel::active();
    y.par_chunks_mut(g.per_chunk * out_img)
        .zip(x.par_chunks(g.per_chunk * in_img))
        .zip(pads.par_chunks_mut(pad_len(g)))
        .with_min_len(g.min_chunks_per_task())
        .for_each(|((y, x), slot)| {
            let (rows, wt) = slot.split_at_mut(g.h * row_stride(g));
            regroup_weights(g, w, wt);
            for (y_n, x_n) in y.chunks_exact_mut(out_img).zip(x.chunks_exact(in_img)) {
                pad_rows(g, x_n, rows);
                forward_image(isa, g, rows, wt, bias, y_n);
            }
        });
}

/// One image's output from its zero-bordered rows and regrouped weights, on `isa`.
fn forward_image<T: Scalar>(
    isa: GemmKernel,
    g: &Geometry,
    rows: &[T],
    w: &[T],
    bias: Option<ArrayView1<'_, T>>,
    y: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Scalar>(
            g: &Geometry,
            r: &[T],
            w: &[T],
            b: Option<ArrayView1<'_, T>>,
            y: &mut [T],
        ) {
            forward_rows::<T, 32, true>(g, r, w, b, y)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Scalar>(
            g: &Geometry,
            r: &[T],
            w: &[T],
            b: Option<ArrayView1<'_, T>>,
            y: &mut [T],
        ) {
            forward_rows::<T, 16, true>(g, r, w, b, y)
        }
        match isa {
            // SAFETY: `GemmKernel::active` only returns a path the CPU supports (run-time check).
            GemmKernel::Avx512 => return unsafe { avx512(g, rows, w, bias, y) },
            // SAFETY: as above; the AVX2 path requires AVX2 and FMA.
            GemmKernel::Avx2 => return unsafe { avx2(g, rows, w, bias, y) },
            GemmKernel::Portable => {}
        }
    }
    let _ = isa;
    forward_rows::<T, 8, false>(g, rows, w, bias, y)
}

/// `y[k,i,j] = b[k] + Σ_{u,v} w[k,u,v] · rows[i+u−ph][j+v]` for one image, in blocks of [`KB`]
/// channels × `FW` columns held in registers for the whole `(u, v)` sum. Loop order: output
/// row, channel block, column block, then kernel row and column (only the kernel rows whose
/// input row is inside the image). `wt` holds the weights as [`regroup_weights`] wrote them.
#[inline(always)]
fn forward_rows<T: Scalar, const FW: usize, const FMA: bool>(
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
        for (k0, wt) in (0..g.k).step_by(KB).zip(wt.chunks_exact(KB * kk)) {
            let b0: [T; KB] =
                std::array::from_fn(|b| bias.map_or(T::zero(), |bv| bv[(k0 + b).min(g.k - 1)]));
            for j0 in (0..g.ow).step_by(FW) {
                let mut acc: [[T; FW]; KB] = std::array::from_fn(|b| [b0[b]; FW]);
                for u in u0..u1 {
                    let row = &rows[(i + u - ph) * s + j0..][..FW + g.kw - 1];
                    let w_u = &wt[u * g.kw * KB..][..g.kw * KB];
                    // kw windows of FW columns, each with its KB weights: no index checks here
                    for (xs, wv) in row.windows(FW).zip(w_u.chunks_exact(KB)) {
                        let xs: &[T; FW] = xs.try_into().expect("FW scalars");
                        for (a, &wv) in acc.iter_mut().zip(wv) {
                            for (a, &x) in a.iter_mut().zip(xs) {
                                *a = madd::<T, FMA>(wv, x, *a);
                            }
                        }
                    }
                }
                let n = FW.min(g.ow - j0);
                for (b, a) in acc.iter().enumerate().take(g.k - k0) {
                    copy_row(&mut y[(k0 + b) * plane + i * g.ow + j0..][..n], &a[..n]);
                }
            }
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
/// (`[k, kh·kw]` then `[k]`, after the [`pad_len`] scratch in `slot`), summed over its images
/// in order, and, when `gi` is given, its images' input gradients.
pub(super) fn backward_chunk<T: Scalar>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    go: &[T],
    chunk: usize,
    slot: &mut [T],
    mut gi: Option<&mut [T]>,
) {
    let (in_img, plane) = (g.h * g.w, g.positions());
    let out_img = g.k * plane;
    let isa = GemmKernel::active();
    let (img, rest) = slot.split_at_mut(image_len(g));
    let (gw, rest) = rest.split_at_mut(g.k * grad_len(g));
    let (lanes, part) = rest.split_at_mut(lanes_len(g));
    let (dw, db) = part.split_at_mut(g.k * g.kh * g.kw);
    lanes.fill(T::zero());
    db.fill(T::zero());
    let first = chunk * g.per_chunk;
    let last = (first + g.per_chunk).min(g.n);
    for n in first..last {
        let g_n = &go[n * out_img..][..out_img];
        pad_image(g, &x[n * in_img..][..in_img], img);
        widen_grad(g, g_n, gw);
        weight_grad_image(isa, g, img, gw, lanes);
        for (b, g_k) in db.iter_mut().zip(g_n.chunks_exact(plane)) {
            *b = *b + sum(g_k);
        }
        if let Some(gi) = gi.as_deref_mut() {
            input_grad_image(g, w, g_n, &mut gi[(n - first) * in_img..][..in_img]);
        }
    }
    // The chunk's dW: each weight's lanes added in a fixed order (unused lanes hold zeros).
    for (d, l) in dw.iter_mut().zip(lanes.chunks_exact(CB)) {
        *d = sum(l);
    }
}

/// Adds one image's `Σ_{i,j} g[k,i,j] · rows[i+u−ph][j+v]`, lane by lane, to the lane sums
/// `lanes` of `dw[k,u,v]` (see [`backward_scratch`]), on `isa`.
fn weight_grad_image<T: Scalar>(
    isa: GemmKernel,
    g: &Geometry,
    img: &[T],
    gw: &[T],
    lanes: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Scalar>(g: &Geometry, img: &[T], gw: &[T], lanes: &mut [T]) {
            weight_grad_rows::<T, true>(g, img, gw, lanes)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Scalar>(g: &Geometry, img: &[T], gw: &[T], lanes: &mut [T]) {
            weight_grad_rows::<T, true>(g, img, gw, lanes)
        }
        match isa {
            // SAFETY: `GemmKernel::active` only returns a path the CPU supports (run-time check).
            GemmKernel::Avx512 => return unsafe { avx512(g, img, gw, lanes) },
            // SAFETY: as above; the AVX2 path requires AVX2 and FMA.
            GemmKernel::Avx2 => return unsafe { avx2(g, img, gw, lanes) },
            GemmKernel::Portable => {}
        }
    }
    let _ = isa;
    weight_grad_rows::<T, false>(g, img, gw, lanes)
}

/// The weight gradient of one image, from `img` ([`pad_image`]) and `gw` ([`widen_grad`]):
/// for each block of [`GKB`] channels and kernel position `(u, v)`, the [`CB`]-lane sums of
/// `gw[k][q] · img[q + u·stride + v]` along the whole image stay in registers, then are added
/// to `lanes`. Each step reads whole vectors of contiguous memory.
#[inline(always)]
fn weight_grad_rows<T: Scalar, const FMA: bool>(
    g: &Geometry,
    img: &[T],
    gw: &[T],
    lanes: &mut [T],
) {
    let (s, glen) = (row_stride(g), grad_len(g));
    for k0 in (0..g.k).step_by(GKB) {
        // A short block repeats channel k − 1 (computed, and added to spare lane sums).
        let ch: [usize; GKB] = std::array::from_fn(|b| (k0 + b).min(g.k - 1));
        for u in 0..g.kh {
            for v in 0..g.kw {
                let mut acc = [[T::zero(); CB]; GKB];
                for q0 in (0..glen).step_by(CB) {
                    let xs = img[u * s + v + q0..].first_chunk::<CB>();
                    let xs = xs.expect("the image reaches CB past every block");
                    for (a, &c) in acc.iter_mut().zip(&ch) {
                        let gv = gw[c * glen + q0..].first_chunk::<CB>();
                        let gv = gv.expect("the gradient is whole blocks");
                        for ((a, &gl), &xl) in a.iter_mut().zip(gv).zip(xs) {
                            *a = madd::<T, FMA>(gl, xl, *a);
                        }
                    }
                }
                for (b, a) in acc.iter().enumerate() {
                    let at = (((k0 + b) * g.kh + u) * g.kw + v) * CB;
                    for (d, &a) in lanes[at..][..CB].iter_mut().zip(a) {
                        *d = *d + a;
                    }
                }
            }
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
