//! The general path: im2col + [`gemm`], for every geometry (any channel count, stride and
//! padding). See the parent module for the math; this file builds the columns, multiplies, and
//! scatters column gradients back with col2im.

use super::fused::{epilogue_chunks, Epilogue, GradOut};
use super::{copy_row, pad_planes, start_from_bias, valid_range, Geometry, Kept};
use crate::matmul::gemm_with_kernel;
use crate::parallel::sum;
use crate::Scalar;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// im2col of one image `x` (`[c, h, w]`) into `cols` (`[c·kh·kw, oh·ow]`); every element written.
fn im2col<T: Scalar>(g: &Geometry, x: &[T], cols: &mut [T]) {
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let plane = g.h * g.w;
    let mut rows = cols.chunks_exact_mut(g.positions());
    for c in 0..g.c {
        let xc = &x[c * plane..][..plane];
        for u in 0..g.kh {
            let (i0, i1) = valid_range(g.oh, sh, u, ph, g.h);
            for v in 0..g.kw {
                let (j0, j1) = valid_range(g.ow, sw, v, pw, g.w);
                let row = rows.next().expect("cols has c·kh·kw rows");
                fill_zero(&mut row[..i0 * g.ow]);
                fill_zero(&mut row[i1 * g.ow..]);
                for i in i0..i1 {
                    let out = &mut row[i * g.ow..][..g.ow];
                    let xrow = &xc[(i * sh + u - ph) * g.w..][..g.w];
                    fill_zero(&mut out[..j0]);
                    fill_zero(&mut out[j1..]);
                    // (j0 == j1: every output column reads padding, and j0 + v may be < pw)
                    if sw == 1 && j0 < j1 {
                        let x0 = j0 + v - pw;
                        copy_row(&mut out[j0..j1], &xrow[x0..x0 + (j1 - j0)]);
                    } else {
                        for j in j0..j1 {
                            out[j] = xrow[j * sw + v - pw];
                        }
                    }
                }
            }
        }
    }
}

/// `x.fill(0)` that makes no call for the empty slices most rows have (a `fill` of unknown
/// length calls `memset`).
#[inline(always)]
fn fill_zero<T: Scalar>(x: &mut [T]) {
    if !x.is_empty() {
        x.fill(T::zero());
    }
}

/// [`im2col`] for a stride-1 convolution: with padding, copies the image once into `xpad`
/// (`padded_len` scalars, zero borders); without, reads the image in place. Either way every
/// output row of a column row is then one plain copy of `ow` scalars, with no border cases
/// (conv1 of LeNet: 25·28 copies of 28 instead of as many copies plus as many short zero
/// fills). Other strides go to [`im2col`].
fn im2col_padded<T: Scalar>(g: &Geometry, x: &[T], xpad: &mut [T], cols: &mut [T]) {
    if g.p.stride != (1, 1) {
        return im2col(g, x, cols);
    }
    let (ph, pw) = g.p.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let planes = if g.padded_len() == 0 {
        x
    } else {
        let xpad = &mut xpad[..g.padded_len()];
        pad_planes(g, x, xpad);
        xpad
    };
    let mut rows = cols.chunks_exact_mut(g.positions());
    for plane in planes.chunks_exact(hp * wp) {
        for u in 0..g.kh {
            for v in 0..g.kw {
                let row = rows.next().expect("cols has c·kh·kw rows");
                // (indices, not `chunks`: zipping chunk iterators divides to find their length)
                let window = &plane[u * wp + v..];
                for i in 0..g.oh {
                    copy_row(&mut row[i * g.ow..][..g.ow], &window[i * wp..][..g.ow]);
                }
            }
        }
    }
}

/// col2im, the adjoint of [`im2col`]: overwrites `dx` (`[c, h, w]`) with the sum, over every
/// column entry that im2col copied from an input position, of that entry of `dcols`.
fn col2im<T: Scalar>(g: &Geometry, dcols: &[T], dx: &mut [T]) {
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let plane = g.h * g.w;
    dx.fill(T::zero());
    let mut rows = dcols.chunks_exact(g.positions());
    for c in 0..g.c {
        let dxc = &mut dx[c * plane..][..plane];
        for u in 0..g.kh {
            let (i0, i1) = valid_range(g.oh, sh, u, ph, g.h);
            for v in 0..g.kw {
                let (j0, j1) = valid_range(g.ow, sw, v, pw, g.w);
                let row = rows.next().expect("dcols has c·kh·kw rows");
                for i in i0..i1 {
                    let src = &row[i * g.ow..][..g.ow];
                    let dst = &mut dxc[(i * sh + u - ph) * g.w..][..g.w];
                    // (j0 == j1: every output column reads padding, and j0 + v may be < pw)
                    if sw == 1 && j0 < j1 {
                        let x0 = j0 + v - pw;
                        for (d, &s) in dst[x0..x0 + (j1 - j0)].iter_mut().zip(&src[j0..j1]) {
                            *d = *d + s;
                        }
                    } else {
                        for j in j0..j1 {
                            let d = &mut dst[j * sw + v - pw];
                            *d = *d + src[j];
                        }
                    }
                }
            }
        }
    }
}

