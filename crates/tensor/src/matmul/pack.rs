//! Packing: copy a block of A (or B) into the panel order the micro-kernel streams through.
//!
//! A `mc × kc` block of A becomes `mc / MR` panels (rounded up), each `kc` steps of `MR`
//! consecutive values (one column slice of the panel); B's `kc × nc` block becomes `nc / NR`
//! panels of `kc` steps of `NR` values (one row slice). Rows or columns past the matrix edge are
//! zero-filled, so the kernel never needs a bounds check. Any source strides work — a transposed
//! or sliced view costs only its less regular reads here, and the kernel always reads contiguous
//! memory.

use super::layout::MatRef;
use crate::Scalar;

/// Packs `src` (`mc × kc`) into `dst` as `MR`-row panels: element `(i, p)` goes to
/// `dst[(i / MR) · kc · MR + p · MR + i % MR]`.
///
/// # Safety
/// `src` describes readable memory; `dst.len() >= mc.div_ceil(MR) · MR · kc` (checked).
pub(super) unsafe fn pack_a<T: Scalar>(src: MatRef<T>, mr: usize, dst: &mut [T]) {
    let (mc, kc) = (src.rows, src.cols);
    let panels = mc.div_ceil(mr);
    let dst = &mut dst[..panels * mr * kc];
    for (ip, panel) in dst.chunks_exact_mut(mr * kc).enumerate() {
        let i0 = ip * mr;
        let rows = mr.min(mc - i0);
        // SAFETY: the block starts inside `src` and has `rows` rows.
        let blk = unsafe { src.block(i0, 0, rows, kc) };
        if rows == mr && blk.rs == 1 {
            // Column-major A (e.g. a `.t()` view): each step's MR values are contiguous.
            for (p, step) in panel.chunks_exact_mut(mr).enumerate() {
                // SAFETY: column p of the block holds MR contiguous readable elements.
                let col =
                    unsafe { std::slice::from_raw_parts(blk.ptr.offset(p as isize * blk.cs), mr) };
                step.copy_from_slice(col);
            }
        } else if rows == mr {
            // Row-major A: interleave MR rows (a transpose), with the width known at compile time.
            // SAFETY: full panel: MR rows of kc readable elements.
            unsafe { interleave(blk.ptr, blk.rs, blk.cs, kc, mr, panel) };
        } else {
            // Edge panel or general strides: walk each source row once and scatter it down the
            // panel; pad missing rows with zeros.
            for r in 0..mr {
                if r < rows {
                    for p in 0..kc {
                        // SAFETY: (r, p) is inside the block.
                        panel[p * mr + r] = unsafe { blk.get(r, p) };
                    }
                } else {
                    for p in 0..kc {
                        panel[p * mr + r] = T::zero();
                    }
                }
            }
        }
    }
}

/// Packs `src` (`kc × nc`) into `dst` as `NR`-column panels: element `(p, j)` goes to
/// `dst[(j / NR) · kc · NR + p · NR + j % NR]`.
///
/// # Safety
/// `src` describes readable memory; `dst.len() >= nc.div_ceil(NR) · NR · kc` (checked).
pub(super) unsafe fn pack_b<T: Scalar>(src: MatRef<T>, nr: usize, dst: &mut [T]) {
    let (kc, nc) = (src.rows, src.cols);
    let panels = nc.div_ceil(nr);
    let dst = &mut dst[..panels * nr * kc];
    for (jp, panel) in dst.chunks_exact_mut(nr * kc).enumerate() {
        let j0 = jp * nr;
        let cols = nr.min(nc - j0);
        // SAFETY: the block starts inside `src` and has `cols` columns.
        let blk = unsafe { src.block(0, j0, kc, cols) };
        // SAFETY (both branches): every (p, j) read is inside the block.
        if blk.cs == 1 {
            // Row-major B: each step is a contiguous run of `cols` values.
            for (p, step) in panel.chunks_exact_mut(nr).enumerate() {
                let row = unsafe {
                    std::slice::from_raw_parts(blk.ptr.offset(p as isize * blk.rs), cols)
                };
                step[..cols].copy_from_slice(row);
                step[cols..].fill(T::zero());
            }
        } else if cols == nr {
            // Column-major B (a `.t()` view): interleave NR columns, width known at compile time.
            unsafe { interleave(blk.ptr, blk.cs, blk.rs, kc, nr, panel) };
        } else {
            // Edge panel: walk each source column once and scatter it across the panel.
            for j in 0..nr {
                if j < cols {
                    for p in 0..kc {
                        panel[p * nr + j] = unsafe { blk.get(p, j) };
                    }
                } else {
                    for p in 0..kc {
                        panel[p * nr + j] = T::zero();
                    }
                }
            }
        }
    }
}

/// Interleaves `w` source lines into a full panel: `panel[p · w + l] = src[l · line + p · step]`
/// for `l < w`, `p < kc`. Dispatches to a version with `w` fixed at compile time (the kernels'
/// MR and NR), so the lane loop unrolls into straight loads and one contiguous store per step.
///
/// # Safety
/// Every `src + l · line + p · step` is readable; `panel.len() == kc · w`.
unsafe fn interleave<T: Scalar>(
    src: *const T,
    line: isize,
    step: isize,
    kc: usize,
    w: usize,
    panel: &mut [T],
) {
    // SAFETY (all arms): forwarded contract.
    unsafe {
        match w {
            4 => interleave_n::<T, 4>(src, line, step, kc, panel),
            6 => interleave_n::<T, 6>(src, line, step, kc, panel),
            8 => interleave_n::<T, 8>(src, line, step, kc, panel),
            16 => interleave_n::<T, 16>(src, line, step, kc, panel),
            32 => interleave_n::<T, 32>(src, line, step, kc, panel),
            _ => {
                for (p, out) in panel.chunks_exact_mut(w).enumerate() {
                    for (l, x) in out.iter_mut().enumerate() {
                        *x = *src.offset(l as isize * line + p as isize * step);
                    }
                }
            }
        }
    }
}

/// [`interleave`] for a compile-time width `W`.
///
/// # Safety
/// As for [`interleave`] with `w == W`.
#[inline(always)]
unsafe fn interleave_n<T: Scalar, const W: usize>(
    src: *const T,
    line: isize,
    step: isize,
    kc: usize,
    panel: &mut [T],
) {
    // SAFETY: line l starts inside the source (forwarded contract).
    let starts: [*const T; W] = std::array::from_fn(|l| unsafe { src.offset(l as isize * line) });
    for (p, out) in panel[..kc * W].chunks_exact_mut(W).enumerate() {
        // SAFETY: element p of every line is readable (forwarded contract).
        let vals: [T; W] = std::array::from_fn(|l| unsafe { *starts[l].offset(p as isize * step) });
        out.copy_from_slice(&vals);
    }
}
