//! The taps forward kernel (`taps.rs`) for `f32`, written once for any vector width
//! ([`F32s`]: 8 lanes on AVX2 + FMA, 16 on AVX-512): a block of `KB` channels × [`NV`] vectors
//! of outputs keeps its `KB·NV` accumulators in registers for the whole tap loop (12, plus `NV`
//! input vectors and one broadcast weight). Each output is the same chain of fused
//! multiply-adds, in tap order, as in the generic code, so every width gives the same bits.
//! The last column block of a run loads and stores its last vector under a mask: nothing past
//! the last output's taps is read, nothing past `n` written.

#![cfg(target_arch = "x86_64")]

use super::taps::{BiasAt, Block};
use crate::simd::F32s;
use crate::Scalar;

/// Vectors of outputs per column block.
const NV: usize = 2;
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
/// `taps::forward`. Called from a `#[target_feature]` function of `V`'s tier.
///
/// # Safety
/// The CPU has `V`'s tier; what `taps::forward` asserts: `src` holds `blk.taps.reach(n)`
/// scalars, `wt` `taps·KB`, `y` `(kb − 1)·stride + n`, and `kb ≤ KB`.
#[inline(always)]
pub(super) unsafe fn forward<V: F32s, const KB: usize>(
    blk: &Block<'_, f32, KB>,
    (y, stride, kb): (&mut [f32], usize, usize),
) {
    let y = y.as_mut_ptr();
    let out = (y, stride, kb);
    let mut q0 = 0;
    // SAFETY (every call below): the CPU has V's tier; outputs q0..q0 + NV·LANES (the last
    // vector under its mask in the tail) are among the block's n, by the caller's contract.
    let all = unsafe { V::first(V::LANES) };
    while q0 + NV * V::LANES <= blk.n {
        unsafe { block::<V, KB, NV, false>(blk, q0, all, out) };
        q0 += NV * V::LANES;
    }
    let left = blk.n - q0;
    if left == 0 {
        return;
    }
    let mask = unsafe { V::first((left - 1) % V::LANES + 1) };
    match left.div_ceil(V::LANES) {
        1 => unsafe { block::<V, KB, 1, true>(blk, q0, mask, out) },
        _ => unsafe { block::<V, KB, NV, true>(blk, q0, mask, out) },
    }
}

/// `y[b·stride + q0 + l] = Σ_t wt[t][b] · src[off_t + q0 + l]`, with the bias first or last,
/// for `l < LANES·W` (with `MASK`, the lanes of the last vector that `mask` selects).
///
/// # Safety
/// The CPU has `V`'s tier; the outputs `q0..q0 + LANES·W` (with `MASK`, the selected lanes of
/// the last vector) are among the block's `n`; the bounds of [`forward`].
#[inline(always)]
unsafe fn block<V: F32s, const KB: usize, const W: usize, const MASK: bool>(
    blk: &Block<'_, f32, KB>,
    q0: usize,
    mask: V::Mask,
    (y, stride, kb): (*mut f32, usize, usize),
) {
    // SAFETY: the CPU has V's tier (every vector operation below).
    let mut acc = [[unsafe { V::zero() }; W]; KB];
    if let (Some(bias), BiasAt::First) = (blk.bias, blk.at) {
        for (a, &b) in acc.iter_mut().zip(&bias) {
            *a = [unsafe { V::splat(b) }; W];
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
                unsafe { tap::<V, KB, W, MASK>(&mut acc, row.add(v), w, mask) };
                w = w.wrapping_add(KB);
            }
        }
    }
    // SAFETY: the block's outputs of the first kb channels, by the contract.
    unsafe { store::<V, KB, W, MASK>(blk, &acc, mask, y.add(q0), (stride, kb)) };
}

/// One tap: `acc[b][j] += w[b] · x[LANES·j ..][..LANES]` (the last vector under `mask` with
/// `MASK`).
///
/// # Safety
/// The CPU has `V`'s tier; `x` is readable for `LANES·W` scalars (with `MASK`, the selected
/// lanes of the last vector), `w` for `KB`.
#[inline(always)]
unsafe fn tap<V: F32s, const KB: usize, const W: usize, const MASK: bool>(
    acc: &mut [[V; W]; KB],
    x: *const f32,
    w: *const f32,
    mask: V::Mask,
) {
    // SAFETY: the contract.
    unsafe {
        let mut xs = [V::zero(); W];
        for (j, xv) in xs.iter_mut().enumerate() {
            *xv = match MASK && j == W - 1 {
                true => V::load_masked(x.add(V::LANES * j), mask),
                false => V::load(x.add(V::LANES * j)),
            };
        }
        for (b, acc) in acc.iter_mut().enumerate() {
            let wb = V::splat(*w.add(b));
            for (a, &xv) in acc.iter_mut().zip(&xs) {
                *a = V::mul_add(wb, xv, *a);
            }
        }
    }
}

