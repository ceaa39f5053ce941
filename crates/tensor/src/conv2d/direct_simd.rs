//! The direct method's `f32` weight and bias gradients (conv1's) in vector registers, written
//! over [`F32s`], two kernels:
//!
//! * [`weight_grad_rows`] (the AVX2 tier, 8 lanes): the loops of `direct::weight_grad_rows`
//!   with the `GK × GV` accumulators (and the `GK` bias accumulators) pinned in registers — 10
//!   of AVX2's 16, plus `GK` gradient vectors and one input vector. Each lane is summed in the
//!   same order, with the same fused roundings, as the generic code, so the two give the same
//!   bits.
//! * [`weight_grad_image_rows`] (the AVX-512 tier, 16 lanes, where Winograd's kernel of
//!   `direct_winograd.rs` does not fit): the image-row kernel, `RU × GV`
//!   = 25 accumulators per channel, each image row's `GV` shifted vectors loaded once for all
//!   `RU` kernel rows, and the `RU` gradient rows they meet carried from row to row in
//!   registers (6 loads per 25 multiply-adds, against 7 per 10). Its lanes sum in another
//!   order; tested against an `f64` reference. The same block at 16 lanes took 1.01× the epoch
//!   time of the 8-lane kernel; this one 0.92× (docs/performance.md).

#![cfg(target_arch = "x86_64")]

use super::direct::{add_lanes, row_stride, GK, GV, L};
use super::Geometry;
use crate::simd::F32s;
use crate::Tier;
use std::arch::x86_64::{__m256, __m512};

/// Adds one image's weight and bias gradient lane sums to `lanes`, from `img` (the image's
/// zero-bordered rows) and `g_n` (`[k, oh, ow]`); see `direct::weight_grad_rows`.
///
/// # Panics
/// Without AVX2 + FMA, or if a buffer is shorter than the shapes need.
pub(super) fn weight_grad_rows(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    assert!(Tier::Avx2.is_supported(), "the kernel needs AVX2 and FMA");
    check_lengths(g, img, g_n, lanes);
    // SAFETY: AVX2 + FMA are available, and the bounds were asserted above.
    unsafe { rows_8(g, img, g_n, lanes) }
}

/// The bounds both kernels rely on: some channels and outputs, and buffers at least as long as
/// the shapes need.
fn check_lengths(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &[f32]) {
    assert!(g.k > 0 && g.oh > 0 && g.ow > 0, "channels and outputs");
    assert!(g_n.len() >= g.k * g.positions(), "output gradient length");
    assert!(img.len() >= (g.oh + g.kh - 1) * row_stride(g), "image rows");
    assert!(lanes.len() >= (g.k * g.kh * g.kw + g.k) * L, "lane sums");
}

/// # Safety
/// AVX2 + FMA; the bounds asserted by [`weight_grad_rows`].
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_8(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { rows_with::<__m256, GK>(g, img, g_n, lanes) }
}

/// For each block of `GK` channels and [`GV`] kernel columns `v0..v0+GV` of kernel row `u`:
/// `acc[b][t] += g[k0+b][i][j0..] · img[i+u][j0+v0+t..]` over every output row `i` and column
/// block `j0` of `LANES` (= [`L`]), then added to `lanes`.
///
/// # Safety
/// The CPU has `V`'s tier; the bounds asserted by [`weight_grad_rows`].
#[inline(always)]
unsafe fn rows_with<V: F32s, const GK: usize>(
    g: &Geometry,
    img: &[f32],
    g_n: &[f32],
    lanes: &mut [f32],
) {
    let (s, plane) = (row_stride(g), g.positions());
    for k0 in (0..g.k).step_by(GK) {
        // A short last block repeats channel k − 1; add_lanes drops its sums.
        let mut ch = [0; GK];
        for (b, c) in ch.iter_mut().enumerate() {
            *c = (k0 + b).min(g.k - 1);
        }
        for u in 0..g.kh {
            for v0 in (0..g.kw).step_by(GV) {
                // SAFETY: the CPU has V's tier.
                let mut acc = [[unsafe { V::zero() }; GV]; GK];
                let mut bias = [unsafe { V::zero() }; GK];
                let first = u == 0 && v0 == 0;
                for i in 0..g.oh {
                    let x = img[(i + u) * s + v0..].as_ptr();
                    let mut rows = [std::ptr::null::<f32>(); GK];
                    for (r, &c) in rows.iter_mut().zip(&ch) {
                        *r = g_n[c * plane + i * g.ow..][..g.ow].as_ptr();
                    }
                    // SAFETY: every `rows[b]` starts `ow` readable scalars, and `x` has
                    // `ow + GV − 1` (inside the row stride of the image's rows).
                    unsafe {
                        match first {
                            true => row::<V, GK, true>(&mut acc, &mut bias, rows, x, g.ow),
                            false => row::<V, GK, false>(&mut acc, &mut bias, rows, x, g.ow),
                        }
                    };
                }
                // SAFETY: the CPU has V's tier, of L lanes.
                let (out, sums) = unsafe { spill(&acc, &bias) };
                add_lanes(g, (k0, u, v0), &out, first.then_some(&sums), lanes);
            }
        }
    }
}

