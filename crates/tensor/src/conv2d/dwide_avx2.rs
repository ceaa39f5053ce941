//! The shifted method's input-gradient rows on AVX2 + FMA, for `f32`: a block of rows of
//!
//! ```text
//! dwide[t][q] = Σ_o W[o][t] · g_wide[o][q]        (W: [k, c·kh·kw], g_wide: [k, L])
//! ```
//!
//! for `TB ≤ 6` taps `t0 + j` and runs of 16 wide columns `q`: 12 accumulators (6 taps × 2
//! vectors), and per output channel `o` two loads of `g_wide`'s row and 6 broadcast weights
//! read from `W` in place. The depth `k` is small (16 in LeNet-5's conv2), which is where a
//! `gemm` spends its time packing and writing tiles out; here nothing is packed and each
//! accumulator is stored once. Each value is `gemm`'s chain (from 0 over `o` ascending, one
//! fused multiply-add per step), so with the same bits.

#![cfg(target_arch = "x86_64")]

use crate::matmul::store_first;
use crate::Tier;
use std::arch::x86_64::*;

/// Taps per block: the rows computed together.
pub(super) const TB: usize = 6;
/// Scalars per vector.
const LANES: usize = 8;

/// The product's operands: `w` (`[k, taps]`) and `g_wide` (`[k, cols]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Operands<'a> {
    pub(super) w: &'a [f32],
    pub(super) taps: usize,
    pub(super) g_wide: &'a [f32],
    pub(super) cols: usize,
}

/// Writes rows `t0 .. t0 + n` of `dwide` (`n ≤ 6`) into `out` (`[n, cols]`).
///
/// # Panics
/// Without AVX2 + FMA, or if the operands' lengths do not agree or the rows are out of range.
pub(super) fn rows(op: &Operands<'_>, t0: usize, n: usize, out: &mut [f32]) {
    assert!(
        Tier::Avx2.is_supported(),
        "the dwide kernel needs AVX2 and FMA"
    );
    let k = op.w.len() / op.taps.max(1);
    assert!(
        op.taps > 0 && op.cols > 0 && k > 0,
        "taps, columns and channels"
    );
    assert_eq!(op.w.len(), k * op.taps, "W is [k, taps]");
    assert_eq!(op.g_wide.len(), k * op.cols, "g_wide is [k, cols]");
    assert!(
        0 < n && n <= TB && t0 + n <= op.taps,
        "rows {t0}+{n} of {}",
        op.taps
    );
    assert_eq!(out.len(), n * op.cols, "out is [n, cols]");
    let w = op.w[t0..].as_ptr();
    let (g, o) = (op.g_wide.as_ptr(), out.as_mut_ptr());
    let shape = (k, op.taps, op.cols);
    // SAFETY: AVX2 + FMA are available; the lengths asserted above bound every access.
    unsafe {
        match n {
            1 => block::<1>(w, g, o, shape),
            2 => block::<2>(w, g, o, shape),
            3 => block::<3>(w, g, o, shape),
            4 => block::<4>(w, g, o, shape),
            5 => block::<5>(w, g, o, shape),
            _ => block::<6>(w, g, o, shape),
        }
    }
}

/// The block's rows, in runs of 16 columns, then 8, then one masked vector.
///
/// # Safety
/// AVX2 + FMA are available; `w[o·taps + j]` is readable for `o < k`, `j < N`, `g[o·cols ..]`
/// for `cols` scalars, `out` writable for `N·cols`.
#[target_feature(enable = "avx2,fma")]
unsafe fn block<const N: usize>(
    w: *const f32,
    g: *const f32,
    out: *mut f32,
    (k, taps, cols): (usize, usize, usize),
) {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut q0 = 0;
    // SAFETY (every run): columns q0 .. q0 + 8·V (under the mask for the last) are < cols.
    unsafe {
        while q0 + 2 * LANES <= cols {
            run::<N, 2, false>((w, taps), (g.add(q0), cols), (lane, 0), out.add(q0), k);
            q0 += 2 * LANES;
        }
        if q0 + LANES <= cols {
            run::<N, 1, false>((w, taps), (g.add(q0), cols), (lane, 0), out.add(q0), k);
            q0 += LANES;
        }
        if q0 < cols {
            let left = cols - q0;
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left as i32), lane);
            run::<N, 1, true>((w, taps), (g.add(q0), cols), (mask, left), out.add(q0), k);
        }
    }
}

