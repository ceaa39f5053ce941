//! The cache-blocked loop nest around a micro-kernel (Goto/BLIS order), on one thread.
//!
//! ```text
//! for jc in n by NC:              B block  (KC × NC, packed, L3)
//!   for pc in k by KC:            beta applies on the first pc only, then C accumulates
//!     pack B[pc.., jc..]
//!     for ic in m by MC:          A block  (MC × KC, packed, L2)
//!       pack A[ic.., pc..]
//!       for jr in NC by NR:       B panel  (KC × NR, stays in L1)
//!         for ir in MC by MR:     micro-kernel: MR × NR tile of C in registers
//! ```
//!
//! `MC` and `NC` come from the cache sizes read at run time (`cache`), `KC` from the kernel.
//!
//! [`gemm_parallel`] runs the same nest on rayon's pool: for each `KC × NC` block the calling
//! thread packs B once into its buffer, shared read-only, then the `ic` (and, for short
//! products, `jr`) loop is cut into equal pieces, one or a few per thread, each packing its own
//! rows of A. The threads meet once per B block.
//!
//! Every element of C is summed over `k` in the same order (KC blocks in order, steps in order
//! inside each block) however the loops are cut, so a product split across threads by rows or
//! columns of C gives bit-identical results.

use super::cache::{cache_sizes, Blocking};
use super::kernel::MicroKernel;
use super::layout::{MatMut, MatRef};
use super::pack::{pack_a, pack_b};
use super::scratch::{with_packing_buffer, Packed};
use super::source::{MatrixB, PackB};
use crate::Scalar;
use rayon::prelude::*;

/// The blocking of kernel `K` on this machine, and the most packing space (A, B) it can need.
fn blocking<T, K: MicroKernel<T>>() -> (Blocking, usize, usize) {
    let blk = Blocking::new(cache_sizes(), K::MR, K::NR, K::KC, std::mem::size_of::<T>());
    (blk, blk.mc * blk.kc, blk.nc * blk.kc)
}

/// `C = alpha·A·B + beta·C` on the calling thread with kernel `K`, B's panels written by `b`.
///
/// `b_in_place` is B itself when it is a plain matrix: with few rows of C the driver then reads
/// B's contiguous rows directly instead of packing them.
///
/// # Safety
/// - `a` is `m × k`, `b.dim()` is `(k, n)`, `c` is `m × n`, with `m, n, k >= 1`;
/// - `a` describes readable memory, `c` writable memory that nothing else aliases;
/// - `b_in_place`, if given, describes the same `k × n` matrix as `b`, in readable memory;
/// - the CPU supports `K`'s instruction set.
pub(super) unsafe fn gemm_serial<T: Scalar, K: MicroKernel<T>>(
    alpha: T,
    a: MatRef<T>,
    b: &dyn PackB<T>,
    b_in_place: Option<MatRef<T>>,
    beta: T,
    c: MatMut<T>,
) {
    let (m, k) = (a.rows, a.cols);
    let n = b.dim().1;
    debug_assert_eq!(b.dim(), (k, n));
    let (mr, nr) = (K::MR, K::NR);
    let (blk, most_a, most_b) = blocking::<T, K>();
    let direct_b = b_in_place.filter(|bm| in_place_pays::<T, K>(bm, m));
    let kc_max = blk.kc.min(k);
    let a_len = blk.mc.min(m).div_ceil(mr) * mr * kc_max;
    let b_len = if direct_b.is_some() {
        nr * kc_max
    } else {
        blk.nc.min(n).div_ceil(nr) * nr * kc_max
    };
    // The first call on a thread reserves the most any call with this kernel can ask for, so a
    // thread that meets a bigger product later never reallocates in the middle of training.
    with_packing_buffer::<T, _>(Packed::B, b_len, most_b, |bbuf| {
        with_packing_buffer::<T, _>(Packed::A, a_len, most_a, |abuf| {
            for jc in (0..n).step_by(blk.nc) {
                let nc = blk.nc.min(n - jc);
                for pc in (0..k).step_by(blk.kc) {
                    let kc = blk.kc.min(k - pc);
                    let beta_p = if pc == 0 { beta } else { T::one() };
                    // SAFETY: the block is inside B (loop bounds), readable by the contract.
                    let bblk = direct_b.map(|bm| unsafe { bm.block(pc, jc, kc, nc) });
                    if bblk.is_none() {
                        // bbuf holds nc/NR panels (b_len).
                        b.pack(pc, kc, jc, nc, nr, bbuf);
                    }
                    for ic in (0..m).step_by(blk.mc) {
                        let mc = blk.mc.min(m - ic);
                        // SAFETY: the block is inside A; abuf holds mc/MR panels (a_len).
                        unsafe { pack_a(a.block(ic, pc, mc, kc), mr, abuf) };
                        let bsrc = match bblk {
                            None => BBlock::Packed(&*bbuf),
                            Some(bb) => BBlock::InPlace(bb, &mut *bbuf),
                        };
                        // SAFETY: the C block is inside C, unaliased (contract); the in-place
                        // B block is readable with contiguous rows (`in_place_pays`).
                        unsafe {
                            macro_kernel::<T, K>(
                                kc,
                                abuf,
                                bsrc,
                                alpha,
                                beta_p,
                                c.block(ic, jc, mc, nc),
                            )
                        };
                    }
                }
            }
        })
    });
}