/// The accumulators as arrays of their [`L`] lanes.
///
/// # Safety
/// The CPU has `V`'s tier, and `V::LANES == L`.
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn spill<V: F32s, const GK: usize>(
    acc: &[[V; GV]; GK],
    bias: &[V; GK],
) -> ([[[f32; L]; GV]; GK], [[f32; L]; GK]) {
    let mut out = [[[0.0; L]; GV]; GK];
    let mut sums = [[0.0; L]; GK];
    // SAFETY (every store): L scalars of a [f32; L]; the CPU has V's tier (the contract).
    unsafe {
        for b in 0..GK {
            for t in 0..GV {
                acc[b][t].store(out[b][t].as_mut_ptr());
            }
            bias[b].store(sums[b].as_mut_ptr());
        }
    }
    (out, sums)
}

/// One output row: `acc[b][t] += g_b[j0..] · x[j0+t..]` for every column block `j0` of `LANES`
/// (the last one loads the gradient and the input under a mask, zeros past `ow`), and with
/// `BIAS`, `bias[b] += g_b[j0..]`. The whole blocks run in a loop of their own, so that no
/// mask or branch takes a register from the `GK·GV` accumulators.
///
/// # Safety
/// The CPU has `V`'s tier; every `g[b]` is readable for `ow` scalars, `x` for `ow + GV − 1`.
#[inline(always)]
unsafe fn row<V: F32s, const GK: usize, const BIAS: bool>(
    acc: &mut [[V; GV]; GK],
    bias: &mut [V; GK],
    g: [*const f32; GK],
    x: *const f32,
    ow: usize,
) {
    let n = V::LANES;
    let whole = ow / n * n;
    // SAFETY (every call): blocks j0 < whole end at or before ow; the last reads ow − whole
    // lanes under its mask.
    unsafe {
        for j0 in (0..whole).step_by(n) {
            block::<V, GK, BIAS, false>((acc, bias), g, x, (j0, V::first(n)));
        }
        if whole < ow {
            let mask = V::first(ow - whole);
            block::<V, GK, BIAS, true>((acc, bias), g, x, (whole, mask));
        }
    }
}

/// Column block `j0` of [`row`], its loads under `mask` when `MASKED`.
///
/// # Safety
/// The CPU has `V`'s tier; lanes `j0 ..` of every `g[b]` and from `x + t` (`t < GV`) are
/// readable, all `LANES` of them unless `MASKED`, else those of `mask`.
#[inline(always)]
unsafe fn block<V: F32s, const GK: usize, const BIAS: bool, const MASKED: bool>(
    (acc, bias): (&mut [[V; GV]; GK], &mut [V; GK]),
    g: [*const f32; GK],
    x: *const f32,
    (j0, mask): (usize, V::Mask),
) {
    // SAFETY (every load): the caller's contract.
    unsafe {
        let mut gv = [V::zero(); GK];
        for (v, &p) in gv.iter_mut().zip(&g) {
            *v = V::load_if::<MASKED>(p.add(j0), mask);
        }
        for t in 0..GV {
            let xv = V::load_if::<MASKED>(x.add(j0 + t), mask);
            for (acc, &gv) in acc.iter_mut().zip(&gv) {
                acc[t] = V::mul_add(gv, xv, acc[t]);
            }
        }
        if BIAS {
            for (b, &gv) in bias.iter_mut().zip(&gv) {
                *b = V::add(*b, gv);
            }
        }
    }
}

