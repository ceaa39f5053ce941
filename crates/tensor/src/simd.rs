//! The thin per-tier layer under the kernels written once for any vector width: an `f32`
//! vector type per tier (`__m256` for AVX2 + FMA, `__m512` for AVX-512F) with the handful of
//! operations the kernels use. A kernel generic over [`F32s`] is instantiated inside a
//! `#[target_feature]` function of the matching tier; the methods here are `#[inline(always)]`,
//! so each intrinsic lands in that function's body, compiled for its instruction set.
//!
//! # Safety
//! Every method is `unsafe`: it may only run on a CPU of the vector's tier (the caller's
//! `#[target_feature]` function was entered after `Tier::is_supported`), and the pointer
//! methods read or write `LANES` scalars (or the lanes a mask selects) at the pointer.

#![cfg(target_arch = "x86_64")]

use crate::matmul::transpose8;
use std::arch::x86_64::*;

/// A vector of `f32` lanes.
pub(crate) trait F32s: Copy {
    /// Lanes per vector.
    const LANES: usize;
    /// Which lanes a masked load or store touches.
    type Mask: Copy;
    /// The first `n` lanes (`0 ≤ n ≤ LANES`).
    unsafe fn first(n: usize) -> Self::Mask;
    /// All lanes 0.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self;
    /// `LANES` scalars from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// The lanes `m` selects from `p`, the others 0 (nothing else is read).
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self;
    /// Writes every lane to `p`.
    unsafe fn store(self, p: *mut f32);
    /// Writes the lanes `m` selects to `p` (nothing else is written).
    unsafe fn store_masked(self, p: *mut f32, m: Self::Mask);
    /// `a·b + c`, rounded once.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// `a + b`.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// `a · b`.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// Writes the first `n` lanes to `p` (`1 ≤ n ≤ LANES`; nothing else is written).
    unsafe fn store_first(self, p: *mut f32, n: usize);
    /// Adds the lanes folded to 8 to the 8 scalars at `p`: `p[l] += self[l]` at 8 lanes,
    /// `p[l] += self[l] + self[l + 8]` at 16 (the two halves added first).
    unsafe fn add_folded_to_8(self, p: *mut f32);
    /// Writes lane `b` of `cols[j]` to `y[b·stride + j]` for every lane `b` and `j < N`: `N`
    /// vectors stored as the columns of a `LANES × N` block (`N ≤ LANES`, and `LANES·stride`
    /// fits in an `i32`).
    unsafe fn store_columns<const N: usize>(cols: &[Self; N], y: *mut f32, stride: usize);
}

impl F32s for __m256 {
    const LANES: usize = 8;
    type Mask = __m256i;

    #[inline(always)]
    unsafe fn first(n: usize) -> __m256i {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane)
        }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the trait's contract.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __m256i) -> Self {
        // SAFETY: the trait's contract.
        unsafe { _mm256_maskload_ps(p, m) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the trait's contract.
        unsafe { _mm256_storeu_ps(p, self) }
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, m: __m256i) {
        // SAFETY: the trait's contract.
        unsafe { _mm256_maskstore_ps(p, m, self) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: the trait's contract. In pieces: a masked store is slow on AMD cores.
        unsafe {
            match n {
                8 => _mm256_storeu_ps(p, self),
                _ => store_first(p, self, n),
            }
        }
    }
    #[inline(always)]
    unsafe fn add_folded_to_8(self, p: *mut f32) {
        // SAFETY: the trait's contract: 8 scalars at p are readable and writable.
        unsafe { _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), self)) }
    }
    #[inline(always)]
    unsafe fn store_columns<const N: usize>(cols: &[Self; N], y: *mut f32, stride: usize) {
        // SAFETY: the trait's contract: the CPU has AVX2, and the block's rows b·stride ..
        // b·stride + N are writable.
        unsafe {
            // An 8×8 transpose in registers, then N scalars of each row stored in pieces (a
            // masked store is slow on AMD cores).
            let mut rows = [_mm256_setzero_ps(); 8];
            for (r, &c) in rows.iter_mut().zip(cols) {
                *r = c;
            }
            for (b, row) in transpose8(rows).into_iter().enumerate() {
                match N {
                    8 => _mm256_storeu_ps(y.add(b * stride), row),
                    _ => store_first(y.add(b * stride), row, N),
                }
            }
        }
    }
}

impl F32s for __m512 {
    const LANES: usize = 16;
    type Mask = __mmask16;

    #[inline(always)]
    unsafe fn first(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the trait's contract.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __mmask16) -> Self {
        // SAFETY: the trait's contract (masked-off lanes are not read).
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the trait's contract.
        unsafe { _mm512_storeu_ps(p, self) }
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, m: __mmask16) {
        // SAFETY: the trait's contract (masked-off lanes are not written).
        unsafe { _mm512_mask_storeu_ps(p, m, self) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: the trait's contract (masked-off lanes are not written).
        unsafe { self.store_masked(p, Self::first(n)) }
    }
    #[inline(always)]
    unsafe fn add_folded_to_8(self, p: *mut f32) {
        // SAFETY: the trait's contract: 8 scalars at p are readable and writable; AVX-512F.
        unsafe {
            let lo = _mm512_castps512_ps256(self);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self)));
            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), _mm256_add_ps(lo, hi)))
        }
    }
    #[inline(always)]
    unsafe fn store_columns<const N: usize>(cols: &[Self; N], y: *mut f32, stride: usize) {
        // SAFETY: the trait's contract: the CPU has AVX-512F, the offsets b·stride fit in an
        // i32, and every lane's y[b·stride + j] is writable.
        unsafe {
            let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let rows = _mm512_mullo_epi32(lane, _mm512_set1_epi32(stride as i32));
            for (j, &c) in cols.iter().enumerate() {
                _mm512_i32scatter_ps::<4>(y.add(j).cast(), rows, c);
            }
        }
    }
}

/// Writes the first `n` lanes of `x` (`1 ≤ n < 8`) to `dst`: a 4-, a 2- and a 1-lane store as
/// needed, cheaper than a masked store on AMD cores.
///
/// # Safety
/// `dst..dst + n` is writable; the CPU has AVX2.
#[inline(always)]
unsafe fn store_first(dst: *mut f32, x: __m256, n: usize) {
    // SAFETY (each store): lanes done..done + width < n of `dst` are writable; AVX2.
    unsafe {
        let (mut part, mut done) = (_mm256_castps256_ps128(x), 0);
        if n >= 4 {
            _mm_storeu_ps(dst, part);
            (part, done) = (_mm256_extractf128_ps::<1>(x), 4);
        }
        if n - done >= 2 {
            _mm_store_sd(dst.add(done).cast(), _mm_castps_pd(part));
            (part, done) = (_mm_movehl_ps(part, part), done + 2);
        }
        if n > done {
            _mm_store_ss(dst.add(done), part);
        }
    }
}
