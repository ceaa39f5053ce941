//! The stride-1 input gradient with the output channels in the vector lanes, for `f32`,
//! written once for any vector width ([`F32s`]) and instantiated at two ([`Width`]):
//!
//! ```text
//! dx[c][y][x] = Σ_u Σ_o Σ_v W[o][c][u][v] · g[o][y + ph − u][x + pw − v]
//! ```
//!
//! over the taps whose output `(i, j) = (y + ph − u, x + pw − v)` exists. The lanes hold the
//! output channels (mod 16). For one row `(c, y)` of the padded planes and one kernel row `u`,
//! output row `i` is a 1-D full correlation: output `j` adds `W[·][c][u][v] · g[·][i][j]` to
//! input `j + v` for each `v`. Walking `j` ascending, input `j` has all of its products once
//! step `j` is done, so `kw` accumulators suffice, used as a ring (input `X` in slot
//! `X mod kw`, the kernel width a constant so that the slots are registers): per output one
//! load of its 16 channels' gradient (outputs-major `gt[i·ow + j][o]`, the lanes weight
//! gradient's copy) and `kw` multiply-adds with the kernel row's weights (the forward pass's
//! tap-major regrouping `wt[t][o]`), held in registers for the row. A finished input is added
//! to the row's partial sums (`wp` vectors on the stack; at 16 lanes two kernel rows run at
//! once, so the partial sums are read and written once per two); when the row's kernel rows
//! are done, [`F32s::lane_sums`] adds each input's lanes, `LANES` inputs at once.
//!
//! Against the wide columns' `Wᵀ · g_wide` (`dwide.rs`), which multiplies 136 columns per 100
//! outputs in LeNet-5's conv2 and adds each of its rows into the padded planes, this makes
//! each product `W[o][c][u][v] · g[o][i][j]` once, without a branch, and writes each input
//! once.
//!
//! The sums: lane `o mod 16` of input `X` adds one partial sum per kernel row `u` ascending
//! and block of 16 channels ascending, each summed from 0 over the outputs `j`
//! ascending (so `v` descending) by fused multiply-adds; at 8 lanes the block's two vectors
//! are added, then the lanes by halving folds. A fixed order for every shape, at either width,
//! so the same bits on any thread count; another order than `dwide`'s (which sums over `o`
//! first), so the two agree within rounding (the test's bound).

#![cfg(target_arch = "x86_64")]

use super::lanes::{Width, KB};
use super::Geometry;
use crate::simd::F32s;
use std::arch::x86_64::{__m256, __m512};

/// The widest padded row the kernel takes: its partial sums live on the stack.
const MAX_ROW: usize = 64;
/// The widest kernel: one instance per width up to it.
const MAX_KW: usize = 7;

/// Whether the kernel takes `g`: `f32` from the AVX2 tier up (the caller's), stride 1, whole
/// blocks of 16 channels, kernels at most [`MAX_KW`] wide and padded rows of at most
/// [`MAX_ROW`].
pub(super) fn fits(g: &Geometry) -> bool {
    g.p.stride == (1, 1)
        && g.k > 0
        && g.k.is_multiple_of(KB)
        && (1..=MAX_KW).contains(&g.kw)
        && g.w + 2 * g.p.padding.1 <= MAX_ROW
}