/// Kernel rows per block of the image-row kernel ([`image_rows_with`]): with [`GV`] kernel
/// columns, 25 accumulators, plus `RU` gradient vectors and one input vector: 31 of AVX-512's
/// 32 registers.
pub(super) const RU: usize = 5;

/// Adds one image's weight and bias gradient lane sums to `lanes` like [`weight_grad_rows`],
/// by the image-row kernel at 16 lanes ([`image_rows_with`]), whose lanes sum their terms in
/// another order than the generic code's.
///
/// # Panics
/// Without AVX-512F, or if a buffer is shorter than the shapes need.
pub(super) fn weight_grad_image_rows(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    assert!(Tier::Avx512.is_supported(), "the kernel needs AVX-512F");
    check_lengths(g, img, g_n, lanes);
    // SAFETY: AVX-512F (with AVX2 + FMA) is available, and the bounds were asserted above.
    unsafe { image_rows_16(g, img, g_n, lanes) }
}

/// # Safety
/// AVX-512F; the bounds asserted by [`weight_grad_image_rows`].
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn image_rows_16(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { image_rows_with::<__m512>(g, img, g_n, lanes) }
}

/// The image-row kernel: per channel `k`, block of [`RU`] kernel rows `u0..` × [`GV`] kernel
/// columns `v0..` and column block `j0` of `LANES`, one pass down the image rows `u0 + t`,
/// each serving every kernel row `u` of the block with the gradient row `i = t − u` (when
/// `0 ≤ i < oh`): `acc[u][v] += g[k][i][j0..] · img[u0+t][j0+v0+v..]` (the last column block
/// under a mask, zeros past `ow`). The gradient rows a pass needs, `t − RU + 1 ..= t`, ride
/// along in registers: each image row loads one new gradient vector and its `GV` shifted input
/// vectors for `RU × GV` multiply-adds (6 loads per 25). A lane sums its terms by `j0`, then `t`
/// (so `i`) ascending; then the lanes are folded to [`L`] and added to `lanes`; then the bias
/// gradient likewise ([`bias_sums`]). Spare rows and columns of a short block read inside the
/// image (the zero border) and are dropped.
///
/// # Safety
/// The CPU has `V`'s tier; the bounds asserted by [`weight_grad_image_rows`].
#[inline(always)]
unsafe fn image_rows_with<V: F32s>(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    let (s, plane, oh) = (row_stride(g), g.positions(), g.oh);
    for k in 0..g.k {
        let g_k = g_n[k * plane..][..plane].as_ptr();
        for u0 in (0..g.kh).step_by(RU) {
            // the image rows u0 + t that some real kernel row of the block reads
            let rows = (oh + RU - 1).min(oh + g.kh - 1 - u0);
            for v0 in (0..g.kw).step_by(GV) {
                // SAFETY: the CPU has V's tier.
                let mut acc = [[unsafe { V::zero() }; GV]; RU];
                for j0 in (0..g.ow).step_by(V::LANES) {
                    let x = img[u0 * s + v0 + j0..].as_ptr();
                    // SAFETY: the image rows u0 + t < oh + kh − 1, each readable from v0 + j0
                    // for the block's live lanes + GV − 1 ≤ s − v0 − j0 scalars; the gradient
                    // rows t − u < oh from j0 for the live lanes; the CPU has V's tier.
                    acc = unsafe {
                        let mask = V::first((g.ow - j0).min(V::LANES));
                        let rows_in = Rows {
                            g: g_k.add(j0),
                            x,
                            mask,
                        };
                        block_rows::<V>(acc, rows_in, rows, (s, oh, g.ow))
                    };
                }
                // SAFETY: lanes has every weight's L sums (asserted); the CPU has V's tier.
                unsafe { add_folded(g, (k, u0, v0), &acc, lanes) };
            }
        }
        // SAFETY: g_k has oh·ow scalars; lanes every bias's L sums; the CPU has V's tier.
        unsafe {
            let bias = bias_sums::<V>(g_k, oh, g.ow);
            bias.add_folded_to_8(lanes[(g.k * g.kh * g.kw + k) * L..][..L].as_mut_ptr());
        }
    }
}