/// Stores `acc` (plus the bias with [`BiasAt::Last`]) at `y[b·stride + LANES·j ..]` for the
/// first `kb` channels (the last vector under `mask` with `MASK`).
///
/// # Safety
/// The CPU has `V`'s tier; `y[b·stride ..][.. LANES·W]` is writable for `b < kb` (the selected
/// lanes of the last vector with `MASK`).
#[inline(always)]
unsafe fn store<V: F32s, const KB: usize, const W: usize, const MASK: bool>(
    blk: &Block<'_, f32, KB>,
    acc: &[[V; W]; KB],
    mask: V::Mask,
    y: *mut f32,
    (stride, kb): (usize, usize),
) {
    // SAFETY: the contract.
    unsafe {
        for (b, acc) in acc.iter().enumerate().take(kb) {
            for (j, &a) in acc.iter().enumerate() {
                let a = match (blk.bias, blk.at) {
                    (Some(bias), BiasAt::Last) => V::add(a, V::splat(bias[b])),
                    _ => a,
                };
                let p = y.add(b * stride + V::LANES * j);
                match MASK && j == W - 1 {
                    true => a.store_masked(p, mask),
                    false => a.store(p),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::taps::{forward_fma, same_bits, Taps};
    use super::*;

    use crate::Tier;
    use std::arch::x86_64::{__m256, __m512};

    #[target_feature(enable = "avx2,fma")]
    unsafe fn at_8_lanes(blk: &Block<'_, f32, 6>, y: (&mut [f32], usize, usize)) {
        // SAFETY: AVX2 + FMA are enabled here; the buffers have the sizes the caller asks.
        unsafe { forward::<__m256, 6>(blk, y) }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn at_16_lanes(blk: &Block<'_, f32, 6>, y: (&mut [f32], usize, usize)) {
        // SAFETY: AVX-512F is enabled here; the buffers have the sizes the caller asks.
        unsafe { forward::<__m512, 6>(blk, y) }
    }

    type Width = unsafe fn(&Block<'_, f32, 6>, (&mut [f32], usize, usize));

    /// The vector kernel at every width the CPU has (8 and 16 lanes) and the generic fused
    /// code give the same bits, with the bias first, last or absent, for full and short channel
    /// blocks and runs that end mid-vector (and runs shorter than one vector); the source ends
    /// exactly at the last tap's reach (a read past it would panic in the generic code), and
    /// the outputs sit in a NaN-filled buffer whose scalars past each channel's run must stay
    /// NaN (a masked store that writes too much fails).
    #[test]
    fn intrinsics_equal_the_generic_fused_code_bit_for_bit() {
        let widths: [(Tier, Width); 2] = [(Tier::Avx2, at_8_lanes), (Tier::Avx512, at_16_lanes)];
        for (tier, width) in widths {
            if !tier.is_supported() {
                eprintln!("skipped at {tier:?}: this CPU does not have it");
                continue;
            }
            check_width(tier, width);
        }
    }

    fn check_width(tier: Tier, width: Width) {
        let val = |i: usize| ((i * 7919 + 13) % 2003) as f32 / 1001.0 - 1.0;
        for (planes, rows, cols, n) in [
            (1, 5, 5, 28),
            (6, 5, 5, 136),
            (2, 3, 2, 7),
            (3, 1, 4, 41),
            (1, 2, 2, 47),
        ] {
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
                    // SAFETY: the CPU has the tier (checked by the caller).
                    unsafe { width(&blk, (&mut ours, n + 1, kb)) };
                    forward_fma::<6>(&blk, (&mut generic, n + 1, kb));
                    let what =
                        format!("{tier:?}: taps {taps:?}, n {n}, kb {kb}, bias {bias:?} {at:?}");
                    same_bits(&ours, &generic, &what);
                    let gaps = (0..7 * n).filter(|i| i % (n + 1) == n || i / (n + 1) >= kb);
                    assert!(
                        gaps.into_iter().all(|i| ours[i].is_nan()),
                        "{what}: wrote a gap"
                    );
                }
            }
        }
    }
}
