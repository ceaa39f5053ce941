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
    /// [`F32s::load_masked`] with `MASKED`, else [`F32s::load`] (`m` unused): one kernel body
    /// for a run's whole vectors and its masked tail, the choice made at compile time.
    #[inline(always)]
    unsafe fn load_if<const MASKED: bool>(p: *const f32, m: Self::Mask) -> Self {
        // SAFETY: the caller's contract (the lanes read are readable).
        unsafe {
            match MASKED {
                true => Self::load_masked(p, m),
                false => Self::load(p),
            }
        }
    }
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
    /// ReLU's backward mask lane by lane, as `activation::relu_bwd`: `g` where `y > 0`, else
    /// `+0` (`y` NaN, `±0` or negative give `+0`; `g` is kept bit for bit, NaN or `-0` too).
    unsafe fn where_positive(y: Self, g: Self) -> Self;
    /// Each lane twice, in order, over two vectors: `([x0, x0, x1, x1, …], […, xL−1, xL−1])`.
    unsafe fn duplicate_pairs(x: Self) -> (Self, Self);
    /// Lane `i` is the sum of `v[i]`'s lanes (`v.len() == LANES`), each summed by halving
    /// folds: the upper half added onto the lower, lane by lane, until one lane is left. A
    /// transpose and the sums at once: `LANES − 1` shuffle pairs and additions for `LANES` sums.
    unsafe fn lane_sums(v: &[Self]) -> Self;
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
        unsafe { store_columns_8(cols, y, stride) }
    }
    #[inline(always)]
    unsafe fn where_positive(y: Self, g: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe {
            // y > 0, false for NaN
            let keep = _mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps());
            _mm256_and_ps(g, keep)
        }
    }
    #[inline(always)]
    unsafe fn duplicate_pairs(x: Self) -> (Self, Self) {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe {
            let lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
            let hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
            (
                _mm256_permutevar8x32_ps(x, lo),
                _mm256_permutevar8x32_ps(x, hi),
            )
        }
    }
    #[inline(always)]
    unsafe fn lane_sums(v: &[Self]) -> Self {
        assert_eq!(v.len(), 8, "one vector per lane");
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe {
            // Fold 8 → 4: [a.lo + a.hi, b.lo + b.hi] for the pairs (a, b). Slot s holds
            // vector 4·(s % 2) + s / 2, so that the last fold leaves vector i in lane i.
            let r = [
                fold_halves_256(v[0], v[4]),
                fold_halves_256(v[1], v[5]),
                fold_halves_256(v[2], v[6]),
                fold_halves_256(v[3], v[7]),
            ];
            // Fold 4 → 2 within each 128-bit half, then 2 → 1.
            let (t0, t1) = (fold_pairs_256(r[0], r[1]), fold_pairs_256(r[2], r[3]));
            let lo = _mm256_shuffle_ps::<0b01_00_01_00>(t0, t1);
            let hi = _mm256_shuffle_ps::<0b11_10_11_10>(t0, t1);
            _mm256_add_ps(lo, hi)
        }
    }
}

/// `[a.lo + a.hi, b.lo + b.hi]` (128-bit halves).
///
/// # Safety
/// The CPU has AVX.
#[inline(always)]
unsafe fn fold_halves_256(a: __m256, b: __m256) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        let lo = _mm256_permute2f128_ps::<0x20>(a, b);
        let hi = _mm256_permute2f128_ps::<0x31>(a, b);
        _mm256_add_ps(lo, hi)
    }
}

