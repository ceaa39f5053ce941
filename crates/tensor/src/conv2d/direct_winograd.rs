//! conv1's weight gradient on the AVX-512 tier by Winograd's F(2, 5) transposed down the rows
//! (the identity behind conv2's weight gradient in `winograd.rs`), with the image's columns in
//! the 16 lanes as the image-row kernel (`direct_simd.rs`) has them. For a channel `k`, a tile
//! row `t` (the gradient rows `2t`, `2t + 1`) and a kernel column `v`:
//!
//! ```text
//! V[t][α][col]  = Σ_l Bᵀ[α][l] · img[2t + l][col]          (per image, every channel's)
//! Ĝ[k][t][α][j] = (A·g)[α] of g[k][2t][j], g[k][2t + 1][j]  (g0, g0 + g1, g0 − g1, g0 ± 2·g1, g1)
//! M[k][α][v]    = Σ_{t,j} Ĝ[k][t][α][j] · V[t][α][j + v]    (6 multiply-adds per tile and tap
//!                                                           column, where the direct sum makes 10)
//! dW[k][u][v]   = Σ_α G[α][u] · M[k][α][v]                  (once per chunk, [`finish`])
//! ```
//!
//! `M`'s lane sums are kept as the image-row kernel keeps `dW`'s (16 lanes folded to [`L`], in a
//! fixed order), and the bias gradient is that kernel's ([`bias_sums`]). Each pass holds one
//! row `α` for 3 channels: 15 sums, the 5 shifted `V` vectors of a tile row (loaded once for
//! the 3 channels) and the gradient pair. The results differ from the direct sums' in the last
//! bits; the tests bound the error by the rounding analysis in their header.

#![cfg(target_arch = "x86_64")]

use super::direct::{row_stride, L};
use super::direct_simd::bias_sums;
use super::winograd::{minus, transform_block, A, G, R};
use super::Geometry;
use crate::simd::F32s;
use crate::Tier;
use std::arch::x86_64::__m512;

/// Channels per pass: 3 × [`R`] sums, 5 `V` vectors and 3 gradient vectors of AVX-512's 32.
const KB: usize = 3;
/// The vector width (AVX-512's 16 lanes).
const W: usize = 16;

/// Whether the kernel runs `g`: a 5 × 5 stride-1 kernel over one input channel and an even
/// number of output rows. (The zero-bordered image then has the `oh + 4` rows the tile rows
/// read, and its rows, [`row_stride`] long, the `ow + 4` columns.)
pub(super) fn fits(g: &Geometry) -> bool {
    (g.kh, g.kw) == (R, R) && g.c == 1 && g.p.stride == (1, 1) && g.oh.is_multiple_of(2)
}

/// Width of a transformed row: the `ow + 4` columns a tile row's sums read, in whole vectors.
fn v_width(g: &Geometry) -> usize {
    (g.ow + R - 1).next_multiple_of(W)
}

/// Scalars of one image's transformed rows (the kernel's scratch).
pub(super) fn work_len(g: &Geometry) -> usize {
    g.oh / 2 * A * v_width(g)
}

/// [`L`] lane sums for each `M[k][α][v]`, then each bias gradient `db[k]`.
pub(super) fn lanes_len(g: &Geometry) -> usize {
    (g.k * A * R + g.k) * L
}

/// Adds one image's `M` and bias lane sums to `lanes` ([`lanes_len`]), from `img` (the image's
/// zero-bordered rows, [`row_stride`] apart) and `g_n` (`[k, oh, ow]`); `work` is scratch
/// ([`work_len`]).
///
/// # Panics
/// Without AVX-512F, if the shapes do not [`fit`](fits), or if a buffer is shorter than they
/// need.
pub(super) fn weight_grad_image(
    g: &Geometry,
    img: &[f32],
    g_n: &[f32],
    work: &mut [f32],
    lanes: &mut [f32],
) {
    assert!(Tier::Avx512.is_supported(), "the kernel needs AVX-512F");
    assert!(fits(g), "shapes the kernel runs");
    assert!(g_n.len() >= g.k * g.positions(), "output gradient length");
    assert!(img.len() >= (g.oh + R - 1) * row_stride(g), "image rows");
    assert!(work.len() >= work_len(g), "work buffer");
    assert!(lanes.len() >= lanes_len(g), "lane sums");
    // SAFETY: AVX-512F (with AVX2 + FMA) is available, and the bounds were asserted above.
    unsafe { image_16(g, img, g_n, work, lanes) }
}

