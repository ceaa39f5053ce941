//! Stride-1 convolution kernels with the output channels in the vector lanes, for `f32`,
//! written once for any vector width ([`F32s`]) and instantiated at two ([`Width`]). The
//! forward pass: for a block of 16 channels `k0 + b` and a run of outputs `p = i·ow + j`,
//!
//! ```text
//! y[k0+b][p] = Σ_t wt[t][b] · src[base_p + off_t]  (+ bias[k0+b])    base_p = i·wp + j
//! ```
//!
//! over the taps `t = (c, u, v)` of a [`Taps`] grid (`off_t = c·plane + u·wp + v`), in order,
//! with the weights regrouped tap-major by `taps::regroup_weights` with 16 channels per block.
//! Accumulator `j` holds output `p0 + j` for the block's 16 channels (`NV` vectors), so one tap
//! is `NV` loads of its 16 weights, one broadcast input scalar per output and `NV` fused
//! multiply-adds per output. After the last tap the accumulators are stored as 16 channel rows
//! of the run's consecutive outputs ([`F32s::store_columns`]).
//!
//! The weight gradient (`dW[o][t] = Σ_p g[o][p] · src[base_p + off_t]`, [`weight_grad`]) is
//! the same loop with taps and outputs in each other's place: the accumulators hold up to 6
//! taps of one kernel row × 16 channels, and each output is `NV` loads of its 16 channels'
//! gradient (from an outputs-major copy, [`transpose`]) and one broadcast input per tap.
//!
//! Against the taps kernel (`taps.rs`), which puts a run of outputs in the lanes, this one
//! visits only real outputs: the taps kernel runs over the shifted method's wide columns (136
//! per 100 outputs in LeNet-5's conv2) and over whole blocks of 6 channels (18 for 16). Each
//! output is the same chain, from 0 over the taps in order and the bias added last, so the two
//! give the same bits, at either width; and each weight's gradient is `gemm`'s chain over the
//! outputs in order (without the wide columns' exact zeros), added to the sum so far as `gemm`
//! adds it.

#![cfg(target_arch = "x86_64")]

use super::taps::Taps;
use crate::matmul::transpose8;
use crate::simd::F32s;
use crate::Tier;
use std::arch::x86_64::*;

/// Output channels per block.
pub(super) const KB: usize = 16;
/// Taps per block of the weight gradient: at most one row `(c, u)` of the kernel, so that the
/// block's inputs are one contiguous run for every output.
const TAPS_RUN: usize = 6;

/// The vector width a lanes kernel runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Width {
    /// AVX2 + FMA: a block of 16 channels is two vectors of 8, a forward run 6 outputs (12
    /// accumulators, 2 weight vectors and a broadcast: 15 of the 16 registers).
    Eight,
    /// AVX-512F: a block is one vector of 16, a forward run 10 outputs (10 accumulators of the
    /// 32 registers): per tap one weight load and 10 multiply-adds against two loads and 12 for
    /// 6 outputs at 8 lanes.
    Sixteen,
}

impl Width {
    /// The tier the width needs.
    pub(super) fn tier(self) -> Tier {
        match self {
            Width::Eight => Tier::Avx2,
            Width::Sixteen => Tier::Avx512,
        }
    }

    /// Outputs per forward run: the output rows must hold at least this many.
    pub(super) fn run(self) -> usize {
        match self {
            Width::Eight => 6,
            Width::Sixteen => 10,
        }
    }
}

/// The outputs `oh × ow` of one image, read from planes `wp` scalars wide.
#[derive(Clone, Copy, Debug)]
pub(super) struct OutGrid {
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) wp: usize,
}

impl OutGrid {
    pub(super) fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Where output `p` (numbered `i·ow + j`) starts reading: `i·wp + j`.
    pub(super) fn base(&self, p: usize) -> usize {
        p / self.ow * self.wp + p % self.ow
    }
}

/// Runs of `run` outputs from `p0 = 0` in steps of `run`, the last one moved back to end at the
/// last output (its first outputs are computed twice, with the same bits); `run ≤ positions`.
fn runs(positions: usize, run: usize) -> impl Iterator<Item = usize> {
    (0..positions.div_ceil(run)).map(move |r| (r * run).min(positions - run))
}

// ---------------------------------------------------------------------------------------------
// Forward pass.

