//! AVX-512F f32 products whose operands are both contiguous along `k` (`A·Bᵀ` with row-major
//! A and B — LeNet's linear forward `x·Wᵀ` and convolution weight gradient `gout·colsᵀ`).
//!
//! In that layout the packed route must transpose both operands, which costs more than the
//! product itself when one side is small. Here nothing is packed: a 4 × 4 tile of C keeps one
//! 16-lane accumulator per element, runs down `k` sixteen values at a time straight from A's
//! rows and B's columns (masked loads for the tail), and reduces each accumulator at the end.
//! Each element of C is summed in the same order wherever its tile sits, so a product split
//! over threads gives bit-identical results.

use super::layout::{MatMut, MatRef};
use std::arch::x86_64::*;

/// Tile size: rows and columns of C per tile.
const TR: usize = 4;
const TC: usize = 4;
/// Columns of C (rows of Bᵀ) per block: their `k`-long runs stay in L1 while every row tile
/// of A streams past them.
const NB: usize = 16;
const LANES: usize = 16;

/// `C = alpha·A·B + beta·C` (`beta == 0` never reads C).
///
/// # Safety
/// `a` (`m × k`, `a.cs == 1`) and `b` (`k × n`, `b.rs == 1`) describe readable memory, `c`
/// (`m × n`) writable memory nothing else aliases, `m, n, k >= 1`, and the CPU has AVX-512F.
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
                            // SAFETY: rows i.., columns j.. are inside A, B and C; AVX-512F is
                            // available (caller's contract).
                            $(($r, $c) => unsafe {
                                tile::<$r, $c>(k, a.get_ptr(i, 0), a.rs, b.get_ptr(0, j), b.cs, alpha, beta, c.at(i, j), c.rs, c.cs)
                            },)*
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
///
/// # Safety
/// `k` readable floats at each of those starts, a writable `R × C` tile of C at `(rsc, csc)`,
/// and AVX-512F.
#[target_feature(enable = "avx512f")]
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
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut step = |p: usize, mask: __mmask16| {
        // SAFETY: lanes p..p+16 that the mask keeps are below k, inside each row / column.
        unsafe {
            let mut bv = [_mm512_setzero_ps(); C];
            for j in 0..C {
                bv[j] = _mm512_maskz_loadu_ps(mask, b.offset(j as isize * ldb).add(p));
            }
            for r in 0..R {
                let av = _mm512_maskz_loadu_ps(mask, a.offset(r as isize * lda).add(p));
                for j in 0..C {
                    acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
                }
            }
        }
    };
    let full = k / LANES * LANES;
    for p in (0..full).step_by(LANES) {
        step(p, !0);
    }
    if full < k {
        step(full, (1 << (k - full)) - 1);
    }
    for r in 0..R {
        for j in 0..C {
            let x = alpha * _mm512_reduce_add_ps(acc[r][j]);
            // SAFETY: (r, j) is inside the tile.
            let cij = unsafe { &mut *c.offset(r as isize * rsc + j as isize * csc) };
            *cij = if beta == 0.0 { x } else { x + beta * *cij };
        }
    }
}
