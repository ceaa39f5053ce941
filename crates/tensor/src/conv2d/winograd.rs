//! The forward pass of a stride-1 5 × 5 convolution (LeNet-5's conv2) by Winograd's minimal
//! filtering algorithm F(2, 5) down the columns: two output rows from six input rows with 6
//! multiplications per kernel column where the direct sum takes 10, so 0.6× the multiply-adds
//! (docs/kernels.md, "Winograd F(2, 5)", derives the transforms). Written once over [`F32s`]
//! with the output channels in the lanes, like `lanes.rs`, and instantiated at two widths.
//!
//! For the output rows `2t, 2t + 1` of channel `k` (a *tile row* `t`), input channel `c`, kernel
//! column `v` and output column `j`, the six input rows `d_l = x[c][2t + l]` and the five kernel
//! rows `g_u = w[k][c][u][v]` are transformed, then multiplied point by point:
//!
//! ```text
//! V[α][c][col] = Σ_l Bᵀ[α][l] · x[c][2t + l][col]      (per tile row, every column)
//! U[α][c][v]   = Σ_u G[α][u] · w[k][c][u][v]          (once per pass, [`transform_weights`])
//! M[α][j]      = Σ_{c,v} U[α][c][v] · V[α][c][j + v]   (6 multiply-adds per output pair and tap)
//! y[k][2t][j]  = Σ_α Aᵀ[0][α] M[α][j] + b[k],   y[k][2t+1][j] = Σ_α Aᵀ[1][α] M[α][j] + b[k]
//! ```
//!
//! `M` is the lanes kernel's loop over the taps `(c, v)` of one transformed row `α`: a run of
//! `RUN` outputs × 16 channels in registers, one weight vector load and `RUN` broadcast inputs
//! per tap. Per pair of output rows: 6 × 5 taps per channel against the direct 2 × 25.
//!
//! The points are 0, ±1, ±2 and ∞ (the matrices of Lavin and Gray's F(4, 3), which has the same
//! six points). The weights are transformed in `f64` and rounded once. The results differ from
//! the direct chain's in the last bits: the tests bound the error by the rounding analysis in
//! the header of this file's tests.

#![cfg(target_arch = "x86_64")]

use super::lanes::{OutGrid, Width, KB};
use crate::simd::F32s;
use std::arch::x86_64::{__m256, __m512};

/// The kernel's height and width.
pub(super) const R: usize = 5;
/// Transformed rows per tile row (`2 + R − 1`).
pub(super) const A: usize = 6;
/// The most input channels the per-image scratch holds.
const MAX_C: usize = 8;
/// The widest padded input rows the per-image scratch holds (a multiple of 16).
const MAX_W: usize = 16;

/// `Aᵀ`, `G` and `Bᵀ` of F(2, 5) at the points 0, 1, −1, 2, −2, ∞ (`G` in `f64`: its sixths
/// and twenty-fourths are rounded once, with the product, in [`transform_weights`]).
pub(super) const G: [[f64; R]; A] = [
    [1.0 / 4.0, 0.0, 0.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
];
/// `G` rounded to `f32`, for the weight gradient's transform back ([`finish_weight_grad`]).
const G32: [[f32; R]; A] = {
    let mut g = [[0.0; R]; A];
    let mut i = 0;
    while i < A * R {
        g[i / R][i % R] = G[i / R][i % R] as f32;
        i += 1;
    }
    g
};
#[cfg(test)]
pub(super) const AT: [[f64; A]; 2] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 1.0],
];
#[cfg(test)]
pub(super) const BT: [[f64; A]; A] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// Whether the kernel runs a convolution of `c` input planes `wp` wide into `out`, with a
/// `kh × kw` kernel, at `width`: 5 × 5, an even number of output rows, rows of at least one
/// run, and the scratch big enough.
pub(super) fn fits(width: Width, c: usize, (kh, kw): (usize, usize), out: &OutGrid) -> bool {
    (kh, kw) == (R, R)
        && out.oh.is_multiple_of(2)
        && out.ow >= width.run()
        && out.wp == out.ow + R - 1
        && c <= MAX_C
        && out.wp <= MAX_W
}

/// Scalars of the transformed weights of `k` channels (a multiple of 16) and `c` inputs.
pub(super) fn weights_len(k: usize, c: usize) -> usize {
    k * A * c * R
}

/// Writes `U = G·w` of every kernel column, `[k/16, α, c, v, 16]`, from `w` (`[k, c, 5, 5]`),
/// each sum in `f64` rounded once to `f32`.
pub(super) fn transform_weights(w: &[f32], c: usize, u: &mut [f32]) {
    let k = w.len() / (c * R * R);
    assert_eq!(u.len(), weights_len(k, c), "transformed weights' length");
    for (kk, w_k) in w.chunks_exact(c * R * R).enumerate() {
        let (block, b) = (kk / KB * A * c * R * KB, kk % KB);
        for (ci, w_c) in w_k.chunks_exact(R * R).enumerate() {
            for v in 0..R {
                let col: [f64; R] = std::array::from_fn(|row| f64::from(w_c[row * R + v]));
                for (alpha, g) in G.iter().enumerate() {
                    let sum: f64 = g.iter().zip(&col).map(|(g, w)| g * w).sum();
                    u[block + ((alpha * c + ci) * R + v) * KB + b] = sum as f32;
                }
            }
        }
    }
}

/// One image's work: `c` input planes `plane` scalars apart in `src` (rows `out.wp` wide,
/// `out.oh + 4` of them), the transformed weights `u` ([`transform_weights`]) and the bias.
#[derive(Clone, Copy, Debug)]
pub(super) struct Winograd<'a> {
    pub(super) c: usize,
    pub(super) plane: usize,
    pub(super) out: OutGrid,
    pub(super) src: &'a [f32],
    pub(super) u: &'a [f32],
    pub(super) bias: Option<&'a [f32]>,
}