/// Overwrites one image's input gradient `dx` (`[c, h, w]`) from the weights regrouped
/// tap-major `wt` (`[k / 16, c·kh·kw, 16]`) and the output gradient outputs-major `gt`
/// (`[oh·ow, k]`); `g` a stride-1 geometry that [`fits`].
///
/// # Panics
/// Without the width's tier, if `g` does not fit, or if a buffer's length does not match it.
pub(super) fn input_grad(width: Width, g: &Geometry, wt: &[f32], gt: &[f32], dx: &mut [f32]) {
    assert!(
        width.tier().is_supported(),
        "{width:?} lanes need the CPU's support"
    );
    let (ph, pw) = g.p.padding;
    assert!(fits(g), "the kernel does not take {g:?}");
    assert!(
        g.oh + g.kh == g.h + 2 * ph + 1 && g.ow + g.kw == g.w + 2 * pw + 1,
        "the outputs of a stride-1 convolution: {g:?}"
    );
    assert_eq!(wt.len(), g.k * g.ckk(), "weights: [k / 16, c·kh·kw, 16]");
    assert_eq!(gt.len(), g.positions() * g.k, "output gradient: [oh·ow, k]");
    assert_eq!(dx.len(), g.c * g.h * g.w, "input gradient: [c, h, w]");
    // SAFETY: the width's tier is available, and the shapes were asserted above.
    unsafe {
        match width {
            Width::Eight => input_grad_8(g, wt, gt, dx),
            Width::Sixteen => input_grad_16(g, wt, gt, dx),
        }
    }
}

/// # Safety
/// AVX2 + FMA; the shapes asserted by [`input_grad`].
#[target_feature(enable = "avx2,fma")]
unsafe fn input_grad_8(g: &Geometry, wt: &[f32], gt: &[f32], dx: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { by_kernel_width::<__m256, 2>(g, wt, gt, dx) }
}

/// # Safety
/// AVX-512F; the shapes asserted by [`input_grad`].
#[target_feature(enable = "avx512f")]
unsafe fn input_grad_16(g: &Geometry, wt: &[f32], gt: &[f32], dx: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { by_kernel_width::<__m512, 1>(g, wt, gt, dx) }
}

/// [`input_grad_with`] with the kernel width `g.kw ≤ MAX_KW` as a constant.
///
/// # Safety
/// As [`input_grad_with`].
#[inline(always)]
unsafe fn by_kernel_width<V: F32s, const NV: usize>(
    g: &Geometry,
    wt: &[f32],
    gt: &[f32],
    dx: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe {
        match g.kw {
            1 => input_grad_with::<V, NV, 1>(g, wt, gt, dx),
            2 => input_grad_with::<V, NV, 2>(g, wt, gt, dx),
            3 => input_grad_with::<V, NV, 3>(g, wt, gt, dx),
            4 => input_grad_with::<V, NV, 4>(g, wt, gt, dx),
            5 => input_grad_with::<V, NV, 5>(g, wt, gt, dx),
            6 => input_grad_with::<V, NV, 6>(g, wt, gt, dx),
            _ => input_grad_with::<V, NV, MAX_KW>(g, wt, gt, dx),
        }
    }
}

/// Every row `(c, y)` of `dx`: its partial sums over the kernel rows, then their lanes.
///
/// # Safety
/// The CPU has `V`'s tier; `NV·LANES = 16`, `KW = g.kw`; the shapes asserted by
/// [`input_grad`].
#[inline(always)]
unsafe fn input_grad_with<V: F32s, const NV: usize, const KW: usize>(
    g: &Geometry,
    wt: &[f32],
    gt: &[f32],
    dx: &mut [f32],
) {
    debug_assert!(NV * V::LANES == KB && KW == g.kw);
    let (ph, pw) = g.p.padding;
    // SAFETY: the caller's contract. `KB` slots past the widest row: the lane sums below
    // read whole windows of `KB` inputs (the slots past a row's end are zeros or an earlier
    // row's, and their lanes are never stored).
    let mut row = [[unsafe { V::zero() }; NV]; MAX_ROW + KB];
    for c in 0..g.c {
        for y in 0..g.h {
            // SAFETY: the caller's contract.
            unsafe { row_partials::<V, NV, KW>(g, (wt, gt), (c, y + ph), &mut row) };
            let dx_row = &mut dx[(c * g.h + y) * g.w..][..g.w];
            for x0 in (0..g.w).step_by(V::LANES) {
                let n = V::LANES.min(g.w - x0);
                // SAFETY: the caller's contract; inputs x0 .. x0 + n are in the row.
                unsafe {
                    let sums = row_sums(&row[pw + x0..][..V::LANES]);
                    sums.store_first(dx_row[x0..].as_mut_ptr(), n);
                }
            }
        }
    }
}

