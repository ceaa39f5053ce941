//! Splitting a large product over rayon's threads.
//!
//! The packed route shares one packed copy of B between the threads (`driver::gemm_parallel`).
//! The unpacked dot route has nothing to share: C is cut in halves by rows (or by columns when
//! it is wider than tall), recursively, and each piece runs on one thread. A piece never splits
//! `k`, and each element of C is summed in the same order whatever piece it is in (see
//! `driver`), so the result is bit-identical to the serial one for any number of threads and
//! any scheduling.

use super::{gemm_on_threads, Route};
use crate::Scalar;
use crate::Tier;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// Products under this many flops (`2·m·n·k`, about 40 µs of one core) stay on the calling
/// thread. Handing work to rayon from outside its pool costs tens of microseconds (the job is
/// injected and the caller sleeps until it is done), and each piece packs its own copy of B
/// for each block of B. Measured on a 2-core machine: splitting 3-5 MFLOP products made them
/// 1.3-2.5× slower, splitting 24.5 MFLOP (fc1 at batch 256) and 268 MFLOP (512³) products made
/// them 1.4× and 1.9× faster.
pub(super) const PAR_MIN_FLOPS: usize = 1 << 23;

/// Pieces are cut at multiples of these many rows / columns: multiples of every kernel's MR
/// (8, 6, 4) and NR (32, 16, 8), so only the last piece has edge tiles.
const ROW_ALIGN: usize = 24;
const COL_ALIGN: usize = 32;

/// Where to cut `len` in two: the multiple of `align` nearest to the middle (`len >= 2·align`).
fn cut(len: usize, align: usize) -> usize {
    ((len / 2 + align / 2) / align * align).clamp(align, len - align)
}

/// `C = alpha·A·B + beta·C`, in parallel when large enough.
pub(super) fn gemm_split<T: Scalar>(
    kernel: Tier,
    route: Route,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) {
    let threads = rayon::current_num_threads();
    let (m, k) = a.dim();
    let flops = 2usize
        .saturating_mul(m)
        .saturating_mul(b.ncols())
        .saturating_mul(k);
    if threads == 1 || flops < PAR_MIN_FLOPS {
        // Nothing to gain; pieces would give the same bits anyway.
        return gemm_on_threads(kernel, 1, route, alpha, a, b, beta, c);
    }
    if route == Route::Packed {
        return gemm_on_threads(kernel, threads, route, alpha, a, b, beta, c);
    }
    // About two pieces per thread lets a thread that finishes early steal the rest.
    let depth = (2 * threads).next_power_of_two().trailing_zeros();
    split(kernel, route, alpha, a, b, beta, c, depth);
}

fn split<T: Scalar>(
    kernel: Tier,
    route: Route,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
    depth: u32,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let flops = 2usize.saturating_mul(m).saturating_mul(n).saturating_mul(k);
    let split_rows = m >= n && m >= 2 * ROW_ALIGN;
    let split_cols = !split_rows && n >= 2 * COL_ALIGN;
    if depth == 0 || flops < PAR_MIN_FLOPS || !(split_rows || split_cols) {
        gemm_on_threads(kernel, 1, route, alpha, a, b, beta, c);
    } else if split_rows {
        let i = cut(m, ROW_ALIGN);
        let (a0, a1) = a.split_at(Axis(0), i);
        let (c0, c1) = c.split_at(Axis(0), i);
        rayon::join(
            || split(kernel, route, alpha, a0, b, beta, c0, depth - 1),
            || split(kernel, route, alpha, a1, b, beta, c1, depth - 1),
        );
    } else {
        let j = cut(n, COL_ALIGN);
        let (b0, b1) = b.split_at(Axis(1), j);
        let (c0, c1) = c.split_at(Axis(1), j);
        rayon::join(
            || split(kernel, route, alpha, a, b0, beta, c0, depth - 1),
            || split(kernel, route, alpha, a, b1, beta, c1, depth - 1),
        );
    }
}
