//! Matrix multiplication: `C = alpha·A·B + beta·C`.
//!
//! Transposed forms come from ndarray views: `gemm(1.0, a.t(), b, 0.0, c)` computes Aᵀ·B, and
//! `gemm(1.0, a, b.t(), 1.0, c)` accumulates A·Bᵀ into C. Any strides are accepted (transposed,
//! sliced, column-major, negative): they only change how the operands are packed.
//!
//! # How it works
//! A hand-written GEMM in the style of BLIS / `matrixmultiply`, one concept per file under
//! `matmul/`:
//! - `driver`: cache blocking. `k` is cut in blocks of `KC`, A in blocks of `MC` rows, B in
//!   blocks of `NC` columns. What is read in place instead of packed is decided in one place
//!   (`Direct::choose`): B, when its rows are contiguous and A fits in one block of `MC` rows
//!   (and has at most the kernel's `DIRECT_B_MAX_M` rows), since each panel is then read from
//!   memory once either way and packing would only add a copy; and for shallow products
//!   (`k ≤ 16`, e.g. LeNet's `fc3` input gradient and `conv2` column gradient) A in any
//!   strides and B with contiguous rows, since with so few steps per tile the copies cost as
//!   much as the tiles. When a whole block of B fits in L1 the tiles run along rows
//!   of C (one `MicroKernel::strip` call per row strip), else down B's column panels;
//! - `cache`: the cache sizes, read at run time from Linux's sysfs (fallback: 32 KiB L1d,
//!   512 KiB L2, 2 MiB of L3 per core), and `MC`, `NC` derived from them: a packed A block fills
//!   about a third of L2, a packed B block about half of this core's share of L3;
//! - `pack`: copies a block of A into `MR`-row panels and of B into `NR`-column panels,
//!   zero-padded, whatever the source strides, so the micro-kernel reads contiguous memory;
//! - `source`: where B's panels come from. Inside the crate, B is anything implementing the
//!   `PackB` trait — a matrix view (`MatrixB`, the packing above) or a caller that writes the
//!   `KC × NR` panels itself, e.g. the shifted convolution's weight gradient, which packs
//!   image lines (`gemm_packed_b`; the driver passes the running kernel's `NR`). The trait is safe:
//!   it writes into an ordinary slice, so a wrong implementation gives wrong numbers, never
//!   undefined behaviour;
//! - `kernel_*`: the micro-kernels, which keep an `MR × NR` tile of C in registers for the whole
//!   `k` loop and apply `alpha`/`beta` when writing it (partial edge tiles included). A comes
//!   as an `ATile` — a packed panel (compile-time offsets) or A itself (one offset per row) —
//!   and both give the same chain of FMAs, so reading in place never changes a bit. AVX2 has
//!   two tile shapes from one source: 6 × 16, and 8 × 8 for `A·Bᵀ` products of up to 128 rows
//!   (fewer columns to interleave when packing a column-major B, fewer partial tiles at the
//!   LeNet sizes); every element gets the same chain of FMAs in both;
//! - `dot`: products whose A rows and B columns are both contiguous (`x·Wᵀ` of row-major
//!   arrays, as in linear layers and convolution weight gradients) skip packing altogether: a
//!   4 × 4 (AVX-512) or 3 × 4 (AVX2) tile of dot products read straight from the operands,
//!   one source for both widths, on every such `f32` product from the AVX2 tier up. The route
//!   never depends on the row count, so a row of C has the same bits in any batch;
//! - `parallel`: splits products above about 8 megaflops over rayon's threads, by rows or
//!   columns of C — never along `k` — so results are bit-identical for any thread count. On
//!   the packed route the threads share one packed copy of each B block (each packing a run of
//!   its panels), then each packs only its own rows of A, in pieces of equal work; they meet
//!   twice per B block. [`gemm_with`] with
//!   [`Parallelism::CallingThread`] skips all this and makes no rayon call, for callers that
//!   already parallelise over a batch.
//!
//! The packed panels live in per-thread buffers (the crate's `scratch` module) that grow once,
//! so a call allocates nothing in steady state.
//!
//! | kernel (`f32`)     | tile `MR × NR` | `KC` | `MC` (512 KiB L2) | `NC` (≥ 8 MiB L3/core) |
//! |--------------------|----------------|------|-------------------|------------------------|
//! | `avx512` (AVX-512F)| 8 × 32         | 256  | 168               | 4096                   |
//! | `avx2` (AVX2+FMA)  | 6 × 16, 8 × 8  | 256  | 168               | 4096                   |
//! | `portable`         | 4 × 8          | 256  | 168               | 4096                   |
//!
//! `f64` (used for gradient checks) runs the portable kernel's source compiled for AVX2 (6 × 8
//! tiles, on the AVX2 and AVX-512 tiers) or for the baseline target (4 × 4).
//! It rounds every product and sum separately, so f64 results are the same on every path.
//!
//! # Determinism
//! Every element of C is one sum over `k` in a fixed order: KC blocks in order, steps in order
//! inside a block (packed route), or fixed lanes reduced by a fixed tree (dot route). Threads
//! only ever own disjoint blocks of C, so the same call gives the same bits whatever the thread
//! count or scheduling. Once the per-thread packing buffers have grown, a call allocates nothing.
//!
//! # Choosing the kernel
//! The release build targets baseline x86-64; the SIMD kernels are compiled with
//! `#[target_feature]` and called only on a [`Tier`] the CPU has. `LENET_KERNEL=portable|avx2`
//! lowers the tier for the whole process (it can never raise it), [`Tier::active`] says
//! which one runs, and [`gemm_with_kernel`] takes a tier explicitly.

