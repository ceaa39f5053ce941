//! Per-thread packing buffers that grow once and are then reused, so a `gemm` call allocates
//! nothing in steady state (the training loop calls it many times per batch).

use crate::Scalar;
use std::any::TypeId;
use std::cell::RefCell;

/// One 64-byte cache line: packed panels start on a line so SIMD loads never split lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

const ZERO_LINE: Line = Line([0; 8]);

thread_local! {
    static SCRATCH: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with two scratch slices of `a_len` and `b_len` elements, each starting on a cache
/// line. Their contents are unspecified (leftovers of an earlier call): callers write before
/// they read. When the thread's buffer must grow, it grows to hold at least `most` elements
/// (the caller's largest possible request), so it grows once per thread, not once per new size.
pub(super) fn with_packing_buffers<T: Scalar, R>(
    a_len: usize,
    b_len: usize,
    most: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    // Reinterpreting lines as `T` is only sound for types where any bit pattern is a value.
    // `Scalar` is implemented for f32 and f64; any other implementor gets fresh vectors.
    if TypeId::of::<T>() != TypeId::of::<f32>() && TypeId::of::<T>() != TypeId::of::<f64>() {
        let (mut a, mut b) = (vec![T::zero(); a_len], vec![T::zero(); b_len]);
        return f(&mut a, &mut b);
    }
    let per_line = std::mem::size_of::<Line>() / std::mem::size_of::<T>();
    let (a_lines, b_lines) = (a_len.div_ceil(per_line), b_len.div_ceil(per_line));
    // `+ 1`: a split into two slices may round each part up to a line.
    let most_lines = most.div_ceil(per_line) + 1;
    let run = |lines: &mut Vec<Line>| {
        if lines.len() < a_lines + b_lines {
            lines.resize((a_lines + b_lines).max(most_lines), ZERO_LINE);
        }
        let (la, lb) = lines.split_at_mut(a_lines);
        // SAFETY: T is f32 or f64 (checked above): every bit pattern is a valid value, its
        // alignment (4 or 8) divides 64, and `la`/`lb` hold at least `a_len`/`b_len` elements of
        // T. The two slices are disjoint and borrow `lines` mutably for the duration of `f`.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts_mut(la.as_mut_ptr().cast::<T>(), a_len),
                std::slice::from_raw_parts_mut(lb.as_mut_ptr().cast::<T>(), b_len),
            )
        };
        f(a, b)
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut lines) => run(&mut lines),
        // Re-entered on this thread (cannot happen today, the kernels call no user code):
        // use a temporary instead of panicking.
        Err(_) => run(&mut Vec::new()),
    })
}