/// Writes the image's outputs `y[k][p]` (`[k, oh·ow]`, `k = u.len() / (6·c·5)`).
///
/// # Panics
/// Without the width's tier, if the shapes do not [`fit`](fits), or if a buffer is shorter
/// than they need.
pub(super) fn forward(width: Width, l: &Winograd<'_>, y: &mut [f32]) {
    assert!(
        width.tier().is_supported(),
        "{width:?} needs the CPU's support"
    );
    assert!(fits(width, l.c, (R, R), &l.out), "shapes the kernel runs");
    let k = l.u.len() / (A * l.c * R);
    assert_eq!(
        l.u.len(),
        weights_len(k, l.c),
        "whole blocks of 16 channels"
    );
    assert_eq!(y.len(), k * l.out.positions(), "output length");
    let rows = (l.out.oh + R - 1) * l.out.wp;
    assert!(l.plane >= rows, "planes hold their rows");
    assert!(
        l.src.len() >= (l.c - 1) * l.plane + rows,
        "planes inside the source"
    );
    assert!(l.bias.is_none_or(|b| b.len() == k), "one bias per channel");
    // SAFETY: the width's tier is available, and the bounds were asserted above.
    unsafe {
        match width {
            Width::Eight => forward_8(l, y, k),
            Width::Sixteen => forward_16(l, y, k),
        }
    }
}

/// # Safety
/// AVX2 + FMA; the bounds asserted by [`forward`].
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_8(l: &Winograd<'_>, y: &mut [f32], k: usize) {
    // SAFETY: the caller's contract.
    unsafe { forward_with::<__m256, 2, 6>(l, y, k) }
}

/// # Safety
/// AVX-512F; the bounds asserted by [`forward`].
#[target_feature(enable = "avx512f")]
unsafe fn forward_16(l: &Winograd<'_>, y: &mut [f32], k: usize) {
    // SAFETY: the caller's contract.
    unsafe { forward_with::<__m512, 1, 10>(l, y, k) }
}

/// The transformed rows `V[α][c][col]` of one tile row, `MAX_W` scalars per `(α, c)`.
type Rows = [f32; A * MAX_C * MAX_W];

/// The pass with `NV` vectors of `V` per 16 channels and runs of `RUN` outputs: per tile row,
/// the input rows transformed once ([`transform_rows`]), then per block of 16 channels and run
/// of outputs the six `M` rows ([`products`]) and the two output rows from them ([`outputs`]).
///
/// # Safety
/// The CPU has `V`'s tier; `NV·LANES = 16`; the bounds asserted by [`forward`].
#[inline(always)]
unsafe fn forward_with<V: F32s, const NV: usize, const RUN: usize>(
    l: &Winograd<'_>,
    y: &mut [f32],
    k: usize,
) {
    let (out, positions) = (l.out, l.out.positions());
    let mut rows: Rows = [0.0; A * MAX_C * MAX_W];
    for t in 0..out.oh / 2 {
        // SAFETY: the caller's contract (the planes' rows 2t..2t+6 exist, fits).
        unsafe { transform_rows::<V>((l.src, l.c, l.plane, out.wp), t, &mut rows) };
        for k0 in (0..k).step_by(KB) {
            let u = &l.u[k0 * A * l.c * R..][..KB * A * l.c * R];
            let bias = l.bias.map(|b| &b[k0..][..KB]);
            let y_k = &mut y[k0 * positions..][..KB * positions];
            for r in 0..out.ow.div_ceil(RUN) {
                let j0 = (r * RUN).min(out.ow - RUN);
                // SAFETY: the caller's contract; the run's taps read columns j0 + j + v ≤ wp − 1.
                unsafe {
                    let m = products::<V, NV, RUN>(l.c, &rows[j0..], u);
                    outputs::<V, NV, RUN>(&m, bias, y_k, (t, j0, out));
                }
            }
        }
    }
}

/// `V[α][c][col] = Σ_l Bᵀ[α][l] · x[c][2t + l][col]` for every plane and column, `LANES`
/// columns at a time (the last under a mask; the lanes past `wp` are zeros, never read), from
/// `planes` planes `plane` scalars apart in `src`, rows `wp` wide.
///
/// # Safety
/// The CPU has `V`'s tier; the bounds asserted by [`forward`] or [`weight_grad`].
#[inline(always)]
unsafe fn transform_rows<V: F32s>(
    (src, planes, plane, wp): (&[f32], usize, usize, usize),
    t: usize,
    rows: &mut [f32],
) {
    for c in 0..planes {
        let x = &src[c * plane + 2 * t * wp..][..A * wp];
        for col0 in (0..wp).step_by(V::LANES) {
            let out = &mut rows[c * MAX_W + col0..][..(A - 1) * planes * MAX_W + V::LANES];
            // SAFETY: lanes col0 .. col0 + live ≤ wp of each of the six rows; the stores'
            // LANES scalars at col0 < wp ≤ MAX_W stay in each (α, c) row.
            unsafe {
                let live = (wp - col0).min(V::LANES);
                transform_block::<V>(
                    (x[col0..].as_ptr(), wp, live),
                    (out.as_mut_ptr(), planes * MAX_W),
                );
            }
        }
    }
}

/// `Bᵀ·d` of the six rows `d_l = x + l·stride` at `LANES` columns (the first `live` read, the
/// rest zeros), row `α` stored at `out + α·out_stride`.
///
/// # Safety
/// The CPU has `V`'s tier; each row `d_l` is readable for `live` scalars, and `out + α·out_stride`
/// writable for `LANES` for every `α < 6`.
#[inline(always)]
pub(super) unsafe fn transform_block<V: F32s>(
    (x, stride, live): (*const f32, usize, usize),
    (out, out_stride): (*mut f32, usize),
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mask = V::first(live);
        let mut d = [V::zero(); A];
        for (l, d) in d.iter_mut().enumerate() {
            *d = V::load_masked(x.add(l * stride), mask);
        }
        for (alpha, v) in input_transform(d).into_iter().enumerate() {
            v.store(out.add(alpha * out_stride));
        }
    }
}

