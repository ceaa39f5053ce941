//! The `f32` micro-kernels, written once for any vector width ([`F32s`]) and instantiated as
//! three tile shapes:
//!
//! | kernel | tier | tile | accumulators |
//! | --- | --- | --- | --- |
//! | [`Avx2`] | AVX2 + FMA | 6 × 16 (two vectors of 8) | 12 of 16 registers |
//! | [`Avx2Narrow`] | AVX2 + FMA | 8 × 8 (one vector) | 8 |
//! | [`Avx512`] | AVX-512F | 8 × 32 (two vectors of 16) | 16 of 32 |
//!
//! Per step of `k`: the B panel's row in `NV` vector loads, one broadcast of A per row and
//! `R·NV` fused multiply-adds, enough independent accumulators to hide the FMA latency. The `k`
//! loop runs four steps per iteration (after the `k % 4` first ones), and for deep products
//! (`k > 64`) the tile's rows of C are prefetched before it starts. A row strip of tiles runs
//! in one call ([`strip_r`]), so shallow products pay the dispatch once per strip. Edge tiles
//! are compiled per row count (`R`) and vector count (`NV`); partial columns use masked loads
//! and [`F32s::store_first`] (in pieces at 8 lanes: masked stores are slow on AMD cores). A
//! row-major C is written straight from the accumulators when the tile is full or one vector
//! wide (every index a constant); other tiles, and a strided C, go through a local copy of the
//! sums (a write-out that indexes the accumulators at run time spills them out of the `k`
//! loop's registers). Every element of C gets the same chain of fused multiply-adds whatever
//! the shape or width, so the choice never changes a bit.
//!
//! The 8 × 8 tile (one B vector and eight broadcasts per step, which Zen 3's three load ports
//! sustain) is chosen for `A·Bᵀ` products (B column-major) up to `plan::NARROW_MAX_M` rows:
//! packing B interleaves 8 columns instead of 16, and the LeNet sizes (multiples of 8, or 4)
//! leave fewer partial tiles.

use super::kernel::{with_a_rows, write_tile, ARows, ATile, BPanels, MicroKernel, Panel};
use crate::simd::F32s;
use std::arch::x86_64::*;

/// The 6 × 16 tile on AVX2 + FMA: the general choice there. Only used after
/// `Tier::Avx2.is_supported()`, as is [`Avx2Narrow`].
#[derive(Debug)]
pub(super) struct Avx2;

/// The 8 × 8 tile on AVX2 + FMA, for `A·Bᵀ` products of up to `plan::NARROW_MAX_M` rows.
#[derive(Debug)]
pub(super) struct Avx2Narrow;

/// The 8 × 32 tile on AVX-512F; only used after `Tier::Avx512.is_supported()`.
#[derive(Debug)]
pub(super) struct Avx512;

/// The widest tile's rows and columns: the size of the local copy of the sums.
const MAX_MR: usize = 8;
const MAX_NR: usize = 32;

/// Implements [`MicroKernel`] for one tile shape: `$mr` rows, `$nv` vectors of `$v`, edge
/// tiles compiled for every row count in `$r` and every vector count in `$vs`, through the
/// tier's `#[target_feature]` entries `$tile` and `$strip`; B read in place up to `$direct`
/// rows of C.
macro_rules! simd_kernel {
    ($name:ident, $v:ty, ($tile:ident, $strip:ident), $mr:literal, $nv:literal, $direct:literal,
     [$($r:literal)*], [$($vs:literal)*]) => {
        impl MicroKernel<f32> for $name {
            const MR: usize = $mr;
            const NR: usize = $nv * <$v as F32s>::LANES;
            const LANES: usize = <$v as F32s>::LANES;
            const KC: usize = 256;
            const DIRECT_B_MAX_M: usize = $direct;

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
                let nv = cols.div_ceil(Self::LANES);
                with_a_rows!(a, $mr, |a| {
                    simd_kernel!(@rows $tile, (rows, nv),
                        (k, a, b, b_ks, alpha, beta, c, rsc, csc, cols), [$($r)*], [$($vs)*])
                })
            }

            unsafe fn strip(
                k: usize,
                a: ATile<f32>,
                b: BPanels<f32>,
                alpha: f32,
                beta: f32,
                c: *mut f32,
                rsc: isize,
                csc: isize,
                rows: usize,
                cols: usize,
            ) {
                with_a_rows!(a, $mr, |a| {
                    match rows {
                        // SAFETY: forwarded `strip` contract; R == rows.
                        $($r => unsafe {
                            $strip::<_, $r, $nv>(k, a, b, alpha, beta, c, rsc, csc, cols)
                        },)*
                        _ => unreachable!("{} strip of {rows} rows", stringify!($name)),
                    }
                })
            }
        }
    };
    (@rows $tile:ident, $sel:expr, $args:tt, [$($r:literal)*], $vs:tt) => {
        simd_kernel!(@arms $tile, $sel, $args, [$(($r, $vs))*], [])
    };
    (@arms $tile:ident, $sel:expr, $args:tt, [($r:literal, [$($v:literal)*]) $($rest:tt)*],
     [$($arms:tt)*]) => {
        simd_kernel!(@arms $tile, $sel, $args, [$($rest)*], [$($arms)* $(($r, $v))*])
    };
    (@arms $tile:ident, $sel:expr, $args:tt, [], [$(($r:literal, $v:literal))*]) => {
        match $sel {
            // SAFETY: forwarded `tile` contract; R == rows and NV vectors cover cols.
            $(($r, $v) => unsafe { $tile::<_, $r, $v> $args },)*
            (rows, nv) => unreachable!("tile of {rows} rows x {nv} vectors"),
        }
    };
}

