//! The shifted method's input-gradient rows for `f32`, written once for any vector width
//! ([`F32s`]) and run at the lanes kernels' [`Width`]: a block of rows of
//!
//! ```text
//! dwide[t][q] = Σ_o W[o][t] · g_wide[o][q]        (W: [k, c·kh·kw], g_wide: [k, L])
//! ```
//!
//! for up to [`rows_per_block`] taps `t0 + j` and runs of two vectors of wide columns `q`: at
//! 8 lanes 6 taps (12 accumulators of the 16 registers), at 16 lanes 10 taps (20 of 32); per
//! output channel `o`, two loads of `g_wide`'s row and one broadcast weight per tap, read from
//! `W` in place. The depth `k` is small (16 in LeNet-5's conv2), which is where a `gemm` spends
//! its time packing and writing tiles out; here nothing is packed and each accumulator is
//! stored once. Each value is `gemm`'s chain (from 0 over `o` ascending, one fused
//! multiply-add per step), so with the same bits at either width.

#![cfg(target_arch = "x86_64")]

use super::lanes::Width;
use crate::simd::F32s;
use std::arch::x86_64::{__m256, __m512};

/// The most rows a block holds at any width.
pub(super) const MAX_ROWS: usize = 10;

/// Rows computed together at `width`.
pub(super) fn rows_per_block(width: Width) -> usize {
    match width {
        Width::Eight => 6,
        Width::Sixteen => MAX_ROWS,
    }
}

/// The product's operands: `w` (`[k, taps]`) and `g_wide` (`[k, cols]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Operands<'a> {
    pub(super) w: &'a [f32],
    pub(super) taps: usize,
    pub(super) g_wide: &'a [f32],
    pub(super) cols: usize,
}

/// Writes rows `t0 .. t0 + n` of `dwide` (`n ≤ rows_per_block(width)`) into `out` (`[n, cols]`).
///
/// # Panics
/// Without the width's tier, or if the operands' lengths do not agree or the rows are out of
/// range.
pub(super) fn rows(width: Width, op: &Operands<'_>, t0: usize, n: usize, out: &mut [f32]) {
    assert!(
        width.tier().is_supported(),
        "{width:?} lanes need the CPU's support"
    );
    let k = op.w.len() / op.taps.max(1);
    assert!(
        op.taps > 0 && op.cols > 0 && k > 0,
        "taps, columns and channels"
    );
    assert_eq!(op.w.len(), k * op.taps, "W is [k, taps]");
    assert_eq!(op.g_wide.len(), k * op.cols, "g_wide is [k, cols]");
    let most = rows_per_block(width);
    assert!(
        0 < n && n <= most && t0 + n <= op.taps,
        "rows {t0}+{n} of {}",
        op.taps
    );
    assert_eq!(out.len(), n * op.cols, "out is [n, cols]");
    let w = op.w[t0..].as_ptr();
    let (g, o) = (op.g_wide.as_ptr(), out.as_mut_ptr());
    let shape = (k, op.taps, op.cols);
    // SAFETY: the width's tier is available; the lengths asserted above bound every access.
    unsafe {
        match width {
            Width::Eight => rows_8(n, (w, g, o), shape),
            Width::Sixteen => rows_16(n, (w, g, o), shape),
        }
    }
}

/// # Safety
/// AVX2 + FMA; as [`block`], with `n ≤ 6`.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_8(n: usize, ptrs: (*const f32, *const f32, *mut f32), shape: (usize, usize, usize)) {
    // SAFETY: the caller's contract.
    unsafe { block_n::<__m256>(n, ptrs, shape) }
}

