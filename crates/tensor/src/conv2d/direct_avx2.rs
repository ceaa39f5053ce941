//! The direct method's `f32` weight and bias gradients in explicit AVX2 + FMA intrinsics: the
//! loops of `direct::weight_grad_rows`, with the `GK × GV` accumulators (and the `GK` bias
//! accumulators) pinned in registers — 12 of the 16, plus `GK` gradient vectors and one input
//! vector. Each lane is summed in the same order, with the same fused roundings, as the generic
//! code, so the two give the same bits.

#![cfg(target_arch = "x86_64")]

use super::direct::{add_lanes, grad_stride, row_stride, GK, GV, L};
use super::Geometry;
use std::arch::x86_64::*;

/// Adds one image's weight and bias gradient lane sums to `lanes`, from `img` (the image's
/// zero-bordered rows) and `g_n` (`[k, oh, ow]`); see `direct::weight_grad_rows`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn weight_grad_rows(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    let (s, plane, xlen) = (row_stride(g), g.positions(), grad_stride(g) + GV - 1);
    for k0 in (0..g.k).step_by(GK) {
        let ch: [usize; GK] = std::array::from_fn(|b| (k0 + b).min(g.k - 1));
        for u in 0..g.kh {
            for v0 in (0..g.kw).step_by(GV) {
                let mut acc = [[_mm256_setzero_ps(); GV]; GK];
                let mut bias = [_mm256_setzero_ps(); GK];
                let first = u == 0 && v0 == 0;
                for i in 0..g.oh {
                    let xrow = &img[(i + u) * s + v0..][..xlen];
                    let mut rows = [std::ptr::null::<f32>(); GK];
                    for (r, &c) in rows.iter_mut().zip(&ch) {
                        *r = g_n[c * plane + i * g.ow..][..g.ow].as_ptr();
                    }
                    // SAFETY: every `rows[b]` starts `ow` readable scalars and `xrow` has
                    // `ow` rounded up to L, plus GV − 1, of them.
                    unsafe {
                        match first {
                            true => row::<true>(&mut acc, &mut bias, rows, xrow.as_ptr(), g.ow),
                            false => row::<false>(&mut acc, &mut bias, rows, xrow.as_ptr(), g.ow),
                        }
                    }
                }
                let mut out = [[[0.0; L]; GV]; GK];
                let mut sums = [[0.0; L]; GK];
                for b in 0..GK {
                    for t in 0..GV {
                        store(&mut out[b][t], acc[b][t]);
                    }
                    store(&mut sums[b], bias[b]);
                }
                add_lanes(g, (k0, u, v0), &out, first.then_some(&sums), lanes);
            }
        }
    }
}

/// Writes the eight lanes of `v` to `out`.
#[target_feature(enable = "avx2")]
#[inline]
fn store(out: &mut [f32; L], v: __m256) {
    // SAFETY: `out` is 8 writable f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
}

/// One output row: `acc[b][t] += g_b[j0..j0+8] · x[j0+t..j0+t+8]` for every column block `j0`
/// (the last one loads the gradient under a mask, zeros past `ow`), and with `BIAS`,
/// `bias[b] += g_b[j0..j0+8]`.
///
/// # Safety
/// Every `g[b]` must be readable for `ow` scalars, `x` for `ow` rounded up to 8, plus `GV − 1`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row<const BIAS: bool>(
    acc: &mut [[__m256; GV]; GK],
    bias: &mut [__m256; GK],
    g: [*const f32; GK],
    x: *const f32,
    ow: usize,
) {
    let full = ow / L * L;
    let mut j0 = 0;
    while j0 < full {
        let mut gv = [_mm256_setzero_ps(); GK];
        for (v, &p) in gv.iter_mut().zip(&g) {
            // SAFETY: j0 + 8 ≤ ow.
            *v = unsafe { _mm256_loadu_ps(p.add(j0)) };
        }
        // SAFETY: j0 + t + 8 ≤ ow + GV − 1.
        unsafe { step::<BIAS>(acc, bias, gv, x.add(j0)) };
        j0 += L;
    }
    if full < ow {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((ow - full) as i32), lane);
        let mut gv = [_mm256_setzero_ps(); GK];
        for (v, &p) in gv.iter_mut().zip(&g) {
            // SAFETY: only the lanes below ow − full are read.
            *v = unsafe { _mm256_maskload_ps(p.add(full), mask) };
        }
        // SAFETY: full + t + 8 ≤ ow rounded up to 8, plus GV − 1.
        unsafe { step::<BIAS>(acc, bias, gv, x.add(full)) };
    }
}

/// One column block: `acc[b][t] += gv[b] · x[t..t+8]`, and with `BIAS`, `bias[b] += gv[b]`.
///
/// # Safety
/// `x` must be readable for `GV + 7` scalars.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn step<const BIAS: bool>(
    acc: &mut [[__m256; GV]; GK],
    bias: &mut [__m256; GK],
    gv: [__m256; GK],
    x: *const f32,
) {
    for t in 0..GV {
        // SAFETY: the caller's contract, t + 8 ≤ GV + 7.
        let xv = unsafe { _mm256_loadu_ps(x.add(t)) };
        for (acc, &gv) in acc.iter_mut().zip(&gv) {
            acc[t] = _mm256_fmadd_ps(gv, xv, acc[t]);
        }
    }
    if BIAS {
        for (b, &gv) in bias.iter_mut().zip(&gv) {
            *b = _mm256_add_ps(*b, gv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::{image_len, pad_image, weight_grad_rows_fma};
    use super::super::tests::pseudo;
    use super::*;
    use crate::Conv2dParams;

    /// The intrinsics and the generic fused code add the same products in the same order:
    /// equal bits, for full and short channel blocks (k = 6, 7), one and two kernel-column
    /// blocks (kw = 5, 7) and rows that end mid-vector (ow = 28, 11).
    #[test]
    fn intrinsics_equal_the_generic_fused_code_bit_for_bit() {
        if !crate::Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        for &(k, h, w, kh, kw, ph, pw) in &[
            (6, 28, 28, 5, 5, 2, 2),
            (7, 9, 11, 3, 7, 1, 3),
            (1, 4, 13, 6, 2, 3, 0),
        ] {
            let p = Conv2dParams {
                stride: (1, 1),
                padding: (ph, pw),
            };
            let g = Geometry::new("t", (1, 1, h, w), (k, 1, kh, kw), p);
            let x = pseudo((1, 1, h, w), 1).mapv(|v| v as f32);
            let go = pseudo((1, k, g.oh, g.ow), 2).mapv(|v| v as f32);
            let (x, go) = (x.as_slice().unwrap(), go.as_slice().unwrap());
            let mut img = vec![f32::NAN; image_len(&g)];
            pad_image(&g, x, &mut img);
            let lanes_len = (k * kh * kw + k) * L;
            // Start from nonzero sums: the kernels add to them.
            let start: Vec<f32> = (0..lanes_len).map(|i| i as f32 * 0.01).collect();
            let (mut ours, mut generic) = (start.clone(), start);
            // SAFETY: AVX2 and FMA were detected above.
            unsafe { weight_grad_rows(&g, &img, go, &mut ours) };
            weight_grad_rows_fma(&g, &img, go, &mut generic);
            assert_eq!(ours, generic, "k {k}, {h}×{w}, kernel {kh}×{kw}");
        }
    }
}