mod cache;
#[cfg(target_arch = "x86_64")]
mod dot;
mod driver;
mod kernel;
mod kernel_portable;
#[cfg(target_arch = "x86_64")]
mod kernel_simd;
mod layout;
mod pack;
mod parallel;
mod plan;
mod shared_b;
mod source;
#[cfg(target_arch = "x86_64")]
mod transpose_avx2;

pub(crate) use pack::pack_b_lines;
#[cfg(target_arch = "x86_64")]
use plan::Tile;
pub(crate) use plan::{wide_weight_grad_route, Route};
pub(crate) use source::{MatrixB, PackB};
#[cfg(target_arch = "x86_64")]
pub(crate) use transpose_avx2::transpose8;

use crate::shape::{check_shape, Expected};
use crate::tier::Needs;
use crate::{Scalar, Tier};
use kernel::MicroKernel;
use kernel_portable::Portable;
#[cfg(target_arch = "x86_64")]
use kernel_portable::PortableAvx2;
use layout::{MatMut, MatRef};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use source::AsF32;
use std::any::TypeId;

/// General matrix multiply: `c = alpha * a·b + beta * c`.
///
/// With `beta == 0` the old contents of `c` are ignored (even NaN), as in BLAS; with
/// `alpha == 0` or an empty inner dimension (`k == 0`), `a` and `b` are not read and
/// `c = beta * c`.
///
/// Runs on the calling thread for small products and on rayon's pool above about 8 megaflops;
/// either way the result is bit-identical (the same inputs in the same layouts always give the
/// same bits; a different layout of an operand — or, with the AVX2 kernel, the size of an
/// `A·Bᵀ` product — may change the summation order and so the last bits). Uses the kernel
/// [`Tier::active`] reports.
///
/// ```
/// use ndarray::array;
/// use tensor::gemm;
///
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let b = array![[5.0f32, 6.0], [7.0, 8.0]];
/// let mut c = array![[1.0f32, 1.0], [1.0, 1.0]];
/// // c = 2·aᵀ·b + 1·c
/// gemm(2.0, a.t(), b.view(), 1.0, c.view_mut());
/// assert_eq!(c, array![[2.0 * 26.0 + 1.0, 2.0 * 30.0 + 1.0], [2.0 * 38.0 + 1.0, 2.0 * 44.0 + 1.0]]);
/// ```
///
/// # Panics
/// If the shapes do not agree: `a` is `[m, k]`, `b` is `[k, n]` and `c` is `[m, n]`.
#[track_caller]
pub fn gemm<T: Scalar>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) {
    gemm_with_kernel(Tier::active(), alpha, a, b, beta, c);
}

