//! Matrix multiplication: `C = alpha·A·B + beta·C`.
//!
//! Transposed forms come from ndarray views: `gemm(1.0, a.t(), b, 0.0, c)` computes Aᵀ·B, and
//! `gemm(1.0, a, b.t(), 1.0, c)` accumulates A·Bᵀ into C. Any strides are accepted.
//!
//! SKELETON: a plain triple loop that the matmul issue replaces with a packed, cache-blocked,
//! register-tiled kernel. The signatures are final.

use crate::Scalar;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// General matrix multiply: `c = alpha * a·b + beta * c`.
///
/// With `beta == 0` the old contents of `c` are ignored (even NaN), as in BLAS.
///
/// # Panics
/// If the shapes do not agree: `a` is `[m, k]`, `b` is `[k, n]` and `c` is `[m, n]`.
pub fn gemm<T: Scalar>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "gemm: a is [{m}, {k}] but b is [{k2}, {n}]");
    assert_eq!(
        c.dim(),
        (m, n),
        "gemm: c must be [{m}, {n}], got {:?}",
        c.dim()
    );
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::zero();
            for p in 0..k {
                acc = acc + a[[i, p]] * b[[p, j]];
            }
            let old = if beta == T::zero() {
                T::zero()
            } else {
                beta * c[[i, j]]
            };
            c[[i, j]] = alpha * acc + old;
        }
    }
}

/// Returns `a·b` as a new array.
///
/// # Panics
/// If `a` is `[m, k]` and `b` is not `[k, n]`.
pub fn matmul<T: Scalar>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<T> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    matmul_into(a, b, c.view_mut());
    c
}

/// Writes `a·b` into `c`, overwriting it.
///
/// # Panics
/// If the shapes do not agree (see [`gemm`]).
pub fn matmul_into<T: Scalar>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, c: ArrayViewMut2<'_, T>) {
    gemm(T::one(), a, b, T::zero(), c);
}