/// # Safety
/// AVX-512F; the bounds asserted by [`weight_grad_image`].
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn image_16(g: &Geometry, img: &[f32], g_n: &[f32], work: &mut [f32], lanes: &mut [f32]) {
    // SAFETY (every call): the caller's contract.
    unsafe {
        transform_rows::<__m512>(g, img, work);
        pass::<__m512, 0>(g, g_n, work, lanes);
        pass::<__m512, 1>(g, g_n, work, lanes);
        pass::<__m512, 2>(g, g_n, work, lanes);
        pass::<__m512, 3>(g, g_n, work, lanes);
        pass::<__m512, 4>(g, g_n, work, lanes);
        pass::<__m512, 5>(g, g_n, work, lanes);
        for k in 0..g.k {
            let g_k = g_n[k * g.positions()..].as_ptr();
            let bias = bias_sums::<__m512>(g_k, g.oh, g.ow);
            bias.add_folded_to_8(lanes[(g.k * A * R + k) * L..][..L].as_mut_ptr());
        }
    }
}

/// `V[t][α][col] = Σ_l Bᵀ[α][l] · img[2t + l][col]` for every tile row and column, a vector at
/// a time (the image's columns past `ow + 4` read as zeros, under a mask).
///
/// # Safety
/// The CPU has `V`'s tier; the bounds asserted by [`weight_grad_image`].
#[inline(always)]
unsafe fn transform_rows<V: F32s>(g: &Geometry, img: &[f32], work: &mut [f32]) {
    let (s, vw, cols) = (row_stride(g), v_width(g), g.ow + R - 1);
    for t in 0..g.oh / 2 {
        let x = &img[2 * t * s..][..(A - 1) * s + cols];
        let rows = &mut work[t * A * vw..][..A * vw];
        for c0 in (0..cols).step_by(V::LANES) {
            // SAFETY: columns c0 .. c0 + live ≤ cols of the six image rows; the stores' LANES
            // scalars at c0 < vw stay in each (t, α) row.
            unsafe {
                let live = (cols - c0).min(V::LANES);
                transform_block::<V>((x[c0..].as_ptr(), s, live), (rows[c0..].as_mut_ptr(), vw));
            }
        }
    }
}

/// Row `ALPHA` of `M` for every channel, [`KB`] channels at a time (a short last block repeats
/// channel `k − 1`, computed and dropped), each column block of the gradient in turn, its sums
/// folded to [`L`] lanes and added to `lanes`.
///
/// # Safety
/// The CPU has `V`'s tier; the bounds asserted by [`weight_grad_image`], and `work` holds the
/// image's transformed rows ([`transform_rows`]).
#[inline(always)]
unsafe fn pass<V: F32s, const ALPHA: usize>(
    g: &Geometry,
    g_n: &[f32],
    work: &[f32],
    lanes: &mut [f32],
) {
    let (plane, vw) = (g.positions(), v_width(g));
    for k0 in (0..g.k).step_by(KB) {
        let mut gk = [g_n.as_ptr(); KB];
        for (b, gk) in gk.iter_mut().enumerate() {
            *gk = g_n[(k0 + b).min(g.k - 1) * plane..][..plane].as_ptr();
        }
        // SAFETY: the CPU has V's tier.
        let mut acc = [[unsafe { V::zero() }; R]; KB];
        for j0 in (0..g.ow).step_by(V::LANES) {
            let v0 = work[ALPHA * vw + j0..].as_ptr();
            // SAFETY: tile row t's row ALPHA holds columns j0 .. j0 + live + 4 < vw; each
            // gradient plane rows 2t, 2t + 1 < oh from j0 for the live lanes.
            acc = unsafe {
                let mask = V::first((g.ow - j0).min(V::LANES));
                tile_sums::<V, ALPHA>(acc, (gk, j0, g.ow), (v0, A * vw), g.oh / 2, mask)
            };
        }
        for (b, acc) in acc.iter().enumerate().take(g.k - k0) {
            for (v, a) in acc.iter().enumerate() {
                let m = ((k0 + b) * A + ALPHA) * R + v;
                // SAFETY: L scalars of `lanes` (asserted); the CPU has V's tier.
                unsafe { a.add_folded_to_8(lanes[m * L..][..L].as_mut_ptr()) };
            }
        }
    }
}