/// Scalars of per-chunk scratch the forward pass needs besides the columns: one zero-padded
/// image for [`im2col_padded`] (at least 1, so that every chunk has a slot).
pub(super) fn pad_len(g: &Geometry) -> usize {
    g.padded_len().max(1)
}

/// The forward pass over contiguous `x` (`[n, c, h, w]`), `w` (`[k, c·kh·kw]`) and `y`
/// (`[n, k, oh, ow]`). `cols` holds one slot per chunk; image `i` of a chunk writes its columns
/// at `i·img_stride` within the slot (0: one buffer reused; `c·kh·kw·oh·ow`: every image kept).
/// `pads` holds one scratch of [`pad_len`] scalars per chunk. With `epi`, each image's output
/// then goes through the fused ReLU and pool while in cache.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward<T: Scalar>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<ArrayView1<'_, T>>,
    y: &mut [T],
    (cols, img_stride): (&mut [T], usize),
    pads: &mut [T],
    epi: Option<Epilogue<'_, T>>,
) {
    let (ckk, pos) = (g.ckk(), g.positions());
    let w2 = ArrayView2::from_shape((g.k, ckk), w).expect("weight is [k, c·kh·kw]");
    let (in_img, out_img) = (g.c * g.h * g.w, g.k * pos);
    let slot_len = g.slot_len(ckk * pos, img_stride);
    y.par_chunks_mut(g.per_chunk * out_img)
        .zip(cols.par_chunks_mut(slot_len))
        .zip(pads.par_chunks_mut(pad_len(g)))
        .zip(epilogue_chunks(g, epi))
        .enumerate()
        .with_min_len(g.min_chunks_per_task())
        .for_each(|(chunk, (((y, slot), xpad), mut epi))| {
            for (i, y_n) in y.chunks_exact_mut(out_img).enumerate() {
                let n = chunk * g.per_chunk + i;
                let cols = &mut slot[i * img_stride..][..ckk * pos];
                im2col_padded(g, &x[n * in_img..][..in_img], xpad, cols);
                let cols = ArrayView2::from_shape((ckk, pos), &*cols).expect("cols");
                // y_n = W·cols (+ b): start from the bias and let gemm accumulate on top.
                let beta = start_from_bias(y_n, pos, bias);
                let mut y_n = ArrayViewMut2::from_shape((g.k, pos), y_n).expect("y_n");
                gemm_with_kernel(g.tier, T::one(), w2, cols, beta, y_n.view_mut());
                if let Some(epi) = epi.as_mut() {
                    epi.image(i, y_n.as_slice().expect("contiguous"));
                }
            }
        });
}

/// Scratch at the head of each chunk's backward slot: the columns and padded image (only when
/// rebuilt from the input), then the column gradient (only when the input gradient is wanted).
pub(super) fn backward_scratch<T>(
    g: &Geometry,
    kept: Kept<'_, T>,
    input_grad: bool,
) -> (usize, usize) {
    let (ckk, pos) = (g.ckk(), g.positions());
    let cols_len = match kept {
        Kept::Input(_) => ckk * pos + g.padded_len(),
        Kept::Columns(_) | Kept::Images(_) => 0,
    };
    (cols_len, if input_grad { ckk * pos } else { 0 })
}

