//! Portable micro-kernel: plain Rust over a fixed-size block of accumulators.
//!
//! With `MR` and `NR` known at compile time the loops fully unroll and the `NR` columns of each
//! accumulator row map onto SIMD registers of whatever the target offers (SSE2 on plain x86-64),
//! so this is also the f64 kernel and the reference the SIMD kernels are tested against.

use super::kernel::{write_tile, MicroKernel};
use crate::Scalar;

/// `MR × NR` tile of plain multiply-adds.
#[derive(Debug)]
pub(super) struct Portable<const MR: usize, const NR: usize>;

impl<T: Scalar, const MR: usize, const NR: usize> MicroKernel<T> for Portable<MR, NR> {
    const MR: usize = MR;
    const NR: usize = NR;
    const LANES: usize = NR;
    const KC: usize = 256;
    const MC: usize = 128;
    const NC: usize = 1024;
    const DIRECT_B_MAX_M: usize = 2 * MR;

    #[inline(never)]
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
    ) {
        let mut acc = [[T::zero(); NR]; MR];
        for p in 0..k {
            // SAFETY: step p of the A panel holds MR values and step p of the B panel holds
            // NR values (`LANES == NR`), by the `tile` contract.
            let (ap, bp) = unsafe {
                (
                    *a.add(p * MR).cast::<[T; MR]>(),
                    *b.offset(p as isize * b_ks).cast::<[T; NR]>(),
                )
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
}
