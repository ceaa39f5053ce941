//! Which kernel a product runs: a pure function of the tier, the scalar type and the shapes,
//! decided here and nowhere else, so that a test on any machine can ask what any tier runs.
//!
//! Two decisions, in order. The route ([`route`]), once per call before any split over threads
//! (every piece of C is then summed the same way): unpacked dot-product tiles for `f32` in the
//! `A·Bᵀ` layout where they pay, else packed panels. Then, on the packed route, the register
//! tile ([`tile`]) for each piece.
//!
//! The AVX-512 tier has kernels of its own here (the 8 × 32 tile and the 4 × 4 dot tile): both
//! were measured faster than the AVX2 ones on AVX-512 hardware (docs/performance.md: sgemm
//! 512³ and a LeNet-5 training run, alternated in one script run).

use crate::tier::Needs;
use crate::{Scalar, Tier};
use std::any::TypeId;

/// Rows of C up to which `A·Bᵀ` products use [`Tile::Avx2Narrow`]; measured on the LeNet
/// shapes (Zen 3): e.g. 1.4× the 6 × 16 tile at 32×84×120, equal at 256×84×120.
pub(crate) const NARROW_MAX_M: usize = 128;

/// How a product is computed. Chosen once per call, before any split over threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Pack A and B into panels, then run a register [`Tile`].
    Packed,
    /// Unpacked dot-product tiles read straight from A's rows and B's columns (`f32` only):
    /// 3 × 4 of 8 lanes on the AVX2 tier, 4 × 4 of 16 lanes on AVX-512.
    Dot(Tier),
}

/// The micro-kernel of the packed route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    /// `f32` 8 × 32 in AVX-512F intrinsics.
    Avx512,
    /// `f32` 6 × 16 in AVX2 + FMA intrinsics.
    Avx2,
    /// `f32` 8 × 8 in AVX2 + FMA intrinsics, for short products whose B columns are contiguous.
    Avx2Narrow,
    /// The portable source (4 × 8 for `f32`, 4 × 4 otherwise), compiled for the baseline.
    Portable,
    /// The portable source for `f64` and other scalars compiled for AVX2, 6 × 8 (separate
    /// multiply and add: the same bits on every tier; no AVX-512 build has been measured faster).
    PortableAvx2,
}

impl Needs for Route {
    fn needs(&self) -> Tier {
        match *self {
            Route::Packed => Tier::Portable,
            Route::Dot(tier) => tier,
        }
    }
}

impl Needs for Tile {
    fn needs(&self) -> Tier {
        match *self {
            Tile::Avx512 => Tier::Avx512,
            Tile::Avx2 | Tile::Avx2Narrow | Tile::PortableAvx2 => Tier::Avx2,
            Tile::Portable => Tier::Portable,
        }
    }
}

/// The route of a product on `tier`; `a_b_transposed` when A's rows and B's columns are
/// contiguous (the `x·Wᵀ` layout of row-major arrays), the only layout the dot tiles read.
///
/// Never a function of the row count: the two routes sum in different orders, and a row of C
/// must get the same bits whatever rows come with it (a layer's output for one image does not
/// depend on the batch around it; `nn` promises it): dot tiles for short products and packing
/// for tall ones would give one image alone logits a few ulps away from its logits in a batch.
pub(crate) fn route<T: Scalar>(tier: Tier, a_b_transposed: bool) -> Route {
    if !a_b_transposed || !is_f32::<T>() {
        return Route::Packed;
    }
    match tier {
        // Dot products beat transposing both operands: at 16 lanes at every LeNet shape; at
        // 8 lanes a batch-32 epoch took 0.95× the time of packing the fully connected
        // layers' `x·Wᵀ` (measured on Zen 4 with the AVX2 tier forced; batch 256 1.00×).
        Tier::Avx512 => Route::Dot(Tier::Avx512),
        Tier::Avx2 => Route::Dot(Tier::Avx2),
        Tier::Portable => Route::Packed,
    }
}

/// The route of the shifted convolution's weight gradient on wide columns, `g_wide·wideᵀ`
/// (`k × c·kh·kw`, a layer's own shape, not the batch's): dot tiles on AVX-512; on AVX2 the
/// packed route, which packs `wideᵀ`'s panels straight from the image instead of building
/// `wideᵀ` for the dot tiles (and sums as the lanes kernels do: `shifted.rs` tests the bits).
pub(crate) fn wide_weight_grad_route<T: Scalar>(tier: Tier) -> Route {
    match route::<T>(tier, true) {
        Route::Dot(Tier::Avx2) => Route::Packed,
        other => other,
    }
}

