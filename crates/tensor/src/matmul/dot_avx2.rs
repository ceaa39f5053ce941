//! AVX2+FMA f32 products whose operands are both contiguous along `k` (`A·Bᵀ` of row-major
//! arrays): the 256-bit counterpart of `dot_avx512`, used on CPUs without AVX-512.
//!
//! A 3 × 4 tile of C keeps one 8-lane accumulator per element (12 of the 16 registers), runs
//! down `k` eight values at a time straight from A's rows and B's columns (masked loads for the
//! tail), and reduces each accumulator at the end. Each element is summed in the same order
//! wherever its tile sits, so a product split over threads gives bit-identical results.

use super::layout::{MatMut, MatRef};
use std::arch::x86_64::*;

/// Tile size: rows and columns of C per tile.
const TR: usize = 3;
const TC: usize = 4;
/// Columns of C (rows of Bᵀ) per block: their `k`-long runs stay in L1 while every row tile
/// of A streams past them.
const NB: usize = 16;
const LANES: usize = 8;

/// `C = alpha·A·B + beta·C` (`beta == 0` never reads C).
///
/// # Safety
/// `a` (`m × k`, `a.cs == 1`) and `b` (`k × n`, `b.rs == 1`) describe readable memory, `c`
/// (`m × n`) writable memory nothing else aliases, `m, n, k >= 1`, and the CPU has AVX2 and FMA.
pub(super) unsafe fn gemm_dot(
    alpha: f32,
    a: MatRef<f32>,
    b: MatRef<f32>,
    beta: f32,
    c: MatMut<f32>,
) {
    debug_assert!(a.cs == 1 && b.rs == 1);
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for j0 in (0..n).step_by(NB) {
        let nb = NB.min(n - j0);
        for i in (0..m).step_by(TR) {
            let rows = TR.min(m - i);
            for j in (j0..j0 + nb).step_by(TC) {
                let cols = TC.min(j0 + nb - j);
                macro_rules! dispatch {
                    ($(($r:literal, $c:literal))*) => {
                        match (rows, cols) {
                            // SAFETY: rows i.., columns j.. are inside A, B and C; AVX2 and FMA
                            // are available (caller's contract).
                            $(($r, $c) => unsafe {
                                tile::<$r, $c>(k, a.get_ptr(i, 0), a.rs, b.get_ptr(0, j), b.cs, alpha, beta, c.at(i, j), c.rs, c.cs)
                            },)*
                            _ => unreachable!("dot tile {rows}x{cols}"),
                        }
                    };
                }
                dispatch!((1, 1)(1, 2)(1, 3)(1, 4)(2, 1)(2, 2)(2, 3)(2, 4)(3, 1)(3, 2)(3, 3)(3, 4));
            }
        }
    }
}

/// Sum of the 8 lanes, in a fixed order.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// One `R × C` tile: `c[r][j] = alpha · Σ_p a[r][p]·b[j][p] + beta · c[r][j]`, where row `r` of
/// A starts at `a + r·lda` and column `j` of B at `b + j·ldb`, both contiguous along `p`.
///
/// # Safety
/// `k` readable floats at each of those starts, a writable `R × C` tile of C at `(rsc, csc)`,
/// and AVX2 + FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const C: usize>(
    k: usize,
    a: *const f32,
    lda: isize,
    b: *const f32,
    ldb: isize,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let full = k / LANES * LANES;
    for p in (0..full).step_by(LANES) {
        // SAFETY: p + 8 <= k: inside each row / column.
        unsafe {
            let mut bv = [_mm256_setzero_ps(); C];
            for j in 0..C {
                bv[j] = _mm256_loadu_ps(b.offset(j as isize * ldb).add(p));
            }
            for r in 0..R {
                let av = _mm256_loadu_ps(a.offset(r as isize * lda).add(p));
                for j in 0..C {
                    acc[r][j] = _mm256_fmadd_ps(av, bv[j], acc[r][j]);
                }
            }
        }
    }
    if full < k {
        // Lane l is live when full + l < k (sign bit set in the mask).
        let left = (k - full) as i32;
        let mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(left),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        // SAFETY: only the live lanes, all below k, are read.
        unsafe {
            let mut bv = [_mm256_setzero_ps(); C];
            for j in 0..C {
                bv[j] = _mm256_maskload_ps(b.offset(j as isize * ldb).add(full), mask);
            }
            for r in 0..R {
                let av = _mm256_maskload_ps(a.offset(r as isize * lda).add(full), mask);
                for j in 0..C {
                    acc[r][j] = _mm256_fmadd_ps(av, bv[j], acc[r][j]);
                }
            }
        }
    }
    for r in 0..R {
        for j in 0..C {
            let x = alpha * hsum(acc[r][j]);
            // SAFETY: (r, j) is inside the tile.
            let cij = unsafe { &mut *c.offset(r as isize * rsc + j as isize * csc) };
            *cij = if beta == 0.0 { x } else { x + beta * *cij };
        }
    }
}
