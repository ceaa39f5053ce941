//! AVX2 + FMA micro-kernels for f32: a 6 × 16 tile in twelve 256-bit accumulators, and an
//! 8 × 8 one for `A·Bᵀ` products of up to 128 rows.
//!
//! The 6 × 16 tile is the classic Haswell-era shape: per step of `k`, two B vectors of 8, six
//! broadcasts of A and twelve fused multiply-adds, leaving registers for the operands. Both
//! shapes share one source: the `k` loop runs four steps per iteration (after the `k % 4`
//! first ones), and for deep products (`k > 64`) the tile's rows of C are prefetched before it
//! starts. A row strip of tiles runs in one call (`strip_r`), so shallow products pay the
//! dispatch once per strip. Edge tiles are compiled per row count (`R`) and vector count
//! (`NV`); partial columns use masked loads, and stores of 4, 2 and 1 lanes (masked stores are
//! slow on AMD cores). A row-major C is written straight from the accumulators when the tile is
//! full or one vector wide (every index a constant); other tiles, and a strided C, go through a
//! local copy of the sums (a write-out that indexes the accumulators at run time spills them
//! out of the `k` loop's registers). Every element of C gets the same chain of fused
//! multiply-adds in either shape, so the choice never changes a bit.

use super::kernel::{with_a_rows, write_tile, ARows, ATile, BPanels, MicroKernel, Panel};
use std::arch::x86_64::*;

/// The AVX2+FMA f32 kernel with a 6 × 16 tile (twelve accumulators): the general choice.
/// Only used after `Tier::Avx2.is_supported()`, as is [`Avx2Narrow`].
#[derive(Debug)]
pub(super) struct Avx2;

/// The same kernel with an 8 × 8 tile (eight accumulators; one B vector and eight broadcasts
/// per step, which Zen 3's three load ports sustain). Chosen for `A·Bᵀ` products (B
/// column-major) up to `plan::NARROW_MAX_M` rows: packing B interleaves 8 columns instead of 16,
/// and the LeNet sizes (multiples of 8, or 4) leave fewer partial tiles.
#[derive(Debug)]
pub(super) struct Avx2Narrow;

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
                let nv = cols.div_ceil(LANES);
                with_a_rows!(a, $mr, |a| {
                    avx2_kernel!(@rows (rows, nv), (k, a, b, b_ks, alpha, beta, c, rsc, csc, cols), [$($r)*], [$($v)*])
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
                        $($r => unsafe { strip_r::<_, $r, $nv>(k, a, b, alpha, beta, c, rsc, csc, cols) },)*
                        _ => unreachable!("avx2 strip of {rows} rows"),
                    }
                })
            }
        }
    };
    (@rows $sel:expr, $args:tt, [$($r:literal)*], $vs:tt) => {
        avx2_kernel!(@arms $sel, $args, [$(($r, $vs))*], [])
    };
    (@arms $sel:expr, $args:tt, [($r:literal, [$($v:literal)*]) $($rest:tt)*], [$($arms:tt)*]) => {
        avx2_kernel!(@arms $sel, $args, [$($rest)*], [$($arms)* $(($r, $v))*])
    };
    (@arms $sel:expr, $args:tt, [], [$(($r:literal, $v:literal))*]) => {
        match $sel {
            // SAFETY: forwarded `tile` contract; R == rows and NV vectors cover cols.
            $(($r, $v) => unsafe { tile_rn::<_, $r, $v> $args },)*
            (rows, nv) => unreachable!("avx2 tile {rows} rows x {nv} vectors"),
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
/// Rows `0..R` of `ap` are readable, `bp` points to `NV · 8` readable values; AVX2+FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn step<A: ARows<f32>, const R: usize, const NV: usize>(
    acc: &mut [[__m256; NV]; R],
    ap: A,
    bp: *const f32,
) {
    // SAFETY: the reads are the ones the contract allows.
    unsafe {
        let mut bv = [_mm256_setzero_ps(); NV];
        for v in 0..NV {
            bv[v] = _mm256_loadu_ps(bp.add(v * LANES));
        }
        for r in 0..R {
            let ar = _mm256_broadcast_ss(&*ap.row(r));
            for v in 0..NV {
                acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
            }
        }
    }
}

/// Every tile of an `R`-row strip of C (`cols` wide) whose full tiles have `NV` vectors
/// (1 or 2): the panels of `b` in order, the last one possibly narrower.
///
/// # Safety
/// The [`MicroKernel::strip`] contract with `rows == R`, and AVX2+FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn strip_r<A: ARows<f32>, const R: usize, const NV: usize>(
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
    const { assert!(NV == 1 || NV == 2) };
    let nr = NV * LANES;
    let count = cols.div_ceil(nr);
    for q in 0..count - 1 {
        let bp = b.ptr.wrapping_offset(q as isize * b.next);
        let cq = c.wrapping_offset((q * nr) as isize * csc);
        // SAFETY: panel q is a full one, inside B and C (strip contract).
        unsafe { tile_rn::<A, R, NV>(k, a, bp, b.ks, alpha, beta, cq, rsc, csc, nr) };
    }
    let (jr, cl) = (
        (count - 1) * nr,
        c.wrapping_offset(((count - 1) * nr) as isize * csc),
    );
    let left = cols - jr;
    // SAFETY: the last panel, `left` columns, inside B and C (strip contract).
    unsafe {
        if left > LANES {
            tile_rn::<A, R, NV>(k, a, b.last, b.last_ks, alpha, beta, cl, rsc, csc, left)
        } else {
            tile_rn::<A, R, 1>(k, a, b.last, b.last_ks, alpha, beta, cl, rsc, csc, left)
        }
    }
}

