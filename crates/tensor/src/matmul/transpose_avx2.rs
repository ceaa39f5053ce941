//! The transposing copy of packing on AVX2: a row-major A, or a B given as a `.t()` view, has
//! its `k` steps contiguous along each source line, and its panel wants the lines side by side
//! at each step. Eight lines × eight steps are loaded as eight vectors, transposed in
//! registers and stored as eight steps, instead of gathering one scalar at a time.
//!
//! ```text
//! line 0: a0 a1 .. a7        step 0: a0 b0 .. h0
//! line 1: b0 b1 .. b7   →    step 1: a1 b1 .. h1
//!   ...                        ...
//! line 7: h0 h1 .. h7        step 7: a7 b7 .. h7
//! ```
//!
//! It moves data only, so it gives the same panel as `pack::interleave`, bit for bit
//! (unit test below).

use std::arch::x86_64::*;

/// Whether packing may call [`interleave_lines`]: on the AVX2 tier and above (the portable tier
/// keeps packing in plain Rust too).
pub(super) fn available() -> bool {
    crate::tier::Build::active() == crate::tier::Build::Avx2
}

/// Whether [`interleave_lines`] handles a panel `w` lines wide.
pub(super) fn handles(w: usize) -> bool {
    w >= 2 && (w.is_multiple_of(8) || w < 8)
}

/// `panel[p · w + l] = starts[l][p]` for `l < w`, `p < kc`: `w` contiguous source lines
/// interleaved into a full panel. Panels of 8, 16, … lines go eight lines at a time; a
/// narrower one (MR = 6) loads its last line again to fill eight lanes and lets each step's
/// store run into the next step, which the next store then overwrites.
///
/// # Safety
/// The CPU supports AVX2; [`handles`]`(w)`; every `starts[l] + p` (`l < w`, `p < kc`) is
/// readable; `panel.len() == kc · w`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn interleave_lines(
    starts: &[*const f32],
    kc: usize,
    w: usize,
    panel: &mut [f32],
) {
    assert!(handles(w) && starts.len() == w && panel.len() == kc * w);
    let out = panel.as_mut_ptr();
    // A group of 8 steps goes with vectors while its last store ends inside the panel: always
    // for w a multiple of 8; for w < 8 that store spills 8 − w values into the steps after the
    // group, which are written later (by the next group or the scalar tail).
    let mut p0 = 0;
    while p0 + 8 <= kc && (p0 + 7) * w + 8 <= kc * w {
        for l0 in (0..w).step_by(8) {
            // SAFETY: lines l0.. (or the last line, repeated) hold steps p0..p0 + 8 (contract,
            // p0 + 8 <= kc); each store writes 8 values at (p0 + t)·w + l0, which ends inside
            // the panel (loop condition).
            unsafe {
                let rows: [__m256; 8] = std::array::from_fn(|l| {
                    let l = (l0 + l).min(w - 1);
                    _mm256_loadu_ps(starts[l].add(p0))
                });
                for (t, v) in transpose8(rows).into_iter().enumerate() {
                    _mm256_storeu_ps(out.add((p0 + t) * w + l0), v);
                }
            }
        }
        p0 += 8;
    }
    for p in p0..kc {
        for l in 0..w {
            // SAFETY: step p of line l is readable (contract).
            panel[p * w + l] = unsafe { *starts[l].add(p) };
        }
    }
}

/// The 8×8 transpose of eight rows of eight floats: output `t` holds element `t` of every row.
/// Three rounds: pairs of rows interleaved, then pairs of pairs, then the 128-bit halves.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // a0 b0 a1 b1 | a4 b4 a5 b5,  a2 b2 a3 b3 | a6 b6 a7 b7, and the same for c/d, e/f, g/h
    let ab_lo = _mm256_unpacklo_ps(r[0], r[1]);
    let ab_hi = _mm256_unpackhi_ps(r[0], r[1]);
    let cd_lo = _mm256_unpacklo_ps(r[2], r[3]);
    let cd_hi = _mm256_unpackhi_ps(r[2], r[3]);
    let ef_lo = _mm256_unpacklo_ps(r[4], r[5]);
    let ef_hi = _mm256_unpackhi_ps(r[4], r[5]);
    let gh_lo = _mm256_unpacklo_ps(r[6], r[7]);
    let gh_hi = _mm256_unpackhi_ps(r[6], r[7]);
    // a0 b0 c0 d0 | a4 b4 c4 d4 (0x44: the low pair of each), a1 b1 c1 d1 | a5 … (0xEE: high)
    let abcd = [
        _mm256_shuffle_ps::<0x44>(ab_lo, cd_lo),
        _mm256_shuffle_ps::<0xEE>(ab_lo, cd_lo),
        _mm256_shuffle_ps::<0x44>(ab_hi, cd_hi),
        _mm256_shuffle_ps::<0xEE>(ab_hi, cd_hi),
    ];
    let efgh = [
        _mm256_shuffle_ps::<0x44>(ef_lo, gh_lo),
        _mm256_shuffle_ps::<0xEE>(ef_lo, gh_lo),
        _mm256_shuffle_ps::<0x44>(ef_hi, gh_hi),
        _mm256_shuffle_ps::<0xEE>(ef_hi, gh_hi),
    ];
    // Steps 0–3 from the low 128-bit halves (0x20), steps 4–7 from the high ones (0x31).
    std::array::from_fn(|t| {
        if t < 4 {
            _mm256_permute2f128_ps::<0x20>(abcd[t], efgh[t])
        } else {
            _mm256_permute2f128_ps::<0x31>(abcd[t - 4], efgh[t - 4])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_scalar_interleave_for_every_width_and_depth() {
        if !crate::Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let line = 37usize; // lines longer than kc, so a read past step kc would show
        let src: Vec<f32> = (0..40 * line).map(|v| v as f32).collect();
        for w in (1..=40).filter(|&w| handles(w)) {
            for kc in 0..=line {
                let want: Vec<f32> = (0..kc * w).map(|i| src[(i % w) * line + i / w]).collect();
                let mut got = vec![f32::NAN; kc * w];
                let starts: Vec<_> = (0..w).map(|l| src[l * line..].as_ptr()).collect();
                // SAFETY: AVX2 checked above; lines 0..w of `src` hold `line >= kc` steps.
                unsafe { interleave_lines(&starts, kc, w, &mut got) };
                assert_eq!(got, want, "w {w}, kc {kc}");
            }
        }
    }
}