/// `out[j][l] = Σ_o w[o·taps + j] · g[o·cols + l]` for `j < N`, `l < 8·V`; with `MASK`, only
/// the last vector's first `left` lanes, which `mask` selects (neither read nor written
/// outside them).
///
/// # Safety
/// As [`block`], for the run's columns.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn run<const N: usize, const V: usize, const MASK: bool>(
    (w, taps): (*const f32, usize),
    (g, cols): (*const f32, usize),
    (mask, left): (__m256i, usize),
    out: *mut f32,
    k: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); V]; N];
    for o in 0..k {
        // SAFETY: the contract.
        unsafe {
            let row = g.add(o * cols);
            let gv: [__m256; V] = std::array::from_fn(|h| match MASK && h == V - 1 {
                true => _mm256_maskload_ps(row.add(h * LANES), mask),
                false => _mm256_loadu_ps(row.add(h * LANES)),
            });
            for (j, acc) in acc.iter_mut().enumerate() {
                let wv = _mm256_broadcast_ss(&*w.add(o * taps + j));
                for (a, &gv) in acc.iter_mut().zip(&gv) {
                    *a = _mm256_fmadd_ps(wv, gv, *a);
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        for (h, &a) in acc.iter().enumerate() {
            // SAFETY: the contract.
            unsafe {
                let p = out.add(j * cols + h * LANES);
                match MASK && h == V - 1 {
                    // In pieces: a masked store is slow on AMD cores.
                    true => store_first(p, a, left),
                    false => _mm256_storeu_ps(p, a),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row count (1–6, each arm of [`rows`]) at column counts that end on a run of 16, on
    /// a vector of 8 and mid-vector, at the last rows of `W` (a block wider than asked reads past
    /// `W` and writes past `out`): each value is the chain `Σ_o W[o][t]·g[o][q]` of fused
    /// multiply-adds in `o` order, and the scalars after `out` in its buffer keep their
    /// sentinel.
    #[test]
    fn every_row_count_and_tail_writes_exactly_its_rows() {
        if !Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        const SENTINEL: f32 = -7777.0;
        let val = |i: usize, m: usize| ((i * 7919 + m) % 113) as f32 / 17.0 - 3.0;
        for (k, taps) in [(16, 8), (1, 6), (3, 7)] {
            for cols in [1, 7, 8, 9, 16, 17, 23, 40] {
                let w: Vec<f32> = (0..k * taps).map(|i| val(i, 1)).collect();
                let g_wide: Vec<f32> = (0..k * cols).map(|i| val(i, 2)).collect();
                let op = Operands {
                    w: &w,
                    taps,
                    g_wide: &g_wide,
                    cols,
                };
                for n in 1..=TB.min(taps) {
                    let t0 = taps - n;
                    let mut buf = vec![SENTINEL; (n + 2) * cols];
                    rows(&op, t0, n, &mut buf[..n * cols]);
                    let at = format!("k {k}, taps {taps}, cols {cols}, rows {t0}+{n}");
                    for j in 0..n {
                        for q in 0..cols {
                            let want = (0..k).fold(0.0f32, |acc, o| {
                                w[o * taps + t0 + j].mul_add(g_wide[o * cols + q], acc)
                            });
                            let got = buf[j * cols + q];
                            assert_eq!(got.to_bits(), want.to_bits(), "{at}: ({j}, {q})");
                        }
                    }
                    let tail = &buf[n * cols..];
                    assert!(tail.iter().all(|&v| v == SENTINEL), "{at}: wrote past out");
                }
            }
        }
    }
}