/// The `R`-row, `NV`-vector tile, A's rows addressed by `a` (a packed panel or A in place).
///
/// # Safety
/// The [`MicroKernel::tile`] contract with `rows == R`, `cols.div_ceil(8) == NV`, and AVX2+FMA.
#[target_feature(enable = "avx2,fma")]
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
    if csc == 1 && k > 64 {
        prefetch_c_rows::<R>(c, rsc, cols);
    }
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    // The first k % 4 steps one by one, then four steps per iteration: the loop counter and
    // pointer updates are paid once per four. The pointers may end up past A and B after the
    // last step (never read): wrapping arithmetic keeps that defined.
    let (mut ap, mut bp) = (a.for_rows::<R>(), b);
    for _ in 0..k % 4 {
        // SAFETY: step p is inside A and B (tile contract); AVX2+FMA enabled.
        unsafe { step::<_, R, NV>(&mut acc, ap, bp) };
        (ap, bp) = (ap.ahead(1), bp.wrapping_offset(b_ks));
    }
    for _ in 0..k / 4 {
        // SAFETY: as above, steps p..p + 4.
        unsafe {
            for s in 0..4 {
                step::<_, R, NV>(&mut acc, ap.ahead(s), bp.wrapping_offset(s as isize * b_ks));
            }
        }
        (ap, bp) = (ap.ahead(4), bp.wrapping_offset(4 * b_ks));
    }

    if csc == 1 && (cols == NV * LANES || NV == 1) {
        // A full tile of a row-major C, or one vector wide: straight from the registers, every
        // index a constant.
        let last = cols - (NV - 1) * LANES;
        // SAFETY: row-major C covers R × cols (tile contract).
        unsafe {
            if beta == 0.0 {
                store_acc::<R, NV, false>(&acc, alpha, beta, c, rsc, last)
            } else {
                store_acc::<R, NV, true>(&acc, alpha, beta, c, rsc, last)
            }
        }
        return;
    }
    // Edge tiles and strided C: the sums leave the registers through a local copy, in one
    // straight run of stores: the branchy write-out below then indexes memory, not the
    // accumulators, which keeps them in registers for the whole `k` loop.
    let mut sums = [[0.0f32; 16]; 8];
    for r in 0..R {
        for v in 0..NV {
            // SAFETY: row r of `sums` has 16 ≥ NV·8 floats.
            unsafe { _mm256_storeu_ps(sums[r].as_mut_ptr().add(v * LANES), acc[r][v]) };
        }
    }
    if csc != 1 {
        // Strided C (e.g. writing into a `.t()` view): element by element.
        // SAFETY: C covers R × cols at (rsc, csc) (tile contract).
        unsafe { write_tile(sums.as_flattened(), 16, R, cols, alpha, beta, c, rsc, csc) };
        return;
    }
    // SAFETY: row-major C covers R × cols (tile contract).
    unsafe {
        if beta == 0.0 {
            store_rows::<R, NV, false>(&sums, alpha, beta, c, rsc, cols)
        } else {
            store_rows::<R, NV, true>(&sums, alpha, beta, c, rsc, cols)
        }
    }
}