/// In each 128-bit half: `[a0 + a2, b0 + b2, a1 + a3, b1 + b3]`.
///
/// # Safety
/// The CPU has AVX.
#[inline(always)]
unsafe fn fold_pairs_256(a: __m256, b: __m256) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe { _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b)) }
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
        // SAFETY: the trait's contract: the CPU has AVX-512F (so AVX2), and the block's rows
        // b·stride .. b·stride + N are writable; each half's rows are 8·stride further on.
        unsafe {
            // Each half of 8 lanes as an 8-lane block (one scatter per column is slow on AMD
            // cores).
            let (mut lo, mut hi) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
            for ((lo, hi), &c) in lo.iter_mut().zip(&mut hi).zip(cols) {
                let c = _mm512_castps_pd(c);
                *lo = _mm256_castpd_ps(_mm512_castpd512_pd256(c));
                *hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(c));
            }
            store_columns_8(&lo, y, stride);
            store_columns_8(&hi, y.add(8 * stride), stride);
        }
    }
    #[inline(always)]
    unsafe fn where_positive(y: Self, g: Self) -> Self {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe {
            // y > 0, false for NaN
            let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_setzero_ps());
            _mm512_maskz_mov_ps(keep, g)
        }
    }
    #[inline(always)]
    unsafe fn duplicate_pairs(x: Self) -> (Self, Self) {
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe {
            let lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
            (_mm512_permutexvar_ps(lo, x), _mm512_permutexvar_ps(hi, x))
        }
    }
    #[inline(always)]
    unsafe fn lane_sums(v: &[Self]) -> Self {
        assert_eq!(v.len(), 16, "one vector per lane");
        // SAFETY: the trait's contract: the CPU has the vector's tier.
        unsafe {
            // Fold 16 → 8 for the pairs of slots (2i, 2i + 1); slot s holds vector
            // 4·(s % 4) + s / 4, so that the last fold leaves vector i in lane i.
            let mut r = [_mm512_setzero_ps(); 8];
            for (i, r) in r.iter_mut().enumerate() {
                let (s0, s1) = (2 * i, 2 * i + 1);
                *r = fold_halves_512(v[4 * (s0 % 4) + s0 / 4], v[4 * (s1 % 4) + s1 / 4]);
            }
            let s = [
                fold_quarters_512(r[0], r[1]),
                fold_quarters_512(r[2], r[3]),
                fold_quarters_512(r[4], r[5]),
                fold_quarters_512(r[6], r[7]),
            ];
            // Fold 4 → 2 within each 128-bit quarter, then 2 → 1.
            let (t0, t1) = (fold_pairs_512(s[0], s[1]), fold_pairs_512(s[2], s[3]));
            let lo = _mm512_shuffle_ps::<0b01_00_01_00>(t0, t1);
            let hi = _mm512_shuffle_ps::<0b11_10_11_10>(t0, t1);
            _mm512_add_ps(lo, hi)
        }
    }
}

/// Fold 16 → 8 of `a` and `b` at once: quarters `[a0 + a2, a1 + a3, b0 + b2, b1 + b3]`.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn fold_halves_512(a: __m512, b: __m512) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe {
        let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b);
        let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b);
        _mm512_add_ps(lo, hi)
    }
}

/// In each 128-bit quarter: `[a0 + a2, b0 + b2, a1 + a3, b1 + b3]`.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn fold_pairs_512(a: __m512, b: __m512) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe { _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)) }
}

/// Fold 8 → 4 of four vectors at once: from quarters `(a0 a1 b0 b1, c0 c1 d0 d1)`,
/// `[a0 + a1, b0 + b1, c0 + c1, d0 + d1]`.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn fold_quarters_512(a: __m512, b: __m512) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe {
        let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
        let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        _mm512_add_ps(lo, hi)
    }
}

