//! The stride-1 input gradient with the output channels in the vector lanes, for `f32`,
//! written once for any vector width ([`F32s`]) and instantiated at two ([`Width`]):
//!
//! ```text
//! dx[c][y][x] = Σ_u Σ_o Σ_v W[o][c][u][v] · g[o][y + ph − u][x + pw − v]
//! ```
//!
//! over the taps whose output `(i, j) = (y + ph − u, x + pw − v)` exists. The lanes hold the
//! output channels (mod `LANES`). For one row `(c, y)` of the padded planes and one kernel row `u`,
//! output row `i` is a 1-D full correlation: output `j` adds `W[·][c][u][v] · g[·][i][j]` to
//! input `j + v` for each `v`. Walking `j` ascending, input `j` has all of its products once
//! step `j` is done, so `kw` accumulators suffice, used as a ring (input `X` in slot
//! `X mod kw`, the kernel width a constant so that the slots are registers): per output one
//! load of a vector of its channels' gradient (outputs-major `gt[i·ow + j][o]`, the lanes weight
//! gradient's copy) and `kw` multiply-adds with the kernel row's weights (the forward pass's
//! tap-major regrouping `wt[t][o]`), held in registers for the row. A term is one kernel row
//! and one vector of channels; a finished input is added to the row's partial sums (`wp`
//! vectors on the stack; at 16 lanes two terms run at once, in the 32 registers, so the
//! partial sums are read and written once per two); when the row's terms are done,
//! [`F32s::lane_sums`] adds each input's lanes, `LANES` inputs at once.
//!
//! Against the wide columns' `Wᵀ · g_wide` (`dwide.rs`), which multiplies 136 columns per 100
//! outputs in LeNet-5's conv2 and adds each of its rows into the padded planes, this makes
//! each product `W[o][c][u][v] · g[o][i][j]` once, without a branch, and writes each input
//! once.
//!
//! The sums: lane `o mod LANES` of input `X` adds one partial sum per term (kernel row `u`
//! ascending, then channel vector ascending), each summed from 0 over the outputs `j`
//! ascending (so `v` descending) by fused multiply-adds; then the lanes by halving folds.
//! A fixed order for every shape, at either width,
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
    // SAFETY: the caller's contract. One term at a time: 2·kw + 1 of the 16 registers.
    unsafe { by_kernel_width::<__m256, 1>(g, wt, gt, dx) }
}

/// # Safety
/// AVX-512F; the shapes asserted by [`input_grad`].
#[target_feature(enable = "avx512f")]
unsafe fn input_grad_16(g: &Geometry, wt: &[f32], gt: &[f32], dx: &mut [f32]) {
    // SAFETY: the caller's contract. Two terms at once: 4·kw + 2 of the 32 registers.
    unsafe { by_kernel_width::<__m512, 2>(g, wt, gt, dx) }
}

/// [`input_grad_with`] with the kernel width `g.kw ≤ MAX_KW` as a constant.
///
/// # Safety
/// As [`input_grad_with`].
#[inline(always)]
unsafe fn by_kernel_width<V: F32s, const R: usize>(
    g: &Geometry,
    wt: &[f32],
    gt: &[f32],
    dx: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe {
        match g.kw {
            1 => input_grad_with::<V, R, 1>(g, wt, gt, dx),
            2 => input_grad_with::<V, R, 2>(g, wt, gt, dx),
            3 => input_grad_with::<V, R, 3>(g, wt, gt, dx),
            4 => input_grad_with::<V, R, 4>(g, wt, gt, dx),
            5 => input_grad_with::<V, R, 5>(g, wt, gt, dx),
            6 => input_grad_with::<V, R, 6>(g, wt, gt, dx),
            _ => input_grad_with::<V, R, MAX_KW>(g, wt, gt, dx),
        }
    }
}

/// Every row `(c, y)` of `dx`: its partial sums over the terms, then their lanes.
///
/// # Safety
/// The CPU has `V`'s tier; `KW = g.kw`; the shapes asserted by [`input_grad`].
#[inline(always)]
unsafe fn input_grad_with<V: F32s, const R: usize, const KW: usize>(
    g: &Geometry,
    wt: &[f32],
    gt: &[f32],
    dx: &mut [f32],
) {
    debug_assert!(KW == g.kw && KB.is_multiple_of(V::LANES));
    let (ph, pw) = g.p.padding;
    // SAFETY: the caller's contract. `KB` slots past the widest row: the lane sums below
    // read whole windows of `LANES` inputs (the slots past a row's end are zeros or an
    // earlier row's, and their lanes are never stored).
    let mut row = [unsafe { V::zero() }; MAX_ROW + KB];
    for c in 0..g.c {
        for y in 0..g.h {
            // SAFETY: the caller's contract.
            unsafe { row_partials::<V, R, KW>(g, (wt, gt), (c, y + ph), &mut row) };
            let dx_row = &mut dx[(c * g.h + y) * g.w..][..g.w];
            for x0 in (0..g.w).step_by(V::LANES) {
                let n = V::LANES.min(g.w - x0);
                // SAFETY: the caller's contract; inputs x0 .. x0 + n are in the row.
                unsafe {
                    let sums = V::lane_sums(&row[pw + x0..][..V::LANES]);
                    sums.store_first(dx_row[x0..].as_mut_ptr(), n);
                }
            }
        }
    }
}

