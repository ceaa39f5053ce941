//! Stride-1 convolution kernels with the output channels in the vector lanes, for `f32` on
//! AVX2 + FMA. The forward pass: for a block of 16 channels `k0 + b` and a run of 6 outputs
//! `p = i·ow + j`,
//!
//! ```text
//! y[k0+b][p] = Σ_t wt[t][b] · src[base_p + off_t]  (+ bias[k0+b])    base_p = i·wp + j
//! ```
//!
//! over the taps `t = (c, u, v)` of a [`Taps`] grid (`off_t = c·plane + u·wp + v`), in order,
//! with the weights regrouped tap-major by `taps::regroup_weights` with 16 channels per block.
//! Accumulators `j` hold output `p0 + j` for the block's 16 channels (two vectors), so one tap
//! is two loads of its 16 weights, 6 broadcast input scalars and 12 fused multiply-adds (12
//! accumulators, 2 weight vectors and a broadcast: 15 of the 16 registers). After the last tap
//! each half is transposed in registers (6 outputs × 8 channels, as an 8×8 block) and stored
//! as 8 channel rows of 6 consecutive outputs.
//!
//! The weight gradient (`dW[o][t] = Σ_p g[o][p] · src[base_p + off_t]`, [`weight_grad`]) is
//! the same loop with taps and outputs in each other's place: 12 accumulators hold 6 taps of
//! one kernel row × 16 channels, and each output is two loads of its 16 channels' gradient
//! (from an outputs-major copy) and 6 broadcast inputs.
//!
//! Against the taps kernel (`taps.rs`), which puts a run of outputs in the lanes, this one
//! visits only real outputs: the taps kernel runs over the shifted method's wide columns (136
//! per 100 outputs in LeNet-5's conv2) and over whole blocks of 6 channels (18 for 16). Each
//! output is the same chain, from 0 over the taps in order and the bias added last, so the two
//! give the same bits; and each weight's gradient is `gemm`'s chain over the outputs in order
//! (without the wide columns' exact zeros), added to the sum so far as `gemm` adds it.

#![cfg(target_arch = "x86_64")]

use super::taps::Taps;
use crate::matmul::{store_first, transpose8};
use crate::Tier;
use std::arch::x86_64::*;

