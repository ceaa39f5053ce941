//! The direct method's `f32` weight and bias gradients (conv1's) in vector registers, written
//! over [`F32s`]: the loops of `direct::weight_grad_rows` with the `GK × GV` accumulators (and
//! the `GK` bias accumulators) pinned in registers — 10 of AVX2's 16, plus `GK` gradient
//! vectors and one input vector. Each lane is summed in the same order, with the same fused
//! roundings, as the generic code, so the two give the same bits.
//!
//! It runs at 8 lanes on the AVX2 tier and above: at 16 lanes (one vector per 16 output columns,
//! the two halves added at the end) a LeNet-5 epoch on AVX-512 took 1.01× the time, so the
//! AVX-512 tier keeps the 8-lane instance (docs/performance.md).

#![cfg(target_arch = "x86_64")]

use super::direct::{add_lanes, row_stride, GK, GV, L};
use super::Geometry;
use crate::simd::F32s;
use crate::Tier;
use std::arch::x86_64::__m256;

/// Adds one image's weight and bias gradient lane sums to `lanes`, from `img` (the image's
/// zero-bordered rows) and `g_n` (`[k, oh, ow]`); see `direct::weight_grad_rows`.
///
/// # Panics
/// Without AVX2 + FMA, or if a buffer is shorter than the shapes need.
pub(super) fn weight_grad_rows(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    assert!(Tier::Avx2.is_supported(), "the kernel needs AVX2 and FMA");
    assert!(g.k > 0 && g.oh > 0 && g.ow > 0, "channels and outputs");
    assert!(g_n.len() >= g.k * g.positions(), "output gradient length");
    assert!(img.len() >= (g.oh + g.kh - 1) * row_stride(g), "image rows");
    assert!(lanes.len() >= (g.k * g.kh * g.kw + g.k) * L, "lane sums");
    // SAFETY: AVX2 + FMA are available, and the bounds were asserted above.
    unsafe { rows_8(g, img, g_n, lanes) }
}

/// # Safety
/// AVX2 + FMA; the bounds asserted by [`weight_grad_rows`].
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_8(g: &Geometry, img: &[f32], g_n: &[f32], lanes: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { rows_with::<__m256, GK>(g, img, g_n, lanes) }
}

/// For each block of `GK` channels and [`GV`] kernel columns `v0..v0+GV` of kernel row `u`:
/// `acc[b][t] += g[k0+b][i][j0..] · img[i+u][j0+v0+t..]` over every output row `i` and column
/// block `j0` of `LANES` (= [`L`]), then added to `lanes`.
///
/// # Safety
/// The CPU has `V`'s tier; the bounds asserted by [`weight_grad_rows`].
#[inline(always)]
unsafe fn rows_with<V: F32s, const GK: usize>(
    g: &Geometry,
    img: &[f32],
    g_n: &[f32],
    lanes: &mut [f32],
) {
    let (s, plane) = (row_stride(g), g.positions());
    for k0 in (0..g.k).step_by(GK) {
        // A short last block repeats channel k − 1; add_lanes drops its sums.
        let mut ch = [0; GK];
        for (b, c) in ch.iter_mut().enumerate() {
            *c = (k0 + b).min(g.k - 1);
        }
        for u in 0..g.kh {
            for v0 in (0..g.kw).step_by(GV) {
                // SAFETY: the CPU has V's tier.
                let mut acc = [[unsafe { V::zero() }; GV]; GK];
                let mut bias = [unsafe { V::zero() }; GK];
                let first = u == 0 && v0 == 0;
                for i in 0..g.oh {
                    let x = img[(i + u) * s + v0..].as_ptr();
                    let mut rows = [std::ptr::null::<f32>(); GK];
                    for (r, &c) in rows.iter_mut().zip(&ch) {
                        *r = g_n[c * plane + i * g.ow..][..g.ow].as_ptr();
                    }
                    // SAFETY: every `rows[b]` starts `ow` readable scalars, and `x` has
                    // `ow + GV − 1` (inside the row stride of the image's rows).
                    unsafe {
                        match first {
                            true => row::<V, GK, true>(&mut acc, &mut bias, rows, x, g.ow),
                            false => row::<V, GK, false>(&mut acc, &mut bias, rows, x, g.ow),
                        }
                    };
                }
                // SAFETY: the CPU has V's tier, of L lanes.
                let (out, sums) = unsafe { spill(&acc, &bias) };
                add_lanes(g, (k0, u, v0), &out, first.then_some(&sums), lanes);
            }
        }
    }
}