/// One image's work: every output of `k` channels from `src`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lanes<'a> {
    pub(super) taps: Taps,
    pub(super) out: OutGrid,
    pub(super) src: &'a [f32],
    /// `[k / 16, taps, 16]`.
    pub(super) wt: &'a [f32],
    /// `k` biases, added to the end of each chain.
    pub(super) bias: Option<&'a [f32]>,
}

/// Writes the image's outputs `y[k][p]` (`[k, oh·ow]`, `k = wt.len() / (16·taps)`).
///
/// # Panics
/// Without the width's tier, if the output rows are narrower than a run, or if a buffer is
/// shorter than the taps, weights or outputs need.
pub(super) fn forward(width: Width, l: &Lanes<'_>, y: &mut [f32]) {
    assert!(
        width.tier().is_supported(),
        "{width:?} lanes need the CPU's support"
    );
    let (taps, out, run) = (l.taps.len(), l.out, width.run());
    let k = l.wt.len() / (KB * taps.max(1)) * KB;
    assert!(
        out.ow >= run && out.oh > 0 && taps > 0,
        "rows of {run} outputs, and taps"
    );
    assert!(
        out.wp >= out.ow,
        "planes at least as wide as the output rows"
    );
    assert_eq!(l.wt.len(), k * taps, "weights: whole blocks of 16 channels");
    assert_eq!(y.len(), k * out.positions(), "output length");
    let last_base = out.base(out.positions() - 1);
    assert!(
        l.src.len() >= l.taps.reach(last_base + 1),
        "taps read past the source"
    );
    assert!(l.bias.is_none_or(|b| b.len() == k), "one bias per channel");
    assert!(
        KB * out.positions() <= i32::MAX as usize,
        "store offsets fit in 32 bits"
    );
    // SAFETY: the width's tier is available, and the bounds were asserted above.
    unsafe {
        match width {
            Width::Eight => forward_8(l, y, k),
            Width::Sixteen => forward_16(l, y, k),
        }
    }
}

/// # Safety
/// AVX2 + FMA; the bounds asserted by [`forward`].
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_8(l: &Lanes<'_>, y: &mut [f32], k: usize) {
    // SAFETY: the caller's contract.
    unsafe { forward_with::<__m256, 2, 6>(l, y, k) }
}

/// # Safety
/// AVX-512F; the bounds asserted by [`forward`].
#[target_feature(enable = "avx512f")]
unsafe fn forward_16(l: &Lanes<'_>, y: &mut [f32], k: usize) {
    // SAFETY: the caller's contract.
    unsafe { forward_with::<__m512, 1, 10>(l, y, k) }
}

/// The forward pass with `NV` vectors of `V` per block of 16 channels and runs of `RUN`.
///
/// # Safety
/// The CPU has `V`'s tier; `NV·LANES = 16`; the bounds asserted by [`forward`].
#[inline(always)]
unsafe fn forward_with<V: F32s, const NV: usize, const RUN: usize>(
    l: &Lanes<'_>,
    y: &mut [f32],
    k: usize,
) {
    debug_assert_eq!(NV * V::LANES, KB);
    let (out, positions, taps) = (l.out, l.out.positions(), l.taps.len());
    for k0 in (0..k).step_by(KB) {
        let wt = l.wt[k0 * taps..][..KB * taps].as_ptr();
        let mut bias = [None; NV];
        if let Some(b) = l.bias {
            for (h, bias) in bias.iter_mut().enumerate() {
                // SAFETY: lanes h·LANES.. of the block's 16 biases.
                *bias = Some(unsafe { V::load(b[k0 + h * V::LANES..][..V::LANES].as_ptr()) });
            }
        }
        let y_k = y[k0 * positions..][..KB * positions].as_mut_ptr();
        for p0 in runs(positions, RUN) {
            // The run's outputs: `first` of them from row p0 / ow, the rest from the next row,
            // whose inputs start `wp − ow` further on than the row's end.
            let first = (out.ow - p0 % out.ow).min(RUN);
            let a = l.src.as_ptr().wrapping_add(out.base(p0));
            let b = a.wrapping_add(out.wp - out.ow);
            // SAFETY: every output's taps are inside `src` (the last output's reach was
            // asserted, and runs end at or before it), and `wt` holds the block's taps·16;
            // channel h·LANES + b of output p0 + j is inside the block's 16·positions.
            unsafe {
                let acc = run_split::<V, NV, RUN>(first, &l.taps, (a, b), wt);
                for (h, &bias) in bias.iter().enumerate() {
                    let mut cols = [V::zero(); RUN];
                    for (c, acc) in cols.iter_mut().zip(&acc) {
                        *c = match bias {
                            Some(bias) => V::add(acc[h], bias),
                            None => acc[h],
                        };
                    }
                    let y = y_k.add(h * V::LANES * positions + p0);
                    V::store_columns(&cols, y, positions);
                }
            }
        }
    }
}