/// `row[X]` for the `wp` inputs `X` of channel `c`'s padded row `yp`: the partial sums of the
/// module docs, one per kernel row `u` with an output row `i = yp − u` and block of 16
/// channels (the terms, `u` outer and blocks inner), added in that order. At 16 lanes the
/// terms run two at a time (`2·kw` accumulators and weights fit the 32 registers; the row's
/// partial sums are read and written once per pair).
///
/// # Safety
/// The CPU has `V`'s tier; `KW = g.kw`; the shapes asserted by [`input_grad`], `c < g.c`
/// and `yp` a padded row.
#[inline(always)]
unsafe fn row_partials<V: F32s, const NV: usize, const KW: usize>(
    g: &Geometry,
    (wt, gt): (&[f32], &[f32]),
    (c, yp): (usize, usize),
    row: &mut [[V; NV]; MAX_ROW + KB],
) {
    let (k, taps, wp) = (g.k, g.ckk(), g.ow + KW - 1);
    // Never empty: with stride 1, oh = hp − kh + 1, so yp − oh + 1 < kh.
    let us = (yp + 1).saturating_sub(g.oh)..g.kh.min(yp + 1);
    let blocks = k / KB;
    let terms = us.len() * blocks;
    // Term t's kernel-row weights and its output row's gradients (both inside `wt` and `gt`
    // by the shapes: the kernel row's KW taps of 16 weights, outputs (i, 0 .. ow) of the
    // block).
    let term = |t: usize| {
        let (u, k0) = (us.start + t / blocks, t % blocks * KB);
        let w = wt[k0 * taps + (c * g.kh + u) * KW * KB..][..KW * KB].as_ptr();
        (w, gt[(yp - u) * g.ow * k + k0..].as_ptr())
    };
    let row = &mut row[..wp];
    let step = if NV == 1 { 2 } else { 1 };
    for t in (0..terms).step_by(step) {
        // SAFETY: the terms' pointers as above; `KW` taps of 16 weights, `ow` outputs of
        // 16 gradients `k` apart.
        unsafe {
            if t + 1 < terms && step == 2 {
                let ((w0, g0), (w1, g1)) = (term(t), term(t + 1));
                let terms = ([w0, w1], [g0, g1], (k, g.ow));
                match t == 0 {
                    true => correlate_row::<V, NV, KW, 2, true>(terms, row),
                    false => correlate_row::<V, NV, KW, 2, false>(terms, row),
                }
            } else {
                let (w0, g0) = term(t);
                let terms = ([w0], [g0], (k, g.ow));
                match t == 0 {
                    true => correlate_row::<V, NV, KW, 1, true>(terms, row),
                    false => correlate_row::<V, NV, KW, 1, false>(terms, row),
                }
            }
        }
    }
}

/// For each of `R` terms (kernel-row weights `w[r]`, output gradients `g[r]`):
/// `row[j + v] += w[r][v] · g[r][j]` for every output `j < ow` and tap `v < KW` (`row` holds
/// `ow + KW − 1` inputs; with `FIRST` the first term overwrites it instead): walking `j`
/// ascending, input `j` is finished after step `j`, so each term's accumulator for it (slot
/// `j mod KW` of the term's ring) is added to `row[j]`, term after term, and starts over for
/// input `j + KW`. Each input's products are summed from 0 over `j` ascending, then added.
///
/// # Safety
/// The CPU has `V`'s tier; each `w[r]` holds `KW·16` weights, `g[r] + j·stride` 16 gradients
/// for each `j < ow`.
#[inline(always)]
unsafe fn correlate_row<
    V: F32s,
    const NV: usize,
    const KW: usize,
    const R: usize,
    const FIRST: bool,
