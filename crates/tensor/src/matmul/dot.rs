//! `f32` products whose operands are both contiguous along `k` (`A·Bᵀ` with row-major A and B:
//! LeNet's linear forward `x·Wᵀ`, convolution weight gradients `gout·colsᵀ`), written once for
//! any vector width ([`F32s`]: 8 lanes on AVX2, 16 on AVX-512).
//!
//! In that layout the packed route must transpose both operands, which costs more than the
//! product itself when one side is small. Here nothing is packed: an `R × 4` tile of C keeps
//! one accumulator vector per element (3 × 4 on AVX2: 12 of the 16 registers; 4 × 4 on
//! AVX-512), runs down `k` one vector at a time straight from A's rows and B's columns (the
//! tail under a mask), and reduces the accumulators at the end in a fixed order per width
//! ([`DotLanes::reduce`]). Each element of C is summed in the same order wherever its tile
//! sits, so a product split over threads gives bit-identical results.

#![cfg(target_arch = "x86_64")]

use super::layout::{MatMut, MatRef};
use crate::simd::F32s;
use std::arch::x86_64::*;

/// Columns of C per tile.
const TC: usize = 4;
/// Columns of C (rows of Bᵀ) per block: their `k`-long runs stay in L1 while every row tile
/// of A streams past them.
const NB: usize = 16;

/// A vector width's tile height and the reduction of a tile's accumulators.
pub(super) trait DotLanes: F32s {
    /// Rows of C per tile.
    const TR: usize;
    /// `sums[r][j]` = the sum of the lanes of `acc[r][j]`, in this width's fixed order.
    ///
    /// # Safety
    /// The CPU has the vector's tier.
    unsafe fn reduce<const R: usize, const C: usize>(acc: &[[Self; C]; R]) -> [[f32; C]; R];
}

impl DotLanes for __m256 {
    const TR: usize = 3;

    #[inline(always)]
    unsafe fn reduce<const R: usize, const C: usize>(acc: &[[Self; C]; R]) -> [[f32; C]; R] {
        let mut sums = [[0.0; C]; R];
        for r in 0..R {
            for j in 0..C {
                // Each accumulator's 8 lanes: halves, then pairs, then the last two.
                // SAFETY: the CPU has AVX2 (the contract).
                sums[r][j] = unsafe {
                    let v = acc[r][j];
                    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                    _mm_cvtss_f32(s)
                };
            }
        }
        sums
    }
}

impl DotLanes for __m512 {
    const TR: usize = 4;

    #[inline(always)]
    unsafe fn reduce<const R: usize, const C: usize>(acc: &[[Self; C]; R]) -> [[f32; C]; R] {
        // All sixteen accumulators at once (missing ones of an edge tile are zero).
        // SAFETY: the CPU has AVX-512F (the contract); `lanes` holds 16 floats.
        let lanes = unsafe {
            let mut v = [_mm512_setzero_ps(); 16];
            for r in 0..R {
                for j in 0..C {
                    v[r * TC + j] = acc[r][j];
                }
            }
            let mut lanes = [0.0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), reduce16(&v));
            lanes
        };
        // Lane 4·j + r holds the sum of accumulator 4·r + j (see `reduce16`).
        let mut sums = [[0.0; C]; R];
        for r in 0..R {
            for j in 0..C {
                sums[r][j] = lanes[j * 4 + r];
            }
        }
        sums
    }
}

/// Horizontal sums of sixteen vectors in one transposing add tree (45 shuffles and adds instead
/// of sixteen separate 16-lane reductions): lane `4·q + i` of the result is the sum of the 16
/// lanes of `v[4·i + q]`. The tree is fixed, so the rounding is the same for every call.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn reduce16(v: &[__m512; 16]) -> __m512 {
    // SAFETY: the CPU has AVX-512F (the contract).
    unsafe {
        // 1. Fold 256-bit halves: w[i] keeps v[2i] in its 128-bit quarters 0-1, v[2i+1] in 2-3.
        let mut w = [_mm512_setzero_ps(); 8];
        for (i, w) in w.iter_mut().enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            *w = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            );
        }
        // 2. Fold 128-bit quarters: quarter q of x[i] holds 4 partial sums of v[4i + q].
        let mut x = [_mm512_setzero_ps(); 4];
        for (i, x) in x.iter_mut().enumerate() {
            let (a, b) = (w[2 * i], w[2 * i + 1]);
            *x = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
            );
        }
        // 3. Inside each quarter q, reduce the 4 partial sums of x[0..4] to [x0, x1, x2, x3].
        let a = _mm512_add_ps(
            _mm512_unpacklo_ps(x[0], x[1]),
            _mm512_unpackhi_ps(x[0], x[1]),
        );
        let b = _mm512_add_ps(
            _mm512_unpacklo_ps(x[2], x[3]),
            _mm512_unpackhi_ps(x[2], x[3]),
        );
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    }
}

/// `C = alpha·A·B + beta·C` on AVX2 + FMA.
///
/// # Safety
/// As [`gemm_dot`], and the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_dot_avx2(
    alpha: f32,
    a: MatRef<f32>,
    b: MatRef<f32>,
    beta: f32,
    c: MatMut<f32>,
) {
    // SAFETY: forwarded contract.
    unsafe { gemm_dot::<__m256>(alpha, a, b, beta, c) }
}

