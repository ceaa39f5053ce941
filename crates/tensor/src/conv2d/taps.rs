//! The forward kernel of the stride-1 convolutions: the direct method's (conv1) and the shifted
//! method's (conv2) forward passes are both, for a block of `KB` output channels `k0 + b` and a
//! run of `n` consecutive outputs `q`,
//!
//! ```text
//! y[k0+b][q] = Σ_t wt[t][b] · src[off_t + q]        off_t = c·plane + u·row + v
//! ```
//!
//! over the taps `t = (c, u, v)` of a [`Taps`] grid, in that order, with the weights regrouped
//! tap-major ([`regroup_weights`]): the `KB` weights that one input vector meets are adjacent.
//! Every output is one chain of multiply-adds over the taps, in tap order; the bias starts the
//! chain ([`BiasAt::First`]) or is added to its end ([`BiasAt::Last`], the order of a `gemm`
//! `1·acc + 1·bias`). The reads stay inside `src[.. last offset + n]`: a source may end exactly
//! there.
//!
//! The generic code here (fixed arrays of `KB × FW` accumulators) is compiled for AVX2 + FMA
//! (fused multiply-adds) and for the baseline target (separate multiply and add), picked at run
//! time by [`Tier::active`] like `gemm`'s kernels (an AVX-512 CPU runs the AVX2 build);
//! `f32` on AVX2 runs the intrinsics of `taps_simd.rs`, which keep every accumulator in a
//! register and give the same bits as the generic fused code.

#[cfg(target_arch = "x86_64")]
use super::taps_simd;
use crate::{Scalar, Tier};
use ndarray::ArrayView1;

/// The input offsets `c·plane + u·row + v` of the taps, for `c < planes`, `u < rows`,
/// `v < cols`, in that order.
#[derive(Clone, Copy, Debug)]
pub(super) struct Taps {
    pub(super) planes: usize,
    pub(super) plane: usize,
    pub(super) rows: usize,
    pub(super) row: usize,
    pub(super) cols: usize,
}

impl Taps {
    /// The number of taps.
    pub(super) fn len(&self) -> usize {
        self.planes * self.rows * self.cols
    }

    /// The input offset of tap `t` (numbered in the grid's order), `c·plane + u·row + v`.
    pub(super) fn offset(&self, t: usize) -> usize {
        let (c, uv) = (t / (self.rows * self.cols), t % (self.rows * self.cols));
        c * self.plane + uv / self.cols * self.row + uv % self.cols
    }

    /// The source scalars that `n` outputs read: the last tap's offset plus `n` (0 without
    /// taps).
    pub(super) fn reach(&self, n: usize) -> usize {
        match self.len() {
            0 => 0,
            _ => (self.planes - 1) * self.plane + (self.rows - 1) * self.row + self.cols - 1 + n,
        }
    }
}

/// Where the bias enters each output's chain of multiply-adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BiasAt {
    /// The chain starts from the bias.
    First,
    /// The chain starts from 0 and the bias is added to its end.
    Last,
}

/// One block's work: `n` outputs of `KB` channels from `src` with weights `wt` (`[taps][KB]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Block<'a, T, const KB: usize> {
    pub(super) taps: Taps,
    pub(super) src: &'a [T],
    pub(super) wt: &'a [T],
    /// The block's bias, `None` for none.
    pub(super) bias: Option<[T; KB]>,
    pub(super) at: BiasAt,
    pub(super) n: usize,
}

/// Scalars of the regrouped weights of `k` channels with `taps` taps each.
pub(super) fn weights_len<const KB: usize>(k: usize, taps: usize) -> usize {
    k.next_multiple_of(KB) * taps
}

/// Writes `w` (`[k, taps]`) as `[k/KB, taps, KB]` into `wt` ([`weights_len`]). A short last
/// block repeats channel `k − 1` (computed, never stored).
pub(super) fn regroup_weights<T: Scalar, const KB: usize>(w: &[T], taps: usize, wt: &mut [T]) {
    let k = w.len() / taps;
    for (k0, block) in (0..k).step_by(KB).zip(wt.chunks_exact_mut(KB * taps)) {
        for (t, lanes) in block.chunks_exact_mut(KB).enumerate() {
            for (b, l) in lanes.iter_mut().enumerate() {
                *l = w[(k0 + b).min(k - 1) * taps + t];
            }
        }
    }
}

