//! The micro-kernel contract shared by the portable and SIMD kernels.
//!
//! A micro-kernel computes one `rows × cols` tile of C (at most `MR × NR`) from an `MR`-row
//! panel of packed A and an `NR`-column panel of B, keeping the whole tile in registers for the
//! full `k` loop, and touches C only once at the end: `C = alpha·acc + beta·C`.

use crate::Scalar;

/// A register-tiled micro-kernel and the cache-block sizes that suit it.
pub(super) trait MicroKernel<T> {
    /// Rows of C per tile (and of each packed A panel).
    const MR: usize;
    /// Columns of C per tile (and of each packed B panel).
    const NR: usize;
    /// SIMD width in elements: a tile reads each row of its B panel in whole vectors,
    /// `cols.div_ceil(LANES) · LANES` elements, so B can be read in place (unpacked) only for
    /// panels whose width is a multiple of `LANES`.
    const LANES: usize;
    /// Depth of one cache block: A and B panels are packed `KC` columns / rows at a time, so
    /// that a `KC × NR` panel of B stays in L1 while the tiles of an A block stream past it.
    /// The other block sizes come from the cache sizes at run time (`cache::Blocking`).
    const KC: usize;
    /// Up to this many rows of C (and at most one block of A, `MC` rows), B is read in place
    /// when its rows are contiguous: each B panel is then read from memory once either way, so
    /// packing it would only add a copy.
    const DIRECT_B_MAX_M: usize;

    /// `C[..rows, ..cols] = alpha · A_panel · B_panel + beta · C[..rows, ..cols]`;
    /// with `beta == 0` C is never read (it may hold NaN).
    ///
    /// # Safety
    /// - `1 <= rows <= MR`, `1 <= cols <= NR`, `k >= 1`;
    /// - `a` points to `k · MR` readable elements: row `r` of step `p` at `a[p · MR + r]`;
    /// - for every `p < k`, `b + p · b_ks` points to `cols.div_ceil(LANES) · LANES` readable
    ///   elements (column `j` of step `p`);
    /// - `c + i · rsc + j · csc` is writable for `i < rows`, `j < cols`, and no other live
    ///   reference aliases those elements;
    /// - the CPU supports the kernel's instruction set.
    unsafe fn tile(
        k: usize,
        a: *const T,
        b: *const T,
        b_ks: isize,
        alpha: T,
        beta: T,
        c: *mut T,
        rsc: isize,
        csc: isize,
        rows: usize,
        cols: usize,
    );
}

/// Writes `alpha · acc + beta · C` for the top-left `rows × cols` corner of `acc` (row `r` at
/// `acc[r · acc_rs ..]`) into C at strides `rsc`, `csc`. With `beta == 0`, C is not read.
///
/// The products are rounded separately (no fused multiply-add) so that the SIMD kernels' vector
/// stores, which do the same, give bit-identical results whatever the layout of C.
///
/// # Safety
/// `c + i · rsc + j · csc` is writable for `i < rows`, `j < cols`.
#[inline(always)]
pub(super) unsafe fn write_tile<T: Scalar>(
    acc: &[T],
    acc_rs: usize,
    rows: usize,
    cols: usize,
    alpha: T,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
) {
    for i in 0..rows {
        for j in 0..cols {
            // SAFETY: (i, j) is inside the tile (caller's contract).
            let cij = unsafe { &mut *c.offset(i as isize * rsc + j as isize * csc) };
            let x = alpha * acc[i * acc_rs + j];
            *cij = if beta == T::zero() {
                x
            } else {
                x + beta * *cij
            };
        }
    }
}