/// [`gemm`] with an explicit micro-kernel family, for tests and benchmarks that compare paths.
///
/// # Panics
/// If the shapes do not agree (see [`gemm`]), or if this CPU does not support `kernel`
/// (see [`Tier::is_supported`]).
#[track_caller]
pub fn gemm_with_kernel<T: Scalar>(
    kernel: Tier,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) {
    gemm_with(kernel, Parallelism::Rayon, alpha, a, b, beta, c);
}

/// Where a product may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    /// Large products (above about 8 megaflops) are split over the current rayon pool; small
    /// ones run on the calling thread. What [`gemm`] does.
    Rayon,
    /// Only on the calling thread, with no rayon call at all: for callers that already run in
    /// parallel over a batch (one product per shard), where nested splitting would only add
    /// scheduling and a second copy of the packed operands.
    #[cfg_attr(not(feature = "bench-internals"), allow(dead_code))]
    CallingThread,
}

/// [`gemm`] with both choices explicit: the micro-kernel family and where it runs.
///
/// Either [`Parallelism`] gives bit-identical results (threads own disjoint blocks of C and
/// every element is summed in the same order; see the module docs).
///
/// ```
/// use ndarray::array;
/// use tensor::internals::{gemm_with, Parallelism};
/// use tensor::Tier;
///
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let mut c = ndarray::Array2::<f32>::zeros((2, 2));
/// // c = a·aᵀ, computed on this thread only.
/// let kernel = Tier::active();
/// gemm_with(kernel, Parallelism::CallingThread, 1.0, a.view(), a.t(), 0.0, c.view_mut());
/// assert_eq!(c, array![[5.0, 11.0], [11.0, 25.0]]);
/// ```
///
/// # Panics
/// If the shapes do not agree (see [`gemm`]), or if this CPU does not support `kernel`
/// (see [`Tier::is_supported`]).
#[track_caller]
pub fn gemm_with<T: Scalar>(
    kernel: Tier,
    parallelism: Parallelism,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) {
    if finished_without_product(kernel, a.dim(), b.dim(), alpha, beta, c.view_mut()) {
        return;
    }
    let a_b_transposed = a.strides()[1] == 1 && b.strides()[0] == 1;
    let route = plan::route::<T>(kernel, a_b_transposed);
    match parallelism {
        Parallelism::Rayon => parallel::gemm_split(kernel, route, alpha, a, b, beta, c),
        Parallelism::CallingThread => gemm_on_threads(kernel, 1, route, alpha, a, b, beta, c),
    }
}

/// Runs one (piece of a) product: the dot route on the calling thread, the packed one on
/// `threads` threads (the current rayon pool when above 1). Shapes are checked and non-empty.
fn gemm_on_threads<T: Scalar>(
    kernel: Tier,
    threads: usize,
    route: Route,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) {
    let (ad, cd) = (MatRef::from_view(&a), MatMut::from_view(&mut c));
    if let Route::Dot(tier) = route {
        debug_assert!(route.needs() <= kernel, "{route:?} on {kernel:?}");
        #[cfg(target_arch = "x86_64")]
        return dot_route(tier, alpha, (ad, &b), beta, cd);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the dot route needs a SIMD kernel, not {tier:?}");
    }
    let src = MatrixB::new(&b);
    let in_place = src.as_mat();
    // SAFETY: A is readable through its view, C writable through the unique `c` borrow held for
    // the call; `in_place` is `src`'s own matrix; shapes are checked and non-empty; `kernel` is
    // supported (asserted by the caller).
    unsafe { gemm_packed(kernel, threads, alpha, ad, &src, Some(in_place), beta, cd) };
}