simd_kernel!(Avx2, __m256, (tile_avx2, strip_avx2), 6, 2, 128, [1 2 3 4 5 6], [1 2]);
simd_kernel!(Avx2Narrow, __m256, (tile_avx2, strip_avx2), 8, 1, 128, [1 2 3 4 5 6 7 8], [1]);
simd_kernel!(Avx512, __m512, (tile_avx512, strip_avx512), 8, 2, 32, [1 2 3 4 5 6 7 8], [1 2]);

// The tiers' entries: the generic code below, inlined into a function compiled for the tier.
// DIRECT_B_MAX_M above: measured on the LeNet shapes, reading B in place is as fast or faster
// up to 120 rows on Zen 3 (fc1's weight gradient at batch 32, e.g. 1.1× at 32×400×120), and up
// to 32 rows on AVX-512.

/// Defines one tier's entries `$tile` and `$strip`: [`tile_rn`] and [`strip_r`] at vector `$v`,
/// compiled with the target features `$features`.
macro_rules! tier_entries {
    ($tile:ident, $strip:ident, $v:ty, $features:literal, $cpu:literal) => {
        #[doc = concat!("# Safety\n[`tile_rn`]'s contract, on a CPU with ", $cpu, ".")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $tile<A: ARows<f32>, const R: usize, const NV: usize>(
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
            // SAFETY: the caller's contract.
            unsafe { tile_rn::<$v, A, R, NV>(k, a, (b, b_ks), (alpha, beta), (c, rsc, csc), cols) }
        }

        #[doc = concat!("# Safety\n[`strip_r`]'s contract, on a CPU with ", $cpu, ".")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $strip<A: ARows<f32>, const R: usize, const NV: usize>(
            k: usize,
            a: A,
            b: BPanels<f32>,
            alpha: f32,
            beta: f32,
            c: *mut f32,
            rsc: isize,
            csc: isize,
            cols: usize,
        ) {
            // SAFETY: the caller's contract.
            unsafe { strip_r::<$v, A, R, NV>(k, a, b, (alpha, beta), (c, rsc, csc), cols) }
        }
    };
}

tier_entries!(tile_avx2, strip_avx2, __m256, "avx2,fma", "AVX2 + FMA");
tier_entries!(tile_avx512, strip_avx512, __m512, "avx512f", "AVX-512F");

/// Where a tile writes C: its first element and the row and column strides.
type COut = (*mut f32, isize, isize);

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
/// The CPU has `V`'s tier; rows `0..R` of `ap` are readable, `bp` points to `NV · LANES`
/// readable values.
#[inline(always)]
unsafe fn step<V: F32s, A: ARows<f32>, const R: usize, const NV: usize>(
    acc: &mut [[V; NV]; R],
    ap: A,
    bp: *const f32,
) {
    // SAFETY: the reads are the ones the contract allows.
    unsafe {
        let mut bv = [V::zero(); NV];
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = V::load(bp.add(v * V::LANES));
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let ar = V::splat(*ap.row(r));
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = V::mul_add(ar, bv, *acc);
            }
        }
    }
}