/// [`run`] with its `first` (`1 ≤ first ≤ RUN ≤ 10`) as a constant.
///
/// # Safety
/// As [`run`].
#[inline(always)]
unsafe fn run_split<V: F32s, const NV: usize, const RUN: usize>(
    first: usize,
    t: &Taps,
    ab: (*const f32, *const f32),
    wt: *const f32,
) -> [[V; NV]; RUN] {
    // SAFETY: the caller's contract.
    unsafe {
        match first {
            1 => run::<V, NV, RUN, 1>(t, ab, wt),
            2 => run::<V, NV, RUN, 2>(t, ab, wt),
            3 => run::<V, NV, RUN, 3>(t, ab, wt),
            4 => run::<V, NV, RUN, 4>(t, ab, wt),
            5 => run::<V, NV, RUN, 5>(t, ab, wt),
            6 if RUN > 6 => run::<V, NV, RUN, 6>(t, ab, wt),
            7 if RUN > 7 => run::<V, NV, RUN, 7>(t, ab, wt),
            8 if RUN > 8 => run::<V, NV, RUN, 8>(t, ab, wt),
            9 if RUN > 9 => run::<V, NV, RUN, 9>(t, ab, wt),
            _ => run::<V, NV, RUN, RUN>(t, ab, wt),
        }
    }
}

/// `acc[j][h][b] = Σ_t wt[t][h·LANES + b] · x_j[off_t]`, one chain per output in tap order,
/// where output `j` reads from `x_j = a + j` for `j < FIRST` and `x_j = b + j` after (the next
/// row).
///
/// # Safety
/// The CPU has `V`'s tier; `x_j[off_t]` is readable for every `j` and tap `t`, and `wt` for
/// `taps·16`.
#[inline(always)]
unsafe fn run<V: F32s, const NV: usize, const RUN: usize, const FIRST: usize>(
    t: &Taps,
    (a, b): (*const f32, *const f32),
    wt: *const f32,
) -> [[V; NV]; RUN] {
    // SAFETY: the contract; `w` walks the taps·16 weights.
    unsafe {
        let mut acc = [[V::zero(); NV]; RUN];
        let mut w = wt;
        for c in 0..t.planes {
            for u in 0..t.rows {
                for v in 0..t.cols {
                    let off = c * t.plane + u * t.row + v;
                    let mut wv = [V::zero(); NV];
                    for (h, wv) in wv.iter_mut().enumerate() {
                        *wv = V::load(w.add(h * V::LANES));
                    }
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = if j < FIRST { a } else { b };
                        let x = V::splat(*x.add(off + j));
                        for (acc, &wv) in acc.iter_mut().zip(&wv) {
                            *acc = V::mul_add(wv, x, *acc);
                        }
                    }
                    w = w.add(KB);
                }
            }
        }
        acc
    }
}

// ---------------------------------------------------------------------------------------------
// Weight gradient: the same chains with taps and outputs in each other's place.

/// One image's weight-gradient work, `dwt[t][o] (+)= Σ_p gt[p][o] · src[base_p + off_t]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct WeightGrad<'a> {
    pub(super) taps: Taps,
    pub(super) out: OutGrid,
    pub(super) src: &'a [f32],
    /// The output gradient, outputs-major: `[oh·ow, k]` ([`transpose`]d).
    pub(super) gt: &'a [f32],
}

