//! The micro-kernel contract shared by the portable and SIMD kernels.
//!
//! A micro-kernel computes one `rows × cols` tile of C (at most `MR × NR`) from `rows` rows of A
//! (an `MR`-row packed panel, or A itself read in place: [`ATile`]) and an `NR`-column panel of
//! B, keeping the whole tile in registers for the full `k` loop, and touches C only once at the
//! end: `C = alpha·acc + beta·C`. Both ways of reading A give the same bits: only the addresses
//! differ.

use crate::Scalar;

/// A register-tiled micro-kernel and the cache-block sizes that suit it.
pub(super) trait MicroKernel<T> {
    /// Rows of C per tile (and of each packed A panel).
    const MR: usize;
    /// Columns of C per tile (and of each packed B panel).
    const NR: usize;
    /// SIMD width in elements: a tile reads each row of its B panel in whole vectors,
    /// `cols.div_ceil(LANES) · LANES` elements, so B can be read in place (unpacked) only for
    /// panels whose width is a multiple of `LANES`.
    const LANES: usize;
    /// Depth of one cache block: A and B panels are packed `KC` columns / rows at a time, so
    /// that a `KC × NR` panel of B stays in L1 while the tiles of an A block stream past it.
    /// The other block sizes come from the cache sizes at run time (`cache::Blocking`).
    const KC: usize;
    /// Up to this many rows of C (and at most one block of A, `MC` rows), B is read in place
    /// when its rows are contiguous: each B panel is then read from memory once either way, so
    /// packing it would only add a copy.
    const DIRECT_B_MAX_M: usize;

    /// `C[..rows, ..cols] = alpha · A_tile · B_panel + beta · C[..rows, ..cols]`;
    /// with `beta == 0` C is never read (it may hold NaN).
    ///
    /// # Safety
    /// - `1 <= rows <= MR`, `1 <= cols <= NR`, `k >= 1`;
    /// - `a.at(r, p)` is readable for `r < rows`, `p < k` (a packed panel, `ATile::panel`,
    ///   holds all `MR` rows of every step);
    /// - for every `p < k`, `b + p · b_ks` points to `cols.div_ceil(LANES) · LANES` readable
    ///   elements (column `j` of step `p`);
    /// - `c + i · rsc + j · csc` is writable for `i < rows`, `j < cols`, and no other live
    ///   reference aliases those elements;
    /// - the CPU supports the kernel's instruction set.
    unsafe fn tile(
        k: usize,
        a: ATile<T>,
        b: *const T,
        b_ks: isize,
        alpha: T,
        beta: T,
        c: *mut T,
        rsc: isize,
        csc: isize,
        rows: usize,
        cols: usize,
    );

    /// Every tile of one row strip of C: `C[..rows, ..cols] = alpha · A_tile · B + beta · C`,
    /// where B's `cols.div_ceil(NR)` panels are described by `b` (see [`BPanels`]). The same
    /// bits as calling [`MicroKernel::tile`] on each panel, which is what this default does;
    /// a kernel may override it to pay its per-call costs (dispatch, setup) once per strip.
    ///
    /// # Safety
    /// The [`MicroKernel::tile`] contract for every panel: `1 <= rows <= MR`, `cols >= 1`,
    /// `k >= 1`, A readable as there, each panel of `b` as there, C writable for `rows × cols`.
    unsafe fn strip(
        k: usize,
        a: ATile<T>,
        b: BPanels<T>,
        alpha: T,
        beta: T,
        c: *mut T,
        rsc: isize,
        csc: isize,
        rows: usize,
        cols: usize,
    ) where
        T: Copy,
    {
        for jr in (0..cols).step_by(Self::NR) {
            let (bp, b_ks) = b.panel(jr / Self::NR, cols.div_ceil(Self::NR));
            let c_tile = c.wrapping_offset(jr as isize * csc);
            let w = Self::NR.min(cols - jr);
            // SAFETY: the contract above, for this panel and its tile of C.
            unsafe { Self::tile(k, a, bp, b_ks, alpha, beta, c_tile, rsc, csc, rows, w) };
        }
    }
}

/// Where a tile reads A: the value of row `r` at step `p` of `k` is at `ptr + r·rs + p·ks`.
/// A packed panel is `rs = 1`, `ks = MR`; A read in place has the matrix's own strides.
#[derive(Debug)]
pub(super) struct ATile<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub ks: isize,
}

// Manual impls, as for `MatRef`: copying the descriptor never copies a `T`.
impl<T> Clone for ATile<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ATile<T> {}

impl<T> ATile<T> {
    /// A packed panel of `mr` rows (row `r` of step `p` at `ptr[p · mr + r]`).
    pub fn panel(ptr: *const T, mr: usize) -> Self {
        ATile {
            ptr,
            rs: 1,
            ks: mr as isize,
        }
    }

    /// Whether the addresses are those of a packed panel of `mr` rows, so that a kernel may
    /// read whole steps of `mr` values.
    pub fn is_panel(&self, mr: usize) -> bool {
        self.rs == 1 && self.ks == mr as isize
    }
}

/// The column panels of B one row strip of C reads: panel `q` starts at `ptr + q·next` with
/// its steps `ks` apart, except the last, which starts at `last` with steps `last_ks` apart (a
/// padded copy when B is read in place and its width is not a multiple of the kernel's
/// vectors).
#[derive(Debug)]
pub(super) struct BPanels<T> {
    pub ptr: *const T,
    pub next: isize,
    pub ks: isize,
    pub last: *const T,
    pub last_ks: isize,
}

// Manual impls, as for `ATile`.
impl<T> Clone for BPanels<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for BPanels<T> {}

