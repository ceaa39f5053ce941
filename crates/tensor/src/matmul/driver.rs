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
//! threads meet twice per B block: after packing it and after using it. When all of B fits in
//! the packing buffer in one block of columns and B is a plain matrix (a 512³ product, fc1's
//! products), they do not meet at all: the product is one parallel region over the row pieces,
//! and each panel of B is packed by the first piece that needs it ([`SharedB`]). Both drivers
//! take their block sizes and loop bounds from one `Plan`.
//!
//! Every element of C is summed over `k` in the same order (KC blocks in order, steps in order
//! inside each block) however the loops are cut, so a product split across threads by rows or
//! columns of C gives bit-identical results.

use super::cache::{cache_sizes, Blocking};
use super::kernel::{ATile, BPanels, MicroKernel};
use super::layout::{MatMut, MatRef};
use super::pack::{pack_a, pack_b};
use super::shared_b::SharedB;
use super::source::{MatrixB, PackB};
use crate::scratch::{with_thread_buffer, ThreadBuffer};
use crate::Scalar;
use rayon::prelude::*;
use std::cell::RefCell;
use std::thread::LocalKey;

thread_local! {
    /// This thread's packed panels of A (`crate::scratch`).
    static SCRATCH_A: ThreadBuffer = const { RefCell::new(Vec::new()) };
    /// This thread's packed panels of B: in a parallel product the calling thread holds the
    /// shared packed B while every thread, itself included, packs its own A blocks.
    static SCRATCH_B: ThreadBuffer = const { RefCell::new(Vec::new()) };
}

/// Which of the thread's two packing buffers.
#[derive(Clone, Copy, Debug)]
enum Packed {
    /// Panels of A.
    A,
    /// Panels of B.
    B,
}

/// Calls `f` with a slice of `len` elements of the thread's packing buffer `which`, grown to
/// at least `most` when it grows ([`with_thread_buffer`]).
fn with_packing_buffer<T: Scalar, R>(
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
/// `b_in_place` is B itself when it is a plain matrix: the driver may then read B's contiguous
/// rows directly instead of packing them ([`Direct`]).
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
    let plan = Plan::new::<T, K>(a.cols);
    let direct = Direct::choose::<K>((a.rows, a.cols), b_in_place, plan.blk.mc, 1);
    // SAFETY: forwarded contract; `direct.b` is `b_in_place` or nothing.
    unsafe { gemm_serial_as::<T, K>(direct, alpha, a, b, beta, c) }
}

/// [`gemm_serial`] with the choice of what to read in place made by the caller.
///
/// # Safety
/// As for [`gemm_serial`], with `direct.b`, if given, describing the same matrix as `b`.
unsafe fn gemm_serial_as<T: Scalar, K: MicroKernel<T>>(
    direct: Direct<T>,
    alpha: T,
    a: MatRef<T>,
    b: &dyn PackB<T>,
    beta: T,
    c: MatMut<T>,
) {
    let (m, k) = (a.rows, a.cols);
    let n = b.dim().1;
    debug_assert_eq!(b.dim(), (k, n));
    let (mr, nr) = (K::MR, K::NR);
    let plan = Plan::new::<T, K>(k);
    let a_len = if direct.a {
        0
    } else {
        plan.a_len(plan.blk.mc.min(m), mr)
    };
    let b_len = match direct.b {
        Some(_) => nr * plan.kc_max,
        None => plan.b_len(n, nr),
    };
    with_packing_buffer::<T, _>(Packed::B, b_len, plan.most_b, |bbuf| {
        with_packing_buffer::<T, _>(Packed::A, a_len, plan.most_a, |abuf| {
            plan.for_each_b_block(k, n, beta, |bb| {
                // SAFETY: the block is inside B (loop bounds), readable by the contract.
                let in_place = direct
                    .b
                    .map(|bm| unsafe { bm.block(bb.pc, bb.jc, bb.kc, bb.nc) });
                if in_place.is_none() {
                    // bbuf holds nc/NR panels (b_len).
                    b.pack(bb.pc, bb.kc, bb.jc, bb.nc, nr, bbuf);
                }
                for ic in (0..m).step_by(plan.blk.mc) {
                    let mc = plan.blk.mc.min(m - ic);
                    // SAFETY: the block is inside A; abuf holds mc/MR panels (a_len) when A is
                    // packed.
                    let asrc =
                        unsafe { ABlock::new(a.block(ic, bb.pc, mc, bb.kc), direct.a, mr, abuf) };
                    let bsrc = match in_place {
                        None => BBlock::Packed(&*bbuf),
                        Some(bm) => BBlock::InPlace(bm, &mut *bbuf),
                    };
                    // SAFETY: the C block is inside C, unaliased (contract); the in-place B
                    // block is readable with contiguous rows (`Direct::choose`).
                    unsafe {
                        let cb = c.block(ic, bb.jc, mc, bb.nc);
                        macro_kernel::<T, K>(bb.kc, asrc, bsrc, alpha, bb.beta, cb)
                    };
                }
            })
        })
    });
}

