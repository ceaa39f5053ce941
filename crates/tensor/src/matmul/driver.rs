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
//! Every element of C is summed over `k` in the same order (KC blocks in order, steps in order
//! inside each block) however the loops are cut, so a product split across threads by rows or
//! columns of C gives bit-identical results.

use super::kernel::MicroKernel;
use super::layout::{MatMut, MatRef};
use super::pack::{pack_a, pack_b};
use super::scratch::with_packing_buffers;
use super::source::PackB;
use crate::Scalar;

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
    // With few rows of C, each B element is used only `m` times: reading B in place (when its
    // rows are contiguous) beats copying it. Only edge panels narrower than a vector are packed.
    let direct_b = b_in_place.filter(|bm| bm.cs == 1 && m <= K::DIRECT_B_MAX_M);
    let kc_max = K::KC.min(k);
    let a_len = K::MC.min(m).div_ceil(mr) * mr * kc_max;
    let b_len = if direct_b.is_some() {
        nr * kc_max
    } else {
        K::NC.min(n).div_ceil(nr) * nr * kc_max
    };

    // The most any call with this kernel can ask for: the first call on a thread reserves it all,
    // so a thread that meets a bigger product later (rayon decides which thread runs what) never
    // reallocates in the middle of training.
    let most = K::MC.div_ceil(mr) * mr * K::KC + K::NC.div_ceil(nr) * nr * K::KC;
    with_packing_buffers::<T, _>(a_len, b_len, most, |abuf, bbuf| {
        for jc in (0..n).step_by(K::NC) {
            let nc = K::NC.min(n - jc);
            for pc in (0..k).step_by(K::KC) {
                let kc = K::KC.min(k - pc);
                let beta_p = if pc == 0 { beta } else { T::one() };
                // SAFETY: the block is inside B (loop bounds), readable by the contract.
                let bblk = direct_b.map(|bm| unsafe { bm.block(pc, jc, kc, nc) });
                if bblk.is_none() {
                    // bbuf holds nc/NR panels (b_len).
                    b.pack(pc, kc, jc, nc, nr, bbuf);
                }
                for ic in (0..m).step_by(K::MC) {
                    let mc = K::MC.min(m - ic);
                    // SAFETY: the block is inside A; abuf holds mc/MR panels (a_len).
                    unsafe { pack_a(a.block(ic, pc, mc, kc), mr, abuf) };
                    for jr in (0..nc).step_by(nr) {
                        let cols = nr.min(nc - jr);
                        let (bp, b_ks) = match bblk {
                            None => (bbuf[jr / nr * kc * nr..].as_ptr(), nr as isize),
                            // SAFETY: column jr of the block is inside B.
                            Some(bb) if cols % K::LANES == 0 => {
                                (unsafe { bb.block(0, jr, kc, cols).ptr }, bb.rs)
                            }
                            Some(bb) => {
                                // Narrow edge panel: the kernel reads whole vectors, so pad a
                                // copy. SAFETY: the edge block is inside B; bbuf holds one panel.
                                unsafe { pack_b(bb.block(0, jr, kc, cols), nr, bbuf) };
                                (bbuf.as_ptr(), nr as isize)
                            }
                        };
                        for ir in (0..mc).step_by(mr) {
                            let rows = mr.min(mc - ir);
                            // SAFETY: the A panel holds kc·MR packed values; the B panel kc
                            // steps of whole vectors (packed, or in place with cols a multiple
                            // of LANES); the C tile is inside C; K's ISA is supported (caller).
                            unsafe {
                                K::tile(
                                    kc,
                                    abuf[ir / mr * kc * mr..].as_ptr(),
                                    bp,
                                    b_ks,
                                    alpha,
                                    beta_p,
                                    c.at(ic + ir, jc + jr),
                                    c.rs,
                                    c.cs,
                                    rows,
                                    cols,
                                )
                            };
                        }
                    }
                }
            }
        }
    });
}