/// Every tile of an `R`-row strip of C (`cols` wide) whose full tiles have `NV` vectors
/// (1 or 2): the panels of `b` in order, the last one possibly narrower.
///
/// # Safety
/// The CPU has `V`'s tier; the [`MicroKernel::strip`] contract with `rows == R`.
#[inline(always)]
unsafe fn strip_r<V: F32s, A: ARows<f32>, const R: usize, const NV: usize>(
    k: usize,
    a: A,
    b: BPanels<f32>,
    ab: (f32, f32),
    (c, rsc, csc): COut,
    cols: usize,
) {
    const { assert!(NV == 1 || NV == 2) };
    let nr = NV * V::LANES;
    let count = cols.div_ceil(nr);
    for q in 0..count - 1 {
        let bp = b.ptr.wrapping_offset(q as isize * b.next);
        let cq = c.wrapping_offset((q * nr) as isize * csc);
        // SAFETY: panel q is a full one, inside B and C (strip contract).
        unsafe { tile_rn::<V, A, R, NV>(k, a, (bp, b.ks), ab, (cq, rsc, csc), nr) };
    }
    let jr = (count - 1) * nr;
    let cl = (c.wrapping_offset(jr as isize * csc), rsc, csc);
    let (left, last) = (cols - jr, (b.last, b.last_ks));
    // SAFETY: the last panel, `left` columns, inside B and C (strip contract).
    unsafe {
        if left > V::LANES {
            tile_rn::<V, A, R, NV>(k, a, last, ab, cl, left)
        } else {
            tile_rn::<V, A, R, 1>(k, a, last, ab, cl, left)
        }
    }
}

/// The `R`-row, `NV`-vector tile, A's rows addressed by `a` (a packed panel or A in place):
/// `C = alpha · A·B + beta · C` for its `R × cols` elements.
///
/// # Safety
/// The CPU has `V`'s tier; the [`MicroKernel::tile`] contract with `rows == R`,
/// `cols.div_ceil(LANES) == NV`.
#[inline(always)]
unsafe fn tile_rn<V: F32s, A: ARows<f32>, const R: usize, const NV: usize>(
    k: usize,
    a: A,
    (b, b_ks): (*const f32, isize),
    (alpha, beta): (f32, f32),
    (c, rsc, csc): COut,
    cols: usize,
) {
    if csc == 1 && k > 64 {
        prefetch_c_rows::<R>(c, rsc, cols);
    }
    // SAFETY: the CPU has V's tier (every vector operation below).
    let mut acc = [[unsafe { V::zero() }; NV]; R];
    // The first k % 4 steps one by one, then four steps per iteration: the loop counter and
    // pointer updates are paid once per four. The pointers may end up past A and B after the
    // last step (never read): wrapping arithmetic keeps that defined.
    let (mut ap, mut bp) = (a.for_rows::<R>(), b);
    for _ in 0..k % 4 {
        // SAFETY: step p is inside A and B (tile contract).
        unsafe { step::<V, _, R, NV>(&mut acc, ap, bp) };
        (ap, bp) = (ap.ahead(1), bp.wrapping_offset(b_ks));
    }
    for _ in 0..k / 4 {
        // SAFETY: as above, steps p..p + 4.
        unsafe {
            for s in 0..4 {
                step::<V, _, R, NV>(&mut acc, ap.ahead(s), bp.wrapping_offset(s as isize * b_ks));
            }
        }
        (ap, bp) = (ap.ahead(4), bp.wrapping_offset(4 * b_ks));
    }
    // SAFETY: C covers R × cols at (rsc, csc) (tile contract).
    unsafe { write_out::<V, R, NV>(&acc, (alpha, beta), (c, rsc, csc), cols) }
}