/// The accumulators as arrays of their [`L`] lanes.
///
/// # Safety
/// The CPU has `V`'s tier, and `V::LANES == L`.
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn spill<V: F32s, const GK: usize>(
    acc: &[[V; GV]; GK],
    bias: &[V; GK],
) -> ([[[f32; L]; GV]; GK], [[f32; L]; GK]) {
    let mut out = [[[0.0; L]; GV]; GK];
    let mut sums = [[0.0; L]; GK];
    // SAFETY (every store): L scalars of a [f32; L]; the CPU has V's tier (the contract).
    unsafe {
        for b in 0..GK {
            for t in 0..GV {
                acc[b][t].store(out[b][t].as_mut_ptr());
            }
            bias[b].store(sums[b].as_mut_ptr());
        }
    }
    (out, sums)
}

/// One output row: `acc[b][t] += g_b[j0..] · x[j0+t..]` for every column block `j0` of `LANES`
/// (the last one loads the gradient and the input under a mask, zeros past `ow`), and with
/// `BIAS`, `bias[b] += g_b[j0..]`.
///
/// # Safety
/// The CPU has `V`'s tier; every `g[b]` is readable for `ow` scalars, `x` for `ow + GV − 1`.
#[inline(always)]
unsafe fn row<V: F32s, const GK: usize, const BIAS: bool>(
    acc: &mut [[V; GV]; GK],
    bias: &mut [V; GK],
    g: [*const f32; GK],
    x: *const f32,
    ow: usize,
) {
    let n = V::LANES;
    let mut j0 = 0;
    // SAFETY (every load): full blocks end at or before ow; the last block reads `live` lanes.
    unsafe {
        while j0 < ow {
            let live = (ow - j0).min(n);
            let mask = V::first(live);
            let mut gv = [V::zero(); GK];
            for (v, &p) in gv.iter_mut().zip(&g) {
                *v = match live == n {
                    true => V::load(p.add(j0)),
                    false => V::load_masked(p.add(j0), mask),
                };
            }
            for t in 0..GV {
                let xv = match live == n {
                    true => V::load(x.add(j0 + t)),
                    false => V::load_masked(x.add(j0 + t), mask),
                };
                for (acc, &gv) in acc.iter_mut().zip(&gv) {
                    acc[t] = V::mul_add(gv, xv, acc[t]);
                }
            }
            if BIAS {
                for (b, &gv) in bias.iter_mut().zip(&gv) {
                    *b = V::add(*b, gv);
                }
            }
            j0 += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::{image_len, pad_image, weight_grad_rows_fma};
    use super::super::taps::same_bits;
    use super::super::tests::pseudo;
    use super::*;
    use crate::Conv2dParams;

    /// The kernel and the generic fused code add the same products in the same order: equal
    /// bits, for full and short channel blocks (k = 6, 7, 1), one and two kernel-column blocks
    /// (kw = 5, 7) and rows that end mid-vector (ow = 28, 11, 13), from nonzero starting sums
    /// (the kernels add to them).
    #[test]
    fn the_vector_kernel_equals_the_generic_fused_code_bit_for_bit() {
        if !Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        for (k, h, w, kh, kw, ph, pw) in [
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
            let start: Vec<f32> = (0..(k * kh * kw + k) * L)
                .map(|i| i as f32 * 0.01)
                .collect();
            let (mut ours, mut generic) = (start.clone(), start);
            weight_grad_rows(&g, &img, go, &mut ours);
            weight_grad_rows_fma(&g, &img, go, &mut generic);
            same_bits(
                &ours,
                &generic,
                &format!("k {k}, {h}×{w}, kernel {kh}×{kw}"),
            );
        }
    }
}