/// Up to this depth A is read in place and B read in place whenever its rows are contiguous:
/// with so few steps per tile, packing (a transposing copy of A, a copy of B) costs as much as
/// the tiles it feeds, while the unpacked rows of one row tile of A (`MR · SMALL_K` values)
/// and a panel of B (`SMALL_K · NR`) stay in L1 across the tiles that reuse them.
const SMALL_K: usize = 16;

/// Which operands the packed route reads in place instead of packing: the one place this is
/// decided, for both drivers. Reading in place changes only where the kernel loads from, never
/// the bits of the result.
#[derive(Clone, Copy, Debug)]
struct Direct<T> {
    /// A is read in place (any strides).
    a: bool,
    /// B itself, when read in place (its rows contiguous).
    b: Option<MatRef<T>>,
}

impl<T> Direct<T> {
    /// For an `m × k` A and B (`b_in_place`, when B is a plain matrix) with blocks of `mc` rows
    /// of A, on `threads` threads: A in place up to depth [`SMALL_K`]. B in place when its rows
    /// are contiguous and either C has at most `K::DIRECT_B_MAX_M` rows and A fits in one block
    /// of `mc` rows (each B panel is then read from memory once either way, and packing it would
    /// only add a copy), or the depth is small and the product runs on one thread (in parallel,
    /// a B read in place is cut by columns, too few pieces for a tall C).
    fn choose<K: MicroKernel<T>>(
        (m, k): (usize, usize),
        b_in_place: Option<MatRef<T>>,
        mc: usize,
        threads: usize,
    ) -> Self {
        let small = k <= SMALL_K;
        let few_rows = m <= K::DIRECT_B_MAX_M.min(mc);
        Direct {
            a: small,
            b: b_in_place.filter(|b| b.cs == 1 && (few_rows || small && threads == 1)),
        }
    }
}

/// Where the micro-kernel reads A for one `mc × kc` block.
#[derive(Clone, Copy)]
enum ABlock<'a, T> {
    /// Packed `MR`-row panels.
    Packed(&'a [T]),
    /// A itself, any strides.
    InPlace(MatRef<T>),
}

impl<'a, T: Scalar> ABlock<'a, T> {
    /// The block `blk` of A, read in place when `in_place`, else packed into `buf`.
    ///
    /// # Safety
    /// `blk` describes readable memory; when packing, `buf` holds `blk.rows / mr` panels
    /// (checked).
    unsafe fn new(blk: MatRef<T>, in_place: bool, mr: usize, buf: &'a mut [T]) -> Self {
        if in_place {
            return ABlock::InPlace(blk);
        }
        // SAFETY: forwarded contract.
        unsafe { pack_a(blk, mr, buf) };
        ABlock::Packed(buf)
    }

    /// The A operand of the tile whose first row is `ir` (`ir < mc`, a multiple of `mr`).
    fn tile(self, ir: usize, kc: usize, mr: usize) -> ATile<T> {
        match self {
            ABlock::Packed(buf) => ATile::panel(buf[ir / mr * kc * mr..].as_ptr(), mr),
            ABlock::InPlace(blk) => ATile {
                ptr: blk.ptr.wrapping_offset(ir as isize * blk.rs),
                rs: blk.rs,
                ks: blk.cs,
            },
        }
    }
}