>(
    (w, g, (stride, ow)): ([*const f32; R], [*const f32; R], (usize, usize)),
    row: &mut [[V; NV]],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut wv = [[[V::zero(); NV]; KW]; R];
        for r in 0..R {
            for v in 0..KW {
                for h in 0..NV {
                    wv[r][v][h] = V::load(w[r].add(v * KB + h * V::LANES));
                }
            }
        }
        let mut ring = [[[V::zero(); NV]; KW]; R];
        for j0 in (0..row.len()).step_by(KW) {
            // Unrolled: the ring's slot for input j0 + phase + v is a constant.
            for phase in 0..KW {
                let j = j0 + phase;
                if j >= row.len() {
                    return;
                }
                if j < ow {
                    for r in 0..R {
                        let mut gv = [V::zero(); NV];
                        for (h, gv) in gv.iter_mut().enumerate() {
                            *gv = V::load(g[r].add(j * stride + h * V::LANES));
                        }
                        for v in 0..KW {
                            let acc = &mut ring[r][(phase + v) % KW];
                            for h in 0..NV {
                                acc[h] = V::mul_add(wv[r][v][h], gv[h], acc[h]);
                            }
                        }
                    }
                }
                for h in 0..NV {
                    let mut sum = if FIRST {
                        ring[0][phase][h]
                    } else {
                        V::add(row[j][h], ring[0][phase][h])
                    };
                    for ring in &ring[1..] {
                        sum = V::add(sum, ring[phase][h]);
                    }
                    row[j][h] = sum;
                    for ring in &mut ring {
                        ring[phase][h] = V::zero();
                    }
                }
            }
        }
    }
}

/// Lane `r` is the sum of input `r`'s partial sums (`LANES` inputs, a length known at compile
/// time, so no copy is made): each input's `NV` vectors added, then the lanes by
/// [`F32s::lane_sums`]. No closures in these
/// kernels: a closure is a function of its own, compiled without the caller's target
/// features, so its intrinsics would be calls.
///
/// # Safety
/// The CPU has `V`'s tier; `LANES ≤ 16`.
#[inline(always)]
unsafe fn row_sums<V: F32s, const NV: usize>(inputs: &[[V; NV]]) -> V {
    debug_assert_eq!(inputs.len(), V::LANES);
    // SAFETY: the caller's contract.
    unsafe {
        let mut one = [V::zero(); 16];
        for (o, a) in one.iter_mut().zip(inputs) {
            *o = a[0];
            for &x in &a[1..] {
                *o = V::add(*o, x);
            }
        }
        V::lane_sums(&one[..V::LANES])
    }
}

#[cfg(test)]
mod tests {
    use super::super::taps::regroup_weights;
    use super::*;
    use crate::Conv2dParams;