/// `c = alpha·a·b + beta·c` by the dot-product tiles of `tier` (`T` is `f32`, A's rows and B's
/// columns contiguous: the Dot route's condition).
#[cfg(target_arch = "x86_64")]
fn dot_route<T: Scalar>(
    tier: Tier,
    alpha: T,
    (ad, b): (MatRef<T>, &ArrayView2<'_, T>),
    beta: T,
    cd: MatMut<T>,
) {
    let bd = MatRef::from_view(b);
    debug_assert!(TypeId::of::<T>() == TypeId::of::<f32>() && ad.cs == 1 && bd.rs == 1);
    let (ad, bd, cd) = (ad.cast::<f32>(), bd.cast::<f32>(), cd.cast::<f32>());
    // `to_f32` is exact here: T is f32 (the Dot route is only chosen for f32).
    let (alpha, beta) = (alpha.to_f32().unwrap(), beta.to_f32().unwrap());
    // SAFETY: T is f32, so the descriptors keep pointing at valid f32 data: A and B are
    // readable through their shared views, C writable through the unique borrow the caller
    // holds for the call; shapes are checked and non-empty; A's rows and B's columns are
    // contiguous (the Dot route's condition). The kernels run only on a CPU that supports them
    // (the caller asserted `kernel.is_supported()`, and the route needs no more).
    unsafe {
        match tier {
            Tier::Avx512 => dot::gemm_dot_avx512(alpha, ad, bd, beta, cd),
            Tier::Avx2 => dot::gemm_dot_avx2(alpha, ad, bd, beta, cd),
            Tier::Portable => unreachable!("the dot route needs a SIMD kernel"),
        }
    }
}

/// `C = alpha·A·B + beta·C` on the calling thread, B's panels written by `b` (e.g. straight from
/// image windows, for an implicit-GEMM convolution): the packed route with a caller-supplied B.
/// Makes no rayon call. `b` packs panels as wide as the `nr` the driver passes it.
///
/// # Panics
/// If the shapes do not agree (`a` is `[m, k]`, `b.dim()` is `(k, n)`, `c` is `[m, n]`), or if
/// this CPU does not support `kernel`.
#[track_caller]
pub(crate) fn gemm_packed_b<T: Scalar>(
    kernel: Tier,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: &dyn PackB<T>,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) {
    if finished_without_product(kernel, a.dim(), b.dim(), alpha, beta, c.view_mut()) {
        return;
    }
    let (ad, cd) = (MatRef::from_view(&a), MatMut::from_view(&mut c));
    // SAFETY: A is readable through its view, C writable through the unique `c` borrow held for
    // the call; shapes are checked and non-empty; `kernel` is supported (asserted above).
    unsafe { gemm_packed(kernel, 1, alpha, ad, b, None, beta, cd) };
}

/// The checks every entry makes before a product, and the products with nothing to multiply.
/// Panics (naming the shapes) unless `a` is `[m, k]`, `b` is `[k, n]` and `c` is `[m, n]`, or if
/// this CPU does not support `kernel`: a hard check, since running an unsupported kernel would
/// be undefined behaviour. Returns `true` when C is already final: an empty C, or `k = 0` or
/// `alpha = 0` (then `C = beta·C`).
#[track_caller]
fn finished_without_product<T: Scalar>(
    kernel: Tier,
    (m, k): (usize, usize),
    (k2, n): (usize, usize),
    alpha: T,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) -> bool {
    let fit_a = Expected::FitFor {
        other: "a",
        other_shape: [m, k],
        shape: [k, n],
    };
    check_shape("gemm", "b", fit_a, [k2, n]);
    let (cm, cn) = c.dim();
    check_shape("gemm", "c", Expected::Shape([m, n]), [cm, cn]);
    assert!(
        kernel.is_supported(),
        "gemm: this CPU does not support the {} kernel",
        kernel.name()
    );
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 || alpha == T::zero() {
        scale_c(beta, c);
        return true;
    }
    false
}

/// `(MR, NR)`: the tile that runs `T` products on `kernel`'s packed route for a [`PackB`]
/// source whose columns are not contiguous; the driver always passes the running `NR` to
/// [`PackB::pack`].
#[allow(dead_code)] // Only the tests ask: sources read `nr` from `pack`.
pub(crate) fn tile_shape<T: Scalar>(kernel: Tier) -> (usize, usize) {
    fn shape<U, K: MicroKernel<U>>() -> (usize, usize) {
        (K::MR, K::NR)
    }
    match plan::tile::<T>(kernel, usize::MAX, false) {
        #[cfg(target_arch = "x86_64")]
        Tile::Avx512 => shape::<f32, kernel_simd::Avx512>(),
        #[cfg(target_arch = "x86_64")]
        Tile::Avx2 => shape::<f32, kernel_simd::Avx2>(),
        #[cfg(target_arch = "x86_64")]
        Tile::Avx2Narrow => shape::<f32, kernel_simd::Avx2Narrow>(),
        #[cfg(target_arch = "x86_64")]
        Tile::PortableAvx2 => shape::<T, PortableAvx2<6, 8>>(),
        _ if TypeId::of::<T>() == TypeId::of::<f32>() => shape::<f32, Portable<4, 8>>(),
        _ => shape::<T, Portable<4, 4>>(),
    }
}

/// The packed route: picks the micro-kernel for `T` and `kernel` and runs the blocked loop nest,
/// on the calling thread (`threads == 1`) or split over the current rayon pool.
///
/// # Safety
/// The contract of `driver::gemm_serial` (shapes, readable A, writable unaliased C, `b_in_place`
/// describing B), and `kernel` is supported by this CPU.
unsafe fn gemm_packed<T: Scalar>(
    kernel: Tier,
    threads: usize,
    alpha: T,
    a: MatRef<T>,
    b: &dyn PackB<T>,
    b_in_place: Option<MatRef<T>>,
    beta: T,
    c: MatMut<T>,
) {
    /// The serial or the parallel driver for one kernel type.
    ///
    /// # Safety
    /// As for `gemm_packed`, with `K` the kernel for `kernel`.
    unsafe fn run<U: Scalar, K: MicroKernel<U>>(
        threads: usize,
        alpha: U,
        a: MatRef<U>,
        b: &dyn PackB<U>,
        b_in_place: Option<MatRef<U>>,
        beta: U,
        c: MatMut<U>,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            if threads > 1 {
                driver::gemm_parallel::<U, K>(alpha, a, b, b_in_place, beta, c, threads)
            } else {
                driver::gemm_serial::<U, K>(alpha, a, b, b_in_place, beta, c)
            }
        }
    }
    let tile = plan::tile::<T>(kernel, a.rows, b.columns_contiguous());
    debug_assert!(tile.needs() <= kernel, "{tile:?} on {kernel:?}");
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (a, c) = (a.cast::<f32>(), c.cast::<f32>());
        let b_in_place = b_in_place.map(MatRef::cast::<f32>);
        let b = AsF32::new(b);
        // `to_f32` is exact here: T is f32.
        let (alpha, beta) = (alpha.to_f32().unwrap(), beta.to_f32().unwrap());
        // SAFETY: T is f32, so the descriptors keep pointing at valid f32 data; the tile needs
        // no more than `kernel` (the plan); the rest is the caller's contract.
        unsafe {
            match tile {
                #[cfg(target_arch = "x86_64")]
                Tile::Avx512 => {
                    run::<f32, kernel_simd::Avx512>(threads, alpha, a, &b, b_in_place, beta, c)
                }
                #[cfg(target_arch = "x86_64")]
                Tile::Avx2Narrow => {
                    run::<f32, kernel_simd::Avx2Narrow>(threads, alpha, a, &b, b_in_place, beta, c)
                }
                #[cfg(target_arch = "x86_64")]
                Tile::Avx2 => {
                    run::<f32, kernel_simd::Avx2>(threads, alpha, a, &b, b_in_place, beta, c)
                }
                _ => run::<f32, Portable<4, 8>>(threads, alpha, a, &b, b_in_place, beta, c),
            }
        }
    } else {
        // f64 (or another Scalar): the portable tile, compiled for the tier's instruction set.
        // SAFETY: the caller's contract; the tile needs no more than `kernel` (the plan).
        unsafe {
            match tile {
                #[cfg(target_arch = "x86_64")]
                Tile::PortableAvx2 => {
                    run::<T, PortableAvx2<6, 8>>(threads, alpha, a, b, b_in_place, beta, c)
                }
                _ => run::<T, Portable<4, 4>>(threads, alpha, a, b, b_in_place, beta, c),
            }
        }
    }
}

