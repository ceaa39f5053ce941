//! Small helpers shared by the kernels: when to go parallel, contiguous views of caller buffers,
//! and element-wise maps that split large contiguous arrays over rayon's threads.
//!
//! Every parallel split here is a pure function of the shapes (never of the thread count or of
//! scheduling), and no helper reduces across chunks, so results are bit-identical whether a
//! kernel runs serially or in parallel.

use crate::fast_math::map_f32;
use crate::shape::{check_shape, Expected};
use crate::Scalar;
use ndarray::{Array, ArrayView, ArrayViewMut, Dimension};
use rayon::prelude::*;

/// Below this many scalar operations a kernel runs on the calling thread: handing work to rayon
/// costs a few microseconds, more than a small pool or a tiny element-wise map takes.
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;

/// Element-wise maps are cut into pieces of this many elements (a few L1-sized blocks each).
const ELEM_CHUNK: usize = 1 << 13;

/// Calls `f` with `out` as one contiguous row-major slice. Caller buffers are almost always in
/// standard layout; any other layout goes through a temporary that is then copied back.
pub(crate) fn with_standard_slice_mut<T: Scalar, D: Dimension>(
    mut out: ArrayViewMut<'_, T, D>,
    f: impl FnOnce(&mut [T]),
) {
    if out.is_standard_layout() {
        f(out
            .as_slice_mut()
            .expect("a standard-layout view is one slice"));
    } else {
        let mut tmp = Array::<T, D>::zeros(out.raw_dim());
        f(tmp
            .as_slice_mut()
            .expect("a fresh array is in standard layout"));
        out.assign(&tmp);
    }
}

/// `out[i] = f(input[i])` for arrays of equal shape.
#[track_caller]
pub(crate) fn map_into<T: Scalar, D: Dimension>(
    op: &str,
    input: ArrayView<'_, T, D>,
    mut out: ArrayViewMut<'_, T, D>,
    f: impl Fn(T) -> T + Sync + Send,
) {
    check_shape(
        op,
        "out",
        Expected::ShapeOf("input", input.shape()),
        out.shape(),
    );
    if let (Some(x), Some(y)) = (input.as_slice(), out.as_slice_mut()) {
        if x.len() >= PAR_MIN_WORK {
            y.par_chunks_mut(ELEM_CHUNK)
                .zip(x.par_chunks(ELEM_CHUNK))
                .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x)));
        } else {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x));
        }
        return;
    }
    ndarray::Zip::from(&mut out)
        .and(&input)
        .for_each(|y, &x| *y = f(x));
}

/// Like [`map_into`], but contiguous `f32` arrays go through `fast` (a vectorisable `f32`
/// version of `f`) instead.
#[track_caller]
pub(crate) fn map_into_f32<T: Scalar, D: Dimension>(
    op: &str,
    input: ArrayView<'_, T, D>,
    mut out: ArrayViewMut<'_, T, D>,
    f: impl Fn(T) -> T + Sync + Send,
    fast: impl Fn(f32) -> f32 + Sync + Send + Copy,
) {
    check_shape(
        op,
        "out",
        Expected::ShapeOf("input", input.shape()),
        out.shape(),
    );
    let x = input.as_slice().and_then(T::as_f32_slice);
    if let (Some(x), Some(y)) = (x, out.as_slice_mut().and_then(T::as_f32_slice_mut)) {
        let kernel = |y: &mut [f32], x: &[f32]| map_f32(y, x, fast);
        if x.len() >= PAR_MIN_WORK {
            y.par_chunks_mut(ELEM_CHUNK)
                .zip(x.par_chunks(ELEM_CHUNK))
                .for_each(|(y, x)| kernel(y, x));
        } else {
            kernel(y, x);
        }
        return;
    }
    map_into(op, input, out, f);
}

/// `out[i] = f(y[i], g[i])` for three arrays of equal shape (a backward pass from the forward
/// output `y` and the upstream gradient `g`).
#[track_caller]
pub(crate) fn zip_map_into<T: Scalar, D: Dimension>(
    op: &str,
    y: ArrayView<'_, T, D>,
    g: ArrayView<'_, T, D>,
    mut out: ArrayViewMut<'_, T, D>,
    f: impl Fn(T, T) -> T + Sync + Send,
) {
    check_shape(
        op,
        "grad_out",
        Expected::ShapeOf("output", y.shape()),
        g.shape(),
    );
    check_shape(
        op,
        "grad_input",
        Expected::ShapeOf("output", y.shape()),
        out.shape(),
    );
    if let (Some(ys), Some(gs), Some(os)) = (y.as_slice(), g.as_slice(), out.as_slice_mut()) {
        let kernel = |o: &mut [T], y: &[T], g: &[T]| {
            for i in 0..o.len() {
                o[i] = f(y[i], g[i]);
            }
        };
        if os.len() >= PAR_MIN_WORK {
            os.par_chunks_mut(ELEM_CHUNK)
                .zip(ys.par_chunks(ELEM_CHUNK))
                .zip(gs.par_chunks(ELEM_CHUNK))
                .for_each(|((o, y), g)| kernel(o, y, g));
        } else {
            kernel(os, ys, gs);
        }
        return;
    }
    ndarray::Zip::from(&mut out)
        .and(&y)
        .and(&g)
        .for_each(|o, &y, &g| *o = f(y, g));
}

/// `g[i] = f(y[i], g[i])` in place (a backward pass that overwrites the upstream gradient).
#[track_caller]
pub(crate) fn zip_map_inplace<T: Scalar, D: Dimension>(
    op: &str,
    y: ArrayView<'_, T, D>,
    mut g: ArrayViewMut<'_, T, D>,
    f: impl Fn(T, T) -> T + Sync + Send,
) {
    check_shape(
        op,
        "grad",
        Expected::ShapeOf("output", y.shape()),
        g.shape(),
    );
    if let (Some(ys), Some(gs)) = (y.as_slice(), g.as_slice_mut()) {
        let kernel = |g: &mut [T], y: &[T]| {
            for i in 0..g.len() {
                g[i] = f(y[i], g[i]);
            }
        };
        if gs.len() >= PAR_MIN_WORK {
            gs.par_chunks_mut(ELEM_CHUNK)
                .zip(ys.par_chunks(ELEM_CHUNK))
                .for_each(|(g, y)| kernel(g, y));
        } else {
            kernel(gs, ys);
        }
        return;
    }
    ndarray::Zip::from(&mut g)
        .and(&y)
        .for_each(|g, &y| *g = f(y, *g));
}

/// `Σ a`, with 8 independent partial sums (so the adds pipeline and vectorise) combined in a
/// fixed order: the result depends on the values only, never on the thread or the caller.
pub(crate) fn sum<T: Scalar>(a: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] = acc[l] + c[l];
        }
    }
    let s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    rest.iter().fold(s, |s, &v| s + v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sum_adds_every_element() {
        for len in [0_usize, 1, 7, 8, 9, 100, 1001] {
            let a: Vec<f64> = (0..len).map(|i| i as f64).collect();
            assert_eq!(
                super::sum(&a),
                (len * len.saturating_sub(1) / 2) as f64,
                "len {len}"
            );
        }
    }
}