/// Where the micro-kernel reads B for one `kc × nc` block.
enum BBlock<'b, T> {
    /// Packed `NR`-column panels.
    Packed(&'b [T]),
    /// B itself, rows contiguous; a narrow last panel is padded into the scratch slice.
    InPlace(MatRef<T>, &'b mut [T]),
}

impl<T: Scalar> BBlock<'_, T> {
    /// The `nr`-column panels of the `kc × nc` block, each readable in whole vectors of
    /// `lanes`: the last panel of an in-place block is first padded into the scratch slice
    /// when its width is not a multiple of `lanes`.
    ///
    /// # Safety
    /// An in-place block is readable; its scratch holds one panel (checked).
    unsafe fn panels(&mut self, kc: usize, nc: usize, nr: usize, lanes: usize) -> BPanels<T> {
        let last = (nc - 1) / nr;
        let (ptr, next, ks) = match self {
            BBlock::Packed(buf) => (buf.as_ptr(), (kc * nr) as isize, nr as isize),
            BBlock::InPlace(bb, _) => (bb.ptr, nr as isize, bb.rs),
        };
        let (last_ptr, last_ks) = match self {
            BBlock::InPlace(bb, edge) if !(nc - last * nr).is_multiple_of(lanes) => {
                // SAFETY: the last panel is inside B (contract); `pack_b` checks the length.
                unsafe { pack_b(bb.block(0, last * nr, kc, nc - last * nr), nr, edge) };
                (edge.as_ptr(), nr as isize)
            }
            _ => (ptr.wrapping_offset(last as isize * next), ks),
        };
        BPanels {
            ptr,
            next,
            ks,
            last: last_ptr,
            last_ks,
        }
    }
}

/// Runs the micro-kernel over every tile of the block `c` (`mc × nc`): A from `a` (`mc / MR`
/// packed panels of `kc` steps, or the `mc × kc` block in place), B from `b` (a `kc × nc`
/// block).
///
/// Tiles go down each column panel of B in turn, which then stays in L1 while A's tiles
/// stream past, except when the whole B block fits in L1 (and stays there anyway): then along
/// each row tile of A, so that each cache line of C is written by neighbouring tiles while it
/// is still in L1, and a kernel runs a whole row strip per call.
///
/// # Safety
/// `c` is writable and unaliased; an in-place B block is readable and has `cs == 1`, and its
/// scratch holds one panel; a packed one holds `nc / NR` panels; a packed `a` holds `mc / MR`
/// panels, an in-place one is readable; the CPU supports `K`'s instruction set.
unsafe fn macro_kernel<T: Scalar, K: MicroKernel<T>>(
    kc: usize,
    a: ABlock<'_, T>,
    mut b: BBlock<'_, T>,
    alpha: T,
    beta: T,
    c: MatMut<T>,
) {
    let (mr, nr) = (K::MR, K::NR);
    let (mc, nc) = (c.rows, c.cols);
    // SAFETY: forwarded contract.
    let panels = unsafe { b.panels(kc, nc, nr, K::LANES) };
    // Each call below: the A tile's rows are readable for kc steps (a packed panel, or rows
    // ir..ir + rows of the readable block); B's panels hold kc steps of whole vectors (packed,
    // padded, or in place with widths a multiple of LANES); the C tiles are inside the block;
    // K's ISA is supported (caller).
    let b_bytes = kc * nc.next_multiple_of(nr) * std::mem::size_of::<T>();
    if b_bytes <= cache_sizes().l1d {
        for ir in (0..mc).step_by(mr) {
            let (at, rows) = (a.tile(ir, kc, mr), mr.min(mc - ir));
            // SAFETY: see above; the strip is rows ir..ir + rows of the block.
            unsafe {
                K::strip(
                    kc,
                    at,
                    panels,
                    alpha,
                    beta,
                    c.at(ir, 0),
                    c.rs,
                    c.cs,
                    rows,
                    nc,
                )
            };
        }
        return;
    }
    for jr in (0..nc).step_by(nr) {
        let (bp, b_ks) = panels.panel(jr / nr, nc.div_ceil(nr));
        for ir in (0..mc).step_by(mr) {
            let (at, rows, cols) = (a.tile(ir, kc, mr), mr.min(mc - ir), nr.min(nc - jr));
            // SAFETY: see above; the tile is rows ir.., columns jr.. of the block.
            unsafe {
                K::tile(
                    kc,
                    at,
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
    let direct = Direct::choose::<K>((m, k), b_in_place, plan.blk.mc, threads);
    if let Some(bm) = direct.b {
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
    let one_region = col_pieces == 1
        && n <= plan.blk.nc
        && SharedB::<T>::fits(k, n, plan.blk.kc, nr)
        && SharedB::<T>::len(k, n, nr) <= plan.most_b;
    if let Some(bm) = b_in_place.filter(|_| one_region) {
        // SAFETY: forwarded contract; `bm` is B itself.
        return unsafe {
            gemm_one_region::<T, K>((alpha, beta), a, bm, c, (&plan, rows), direct.a)
        };
    }
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
                    let piece = Piece {
                        rows: (ic, mc),
                        cols: (bb.jc + jr, cols),
                        a_in_place: direct.a,
                    };
                    // SAFETY: the pieces are disjoint blocks of C, so no two threads write the
                    // same element; the panels cover the piece's columns; abuf holds the
                    // block's panels when A is packed; the rest is the caller's contract.
                    unsafe {
                        piece_product::<T, K>(alpha, (a.get(), c.get()), bb, piece, panels, abuf)
                    }
                });
            });
        })
    });
}

