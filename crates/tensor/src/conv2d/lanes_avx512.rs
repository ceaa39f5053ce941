//! The channels-in-lanes forward kernel of `lanes_avx2.rs` at 16 lanes, for `f32` on AVX-512F:
//! a block of 16 output channels is one vector, so a run of [`RUN`] = 10 outputs keeps 10
//! accumulators (of the 32 registers) and each tap is one load of its 16 weights, 10 broadcast
//! inputs and 10 fused multiply-adds, against two loads and 12 multiply-adds for 6 outputs on
//! AVX2. Each output is the same chain as there (from 0 over the taps in order, the bias added
//! last), so the two kernels give the same bits (`lanes_avx512_equals_lanes_avx2_bit_for_bit`).
//! The accumulators are written out by scatter: output `j`'s 16 channels go to
//! `y[(k0 + b)·positions + p0 + j]`.
//!
//! A run of 10 outputs spans at most two output rows when the rows hold at least 10 outputs
//! (LeNet-5's conv2: rows of exactly 10), so the kernel needs `ow ≥ 10`.

#![cfg(target_arch = "x86_64")]

use super::lanes_avx2::{runs, Lanes, KB};
use super::taps::Taps;
use crate::Tier;
use std::arch::x86_64::*;

/// Outputs per run: one accumulator each.
pub(super) const RUN: usize = 10;

/// Writes the image's outputs `y[k][p]` (`[k, oh·ow]`, `k = wt.len() / (16·taps)`), as
/// `lanes_avx2::forward` does.
///
/// # Panics
/// Without AVX-512F, if the output rows are narrower than a run (`ow < 10`), or if a buffer is
/// shorter than the taps, weights or outputs need.
pub(super) fn forward(l: &Lanes<'_>, y: &mut [f32]) {
    assert!(
        Tier::Avx512.is_supported(),
        "the 16-lane kernel needs AVX-512F"
    );
    let (taps, out) = (l.taps.len(), l.out);
    let k = l.wt.len() / (KB * taps.max(1)) * KB;
    assert!(
        out.ow >= RUN && out.oh > 0 && taps > 0,
        "rows of {RUN} outputs, and taps"
    );
    assert!(out.wp >= out.ow, "planes at least as wide as the rows");
    assert_eq!(l.wt.len(), k * taps, "weights: whole blocks of 16 channels");
    assert_eq!(y.len(), k * out.positions(), "output length");
    let last_base = out.base(out.positions() - 1);
    assert!(
        l.src.len() >= l.taps.reach(last_base + 1),
        "taps read past the source"
    );
    assert!(l.bias.is_none_or(|b| b.len() == k), "one bias per channel");
    assert!(
        (KB - 1) * out.positions() + out.positions() <= i32::MAX as usize,
        "scatter offsets fit in 32 bits"
    );
    // SAFETY: AVX-512F is available, and the bounds were asserted above.
    unsafe { forward_avx512(l, y, k) }
}

/// # Safety
/// AVX-512F is available; the bounds asserted by [`forward`].
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512(l: &Lanes<'_>, y: &mut [f32], k: usize) {
    let (out, positions, taps) = (l.out, l.out.positions(), l.taps.len());
    // Channel b of a run's output j is at y[b·positions + j].
    let rows: [i32; KB] = std::array::from_fn(|b| (b * positions) as i32);
    // SAFETY: `rows` holds 16 i32.
    let rows = unsafe { _mm512_loadu_si512(rows.as_ptr().cast()) };
    for k0 in (0..k).step_by(KB) {
        let wt = l.wt[k0 * taps..][..KB * taps].as_ptr();
        // SAFETY: the slice holds the 16 biases loaded.
        let bias = l
            .bias
            .map(|b| unsafe { _mm512_loadu_ps(b[k0..][..KB].as_ptr()) });
        let y_k = &mut y[k0 * positions..][..KB * positions];
        for p0 in runs(positions, RUN) {
            let first = (out.ow - p0 % out.ow).min(RUN);
            let a = l.src.as_ptr().wrapping_add(out.base(p0));
            let b = a.wrapping_add(out.wp - out.ow);
            // SAFETY: every output's taps are inside `src` (the last output's reach was
            // asserted, and runs end at or before it), and `wt` holds the block's taps·16.
            let acc = unsafe { run_split(first, &l.taps, (a, b), wt) };
            for (j, mut acc) in acc.into_iter().enumerate() {
                if let Some(bias) = bias {
                    acc = _mm512_add_ps(acc, bias);
                }
                // SAFETY: p0 + j < positions, so every lane's offset b·positions + p0 + j is
                // inside the block's KB·positions outputs.
                unsafe {
                    _mm512_i32scatter_ps::<4>(y_k.as_mut_ptr().add(p0 + j).cast(), rows, acc)
                };
            }
        }
    }
}