/// `acc[b][v] += Σ_t Ĝ[k0+b][t][ALPHA][j0..] · V[t][ALPHA][j0+v..]` over the `tiles` tile rows
/// in order (`gk`: the channels' gradient planes, `j0` and `ow`; `vr`: row `ALPHA` of tile row 0
/// at column `j0`, and the distance between tile rows), the loads under `mask`.
///
/// # Safety
/// The CPU has `V`'s tier; every tile row's `V` row is readable at `vr` for the live lanes + 4,
/// every gradient row `2t`, `2t + 1` at `gk[b] + j0` for the live lanes.
#[inline(always)]
unsafe fn tile_sums<V: F32s, const ALPHA: usize>(
    mut acc: [[V; R]; KB],
    (gk, j0, ow): ([*const f32; KB], usize, usize),
    (vr, step): (*const f32, usize),
    tiles: usize,
    mask: V::Mask,
) -> [[V; R]; KB] {
    // SAFETY (every load): the caller's contract.
    unsafe {
        for t in 0..tiles {
            let vt = vr.add(t * step);
            let mut xs = [V::zero(); R];
            for (v, x) in xs.iter_mut().enumerate() {
                *x = V::load_masked(vt.add(v), mask);
            }
            for (acc, &g_b) in acc.iter_mut().zip(&gk) {
                let g0 = V::load_masked(g_b.add(2 * t * ow + j0), mask);
                let g1 = V::load_masked(g_b.add((2 * t + 1) * ow + j0), mask);
                let gh = a_times_g::<V, ALPHA>(g0, g1);
                for (acc, &x) in acc.iter_mut().zip(&xs) {
                    *acc = V::mul_add(gh, x, *acc);
                }
            }
        }
    }
    acc
}

/// Row `ALPHA` of `A·g` for the gradient rows `g0`, `g1`: `g0`, `g0 + g1`, `g0 − g1`,
/// `g0 + 2·g1`, `g0 − 2·g1`, `g1` (at most one rounding).
///
/// # Safety
/// The CPU has `V`'s tier.
#[inline(always)]
unsafe fn a_times_g<V: F32s, const ALPHA: usize>(g0: V, g1: V) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        match ALPHA {
            0 => g0,
            1 => V::add(g0, g1),
            2 => minus(g0, g1),
            3 => V::mul_add(V::splat(2.0), g1, g0),
            4 => V::mul_add(V::splat(-2.0), g1, g0),
            _ => g1,
        }
    }
}

/// The chunk's partial gradients from its lane sums: `part[k·25 + u·5 + v] = Σ_α G[α][u] ·
/// M[k][α][v]` (each `M` its [`L`] lanes added in order, then the sum over `α` in `f64`,
/// rounded once), then `part[k·25 + k']`, each bias's lanes added in order.
pub(super) fn finish(g: &Geometry, lanes: &[f32], part: &mut [f32]) {
    let (k, taps) = (g.k, R * R);
    assert!(
        lanes.len() >= lanes_len(g) && part.len() >= k * taps + k,
        "lengths"
    );
    for kk in 0..k {
        for v in 0..R {
            let m: [f64; A] = std::array::from_fn(|alpha| {
                let at = ((kk * A + alpha) * R + v) * L;
                f64::from(crate::parallel::sum(&lanes[at..][..L]))
            });
            for u in 0..R {
                let dw: f64 = (0..A).map(|alpha| G[alpha][u] * m[alpha]).sum();
                part[kk * taps + u * R + v] = dw as f32;
            }
        }
    }
    for kk in 0..k {
        let at = (k * A * R + kk) * L;
        part[k * taps + kk] = crate::parallel::sum(&lanes[at..][..L]);
    }
}

