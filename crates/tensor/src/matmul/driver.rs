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
//! [`gemm_parallel`] runs the same nest on rayon's pool: each `KC × NC` block of B is packed
//! once into the calling thread's buffer (by all threads, each a run of panels) and shared
//! read-only, then the `ic` (and, for short products, `jr`) loop is cut into pieces of equal
//! work (within one tile), one or a few per thread, each packing its own rows of A. The
//! threads meet twice per B block: after packing it and after using it. Both drivers take
//! their block sizes and loop bounds from one `Plan`.
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

/// The blocking of one product with kernel `K` on this machine, shared by both drivers.
#[derive(Clone, Copy, Debug)]
struct Plan {
    blk: Blocking,
    /// Packing space (elements) the largest product with this kernel can need, for A and B:
    /// a thread's buffers grow to this on first use, so they grow once per thread.
    most_a: usize,
    most_b: usize,
    /// Depth of the deepest block of this product, `min(KC, k)`.
    kc_max: usize,
}

/// One `kc × nc` block of B: rows `pc..pc + kc`, columns `jc..jc + nc`, and the `beta` its
/// products apply to C (the caller's on the first block of `k`, then 1: C accumulates).
#[derive(Clone, Copy, Debug)]
struct BlockB<T> {
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    beta: T,
}

impl Plan {
    fn new<T, K: MicroKernel<T>>(k: usize) -> Plan {
        let blk = Blocking::new(cache_sizes(), K::MR, K::NR, K::KC, std::mem::size_of::<T>());
        Plan {
            blk,
            most_a: blk.mc * blk.kc,
            most_b: blk.nc * blk.kc,
            kc_max: blk.kc.min(k),
        }
    }

    /// Packing space of `rows` rows of A (whole `mr`-row panels) for the deepest block.
    fn a_len(&self, rows: usize, mr: usize) -> usize {
        rows.div_ceil(mr) * mr * self.kc_max
    }

    /// Packing space of the widest block of B (whole `nr`-column panels) of an `n`-column B.
    fn b_len(&self, n: usize, nr: usize) -> usize {
        self.blk.nc.min(n).div_ceil(nr) * nr * self.kc_max
    }

    /// Calls `f` on every block of a `k × n` B in the loop order of the module docs: column
    /// blocks of `NC`, and inside each the blocks of `KC` rows in order.
    fn for_each_b_block<T: Scalar>(
        &self,
        k: usize,
        n: usize,
        beta: T,
        mut f: impl FnMut(BlockB<T>),
    ) {
        for jc in (0..n).step_by(self.blk.nc) {
            let nc = self.blk.nc.min(n - jc);
            for pc in (0..k).step_by(self.blk.kc) {
                let kc = self.blk.kc.min(k - pc);
                let beta = if pc == 0 { beta } else { T::one() };
                f(BlockB {
                    pc,
                    kc,
                    jc,
                    nc,
                    beta,
                });
            }
        }
    }
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
    let plan = Plan::new::<T, K>(k);
    let direct_b = b_in_place.filter(|bm| in_place_pays::<T, K>(bm, m, plan.blk.mc));
    let a_len = plan.a_len(plan.blk.mc.min(m), mr);
    let b_len = match direct_b {
        Some(_) => nr * plan.kc_max,
        None => plan.b_len(n, nr),
    };
    with_packing_buffer::<T, _>(Packed::B, b_len, plan.most_b, |bbuf| {
        with_packing_buffer::<T, _>(Packed::A, a_len, plan.most_a, |abuf| {
            plan.for_each_b_block(k, n, beta, |bb| {
                // SAFETY: the block is inside B (loop bounds), readable by the contract.
                let in_place = direct_b.map(|bm| unsafe { bm.block(bb.pc, bb.jc, bb.kc, bb.nc) });
                if in_place.is_none() {
                    // bbuf holds nc/NR panels (b_len).
                    b.pack(bb.pc, bb.kc, bb.jc, bb.nc, nr, bbuf);
                }
                for ic in (0..m).step_by(plan.blk.mc) {
                    let mc = plan.blk.mc.min(m - ic);
                    // SAFETY: the block is inside A; abuf holds mc/MR panels (a_len).
                    unsafe { pack_a(a.block(ic, bb.pc, mc, bb.kc), mr, abuf) };
                    let bsrc = match in_place {
                        None => BBlock::Packed(&*bbuf),
                        Some(bm) => BBlock::InPlace(bm, &mut *bbuf),
                    };
                    // SAFETY: the C block is inside C, unaliased (contract); the in-place B
                    // block is readable with contiguous rows (`in_place_pays`).
                    unsafe {
                        let cb = c.block(ic, bb.jc, mc, bb.nc);
                        macro_kernel::<T, K>(bb.kc, abuf, bsrc, alpha, bb.beta, cb)
                    };
                }
            })
        })
    });
}