/// Writes `alpha · acc + beta · C` (`BETA`), or `alpha · acc` (not `BETA`: C is not read), into
/// the `R × cols` tile of a row-major C whose last vector has `last` live lanes (`cols =
/// (NV − 1)·8 + last`, `1 <= last <= 8`), straight from the accumulators: one [`store_vector`]
/// per row and vector.
///
/// # Safety
/// `c + r · rsc + j` is writable for `r < R`, `j < (NV − 1) · 8 + last`; AVX2.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_acc<const R: usize, const NV: usize, const BETA: bool>(
    acc: &[[__m256; NV]; R],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    last: usize,
) {
    for (r, row) in acc.iter().enumerate() {
        for (v, &sum) in row.iter().enumerate() {
            let live = if v + 1 == NV { last } else { LANES };
            // SAFETY: the `live` lanes are columns of row r inside the tile.
            unsafe {
                let cp = c.offset(r as isize * rsc).add(v * LANES);
                store_vector::<BETA>(cp, sum, alpha, beta, live);
            }
        }
    }
}

/// Writes `alpha · sums + beta · C` (`BETA`), or `alpha · sums` (not `BETA`: C is not read),
/// into the `R × cols` tile of a row-major C: one [`store_vector`] per row and vector.
///
/// # Safety
/// `c + r · rsc + j` is writable for `r < R`, `j < cols`, `cols <= NV · 8`; AVX2.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_rows<const R: usize, const NV: usize, const BETA: bool>(
    sums: &[[f32; 16]; 8],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    cols: usize,
) {
    for v in 0..NV {
        let live = (cols - v * LANES).min(LANES);
        for (r, sum) in sums.iter().enumerate().take(R) {
            // SAFETY: the `live` lanes are exactly the tile's columns j < cols of row r, and
            // row r of `sums` has 16 ≥ NV · 8 floats.
            unsafe {
                let x = _mm256_loadu_ps(sum.as_ptr().add(v * LANES));
                let cp = c.offset(r as isize * rsc).add(v * LANES);
                store_vector::<BETA>(cp, x, alpha, beta, live);
            }
        }
    }
}

/// Writes `alpha · x + beta · C` (`BETA`), or `alpha · x` (not `BETA`: C is not read), to the
/// first `live` lanes (`1 <= live <= 8`) of `dst`. `alpha == 1` skips its product, which is
/// exact. A partial vector reads C under a mask and is written in pieces of 4, 2 and 1 lanes
/// ([`store_first`]): masked stores are microcoded and slow on AMD cores.
///
/// # Safety
/// `dst..dst + live` is readable (with `BETA`) and writable; AVX2.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_vector<const BETA: bool>(
    dst: *mut f32,
    x: __m256,
    alpha: f32,
    beta: f32,
    live: usize,
) {
    let mut x = match alpha == 1.0 {
        true => x,
        false => _mm256_mul_ps(_mm256_set1_ps(alpha), x),
    };
    let beta_v = _mm256_set1_ps(beta);
    // SAFETY: only lanes below `live` of `dst` are read or written.
    unsafe {
        if live == LANES {
            if BETA {
                x = _mm256_add_ps(x, _mm256_mul_ps(beta_v, _mm256_loadu_ps(dst)));
            }
            _mm256_storeu_ps(dst, x);
            return;
        }
        if BETA {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            // Lane l is live when l < live (sign bit set in the mask).
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(live as i32), lane);
            x = _mm256_add_ps(x, _mm256_mul_ps(beta_v, _mm256_maskload_ps(dst, mask)));
        }
        store_first(dst, x, live);
    }
}

/// Writes the first `n` lanes of `x` (`1 <= n < 8`) to `dst`: a 4-, a 2- and a 1-lane store
/// as needed, cheaper than a masked store on AMD cores.
///
/// # Safety
/// `dst..dst + n` is writable; AVX2.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn store_first(dst: *mut f32, x: __m256, n: usize) {
    let (mut part, mut done) = (_mm256_castps256_ps128(x), 0);
    // SAFETY (each store): lanes done..done + width < n of `dst` are writable.
    unsafe {
        if n >= 4 {
            _mm_storeu_ps(dst, part);
            (part, done) = (_mm256_extractf128_ps::<1>(x), 4);
        }
        if n - done >= 2 {
            _mm_store_sd(dst.add(done).cast(), _mm_castps_pd(part));
            (part, done) = (_mm_movehl_ps(part, part), done + 2);
        }
        if n > done {
            _mm_store_ss(dst.add(done), part);
        }
    }
}
