//! AVX-512F micro-kernel for f32: an 8 × 32 tile in sixteen 512-bit accumulators.
//!
//! Each step of `k` loads one row of the B panel (two vectors of 16), broadcasts each of the 8
//! A values of the step and issues 16 fused multiply-adds — enough independent accumulators to
//! hide the FMA latency on both FMA pipes. Edge tiles are compiled separately for every row count
//! (`R`) and vector count (`NV`), so a 6-row product (LeNet's conv1) does no wasted work, and
//! partial columns are written with masked stores.

use super::kernel::{with_a_rows, write_tile, ARows, ATile, MicroKernel, Panel};
use std::arch::x86_64::*;

/// Marker for the AVX-512F f32 kernel; only used after `Tier::Avx512.is_supported()`.
#[derive(Debug)]
pub(super) struct Avx512;

const MR: usize = 8;
const NR: usize = 32;
const LANES: usize = 16;

impl MicroKernel<f32> for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    const LANES: usize = LANES;
    const KC: usize = 256;
    const DIRECT_B_MAX_M: usize = 32;

    unsafe fn tile(
        k: usize,
        a: ATile<f32>,
        b: *const f32,
        b_ks: isize,
        alpha: f32,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        rows: usize,
        cols: usize,
    ) {
        // SAFETY: forwarded `tile` contract.
        with_a_rows!(a, MR, |a| unsafe {
            tile_a(k, a, b, b_ks, alpha, beta, c, rsc, csc, rows, cols)
        })
    }
}

/// [`MicroKernel::tile`] with A's addressing resolved: picks the tile compiled for `rows` and
/// the vector count of `cols`.
///
/// # Safety
/// The [`MicroKernel::tile`] contract, A addressed by `a`.
#[inline(always)]
unsafe fn tile_a<A: ARows<f32>>(
    k: usize,
    a: A,
    b: *const f32,
    b_ks: isize,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    rows: usize,
    cols: usize,
) {
    let nv = cols.div_ceil(LANES);
    macro_rules! dispatch {
        ($($r:literal)*) => {
            match (rows, nv) {
                $(
                    // SAFETY: forwarded `tile` contract; R == rows and NV lanes cover cols.
                    ($r, 1) => unsafe { tile_rn::<A, $r, 1>(k, a, b, b_ks, alpha, beta, c, rsc, csc, cols) },
                    ($r, 2) => unsafe { tile_rn::<A, $r, 2>(k, a, b, b_ks, alpha, beta, c, rsc, csc, cols) },
                )*
                _ => unreachable!("avx512 tile {rows}x{cols} exceeds {MR}x{NR}"),
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8)
}

/// The `R`-row, `NV`-vector tile, A's rows addressed by `a` (a packed panel or A in place).
///
/// # Safety
/// The [`MicroKernel::tile`] contract with `rows == R`, `cols.div_ceil(16) == NV`, and AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn tile_rn<A: ARows<f32>, const R: usize, const NV: usize>(
    k: usize,
    a: A,
    b: *const f32,
    b_ks: isize,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let a = a.for_rows::<R>();
    for p in 0..k {
        // SAFETY: step p of the B panel holds NV·16 readable values and rows 0..R of step p of
        // A are readable (tile contract).
        unsafe {
            let bp = b.offset(p as isize * b_ks);
            let mut bv = [_mm512_setzero_ps(); NV];
            for v in 0..NV {
                bv[v] = _mm512_loadu_ps(bp.add(v * LANES));
            }
            let ap = a.ahead(p);
            for r in 0..R {
                let ar = _mm512_set1_ps(*ap.row(r));
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
                }
            }
        }
    }

    let alpha_v = _mm512_set1_ps(alpha);
    if csc == 1 {
        // Row-major C: one (masked) vector store per accumulator.
        let beta_v = _mm512_set1_ps(beta);
        for r in 0..R {
            for v in 0..NV {
                let left = cols - v * LANES;
                let mask: __mmask16 = if left >= LANES { !0 } else { (1 << left) - 1 };
                // SAFETY: the masked lanes are exactly the tile's columns j < cols of row r;
                // masked-off lanes are neither read nor written.
                unsafe {
                    let cp = c.offset(r as isize * rsc).add(v * LANES);
                    let mut x = _mm512_mul_ps(alpha_v, acc[r][v]);
                    if beta != 0.0 {
                        let old = _mm512_maskz_loadu_ps(mask, cp);
                        x = _mm512_add_ps(x, _mm512_mul_ps(beta_v, old));
                    }
                    _mm512_mask_storeu_ps(cp, mask, x);
                }
            }
        }
    } else {
        // Strided C (e.g. writing into a `.t()` view): spill and write element by element.
        let mut spill = [[0.0f32; NR]; MR];
        for r in 0..R {
            for v in 0..NV {
                // SAFETY: spill row r has NR ≥ NV·16 floats.
                unsafe { _mm512_storeu_ps(spill[r].as_mut_ptr().add(v * LANES), acc[r][v]) };
            }
        }
        // SAFETY: C covers R × cols at (rsc, csc) (tile contract).
        unsafe { write_tile(spill.as_flattened(), NR, R, cols, alpha, beta, c, rsc, csc) };
    }
}