/// Whether reading B in place beats packing it: its rows are contiguous, C has at most
/// `K::DIRECT_B_MAX_M` rows, and A fits in one block of `mc` rows, so that each B panel is read
/// from memory once either way and packing it would only add a copy.
fn in_place_pays<T, K: MicroKernel<T>>(b: &MatRef<T>, m: usize, mc: usize) -> bool {
    b.cs == 1 && m <= K::DIRECT_B_MAX_M.min(mc)
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
// SAFETY: only `MatRef`/`MatMut` descriptors are wrapped. Every thread reads A and B (readable
// for the call) and writes its own piece of C or of the packed B buffer; the pieces are
// disjoint (see `gemm_parallel` and `pack_b_shared`).
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
    let plan = Plan::new::<T, K>(k);
    if let Some(bm) = b_in_place.filter(|bm| in_place_pays::<T, K>(bm, m, plan.blk.mc)) {
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
    let rows = RowPieces::new(m, mr, plan.blk.mc, threads);
    // When C has fewer row tiles than threads, columns are cut too.
    let col_pieces = threads.div_ceil(rows.count);
    let b_mat = b_in_place.map(Shared);
    with_packing_buffer::<T, _>(Packed::B, plan.b_len(n, nr), plan.most_b, |bbuf| {
        plan.for_each_b_block(k, n, beta, |bb| {
            pack_b_shared(b, b_mat, bb, nr, threads, bbuf);
            let bbuf = &*bbuf;
            let (a, c) = (Shared(a), Shared(c));
            let cols_per = bb.nc.div_ceil(col_pieces).next_multiple_of(nr);
            let pieces = rows.count * bb.nc.div_ceil(cols_per);
            (0..pieces).into_par_iter().for_each(|piece| {
                let (ic, mc) = rows.piece(piece % rows.count);
                let jr = piece / rows.count * cols_per;
                let cols = cols_per.min(bb.nc - jr);
                let panels = &bbuf[jr / nr * bb.kc * nr..(jr + cols).div_ceil(nr) * bb.kc * nr];
                let a_len = mc.div_ceil(mr) * mr * bb.kc;
                with_packing_buffer::<T, _>(Packed::A, a_len, plan.most_a, |abuf| {
                    // SAFETY: the A block and the C piece are inside A and C; pieces are
                    // disjoint blocks of C, so no two threads write the same element; the
                    // panels cover the piece's columns; the rest is the caller's contract.
                    unsafe {
                        pack_a(a.get().block(ic, bb.pc, mc, bb.kc), mr, abuf);
                        let cp = c.get().block(ic, bb.jc + jr, mc, cols);
                        let bsrc = BBlock::Packed(panels);
                        macro_kernel::<T, K>(bb.kc, abuf, bsrc, alpha, bb.beta, cp)
                    }
                });
            });
        })
    });
}

/// Packs block `bb` of B into `dst` (`bb.nc / NR` panels) for the threads to share. A plain
/// matrix (`b_mat`, the same matrix as `b`) is packed by all threads, each a run of whole
/// panels into its own part of `dst`; any other source, or a block too narrow to share out,
/// by the calling thread.
fn pack_b_shared<T: Scalar>(
    b: &dyn PackB<T>,
    b_mat: Option<Shared<MatRef<T>>>,
    bb: BlockB<T>,
    nr: usize,
    threads: usize,
    dst: &mut [T],
) {
    let panels = bb.nc.div_ceil(nr);
    let Some(b_mat) = b_mat.filter(|_| panels >= 2 * threads) else {
        return b.pack(bb.pc, bb.kc, bb.jc, bb.nc, nr, dst);
    };
    let cols_per = panels.div_ceil(threads) * nr;
    dst[..panels * nr * bb.kc]
        .par_chunks_mut(cols_per * bb.kc)
        .enumerate()
        .for_each(|(i, part)| {
            let j = i * cols_per;
            let cols = cols_per.min(bb.nc - j);
            // SAFETY: the block is inside B (j + cols <= nc), which the driver's contract keeps
            // readable; `part` holds its cols/NR panels, and `pack_b` checks the length.
            unsafe { pack_b(b_mat.get().block(bb.pc, bb.jc + j, bb.kc, cols), nr, part) };
        });
}

/// The row pieces of C in a parallel product: whole `MR`-row tiles, at most `MC` rows each,
/// their number a multiple of the thread count (when C has that many tiles), and their sizes
/// within one tile of each other, so that the threads get equal work.
#[derive(Clone, Copy, Debug)]
struct RowPieces {
    m: usize,
    mr: usize,
    tiles: usize,
    count: usize,
}

impl RowPieces {
    fn new(m: usize, mr: usize, mc: usize, threads: usize) -> Self {
        let tiles = m.div_ceil(mr);
        let count = tiles.div_ceil(mc / mr).next_multiple_of(threads).min(tiles);
        RowPieces {
            m,
            mr,
            tiles,
            count,
        }
    }

    /// `(first row, rows)` of piece `i < count`.
    fn piece(&self, i: usize) -> (usize, usize) {
        let first = i * self.tiles / self.count * self.mr;
        let end = ((i + 1) * self.tiles / self.count * self.mr).min(self.m);
        (first, end - first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_pieces_cover_c_in_balanced_tile_runs() {
        for (m, mr, mc, threads) in [
            (512, 6, 168, 2),
            (1, 6, 168, 2),
            (13, 6, 168, 4),
            (1000, 8, 64, 3),
            (263, 6, 168, 2),
        ] {
            let rows = RowPieces::new(m, mr, mc, threads);
            let tiles = m.div_ceil(mr);
            if tiles >= threads {
                assert_eq!(rows.count % threads, 0, "{m} rows, {threads} threads");
            }
            let mut next = 0;
            let sizes: Vec<usize> = (0..rows.count)
                .map(|i| {
                    let (first, len) = rows.piece(i);
                    assert_eq!(first, next, "pieces are contiguous");
                    assert!(
                        first % mr == 0 && len >= 1 && len <= mc,
                        "piece {i}: {len} rows"
                    );
                    next = first + len;
                    len.div_ceil(mr)
                })
                .collect();
            assert_eq!(next, m, "pieces cover C");
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{m} rows: tiles per piece {sizes:?}");
        }
    }
}