/// The weight gradient of one image, tap-major: `dwt[t][o] = Σ_p gt[p][o] ·
/// src[base_p + off_t]`, summed from 0 over the outputs in order, then added to `dwt` when
/// `add` (`acc + old`, the order of `gemm`'s `1·acc + 1·c`). The same bits at either width.
///
/// # Panics
/// Without the width's tier, or if a buffer is shorter than the taps, outputs or channels need.
pub(super) fn weight_grad(width: Width, l: &WeightGrad<'_>, dwt: &mut [f32], add: bool) {
    assert!(
        width.tier().is_supported(),
        "{width:?} lanes need the CPU's support"
    );
    let (taps, out) = (l.taps.len(), l.out);
    assert!(out.oh > 0 && out.ow > 0 && taps > 0, "outputs and taps");
    assert!(
        out.wp >= out.ow,
        "planes at least as wide as the output rows"
    );
    let k = l.gt.len() / out.positions();
    assert!(k > 0 && k.is_multiple_of(KB), "whole blocks of 16 channels");
    assert_eq!(l.gt.len(), k * out.positions(), "output gradient length");
    assert_eq!(dwt.len(), taps * k, "weight gradient length");
    let last_base = out.base(out.positions() - 1);
    assert!(
        l.src.len() >= l.taps.reach(last_base + 1),
        "taps read past the source"
    );
    // SAFETY: the width's tier is available, and the bounds were asserted above.
    unsafe {
        match width {
            Width::Eight => weight_grad_8(l, dwt, add, k),
            Width::Sixteen => weight_grad_16(l, dwt, add, k),
        }
    }
}

/// # Safety
/// AVX2 + FMA; the bounds asserted by [`weight_grad`].
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_grad_8(l: &WeightGrad<'_>, dwt: &mut [f32], add: bool, k: usize) {
    // SAFETY: the caller's contract.
    unsafe { weight_grad_with::<__m256, 2>(l, dwt, add, k) }
}

/// # Safety
/// AVX-512F; the bounds asserted by [`weight_grad`].
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_16(l: &WeightGrad<'_>, dwt: &mut [f32], add: bool, k: usize) {
    // SAFETY: the caller's contract.
    unsafe { weight_grad_with::<__m512, 1>(l, dwt, add, k) }
}

/// The weight gradient with `NV` vectors of `V` per block of 16 channels.
///
/// # Safety
/// The CPU has `V`'s tier; `NV·LANES = 16`; the bounds asserted by [`weight_grad`].
#[inline(always)]
unsafe fn weight_grad_with<V: F32s, const NV: usize>(
    l: &WeightGrad<'_>,
    dwt: &mut [f32],
    add: bool,
    k: usize,
) {
    debug_assert_eq!(NV * V::LANES, KB);
    let t = l.taps;
    for k0 in (0..k).step_by(KB) {
        for row in 0..t.planes * t.rows {
            let (c, u) = (row / t.rows, row % t.rows);
            for v0 in (0..t.cols).step_by(TAPS_RUN) {
                let n = (t.cols - v0).min(TAPS_RUN);
                let x = l.src.as_ptr().wrapping_add(c * t.plane + u * t.row + v0);
                let gt = l.gt.as_ptr().wrapping_add(k0);
                let first = (row * t.cols + v0) * k + k0;
                // SAFETY: the block's taps, read at every output's base, are inside `src`
                // (the last output's reach was asserted); `gt` holds k per output; each of
                // the n taps' 16 channels is inside `dwt` (checked by the slice).
                unsafe {
                    let acc = tap_run_n::<V, NV>(n, l.out, x, (gt, k));
                    for (j, acc) in acc.iter().enumerate().take(n) {
                        let dst = dwt[first + j * k..][..KB].as_mut_ptr();
                        add_store(acc, dst, add);
                    }
                }
            }
        }
    }
}

/// `dst = acc (+ dst)` for one tap's 16 channels.
///
/// # Safety
/// The CPU has `V`'s tier; `dst` holds `NV·LANES` scalars.
#[inline(always)]
unsafe fn add_store<V: F32s, const NV: usize>(acc: &[V; NV], dst: *mut f32, add: bool) {
    for (h, &a) in acc.iter().enumerate() {
        // SAFETY: lanes h·LANES .. (h + 1)·LANES of `dst`.
        unsafe {
            let p = dst.add(h * V::LANES);
            let v = if add { V::add(a, V::load(p)) } else { a };
            v.store(p);
        }
    }
}

/// [`tap_run`] with its tap count `n ≤ 6` as a constant.
///
/// # Safety
/// As [`tap_run`].
#[inline(always)]
unsafe fn tap_run_n<V: F32s, const NV: usize>(
    n: usize,
    out: OutGrid,
    x: *const f32,
    gt: (*const f32, usize),
) -> [[V; NV]; TAPS_RUN] {
    // SAFETY: the caller's contract.
    unsafe {
        match n {
            1 => tap_run::<V, NV, 1>(out, x, gt),
            2 => tap_run::<V, NV, 2>(out, x, gt),
            3 => tap_run::<V, NV, 3>(out, x, gt),
            4 => tap_run::<V, NV, 4>(out, x, gt),
            5 => tap_run::<V, NV, 5>(out, x, gt),
            _ => tap_run::<V, NV, 6>(out, x, gt),
        }
    }
}

