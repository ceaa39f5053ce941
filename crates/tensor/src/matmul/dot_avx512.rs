//! AVX-512F f32 products whose operands are both contiguous along `k` (`A·Bᵀ` with row-major
//! A and B — LeNet's linear forward `x·Wᵀ` and convolution weight gradient `gout·colsᵀ`).
//!
//! In that layout the packed route must transpose both operands, which costs more than the
//! product itself when one side is small. Here nothing is packed: a 4 × 4 tile of C keeps one
//! 16-lane accumulator per element, runs down `k` sixteen values at a time straight from A's
//! rows and B's columns (masked loads for the tail), and reduces the sixteen accumulators
//! together at the end.
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
    // Reduce all sixteen accumulators at once (missing ones of an edge tile are zero).
    let mut v = [_mm512_setzero_ps(); 16];
    for r in 0..R {
        for j in 0..C {
            v[r * TC + j] = acc[r][j];
        }
    }
    let mut sums = [0.0f32; 16];
    // SAFETY: `sums` holds 16 floats.
    unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), reduce16(v)) };
    for r in 0..R {
        for j in 0..C {
            // Lane 4·j + r holds the sum of accumulator 4·r + j (see `reduce16`).
            let x = alpha * sums[j * TR + r];
            // SAFETY: (r, j) is inside the tile.
            let cij = unsafe { &mut *c.offset(r as isize * rsc + j as isize * csc) };
            *cij = if beta == 0.0 { x } else { x + beta * *cij };
        }
    }
}

/// Horizontal sums of sixteen vectors in one transposing add tree (45 shuffles and adds instead
/// of sixteen separate 16-lane reductions): lane `4·q + i` of the result is the sum of the 16
/// lanes of `v[4·i + q]`. The tree is fixed, so the rounding is the same for every call.
#[target_feature(enable = "avx512f")]
fn reduce16(v: [__m512; 16]) -> __m512 {
    // 1. Fold 256-bit halves: w[i] keeps v[2i] in its 128-bit quarters 0-1, v[2i+1] in 2-3.
    let w: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    });
    // 2. Fold 128-bit quarters: quarter q of x[i] holds 4 partial sums of v[4i + q].
    let x: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (w[2 * i], w[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    });
    // 3. Inside each quarter q, reduce the 4 partial sums of x[0..4] to lanes [x0, x1, x2, x3].
    let pair =
        |p: __m512, q: __m512| _mm512_add_ps(_mm512_unpacklo_ps(p, q), _mm512_unpackhi_ps(p, q));
    let (a, b) = (pair(x[0], x[1]), pair(x[2], x[3]));
    _mm512_add_ps(
        _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
        _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
    )
}