/// Output channels per block: two vectors' lanes.
pub(super) const KB: usize = 16;
/// Vectors of 8 channels per block.
const NV: usize = KB / LANES;
/// Channels per vector.
const LANES: usize = 8;
/// Outputs per run: two accumulators each.
pub(super) const RUN: usize = 6;

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
/// Without AVX2 + FMA, if the output rows are narrower than a run (`ow < 6`), or if a buffer
/// is shorter than the taps, weights or outputs need.
pub(super) fn forward(l: &Lanes<'_>, y: &mut [f32]) {
    assert!(
        Tier::Avx2.is_supported(),
        "the lanes kernel needs AVX2 and FMA"
    );
    let (taps, out) = (l.taps.len(), l.out);
    let k = l.wt.len() / (KB * taps.max(1)) * KB;
    assert!(
        out.ow >= RUN && out.oh > 0 && taps > 0,
        "rows of {RUN} outputs, and taps"
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
    // SAFETY: AVX2 + FMA are available, and the bounds were asserted above.
    unsafe { forward_avx2(l, y, k) }
}

/// Runs of `run` outputs from `p0 = 0` in steps of `run`, the last one moved back to end at the
/// last output (its first outputs are computed twice, with the same bits); `run ≤ positions`.
pub(super) fn runs(positions: usize, run: usize) -> impl Iterator<Item = usize> {
    (0..positions.div_ceil(run)).map(move |r| (r * run).min(positions - run))
}

/// # Safety
/// AVX2 + FMA are available; the bounds asserted by [`forward`].
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(l: &Lanes<'_>, y: &mut [f32], k: usize) {
    let (out, positions, taps) = (l.out, l.out.positions(), l.taps.len());
    for k0 in (0..k).step_by(KB) {
        let wt = l.wt[k0 * taps..][..KB * taps].as_ptr();
        for p0 in runs(positions, RUN) {
            // The run's outputs: `first` of them from row p0 / ow, the rest from the next row,
            // whose inputs start `wp − ow` further on than the row's end.
            let first = (out.ow - p0 % out.ow).min(RUN);
            let a = l.src.as_ptr().wrapping_add(out.base(p0));
            let b = a.wrapping_add(out.wp - out.ow);
            // SAFETY: every output's taps are inside `src` (the last output's reach was
            // asserted, and runs end at or before it), and `wt` holds the block's taps·16.
            let acc = unsafe { run_split(first, &l.taps, (a, b), wt) };
            let bias = l.bias.map(|b| &b[k0..][..KB]);
            let y = &mut y[k0 * positions + p0..];
            store(acc, bias, (y, positions));
        }
    }
}

/// Adds the bias to `acc` and stores `acc[j][h]` lane `b` at `y[(8h + b)·stride + j]`.
#[target_feature(enable = "avx2,fma")]
fn store(acc: [[__m256; NV]; RUN], bias: Option<&[f32]>, (y, stride): (&mut [f32], usize)) {
    for h in 0..NV {
        let mut rows = [_mm256_setzero_ps(); LANES];
        for (r, a) in rows.iter_mut().zip(&acc) {
            *r = a[h];
        }
        if let Some(bias) = bias {
            // SAFETY: the slice holds the 8 scalars loaded.
            let bias = unsafe { _mm256_loadu_ps(bias[h * LANES..][..LANES].as_ptr()) };
            rows = rows.map(|r| _mm256_add_ps(r, bias));
        }
        for (b, outs) in transpose8(rows).into_iter().enumerate() {
            let dst = &mut y[(h * LANES + b) * stride..][..RUN];
            // SAFETY: dst holds the RUN scalars stored (in pieces: a masked store is slow on
            // AMD cores).
            unsafe { store_first(dst.as_mut_ptr(), outs, RUN) };
        }
    }
}

/// [`run`] with its `first` as a constant.
///
/// # Safety
/// As [`run`].
#[target_feature(enable = "avx2,fma")]
unsafe fn run_split(
    first: usize,
    t: &Taps,
    ab: (*const f32, *const f32),
    wt: *const f32,
) -> [[__m256; NV]; RUN] {
    // SAFETY: the caller's contract.
    unsafe {
        match first {
            1 => run::<1>(t, ab, wt),
            2 => run::<2>(t, ab, wt),
            3 => run::<3>(t, ab, wt),
            4 => run::<4>(t, ab, wt),
            5 => run::<5>(t, ab, wt),
            _ => run::<6>(t, ab, wt),
        }
    }
}

/// `acc[j][h][b] = Σ_t wt[t][8h + b] · x_j[off_t]`, one chain per output in tap order, where output
/// `j` reads from `x_j = a + j` for `j < FIRST` and `x_j = b + j` after (the next row).
///
/// # Safety
/// `x_j[off_t]` is readable for every `j` and tap `t`, and `wt` for `taps·16`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn run<const FIRST: usize>(
    t: &Taps,
    (a, b): (*const f32, *const f32),
    wt: *const f32,
) -> [[__m256; NV]; RUN] {
    let mut acc = [[_mm256_setzero_ps(); NV]; RUN];
    let mut w = wt;
    for c in 0..t.planes {
        for u in 0..t.rows {
            for v in 0..t.cols {
                let off = c * t.plane + u * t.row + v;
                // SAFETY: the contract; `w` walks the taps·16 weights.
                unsafe {
                    let wv = [_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(LANES))];
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = if j < FIRST { a } else { b };
                        let x = _mm256_broadcast_ss(&*x.add(off + j));
                        for (acc, &wv) in acc.iter_mut().zip(&wv) {
                            *acc = _mm256_fmadd_ps(wv, x, *acc);
                        }
                    }
                    w = w.add(KB);
                }
            }
        }
    }
    acc
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

/// Taps per block of the weight gradient: at most one row `(c, u)` of the kernel, so that the
/// block's inputs are one contiguous run for every output.
const TAPS_RUN: usize = 6;