    /// The kernel against the sum in `f64`, at every width this CPU has, on LeNet-5's conv2
    /// and on shapes around the kernel's edges: padding (rows and columns whose taps are cut
    /// on both sides), rows shorter than, equal to and longer than a run (ending mid-run),
    /// kernels wider than tall and taller than wide, 32 and 48 channels (blocks summed in
    /// the lanes), one input channel. `dx` is cut from a NaN-filled buffer whose margins must
    /// stay NaN (nothing written past the rows), and starts NaN (every input written).
    ///
    /// The bound: each input sums at most `m = k·kh·kw` products, every rounding on a path
    /// from a product to the sum is one of a partial sum's multiply-adds (at most `kw`), the
    /// partial sums' additions (`kh·k/16`), the block's vectors (1) or the folds (at most 4),
    /// so at most `n = kw + kh·k/16 + 5` roundings and
    /// `|got − exact| ≤ γ_n · Σ|products|` with `γ_n = n·u/(1 − n·u)`, `u = 2⁻²⁴` (Higham,
    /// *Accuracy and Stability*, §3.1). The test allows `(n + 1)·u·Σ|products|`. A product
    /// missed, counted twice or read from a neighbouring output is about `Σ|products|/m`,
    /// 10⁴ times more than the bound at these sizes.
    #[test]
    fn input_grad_equals_the_f64_sum_within_rounding() {
        let cases = [
            ((6, 14, 14), (16, 5, 5), (0, 0)),
            ((6, 14, 14), (16, 5, 5), (2, 2)),
            ((3, 9, 8), (16, 3, 2), (1, 1)),
            ((2, 6, 12), (32, 2, 7), (0, 0)),
            ((1, 7, 23), (48, 4, 3), (2, 1)),
            ((4, 5, 16), (16, 5, 1), (0, 3)),
            ((2, 3, 6), (16, 1, 6), (1, 0)),
        ];
        let widths = [Width::Eight, Width::Sixteen];
        for width in widths.into_iter().filter(|w| w.tier().is_supported()) {
            for &((c, h, w), (k, kh, kw), padding) in &cases {
                let p = Conv2dParams {
                    stride: (1, 1),
                    padding,
                };
                let g = Geometry::new("t", (1, c, h, w), (k, c, kh, kw), p);
                check(width, &g, &format!("{width:?}, {g:?}"));
            }
        }
        for width in widths.into_iter().filter(|w| !w.tier().is_supported()) {
            eprintln!("skipped {width:?}: this CPU has no {:?}", width.tier());
        }
    }

    fn check(width: Width, g: &Geometry, at: &str) {
        let val = |i: usize, m: usize| ((i * 7919 + m * 104_729) % 227) as f32 / 31.0 - 3.5;
        let wts: Vec<f32> = (0..g.k * g.ckk()).map(|i| val(i, 1)).collect();
        let go: Vec<f32> = (0..g.k * g.positions()).map(|i| val(i, 2)).collect();
        let mut wt = vec![f32::NAN; wts.len()];
        regroup_weights::<f32, KB>(&wts, g.ckk(), &mut wt);
        let mut gt = vec![f32::NAN; go.len()];
        for (o, row) in go.chunks_exact(g.positions()).enumerate() {
            for (q, &x) in row.iter().enumerate() {
                gt[q * g.k + o] = x;
            }
        }
        let len = g.c * g.h * g.w;
        let mut buf = vec![f32::NAN; len + 64];
        input_grad(width, g, &wt, &gt, &mut buf[32..][..len]);
        assert!(
            buf[..32].iter().chain(&buf[32 + len..]).all(|x| x.is_nan()),
            "{at}: margins"
        );
        let (ph, pw) = g.p.padding;
        let n = (g.kw + g.kh * g.k / KB + 5) as f64;
        for (at_x, &got) in buf[32..][..len].iter().enumerate() {
            let (c, y, x) = (at_x / (g.h * g.w), at_x / g.w % g.h, at_x % g.w);
            let (mut exact, mut size) = (0f64, 0f64);
            for (o, u, v) in (0..g.k)
                .flat_map(|o| (0..g.kh).flat_map(move |u| (0..g.kw).map(move |v| (o, u, v))))
            {
                let (i, j) = (
                    (y + ph) as isize - u as isize,
                    (x + pw) as isize - v as isize,
                );
                if i < 0 || j < 0 || i as usize >= g.oh || j as usize >= g.ow {
                    continue;
                }
                let wv = wts[((o * g.c + c) * g.kh + u) * g.kw + v] as f64;
                let gv = go[o * g.positions() + i as usize * g.ow + j as usize] as f64;
                exact += wv * gv;
                size += (wv * gv).abs();
            }
            let bound = (n + 1.0) * f64::from(f32::EPSILON) / 2.0 * size;
            assert!(
                (got as f64 - exact).abs() <= bound,
                "{at}: dx[{c}][{y}][{x}] = {got}, exact {exact}, bound {bound}"
            );
        }
    }
}