/// [`gemm_parallel`] as one parallel region: each row piece of C runs the whole product, every
/// block of B taken from one packing of all of B that the pieces share ([`SharedB`]: each
/// panel packed by the first piece that needs it), each piece packing its own rows of A
/// (read in place with `a_in_place`). The same bits.
///
/// # Safety
/// As for [`gemm_serial`], with `b_mat` the plain matrix B; `b_mat` packs into one buffer of
/// at most `plan.most_b` scalars, in at most [`MAX_PANELS`](super::shared_b::MAX_PANELS)
/// panels, and `rows` cuts C's rows only.
unsafe fn gemm_one_region<T: Scalar, K: MicroKernel<T>>(
    (alpha, beta): (T, T),
    a: MatRef<T>,
    b_mat: MatRef<T>,
    c: MatMut<T>,
    (plan, rows): (&Plan, RowPieces),
    a_in_place: bool,
) {
    let (k, n, mr, nr) = (b_mat.rows, b_mat.cols, K::MR, K::NR);
    with_packing_buffer::<T, _>(
        Packed::B,
        SharedB::<T>::len(k, n, nr),
        plan.most_b,
        |bbuf| {
            // SAFETY: B is readable for the call (contract); bbuf is this call's alone.
            let shared = unsafe { SharedB::new(b_mat, bbuf, nr) };
            let (a, c) = (Shared(a), Shared(c));
            (0..rows.count).into_par_iter().for_each(|piece| {
                let (ic, mc) = rows.piece(piece);
                // Each piece starts packing at its own share of the panels.
                let first = piece * n.div_ceil(nr) / rows.count;
                let a_len = if a_in_place { 0 } else { plan.a_len(mc, mr) };
                with_packing_buffer::<T, _>(Packed::A, a_len, plan.most_a, |abuf| {
                    plan.for_each_b_block(k, n, beta, |bb| {
                        let panels = shared.block(bb.pc / plan.blk.kc, (bb.pc, bb.kc), first);
                        let piece = Piece {
                            rows: (ic, mc),
                            cols: (0, n),
                            a_in_place,
                        };
                        // SAFETY: the pieces are disjoint rows of C; `panels` holds the block's
                        // panels, abuf the A block's when A is packed; the rest is the
                        // caller's contract.
                        unsafe {
                            piece_product::<T, K>(
                                alpha,
                                (a.get(), c.get()),
                                bb,
                                piece,
                                panels,
                                abuf,
                            )
                        }
                    });
                });
            });
        },
    );
}

/// Where one piece of a parallel product writes C: `rows` and `cols` as (first, count), and
/// whether it reads A in place instead of packing it.
#[derive(Clone, Copy, Debug)]
struct Piece {
    rows: (usize, usize),
    cols: (usize, usize),
    a_in_place: bool,
}