/// Whether reading B in place beats packing it: its rows are contiguous and C has so few rows
/// that each B element is used too few times for packing to pay for itself.
fn in_place_pays<T, K: MicroKernel<T>>(b: &MatRef<T>, m: usize) -> bool {
    b.cs == 1 && m <= K::DIRECT_B_MAX_M
}

/// Where the micro-kernel reads B for one `kc × nc` block.
enum BBlock<'b, T> {
    /// Packed `NR`-column panels.
    Packed(&'b [T]),
    /// B itself, rows contiguous; narrow edge panels are padded into the scratch slice.
    InPlace(MatRef<T>, &'b mut [T]),
}

/// Runs the micro-kernel over every tile of the block `c` (`mc × nc`): A from `a` (`mc / MR`
/// packed panels of `kc` steps), B from `b` (a `kc × nc` block).
///
/// # Safety
/// `c` is writable and unaliased; an in-place B block is readable and has `cs == 1`, and its
/// scratch holds one panel; a packed one holds `nc / NR` panels; `a` holds `mc / MR` panels;
/// the CPU supports `K`'s instruction set.
unsafe fn macro_kernel<T: Scalar, K: MicroKernel<T>>(
    kc: usize,
    a: &[T],
    mut b: BBlock<'_, T>,
    alpha: T,
    beta: T,
    c: MatMut<T>,
) {
    let (mr, nr) = (K::MR, K::NR);
    let (mc, nc) = (c.rows, c.cols);
    for jr in (0..nc).step_by(nr) {
        let cols = nr.min(nc - jr);
        let (bp, b_ks) = match &mut b {
            BBlock::Packed(buf) => (buf[jr / nr * kc * nr..].as_ptr(), nr as isize),
            // SAFETY: column jr of the block is inside B.
            BBlock::InPlace(bb, _) if cols % K::LANES == 0 => {
                (unsafe { bb.block(0, jr, kc, cols).ptr }, bb.rs)
            }
            BBlock::InPlace(bb, edge) => {
                // Narrow edge panel: the kernel reads whole vectors, so pad a copy.
                // SAFETY: the edge block is inside B; `edge` holds one panel.
                unsafe { pack_b(bb.block(0, jr, kc, cols), nr, edge) };
                (edge.as_ptr(), nr as isize)
            }
        };
        for ir in (0..mc).step_by(mr) {
            let rows = mr.min(mc - ir);
            // SAFETY: the A panel holds kc·MR packed values; the B panel kc steps of whole
            // vectors (packed, or in place with cols a multiple of LANES); the C tile is inside
            // the block; K's ISA is supported (caller).
            unsafe {
                K::tile(
                    kc,
                    a[ir / mr * kc * mr..].as_ptr(),
                    bp,
                    b_ks,
                    alpha,
                    beta,
                    c.at(ir, jr),
                    c.rs,
                    c.cs,
                    rows,
                    cols,
                )
            };
        }
    }
}

/// Raw descriptors handed to rayon's threads.
#[derive(Clone, Copy)]
struct Shared<X>(X);
// SAFETY: only `MatRef`/`MatMut` descriptors are wrapped. Every thread reads A (readable for
// the call) and writes its own piece of C; the pieces are disjoint (see `gemm_parallel`).
unsafe impl<X> Send for Shared<X> {}
// SAFETY: as above.
unsafe impl<X> Sync for Shared<X> {}

impl<X: Copy> Shared<X> {
    /// The descriptor. (A method, so that closures capture the whole `Shared`, not the field.)
    fn get(self) -> X {
        self.0
    }
}

/// [`gemm_serial`] split over the current rayon pool of `threads` threads (see the module docs);
/// the same bits.
///
/// # Safety
/// As for [`gemm_serial`].
pub(super) unsafe fn gemm_parallel<T: Scalar, K: MicroKernel<T>>(
    alpha: T,
    a: MatRef<T>,
    b: &dyn PackB<T>,
    b_in_place: Option<MatRef<T>>,
    beta: T,
    c: MatMut<T>,
    threads: usize,
) {
    let (m, k) = (a.rows, a.cols);
    let n = b.dim().1;
    let (mr, nr) = (K::MR, K::NR);
    if let Some(bm) = b_in_place.filter(|bm| in_place_pays::<T, K>(bm, m)) {
        // B read in place: nothing to share. Column pieces, each a serial product.
        let width = n.div_ceil(2 * threads).next_multiple_of(nr);
        let (bm, a, c) = (Shared(bm), Shared(a), Shared(c));
        return (0..n.div_ceil(width)).into_par_iter().for_each(|p| {
            let (j, cols) = (p * width, width.min(n - p * width));
            // SAFETY: the pieces are disjoint column blocks of C and of B, inside both; the
            // rest is the caller's contract.
            unsafe {
                let piece = bm.get().block(0, j, k, cols);
                let src = MatrixB::from_mat(piece);
                gemm_serial::<T, K>(
                    alpha,
                    a.get(),
                    &src,
                    Some(piece),
                    beta,
                    c.get().block(0, j, m, cols),
                )
            }
        });
    }
    let (blk, most_a, most_b) = blocking::<T, K>();
    // Equal row pieces, multiples of MR and at most MC, their number a multiple of `threads`;
    // when C has too few rows for that, columns are cut too.
    let rows_per = m
        .div_ceil(m.div_ceil(blk.mc).next_multiple_of(threads))
        .next_multiple_of(mr);
    let row_pieces = m.div_ceil(rows_per);
    let col_pieces = threads.div_ceil(row_pieces);
    let kc_max = blk.kc.min(k);
    let b_len = blk.nc.min(n).div_ceil(nr) * nr * kc_max;
    with_packing_buffer::<T, _>(Packed::B, b_len, most_b, |bbuf| {
        for jc in (0..n).step_by(blk.nc) {
            let nc = blk.nc.min(n - jc);
            let cols_per = nc.div_ceil(col_pieces).next_multiple_of(nr);
            for pc in (0..k).step_by(blk.kc) {
                let kc = blk.kc.min(k - pc);
                let beta_p = if pc == 0 { beta } else { T::one() };
                b.pack(pc, kc, jc, nc, nr, bbuf);
                let bbuf = &*bbuf;
                let (a, c) = (Shared(a), Shared(c));
                let pieces = row_pieces * nc.div_ceil(cols_per);
                (0..pieces).into_par_iter().for_each(|piece| {
                    let (ic, jr) = (piece % row_pieces * rows_per, piece / row_pieces * cols_per);
                    let (mc, cols) = (rows_per.min(m - ic), cols_per.min(nc - jr));
                    let panels = &bbuf[jr / nr * kc * nr..(jr + cols).div_ceil(nr) * kc * nr];
                    let a_len = mc.div_ceil(mr) * mr * kc;
                    with_packing_buffer::<T, _>(Packed::A, a_len, most_a, |abuf| {
                        // SAFETY: the A block and the C piece are inside A and C; pieces are
                        // disjoint blocks of C, so no two threads write the same element; the
                        // panels cover the piece's columns; the rest is the caller's contract.
                        unsafe {
                            pack_a(a.get().block(ic, pc, mc, kc), mr, abuf);
                            let cp = c.get().block(ic, jc + jr, mc, cols);
                            macro_kernel::<T, K>(
                                kc,
                                abuf,
                                BBlock::Packed(panels),
                                alpha,
                                beta_p,
                                cp,
                            )
                        }
                    });
                });
            }
        }
    });
}