/// One chunk of the backward pass: overwrites the chunk's partial weight and bias gradients
/// (`[k, c·kh·kw]` then `[k]`, after the scratch in `slot`) and, when `grad_input` is given,
/// its images' input gradients. `scratch` is [`backward_scratch`]'s (cols, dcols) lengths;
/// `gbuf` is where `go` builds an image's output gradient when it must
/// ([`GradOut::scratch_len`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_chunk<T: Scalar>(
    g: &Geometry,
    kept: Kept<'_, T>,
    w: &[T],
    (go, gbuf): (GradOut<'_, T>, &mut [T]),
    chunk: usize,
    slot: &mut [T],
    (cols_len, dcols_len): (usize, usize),
    mut gi: Option<&mut [T]>,
) {
    let (ckk, pos) = (g.ckk(), g.positions());
    let in_img = g.c * g.h * g.w;
    let w2 = ArrayView2::from_shape((g.k, ckk), w).expect("weight is [k, c·kh·kw]");
    let (cols_buf, rest) = slot.split_at_mut(cols_len);
    let (dcols, part) = rest.split_at_mut(dcols_len);
    let (dw, db) = part.split_at_mut(g.k * ckk);
    let mut dw = ArrayViewMut2::from_shape((g.k, ckk), dw).expect("dW part");
    db.fill(T::zero());
    let first = chunk * g.per_chunk;
    let last = (first + g.per_chunk).min(g.n);
    for n in first..last {
        let g_flat = go.image(g, n, gbuf);
        let g_n = ArrayView2::from_shape((g.k, pos), g_flat).expect("g_n");
        let cols: &[T] = match kept {
            Kept::Input(x) => {
                let (cols, xpad) = cols_buf.split_at_mut(ckk * pos);
                im2col_padded(g, &x[n * in_img..][..in_img], xpad, cols);
                cols
            }
            Kept::Columns(all) => &all[n * ckk * pos..][..ckk * pos],
            Kept::Images(_) => unreachable!("the im2col method never keeps padded images"),
        };
        let cols_v = ArrayView2::from_shape((ckk, pos), cols).expect("cols");
        // dW += g_n·cols_nᵀ (the chunk's first image overwrites stale scratch)
        let beta = if n == first { T::zero() } else { T::one() };
        gemm_with_kernel(g.tier, T::one(), g_n, cols_v.t(), beta, dw.view_mut());
        // db_k += Σ_p g_n[k, p]
        let g_rows = g_flat.chunks_exact(pos);
        for (b, row) in db.iter_mut().zip(g_rows) {
            *b = *b + sum(row);
        }
        if let Some(gi) = gi.as_deref_mut() {
            let mut dc = ArrayViewMut2::from_shape((ckk, pos), &mut *dcols).expect("dc");
            gemm_with_kernel(g.tier, T::one(), w2.t(), g_n, T::zero(), dc.view_mut());
            col2im(g, dcols, &mut gi[(n - first) * in_img..][..in_img]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::pseudo;
    use super::*;
    use crate::Conv2dParams;

    #[test]
    fn padded_im2col_equals_im2col() {
        for &(c, h, w, kh, kw, pd) in &[
            (1, 28, 28, 5, 5, (2, 2)),
            (2, 5, 4, 3, 2, (1, 2)),
            (3, 3, 6, 5, 1, (2, 0)),
            (2, 4, 4, 3, 3, (0, 0)),
        ] {
            let p = Conv2dParams {
                stride: (1, 1),
                padding: pd,
            };
            let g = Geometry::new("t", (1, c, h, w), (1, c, kh, kw), p);
            let x = pseudo((1, c, h, w), 3).into_raw_vec_and_offset().0;
            let mut want = vec![f64::NAN; g.ckk() * g.positions()];
            im2col(&g, &x, &mut want);
            let mut got = vec![f64::NAN; want.len()];
            let mut xpad = vec![f64::NAN; g.padded_len().max(1)];
            im2col_padded(&g, &x, &mut xpad, &mut got);
            assert_eq!(got, want, "{:?}", (c, h, w, kh, kw, pd));
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), d> == <x, col2im(d)> for every geometry: the identity behind dL/dx.
        for &(c, h, w, kh, kw, s, pd) in &[
            (2, 5, 4, 3, 2, (2, 1), (1, 2)),
            (1, 7, 7, 5, 5, (1, 1), (2, 2)),
            (3, 4, 6, 4, 1, (3, 4), (0, 3)),
        ] {
            let p = Conv2dParams {
                stride: s,
                padding: pd,
            };
            let g = Geometry::new("t", (1, c, h, w), (1, c, kh, kw), p);
            let x = pseudo((1, c, h, w), 3).into_raw_vec_and_offset().0;
            let d = pseudo((1, 1, g.ckk(), g.positions()), 4)
                .into_raw_vec_and_offset()
                .0;
            let mut cols = vec![f64::NAN; g.ckk() * g.positions()];
            im2col(&g, &x, &mut cols);
            let mut dx = vec![f64::NAN; x.len()];
            col2im(&g, &d, &mut dx);
            let lhs: f64 = cols.iter().zip(&d).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
        }
    }
}