/// `Bᵀ·d` with shared partial sums: 13 operations for 6 rows, each at most 2 roundings deep.
///
/// # Safety
/// The CPU has `V`'s tier.
#[inline(always)]
unsafe fn input_transform<V: F32s>(d: [V; A]) -> [V; A] {
    // SAFETY: the caller's contract.
    unsafe {
        let a = V::mul_add(V::splat(-4.0), d[2], d[4]); // d4 − 4·d2
        let b = V::mul_add(V::splat(-4.0), d[1], d[3]); // d3 − 4·d1
        let c = minus(d[4], d[2]); // d4 − d2
        let e = V::mul(V::splat(2.0), minus(d[3], d[1])); // 2·(d3 − d1), exact doubling
        [
            V::mul_add(V::splat(4.0), d[0], V::mul_add(V::splat(-5.0), d[2], d[4])),
            V::add(a, b),
            minus(a, b),
            V::add(c, e),
            minus(c, e),
            V::mul_add(V::splat(4.0), d[1], V::mul_add(V::splat(-5.0), d[3], d[5])),
        ]
    }
}

/// `a − b`, rounded once (a fused multiply-add by −1: no closure holds an intrinsic in these
/// kernels, as a closure is compiled without the caller's target features).
///
/// # Safety
/// The CPU has `V`'s tier.
#[inline(always)]
pub(super) unsafe fn minus<V: F32s>(a: V, b: V) -> V {
    // SAFETY: the caller's contract.
    unsafe { V::mul_add(b, V::splat(-1.0), a) }
}

/// `M[α][j] = Σ_{c,v} U[α][c][v] · V[α][c][j + v]` for the run's `RUN` outputs (`rows` starts
/// at its first column), one row `α` at a time ([`product_row`]).
///
/// # Safety
/// The CPU has `V`'s tier; `rows` holds the tile row's transformed rows from the run's first
/// column, `u` the block's `6·c·5·16` weights.
#[inline(always)]
unsafe fn products<V: F32s, const NV: usize, const RUN: usize>(
    c: usize,
    rows: &[f32],
    u: &[f32],
) -> [[[V; NV]; RUN]; A] {
    // Written row by row, not zeroed first (a 3.8 KB fill per run at 16 lanes).
    let mut m = std::mem::MaybeUninit::<[[[V; NV]; RUN]; A]>::uninit();
    let first = m.as_mut_ptr().cast::<[[V; NV]; RUN]>();
    for alpha in 0..A {
        // SAFETY: the caller's contract, for row α; `first + α` is row α of `m`.
        unsafe {
            let x = rows[alpha * c * MAX_W..].as_ptr();
            let row = product_row::<V, NV, RUN>(c, x, u[alpha * c * R * KB..].as_ptr());
            first.add(alpha).write(row);
        }
    }
    // SAFETY: all A rows were written above.
    unsafe { m.assume_init() }
}

/// One row `α` of [`products`]: each output a chain over the taps `(c, v)` in order from 0,
/// the `RUN × NV` sums in registers (returned by value).
///
/// # Safety
/// The CPU has `V`'s tier; `x` is readable at `c·MAX_W` scalars per plane's row up to column
/// `RUN + 3`, `w` for the row's `c·5·16` weights.
#[inline(always)]
unsafe fn product_row<V: F32s, const NV: usize, const RUN: usize>(
    c: usize,
    x: *const f32,
    w: *const f32,
) -> [[V; NV]; RUN] {
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = [[V::zero(); NV]; RUN];
        for ci in 0..c {
            let x = x.add(ci * MAX_W);
            for v in 0..R {
                let w = w.add((ci * R + v) * KB);
                let mut wv = [V::zero(); NV];
                for (h, wv) in wv.iter_mut().enumerate() {
                    *wv = V::load(w.add(h * V::LANES));
                }
                for (j, acc) in acc.iter_mut().enumerate() {
                    let xv = V::splat(*x.add(j + v));
                    for (acc, &wv) in acc.iter_mut().zip(&wv) {
                        *acc = V::mul_add(wv, xv, *acc);
                    }
                }
            }
        }
        acc
    }
}

