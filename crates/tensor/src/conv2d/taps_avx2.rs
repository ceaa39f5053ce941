//! The taps forward kernel (`taps.rs`) for `f32` in explicit AVX2 + FMA intrinsics: a block of
//! `KB` channels × [`NV`] vectors of 8 outputs keeps its `KB·NV` accumulators in registers for
//! the whole tap loop (12 of the 16, plus `NV` input vectors and one broadcast weight). Each
//! output is the same chain of fused multiply-adds, in tap order, as in the generic code, so
//! the two give the same bits. The last column block of a run loads and stores its last vector
//! under a mask: nothing past the last output's taps is read, nothing past `n` written.

#![cfg(target_arch = "x86_64")]

use super::taps::{BiasAt, Block};
use crate::Scalar;
use std::arch::x86_64::*;

/// Vectors of 8 outputs per column block.
const NV: usize = 2;
/// Outputs per vector.
const LANES: usize = 8;

/// The block with `f32` source, weights and bias, when `T` is `f32`.
pub(super) fn as_f32<'a, T: Scalar, const KB: usize>(
    blk: &Block<'a, T, KB>,
) -> Option<Block<'a, f32, KB>> {
    let (src, wt) = (T::as_f32_slice(blk.src)?, T::as_f32_slice(blk.wt)?);
    let bias = blk.bias.map(|b| b.map(|v| v.to_f32().expect("T is f32")));
    let (taps, at, n) = (blk.taps, blk.at, blk.n);
    Some(Block {
        taps,
        src,
        wt,
        bias,
        at,
        n,
    })
}

/// Writes the block's `n` outputs of its first `kb` channels to `y[b·stride + q]`; see
/// `taps::forward`.
///
/// # Safety
/// What `taps::forward` asserts: `src` holds `blk.taps.reach(n)` scalars, `wt` `taps·KB`, `y`
/// `(kb − 1)·stride + n`, and `kb ≤ KB`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn forward<const KB: usize>(
    blk: &Block<'_, f32, KB>,
    (y, stride, kb): (&mut [f32], usize, usize),
) {
    let y = y.as_mut_ptr();
    let mut q0 = 0;
    while q0 + NV * LANES <= blk.n {
        // SAFETY: outputs q0..q0+16 ≤ n, by the caller's contract.
        unsafe { block::<KB, NV, false>(blk, q0, _mm256_setzero_si256(), (y, stride, kb)) };
        q0 += NV * LANES;
    }
    let left = blk.n - q0;
    if left == 0 {
        return;
    }
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let last = (left - 1) % LANES + 1; // outputs in the last, masked vector
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(last as i32), lane);
    let out = (y, stride, kb);
    // SAFETY: outputs q0..n, the last vector under `mask`; the caller's contract.
    unsafe {
        match left.div_ceil(LANES) {
            1 => block::<KB, 1, true>(blk, q0, mask, out),
            _ => block::<KB, 2, true>(blk, q0, mask, out),
        }
    }
}

/// `y[b·stride + q0 + l] = Σ_t wt[t][b] · src[off_t + q0 + l]`, with the bias first or last,
/// for `l < 8·V` (with `MASK`, the lanes of the last vector that `mask` selects).
///
/// # Safety
/// The outputs `q0..q0 + 8·V` (with `MASK`, the selected lanes of the last vector) are among
/// the block's `n`; the bounds of [`forward`].
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const KB: usize, const V: usize, const MASK: bool>(
    blk: &Block<'_, f32, KB>,
    q0: usize,
    mask: __m256i,
    (y, stride, kb): (*mut f32, usize, usize),
) {
    let mut acc = [[_mm256_setzero_ps(); V]; KB];
    if let (Some(bias), BiasAt::First) = (blk.bias, blk.at) {
        for (a, &b) in acc.iter_mut().zip(&bias) {
            *a = [_mm256_set1_ps(b); V];
        }
    }
    let t = blk.taps;
    let src = blk.src.as_ptr().wrapping_add(q0);
    let mut w = blk.wt.as_ptr();
    for c in 0..t.planes {
        for u in 0..t.rows {
            let row = src.wrapping_add(c * t.plane + u * t.row);
            for v in 0..t.cols {
                // SAFETY: off_t + q for the outputs q of this block is inside `src`, and `w`
                // walks the taps·KB weights, by the contract.
                unsafe { tap::<KB, V, MASK>(&mut acc, row.add(v), w, mask) };
                w = w.wrapping_add(KB);
            }
        }
    }
    // SAFETY: the block's outputs of the first kb channels, by the contract.
    unsafe { store::<KB, V, MASK>(blk, &acc, mask, y.add(q0), (stride, kb)) };
}

