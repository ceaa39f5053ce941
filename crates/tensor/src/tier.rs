//! Kernel tiers: the instruction sets the kernels are written for, ordered by capability, and
//! the one this process runs.
//!
//! The release build targets plain x86-64, so the SIMD kernels are compiled with
//! `#[target_feature]` and only ever called on a tier the CPU has ([`Tier::detected`]). Every op
//! picks its kernel from the tier and its shapes alone (each op's `plan` function), so a test
//! on any machine can ask what any tier would run. A higher tier never gets a kernel that is
//! slower than the lower tier's: until a kernel of its own has been measured faster on such a
//! CPU (docs/performance.md), it runs the lower tier's (AVX-512F implies AVX2 + FMA).
//!
//! `LENET_KERNEL=portable|avx2|avx512` lowers the tier (for tests, benchmarks and "is it the
//! kernel?" questions); it can never raise it above what the CPU has, so it can never make the
//! program execute an unsupported instruction. `LENET_GEMM_KERNEL`, its older name, still
//! works when `LENET_KERNEL` is unset.

use std::sync::OnceLock;

/// The environment variable that lowers the tier ([`Tier::ENV`]).
const TIER_ENV: &str = "LENET_KERNEL";
/// Its older name, read when [`TIER_ENV`] is unset.
const TIER_ENV_OLD: &str = "LENET_GEMM_KERNEL";

/// An instruction-set tier, ordered: `Portable < Avx2 < Avx512`. A CPU that has a tier has
/// every lower one.
///
/// All tiers give `f32` results within the same error bound; they may differ in the last bits
/// where their kernels sum in another order or fuse multiply and add. `f64` runs the portable
/// sources compiled for the tier's instruction set.
///
/// ```
/// use tensor::Tier;
/// let tier = Tier::active(); // what this process runs
/// assert!(tier.is_supported() && Tier::available().contains(&tier));
/// assert_eq!(Tier::from_name(tier.name()), Some(tier));
/// assert_eq!(Tier::ENV, "LENET_KERNEL"); // set it to `portable` to lower the tier
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Plain Rust, auto-vectorised for the baseline target (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// 256-bit AVX2 with fused multiply-add.
    Avx2,
    /// 512-bit AVX-512F (with AVX2 + FMA, which every such CPU has).
    Avx512,
}

impl Tier {
    /// The environment variable that lowers the tier (`LENET_KERNEL=portable|avx2|avx512`).
    pub const ENV: &'static str = TIER_ENV;

    /// Every tier, lowest first.
    ///
    /// ```
    /// use tensor::Tier;
    /// assert_eq!(Tier::ALL, [Tier::Portable, Tier::Avx2, Tier::Avx512]);
    /// assert!(Tier::ALL.windows(2).all(|pair| pair[0] < pair[1]));
    /// ```
    pub const ALL: [Tier; 3] = [Tier::Portable, Tier::Avx2, Tier::Avx512];

    /// The tier this process runs: [`Tier::detected`], lowered by `LENET_KERNEL` (or
    /// `LENET_GEMM_KERNEL`); decided on first use, then cached. An unknown name is ignored here
    /// ([`Tier::from_env`] reports it).
    pub fn active() -> Tier {
        static ACTIVE: OnceLock<Tier> = OnceLock::new();
        *ACTIVE.get_or_init(|| Tier::lowered(Tier::detected(), Tier::from_env().ok().flatten()))
    }

    /// `detected`, lowered to `wanted` if that is lower: the variable can only lower the tier.
    ///
    /// ```
    /// use tensor::Tier;
    /// assert_eq!(Tier::lowered(Tier::Avx512, Some(Tier::Portable)), Tier::Portable);
    /// assert_eq!(Tier::lowered(Tier::Avx2, Some(Tier::Avx512)), Tier::Avx2); // never raised
    /// assert_eq!(Tier::lowered(Tier::Avx2, None), Tier::Avx2);
    /// ```
    pub fn lowered(detected: Tier, wanted: Option<Tier>) -> Tier {
        wanted.map_or(detected, |w| w.min(detected))
    }

    /// The tier the environment asks for: `Ok(None)` when neither variable is set (or it is
    /// empty), an error naming the variable, its value and the accepted names otherwise.
    ///
    /// ```
    /// use tensor::Tier;
    /// std::env::set_var(Tier::ENV, " AVX2 ");
    /// assert_eq!(Tier::from_env(), Ok(Some(Tier::Avx2)));
    /// std::env::set_var(Tier::ENV, "sse9");
    /// let error = Tier::from_env().unwrap_err();
    /// assert!(error.starts_with("LENET_KERNEL=\"sse9\" is not a kernel tier: use one of portable, avx2, avx512"));
    /// ```
    pub fn from_env() -> Result<Option<Tier>, String> {
        let (var, value) = match std::env::var(TIER_ENV) {
            Ok(v) => (TIER_ENV, v),
            Err(_) => match std::env::var(TIER_ENV_OLD) {
                Ok(v) => (TIER_ENV_OLD, v),
                Err(_) => return Ok(None),
            },
        };
        if value.trim().is_empty() {
            return Ok(None);
        }
        Tier::from_name(&value).map(Some).ok_or_else(|| {
            let names: Vec<_> = Tier::ALL.iter().map(|t| t.name()).collect();
            format!(
                "{var}={value:?} is not a kernel tier: use one of {} (or unset it for the \
                 best one this CPU has)",
                names.join(", ")
            )
        })
    }