#[cfg(test)]
mod tests {
    //! **The rounding bound.** Each `M` is a sum of products `(A·g)[α] · V[α]`, each of them a
    //! sum of terms `Aᵀ[r][α]·g · Bᵀ[α][l]·x`; in floating point every path from a term to a
    //! gradient passes through at most `m` roundings, so (Higham, *Accuracy and Stability of
    //! Numerical Algorithms*, §3.1) `|ours − exact| ≤ γ_m · S`, `γ_m = m·u / (1 − m·u)`,
    //! `u = 2⁻²⁴`, with `S = Σ |G[α][u]| · Σ_r |Aᵀ[r][α]·g[2t+r][j]| · Σ_l |Bᵀ[α][l]·x[2t+l][j+v]|`
    //! over the images, tiles, columns and `α`: the magnitudes before the cancellations
    //! Winograd's identity relies on. Along a path: `V` 2 roundings, `A·g` 1, the chain over an
    //! image's tiles and column blocks `tiles·blocks`, the fold of the 16 lanes to 8 and its
    //! addition to the lane sums 2 (per image), the sum of the 8 lanes 7, and the sum over `α`
    //! in `f64` rounded once 1. A missing or misplaced term is off by a whole `|g·x|` and fails
    //! (the bound is ~10⁻⁵ of `S`). The bias is the image-row kernel's direct sum of `g`.
    use super::super::direct::{image_len, pad_image};
    use super::super::winograd::{AT, BT};
    use super::*;
    use crate::Conv2dParams;

    fn gamma(m: usize) -> f64 {
        let mu = m as f64 * 2f64.powi(-24);
        mu / (1.0 - mu)
    }