/// `acc[v][h][b] = Σ_p gt[p][h·LANES + b] · x[base_p + v]` for `v < N`, over the outputs `p`
/// in order (the first `N` of the 6 accumulators; the rest stay 0).
///
/// # Safety
/// The CPU has `V`'s tier; `x[base_p + v]` is readable for every output `p` and `v < N`, and
/// `gt[p·k ..][..16]` for every `p`.
#[inline(always)]
unsafe fn tap_run<V: F32s, const NV: usize, const N: usize>(
    out: OutGrid,
    x: *const f32,
    (gt, k): (*const f32, usize),
) -> [[V; NV]; TAPS_RUN] {
    // SAFETY: the contract.
    unsafe {
        let mut acc = [[V::zero(); NV]; TAPS_RUN];
        for i in 0..out.oh {
            for j in 0..out.ow {
                let g = gt.add((i * out.ow + j) * k);
                let mut gv = [V::zero(); NV];
                for (h, gv) in gv.iter_mut().enumerate() {
                    *gv = V::load(g.add(h * V::LANES));
                }
                let x = x.add(i * out.wp + j);
                for (v, acc) in acc.iter_mut().enumerate().take(N) {
                    let xv = V::splat(*x.add(v));
                    for (a, &g) in acc.iter_mut().zip(&gv) {
                        *a = V::mul_add(g, xv, *a);
                    }
                }
            }
        }
        acc
    }
}

/// Writes `src` (`[rows, cols]`) transposed into `dst` (`[cols, rows]`), in 8×8 register
/// blocks where they fit (AVX2, which both widths' tiers have).
pub(super) fn transpose(src: &[f32], rows: usize, dst: &mut [f32]) {
    assert!(
        Tier::Avx2.is_supported(),
        "the lanes kernels need AVX2 and FMA"
    );
    assert_eq!(src.len(), dst.len(), "same length");
    let cols = src.len() / rows.max(1);
    assert_eq!(src.len(), rows * cols, "whole rows");
    // SAFETY: AVX2 is available; both buffers hold rows·cols scalars.
    unsafe { transpose_avx2(src.as_ptr(), (rows, cols), dst.as_mut_ptr()) }
}

