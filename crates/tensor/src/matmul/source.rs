//! Where the packed route gets B's panels from: [`PackB`], implemented by a plain matrix
//! ([`MatrixB`]) and, inside the crate, by anything else that can write B's `KC × NR` panels
//! directly — e.g. the shifted convolution's `wideᵀ`, packed straight from image lines so that
//! the column matrix is never built.

use super::layout::MatRef;
use super::pack::pack_b;
use crate::Scalar;
use ndarray::ArrayView2;
use std::any::TypeId;
use std::marker::PhantomData;

/// A source of the `k × n` matrix B, written block by block into the micro-kernel's layout.
///
/// The driver asks for the block of rows `pc..pc + kc` and columns `jc..jc + nc` and hands a
/// buffer of `nc.div_ceil(nr) · nr · kc` elements: the implementor writes it as `nr`-column
/// panels, element `(p, j)` of the block at `dst[(j / nr) · kc · nr + p · nr + j % nr]`, and
/// writes zeros in the columns of the last panel past `nc`. `nr` is the running kernel's `NR`.
///
/// The trait is safe: `dst` is an ordinary slice and a wrong implementation gives wrong numbers,
/// never undefined behaviour. The buffer holds leftovers of earlier calls, so every element must
/// be written.
pub(crate) trait PackB<T> {
    /// `(k, n)`: the shape of B.
    fn dim(&self) -> (usize, usize);

    /// Writes the `kc × nc` block at `(pc, jc)` into `dst` as `nr`-column panels (see above).
    /// Called with `pc + kc <= k`, `jc + nc <= n`, `kc, nc >= 1`.
    fn pack(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]);

    /// Whether B's columns are contiguous lines in memory (B is the transpose of row-major
    /// data, as in `A·Bᵀ`): packing then interleaves lines, and the AVX2 path may pick its
    /// 8 × 8 tile, which interleaves 8 lines per panel instead of 16.
    fn columns_contiguous(&self) -> bool {
        false
    }
}

/// A matrix view as a [`PackB`]: the ordinary packing, for any strides.
#[derive(Debug)]
pub(crate) struct MatrixB<'a, T> {
    m: MatRef<T>,
    _borrow: PhantomData<ArrayView2<'a, T>>,
}

impl<'a, T> MatrixB<'a, T> {
    /// Describes `b`; borrows it for as long as the source lives.
    pub(crate) fn new(b: &ArrayView2<'a, T>) -> Self {
        MatrixB {
            m: MatRef::from_view(b),
            _borrow: PhantomData,
        }
    }

    /// A source reading the matrix `m` describes.
    ///
    /// # Safety
    /// `m` describes memory that stays readable, and unwritten, for `'a`.
    pub(super) unsafe fn from_mat(m: MatRef<T>) -> Self {
        MatrixB {
            m,
            _borrow: PhantomData,
        }
    }

    /// The raw descriptor, for the driver's in-place reads of B.
    pub(super) fn as_mat(&self) -> MatRef<T> {
        self.m
    }
}

impl<T: Scalar> PackB<T> for MatrixB<'_, T> {
    fn dim(&self) -> (usize, usize) {
        (self.m.rows, self.m.cols)
    }

    fn columns_contiguous(&self) -> bool {
        self.m.rs == 1 && self.m.cs != 1
    }

    fn pack(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
        assert!(pc + kc <= self.m.rows && jc + nc <= self.m.cols);
        // SAFETY: the block is inside the matrix (asserted), which the view borrowed for 'a
        // keeps readable; `pack_b` checks the length of `dst`.
        unsafe { pack_b(self.m.block(pc, jc, kc, nc), nr, dst) }
    }
}

/// A `PackB<T>` seen as a `PackB<f32>`, once `T == f32` has been checked: lets the f32 kernels
/// run on a source written for a generic `T`.
pub(super) struct AsF32<'s, T>(&'s dyn PackB<T>);

