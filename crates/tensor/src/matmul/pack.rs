//! Packing: copy a block of A (or B) into the panel order the micro-kernel streams through.
//!
//! A `mc × kc` block of A becomes `mc / MR` panels (rounded up), each `kc` steps of `MR`
//! consecutive values (one column slice of the panel); B's `kc × nc` block becomes `nc / NR`
//! panels of `kc` steps of `NR` values (one row slice). Rows or columns past the matrix edge are
//! zero-filled, so the kernel never needs a bounds check. Any source strides work — a transposed
//! or sliced view costs only its less regular reads here, and the kernel always reads contiguous
//! memory.

use super::layout::MatRef;
#[cfg(target_arch = "x86_64")]
use super::transpose_avx2;
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
        // SAFETY (both branches): `rows` rows of `kc` readable elements at (rs, cs).
        if rows == mr && blk.rs == 1 {
            // Column-major A (e.g. a `.t()` view): each step's MR values are contiguous.
            unsafe { copy_steps(blk.ptr, blk.cs, kc, mr, panel) };
        } else {
            // Row-major A, an edge panel or general strides: interleave the rows (a transpose).
            unsafe { interleave(&line_starts(blk.ptr, blk.rs, rows), blk.cs, kc, mr, panel) };
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
        // SAFETY (both branches): `cols` columns of `kc` readable elements at (rs, cs).
        if cols == nr && blk.cs == 1 {
            // Row-major B: each step is a contiguous run of NR values.
            unsafe { copy_steps(blk.ptr, blk.rs, kc, nr, panel) };
        } else {
            // Column-major B (a `.t()` view), an edge panel or general strides: interleave the
            // columns.
            unsafe { interleave(&line_starts(blk.ptr, blk.cs, cols), blk.rs, kc, nr, panel) };
        }
    }
}

/// Calls `$f::<T, W>($args)` with `W` the compile-time constant equal to `$w` for the kernels'
/// panel widths (their MR and NR), so the per-step copies unroll into straight loads and
/// stores; any other width runs `$fallback`.
macro_rules! with_width {
    ($w:expr, $f:ident ($($arg:expr),*), $fallback:expr) => {
        match $w {
            4 => $f::<T, 4>($($arg),*),
            6 => $f::<T, 6>($($arg),*),
            8 => $f::<T, 8>($($arg),*),
            16 => $f::<T, 16>($($arg),*),
            32 => $f::<T, 32>($($arg),*),
            _ => $fallback,
        }
    };
}

/// Copies `kc` runs of `w` contiguous values into a full panel:
/// `panel[p · w .. (p + 1) · w] = src[p · step .. p · step + w]` for `p < kc`.
///
/// # Safety
/// Every `src + p · step + l` (`l < w`, `p < kc`) is readable; `panel.len() == kc · w`.
unsafe fn copy_steps<T: Scalar>(src: *const T, step: isize, kc: usize, w: usize, panel: &mut [T]) {
    // SAFETY (all arms): forwarded contract.
    unsafe {
        with_width!(w, copy_steps_n(src, step, kc, panel), {
            for (p, out) in panel.chunks_exact_mut(w).enumerate() {
                out.copy_from_slice(std::slice::from_raw_parts(src.offset(p as isize * step), w));
            }
        })
    }
}

/// [`copy_steps`] for a compile-time width `W`.
///
/// # Safety
/// As for [`copy_steps`] with `w == W`.
#[inline(always)]
unsafe fn copy_steps_n<T: Scalar, const W: usize>(
    src: *const T,
    step: isize,
    kc: usize,
    panel: &mut [T],
) {
    for (p, out) in panel[..kc * W].chunks_exact_mut(W).enumerate() {
        // SAFETY: the W values of step p are readable (forwarded contract); `[T; W]` has the
        // alignment of `T`, and the read is unaligned-safe anyway.
        let run = unsafe {
            src.offset(p as isize * step)
                .cast::<[T; W]>()
                .read_unaligned()
        };
        out.copy_from_slice(&run);
    }
}

/// The widest panel (AVX-512's `NR` for f32): how many line starts [`interleave`] takes.
const MAX_W: usize = 32;

/// Where the first `lines` lines start, `src + l · line`.
///
/// # Safety
/// `lines <= MAX_W`, and every `src + l · line` (`l < lines`) is inside one allocation.
unsafe fn line_starts<T>(src: *const T, line: isize, lines: usize) -> LineStarts<T> {
    assert!(
        lines <= MAX_W,
        "a panel of {lines} lines is wider than {MAX_W}"
    );
    let mut starts = [src; MAX_W];
    for (l, s) in starts[..lines].iter_mut().enumerate() {
        // SAFETY: line l starts inside the source (contract).
        *s = unsafe { src.offset(l as isize * line) };
    }
    LineStarts { starts, lines }
}

/// The start of each source line of one panel, at most [`MAX_W`].
struct LineStarts<T> {
    starts: [*const T; MAX_W],
    lines: usize,
}