/// `C = beta·C` (the product term is zero); with `beta == 0` the old contents are ignored.
fn scale_c<T: Scalar>(beta: T, mut c: ArrayViewMut2<'_, T>) {
    if beta == T::zero() {
        c.fill(T::zero());
    } else {
        Zip::from(&mut c).for_each(|x| *x = beta * *x);
    }
}

/// Returns `a·b` as a new array.
///
/// ```
/// use ndarray::array;
/// use tensor::matmul;
///
/// let a = array![[1.0f64, 2.0, 3.0]];
/// let b = array![[4.0f64], [5.0], [6.0]];
/// assert_eq!(matmul(a.view(), b.view()), array![[32.0]]);
/// ```
///
/// # Panics
/// If `a` is `[m, k]` and `b` is not `[k, n]`.
#[track_caller]
pub fn matmul<T: Scalar>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<T> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    gemm(T::one(), a, b, T::zero(), c.view_mut());
    c
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) that are not short binary fractions.
    fn values(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * 131 + j * 71 + seed * 17) % 97) as f32 / 48.5 - 1.0 + 1e-3 * (j % 7) as f32
        })
    }

    /// A row of C has the same bits whatever rows of A come with it, on every tier this CPU
    /// has, in both layouts (`x·Wᵀ` with W row-major, and plain row-major B), at the fully
    /// connected layers' shapes and odd ones: one row alone, a run of 16 and of 13 against
    /// all 300 (parallel pieces included). `nn` rests on it (an image's logits do not depend
    /// on its batch); an AVX2 route that switched from dot tiles to packing above 12 rows
    /// failed it.
    #[test]
    fn a_row_of_c_does_not_depend_on_the_other_rows() {
        let (tiers, skipped): (Vec<_>, Vec<_>) = Tier::ALL.iter().partition(|t| t.is_supported());
        if !skipped.is_empty() {
            eprintln!("skipped {skipped:?}: this CPU lacks them");
        }
        for &tier in &tiers {
            for (n, k) in [(120, 400), (84, 120), (10, 84), (37, 301)] {
                let a = values(300, k, 4);
                let w = values(n, k, 5);
                let w_t = w.t().as_standard_layout().into_owned();
                for (layout, b) in [("x·Wᵀ", w.t()), ("row-major B", w_t.view())] {
                    let product = |rows: std::ops::Range<usize>| {
                        let mut c = Array2::<f32>::zeros((rows.len(), n));
                        let x = a.slice(ndarray::s![rows, ..]);
                        gemm_with(tier, Parallelism::Rayon, 1.0, x, b, 0.0, c.view_mut());
                        c
                    };
                    let all = product(0..300);
                    for (i, len) in [(0, 1), (17, 1), (299, 1), (40, 16), (100, 13)] {
                        let part = product(i..i + len);
                        let want = all.slice(ndarray::s![i..i + len, ..]);
                        let same = part
                            .iter()
                            .zip(want)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{tier:?} {layout} {n}x{k}: rows {i}..{}", i + len);
                    }
                }
            }
        }
    }

    /// On AVX2 a packed product of up to 128 rows with B's columns contiguous takes the 8 × 8
    /// tile and the same product with row-major B the 6 × 16 one (B read in place): the bits
    /// must agree, for odd sizes with edge tiles in both directions, several KC blocks,
    /// beta ≠ 0 and a strided C. A is column-major, so that neither takes the dot route.
    #[test]
    fn avx2_tile_shapes_give_the_same_bits() {
        if !Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2+FMA");
            return;
        }
        for (m, n, k) in [(37, 53, 300), (128, 21, 17), (13, 130, 520), (100, 100, 1)] {
            let mut a = Array2::zeros(ndarray::ShapeBuilder::f((m, k)));
            a.assign(&values(m, k, 1));
            let b_row = values(k, n, 2);
            let b_col = b_row.t().as_standard_layout().into_owned();
            let (ad, bt) = (MatRef::from_view(&a.view()), b_col.t());
            let contiguous = MatrixB::new(&bt).columns_contiguous();
            assert!(
                k == 1 || plan::tile::<f32>(Tier::Avx2, ad.rows, contiguous) == Tile::Avx2Narrow,
                "{m}x{n}x{k}: narrow tile expected"
            );
            assert_eq!(plan::route::<f32>(Tier::Avx2, false), Route::Packed);
            let c0 = values(n, m, 3);
            let run = |b: ArrayView2<'_, f32>| {
                let mut c = c0.clone();
                let par = Parallelism::CallingThread;
                gemm_with(
                    Tier::Avx2,
                    par,
                    0.75,
                    a.view(),
                    b,
                    -0.5,
                    c.view_mut().reversed_axes(),
                );
                c
            };
            let (wide, narrow) = (run(b_row.view()), run(b_col.t()));
            let same = wide
                .iter()
                .zip(&narrow)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{m}x{n}x{k}: the 8 × 8 and 6 × 16 tiles differ");
        }
    }
}
