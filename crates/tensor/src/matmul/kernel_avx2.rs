//! AVX2 + FMA micro-kernels for f32: a 6 × 16 tile in twelve 256-bit accumulators, and an
//! 8 × 8 one for `A·Bᵀ` products of up to 128 rows.
//!
//! The 6 × 16 tile is the classic Haswell-era shape: per step of `k`, two B vectors of 8, six
//! broadcasts of A and twelve fused multiply-adds, leaving registers for the operands. Both
//! shapes share one source: the `k` loop runs four steps per iteration, and the tile's rows of
//! C are prefetched before it starts. Edge tiles are compiled per row count (`R`) and vector
//! count (`NV`); partial columns use masked loads and stores. Every element of C gets the same
//! chain of fused multiply-adds in either shape, so the choice never changes a bit.

use super::kernel::{write_tile, MicroKernel};
use std::arch::x86_64::*;

/// The AVX2+FMA f32 kernel with a 6 × 16 tile (twelve accumulators): the general choice.
/// Only used after `GemmKernel::Avx2.is_supported()`, as is [`Avx2Narrow`].
#[derive(Debug)]
pub(super) struct Avx2;

/// The same kernel with an 8 × 8 tile (eight accumulators; one B vector and eight broadcasts
/// per step, which Zen 3's three load ports sustain). Chosen for `A·Bᵀ` products (B
/// column-major) up to [`NARROW_MAX_M`] rows: packing B interleaves 8 columns instead of 16,
/// and the LeNet sizes (multiples of 8, or 4) leave fewer partial tiles.
#[derive(Debug)]
pub(super) struct Avx2Narrow;

/// Rows of C up to which `A·Bᵀ` products use [`Avx2Narrow`]; measured on the LeNet shapes
/// (Zen 3): e.g. 1.4× the 6 × 16 tile at 32×84×120, equal at 256×84×120.
pub(super) const NARROW_MAX_M: usize = 128;

const LANES: usize = 8;

/// Implements [`MicroKernel`] for one tile shape: `$mr` rows, `$nv` vectors of 8 columns, edge
/// tiles compiled for every row count in `$r` and every vector count up to `$nv`.
macro_rules! avx2_kernel {
    ($name:ident, $mr:literal, $nv:literal, [$($r:literal)*], [$($v:literal)*]) => {
        impl MicroKernel<f32> for $name {
            const MR: usize = $mr;
            const NR: usize = $nv * LANES;
            const LANES: usize = LANES;
            const KC: usize = 256;
            // Measured on the LeNet shapes (Zen 3): reading B in place is as fast or faster up
            // to 120 rows (fc1's weight gradient at batch 32), e.g. 1.1× at 32×400×120.
            const DIRECT_B_MAX_M: usize = 128;

            unsafe fn tile(
                k: usize,
                a: *const f32,
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
                avx2_kernel!(@rows $mr, (rows, nv), (k, a, b, b_ks, alpha, beta, c, rsc, csc, cols), [$($r)*], [$($v)*])
            }
        }
    };
    (@rows $mr:literal, $sel:expr, $args:tt, [$($r:literal)*], $vs:tt) => {
        avx2_kernel!(@arms $mr, $sel, $args, [$(($r, $vs))*], [])
    };
    (@arms $mr:literal, $sel:expr, $args:tt, [($r:literal, [$($v:literal)*]) $($rest:tt)*], [$($arms:tt)*]) => {
        avx2_kernel!(@arms $mr, $sel, $args, [$($rest)*], [$($arms)* $(($r, $v))*])
    };
    (@arms $mr:literal, $sel:expr, $args:tt, [], [$(($r:literal, $v:literal))*]) => {
        match $sel {
            // SAFETY: forwarded `tile` contract; R == rows and NV vectors cover cols.
            $(($r, $v) => unsafe { tile_rn::<$mr, $r, $v> $args },)*
            (rows, nv) => unreachable!("avx2 tile {rows} rows x {nv} vectors exceeds {}", $mr),
        }
    };
}

avx2_kernel!(Avx2, 6, 2, [1 2 3 4 5 6], [1 2]);
avx2_kernel!(Avx2Narrow, 8, 1, [1 2 3 4 5 6 7 8], [1]);