/// # Safety
/// AVX-512F; as [`block`].
#[target_feature(enable = "avx512f")]
unsafe fn rows_16(
    n: usize,
    ptrs: (*const f32, *const f32, *mut f32),
    shape: (usize, usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe { block_n::<__m512>(n, ptrs, shape) }
}

/// [`block`] with its row count `n ≤ 10` as a constant.
///
/// # Safety
/// As [`block`].
#[inline(always)]
unsafe fn block_n<V: F32s>(
    n: usize,
    (w, g, o): (*const f32, *const f32, *mut f32),
    shape: (usize, usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe {
        match n {
            1 => block::<V, 1>(w, g, o, shape),
            2 => block::<V, 2>(w, g, o, shape),
            3 => block::<V, 3>(w, g, o, shape),
            4 => block::<V, 4>(w, g, o, shape),
            5 => block::<V, 5>(w, g, o, shape),
            6 => block::<V, 6>(w, g, o, shape),
            7 => block::<V, 7>(w, g, o, shape),
            8 => block::<V, 8>(w, g, o, shape),
            9 => block::<V, 9>(w, g, o, shape),
            _ => block::<V, MAX_ROWS>(w, g, o, shape),
        }
    }
}

/// The block's rows, in runs of two vectors of columns, then one, then one under a mask.
///
/// # Safety
/// The CPU has `V`'s tier; `w[o·taps + j]` is readable for `o < k`, `j < N`, `g[o·cols ..]`
/// for `cols` scalars, `out` writable for `N·cols`.
#[inline(always)]
unsafe fn block<V: F32s, const N: usize>(
    w: *const f32,
    g: *const f32,
    out: *mut f32,
    (k, taps, cols): (usize, usize, usize),
) {
    let l = V::LANES;
    let mut q0 = 0;
    // SAFETY (every run): columns q0 .. q0 + LANES·NV (the last vector's first `left` for the
    // tail) are < cols.
    unsafe {
        while q0 + 2 * l <= cols {
            run::<V, N, 2>((w, taps), (g.add(q0), cols), l, out.add(q0), k);
            q0 += 2 * l;
        }
        if q0 + l <= cols {
            run::<V, N, 1>((w, taps), (g.add(q0), cols), l, out.add(q0), k);
            q0 += l;
        }
        if q0 < cols {
            run::<V, N, 1>((w, taps), (g.add(q0), cols), cols - q0, out.add(q0), k);
        }
    }
}

/// `out[j][l] = Σ_o w[o·taps + j] · g[o·cols + l]` for `j < N` and the run's `LANES·NV`
/// columns, of which the last vector has `left ≤ LANES` (neither read nor written past them).
///
/// # Safety
/// As [`block`], for the run's columns.
#[inline(always)]
unsafe fn run<V: F32s, const N: usize, const NV: usize>(
    (w, taps): (*const f32, usize),
    (g, cols): (*const f32, usize),
    left: usize,
    out: *mut f32,
    k: usize,
) {
    let last = NV - 1;
    // SAFETY: the contract.
    unsafe {
        let mask = V::first(left);
        let mut acc = [[V::zero(); NV]; N];
        for o in 0..k {
            let row = g.add(o * cols);
            let mut gv = [V::zero(); NV];
            for (h, gv) in gv.iter_mut().enumerate() {
                *gv = match h == last && left < V::LANES {
                    true => V::load_masked(row.add(h * V::LANES), mask),
                    false => V::load(row.add(h * V::LANES)),
                };
            }
            for (j, acc) in acc.iter_mut().enumerate() {
                let wv = V::splat(*w.add(o * taps + j));
                for (a, &gv) in acc.iter_mut().zip(&gv) {
                    *a = V::mul_add(wv, gv, *a);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (h, &a) in acc.iter().enumerate() {
                let p = out.add(j * cols + h * V::LANES);
                match h == last && left < V::LANES {
                    true => a.store_first(p, left),
                    false => a.store(p),
                }
            }
        }
    }
}

/// Adds row `j` of `rows` (`[offsets.len(), cols]`) into `dst[offsets[j]..][..cols]`, rows in
/// order: the scatter that takes `dwide`'s rows back to the padded planes they were read from
/// (rows of neighbouring taps overlap there). Each sum is the same single IEEE addition, in the
/// same row order, as a scalar loop, so the bits do not depend on the width.
///
/// # Panics
/// Without the width's tier, or if a row or its destination is out of range.
pub(super) fn add_rows(width: Width, rows: &[f32], offsets: &[usize], dst: &mut [f32]) {
    assert!(
        width.tier().is_supported(),
        "{width:?} lanes need the CPU's support"
    );
    let cols = rows.len() / offsets.len().max(1);
    assert_eq!(rows.len(), offsets.len() * cols, "rows is [n, cols]");
    for &at in offsets {
        assert!(
            at + cols <= dst.len(),
            "row at {at} + {cols} past {}",
            dst.len()
        );
    }
    let (src, out) = (rows.as_ptr(), dst.as_mut_ptr());
    // SAFETY: the width's tier is available; each row and its destination are in bounds
    // (asserted above).
    unsafe {
        match width {
            Width::Eight => add_rows_8(src, offsets, cols, out),
            Width::Sixteen => add_rows_16(src, offsets, cols, out),
        }
    }
}

/// # Safety
/// AVX2 + FMA; as [`add_rows_with`].
#[target_feature(enable = "avx2,fma")]
unsafe fn add_rows_8(src: *const f32, offsets: &[usize], cols: usize, dst: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { add_rows_with::<__m256>(src, offsets, cols, dst) }
}

/// # Safety
/// AVX-512F; as [`add_rows_with`].
#[target_feature(enable = "avx512f")]
unsafe fn add_rows_16(src: *const f32, offsets: &[usize], cols: usize, dst: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { add_rows_with::<__m512>(src, offsets, cols, dst) }
}

/// [`add_rows`]' loop: whole vectors, then the tail under a mask.
///
/// # Safety
/// The CPU has `V`'s tier; `src` holds `offsets.len()·cols` scalars and
/// `dst[offset..offset + cols]` is writable for every offset.
#[inline(always)]
unsafe fn add_rows_with<V: F32s>(src: *const f32, offsets: &[usize], cols: usize, dst: *mut f32) {
    let l = V::LANES;
    // SAFETY: every access is inside row `j` of `src` or its destination (the contract).
    unsafe {
        let tail = V::first(cols % l);
        for (j, &at) in offsets.iter().enumerate() {
            let (s, d) = (src.add(j * cols), dst.add(at));
            let mut q = 0;
            while q + l <= cols {
                V::add(V::load(d.add(q)), V::load(s.add(q))).store(d.add(q));
                q += l;
            }
            if q < cols {
                let sum = V::add(
                    V::load_masked(d.add(q), tail),
                    V::load_masked(s.add(q), tail),
                );
                sum.store_masked(d.add(q), tail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At every width this CPU has, every row count (each arm of [`block_n`]) at column counts
    /// that end on a run of two vectors, on one vector and mid-vector, at the last rows of `W`
    /// (a block wider than asked reads past `W` and writes past `out`): each value is the chain
    /// `Σ_o W[o][t]·g[o][q]` of fused multiply-adds in `o` order, and the scalars after `out`
    /// in its buffer keep their sentinel.
    #[test]
    fn every_row_count_and_tail_writes_exactly_its_rows() {
        let widths = [Width::Eight, Width::Sixteen];
        let (widths, skip): (Vec<_>, Vec<_>) = widths.iter().partition(|w| w.tier().is_supported());
        if !skip.is_empty() {
            eprintln!("skipped {skip:?}: this CPU lacks their tier");
        }
        const SENTINEL: f32 = -7777.0;
        let val = |i: usize, m: usize| ((i * 7919 + m) % 113) as f32 / 17.0 - 3.0;
        for width in widths {
            let most = rows_per_block(width);
            for (k, taps) in [(16, 12), (1, 10), (3, 7)] {
                for cols in [1, 7, 8, 9, 15, 16, 17, 23, 32, 33, 40, 47, 136] {
                    let w: Vec<f32> = (0..k * taps).map(|i| val(i, 1)).collect();
                    let g_wide: Vec<f32> = (0..k * cols).map(|i| val(i, 2)).collect();
                    let op = Operands {
                        w: &w,
                        taps,
                        g_wide: &g_wide,
                        cols,
                    };
                    for n in 1..=most.min(taps) {
                        let t0 = taps - n;
                        let mut buf = vec![SENTINEL; (n + 2) * cols];
                        rows(width, &op, t0, n, &mut buf[..n * cols]);
                        let at =
                            format!("{width:?}: k {k}, taps {taps}, cols {cols}, rows {t0}+{n}");
                        for j in 0..n {
                            for q in 0..cols {
                                let want = (0..k).fold(0.0f32, |acc, o| {
                                    w[o * taps + t0 + j].mul_add(g_wide[o * cols + q], acc)
                                });
                                let got = buf[j * cols + q];
                                assert_eq!(got.to_bits(), want.to_bits(), "{at}: ({j}, {q})");
                            }
                        }
                        let tail = &buf[n * cols..];
                        assert!(tail.iter().all(|&v| v == SENTINEL), "{at}: wrote past out");
                    }
                }
            }
        }
    }

    /// At every width this CPU has, rows whose destinations overlap (neighbouring taps, one
    /// scalar apart, as in the padded planes) are added in row order with the bits of a scalar
    /// loop, for column counts that end on a vector and mid-vector; the scalars no row reaches
    /// keep their sentinel.
    #[test]
    fn added_rows_equal_a_scalar_loop_and_touch_nothing_else() {
        const SENTINEL: f32 = -7777.0;
        let val = |i: usize, m: usize| ((i * 7919 + m) % 113) as f32 / 17.0 - 3.0;
        for width in [Width::Eight, Width::Sixteen] {
            if !width.tier().is_supported() {
                eprintln!("skipped {width:?}: this CPU lacks its tier");
                continue;
            }
            for cols in [1, 7, 8, 9, 15, 16, 17, 33, 136] {
                let offsets = [3, 4, 5, 3 + cols + 2, 40 + cols, 41 + cols];
                let rows: Vec<f32> = (0..offsets.len() * cols).map(|i| val(i, 1)).collect();
                let len = 45 + 2 * cols;
                let mut want: Vec<f32> = (0..len).map(|i| val(i, 2)).collect();
                let reached: Vec<bool> = (0..len)
                    .map(|i| offsets.iter().any(|&at| (at..at + cols).contains(&i)))
                    .collect();
                for (i, w) in want.iter_mut().enumerate() {
                    if !reached[i] {
                        *w = SENTINEL;
                    }
                }
                let mut got = want.clone();
                for (row, &at) in rows.chunks_exact(cols).zip(&offsets) {
                    for (d, &s) in want[at..at + cols].iter_mut().zip(row) {
                        *d += s;
                    }
                }
                add_rows(width, &rows, &offsets, &mut got);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{width:?}, cols {cols}: {got:?} != {want:?}");
            }
        }
    }
}