/// # Safety
/// AVX2 is available; `src` and `dst` hold `rows·cols` scalars.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_avx2(src: *const f32, (rows, cols): (usize, usize), dst: *mut f32) {
    const L: usize = 8;
    let (full_r, full_c) = (rows / L * L, cols / L * L);
    // SAFETY (every access): row r < rows and column c < cols of the `rows × cols` source,
    // column c < cols and row r < rows of the `cols × rows` destination.
    unsafe {
        for r0 in (0..full_r).step_by(L) {
            for c0 in (0..full_c).step_by(L) {
                let block: [__m256; L] =
                    std::array::from_fn(|r| _mm256_loadu_ps(src.add((r0 + r) * cols + c0)));
                for (c, v) in transpose8(block).into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((c0 + c) * rows + r0), v);
                }
            }
        }
        // The edges: columns past the last block of 8 in the block rows, then the rows past
        // the last block of 8.
        for r in 0..rows {
            let from = if r < full_r { full_c } else { 0 };
            for c in from..cols {
                *dst.add(c * rows + r) = *src.add(r * cols + c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid of `c` planes `hp × wp` under a `kh × kw` kernel.
    fn grid(c: usize, (hp, wp): (usize, usize), (kh, kw): (usize, usize)) -> Taps {
        Taps {
            planes: c,
            plane: hp * wp,
            rows: kh,
            row: wp,
            cols: kw,
        }
    }

    fn val(i: usize, m: usize) -> f32 {
        ((i * 7919 + m) % 113) as f32 / 17.0 - 3.0
    }

    /// The shapes tried: LeNet-5's conv2 (6 → 16 channels, 14×14 → 10×10), 32 channels, padded
    /// planes wider than the rows, rows of 11 (runs that end mid-row and a last run moved back),
    /// a kernel row wider than a tap run (7 taps: a run of 6 and one of 1).
    const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 4] = [
        (6, 16, 10, 10, 14, 5, 5),
        (3, 32, 7, 11, 13, 3, 3),
        (2, 16, 3, 10, 12, 2, 3),
        (1, 16, 4, 12, 18, 2, 7),
    ];

    /// The widths this CPU runs, saying which it skips.
    fn widths() -> Vec<Width> {
        let all = [Width::Eight, Width::Sixteen];
        let (run, skip): (Vec<_>, Vec<_>) = all.iter().partition(|w| w.tier().is_supported());
        if !skip.is_empty() {
            eprintln!("skipped {skip:?}: this CPU lacks their tier");
        }
        run
    }

    /// The forward pass at every width this CPU has equals the chain written out in scalars
    /// (one fused multiply-add per tap, in order, from 0, the bias added last), bit for bit,
    /// with and without a bias; outputs are cut from a NaN-filled buffer whose tail must stay
    /// untouched.
    #[test]
    fn forward_is_the_scalar_chain_at_every_width() {
        for (c, k, oh, ow, wp, kh, kw) in SHAPES {
            let hp = oh + kh - 1;
            let taps = grid(c, (hp, wp), (kh, kw));
            let src: Vec<f32> = (0..c * hp * wp).map(|i| val(i, 1)).collect();
            let wt: Vec<f32> = (0..k * taps.len()).map(|i| val(i, 2)).collect();
            let bias: Vec<f32> = (0..k).map(|i| val(i, 3)).collect();
            let out = OutGrid { oh, ow, wp };
            for bias in [Some(&bias[..]), None] {
                let l = Lanes {
                    taps,
                    out,
                    src: &src,
                    wt: &wt,
                    bias,
                };
                let n = k * oh * ow;
                for width in widths().into_iter().filter(|w| ow >= w.run()) {
                    let mut got = vec![f32::NAN; n + 7];
                    forward(width, &l, &mut got[..n]);
                    let at = format!("{width:?}: c {c} k {k} {oh}×{ow} wp {wp} {kh}×{kw}");
                    for o in 0..k {
                        for p in 0..oh * ow {
                            let (blk, b) = (o / KB, o % KB);
                            let mut want = 0.0f32;
                            for t in 0..taps.len() {
                                let x = src[out.base(p) + taps.offset(t)];
                                want = wt[(blk * taps.len() + t) * KB + b].mul_add(x, want);
                            }
                            let want = bias.map_or(want, |bias| want + bias[o]);
                            let got = got[o * oh * ow + p];
                            assert_eq!(got.to_bits(), want.to_bits(), "{at}: y[{o}][{p}]");
                        }
                    }
                    assert!(
                        got[n..].iter().all(|v| v.is_nan()),
                        "{at}: wrote past the end"
                    );
                }
            }
        }
    }

    /// The weight gradient at every width this CPU has equals the chain over the outputs in
    /// order written out in scalars, bit for bit, overwriting and adding to what is there;
    /// `dwt` is cut from a NaN-filled buffer whose tail must stay untouched.
    #[test]
    fn weight_grad_is_the_scalar_chain_at_every_width() {
        for (c, k, oh, ow, wp, kh, kw) in SHAPES {
            let hp = oh + kh - 1;
            let taps = grid(c, (hp, wp), (kh, kw));
            let out = OutGrid { oh, ow, wp };
            let src: Vec<f32> = (0..c * hp * wp).map(|i| val(i, 4)).collect();
            let gt: Vec<f32> = (0..oh * ow * k).map(|i| val(i, 5)).collect();
            let old: Vec<f32> = (0..taps.len() * k).map(|i| val(i, 6)).collect();
            let l = WeightGrad {
                taps,
                out,
                src: &src,
                gt: &gt,
            };
            let n = taps.len() * k;
            for width in widths() {
                for add in [false, true] {
                    let mut got = vec![f32::NAN; n + 5];
                    got[..n].copy_from_slice(&old);
                    weight_grad(width, &l, &mut got[..n], add);
                    let at = format!("{width:?} add {add}: c {c} k {k} {oh}×{ow} {kh}×{kw}");
                    for t in 0..taps.len() {
                        for o in 0..k {
                            let mut want = 0.0f32;
                            for p in 0..oh * ow {
                                let x = src[out.base(p) + taps.offset(t)];
                                want = gt[p * k + o].mul_add(x, want);
                            }
                            let want = if add { want + old[t * k + o] } else { want };
                            let got = got[t * k + o];
                            assert_eq!(got.to_bits(), want.to_bits(), "{at}: dwt[{t}][{o}]");
                        }
                    }
                    assert!(
                        got[n..].iter().all(|v| v.is_nan()),
                        "{at}: wrote past the end"
                    );
                }
            }
        }
    }
}
