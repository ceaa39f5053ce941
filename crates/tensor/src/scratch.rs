//! Per-thread scratch buffers that grow once and are then reused, so that a kernel called
//! again and again (the training loop calls each many times per batch) allocates nothing in
//! steady state. This is the crate's one scratch system: a kernel declares a buffer of its own
//! with `thread_local!` as a [`ThreadBuffer`] and borrows a slice of it through
//! [`with_thread_buffer`]. State that outlives a call (what a training forward pass keeps for
//! its backward pass) is not scratch: a [`Conv2dPlan`](crate::Conv2dPlan) owns it.
//!
//! The buffers, in the order one thread may hold them at once (each is borrowed by one
//! function whose work borrows only the buffers below it, so no code path borrows one twice):
//!
//! | buffer | declared in | a slice of it holds | held |
//! | --- | --- | --- | --- |
//! | `SLOTS` | `conv2d/mod.rs` | one slot per batch chunk of a convolution pass (its scratch and partial gradient sums) | by the thread that calls the pass, for the whole pass |
//! | `WEIGHTS` | `conv2d/mod.rs` | a forward pass's weights regrouped for its kernel (or a shifted backward pass's, for its input gradient) | by the thread that calls the pass, for the whole pass |
//! | `WIDE` | `conv2d/shifted.rs` | the shifted method's per-image matrices (wide columns, their gradients) | by the thread running a batch chunk, for the chunk |
//! | `SCRATCH_B` | `matmul/driver.rs` | gemm's packed panels of B | by the thread that calls `gemm`, for the call |
//! | `SCRATCH_A` | `matmul/driver.rs` | gemm's packed panels of A | by each thread packing A, for its block |
//!
//! A thread that waits (inside a parallel region, or for a growth broadcast) may still be
//! handed another task by rayon, and that task may want a buffer the thread holds (two
//! products run in parallel, say); that nested call then gets a temporary vector instead
//! ([`with_thread_buffer`]).

use crate::Scalar;
use std::any::TypeId;
use std::cell::RefCell;
use std::thread::LocalKey;

/// One 64-byte cache line: packed panels start on a line so SIMD loads never split lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line([u64; 8]);

/// A thread's growable scratch, declared with `thread_local!` as
/// `const { RefCell::new(Vec::new()) }`.
pub(crate) type ThreadBuffer = RefCell<Vec<Line>>;

const ZERO_LINE: Line = Line([0; 8]);

/// Calls `f` with a scratch slice of `len` elements of this thread's buffer `key`, starting on
/// a cache line. Its contents are unspecified (leftovers of an earlier call): callers write
/// before they read. When the buffer must grow, it grows to hold at least `most` elements (the
/// caller's largest possible request), so it grows once per thread, not once per new size;
/// and then every thread of the current rayon pool grows its own buffer `key` as well
/// ([`grow_everywhere`]), so that a thread which first meets this work later (work stealing
/// decides which thread runs which chunk) does not allocate then: after a pass's first call,
/// the pass allocates nothing on any thread.
pub(crate) fn with_thread_buffer<T: Scalar, R>(
    key: &'static LocalKey<ThreadBuffer>,
    len: usize,
    most: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    // Reinterpreting lines as `T` is only sound for types where any bit pattern is a value.
    // `Scalar` is implemented for f32 and f64; any other implementor gets a fresh vector.
    if TypeId::of::<T>() != TypeId::of::<f32>() && TypeId::of::<T>() != TypeId::of::<f64>() {
        return f(&mut vec![T::zero(); len]);
    }
    let per_line = std::mem::size_of::<Line>() / std::mem::size_of::<T>();
    let (lines_needed, target) = (len.div_ceil(per_line), most.div_ceil(per_line));
    let mut grew = false;
    let run = |lines: &mut Vec<Line>| {
        if lines.len() < lines_needed {
            lines.resize(lines_needed.max(target), ZERO_LINE);
            grew = true;
        }
        // SAFETY: T is f32 or f64 (checked above): every bit pattern is a valid value, its
        // alignment (4 or 8) divides 64, and `lines` holds at least `len` elements of T. The
        // slice borrows `lines` mutably for the duration of `f`.
        let buf = unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<T>(), len) };
        f(buf)
    };
    let (out, own) = key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut lines) => (run(&mut lines), true),
        // Re-entered on this thread (a thread waiting inside a parallel region may run another
        // task rayon hands it): use a temporary instead of panicking.
        Err(_) => (run(&mut Vec::new()), false),
    });
    // Only the thread's own buffer growing says the others may need to (a temporary always
    // "grows").
    if grew && own {
        grow_everywhere(key, lines_needed.max(target));
    }
    out
}

/// Grows buffer `key` of every thread of the current rayon pool to at least `lines` (a thread
/// using its buffer at that moment keeps it as it is: it grew it for its own call).
fn grow_everywhere(key: &'static LocalKey<ThreadBuffer>, lines: usize) {
    rayon::broadcast(|_| {
        key.with(|cell| {
            if let Ok(mut buffer) = cell.try_borrow_mut() {
                if buffer.len() < lines {
                    buffer.resize(lines, ZERO_LINE);
                }
            }
        })
    });
}