/// `Aᵀ·M` (+ bias) of the run: output rows `2t` and `2t + 1` at columns `j0..j0 + RUN`,
/// stored as 16 channel rows (`F32s::store_columns`).
///
/// # Safety
/// The CPU has `V`'s tier; `y_k` holds the block's `16·oh·ow` outputs.
#[inline(always)]
unsafe fn outputs<V: F32s, const NV: usize, const RUN: usize>(
    m: &[[[V; NV]; RUN]; A],
    bias: Option<&[f32]>,
    y_k: &mut [f32],
    (t, j0, out): (usize, usize, OutGrid),
) {
    let positions = out.positions();
    // SAFETY: the caller's contract; channel h·LANES + b of outputs (2t + i)·ow + j0 + j is
    // inside the block's 16·positions.
    unsafe {
        for h in 0..NV {
            let bias = bias.map(|b| V::load(b[h * V::LANES..].as_ptr()));
            let (mut y0, mut y1) = ([V::zero(); RUN], [V::zero(); RUN]);
            for j in 0..RUN {
                let m = |alpha: usize| m[alpha][j][h];
                // Aᵀ[0] = (1, 1, 1, 1, 1, 0), Aᵀ[1] = (0, 1, −1, 2, −2, 1)
                let s = V::add(V::add(V::add(m(0), m(1)), V::add(m(2), m(3))), m(4));
                let d = V::mul_add(V::splat(2.0), minus(m(3), m(4)), minus(m(1), m(2)));
                let d = V::add(d, m(5));
                (y0[j], y1[j]) = match bias {
                    Some(b) => (V::add(s, b), V::add(d, b)),
                    None => (s, d),
                };
            }
            let y = y_k
                .as_mut_ptr()
                .add(h * V::LANES * positions + 2 * t * out.ow + j0);
            V::store_columns(&y0, y, positions);
            V::store_columns(&y1, y.add(out.ow), positions);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Weight gradient: the same identity transposed. With `g_s` the gradient rows 2t + s (s < 2)
// of a tile row and `x_l` its six input rows, dW[u] = Σ_s g_s · x_{s+u}, and the identity
// behind F(2, 5), Σ_α Aᵀ[s][α]·G[α][u]·Bᵀ[α][l] = [l = s + u], gives
//
//   dW[k][c][u][v] = Σ_α G[α][u] · M[α][c][v][k],
//   M[α][c][v][k]  = Σ_{t,j} (A·g)[α][t][j][k] · V[α][c][t][j + v],
//   A·g = (g0, g0 + g1, g0 − g1, g0 + 2·g1, g0 − 2·g1, g1)      (A = Aᵀ transposed),
//
// the sums over tiles (and a chunk's images) taken in the transformed domain, and `Gᵀ` applied
// once per chunk ([`finish_weight_grad`]): 6 multiply-adds per tile, channel pair (k, c) and
// kernel column where the direct sum takes 10.

/// Whether the weight gradient runs `g`'s shapes: those of [`fits`] with at most `2·MAX_T`
/// output rows.
pub(super) fn fits_weight_grad(width: Width, c: usize, k: (usize, usize), out: &OutGrid) -> bool {
    fits(width, c, k, out) && out.oh <= 2 * MAX_T
}

/// The most tile rows (pairs of output rows) the weight gradient runs.
const MAX_T: usize = 8;

/// Scalars of the weight gradient's work buffer for `out`: every tile row's transformed input
/// rows, then `A·g` of every tile for one block of 16 channels.
pub(super) fn weight_grad_work_len(out: &OutGrid) -> usize {
    let tiles = out.oh / 2;
    tiles * A * MAX_C * MAX_W + A * tiles * out.ow * KB
}

/// One image's weight-gradient work: the padded planes as [`Winograd`]'s, and the output
/// gradient outputs-major, `gt` (`[oh·ow, k]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct WinogradGrad<'a> {
    pub(super) c: usize,
    pub(super) plane: usize,
    pub(super) out: OutGrid,
    pub(super) src: &'a [f32],
    pub(super) gt: &'a [f32],
}

/// Adds the image's `M[α][c][v][k]` to `m` (with `add` false, overwrites it), laid out as the
/// transformed weights (`[k/16, α, c, v, 16]`, [`weights_len`]); `work` is scratch
/// ([`weight_grad_work_len`]).
///
/// # Panics
/// Without the width's tier, if the shapes do not [`fit`](fits_weight_grad), or if a buffer
/// is shorter than they need.
pub(super) fn weight_grad(
    width: Width,
    l: &WinogradGrad<'_>,
    (m, work): (&mut [f32], &mut [f32]),
    add: bool,
) {
    assert!(
        width.tier().is_supported(),
        "{width:?} needs the CPU's support"
    );
    assert!(
        fits_weight_grad(width, l.c, (R, R), &l.out),
        "shapes the kernel runs"
    );
    let k = m.len() / (A * l.c * R);
    assert_eq!(m.len(), weights_len(k, l.c), "whole blocks of 16 channels");
    assert_eq!(l.gt.len(), k * l.out.positions(), "output gradient length");
    assert!(work.len() >= weight_grad_work_len(&l.out), "work buffer");
    let rows = (l.out.oh + R - 1) * l.out.wp;
    assert!(l.plane >= rows, "planes hold their rows");
    assert!(
        l.src.len() >= (l.c - 1) * l.plane + rows,
        "planes inside the source"
    );
    // SAFETY: the width's tier is available, and the bounds were asserted above.
    unsafe {
        match width {
            Width::Eight => weight_grad_8(l, (m, work), add),
            Width::Sixteen => weight_grad_16(l, (m, work), add),
        }
    }
}

/// # Safety
/// AVX2 + FMA; the bounds asserted by [`weight_grad`].
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_grad_8(l: &WinogradGrad<'_>, mw: (&mut [f32], &mut [f32]), add: bool) {
    // SAFETY: the caller's contract.
    unsafe { weight_grad_with::<__m256, 2>(l, mw, add) }
}

/// # Safety
/// AVX-512F; the bounds asserted by [`weight_grad`].
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_16(l: &WinogradGrad<'_>, mw: (&mut [f32], &mut [f32]), add: bool) {
    // SAFETY: the caller's contract.
    unsafe { weight_grad_with::<__m512, 1>(l, mw, add) }
}

/// The weight gradient with `NV` vectors of `V` per 16 channels: every tile row's input rows
/// transformed once, then per block of 16 channels `A·g` of every tile ([`transform_grad`])
/// and, per row `α` and input channel, the five sums over the tiles in registers
/// ([`tile_sums`]), added to `m`.
///
/// # Safety
/// The CPU has `V`'s tier; `NV·LANES = 16`; the bounds asserted by [`weight_grad`].
#[inline(always)]
unsafe fn weight_grad_with<V: F32s, const NV: usize>(
    l: &WinogradGrad<'_>,
    (m, work): (&mut [f32], &mut [f32]),
    add: bool,
) {
    let (c, out) = (l.c, l.out);
    let tiles = out.oh / 2;
    let k = m.len() / (A * c * R);
    let (rows, ag) = work.split_at_mut(tiles * A * MAX_C * MAX_W);
    for (t, rows) in rows.chunks_exact_mut(A * MAX_C * MAX_W).enumerate() {
        // SAFETY: the caller's contract (the planes' rows 2t..2t+6 exist, fits).
        unsafe { transform_rows::<V>((l.src, c, l.plane, out.wp), t, rows) };
    }
    let per_alpha = tiles * out.ow * KB;
    for k0 in (0..k).step_by(KB) {
        // SAFETY: gt holds oh·ow rows of k channels; ag A·tiles·ow rows of 16.
        unsafe { transform_grad::<V, NV>(l.gt, (k, k0), out, &mut ag[..A * per_alpha]) };
        let m_k = &mut m[k0 * A * c * R..][..A * c * R * KB];
        for alpha in 0..A {
            let ag = &ag[alpha * per_alpha..][..per_alpha];
            // Input channels in pairs (each A·g load serves 10 sums), then one if c is odd.
            // SAFETY (both): rows (α, ci..ci + CB) of each tile row's transformed rows, read
            // at columns j + v ≤ wp − 1 < MAX_W; ag holds the tiles' A·g of row α; m_k the
            // block's sums.
            for ci in (0..c - c % 2).step_by(2) {
                let sums =
                    unsafe { tile_sums::<V, NV, 2>(rows, (alpha * c + ci) * MAX_W, ag, out) };
                unsafe { add_sums::<V, NV, 2>(&sums, &mut m_k[(alpha * c + ci) * R * KB..], add) };
            }
            if c % 2 == 1 {
                let ci = c - 1;
                let sums =
                    unsafe { tile_sums::<V, NV, 1>(rows, (alpha * c + ci) * MAX_W, ag, out) };
                unsafe { add_sums::<V, NV, 1>(&sums, &mut m_k[(alpha * c + ci) * R * KB..], add) };
            }
        }
    }
}

/// `ag[α][t·ow + j] = (A·g)[α]` of every tile `(t, j)`, from the gradient rows `2t` and
/// `2t + 1` at column `j`, channels `k0..k0 + 16` of `gt`'s rows of `k`; at most one rounding.
///
/// # Safety
/// The CPU has `V`'s tier; `gt` holds `oh·ow` rows of `k`; `ag` is `A·(oh/2)·ow` rows of 16.
#[inline(always)]
unsafe fn transform_grad<V: F32s, const NV: usize>(
    gt: &[f32],
    (k, k0): (usize, usize),
    out: OutGrid,
    ag: &mut [f32],
) {
    let per_alpha = out.oh / 2 * out.ow * KB;
    for t in 0..out.oh / 2 {
        for j in 0..out.ow {
            let g0 = gt[((2 * t) * out.ow + j) * k + k0..][..KB].as_ptr();
            let g1 = gt[((2 * t + 1) * out.ow + j) * k + k0..][..KB].as_ptr();
            let at = (t * out.ow + j) * KB;
            for h in 0..NV {
                // SAFETY (every load and store): LANES of the 16 channels; V's tier.
                unsafe {
                    let (g0, g1) = (V::load(g0.add(h * V::LANES)), V::load(g1.add(h * V::LANES)));
                    let rows = [
                        g0,
                        V::add(g0, g1),
                        minus(g0, g1),
                        V::mul_add(V::splat(2.0), g1, g0),
                        V::mul_add(V::splat(-2.0), g1, g0),
                        g1,
                    ];
                    for (alpha, r) in rows.into_iter().enumerate() {
                        let p =
                            ag[alpha * per_alpha + at + h * V::LANES..][..V::LANES].as_mut_ptr();
                        r.store(p);
                    }
                }
            }
        }
    }
}

/// `Σ_{t,j} ag[t·ow + j] · rows_t[x + b·MAX_W + j + v]` for the `CB` input channels `b` and
/// the five kernel columns `v`: each a chain over the tiles in order (`t`, then `j`) from 0,
/// in registers (returned by value).
///
/// # Safety
/// The CPU has `V`'s tier; `rows` holds the tile rows' transformed rows (`A·MAX_C·MAX_W`
/// each), readable at `x + (CB − 1)·MAX_W + ow + 3`; `ag` the tiles' `(oh/2)·ow` rows of 16.
#[inline(always)]
unsafe fn tile_sums<V: F32s, const NV: usize, const CB: usize>(
    rows: &[f32],
    x: usize,
    ag: &[f32],
    out: OutGrid,
) -> [[[V; NV]; R]; CB] {
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = [[[V::zero(); NV]; R]; CB];
        for t in 0..out.oh / 2 {
            let xr =
                rows[t * A * MAX_C * MAX_W + x..][..(CB - 1) * MAX_W + out.ow + R - 1].as_ptr();
            let ag = ag[t * out.ow * KB..][..out.ow * KB].as_ptr();
            for j in 0..out.ow {
                let mut gv = [V::zero(); NV];
                for (h, gv) in gv.iter_mut().enumerate() {
                    *gv = V::load(ag.add(j * KB + h * V::LANES));
                }
                for (b, acc) in acc.iter_mut().enumerate() {
                    for (v, acc) in acc.iter_mut().enumerate() {
                        let xv = V::splat(*xr.add(b * MAX_W + j + v));
                        for (acc, &gv) in acc.iter_mut().zip(&gv) {
                            *acc = V::mul_add(gv, xv, *acc);
                        }
                    }
                }
            }
        }
        acc
    }
}

/// Adds (with `add` false, writes) the `CB` channels' sums to their rows `(b, v)` of 16 in `m`.
///
/// # Safety
/// The CPU has `V`'s tier; `m` holds `CB·5·16` scalars.
#[inline(always)]
unsafe fn add_sums<V: F32s, const NV: usize, const CB: usize>(
    sums: &[[[V; NV]; R]; CB],
    m: &mut [f32],
    add: bool,
) {
    let m = &mut m[..CB * R * KB];
    for (b, sums) in sums.iter().enumerate() {
        for (v, sum) in sums.iter().enumerate() {
            for (h, &s) in sum.iter().enumerate() {
                let p = m[(b * R + v) * KB + h * V::LANES..][..V::LANES].as_mut_ptr();
                // SAFETY: LANES scalars of the (b, v) row of 16; V's tier.
                unsafe {
                    let s = if add { V::add(V::load(p), s) } else { s };
                    s.store(p);
                }
            }
        }
    }
}

/// The chunk's weight gradient from its transformed sums `m` ([`weight_grad`]), tap-major
/// into `dwt` (`[c·5·5, k]`, as the lanes kernel leaves it): `dW[k][c][u][v] = Σ_α G[α][u] ·
/// M[α][c][v][k]`, a chain over `α` from 0 with `G` rounded to `f32`.
///
/// # Panics
/// Without the width's tier, or if the lengths disagree.
pub(super) fn finish_weight_grad(width: Width, m: &[f32], c: usize, dwt: &mut [f32]) {
    assert!(
        width.tier().is_supported(),
        "{width:?} needs the CPU's support"
    );
    let k = dwt.len() / (c * R * R);
    assert_eq!(dwt.len(), k * c * R * R, "whole taps");
    assert_eq!(m.len(), weights_len(k, c), "transformed sums' length");
    // SAFETY: the width's tier is available, and the lengths were asserted above.
    unsafe {
        match width {
            Width::Eight => finish_8(m, c, dwt),
            Width::Sixteen => finish_16(m, c, dwt),
        }
    }
}

/// # Safety
/// AVX2 + FMA; the bounds asserted by [`finish_weight_grad`].
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_8(m: &[f32], c: usize, dwt: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { finish_with::<__m256>(m, c, dwt) }
}

/// # Safety
/// AVX-512F; the bounds asserted by [`finish_weight_grad`].
#[target_feature(enable = "avx512f")]
unsafe fn finish_16(m: &[f32], c: usize, dwt: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { finish_with::<__m512>(m, c, dwt) }
}

/// [`finish_weight_grad`] `LANES` channels at a time.
///
/// # Safety
/// The CPU has `V`'s tier; the bounds asserted by [`finish_weight_grad`].
#[inline(always)]
unsafe fn finish_with<V: F32s>(m: &[f32], c: usize, dwt: &mut [f32]) {
    let k = dwt.len() / (c * R * R);
    for (k0, m) in (0..k).step_by(KB).zip(m.chunks_exact(A * c * R * KB)) {
        for ci in 0..c {
            for u in 0..R {
                for v in 0..R {
                    let out = dwt[((ci * R + u) * R + v) * k + k0..][..KB].as_mut_ptr();
                    let m = m[(ci * R + v) * KB..].as_ptr();
                    for h in (0..KB).step_by(V::LANES) {
                        // SAFETY (every load and store): LANES of the row (α, ci, v) of 16, for
                        // α < 6 (rows c·5·16 apart); V's tier.
                        unsafe {
                            let mut sum = V::zero();
                            for (alpha, g) in G32.iter().enumerate() {
                                let row = m.add(alpha * c * R * KB + h);
                                sum = V::mul_add(V::splat(g[u]), V::load(row), sum);
                            }
                            sum.store(out.add(h));
                        }
                    }
                }
            }
        }
    }
}

/// Asserts that every output in `y` (`[k, oh, ow]`) is within the rounding bound of
/// this file's tests' header, from the planes `x` (`[c, oh + 4, ow + 4]`), `w` (`[k, c, 5, 5]`) and
/// the bias.
#[cfg(test)]
pub(super) fn check_within_bound(
    (c, k, oh, ow): (usize, usize, usize, usize),
    (x, w, bias): (&[f32], &[f32], Option<&[f32]>),
    y: &[f32],
    at: &str,
) {
    let want = tests::reference((c, k, oh, ow), x, w, bias);
    assert_eq!(y.len(), want.len(), "{at}: outputs");
    tests::assert_within(y, &want, tests::gamma(7 + 5 * c), at);
}

#[cfg(test)]
mod tests {
    //! **The rounding bound.** Every computed quantity is a sum of products of the inputs, the
    //! weights and the transforms' coefficients; in floating point each path from an input to
    //! the output passes through at most `m` roundings, so (Higham, *Accuracy and Stability of
    //! Numerical Algorithms*, §3.1) the error is at most `γ_m · S` with `γ_m = m·u / (1 − m·u)`,
    //! `u = 2⁻²⁴`, and `S` the sum of the absolute values of every term of the expansion
    //! `Σ_{α,c,v,u,l} |Aᵀ[i][α]|·|G[α][u]·w[c][u][v]|·|Bᵀ[α][l]·x[c][2t+l][j+v]|`, before the
    //! cancellations the algorithm relies on. Along a path: `V`, 2 roundings (two fused
    //! multiply-adds, or a difference then a sum, the doubling exact); `U`, 1 (rounded once
    //! from `f64`, whose own error, ~2⁻⁵³, is far below); `M`, at most `6·5 = 30` (a chain of
    //! fused multiply-adds over the taps, the first term rounded at every link) for LeNet-5's
    //! 6 input channels, `5c` in general; `Aᵀ·M`, 3 (`((m0 + m1) + (m2 + m3)) + m4`, or a
    //! difference, a fused multiply-add and a sum); the bias, 1. So `m = 7 + 5c` (37 for
    //! conv2). `S` is larger than the direct sum's `Σ|w·x|` by the transforms' coefficients
    //! (up to 5 in `Bᵀ`, 2 in `Aᵀ`), which is Winograd's known loss of accuracy; a missing
    //! or misplaced term is off by a whole `|w·x|` and fails (the bound is ~10⁻⁵ of `S`).
    use super::*;
    use crate::conv2d::taps::same_bits;

    /// `γ_m · S` and the `f64` output of one image, `[k][oh][ow]`, with its `S` per output.
    pub(super) fn reference(
        (c, k, oh, ow): (usize, usize, usize, usize),
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
    ) -> Vec<(f64, f64)> {
        let wp = ow + R - 1;
        let plane = (oh + R - 1) * wp;
        let mut out = Vec::new();
        for kk in 0..k {
            for i in 0..oh {
                let (t, row) = (i / 2, i % 2);
                for j in 0..ow {
                    let (mut exact, mut s) = (bias.map_or(0.0, |b| b[kk] as f64), 0.0);
                    s += exact.abs();
                    for ci in 0..c {
                        for u in 0..R {
                            for v in 0..R {
                                let wv = w[((kk * c + ci) * R + u) * R + v] as f64;
                                exact += wv * x[ci * plane + (i + u) * wp + j + v] as f64;
                            }
                        }
                        for alpha in 0..A {
                            for v in 0..R {
                                let gw: f64 = (0..R)
                                    .map(|u| {
                                        (G[alpha][u] * w[((kk * c + ci) * R + u) * R + v] as f64)
                                            .abs()
                                    })
                                    .sum();
                                let bx: f64 = (0..A)
                                    .map(|l| {
                                        (BT[alpha][l]
                                            * x[ci * plane + (2 * t + l) * wp + j + v] as f64)
                                            .abs()
                                    })
                                    .sum();
                                s += AT[row][alpha].abs() * gw * bx;
                            }
                        }
                    }
                    out.push((exact, s));
                }
            }
        }
        out
    }

    /// The kernel's outputs at `width` for the planes `src` (`[c, oh + 4, ow + 4]`, then
    /// anything), weights `w` (`[k, c, 5, 5]`) and bias, cut from the front of a NaN-filled
    /// buffer `tail` scalars longer.
    fn run(
        width: Width,
        (c, k, oh, ow): (usize, usize, usize, usize),
        (src, w, bias): (&[f32], &[f32], Option<&[f32]>),
        tail: usize,
    ) -> Vec<f32> {
        let mut u = vec![f32::NAN; weights_len(k, c)];
        transform_weights(w, c, &mut u);
        let (wp, outputs) = (ow + R - 1, k * oh * ow);
        let out = OutGrid { oh, ow, wp };
        let plane = (oh + R - 1) * wp;
        let l = Winograd {
            c,
            plane,
            out,
            src,
            u: &u,
            bias,
        };
        let mut buf = vec![f32::NAN; outputs + tail];
        forward(width, &l, &mut buf[..outputs]);
        buf
    }

    /// The entries `(index, value, exact, allowed error)` of `got` farther than `bound · S`
    /// from their `(exact, S)` in `want`, or NaN.
    fn beyond<'a>(
        got: &'a [f32],
        want: &'a [(f64, f64)],
        bound: f64,
    ) -> impl Iterator<Item = (usize, f32, f64, f64)> + 'a {
        let entries = got.iter().zip(want).enumerate();
        entries
            .map(move |(p, (&got, &(exact, s)))| (p, got, exact, bound * s))
            .filter(|&(_, got, exact, allowed)| {
                let err = (got as f64 - exact).abs();
                err.is_nan() || err > allowed
            })
    }

    /// Asserts that every entry of `got` is within `bound · S` of its `(exact, S)` in `want`.
    pub(super) fn assert_within(got: &[f32], want: &[(f64, f64)], bound: f64, at: &str) {
        if let Some((p, got, exact, allowed)) = beyond(got, want, bound).next() {
            panic!("{at}: entry {p} is {got}, {exact} ± {allowed}");
        }
    }

    /// Whether this CPU runs `width`'s tier; if not, says the test skips it.
    fn runs(width: Width) -> bool {
        let ok = width.tier().is_supported();
        if !ok {
            eprintln!("skipped {width:?}: this CPU lacks its tier");
        }
        ok
    }

    pub(super) fn gamma(m: usize) -> f64 {
        let u = f64::from(f32::EPSILON) / 2.0;
        m as f64 * u / (1.0 - m as f64 * u)
    }

    fn val(i: usize, m: usize) -> f32 {
        ((i * 7919 + m * 104_729) % 2003) as f32 / 1001.0 - 1.0
    }

    /// Every output within `γ_{7+5c} · S` of the `f64` sum, at every width the CPU runs, for
    /// LeNet-5's conv2 and shapes with one and two runs per row (the last moved back at 16
    /// lanes), two blocks of 16 channels, one input channel and the most the scratch holds;
    /// the planes are followed by NaN (never read) and the outputs cut from a NaN-filled buffer
    /// stay untouched past their end.
    #[test]
    fn every_output_is_within_the_rounding_bound_at_every_width() {
        for width in [Width::Eight, Width::Sixteen]
            .into_iter()
            .filter(|&w| runs(w))
        {
            for (c, k, oh, ow) in [
                (6, 16, 10, 10),
                (3, 32, 4, 12),
                (1, 16, 2, 10),
                (8, 16, 6, 12),
            ] {
                let fit = fits(width, c, (R, R), &OutGrid { oh, ow, wp: ow + 4 });
                assert!(
                    fit,
                    "{width:?}: c {c} k {k} {oh}×{ow} is a shape the kernel runs"
                );
                let wp = ow + R - 1;
                let plane = (oh + R - 1) * wp;
                let mut src: Vec<f32> = (0..c * plane).map(|i| val(i, 1)).collect();
                src.extend([f32::NAN; 40]);
                let w: Vec<f32> = (0..k * c * R * R).map(|i| val(i, 2) * 0.5).collect();
                let b: Vec<f32> = (0..k).map(|i| val(i, 3)).collect();
                for bias in [Some(&b[..]), None] {
                    let buf = run(width, (c, k, oh, ow), (&src, &w, bias), 7);
                    let at = format!("{width:?} c {c} k {k} {oh}×{ow} bias {}", bias.is_some());
                    let y = &buf[..k * oh * ow];
                    check_within_bound((c, k, oh, ow), (&src, &w, bias), y, &at);
                    same_bits(&buf[k * oh * ow..], &[f32::NAN; 7], "past the outputs");
                }
            }
        }
    }

    /// The bound catches a missing term: the outputs with one kernel tap's weight zeroed
    /// break it against the reference of the full kernel.
    #[test]
    fn the_bound_catches_a_missing_tap() {
        let width = Width::Eight;
        if !runs(width) {
            return;
        }
        let (c, k, oh, ow) = (6, 16, 10, 10);
        let wp = ow + R - 1;
        let plane = (oh + R - 1) * wp;
        let src: Vec<f32> = (0..c * plane).map(|i| val(i, 1)).collect();
        let w: Vec<f32> = (0..k * c * R * R).map(|i| val(i, 2) * 0.5 + 0.6).collect();
        let mut changed = w.clone();
        changed[3 * R * R * c + 7] = 0.0;
        let y = run(width, (c, k, oh, ow), (&src, &changed, None), 0);
        let want = reference((c, k, oh, ow), &src, &w, None);
        let bound = gamma(7 + 5 * c);
        let outside = beyond(&y, &want, bound).next();
        assert!(outside.is_some(), "a missing term stays inside the bound");
    }

    /// The weight gradient of `n` images (`x`: `[n][c, oh + 4, ow + 4]`, `go`: `[n][k, oh,
    /// ow]`) at `width`: each image's `M` added to the last ([`weight_grad`]), then transformed
    /// back and transposed to `[k, c, 5, 5]`; every buffer starts NaN (stale scratch), the
    /// sums and the taps are cut from NaN-filled buffers that must stay NaN past their end.
    fn run_weight_grad(
        width: Width,
        (c, k, oh, ow): (usize, usize, usize, usize),
        (x, go): (&[Vec<f32>], &[Vec<f32>]),
    ) -> Vec<f32> {
        let (wp, positions) = (ow + R - 1, oh * ow);
        let out = OutGrid { oh, ow, wp };
        let plane = (oh + R - 1) * wp;
        let mut m = vec![f32::NAN; weights_len(k, c) + 9];
        let mut work = vec![f32::NAN; weight_grad_work_len(&out)];
        for (n, (x, go)) in x.iter().zip(go).enumerate() {
            let mut gt = vec![0.0; k * positions];
            for (kk, plane) in go.chunks_exact(positions).enumerate() {
                for (p, &v) in plane.iter().enumerate() {
                    gt[p * k + kk] = v;
                }
            }
            let l = WinogradGrad {
                c,
                plane,
                out,
                src: x,
                gt: &gt,
            };
            let m = &mut m[..weights_len(k, c)];
            weight_grad(width, &l, (m, &mut work), n > 0);
        }
        same_bits(&m[weights_len(k, c)..], &[f32::NAN; 9], "past the sums");
        let taps = c * R * R;
        let mut dwt = vec![f32::NAN; taps * k + 5];
        finish_weight_grad(width, &m[..weights_len(k, c)], c, &mut dwt[..taps * k]);
        same_bits(&dwt[taps * k..], &[f32::NAN; 5], "past the taps");
        (0..k * taps)
            .map(|i| dwt[(i % taps) * k + i / taps])
            .collect()
    }

    /// `dW[k][c][u][v] = Σ_{n,i,j} go[n][k][i][j] · x[n][c][i + u][j + v]` in `f64`, and `S`,
    /// the sum of the absolute values of the terms of the algorithm's expansion (the header's
    /// bound, with `A·g` for `Aᵀ` and `Gᵀ` last).
    fn weight_grad_reference(
        (c, k, oh, ow): (usize, usize, usize, usize),
        (x, go): (&[Vec<f32>], &[Vec<f32>]),
    ) -> Vec<(f64, f64)> {
        let wp = ow + R - 1;
        let plane = (oh + R - 1) * wp;
        let mut out = Vec::new();
        for kk in 0..k {
            for ci in 0..c {
                for u in 0..R {
                    for v in 0..R {
                        let (mut exact, mut s) = (0.0, 0.0);
                        for (x, go) in x.iter().zip(go) {
                            let xv = |row: usize, col: usize| x[ci * plane + row * wp + col] as f64;
                            let gv = |i: usize, j: usize| go[(kk * oh + i) * ow + j] as f64;
                            for i in 0..oh {
                                for j in 0..ow {
                                    exact += gv(i, j) * xv(i + u, j + v);
                                }
                            }
                            for t in 0..oh / 2 {
                                for j in 0..ow {
                                    for alpha in 0..A {
                                        let ag =
                                            (0..2).map(|r| (AT[r][alpha] * gv(2 * t + r, j)).abs());
                                        let bx = (0..A)
                                            .map(|l| (BT[alpha][l] * xv(2 * t + l, j + v)).abs());
                                        s += G[alpha][u].abs() * ag.sum::<f64>() * bx.sum::<f64>();
                                    }
                                }
                            }
                        }
                        out.push((exact, s));
                    }
                }
            }
        }
        out
    }

    /// The roundings along a path of [`run_weight_grad`] over `n` images of `tiles·ow` tiles:
    /// `V` 2, `A·g` 1, the chain over one image's tiles `tiles·ow` and its addition to the
    /// sums 1 (per image), `G` rounded to `f32` 1, the chain over `α` 6.
    fn weight_grad_roundings(n: usize, tiles_ow: usize) -> usize {
        2 + 1 + n * (tiles_ow + 1) + 1 + 6
    }

    fn planes_and_grads(
        (c, k, oh, ow): (usize, usize, usize, usize),
        n: usize,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let plane = (oh + R - 1) * (ow + R - 1);
        let x = (0..n)
            .map(|i| {
                let mut x: Vec<f32> = (0..c * plane).map(|p| val(p, 10 + i)).collect();
                x.extend([f32::NAN; 40]);
                x
            })
            .collect();
        let go = (0..n)
            .map(|i| (0..k * oh * ow).map(|p| val(p, 20 + i) * 0.5).collect())
            .collect();
        (x, go)
    }

    /// Every weight's gradient over two images within `γ_m · S` of the `f64` sum (`m` from
    /// [`weight_grad_roundings`]), at every width the CPU runs, for LeNet-5's conv2 and the
    /// forward test's other shapes; the planes are followed by NaN (never read).
    #[test]
    fn the_weight_gradient_is_within_its_rounding_bound_at_every_width() {
        for width in [Width::Eight, Width::Sixteen]
            .into_iter()
            .filter(|&w| runs(w))
        {
            for (c, k, oh, ow) in [
                (6, 16, 10, 10),
                (3, 32, 4, 12),
                (1, 16, 2, 10),
                (8, 16, 16, 12),
            ] {
                let out = OutGrid { oh, ow, wp: ow + 4 };
                assert!(
                    fits_weight_grad(width, c, (R, R), &out),
                    "c {c} {oh}×{ow} fits"
                );
                let (x, go) = planes_and_grads((c, k, oh, ow), 2);
                let dw = run_weight_grad(width, (c, k, oh, ow), (&x, &go));
                let want = weight_grad_reference((c, k, oh, ow), (&x, &go));
                let bound = gamma(weight_grad_roundings(2, oh / 2 * ow));
                assert_within(
                    &dw,
                    &want,
                    bound,
                    &format!("{width:?} c {c} k {k} {oh}×{ow}: dW"),
                );
            }
        }
    }

    /// The weight gradient's bound catches a missing term: one gradient value zeroed in the
    /// kernel's input breaks it against the reference of the full gradient.
    #[test]
    fn the_weight_gradient_bound_catches_a_missing_term() {
        let width = Width::Eight;
        if !runs(width) {
            return;
        }
        let shape = (6, 16, 10, 10);
        let (x, go) = planes_and_grads(shape, 1);
        let mut changed = go.clone();
        changed[0][3 * 100 + 47] = 0.0;
        let dw = run_weight_grad(width, shape, (&x, &changed));
        let want = weight_grad_reference(shape, (&x, &go));
        let bound = gamma(weight_grad_roundings(1, 50));
        let outside = beyond(&dw, &want, bound).next();
        assert!(outside.is_some(), "a missing term stays inside the bound");
    }
}