/// The weight gradient of one image, tap-major: `dwt[t][o] = Σ_p gt[p][o] ·
/// src[base_p + off_t]`, summed from 0 over the outputs in order, then added to `dwt` when
/// `add` (`acc + old`, the order of `gemm`'s `1·acc + 1·c`).
///
/// # Panics
/// Without AVX2 + FMA, or if a buffer is shorter than the taps, outputs or channels need.
pub(super) fn weight_grad(l: &WeightGrad<'_>, dwt: &mut [f32], add: bool) {
    assert!(
        Tier::Avx2.is_supported(),
        "the lanes kernel needs AVX2 and FMA"
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
    // SAFETY: AVX2 + FMA are available, and the bounds were asserted above.
    unsafe { weight_grad_avx2(l, dwt, add, k) }
}

/// # Safety
/// AVX2 + FMA are available; the bounds asserted by [`weight_grad`].
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_grad_avx2(l: &WeightGrad<'_>, dwt: &mut [f32], add: bool, k: usize) {
    let t = l.taps;
    for k0 in (0..k).step_by(KB) {
        for row in 0..t.planes * t.rows {
            let (c, u) = (row / t.rows, row % t.rows);
            for v0 in (0..t.cols).step_by(TAPS_RUN) {
                let n = (t.cols - v0).min(TAPS_RUN);
                let x = l.src.as_ptr().wrapping_add(c * t.plane + u * t.row + v0);
                let gt = l.gt.as_ptr().wrapping_add(k0);
                // SAFETY: the block's taps, read at every output's base, are inside `src`
                // (the last output's reach was asserted); `gt` holds k per output.
                let acc = unsafe { tap_run_n(n, l.out, x, (gt, k)) };
                let first = (row * t.cols + v0) * k + k0;
                for (j, acc) in acc.iter().enumerate().take(n) {
                    let dst = &mut dwt[first + j * k..][..KB];
                    // SAFETY: dst holds the 16 scalars loaded and stored.
                    unsafe { add_store(acc, dst, add) };
                }
            }
        }
    }
}

/// `dst = acc (+ dst)` for one tap's 16 channels.
///
/// # Safety
/// `dst` holds 16 scalars (checked by the slice), and AVX2 is available.
#[target_feature(enable = "avx2,fma")]
unsafe fn add_store(acc: &[__m256; NV], dst: &mut [f32], add: bool) {
    let dst = &mut dst[..KB];
    for (h, &a) in acc.iter().enumerate() {
        // SAFETY: lanes h·8 .. h·8 + 8 of the 16-scalar `dst`.
        unsafe {
            let p = dst.as_mut_ptr().add(h * LANES);
            let v = if add {
                _mm256_add_ps(a, _mm256_loadu_ps(p))
            } else {
                a
            };
            _mm256_storeu_ps(p, v);
        }
    }
}

/// [`tap_run`] with its tap count `n ≤ 6` as a constant.
///
/// # Safety
/// As [`tap_run`].
#[target_feature(enable = "avx2,fma")]
unsafe fn tap_run_n(
    n: usize,
    out: OutGrid,
    x: *const f32,
    gt: (*const f32, usize),
) -> [[__m256; NV]; TAPS_RUN] {
    // SAFETY: the caller's contract.
    unsafe {
        match n {
            1 => tap_run::<1>(out, x, gt),
            2 => tap_run::<2>(out, x, gt),
            3 => tap_run::<3>(out, x, gt),
            4 => tap_run::<4>(out, x, gt),
            5 => tap_run::<5>(out, x, gt),
            _ => tap_run::<6>(out, x, gt),
        }
    }
}

/// `acc[v][h][b] = Σ_p gt[p][8h + b] · x[base_p + v]` for `v < N`, over the outputs `p` in
/// order (the first `N` of the 6 accumulators; the rest stay 0).
///
/// # Safety
/// `x[base_p + v]` is readable for every output `p` and `v < N`, and `gt[p·k ..][..16]` for
/// every `p`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tap_run<const N: usize>(
    out: OutGrid,
    x: *const f32,
    (gt, k): (*const f32, usize),
) -> [[__m256; NV]; TAPS_RUN] {
    let mut acc = [[_mm256_setzero_ps(); NV]; TAPS_RUN];
    for i in 0..out.oh {
        for j in 0..out.ow {
            // SAFETY: the contract.
            unsafe {
                let g = gt.add((i * out.ow + j) * k);
                let g = [_mm256_loadu_ps(g), _mm256_loadu_ps(g.add(LANES))];
                let x = x.add(i * out.wp + j);
                for (v, acc) in acc.iter_mut().enumerate().take(N) {
                    let xv = _mm256_broadcast_ss(&*x.add(v));
                    for (a, &g) in acc.iter_mut().zip(&g) {
                        *a = _mm256_fmadd_ps(g, xv, *a);
                    }
                }
            }
        }
    }
    acc
}

/// Writes `src` (`[rows, cols]`) transposed into `dst` (`[cols, rows]`), in 8×8 register
/// blocks where they fit.
pub(super) fn transpose(src: &[f32], rows: usize, dst: &mut [f32]) {
    assert!(
        Tier::Avx2.is_supported(),
        "the lanes kernel needs AVX2 and FMA"
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
    let (full_r, full_c) = (rows / LANES * LANES, cols / LANES * LANES);
    // SAFETY (every access): row r < rows and column c < cols of the `rows × cols` source,
    // column c < cols and row r < rows of the `cols × rows` destination.
    unsafe {
        for r0 in (0..full_r).step_by(LANES) {
            for c0 in (0..full_c).step_by(LANES) {
                let block: [__m256; LANES] =
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