/// The bias of the block of channels `k0..k0+KB` (the last channel repeated past `k`).
pub(super) fn block_bias<T: Scalar, const KB: usize>(
    bias: Option<ArrayView1<'_, T>>,
    k0: usize,
) -> Option<[T; KB]> {
    bias.map(|b| std::array::from_fn(|j| b[(k0 + j).min(b.len() - 1)]))
}

/// Writes the block's `n` outputs of its first `kb ≤ KB` channels to `y[b·stride + q]`, on
/// `isa`.
///
/// # Panics
/// If `src` is shorter than the taps reach, `wt` than `taps·KB` or `y` than the outputs.
pub(super) fn forward<T: Scalar, const KB: usize>(
    isa: Tier,
    blk: &Block<'_, T, KB>,
    (y, stride, kb): (&mut [T], usize, usize),
) {
    assert!(
        blk.src.len() >= blk.taps.reach(blk.n),
        "taps read past the source"
    );
    assert!(blk.wt.len() >= blk.taps.len() * KB, "too few weights");
    assert!(
        kb <= KB && y.len() >= (kb - 1) * stride + blk.n,
        "output too short"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m256, __m512};
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512<T: Scalar, const KB: usize>(b: &Block<'_, T, KB>, y: (&mut [T], usize, usize)) {
            let blk = taps_simd::as_f32(b).expect("the plan runs f32 only at 16 lanes");
            let y = (T::as_f32_slice_mut(y.0).expect("f32"), y.1, y.2);
            // SAFETY: the bounds asserted by `forward`, and AVX-512F is enabled here.
            unsafe { taps_simd::forward::<__m512, KB>(&blk, y) }
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Scalar, const KB: usize>(b: &Block<'_, T, KB>, y: (&mut [T], usize, usize)) {
            if let Some(blk) = taps_simd::as_f32(b) {
                let y = (T::as_f32_slice_mut(y.0).expect("f32"), y.1, y.2);
                // SAFETY: the bounds asserted by `forward`, and AVX2 + FMA are enabled here.
                return unsafe { taps_simd::forward::<__m256, KB>(&blk, y) };
            }
            columns::<T, KB, 16, true>(b, y)
        }
        // SAFETY: `isa` is a tier the CPU has (the caller's), and the plan's kernel needs no
        // more than it.
        match plan::<T>(isa) {
            TapsKernel::Avx512 => return unsafe { avx512(blk, (y, stride, kb)) },
            TapsKernel::Avx2 => return unsafe { avx2(blk, (y, stride, kb)) },
            TapsKernel::Baseline => {}
        }
    }
    let _ = isa;
    columns::<T, KB, 8, false>(blk, (y, stride, kb))
}

/// The kernels of [`forward`] (elsewhere than on x86-64 only the tests ask for them: every
/// tier is portable there).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TapsKernel {
    /// The generic code compiled for the baseline target (separate multiply and add).
    Baseline,
    /// `f32`: the vector kernel at 8 lanes (`taps_simd.rs`); other scalars: the generic code
    /// compiled for AVX2 + FMA. The same bits.
    Avx2,
    /// `f32`: the vector kernel at 16 lanes, the same bits as at 8.
    Avx512,
}

impl crate::tier::Needs for TapsKernel {
    fn needs(&self) -> Tier {
        match self {
            TapsKernel::Baseline => Tier::Portable,
            TapsKernel::Avx2 => Tier::Avx2,
            TapsKernel::Avx512 => Tier::Avx512,
        }
    }
}

/// The kernel [`forward`] runs for `T` on `tier`: 16 lanes for `f32` on AVX-512 (measured
/// faster there: docs/performance.md), the AVX2 build from the AVX2 tier up otherwise.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn plan<T: Scalar>(tier: Tier) -> TapsKernel {
    let f32s = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
    match tier {
        Tier::Avx512 if f32s => TapsKernel::Avx512,
        Tier::Avx512 | Tier::Avx2 => TapsKernel::Avx2,
        Tier::Portable => TapsKernel::Baseline,
    }
}

