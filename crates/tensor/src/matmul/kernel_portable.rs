//! Portable micro-kernel: plain Rust over a fixed-size block of accumulators.
//!
//! With `MR` and `NR` known at compile time the loops fully unroll and the `NR` columns of each
//! accumulator row map onto SIMD registers of whatever the target offers (SSE2 on plain x86-64).
//! It is the fallback for any CPU, and — compiled a second time inside `#[target_feature]`
//! wrappers — the f64 kernel on AVX2 and AVX-512 machines: the same source, so f64 results are
//! bit-identical on every path (separate multiply and add, no fused multiply-add).

use super::kernel::{write_tile, ATile, MicroKernel};
use crate::Scalar;

/// `MR × NR` tile of plain multiply-adds, for the baseline target.
#[derive(Debug)]
pub(super) struct Portable<const MR: usize, const NR: usize>;

/// The portable tile compiled for AVX2 (f64 on the AVX2 and AVX-512 tiers).
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
pub(super) struct PortableAvx2<const MR: usize, const NR: usize>;

/// Implements [`MicroKernel`] for a portable-kernel marker whose `tile` calls `$body`.
macro_rules! portable_kernel {
    ($name:ident, $body:ident) => {
        impl<T: Scalar, const MR: usize, const NR: usize> MicroKernel<T> for $name<MR, NR> {
            const MR: usize = MR;
            const NR: usize = NR;
            const LANES: usize = NR;
            const KC: usize = 256;
            const DIRECT_B_MAX_M: usize = 2 * MR;

            unsafe fn tile(
                k: usize,
                a: ATile<T>,
                b: *const T,
                b_ks: isize,
                alpha: T,
                beta: T,
                c: *mut T,
                rsc: isize,
                csc: isize,
                rows: usize,
                cols: usize,
            ) {
                // SAFETY: forwarded `tile` contract (including the instruction set).
                unsafe { $body::<T, MR, NR>(k, a, b, b_ks, alpha, beta, c, rsc, csc, rows, cols) }
            }
        }
    };
}

portable_kernel!(Portable, tile_baseline);
#[cfg(target_arch = "x86_64")]
portable_kernel!(PortableAvx2, tile_avx2);

/// Defines `$name`: the portable tile compiled under the given attributes (a target feature,
/// or none for the baseline), so that one source is vectorised for each instruction set.
macro_rules! tile_for_target {
    ($(#[$attr:meta])* $name:ident) => {
        /// The portable tile for one target.
        ///
        /// # Safety
        /// The [`MicroKernel::tile`] contract, and the CPU supports the features enabled here.
        $(#[$attr])*
        unsafe fn $name<T: Scalar, const MR: usize, const NR: usize>(
            k: usize,
            a: ATile<T>,
            b: *const T,
            b_ks: isize,
            alpha: T,
            beta: T,
            c: *mut T,
            rsc: isize,
            csc: isize,
            rows: usize,
            cols: usize,
        ) {
            // SAFETY: forwarded contract.
            unsafe { tile_body::<T, MR, NR>(k, a, b, b_ks, alpha, beta, c, rsc, csc, rows, cols) }
        }
    };
}

tile_for_target!(
    #[inline(never)]
    tile_baseline
);
tile_for_target!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    tile_avx2
);

/// The portable tile itself, inlined into each wrapper so it is vectorised for that target.
///
/// # Safety
/// The [`MicroKernel::tile`] contract with `LANES == NR`.
#[inline(always)]
unsafe fn tile_body<T: Scalar, const MR: usize, const NR: usize>(
    k: usize,
    a: ATile<T>,
    b: *const T,
    b_ks: isize,
    alpha: T,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
    rows: usize,
    cols: usize,
) {
    let mut acc = [[T::zero(); NR]; MR];
    // Whole steps are read only where all MR rows are the tile's (an edge tile of A in place
    // may end at the end of A's memory).
    let panel = a.is_panel(MR) && rows == MR;
    for p in 0..k {
        // SAFETY: step p of the B panel holds NR values (`LANES == NR`); a packed A panel holds
        // MR values per step, A in place its `rows` rows (rows past them repeat the last one,
        // and their sums are never written), by the `tile` contract.
        let (ap, bp) = unsafe {
            let step = a.ptr.offset(p as isize * a.ks);
            let ap: [T; MR] = if panel {
                *step.cast::<[T; MR]>()
            } else {
                std::array::from_fn(|r| *step.offset(r.min(rows - 1) as isize * a.rs))
            };
            (ap, *b.offset(p as isize * b_ks).cast::<[T; NR]>())
        };
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] = acc[r][j] + ap[r] * bp[j];
            }
        }
    }
    // SAFETY: C covers rows × cols at (rsc, csc), by the `tile` contract.
    unsafe { write_tile(acc.as_flattened(), NR, rows, cols, alpha, beta, c, rsc, csc) };
}