/// Where one column block of [`image_rows_with`] reads: `g`, the gradient plane at the block's
/// first column (rows `ow` apart); `x`, the image at row `u0` and column `v0 + j0`; `mask`, the
/// block's live lanes.
#[derive(Clone, Copy)]
struct Rows<V: F32s> {
    g: *const f32,
    x: *const f32,
    mask: V::Mask,
}

/// The `rows` image rows `t` of one column block of [`image_rows_with`] (`dims` as
/// [`image_rows`]). Row `t` serves the kernel rows `u` whose gradient row `t − u` exists
/// (`0 ≤ t − u < oh`): all `RU` of them from `t = RU − 1` to `oh − 1`, the first `t + 1`
/// before, the last `RU − 1 − (t − oh)` after. When the block has every row of both edges
/// (`rows = oh + RU − 1` and `oh ≥ RU − 1`: conv1's 28 rows of a 5 × 5 kernel), each edge row
/// runs with its exact kernel rows as constants, so no multiply-add is spent on a gradient row
/// that does not exist (1 in 8 of them in conv1); otherwise every row multiplies all `RU`, the
/// missing gradient rows as zeros. Either way a lane adds the same nonzero terms in the same
/// order (a missing row's terms are `0 · x`, adding nothing to a finite sum).
///
/// # Safety
/// As [`image_rows`], for the rows `0..rows`.
#[inline(always)]
unsafe fn block_rows<V: F32s>(
    acc: [[V; GV]; RU],
    at: Rows<V>,
    rows: usize,
    dims: (usize, usize, usize),
) -> [[V; GV]; RU] {
    const { assert!(RU == 5, "the edge rows below are written for RU = 5") };
    let oh = dims.1;
    // SAFETY (every call): the caller's rows, each with the kernel rows whose gradient row
    // exists (RU ≤ t < oh: all; the edges: the ranges named, or zeros).
    unsafe {
        let gs = [V::zero(); RU];
        if rows == oh + RU - 1 && oh >= RU - 1 {
            let s = (acc, gs);
            let s = image_rows::<V, 0, 1>(s, at, 0..1, dims);
            let s = image_rows::<V, 0, 2>(s, at, 1..2, dims);
            let s = image_rows::<V, 0, 3>(s, at, 2..3, dims);
            let s = image_rows::<V, 0, 4>(s, at, 3..4, dims);
            let s = image_rows::<V, 0, RU>(s, at, RU - 1..oh, dims);
            let s = image_rows::<V, 1, RU>(s, at, oh..oh + 1, dims);
            let s = image_rows::<V, 2, RU>(s, at, oh + 1..oh + 2, dims);
            let s = image_rows::<V, 3, RU>(s, at, oh + 2..oh + 3, dims);
            image_rows::<V, 4, RU>(s, at, oh + 3..oh + 4, dims).0
        } else {
            image_rows::<V, 0, RU>((acc, gs), at, 0..rows, dims).0
        }
    }
}

/// The image rows `t` in `ts` of one column block of [`image_rows_with`] for the kernel rows
/// `u` in `U0..U1` (`at`: where the block reads; `dims`: `(row_stride, oh, ow)`). `gs[u]`
/// holds the gradient row `t − u` (zeros for a row that does not exist): at each image row the
/// gradient row `t` enters (`t < oh`; else zeros) and the oldest leaves; then for each `v` the
/// input vector `x[t][v..]` and `acc[u][v] += gs[u] · x[t][v..]`. (The sums and the rows pass
/// by value: kept in registers.)
///
/// # Safety
/// The CPU has `V`'s tier; every image row `t` is readable from `at.x` for the live lanes +
/// `GV − 1` scalars, and every gradient row `t < oh` from `at.g` for the live lanes; every
/// gradient row `t − u` (`U0 ≤ u < U1`) that exists is in `gs` on entry or enters it here.
#[inline(always)]
unsafe fn image_rows<V: F32s, const U0: usize, const U1: usize>(
    (mut acc, mut gs): ([[V; GV]; RU], [V; RU]),
    at: Rows<V>,
    ts: std::ops::Range<usize>,
    (s, oh, ow): (usize, usize, usize),
) -> ([[V; GV]; RU], [V; RU]) {
    for t in ts {
        let x = at.x.wrapping_add(t * s);
        // SAFETY (every load): the live lanes of existing rows (the caller's contract); a
        // gradient row past the last is zeros, not loaded.
        unsafe {
            let new = match t < oh {
                true => V::load_masked(at.g.add(t * ow), at.mask),
                false => V::zero(),
            };
            gs = [new, gs[0], gs[1], gs[2], gs[3]]; // (RU = 5: asserted by block_rows)
            for v in 0..GV {
                let xv = V::load_masked(x.add(v), at.mask);
                for u in U0..U1 {
                    acc[u][v] = V::mul_add(gs[u], xv, acc[u][v]);
                }
            }
        }
    }
    (acc, gs)
}

