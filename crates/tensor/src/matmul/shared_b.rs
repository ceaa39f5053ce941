//! A packed copy of all of B that the threads of one parallel product share, each panel packed
//! by the first thread that needs it, so the product runs as one parallel region.
//!
//! Packing B once and sharing it needs the threads to agree on when a panel is ready. The
//! block-by-block driver (`driver::gemm_parallel`) meets at a fork/join after packing each
//! block of B and after using it; on a virtual machine each of those hand-offs costs tens of
//! microseconds (a sleeping thread must be woken), a tenth of a 512³ product on two threads.
//! Here every panel has a state instead, `EMPTY → PACKING → READY`. A thread about to use a
//! block of B claims every panel still empty, starting at its own offset so that the threads
//! claim different ones, packs it and marks it ready; then it waits for the panels others
//! claimed. A thread only ever waits for a panel that another thread is packing at that
//! moment, and packing waits for nothing, so the wait is short and can never deadlock, however
//! rayon schedules the pieces (even all of them on one thread).
//!
//! Packing never changes a value, and each element of C is still summed over the blocks of
//! `k` in order, so the result has the bits of the serial driver.

use super::layout::MatRef;
use super::pack::pack_b;
use crate::Scalar;
use std::sync::atomic::{AtomicU8, Ordering};

/// Most panels (over all blocks of `k`) one product may share: their states live on the
/// calling thread's stack.
pub(super) const MAX_PANELS: usize = 512;

const EMPTY: u8 = 0;
const PACKING: u8 = 1;
const READY: u8 = 2;

/// All of a `k × n` B packed as `nr`-column panels, block of `k` after block: block `pc..pc +
/// kc` starts at `pc · panels · nr` and holds its `panels` panels of `kc · nr` each.
pub(super) struct SharedB<T> {
    b: MatRef<T>,
    buf: *mut T,
    len: usize,
    nr: usize,
    /// Panels per block (`n / nr` rounded up).
    panels: usize,
    states: [AtomicU8; MAX_PANELS],
}

// SAFETY: `b` is only read. Each panel of `buf` is written by the one thread that moved its
// state from EMPTY to PACKING, and read only after its state is READY (a Release store after
// the writes, an Acquire load before the reads), so no two threads touch a panel at once.
unsafe impl<T> Sync for SharedB<T> {}

impl<T: Scalar> SharedB<T> {
    /// Scalars of packing space for a `k × n` B in `nr`-column panels.
    pub(super) fn len(k: usize, n: usize, nr: usize) -> usize {
        k * n.div_ceil(nr) * nr
    }

    /// Whether a `k × n` B with blocks of `kc` rows can be shared this way.
    pub(super) fn fits(k: usize, n: usize, kc: usize, nr: usize) -> bool {
        k.div_ceil(kc) * n.div_ceil(nr) <= MAX_PANELS
    }

    /// A shared, still empty packing of `b` into `buf` (at least [`SharedB::len`] scalars).
    ///
    /// # Safety
    /// `b` is readable for the life of the value, and `buf` is used by nothing else meanwhile.
    pub(super) unsafe fn new(b: MatRef<T>, buf: &mut [T], nr: usize) -> Self {
        assert!(buf.len() >= Self::len(b.rows, b.cols, nr), "packing space");
        SharedB {
            b,
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            nr,
            panels: b.cols.div_ceil(nr),
            states: std::array::from_fn(|_| AtomicU8::new(EMPTY)),
        }
    }

    /// The packed panels of block `pc..pc + kc` (the `block`-th of `kc_max` rows), once all of
    /// them are ready: this thread packs those no thread has claimed, from panel `first` on.
    pub(super) fn block(&self, block: usize, (pc, kc): (usize, usize), first: usize) -> &[T] {
        let states = &self.states[block * self.panels..][..self.panels];
        for i in 0..self.panels {
            let j = (first + i) % self.panels;
            let claimed =
                states[j].compare_exchange(EMPTY, PACKING, Ordering::Acquire, Ordering::Relaxed);
            if claimed.is_ok() {
                self.pack_panel((pc, kc), j);
                states[j].store(READY, Ordering::Release);
            }
        }
        for state in states {
            while state.load(Ordering::Acquire) != READY {
                std::hint::spin_loop();
            }
        }
        let start = pc * self.panels * self.nr;
        let len = self.panels * self.nr * kc;
        // SAFETY: every panel of the block is READY: written, and never written again during
        // this product; the range is inside `buf` (`new` checked the length).
        unsafe { std::slice::from_raw_parts(self.buf.add(start), len) }
    }

    /// Packs panel `j` of block `pc..pc + kc` into its place.
    fn pack_panel(&self, (pc, kc): (usize, usize), j: usize) {
        let (nr, j0) = (self.nr, j * self.nr);
        let at = pc * self.panels * nr + j * kc * nr;
        assert!(at + kc * nr <= self.len, "panel inside the buffer");
        // SAFETY: this thread claimed the panel, so no other thread reads or writes its range
        // until it is READY; the range is inside `buf` (asserted).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.buf.add(at), kc * nr) };
        let cols = nr.min(self.b.cols - j0);
        // SAFETY: the block is inside B (pc + kc <= k, j0 + cols <= n), readable by `new`'s
        // contract; `dst` holds one panel (pack_b checks).
        unsafe { pack_b(self.b.block(pc, j0, kc, cols), nr, dst) };
    }
}