/// Writes lane `b` of `cols[j]` to `y[b·stride + j]` for the 8 lanes and every `j < N`: 8
/// columns at a time, an 8×8 transpose in registers, then each row's scalars of the group
/// stored in pieces (a masked store is slow on AMD cores).
///
/// # Safety
/// The CPU has AVX2; the rows `b·stride .. b·stride + N` of `y` (`b < 8`) are writable.
#[inline(always)]
unsafe fn store_columns_8<const N: usize>(cols: &[__m256; N], y: *mut f32, stride: usize) {
    // SAFETY: the caller's contract; group j0's stores are its n ≤ N − j0 columns of each row.
    unsafe {
        for j0 in (0..N).step_by(8) {
            let n = (N - j0).min(8);
            let mut rows = [_mm256_setzero_ps(); 8];
            for (r, &c) in rows.iter_mut().zip(&cols[j0..]) {
                *r = c;
            }
            for (b, row) in transpose8(rows).into_iter().enumerate() {
                let y = y.add(b * stride + j0);
                match n {
                    8 => _mm256_storeu_ps(y, row),
                    _ => store_first(y, row, n),
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::relu_bwd;
    use crate::Tier;

    /// Lanes 0..L of `x`.
    ///
    /// # Safety
    /// The CPU has `V`'s tier.
    #[inline(always)]
    unsafe fn lanes<V: F32s>(x: V) -> Vec<f32> {
        let mut out = vec![0.0; V::LANES];
        // SAFETY: LANES writable scalars; the caller's contract.
        unsafe { x.store(out.as_mut_ptr()) };
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// The lane operations of the pooling kernels against their scalar definitions, on
    /// values with both zeros, NaN (with a payload), infinities and subnormals.
    ///
    /// # Safety
    /// The CPU has `V`'s tier.
    #[inline(always)]
    unsafe fn lane_ops_match_their_scalar_definitions<V: F32s>() {
        let special = [
            0.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_1234),
            1.5,
        ];
        let more = [-2.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40, 3.25];
        let v: Vec<f32> = (0..2 * V::LANES)
            .map(|i| [special, more][i / 6 % 2][i % 6] * if i > 12 { 1.0 + i as f32 } else { 1.0 })
            .collect();
        // SAFETY: the caller's contract; every load reads LANES scalars of `v`.
        unsafe {
            let (lo, hi) = (V::load(v.as_ptr()), V::load(v[V::LANES..].as_ptr()));
            let masked: Vec<f32> = v
                .iter()
                .zip(&v[V::LANES..])
                .map(|(&y, &g)| relu_bwd(y, g))
                .collect();
            assert_eq!(bits(&lanes(V::where_positive(lo, hi))), bits(&masked));
            let (a, b) = V::duplicate_pairs(lo);
            let twice: Vec<f32> = v[..V::LANES].iter().flat_map(|&x| [x, x]).collect();
            assert_eq!(bits(&[lanes(a), lanes(b)].concat()), bits(&twice));
        }
        // SAFETY: the caller's contract.
        unsafe {
            lane_sums_fold_by_halves::<V>();
            store_columns_writes_the_block_only::<V, 1>();
            store_columns_writes_the_block_only::<V, 3>();
            store_columns_writes_the_block_only::<V, 7>();
            store_columns_writes_the_block_only::<V, 8>();
            if V::LANES == 16 {
                store_columns_writes_the_block_only::<V, 9>();
                store_columns_writes_the_block_only::<V, 10>();
                store_columns_writes_the_block_only::<V, 16>();
            }
        }
    }

    /// [`F32s::store_columns`] of `N` vectors into a NaN-filled buffer of rows `N + 3` wide:
    /// lane `b` of column `j` lands at `b·stride + j`, and every other scalar stays NaN.
    ///
    /// # Safety
    /// The CPU has `V`'s tier; `N ≤ LANES`.
    #[inline(always)]
    unsafe fn store_columns_writes_the_block_only<V: F32s, const N: usize>() {
        let stride = N + 3;
        let value = |b: usize, j: usize| (100 * b + j) as f32;
        let mut y = vec![f32::NAN; V::LANES * stride + 5];
        // SAFETY: the caller's contract; each load reads LANES scalars of `col`, and the
        // block's rows b·stride .. b·stride + N are inside `y`.
        unsafe {
            let cols: [V; N] = std::array::from_fn(|j| {
                let col: Vec<f32> = (0..V::LANES).map(|b| value(b, j)).collect();
                V::load(col.as_ptr())
            });
            V::store_columns(&cols, y.as_mut_ptr(), stride);
        }
        for (i, &got) in y.iter().enumerate() {
            let (b, j) = (i / stride, i % stride);
            match b < V::LANES && j < N {
                true => assert_eq!(
                    got,
                    value(b, j),
                    "{} lanes, N {N}: lane {b}, column {j}",
                    V::LANES
                ),
                false => assert!(
                    got.is_nan(),
                    "{} lanes, N {N}: wrote {i} outside the block",
                    V::LANES
                ),
            }
        }
    }

    /// [`F32s::lane_sums`] against halving folds written out, on sums whose bits depend on
    /// the order (magnitudes from 2⁻¹² to 2¹², both signs), so a wrong lane or order shows.
    ///
    /// # Safety
    /// The CPU has `V`'s tier.
    #[inline(always)]
    unsafe fn lane_sums_fold_by_halves<V: F32s>() {
        let n = V::LANES;
        let x = |i: usize, l: usize| {
            let m = ((i * 37 + l * 11) % 25) as i32 - 12;
            let sign = if (i + 3 * l) % 5 < 2 { -1.0 } else { 1.0 };
            sign * (1.0 + (l as f32) / 7.0) * 2f32.powi(m)
        };
        let fold = |mut s: Vec<f32>| {
            while s.len() > 1 {
                let half = s.len() / 2;
                s = (0..half).map(|j| s[j] + s[j + half]).collect();
            }
            s[0]
        };
        let want: Vec<f32> = (0..n)
            .map(|i| fold((0..n).map(|l| x(i, l)).collect()))
            .collect();
        let rows: Vec<Vec<f32>> = (0..n).map(|i| (0..n).map(|l| x(i, l)).collect()).collect();
        // SAFETY: the caller's contract; each load reads one row of LANES scalars.
        let got = unsafe {
            let v: Vec<V> = rows.iter().map(|r| V::load(r.as_ptr())).collect();
            lanes(V::lane_sums(&v))
        };
        assert_eq!(
            bits(&got),
            bits(&want),
            "{n} lanes: {got:?} against {want:?}"
        );
        let sequential: Vec<f32> = rows.iter().map(|r| r.iter().sum()).collect();
        assert_ne!(
            bits(&sequential),
            bits(&want),
            "the values tell the orders apart"
        );
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn lane_ops_8() {
        // SAFETY: the caller's contract.
        unsafe { lane_ops_match_their_scalar_definitions::<__m256>() }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn lane_ops_16() {
        // SAFETY: the caller's contract.
        unsafe { lane_ops_match_their_scalar_definitions::<__m512>() }
    }

    #[test]
    fn lane_ops_match_on_every_available_tier() {
        if Tier::Avx2.is_supported() {
            // SAFETY: the CPU has AVX2 + FMA.
            unsafe { lane_ops_8() };
        }
        if Tier::Avx512.is_supported() {
            // SAFETY: the CPU has AVX-512F.
            unsafe { lane_ops_16() };
        }
    }
}