/// [`run`] with its `first` as a constant.
///
/// # Safety
/// As [`run`].
#[target_feature(enable = "avx512f")]
unsafe fn run_split(
    first: usize,
    t: &Taps,
    ab: (*const f32, *const f32),
    wt: *const f32,
) -> [__m512; RUN] {
    // SAFETY: the caller's contract.
    unsafe {
        match first {
            1 => run::<1>(t, ab, wt),
            2 => run::<2>(t, ab, wt),
            3 => run::<3>(t, ab, wt),
            4 => run::<4>(t, ab, wt),
            5 => run::<5>(t, ab, wt),
            6 => run::<6>(t, ab, wt),
            7 => run::<7>(t, ab, wt),
            8 => run::<8>(t, ab, wt),
            9 => run::<9>(t, ab, wt),
            _ => run::<10>(t, ab, wt),
        }
    }
}

/// `acc[j][b] = Σ_t wt[t][b] · x_j[off_t]`, one chain per output in tap order, where output
/// `j` reads from `x_j = a + j` for `j < FIRST` and `x_j = b + j` after (the next row).
///
/// # Safety
/// `x_j[off_t]` is readable for every `j` and tap `t`, and `wt` for `taps·16`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn run<const FIRST: usize>(
    t: &Taps,
    (a, b): (*const f32, *const f32),
    wt: *const f32,
) -> [__m512; RUN] {
    let mut acc = [_mm512_setzero_ps(); RUN];
    let mut w = wt;
    for c in 0..t.planes {
        for u in 0..t.rows {
            for v in 0..t.cols {
                let off = c * t.plane + u * t.row + v;
                // SAFETY: the contract; `w` walks the taps·16 weights.
                unsafe {
                    let wv = _mm512_loadu_ps(w);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let x = if j < FIRST { a } else { b };
                        let x = _mm512_set1_ps(*x.add(off + j));
                        *acc = _mm512_fmadd_ps(wv, x, *acc);
                    }
                    w = w.add(KB);
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::super::lanes_avx2::{self, OutGrid};
    use super::*;

    /// The 16-lane kernel gives the AVX2 kernel's bits: LeNet-5's conv2 (6 → 16 channels,
    /// 14×14 → 10×10), 32 channels, padded planes wider than the rows, rows of 11 (runs that
    /// end mid-row and a last run moved back), with and without a bias; outputs are cut from a
    /// NaN-filled buffer whose tail must stay untouched.
    #[test]
    fn lanes_avx512_equals_lanes_avx2_bit_for_bit() {
        if !Tier::Avx512.is_supported() {
            eprintln!("skipped: this CPU has no AVX-512F (the 16-lane kernel cannot run)");
            return;
        }
        for (c, k, oh, ow, wp, kh, kw) in [
            (6, 16, 10, 10, 14, 5, 5),
            (3, 32, 7, 11, 13, 3, 3),
            (2, 16, 3, 10, 12, 2, 3),
        ] {
            let hp = oh + kh - 1;
            let taps = Taps {
                planes: c,
                plane: hp * wp,
                rows: kh,
                row: wp,
                cols: kw,
            };
            let val = |i: usize, m: usize| ((i * 7919 + m) % 113) as f32 / 17.0 - 3.0;
            let src: Vec<f32> = (0..c * hp * wp).map(|i| val(i, 1)).collect();
            let wt: Vec<f32> = (0..k * taps.len()).map(|i| val(i, 2)).collect();
            let bias: Vec<f32> = (0..k).map(|i| val(i, 3)).collect();
            for bias in [Some(&bias[..]), None] {
                let l = Lanes {
                    taps,
                    out: OutGrid { oh, ow, wp },
                    src: &src,
                    wt: &wt,
                    bias,
                };
                let n = k * oh * ow;
                let (mut want, mut got) = (vec![f32::NAN; n], vec![f32::NAN; n + 7]);
                lanes_avx2::forward(&l, &mut want);
                forward(&l, &mut got[..n]);
                let at = format!("c {c} k {k} {oh}×{ow} wp {wp} bias {}", bias.is_some());
                super::super::taps::same_bits(&got[..n], &want, &at);
                assert!(
                    got[n..].iter().all(|v| v.is_nan()),
                    "{at}: wrote past the end"
                );
            }
        }
    }
}