/// One tap: `acc[b][j] += w[b] · x[8j .. 8j+8]` (the last vector under `mask` with `MASK`).
///
/// # Safety
/// `x` is readable for `8·V` scalars (with `MASK`, the selected lanes of the last vector), `w`
/// for `KB`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tap<const KB: usize, const V: usize, const MASK: bool>(
    acc: &mut [[__m256; V]; KB],
    x: *const f32,
    w: *const f32,
    mask: __m256i,
) {
    let mut xs = [_mm256_setzero_ps(); V];
    for (j, xv) in xs.iter_mut().enumerate() {
        // SAFETY: the contract.
        *xv = unsafe {
            match MASK && j == V - 1 {
                true => _mm256_maskload_ps(x.add(LANES * j), mask),
                false => _mm256_loadu_ps(x.add(LANES * j)),
            }
        };
    }
    for (b, acc) in acc.iter_mut().enumerate() {
        // SAFETY: b < KB.
        let wb = unsafe { _mm256_broadcast_ss(&*w.add(b)) };
        for (a, &xv) in acc.iter_mut().zip(&xs) {
            *a = _mm256_fmadd_ps(wb, xv, *a);
        }
    }
}

/// Stores `acc` (plus the bias with [`BiasAt::Last`]) at `y[b·stride + 8j ..]` for the first
/// `kb` channels (the last vector under `mask` with `MASK`).
///
/// # Safety
/// `y[b·stride ..][.. 8·V]` is writable for `b < kb` (the selected lanes of the last vector
/// with `MASK`).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store<const KB: usize, const V: usize, const MASK: bool>(
    blk: &Block<'_, f32, KB>,
    acc: &[[__m256; V]; KB],
    mask: __m256i,
    y: *mut f32,
    (stride, kb): (usize, usize),
) {
    for (b, acc) in acc.iter().enumerate().take(kb) {
        for (j, &a) in acc.iter().enumerate() {
            let a = match (blk.bias, blk.at) {
                (Some(bias), BiasAt::Last) => _mm256_add_ps(a, _mm256_set1_ps(bias[b])),
                _ => a,
            };
            // SAFETY: the contract.
            unsafe {
                let p = y.add(b * stride + LANES * j);
                match MASK && j == V - 1 {
                    true => _mm256_maskstore_ps(p, mask, a),
                    false => _mm256_storeu_ps(p, a),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::taps::{forward_fma, same_bits, Taps};
    use super::*;

    /// The intrinsics and the generic fused code give the same bits, with the bias first, last
    /// or absent, for full and short channel blocks and runs that end mid-vector; the source
    /// ends exactly at the last tap's reach (a read past it would panic in the generic code).
    #[test]
    fn intrinsics_equal_the_generic_fused_code_bit_for_bit() {
        if !crate::Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        let val = |i: usize| ((i * 7919 + 13) % 2003) as f32 / 1001.0 - 1.0;
        for (planes, rows, cols, n) in [(1, 5, 5, 28), (6, 5, 5, 136), (2, 3, 2, 7), (3, 1, 4, 41)]
        {
            let taps = Taps {
                planes,
                plane: 3 * n + 11,
                rows,
                row: n + 3,
                cols,
            };
            let src: Vec<f32> = (0..taps.reach(n)).map(val).collect();
            let wt: Vec<f32> = (0..taps.len() * 6).map(|i| val(i + 5)).collect();
            for (bias, at) in [(None, BiasAt::First), (Some([0.5; 6]), BiasAt::First)]
                .into_iter()
                .chain([(Some([-0.25, 1.0, 2.0, 0.5, 0.0, 3.0]), BiasAt::Last)])
            {
                let blk = Block {
                    taps,
                    src: &src,
                    wt: &wt,
                    bias,
                    at,
                    n,
                };
                for kb in [6, 4] {
                    let (mut ours, mut generic) = (vec![f32::NAN; 7 * n], vec![f32::NAN; 7 * n]);
                    // SAFETY: AVX2 and FMA were detected; the buffers have the sizes asked.
                    unsafe { forward::<6>(&blk, (&mut ours, n + 1, kb)) };
                    forward_fma::<6>(&blk, (&mut generic, n + 1, kb));
                    let what = format!("taps {taps:?}, n {n}, kb {kb}, bias {bias:?} {at:?}");
                    same_bits(&ours, &generic, &what);
                }
            }
        }
    }
}