/// Asks for the `R` rows of a row-major C tile (`cols` wide) in L1 before the `k` loop starts,
/// so that the final read-modify-write of C does not wait on L2/L3: C rows sit far apart
/// (a row stride each), where the hardware prefetcher does not follow.
#[inline(always)]
fn prefetch_c_rows<const R: usize>(c: *mut f32, rsc: isize, cols: usize) {
    for r in 0..R {
        // Prefetches never fault; `wrapping_*` keeps the address arithmetic defined even if
        // it were out of bounds (it is not: the tile contract covers these elements).
        let first = c.wrapping_offset(r as isize * rsc);
        let last = first.wrapping_add(cols - 1);
        // SAFETY: a prefetch is only a hint; it reads nothing architecturally.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first.cast_const().cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast_const().cast());
        }
    }
}

/// One step of `k`: `acc[r][v] += A[r] · B[v]` for the `R` rows and `NV` vectors of the tile.
///
/// # Safety
/// `ap` points to `R` readable values, `bp` to `NV · 8`; AVX2+FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn step<const R: usize, const NV: usize>(
    acc: &mut [[__m256; NV]; R],
    ap: *const f32,
    bp: *const f32,
) {
    // SAFETY: the reads are the ones the contract allows.
    unsafe {
        let mut bv = [_mm256_setzero_ps(); NV];
        for v in 0..NV {
            bv[v] = _mm256_loadu_ps(bp.add(v * LANES));
        }
        for r in 0..R {
            let ar = _mm256_broadcast_ss(&*ap.add(r));
            for v in 0..NV {
                acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
            }
        }
    }
}

/// The `R`-row, `NV`-vector tile of a kernel whose A panels are `M` rows high.
///
/// # Safety
/// The [`MicroKernel::tile`] contract with `rows == R`, `cols.div_ceil(8) == NV`, and AVX2+FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_rn<const M: usize, const R: usize, const NV: usize>(
    k: usize,
    a: *const f32,
    b: *const f32,
    b_ks: isize,
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    cols: usize,
) {
    if csc == 1 {
        prefetch_c_rows::<R>(c, rsc, cols);
    }
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    // Four steps per iteration: the loop counter and pointer updates are paid once per four.
    let (mut ap, mut bp) = (a, b);
    for _ in 0..k / 4 {
        // SAFETY: steps p..p + 4 are inside both panels (tile contract); AVX2+FMA enabled.
        unsafe {
            for s in 0..4 {
                step::<R, NV>(&mut acc, ap.add(s * M), bp.offset(s as isize * b_ks));
            }
            (ap, bp) = (ap.add(4 * M), bp.offset(4 * b_ks));
        }
    }
    for _ in 0..k % 4 {
        // SAFETY: as above, one step.
        unsafe {
            step::<R, NV>(&mut acc, ap, bp);
            (ap, bp) = (ap.add(M), bp.offset(b_ks));
        }
    }

    let alpha_v = _mm256_set1_ps(alpha);
    if csc == 1 {
        // Row-major C: one (masked) vector store per accumulator.
        let beta_v = _mm256_set1_ps(beta);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for v in 0..NV {
            let left = (cols - v * LANES).min(LANES) as i32;
            // Lane l is live when l < left (sign bit set in the mask).
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane);
            for r in 0..R {
                // SAFETY: the live lanes are exactly the tile's columns j < cols of row r;
                // masked-off lanes are neither read nor written. A full vector uses plain
                // loads and stores: masked stores are microcoded and slow on AMD cores.
                unsafe {
                    let cp = c.offset(r as isize * rsc).add(v * LANES);
                    let mut x = _mm256_mul_ps(alpha_v, acc[r][v]);
                    if left == LANES as i32 {
                        if beta != 0.0 {
                            x = _mm256_add_ps(x, _mm256_mul_ps(beta_v, _mm256_loadu_ps(cp)));
                        }
                        _mm256_storeu_ps(cp, x);
                    } else {
                        if beta != 0.0 {
                            let old = _mm256_maskload_ps(cp, mask);
                            x = _mm256_add_ps(x, _mm256_mul_ps(beta_v, old));
                        }
                        _mm256_maskstore_ps(cp, mask, x);
                    }
                }
            }
        }
    } else {
        // Strided C (e.g. writing into a `.t()` view): spill and write element by element.
        let mut spill = [[0.0f32; 16]; 8];
        for r in 0..R {
            for v in 0..NV {
                // SAFETY: spill row r has 16 ≥ NV·8 floats.
                unsafe { _mm256_storeu_ps(spill[r].as_mut_ptr().add(v * LANES), acc[r][v]) };
            }
        }
        // SAFETY: C covers R × cols at (rsc, csc) (tile contract).
        unsafe { write_tile(spill.as_flattened(), 16, R, cols, alpha, beta, c, rsc, csc) };
    }
}