/// The outputs in column blocks of `FW`, then of 8, then one by one (never reading past the
/// last output's taps).
#[inline(always)]
fn columns<T: Scalar, const KB: usize, const FW: usize, const FMA: bool>(
    blk: &Block<'_, T, KB>,
    (y, stride, kb): (&mut [T], usize, usize),
) {
    let mut q0 = 0;
    while q0 + FW <= blk.n {
        store(blk, block::<T, KB, FW, FMA>(blk, q0), (y, stride, kb), q0);
        q0 += FW;
    }
    while q0 + 8 <= blk.n {
        store(blk, block::<T, KB, 8, FMA>(blk, q0), (y, stride, kb), q0);
        q0 += 8;
    }
    for q in q0..blk.n {
        store(blk, block::<T, KB, 1, FMA>(blk, q), (y, stride, kb), q);
    }
}

/// `acc[b][l] = Σ_t wt[t][b] · src[off_t + q0 + l]` (from the bias with [`BiasAt::First`]),
/// for `l < FW`: one chain per output, in tap order.
#[inline(always)]
fn block<T: Scalar, const KB: usize, const FW: usize, const FMA: bool>(
    blk: &Block<'_, T, KB>,
    q0: usize,
) -> [[T; FW]; KB] {
    let start = match (blk.bias, blk.at) {
        (Some(bias), BiasAt::First) => bias,
        _ => [T::zero(); KB],
    };
    let mut acc: [[T; FW]; KB] = start.map(|s| [s; FW]);
    let t = &blk.taps;
    let mut wt = blk.wt.chunks_exact(KB);
    for c in 0..t.planes {
        for u in 0..t.rows {
            let row = &blk.src[c * t.plane + u * t.row + q0..][..FW + t.cols - 1];
            // cols windows of FW inputs, each with its KB weights
            for (xs, wv) in row.windows(FW).zip(&mut wt) {
                for (a, &wv) in acc.iter_mut().zip(wv) {
                    for (a, &x) in a.iter_mut().zip(xs) {
                        *a = if FMA { wv.mul_add(x, *a) } else { wv * x + *a };
                    }
                }
            }
        }
    }
    acc
}

/// Writes `acc` (plus the bias with [`BiasAt::Last`]) to the outputs `q0..q0+FW` of the first
/// `kb` channels.
#[inline(always)]
fn store<T: Scalar, const KB: usize, const FW: usize>(
    blk: &Block<'_, T, KB>,
    acc: [[T; FW]; KB],
    (y, stride, kb): (&mut [T], usize, usize),
    q0: usize,
) {
    for (b, a) in acc.iter().enumerate().take(kb) {
        let out = &mut y[b * stride + q0..][..FW];
        match (blk.bias, blk.at) {
            (Some(bias), BiasAt::Last) => {
                for (o, &a) in out.iter_mut().zip(a) {
                    *o = a + bias[b];
                }
            }
            _ => out.copy_from_slice(a),
        }
    }
}

/// The generic block kernel with fused multiply-adds, on any CPU: what the `f32` AVX2
/// intrinsics must equal bit for bit.
#[cfg(all(test, target_arch = "x86_64"))]
pub(super) fn forward_fma<const KB: usize>(
    blk: &Block<'_, f32, KB>,
    y: (&mut [f32], usize, usize),
) {
    columns::<f32, KB, 16, true>(blk, y)
}

/// Asserts that `ours` and `want` hold the same bits, naming the first output that differs.
#[cfg(test)]
pub(super) fn same_bits(ours: &[f32], want: &[f32], what: &str) {
    assert_eq!(ours.len(), want.len(), "{what}: lengths");
    let differ = ours
        .iter()
        .zip(want)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    if let Some(i) = differ {
        panic!("{what}: output {i} is {:e}, not {:e}", ours[i], want[i]);
    }
}

/// On every tier, whatever this machine has: the taps kernel needs no more than the tier, the
/// 16-lane `f32` kernel runs on AVX-512 only (measured faster there), other scalars keep the
/// AVX2 build.
#[test]
fn every_tier_runs_what_it_has_and_nothing_slower() {
    use crate::tier::check_plan;
    let measured = [TapsKernel::Avx2, TapsKernel::Avx512];
    check_plan("taps, f32", plan::<f32>, &measured);
    check_plan("taps, f64", plan::<f64>, &[TapsKernel::Avx2]);
    assert_eq!(plan::<f32>(Tier::Avx512), TapsKernel::Avx512);
    assert_eq!(plan::<f64>(Tier::Avx512), TapsKernel::Avx2);
}
