//! A stride-1 forward kernel with the output channels in the vector lanes, for `f32` on AVX2 +
//! FMA: for a block of 16 channels `k0 + b` and a run of 6 outputs `p = i·ow + j`,
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
//! Against the taps kernel (`taps.rs`), which puts a run of outputs in the lanes, this one
//! visits only real outputs: the taps kernel runs over the shifted method's wide columns (136
//! per 100 outputs in LeNet-5's conv2) and over whole blocks of 6 channels (18 for 16). Each
//! output is the same chain, from 0 over the taps in order and the bias added last, so the two
//! give the same bits.

#![cfg(target_arch = "x86_64")]

use super::taps::Taps;
use crate::matmul::transpose8;
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
    fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Where output `p` (numbered `i·ow + j`) starts reading: `i·wp + j`.
    fn base(&self, p: usize) -> usize {
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

/// Whether this CPU runs the kernel (AVX2 and FMA).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Writes the image's outputs `y[k][p]` (`[k, oh·ow]`, `k = wt.len() / (16·taps)`).
///
/// # Panics
/// Without AVX2 + FMA, if the output rows are narrower than a run (`ow < 6`), or if a buffer
/// is shorter than the taps, weights or outputs need.
pub(super) fn forward(l: &Lanes<'_>, y: &mut [f32]) {
    assert!(available(), "the lanes kernel needs AVX2 and FMA");
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

/// Runs of 6 outputs from `p0 = 0` in steps of 6, the last one moved back to end at the last
/// output (its first outputs are computed twice, with the same bits).
fn runs(positions: usize) -> impl Iterator<Item = usize> {
    (0..positions.div_ceil(RUN)).map(move |r| (r * RUN).min(positions - RUN))
}

/// # Safety
/// AVX2 + FMA are available; the bounds asserted by [`forward`].
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx2(l: &Lanes<'_>, y: &mut [f32], k: usize) {
    let (out, positions, taps) = (l.out, l.out.positions(), l.taps.len());
    for k0 in (0..k).step_by(KB) {
        let wt = l.wt[k0 * taps..][..KB * taps].as_ptr();
        for p0 in runs(positions) {
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
    let keep = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0); // the RUN = 6 outputs
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
            // SAFETY: `keep` selects the first RUN lanes, and dst holds RUN scalars.
            unsafe { _mm256_maskstore_ps(dst.as_mut_ptr(), keep, outs) };
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