/// `Σ_{i,j0} g[i][j0..]` over the column blocks `j0` of `LANES` (masked loads), in 8 partial
/// sums, of the rows `i ≡ r mod 8` (the rows in order, each row's blocks in order), added in
/// a fixed tree: 8 independent chains rather than one.
///
/// # Safety
/// The CPU has `V`'s tier; `g` is readable for `oh · ow` scalars.
#[inline(always)]
pub(super) unsafe fn bias_sums<V: F32s>(g: *const f32, oh: usize, ow: usize) -> V {
    // SAFETY (every load): the CPU has V's tier; lanes j0 .. j0 + live ≤ ow of row i < oh.
    unsafe {
        let row = |sum: V, i: usize| {
            let mut sum = sum;
            for j0 in (0..ow).step_by(V::LANES) {
                let mask = V::first((ow - j0).min(V::LANES));
                sum = V::add(sum, V::load_masked(g.add(i * ow + j0), mask));
            }
            sum
        };
        let mut sums = [V::zero(); 8];
        let whole = oh - oh % 8;
        for i0 in (0..whole).step_by(8) {
            for (r, sum) in sums.iter_mut().enumerate() {
                *sum = row(*sum, i0 + r);
            }
        }
        for (r, sum) in sums.iter_mut().enumerate().take(oh - whole) {
            *sum = row(*sum, whole + r);
        }
        let [a, b, c, d, e, f, h, k] = sums;
        let add = |x, y| V::add(x, y);
        add(add(add(a, b), add(c, d)), add(add(e, f), add(h, k)))
    }
}