/// The register tile of one packed product of `m` rows on `tier`; `b_columns_contiguous` when
/// the B source reads its columns as contiguous lines ([`super::PackB::columns_contiguous`]).
pub(crate) fn tile<T: Scalar>(tier: Tier, m: usize, b_columns_contiguous: bool) -> Tile {
    match tier {
        Tier::Portable => Tile::Portable,
        _ if !is_f32::<T>() => Tile::PortableAvx2,
        Tier::Avx512 => Tile::Avx512,
        // Fewer columns to interleave when packing, fewer partial tiles at the LeNet sizes.
        Tier::Avx2 if b_columns_contiguous && m <= NARROW_MAX_M => Tile::Avx2Narrow,
        Tier::Avx2 => Tile::Avx2,
    }
}

fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::check_plan;

    /// LeNet-5's products `(m, n, A·Bᵀ layout)` at batch `b`: each fully connected layer's
    /// forward `x·Wᵀ`, input gradient `g·W` and weight gradient `gᵀ·x`, and conv2's weight
    /// gradient on wide columns (16 × 150).
    fn lenet_products(b: usize) -> Vec<(usize, usize, bool)> {
        let mut v = vec![(16, 150, true)];
        for (inp, out) in [(400, 120), (120, 84), (84, 10)] {
            v.extend([(b, out, true), (b, inp, false), (out, inp, false)]);
        }
        v
    }

    /// Every tier's route and tile for every LeNet-5 product (batch 1, 32, 128, 256, 1000):
    /// never more than the tier, and a tier's own kernels are the ones measured faster than
    /// the tier below's on hardware of that tier (the AVX2 ones on Zen 3, the AVX-512 ones on
    /// an AVX-512 Xeon).
    #[test]
    fn every_tier_runs_what_it_has_and_nothing_slower() {
        for b in [1, 32, 128, 256, 1000] {
            for (m, n, abt) in lenet_products(b) {
                let what = format!("{m}×{n}, A·Bᵀ {abt}");
                let dots = [Route::Dot(Tier::Avx2), Route::Dot(Tier::Avx512)];
                check_plan(&what, |t| route::<f32>(t, abt), &dots);
                check_plan(&what, |t| route::<f64>(t, abt), &[]);
                check_plan(&what, wide_weight_grad_route::<f32>, &dots);
                for contiguous in [false, true] {
                    let tiles = [Tile::Avx2, Tile::Avx2Narrow, Tile::Avx512];
                    check_plan(&what, |t| tile::<f32>(t, m, contiguous), &tiles);
                    check_plan(
                        &what,
                        |t| tile::<f64>(t, m, contiguous),
                        &[Tile::PortableAvx2],
                    );
                }
            }
        }
    }

    /// The dot route is `f32` only and needs the `A·Bᵀ` layout; the narrow tile needs
    /// contiguous B columns and at most `NARROW_MAX_M` rows.
    #[test]
    fn routes_and_tiles_follow_their_conditions() {
        assert_eq!(route::<f32>(Tier::Avx2, true), Route::Dot(Tier::Avx2));
        assert_eq!(route::<f32>(Tier::Avx2, false), Route::Packed);
        assert_eq!(route::<f32>(Tier::Avx512, true), Route::Dot(Tier::Avx512));
        assert_eq!(route::<f32>(Tier::Avx512, false), Route::Packed);
        assert_eq!(route::<f64>(Tier::Avx512, true), Route::Packed);
        assert_eq!(route::<f32>(Tier::Portable, true), Route::Packed);
        assert_eq!(wide_weight_grad_route::<f32>(Tier::Avx2), Route::Packed);
        assert_eq!(
            wide_weight_grad_route::<f32>(Tier::Avx512),
            Route::Dot(Tier::Avx512)
        );
        assert_eq!(
            tile::<f32>(Tier::Avx2, NARROW_MAX_M, true),
            Tile::Avx2Narrow
        );
        assert_eq!(tile::<f32>(Tier::Avx2, NARROW_MAX_M + 1, true), Tile::Avx2);
        assert_eq!(tile::<f32>(Tier::Avx2, 8, false), Tile::Avx2);
        assert_eq!(tile::<f32>(Tier::Avx512, 8, true), Tile::Avx512);
        assert_eq!(tile::<f64>(Tier::Avx512, 8, true), Tile::PortableAvx2);
    }
}