/// `C = alpha·A·B + beta·C` on AVX-512F.
///
/// # Safety
/// As [`gemm_dot`], and the CPU has AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn gemm_dot_avx512(
    alpha: f32,
    a: MatRef<f32>,
    b: MatRef<f32>,
    beta: f32,
    c: MatMut<f32>,
) {
    // SAFETY: forwarded contract.
    unsafe { gemm_dot::<__m512>(alpha, a, b, beta, c) }
}

/// `C = alpha·A·B + beta·C` (`beta == 0` never reads C), in tiles of `V::TR × 4`.
///
/// # Safety
/// `a` (`m × k`, `a.cs == 1`) and `b` (`k × n`, `b.rs == 1`) describe readable memory, `c`
/// (`m × n`) writable memory nothing else aliases, `m, n, k >= 1`, and the CPU has `V`'s tier.
#[inline(always)]
unsafe fn gemm_dot<V: DotLanes>(
    alpha: f32,
    a: MatRef<f32>,
    b: MatRef<f32>,
    beta: f32,
    c: MatMut<f32>,
) {
    debug_assert!(a.cs == 1 && b.rs == 1 && V::TR <= 4);
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for j0 in (0..n).step_by(NB) {
        let nb = NB.min(n - j0);
        for i in (0..m).step_by(V::TR) {
            let rows = V::TR.min(m - i);
            for j in (j0..j0 + nb).step_by(TC) {
                let cols = TC.min(j0 + nb - j);
                // SAFETY: row i and column j are inside A, B and C (the loops' bounds).
                let (ab, out) = unsafe {
                    let ab = ((a.get_ptr(i, 0), a.rs), (b.get_ptr(0, j), b.cs));
                    (ab, (alpha, beta, c.at(i, j), (c.rs, c.cs)))
                };
                macro_rules! dispatch {
                    ($(($r:literal, $c:literal))*) => {
                        match (rows, cols) {
                            // SAFETY: rows i.., columns j.. are inside A, B and C; the CPU has
                            // V's tier (the contract).
                            $(($r, $c) => unsafe { tile::<V, $r, $c>(k, ab, out) },)*
                            _ => unreachable!("dot tile {rows}x{cols}"),
                        }
                    };
                }
                dispatch!(
                    (1, 1)(1, 2)(1, 3)(1, 4)(2, 1)(2, 2)(2, 3)(2, 4)(3, 1)(3, 2)(3, 3)(3, 4)(4, 1)(
                        4, 2
                    )(4, 3)(4, 4)
                );
            }
        }
    }
}

/// One `R × C` tile: `c[r][j] = alpha · Σ_p a[r][p]·b[j][p] + beta · c[r][j]`, where row `r` of
/// A starts at `a + r·lda` and column `j` of B at `b + j·ldb`, both contiguous along `p`.
/// (No closures here or below: a closure would be compiled without the caller's target
/// features, and its vector operations would not be inlined.)
///
/// # Safety
/// `k` readable floats at each of those starts, a writable `R × C` tile of C at `(rsc, csc)`,
/// and the CPU has `V`'s tier.
#[inline(always)]
unsafe fn tile<V: DotLanes, const R: usize, const C: usize>(
    k: usize,
    ab: ((*const f32, isize), (*const f32, isize)),
    (alpha, beta, c, (rsc, csc)): (f32, f32, *mut f32, (isize, isize)),
) {
    // SAFETY (the whole body): the contract; a step reads lanes p.. of each row and column,
    // all of them below k, or under the mask the ones below k.
    unsafe {
        let mut acc = [[V::zero(); C]; R];
        let full = k / V::LANES * V::LANES;
        for p in (0..full).step_by(V::LANES) {
            step::<V, R, C, false>(&mut acc, ab, p, V::first(V::LANES));
        }
        if full < k {
            step::<V, R, C, true>(&mut acc, ab, full, V::first(k - full));
        }
        let sums = V::reduce(&acc);
        for r in 0..R {
            for j in 0..C {
                let x = alpha * sums[r][j];
                let cij = &mut *c.offset(r as isize * rsc + j as isize * csc);
                *cij = if beta == 0.0 { x } else { x + beta * *cij };
            }
        }
    }
}

/// `acc[r][j] += a_r[p..] · b_j[p..]` lane by lane, one vector of each (with `MASK`, the lanes
/// `mask` selects, the others 0).
///
/// # Safety
/// As [`tile`], for the lanes read.
#[inline(always)]
unsafe fn step<V: DotLanes, const R: usize, const C: usize, const MASK: bool>(
    acc: &mut [[V; C]; R],
    ((a, lda), (b, ldb)): ((*const f32, isize), (*const f32, isize)),
    p: usize,
    mask: V::Mask,
) {
    // SAFETY: the contract.
    unsafe {
        let mut bv = [V::zero(); C];
        for (j, bv) in bv.iter_mut().enumerate() {
            let x = b.offset(j as isize * ldb).add(p);
            *bv = V::load_if::<MASK>(x, mask);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = a.offset(r as isize * lda).add(p);
            let av = V::load_if::<MASK>(x, mask);
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = V::mul_add(av, bv, *acc);
            }
        }
    }
}