impl<T> BPanels<T> {
    /// `(first step, step stride)` of panel `q` of `count`.
    #[inline(always)]
    pub fn panel(&self, q: usize, count: usize) -> (*const T, isize) {
        if q + 1 == count {
            (self.last, self.last_ks)
        } else {
            (self.ptr.wrapping_offset(q as isize * self.next), self.ks)
        }
    }
}

/// A's addresses inside a tile's `k` loop, resolved at compile time for packed panels (so the
/// packed loop keeps constant offsets) and at run time for A read in place.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) trait ARows<T>: Copy {
    /// Row `r` of the current step.
    ///
    /// # Safety
    /// Row `r` of this step is inside the tile's A (the `tile` contract).
    unsafe fn row(self, r: usize) -> *const T;

    /// The same rows `steps` steps further along `k`. Only computes an address: it may point
    /// past A after the last step, where it is never read.
    fn ahead(self, steps: usize) -> Self;

    /// The addressing a tile of `R` rows runs its `k` loop with: the same addresses, in the
    /// form that loop computes fastest.
    fn for_rows<const R: usize>(self) -> impl ARows<T>;
}

/// A packed panel of `M` rows.
#[derive(Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct Panel<T, const M: usize>(pub *const T);

impl<T, const M: usize> Clone for Panel<T, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, const M: usize> Copy for Panel<T, M> {}

impl<T, const M: usize> ARows<T> for Panel<T, M> {
    #[inline(always)]
    unsafe fn row(self, r: usize) -> *const T {
        // SAFETY: inside the panel (caller's contract).
        unsafe { self.0.add(r) }
    }

    #[inline(always)]
    fn ahead(self, steps: usize) -> Self {
        Panel(self.0.wrapping_add(steps * M))
    }

    /// Constant offsets from one pointer already.
    #[inline(always)]
    fn for_rows<const R: usize>(self) -> impl ARows<T> {
        self
    }
}

impl<T> ARows<T> for ATile<T> {
    #[inline(always)]
    unsafe fn row(self, r: usize) -> *const T {
        // SAFETY: inside A (caller's contract).
        unsafe { self.ptr.offset(r as isize * self.rs) }
    }

    #[inline(always)]
    fn ahead(self, steps: usize) -> Self {
        ATile {
            ptr: self.ptr.wrapping_offset(steps as isize * self.ks),
            ..self
        }
    }

    /// One offset per row from a pointer that moves along `k`: rows found by adding the row
    /// stride again and again would make a chain of dependent additions in every step.
    #[inline(always)]
    fn for_rows<const R: usize>(self) -> impl ARows<T> {
        RowOffsets::<T, R> {
            ptr: self.ptr,
            rows: std::array::from_fn(|r| r as isize * self.rs),
            ks: self.ks,
        }
    }
}

/// [`ATile`]'s addresses as one offset per row (see [`ARows::for_rows`]).
#[derive(Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct RowOffsets<T, const R: usize> {
    ptr: *const T,
    rows: [isize; R],
    ks: isize,
}

impl<T, const R: usize> Clone for RowOffsets<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, const R: usize> Copy for RowOffsets<T, R> {}

impl<T, const R: usize> ARows<T> for RowOffsets<T, R> {
    #[inline(always)]
    unsafe fn row(self, r: usize) -> *const T {
        // SAFETY: inside A (caller's contract).
        unsafe { self.ptr.offset(self.rows[r]) }
    }

    #[inline(always)]
    fn ahead(self, steps: usize) -> Self {
        RowOffsets {
            ptr: self.ptr.wrapping_offset(steps as isize * self.ks),
            ..self
        }
    }

    #[inline(always)]
    fn for_rows<const S: usize>(self) -> impl ARows<T> {
        self
    }
}

/// Calls `$f::<..., A>(a_rows, $args)` with `A` the compile-time addressing of `$a` (an
/// [`ATile`]): [`Panel`] when it is a packed panel of `$mr` rows, the run-time [`ATile`]
/// otherwise (A read in place).
#[cfg(target_arch = "x86_64")]
macro_rules! with_a_rows {
    ($a:expr, $mr:expr, |$rows:ident| $call:expr) => {{
        let a: ATile<_> = $a;
        if a.is_panel($mr) {
            let $rows = Panel::<_, { $mr }>(a.ptr);
            $call
        } else {
            let $rows = a;
            $call
        }
    }};
}
#[cfg(target_arch = "x86_64")]
pub(super) use with_a_rows;

/// Writes `alpha · acc + beta · C` for the top-left `rows × cols` corner of `acc` (row `r` at
/// `acc[r · acc_rs ..]`) into C at strides `rsc`, `csc`. With `beta == 0`, C is not read.
///
/// The products are rounded separately (no fused multiply-add) so that the SIMD kernels' vector
/// stores, which do the same, give bit-identical results whatever the layout of C.
///
/// # Safety
/// `c + i · rsc + j · csc` is writable for `i < rows`, `j < cols`.
#[inline(always)]
pub(super) unsafe fn write_tile<T: Scalar>(
    acc: &[T],
    acc_rs: usize,
    rows: usize,
    cols: usize,
    alpha: T,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
) {
    for i in 0..rows {
        for j in 0..cols {
            // SAFETY: (i, j) is inside the tile (caller's contract).
            let cij = unsafe { &mut *c.offset(i as isize * rsc + j as isize * csc) };
            let x = alpha * acc[i * acc_rs + j];
            *cij = if beta == T::zero() {
                x
            } else {
                x + beta * *cij
            };
        }
    }
}