/// One piece's share of block `bb`: its rows of A's block (packed into `abuf` unless read in
/// place) times `panels` (B's packed panels of the piece's columns), into its block of C.
///
/// # Safety
/// The A rows and the C block are inside A and C, and no other thread writes that C block;
/// `panels` holds the piece's columns of block `bb`, `abuf` the A rows' panels when A is
/// packed; the CPU supports `K`'s instruction set.
unsafe fn piece_product<T: Scalar, K: MicroKernel<T>>(
    alpha: T,
    (a, c): (MatRef<T>, MatMut<T>),
    bb: BlockB<T>,
    piece: Piece,
    panels: &[T],
    abuf: &mut [T],
) {
    let ((ic, mc), (jc, cols)) = (piece.rows, piece.cols);
    // SAFETY: the caller's contract.
    unsafe {
        let ablk = a.block(ic, bb.pc, mc, bb.kc);
        let asrc = ABlock::new(ablk, piece.a_in_place, K::MR, abuf);
        let cp = c.block(ic, jc, mc, cols);
        macro_kernel::<T, K>(bb.kc, asrc, BBlock::Packed(panels), alpha, bb.beta, cp)
    }
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
    use crate::matmul::kernel_portable::Portable;
    use ndarray::{Array2, ArrayView2};

    /// Deterministic values in [-1, 1) that are not short binary fractions.
    fn values<T: Scalar>(rows: usize, cols: usize, seed: usize) -> Array2<T> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            let x = ((i * 131 + j * 71 + seed * 17) % 97) as f64 / 48.5 - 1.0;
            T::from(x + 1e-3 * (j % 7) as f64).unwrap()
        })
    }

    /// `C = 0.75·A·B − 0.5·C` on the serial driver with kernel `K`, reading in place what
    /// `direct` says (`direct.b` is B's own descriptor or nothing) or packing everything.
    fn serial<T: Scalar, K: MicroKernel<T>>(
        a: ArrayView2<'_, T>,
        b: ArrayView2<'_, T>,
        c0: &Array2<T>,
        in_place: bool,
    ) -> Array2<T> {
        let mut c = c0.clone();
        // C written through a transposed view: the strided-C write-out.
        let mut cv = c.view_mut().reversed_axes();
        let src = MatrixB::new(&b);
        let plan = Plan::new::<T, K>(a.ncols());
        let (am, cm) = (MatRef::from_view(&a), MatMut::from_view(&mut cv));
        let direct = match in_place {
            true => Direct::choose::<K>(a.dim(), Some(src.as_mat()), plan.blk.mc, 1),
            false => Direct { a: false, b: None },
        };
        let (alpha, beta) = (T::from(0.75).unwrap(), T::from(-0.5).unwrap());
        // SAFETY: the descriptors come from live views of matching shapes; the caller checks
        // that this CPU runs K.
        unsafe { gemm_serial_as::<T, K>(direct, alpha, am, &src, beta, cm) };
        c
    }

    /// Reading A and B in place gives the same bits as packing them, with kernel `K`: shallow
    /// products (both in place, A row-major or transposed, B with contiguous rows), with one
    /// row or column, with odd sizes and edge tiles, and with B too wide for one pass in L1.
    fn in_place_matches_packing<T: Scalar, K: MicroKernel<T>>(name: &str) {
        for (m, n, k) in [
            (1, 1, 1),
            (37, 53, 7),
            (150, 100, 16),
            (256, 84, 10),
            (5, 900, 3),
        ] {
            let (a, a_t) = (values::<T>(m, k, 1), values::<T>(k, m, 2));
            let b = values::<T>(k, n, 3);
            let c0 = values::<T>(n, m, 4);
            for a in [a.view(), a_t.t()] {
                let (direct, packed) = (
                    serial::<T, K>(a, b.view(), &c0, true),
                    serial::<T, K>(a, b.view(), &c0, false),
                );
                // f32 → f64 is exact: equal f64 bits mean equal bits.
                let bits = |x: &T| x.to_f64().unwrap().to_bits();
                let same = direct.iter().zip(&packed).all(|(x, y)| bits(x) == bits(y));
                let strides = a.strides();
                assert!(
                    same,
                    "{name} {m}x{n}x{k}, A strides {strides:?}: in place differs"
                );
            }
        }
    }

    #[test]
    fn reading_in_place_gives_the_same_bits_as_packing() {
        in_place_matches_packing::<f32, Portable<4, 8>>("portable f32");
        in_place_matches_packing::<f64, Portable<4, 4>>("portable f64");
        #[cfg(target_arch = "x86_64")]
        {
            use crate::matmul::kernel_simd;
            use crate::Tier;
            if Tier::Avx2.is_supported() {
                in_place_matches_packing::<f32, kernel_simd::Avx2>("avx2");
                in_place_matches_packing::<f32, kernel_simd::Avx2Narrow>("avx2 8x8");
            } else {
                eprintln!("skipped avx2: this CPU has no AVX2+FMA");
            }
            if Tier::Avx512.is_supported() {
                in_place_matches_packing::<f32, kernel_simd::Avx512>("avx512");
            } else {
                eprintln!("skipped avx512: this CPU has no AVX-512F");
            }
        }
    }

    #[test]
    fn shallow_products_read_in_place() {
        let (a, b) = (values::<f32>(150, 16, 1), values::<f32>(16, 100, 2));
        let bm = MatRef::from_view(&b.view());
        let shallow = Direct::choose::<Portable<4, 8>>(a.dim(), Some(bm), 168, 1);
        assert!(
            shallow.a && shallow.b.is_some(),
            "150x100x16 reads A and B in place"
        );
        let deep = Direct::choose::<Portable<4, 8>>((150, 17), Some(bm), 168, 1);
        assert!(!deep.a && deep.b.is_none(), "150x100x17 packs both");
        let parallel = Direct::choose::<Portable<4, 8>>(a.dim(), Some(bm), 168, 2);
        assert!(
            parallel.a && parallel.b.is_none(),
            "a parallel tall product packs B"
        );
    }

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
