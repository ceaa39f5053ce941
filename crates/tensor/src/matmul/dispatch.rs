//! Which micro-kernel runs: picked once per process from the CPU's features.
//!
//! The release build targets plain x86-64, so the SIMD kernels are compiled with
//! `#[target_feature]` and only ever called after [`GemmKernel::is_supported`] has checked, at run time,
//! that the CPU supports them. `LENET_GEMM_KERNEL=portable|avx2|avx512` forces a path (for tests
//! and benchmarks); a forced path the CPU lacks falls back to the best available one, so the
//! variable can never make the program execute an unsupported instruction.

use std::sync::OnceLock;

/// Name of the environment variable that forces a kernel path.
pub(super) const KERNEL_ENV: &str = "LENET_GEMM_KERNEL";

/// A micro-kernel family for [`gemm`](super::gemm).
///
/// All families give `f32` results within the same error bound; they may differ in the last
/// bits because the SIMD kernels use fused multiply-add. `f64` products run the portable
/// kernel's source compiled for the family's instruction set, with identical results on all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// Plain Rust over fixed-size arrays, auto-vectorised for the baseline target.
    Portable,
    /// 256-bit AVX2 + FMA intrinsics.
    Avx2,
    /// 512-bit AVX-512F intrinsics.
    Avx512,
}

impl GemmKernel {
    /// The kernel [`gemm`](super::gemm) uses in this process: the best one the CPU supports, or
    /// the one `LENET_GEMM_KERNEL` names; decided on first use, then cached.
    pub fn active() -> GemmKernel {
        static PATH: OnceLock<GemmKernel> = OnceLock::new();
        *PATH.get_or_init(|| {
            let wanted = std::env::var(KERNEL_ENV).ok();
            GemmKernel::choose(wanted.as_deref())
        })
    }

    /// The best supported path, or `wanted` if it is supported (`None` or an unknown name means
    /// "best").
    fn choose(wanted: Option<&str>) -> GemmKernel {
        let best = GemmKernel::best_supported();
        match wanted.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("portable") => GemmKernel::Portable,
            Some("avx2") if GemmKernel::Avx2.is_supported() => GemmKernel::Avx2,
            Some("avx512") if GemmKernel::Avx512.is_supported() => GemmKernel::Avx512,
            _ => best,
        }
    }

    /// The fastest path this CPU supports.
    pub fn best_supported() -> GemmKernel {
        [GemmKernel::Avx512, GemmKernel::Avx2]
            .into_iter()
            .find(|p| p.is_supported())
            .unwrap_or(GemmKernel::Portable)
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            GemmKernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every kernel family this CPU can run, slowest first (for tests and benchmarks).
    pub fn all_supported() -> Vec<GemmKernel> {
        [GemmKernel::Portable, GemmKernel::Avx2, GemmKernel::Avx512]
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    /// Short lowercase name, as accepted by `LENET_GEMM_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            GemmKernel::Portable => "portable",
            GemmKernel::Avx2 => "avx2",
            GemmKernel::Avx512 => "avx512",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forcing_portable_always_works_and_unknown_names_mean_best() {
        assert_eq!(GemmKernel::choose(Some("portable")), GemmKernel::Portable);
        assert_eq!(GemmKernel::choose(Some(" Portable ")), GemmKernel::Portable);
        assert_eq!(
            GemmKernel::choose(Some("bogus")),
            GemmKernel::best_supported()
        );
        assert_eq!(GemmKernel::choose(None), GemmKernel::best_supported());
    }

    #[test]
    fn a_forced_path_is_never_unsupported() {
        for name in ["portable", "avx2", "avx512"] {
            assert!(GemmKernel::choose(Some(name)).is_supported(), "{name}");
        }
    }
}
