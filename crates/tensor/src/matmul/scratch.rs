//! Per-thread buffers that grow once and are then reused, so a `gemm` call allocates nothing
//! in steady state (the training loop calls it many times per batch).
//!
//! Each thread has one buffer for packed A and one for packed B: in a parallel product the
//! calling thread holds the shared packed B while every thread, itself included, packs its own
//! A blocks. Other kernels of the crate declare their own per-thread buffers
//! ([`ThreadBuffer`]) and borrow them through [`with_thread_buffer`].

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

thread_local! {
    static SCRATCH_A: ThreadBuffer = const { RefCell::new(Vec::new()) };
    static SCRATCH_B: ThreadBuffer = const { RefCell::new(Vec::new()) };
}

/// Which of the thread's two buffers.
#[derive(Clone, Copy, Debug)]
pub(super) enum Packed {
    /// Panels of A.
    A,
    /// Panels of B.
    B,
}

/// Calls `f` with a slice of `len` elements of the thread's packing buffer `which`
/// ([`with_thread_buffer`]).
pub(super) fn with_packing_buffer<T: Scalar, R>(
    which: Packed,
    len: usize,
    most: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let key: &'static LocalKey<ThreadBuffer> = match which {
        Packed::A => &SCRATCH_A,
        Packed::B => &SCRATCH_B,
    };
    with_thread_buffer(key, len, most, f)
}

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
