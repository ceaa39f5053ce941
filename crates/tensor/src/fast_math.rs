//! Branch-free `f32` tanh and sigmoid that the compiler vectorises (libm's `tanhf`/`expf` are
//! scalar calls, 10–30× slower over a whole activation tensor).
//!
//! Both need `e^t` only for `t ≤ 0`, computed the classic way (Cephes `expf`): `t = n·ln2 + r`
//! with `n = round(t/ln2)` and `|r| ≤ ln2/2`, `e^r` from a degree-6 polynomial, and `2^n` built
//! from the exponent bits. Its error is about 1 ulp; `tanh` and `sigmoid` below stay within a few
//! ulp of the exact values (checked against f64 in the tests). NaN propagates.

// The polynomial coefficients are Cephes' published values, kept digit for digit.
#![allow(clippy::excessive_precision)]

/// `y[i] = f(x[i])`, compiled for AVX2 and for the x86-64 baseline, the build of the active
/// tier ([`Build::active`](crate::tier::Build)) chosen at run time. `f` uses plain IEEE operations (no fused multiply-add),
/// so every path gives the same bits.
pub(crate) fn map_f32(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Copy) {
    #[inline(always)]
    fn body(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x));
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
            body(y, x, f)
        }
        if crate::tier::Build::active() == crate::tier::Build::Avx2 {
            // SAFETY: the active tier is one the CPU has, and the AVX2 build needs no more.
            return unsafe { avx2(y, x, f) };
        }
    }
    body(y, x, f)
}

/// `e^t` for `t ≤ 0` (larger `t` is not supported); below −87 it returns 0 (absolute error
/// under 2e−38, where f32 itself has only subnormals left).
#[inline(always)]
fn exp_nonpositive(t: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·ln2 is exact in the high part
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer (no libm `floor` call)
    const ROUND: f32 = 12_582_912.0;
    let underflow = t < -87.0;
    let t = t.max(-87.0);
    let shifted = t * LOG2E + ROUND; // exactly ROUND + n, so its low bits hold n
    let n = shifted - ROUND;
    let r = t - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // 2^n for n in [−126, 0]: the exponent field n + 127, with n read from the bits of
    // `shifted` (integer ops only: a float-to-int `as` cast would not vectorise)
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if underflow {
        0.0
    } else {
        er * two_n
    }
}

/// `tanh(x)`: an odd polynomial near 0 (where `1 − e` would cancel), `(1 − e)/(1 + e)` with
/// `e = e^(−2|x|)` elsewhere, the sign restored at the end.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    // Cephes tanhf polynomial, for |x| < 0.625
    let p = -5.704_988_7e-3_f32;
    let p = p * z + 2.063_908_9e-2;
    let p = p * z - 5.373_971_6e-2;
    let p = p * z + 0.133_314_42;
    let p = p * z - 0.333_332_82;
    let small = p * z * x + x;
    let e = exp_nonpositive(-2.0 * a);
    let big = ((1.0 - e) / (1.0 + e)).copysign(x);
    let y = if a < 0.625 { small } else { big };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// `1 / (1 + e^−x)`, as `1/(1 + e)` for `x ≥ 0` and `e/(1 + e)` for `x < 0`, with `e = e^(−|x|)`
/// (never overflows).
#[inline(always)]
pub(crate) fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let r = 1.0 / (1.0 + e);
    let y = if x >= 0.0 { r } else { e * r };
    if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place (of the f32 result) from the exact value.
    fn ulps(got: f32, exact: f64) -> f64 {
        let e = exact as f32;
        let ulp = (f32::from_bits(e.abs().to_bits() + 1) - e.abs()) as f64;
        ((got as f64) - exact).abs() / ulp.max(f32::MIN_POSITIVE as f64)
    }

    fn sigmoid64(x: f64) -> f64 {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            x.exp() / (1.0 + x.exp())
        }
    }

    #[test]
    fn within_a_few_ulp_of_f64_everywhere() {
        let mut worst = (0.0_f64, 0.0_f64);
        let mut x = -30.0_f32;
        while x <= 30.0 {
            let t = ulps(tanh_f32(x), (x as f64).tanh());
            let s = ulps(sigmoid_f32(x), sigmoid64(x as f64));
            worst = (worst.0.max(t), worst.1.max(s));
            x += 1.0e-3 * (1.0 + x.abs());
        }
        // tiny arguments: tanh(x) ≈ x to the last bit, sigmoid ≈ 1/2
        for &x in &[1e-30_f32, -1e-20, 1e-8, 3e-4, -0.624, 0.625, 0.6251] {
            worst.0 = worst.0.max(ulps(tanh_f32(x), (x as f64).tanh()));
            worst.1 = worst.1.max(ulps(sigmoid_f32(x), sigmoid64(x as f64)));
        }
        assert!(
            worst.0 <= 4.0 && worst.1 <= 4.0,
            "worst ulps: tanh {}, sigmoid {}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn extremes_and_nan() {
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!(tanh_f32(100.0), 1.0);
        assert_eq!(tanh_f32(-100.0), -1.0);
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(sigmoid_f32(0.0), 0.5);
        assert_eq!(sigmoid_f32(f32::INFINITY), 1.0);
        assert_eq!(sigmoid_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid_f32(-200.0), 0.0);
        assert_eq!(sigmoid_f32(-1000.0), 0.0);
        assert!(sigmoid_f32(f32::NAN).is_nan());
        assert!(((sigmoid_f32(-50.0) as f64) - (-50.0_f64).exp()).abs() < 1e-28);
    }
}