impl<'s, T: 'static> AsF32<'s, T> {
    /// # Panics
    /// If `T` is not `f32`.
    pub(super) fn new(src: &'s dyn PackB<T>) -> Self {
        assert!(TypeId::of::<T>() == TypeId::of::<f32>());
        AsF32(src)
    }
}

impl<T> PackB<f32> for AsF32<'_, T> {
    fn dim(&self) -> (usize, usize) {
        self.0.dim()
    }

    fn pack(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        // SAFETY: T is f32 (checked in `new`): the same slice, retyped to itself.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<T>(), dst.len()) };
        self.0.pack(pc, kc, jc, nc, nr, dst);
    }

    fn columns_contiguous(&self) -> bool {
        self.0.columns_contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::{gemm_packed_b, gemm_with, tile_shape, Parallelism};
    use crate::Tier;
    use ndarray::Array2;
    use std::cell::Cell;

    /// B given by a formula, packed straight into panels (as an implicit-GEMM convolution packs
    /// image windows); records the panel width the driver asked for.
    struct Formula {
        k: usize,
        n: usize,
        seen_nr: Cell<usize>,
    }

    impl Formula {
        fn at<T: Scalar>(p: usize, j: usize) -> T {
            T::from((p * 7 + j * 3) % 11).unwrap() / T::from(4.0).unwrap() - T::one()
        }
    }

    impl<T: Scalar> PackB<T> for Formula {
        fn dim(&self) -> (usize, usize) {
            (self.k, self.n)
        }

        fn pack(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
            self.seen_nr.set(nr);
            for (jp, panel) in dst[..nc.div_ceil(nr) * nr * kc]
                .chunks_exact_mut(nr * kc)
                .enumerate()
            {
                for (p, step) in panel.chunks_exact_mut(nr).enumerate() {
                    for (l, x) in step.iter_mut().enumerate() {
                        let j = jp * nr + l;
                        *x = if j < nc {
                            Formula::at(pc + p, jc + j)
                        } else {
                            T::zero()
                        };
                    }
                }
            }
        }
    }

    /// A supplied packing gives the same bits as the same B materialised and passed to `gemm`,
    /// on every kernel, for f32 and f64, with shapes that cross KC and NC blocks and leave edge
    /// tiles; and the driver asks for panels `tile_shape().1` wide.
    fn supplied_packing_matches_matrix<T: Scalar>() {
        for &(m, n, k) in &[(6, 2100, 25), (37, 45, 300), (150, 100, 16)] {
            let a = Array2::from_shape_fn((m, k), |(i, p)| Formula::at::<T>(i + 1, p));
            let b = Array2::from_shape_fn((k, n), |(p, j)| Formula::at::<T>(p, j));
            let c0 = Array2::from_shape_fn((m, n), |(i, j)| Formula::at::<T>(j, i));
            let (alpha, beta) = (T::from(0.5).unwrap(), T::from(-2.0).unwrap());
            for kernel in Tier::available() {
                let mut want = c0.clone();
                let par = Parallelism::CallingThread;
                gemm_with(
                    kernel,
                    par,
                    alpha,
                    a.view(),
                    b.view(),
                    beta,
                    want.view_mut(),
                );
                let src = Formula {
                    k,
                    n,
                    seen_nr: Cell::new(0),
                };
                let mut got = c0.clone();
                gemm_packed_b(kernel, alpha, a.view(), &src, beta, got.view_mut());
                let what = format!("{} {m}x{n}x{k}", kernel.name());
                assert!(
                    got == want,
                    "{what}: supplied packing differs from the matrix"
                );
                assert_eq!(src.seen_nr.get(), tile_shape::<T>(kernel).1, "{what}");
            }
        }
    }

    #[test]
    fn supplied_packing_matches_matrix_f32() {
        supplied_packing_matches_matrix::<f32>();
    }

    #[test]
    fn supplied_packing_matches_matrix_f64() {
        supplied_packing_matches_matrix::<f64>();
    }
}