    /// `k` channels, an `h × w` image and padding `pad` (stride 1, a 5 × 5 kernel).
    fn geometry(k: usize, (h, w): (usize, usize), pad: usize, n: usize) -> Geometry {
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (pad, pad),
        };
        Geometry::new("t", (n, 1, h, w), (k, 1, R, R), p)
    }

    fn val(i: usize, seed: usize) -> f32 {
        let h = (i * 2_654_435_761 + seed * 40_503) % 1_000_003;
        h as f32 / 1_000_003.0 * 2.0 - 1.0
    }

    /// `n` images' zero-bordered rows (each followed by NaN, never read) and output gradients.
    fn images_and_grads(g: &Geometry, n: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let imgs = (0..n)
            .map(|i| {
                let x: Vec<f32> = (0..g.h * g.w).map(|p| val(p, 10 + i)).collect();
                let mut img = vec![f32::NAN; image_len(g) + 40];
                pad_image(g, &x, &mut img[..image_len(g)]);
                img
            })
            .collect();
        let go = (0..n)
            .map(|i| {
                (0..g.k * g.positions())
                    .map(|p| val(p, 20 + i) * 0.5)
                    .collect()
            })
            .collect();
        (imgs, go)
    }

    /// The chunk's `[k, 25]` weight and `[k]` bias gradients by the kernel over the images,
    /// from zeroed lane sums and NaN-filled work (stale scratch); the sums and the gradients are
    /// cut from NaN-filled buffers that must stay NaN past their end.
    fn run(g: &Geometry, imgs: &[Vec<f32>], go: &[Vec<f32>]) -> Vec<f32> {
        let (ln, pn) = (lanes_len(g), g.k * R * R + g.k);
        let mut lanes = vec![f32::NAN; ln + 9];
        lanes[..ln].fill(0.0);
        let mut work = vec![f32::NAN; work_len(g)];
        for (img, go) in imgs.iter().zip(go) {
            weight_grad_image(g, &img[..image_len(g)], go, &mut work, &mut lanes[..ln]);
        }
        assert!(
            lanes[ln..].iter().all(|v| v.is_nan()),
            "written past the sums"
        );
        let mut part = vec![f32::NAN; pn + 5];
        finish(g, &lanes[..ln], &mut part[..pn]);
        assert!(
            part[pn..].iter().all(|v| v.is_nan()),
            "written past the gradients"
        );
        part.truncate(pn);
        part
    }

    /// The exact gradients in `f64` and beside each its `S` (the header's; for a bias `Σ|g|`).
    fn reference(g: &Geometry, imgs: &[Vec<f32>], go: &[Vec<f32>]) -> Vec<(f64, f64)> {
        let s = row_stride(g);
        let mut out = vec![(0.0, 0.0); g.k * R * R + g.k];
        for (img, go) in imgs.iter().zip(go) {
            let xv = |row: usize, col: usize| f64::from(img[row * s + col]);
            for k in 0..g.k {
                let gv = |i: usize, j: usize| f64::from(go[(k * g.oh + i) * g.ow + j]);
                for (u, v) in (0..R).flat_map(|u| (0..R).map(move |v| (u, v))) {
                    let d = &mut out[(k * R + u) * R + v];
                    for (i, j) in (0..g.oh).flat_map(|i| (0..g.ow).map(move |j| (i, j))) {
                        d.0 += gv(i, j) * xv(i + u, j + v);
                    }
                    for (t, j) in (0..g.oh / 2).flat_map(|t| (0..g.ow).map(move |j| (t, j))) {
                        for alpha in 0..A {
                            let ag: f64 = (0..2)
                                .map(|r| (AT[r][alpha] * gv(2 * t + r, j)).abs())
                                .sum();
                            let bx: f64 = (0..A)
                                .map(|l| (BT[alpha][l] * xv(2 * t + l, j + v)).abs())
                                .sum();
                            d.1 += G[alpha][u].abs() * ag * bx;
                        }
                    }
                }
                let b = &mut out[g.k * R * R + k];
                for (i, j) in (0..g.oh).flat_map(|i| (0..g.ow).map(move |j| (i, j))) {
                    (b.0, b.1) = (b.0 + gv(i, j), b.1 + gv(i, j).abs());
                }
            }
        }
        out
    }

    /// The roundings along a path over `n` images (the header's).
    fn roundings(g: &Geometry, n: usize) -> usize {
        2 + 1 + n * (g.oh / 2 * g.ow.div_ceil(W) + 2) + 7 + 1
    }

    /// The gradients' distances from the reference beyond `γ_m·S`, as `(entry, ours, exact)`.
    fn beyond(g: &Geometry, got: &[f32], want: &[(f64, f64)], n: usize) -> Vec<(usize, f32, f64)> {
        let bound = gamma(roundings(g, n));
        got.iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (&o, &(e, s)))| o.is_nan() || (f64::from(o) - e).abs() > bound * s)
            .map(|(i, (&o, &(e, _)))| (i, o, e))
            .collect()
    }

    /// Every weight and bias gradient within its rounding bound, for conv1 (one and three
    /// images), rows of one, two and three column blocks with a masked tail (`ow` 28, 13, 33,
    /// 16), 1 to 7 channels (short channel blocks), and the smallest even height.
    #[test]
    fn every_gradient_is_within_the_rounding_bound() {
        if !Tier::Avx512.is_supported() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for (k, hw, pad, n) in [
            (6, (28, 28), 2, 1),
            (6, (28, 28), 2, 3),
            (7, (10, 13), 2, 2),
            (1, (6, 37), 0, 1),
            (4, (2, 16), 2, 2),
            (2, (12, 20), 0, 1),
        ] {
            let g = geometry(k, hw, pad, n);
            assert!(fits(&g), "{g:?} fits");
            let (imgs, go) = images_and_grads(&g, n);
            let out = beyond(&g, &run(&g, &imgs, &go), &reference(&g, &imgs, &go), n);
            assert!(
                out.is_empty(),
                "k {k}, {hw:?}, pad {pad}, {n} images: {:?}",
                &out[..out.len().min(4)]
            );
        }
    }

    /// The bound catches a missing term: one gradient value zeroed in the kernel's input
    /// breaks it against the reference of the full gradient.
    #[test]
    fn the_bound_catches_a_missing_term() {
        if !Tier::Avx512.is_supported() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let g = geometry(6, (28, 28), 2, 1);
        let (imgs, go) = images_and_grads(&g, 1);
        let mut changed = go.clone();
        changed[0][3 * 784 + 401] = 0.0;
        let out = beyond(&g, &run(&g, &imgs, &changed), &reference(&g, &imgs, &go), 1);
        assert!(!out.is_empty(), "a missing term stays inside the bound");
    }

    /// Shapes the kernel must refuse: odd output rows, another kernel size, stride 2.
    #[test]
    fn it_fits_conv1_like_shapes_only() {
        assert!(fits(&geometry(6, (28, 28), 2, 1)));
        assert!(!fits(&geometry(6, (27, 28), 2, 1)), "odd rows");
        let p = Conv2dParams {
            stride: (2, 2),
            padding: (2, 2),
        };
        assert!(
            !fits(&Geometry::new("t", (1, 1, 28, 28), (6, 1, R, R), p)),
            "stride 2"
        );
        let p = Conv2dParams::default();
        assert!(
            !fits(&Geometry::new("t", (1, 1, 28, 28), (6, 1, 3, 3), p)),
            "3 × 3"
        );
    }
}