/// Writes the tile's sums `acc` to C: straight from the registers for a full tile of a
/// row-major C, or one vector wide (every index a constant); else through a local copy, in one
/// straight run of stores, so that the branchy write-out indexes memory, not the accumulators
/// (which keeps them in registers for the whole `k` loop).
///
/// # Safety
/// The CPU has `V`'s tier; C covers `R × cols` at `(rsc, csc)`, `cols ≤ NV · LANES`.
#[inline(always)]
unsafe fn write_out<V: F32s, const R: usize, const NV: usize>(
    acc: &[[V; NV]; R],
    (alpha, beta): (f32, f32),
    (c, rsc, csc): COut,
    cols: usize,
) {
    let lanes = V::LANES;
    if csc == 1 && (cols == NV * lanes || NV == 1) {
        let last = cols - (NV - 1) * lanes;
        // SAFETY: row-major C covers R × cols (contract).
        unsafe {
            match beta == 0.0 {
                true => store_acc::<V, R, NV, false>(acc, (alpha, beta), (c, rsc), last),
                false => store_acc::<V, R, NV, true>(acc, (alpha, beta), (c, rsc), last),
            }
        }
        return;
    }
    let mut sums = [[0.0f32; MAX_NR]; MAX_MR];
    for (row, acc) in sums.iter_mut().zip(acc) {
        for (v, &a) in acc.iter().enumerate() {
            // SAFETY: a row of `sums` has MAX_NR ≥ NV·LANES floats.
            unsafe { a.store(row.as_mut_ptr().add(v * lanes)) };
        }
    }
    if csc != 1 {
        // Strided C (e.g. writing into a `.t()` view): element by element.
        // SAFETY: C covers R × cols at (rsc, csc) (contract).
        unsafe {
            write_tile(
                sums.as_flattened(),
                MAX_NR,
                R,
                cols,
                alpha,
                beta,
                c,
                rsc,
                csc,
            )
        };
        return;
    }
    for v in 0..NV {
        let live = (cols - v * lanes).min(lanes);
        for (r, sum) in sums.iter().enumerate().take(R) {
            // SAFETY: the `live` lanes are exactly the tile's columns j < cols of row r.
            unsafe {
                let x = V::load(sum.as_ptr().add(v * lanes));
                let cp = c.offset(r as isize * rsc).add(v * lanes);
                match beta == 0.0 {
                    true => store_vector::<V, false>(cp, x, (alpha, beta), live),
                    false => store_vector::<V, true>(cp, x, (alpha, beta), live),
                }
            }
        }
    }
}

/// Writes `alpha · acc + beta · C` (`BETA`), or `alpha · acc` (not `BETA`: C is not read), into
/// the `R × cols` tile of a row-major C whose last vector has `last` live lanes (`cols =
/// (NV − 1)·LANES + last`), straight from the accumulators: one [`store_vector`] per row and
/// vector.
///
/// # Safety
/// The CPU has `V`'s tier; `c + r · rsc + j` is writable for `r < R`, `j < cols`.
#[inline(always)]
unsafe fn store_acc<V: F32s, const R: usize, const NV: usize, const BETA: bool>(
    acc: &[[V; NV]; R],
    ab: (f32, f32),
    (c, rsc): (*mut f32, isize),
    last: usize,
) {
    for (r, row) in acc.iter().enumerate() {
        for (v, &sum) in row.iter().enumerate() {
            let live = if v + 1 == NV { last } else { V::LANES };
            // SAFETY: the `live` lanes are columns of row r inside the tile.
            unsafe {
                let cp = c.offset(r as isize * rsc).add(v * V::LANES);
                store_vector::<V, BETA>(cp, sum, ab, live);
            }
        }
    }
}

/// Writes `alpha · x + beta · C` (`BETA`), or `alpha · x` (not `BETA`: C is not read), to the
/// first `live` lanes (`1 ≤ live ≤ LANES`) of `dst`. `alpha == 1` skips its product, which is
/// exact. A partial vector reads C under a mask and is written by [`F32s::store_first`].
///
/// # Safety
/// The CPU has `V`'s tier; `dst..dst + live` is readable (with `BETA`) and writable.
#[inline(always)]
unsafe fn store_vector<V: F32s, const BETA: bool>(
    dst: *mut f32,
    x: V,
    (alpha, beta): (f32, f32),
    live: usize,
) {
    // SAFETY: only lanes below `live` of `dst` are read or written.
    unsafe {
        let mut x = match alpha == 1.0 {
            true => x,
            false => V::mul(V::splat(alpha), x),
        };
        if live == V::LANES {
            if BETA {
                x = V::add(x, V::mul(V::splat(beta), V::load(dst)));
            }
            x.store(dst);
            return;
        }
        if BETA {
            let old = V::load_masked(dst, V::first(live));
            x = V::add(x, V::mul(V::splat(beta), old));
        }
        x.store_first(dst, live);
    }
}