/// `row[X]` for the `wp` inputs `X` of channel `c`'s padded row `yp`: the partial sums of the
/// module docs, one per term — a kernel row `u` with an output row `i = yp − u`, a block of 16
/// channels, and a vector of `LANES` of them (`u` outer, vectors inner) — added in that order.
/// `R` terms run at once, their `R·kw` accumulators and weights in registers, so the row's
/// partial sums are read and written once per `R` terms.
///
/// # Safety
/// The CPU has `V`'s tier; `KW = g.kw`; the shapes asserted by [`input_grad`], `c < g.c`
/// and `yp` a padded row.
#[inline(always)]
unsafe fn row_partials<V: F32s, const R: usize, const KW: usize>(
    g: &Geometry,
    (wt, gt): (&[f32], &[f32]),
    (c, yp): (usize, usize),
    row: &mut [V; MAX_ROW + KB],
) {
    let (k, taps, wp) = (g.k, g.ckk(), g.ow + KW - 1);
    // Never empty: with stride 1, oh = hp − kh + 1, so yp − oh + 1 < kh.
    let us = (yp + 1).saturating_sub(g.oh)..g.kh.min(yp + 1);
    let vectors = k / V::LANES;
    let terms = us.len() * vectors;
    // Term t's kernel-row weights (KW taps, KB apart) and its output row's gradients (ow
    // outputs, k apart), at channel o0 of block k0: inside `wt` and `gt` by the shapes. Index
    // arithmetic only: a closure is compiled without the caller's target features, so one
    // holding an intrinsic would be a call in the loop (docs/kernels.md).
    let term = |t: usize| {
        let (u, o) = (us.start + t / vectors, t % vectors * V::LANES);
        let (k0, o0) = (o / KB * KB, o % KB);
        let w = wt[k0 * taps + (c * g.kh + u) * KW * KB + o0..].as_ptr();
        (w, gt[(yp - u) * g.ow * k + o..].as_ptr())
    };
    let row = &mut row[..wp];
    let dims = (k, g.ow);
    for t in (0..terms).step_by(R) {
        // SAFETY: the terms' pointers as above.
        unsafe {
            if t + R <= terms {
                let (mut w, mut gs) = ([wt.as_ptr(); R], [gt.as_ptr(); R]);
                for r in 0..R {
                    (w[r], gs[r]) = term(t + r);
                }
                match t == 0 {
                    true => correlate_row::<V, KW, R, true>((w, gs, dims), row),
                    false => correlate_row::<V, KW, R, false>((w, gs, dims), row),
                }
            } else {
                for t in t..terms {
                    let (w, gs) = term(t);
                    match t == 0 {
                        true => correlate_row::<V, KW, 1, true>(([w], [gs], dims), row),
                        false => correlate_row::<V, KW, 1, false>(([w], [gs], dims), row),
                    }
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
/// The CPU has `V`'s tier; each `w[r] + v·KB` holds `LANES` weights for `v < KW`, and
/// `g[r] + j·stride` `LANES` gradients for `j < ow`.
#[inline(always)]
unsafe fn correlate_row<V: F32s, const KW: usize, const R: usize, const FIRST: bool>(
    (w, g, (stride, ow)): ([*const f32; R], [*const f32; R], (usize, usize)),
    row: &mut [V],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut wv = [[V::zero(); KW]; R];
        for r in 0..R {
            for v in 0..KW {
                wv[r][v] = V::load(w[r].add(v * KB));
            }
        }
        let mut ring = [[V::zero(); KW]; R];
        for j0 in (0..row.len()).step_by(KW) {
            // Unrolled: the ring's slot for input j0 + phase + v is a constant.
            for phase in 0..KW {
                let j = j0 + phase;
                if j >= row.len() {
                    return;
                }
                if j < ow {
                    for r in 0..R {
                        let gv = V::load(g[r].add(j * stride));
                        for v in 0..KW {
                            let acc = &mut ring[r][(phase + v) % KW];
                            *acc = V::mul_add(wv[r][v], gv, *acc);
                        }
                    }
                }
                let mut sum = if FIRST {
                    ring[0][phase]
                } else {
                    V::add(row[j], ring[0][phase])
                };
                for ring in &ring[1..] {
                    sum = V::add(sum, ring[phase]);
                }
                row[j] = sum;
                for ring in &mut ring {
                    ring[phase] = V::zero();
                }
            }
        }
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
    /// partial sums' additions (one per term: `kh·k/LANES`) or the folds (at most 4), so at
    /// most `n = kw + kh·k/LANES + 4` roundings and
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
        let lanes = match width {
            Width::Eight => 8,
            Width::Sixteen => 16,
        };
        let n = (g.kw + g.kh * g.k / lanes + 4) as f64;
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