impl<T> std::ops::Deref for LineStarts<T> {
    type Target = [*const T];
    fn deref(&self) -> &[*const T] {
        &self.starts[..self.lines]
    }
}

/// Packs the `kc × nc` block at `(pc, jc)` of a B whose column `j` is a contiguous line of
/// `src`, `B[p, j] = src[start(j) + p]`, into `nr`-column panels, zero-padded as [`pack_b`]
/// does: for sources whose columns are windows of one buffer, e.g. the shifted convolution's
/// columns read straight from an image.
///
/// # Panics
/// If a line `start(j) + pc .. + kc` (`jc <= j < jc + nc`) leaves `src`, if `nr` is over 32, or
/// if `dst` is shorter than `nc.div_ceil(nr) · nr · kc`.
pub(crate) fn pack_b_lines<T: Scalar>(
    src: &[T],
    start: impl Fn(usize) -> usize,
    (pc, kc): (usize, usize),
    (jc, nc): (usize, usize),
    nr: usize,
    dst: &mut [T],
) {
    assert!(nr <= MAX_W, "a panel of {nr} lines is wider than {MAX_W}");
    let dst = &mut dst[..nc.div_ceil(nr) * nr * kc];
    for (jp, panel) in dst.chunks_exact_mut(nr * kc).enumerate() {
        let j0 = jc + jp * nr;
        let lines = nr.min(jc + nc - j0);
        let mut starts = LineStarts {
            starts: [src.as_ptr(); MAX_W],
            lines,
        };
        for (l, s) in starts.starts[..lines].iter_mut().enumerate() {
            let first = start(j0 + l) + pc;
            assert!(
                first + kc <= src.len(),
                "column {} leaves the source",
                j0 + l
            );
            // SAFETY: `first` is inside `src` (asserted, with its kc elements).
            *s = unsafe { src.as_ptr().add(first) };
        }
        // SAFETY: every line holds kc readable elements (asserted); 1 <= lines <= nr; the
        // panel is kc · nr long.
        unsafe { interleave(&starts, 1, kc, nr, panel) };
    }
}

/// Interleaves the source lines starting at `starts` into a `w`-wide panel and zero-fills the
/// rest (on AVX2, full f32 panels of contiguous lines go through [`transpose_avx2`]):
/// `panel[p · w + l] = starts[l][p · step]` for `l < starts.len()`, `0` for the other `l < w`,
/// `p < kc`.
///
/// # Safety
/// `1 <= starts.len() <= w`; every `starts[l] + p · step` (`p < kc`) is readable;
/// `panel.len() == kc · w`.
unsafe fn interleave<T: Scalar>(
    starts: &[*const T],
    step: isize,
    kc: usize,
    w: usize,
    panel: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if step == 1 && starts.len() == w && transpose_avx2::handles(w) && transpose_avx2::available() {
        if let Some(panel) = T::as_f32_slice_mut(panel) {
            // SAFETY: `T` is f32 (the cast slice exists), so the lines are f32; AVX2 is
            // available and `w` handled (checked); the rest is the forwarded contract.
            let starts =
                unsafe { std::slice::from_raw_parts(starts.as_ptr().cast(), starts.len()) };
            return unsafe { transpose_avx2::interleave_lines(starts, kc, w, panel) };
        }
    }
    // SAFETY (all arms): forwarded contract.
    unsafe {
        with_width!(w, interleave_n(starts, step, kc, panel), {
            for (p, out) in panel.chunks_exact_mut(w).enumerate() {
                for (l, x) in out.iter_mut().enumerate() {
                    *x = match starts.get(l) {
                        Some(s) => *s.offset(p as isize * step),
                        None => T::zero(),
                    };
                }
            }
        })
    }
}

/// [`interleave`] for a compile-time width `W`.
///
/// # Safety
/// As for [`interleave`] with `w == W`.
#[inline(always)]
unsafe fn interleave_n<T: Scalar, const W: usize>(
    starts: &[*const T],
    step: isize,
    kc: usize,
    panel: &mut [T],
) {
    let lines = starts.len();
    // Missing lines start at the last real one, so that every pointer stays inside the source;
    // they are never read.
    let starts: [*const T; W] = std::array::from_fn(|l| starts[l.min(lines - 1)]);
    let panel = &mut panel[..kc * W];
    if lines == W {
        for (p, out) in panel.chunks_exact_mut(W).enumerate() {
            // SAFETY: element p of every line is readable (forwarded contract).
            let vals: [T; W] =
                std::array::from_fn(|l| unsafe { *starts[l].offset(p as isize * step) });
            out.copy_from_slice(&vals);
        }
    } else {
        for (p, out) in panel.chunks_exact_mut(W).enumerate() {
            let vals: [T; W] = std::array::from_fn(|l| {
                if l < lines {
                    // SAFETY: element p of a real line is readable (forwarded contract).
                    unsafe { *starts[l].offset(p as isize * step) }
                } else {
                    T::zero()
                }
            });
            out.copy_from_slice(&vals);
        }
    }
}