    /// The highest tier this CPU has.
    ///
    /// ```
    /// use tensor::Tier;
    /// let best = Tier::detected();
    /// assert!(best.is_supported() && best >= Tier::active());
    /// assert_eq!(Tier::available().last(), Some(&best));
    /// ```
    pub fn detected() -> Tier {
        static DETECTED: OnceLock<Tier> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                if avx2 && is_x86_feature_detected!("avx512f") {
                    return Tier::Avx512;
                }
                if avx2 {
                    return Tier::Avx2;
                }
            }
            Tier::Portable
        })
    }

    /// Whether this CPU can run the tier's kernels.
    pub fn is_supported(self) -> bool {
        self <= Tier::detected()
    }

    /// Every tier this CPU has, lowest first (for tests and benchmarks).
    pub fn available() -> Vec<Tier> {
        Tier::ALL.into_iter().filter(|t| t.is_supported()).collect()
    }

    /// Short lowercase name, as accepted by `LENET_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
        }
    }

    /// The tier a name stands for (case and surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<Tier> {
        let name = name.trim().to_ascii_lowercase();
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A kernel that a plan can choose: the lowest tier whose CPUs can run it. Every op's plan
/// returns a kernel that needs no more than the tier it was given (tested for every tier).
pub(crate) trait Needs {
    /// The lowest tier whose CPUs can run it.
    fn needs(&self) -> Tier;
}

/// The build of a kernel written for AVX2 + FMA with a baseline fallback (the convolution,
/// pooling, packing and element-wise kernels): the AVX2 build on the AVX2 tier and above (no
/// AVX-512 build of them has been measured faster), else the baseline build.
// Elsewhere than on x86-64 every tier is portable: only the tests ask.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Build {
    /// Intrinsics, or plain Rust compiled with `#[target_feature(enable = "avx2,fma")]`.
    Avx2,
    /// Plain Rust compiled for the baseline target.
    Baseline,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Build {
    /// The build that runs on `tier`.
    pub(crate) fn on(tier: Tier) -> Build {
        if tier >= Tier::Avx2 {
            Build::Avx2
        } else {
            Build::Baseline
        }
    }

    /// The build that runs in this process.
    pub(crate) fn active() -> Build {
        Build::on(Tier::active())
    }
}

impl Needs for Build {
    fn needs(&self) -> Tier {
        match self {
            Build::Avx2 => Tier::Avx2,
            Build::Baseline => Tier::Portable,
        }
    }
}

/// Checks a plan (`plan(tier)` is the kernel it runs on `tier`, for one fixed shape `what`)
/// on every tier, whatever this machine has: the kernel needs no more than the tier, and each
/// tier runs the tier below's kernel unless its own is in `measured_faster` (kernels measured
/// faster than the lower tier's on hardware of their tier, docs/performance.md).
#[cfg(test)]
#[track_caller]
pub(crate) fn check_plan<K: Needs + PartialEq + std::fmt::Debug>(
    what: &str,
    plan: impl Fn(Tier) -> K,
    measured_faster: &[K],
) {
    for pair in Tier::ALL.windows(2) {
        let (lower, tier) = (plan(pair[0]), plan(pair[1]));
        assert!(
            lower.needs() <= pair[0],
            "{what}: {lower:?} on {:?}",
            pair[0]
        );
        assert!(tier.needs() <= pair[1], "{what}: {tier:?} on {:?}", pair[1]);
        assert!(
            tier == lower || measured_faster.contains(&tier),
            "{what}: {:?} runs {tier:?}, not {:?}'s {lower:?}, and it was not measured faster",
            pair[1],
            pair[0]
        );
    }
}

/// What a plan test expects on an x86-64 tier: `x86` on x86-64; elsewhere the x86-64 kernels
/// are not compiled in, and every tier's plan is the portable tier's kernel, `portable`.
#[cfg(test)]
pub(crate) fn on_x86<K>(x86: K, portable: K) -> K {
    if cfg!(target_arch = "x86_64") {
        x86
    } else {
        portable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for t in Tier::ALL {
            assert_eq!(Tier::from_name(t.name()), Some(t));
        }
        assert_eq!(Tier::from_name(" Portable "), Some(Tier::Portable));
        assert_eq!(Tier::from_name("avx3"), None);
    }

    #[test]
    fn the_variable_only_lowers_the_tier() {
        for detected in Tier::ALL {
            assert_eq!(Tier::lowered(detected, None), detected);
            for wanted in Tier::ALL {
                let got = Tier::lowered(detected, Some(wanted));
                assert!(got <= detected && got <= wanted, "{detected:?} {wanted:?}");
                assert_eq!(got, wanted.min(detected));
            }
        }
    }

    /// The AVX2-or-baseline kernels (convolution, pooling, packing, element-wise maps) run
    /// their AVX2 build on every tier from AVX2 up.
    #[test]
    fn the_avx2_builds_run_from_the_avx2_tier_up() {
        check_plan("an AVX2-or-baseline kernel", Build::on, &[Build::Avx2]);
        assert_eq!(Build::on(Tier::Avx512), Build::Avx2);
        assert_eq!(Build::on(Tier::Portable), Build::Baseline);
    }

    #[test]
    fn the_active_tier_is_one_the_cpu_has() {
        assert!(Tier::active().is_supported());
        assert!(Tier::available().contains(&Tier::Portable));
        assert_eq!(Tier::available().last(), Some(&Tier::detected()));
    }
}