/// `lanes[k][u0+u][v0+v] += acc[u][v]` folded to [`L`] lanes, for the real kernel rows and
/// columns.
///
/// # Safety
/// The CPU has `V`'s tier; `lanes` holds `k·kh·kw·L` sums.
#[inline(always)]
unsafe fn add_folded<V: F32s>(
    g: &Geometry,
    (k, u0, v0): (usize, usize, usize),
    acc: &[[V; GV]; RU],
    lanes: &mut [f32],
) {
    for (u, acc) in acc.iter().enumerate().take(g.kh - u0) {
        for (v, a) in acc.iter().enumerate().take(g.kw - v0) {
            let w = (k * g.kh + u0 + u) * g.kw + v0 + v;
            // SAFETY: L scalars of `lanes`; the CPU has V's tier (the contract).
            unsafe { a.add_folded_to_8(lanes[w * L..][..L].as_mut_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::{image_len, pad_image, weight_grad_rows_fma};
    use super::super::taps::same_bits;
    use super::super::tests::pseudo;
    use super::*;
    use crate::Conv2dParams;

    /// The kernel and the generic fused code add the same products in the same order: equal
    /// bits, for full and short channel blocks (k = 6, 7, 1), one and two kernel-column blocks
    /// (kw = 5, 7) and rows that end mid-vector (ow = 28, 11, 13), from nonzero starting sums
    /// (the kernels add to them).
    #[test]
    fn the_vector_kernel_equals_the_generic_fused_code_bit_for_bit() {
        if !Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        for (k, h, w, kh, kw, ph, pw) in [
            (6, 28, 28, 5, 5, 2, 2),
            (7, 9, 11, 3, 7, 1, 3),
            (1, 4, 13, 6, 2, 3, 0),
        ] {
            let p = Conv2dParams {
                stride: (1, 1),
                padding: (ph, pw),
            };
            let g = Geometry::new("t", (1, 1, h, w), (k, 1, kh, kw), p);
            let x = pseudo((1, 1, h, w), 1).mapv(|v| v as f32);
            let go = pseudo((1, k, g.oh, g.ow), 2).mapv(|v| v as f32);
            let (x, go) = (x.as_slice().unwrap(), go.as_slice().unwrap());
            let mut img = vec![f32::NAN; image_len(&g)];
            pad_image(&g, x, &mut img);
            let start: Vec<f32> = (0..(k * kh * kw + k) * L)
                .map(|i| i as f32 * 0.01)
                .collect();
            let (mut ours, mut generic) = (start.clone(), start);
            weight_grad_rows(&g, &img, go, &mut ours);
            weight_grad_rows_fma(&g, &img, go, &mut generic);
            same_bits(
                &ours,
                &generic,
                &format!("k {k}, {h}×{w}, kernel {kh}×{kw}"),
            );
        }
    }

    /// Every weight's and bias's [`L`] lane sums by the kernel plan picks for `isa`, from
    /// `start`: the sums are in `lanes[..len]` of a NaN-filled buffer, the gradient and image
    /// are cut from NaN-filled buffers too (a read past them poisons a sum), and the area past
    /// the sums must stay NaN.
    fn image_row_sums(g: &Geometry, x: &[f32], go: &[f32], start: &[f32]) -> Vec<f32> {
        let (n, extra) = (start.len(), 64);
        let mut img = vec![f32::NAN; image_len(g) + extra];
        pad_image(g, x, &mut img[..image_len(g)]);
        let mut gbuf = go.to_vec();
        gbuf.extend([f32::NAN; 64]);
        let mut buf = start.to_vec();
        buf.extend([f32::NAN; 64]);
        weight_grad_image_rows(g, &img[..image_len(g)], &gbuf[..go.len()], &mut buf[..n]);
        assert!(buf[n..].iter().all(|v| v.is_nan()), "written past the sums");
        buf.truncate(n);
        buf
    }

    /// `start[w][l] + Σ` of weight `w`'s terms `g[k,i,j] · img[i+u][j+v]` (the bias's:
    /// `g[k,i,j]`) over the columns `j ≡ l mod L`, in `f64`, and beside it the same sum of
    /// their magnitudes.
    fn reference(g: &Geometry, img: &[f32], go: &[f32], start: &[f32]) -> Vec<(f64, f64)> {
        let (s, plane) = (row_stride(g), g.positions());
        let mut sums: Vec<(f64, f64)> = start.iter().map(|&v| (v as f64, v.abs() as f64)).collect();
        for k in 0..g.k {
            for (i, j) in (0..g.oh).flat_map(|i| (0..g.ow).map(move |j| (i, j))) {
                let gv = go[k * plane + i * g.ow + j] as f64;
                let mut add = |w: usize, t: f64| {
                    let d = &mut sums[w * L + j % L];
                    (d.0, d.1) = (d.0 + t, d.1 + t.abs());
                };
                for (u, v) in (0..g.kh).flat_map(|u| (0..g.kw).map(move |v| (u, v))) {
                    add(
                        (k * g.kh + u) * g.kw + v,
                        gv * img[(i + u) * s + j + v] as f64,
                    );
                }
                add(g.k * g.kh * g.kw + k, gv);
            }
        }
        sums
    }

    /// The shapes the image-row kernel is tested on: LeNet-5's conv1, every output width from
    /// 1 to 34 (every tail of a 16-lane block, one to three blocks), kernel rows and columns
    /// in one, and in two (spare rows or columns) blocks of 5, and 1, 6 or 7 channels.
    fn image_row_shapes() -> Vec<(usize, usize, usize, usize, usize, usize, usize)> {
        let mut shapes = vec![(6, 28, 28, 5, 5, 2, 2), (7, 9, 11, 3, 7, 1, 3)];
        for w in 1..=34 {
            let (kh, kw) = [(5, 5), (7, 3), (2, 6), (1, 1), (6, 11)][w % 5];
            shapes.push((1 + w % 7, 1 + w % 9, w, kh, kw, kh / 2, kw / 2));
        }
        shapes.push((2, 3, 4, 6, 7, 2, 3)); // 2 output rows, fewer than RU − 1
        shapes
    }

    /// The geometries of [`image_row_shapes`] (one image, stride 1).
    fn image_row_geometries() -> Vec<Geometry> {
        let geometry = |(k, h, w, kh, kw, ph, pw)| {
            let p = Conv2dParams {
                stride: (1, 1),
                padding: (ph, pw),
            };
            Geometry::new("t", (1, 1, h, w), (k, 1, kh, kw), p)
        };
        image_row_shapes().into_iter().map(geometry).collect()
    }

    /// With integers small enough that every partial sum is exact in `f32`, every lane sum
    /// equals the `f64` reference exactly, whatever the order: a missing, doubled or shifted
    /// term changes it.
    #[test]
    fn the_image_row_kernel_sums_every_term_of_each_lane() {
        if !Tier::Avx512.is_supported() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for g in image_row_geometries() {
            let (k, h, w, kh, kw) = (g.k, g.h, g.w, g.kh, g.kw);
            let int = |v: f64| (v * 4.0).round() as f32; // -4..4
            let x = pseudo((1, 1, h, w), 5)
                .mapv(int)
                .into_raw_vec_and_offset()
                .0;
            let go = pseudo((1, k, g.oh, g.ow), 6)
                .mapv(int)
                .into_raw_vec_and_offset()
                .0;
            let start: Vec<f32> = (0..(k * kh * kw + k) * L)
                .map(|i| (i % 13) as f32)
                .collect();
            let ours = image_row_sums(&g, &x, &go, &start);
            let mut img = vec![f32::NAN; image_len(&g)];
            pad_image(&g, &x, &mut img);
            for (i, (&o, (want, _))) in ours
                .iter()
                .zip(reference(&g, &img, &go, &start))
                .enumerate()
            {
                let what = format!("k {k}, {h}×{w}, kernel {kh}×{kw}: sum {i}");
                assert_eq!(o as f64, want, "{what}");
            }
        }
    }

    /// With real values, every lane sum is within the rounding bound of the exact one. The
    /// bound: a lane of a weight has `n ≤ oh·⌈ow/L⌉` terms; each is rounded into its 16-lane
    /// chain by at most `n` fused multiply-adds, then once by the fold of the two halves and
    /// once by the addition to the starting sum, so each term and the start carry at most
    /// `m = n + 2` factors `(1 + δ)`, `|δ| ≤ u = 2⁻²⁴`, and
    /// `|ours − exact| ≤ γ_m · (|start| + Σ |terms|)`, `γ_m = m·u / (1 − m·u)` (Higham,
    /// recursive summation).
    #[test]
    fn the_image_row_kernel_is_within_the_rounding_bound() {
        if !Tier::Avx512.is_supported() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for g in image_row_geometries() {
            let (k, h, w, kh, kw) = (g.k, g.h, g.w, g.kh, g.kw);
            let f32s = |a: ndarray::Array4<f64>| a.mapv(|v| v as f32).into_raw_vec_and_offset().0;
            let (x, go) = (
                f32s(pseudo((1, 1, h, w), 7)),
                f32s(pseudo((1, k, g.oh, g.ow), 8)),
            );
            let start: Vec<f32> = (0..(k * kh * kw + k) * L)
                .map(|i| i as f32 * 0.01)
                .collect();
            let ours = image_row_sums(&g, &x, &go, &start);
            let mut img = vec![f32::NAN; image_len(&g)];
            pad_image(&g, &x, &mut img);
            let m = (g.oh * g.ow.div_ceil(L) + 2) as f64;
            let gamma = m * 2f64.powi(-24) / (1.0 - m * 2f64.powi(-24));
            for (i, (&o, (want, mag))) in ours
                .iter()
                .zip(reference(&g, &img, &go, &start))
                .enumerate()
            {
                let (err, bound) = ((o as f64 - want).abs(), gamma * mag);
                assert!(err <= bound, "k {k}, {h}×{w}, kernel {kh}×{kw}: sum {i} {o} is {err:e} from {want}, bound {bound:e}");
            }
        }
    }
}
