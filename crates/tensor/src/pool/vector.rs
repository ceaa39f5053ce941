//! LeNet's pool backward (2×2 windows, stride 2) on `f32` in vector registers, written once
//! over [`F32s`] and instantiated at 8 lanes (AVX2) and 16 lanes (AVX-512F): `LANES` pooled
//! gradients `0 + g · ¼`, each duplicated into its two columns ([`F32s::duplicate_pairs`]) and
//! stored in both rows, masked by the ReLU output ([`F32s::where_positive`]) when it is given;
//! the column and row an odd size leaves out of every window are set to 0. Each output lane is
//! computed with the generic kernel's operations in their order, so every instance gives the
//! generic bits. (A forward kernel written the same way, ReLU fused, gave the generic bits too
//! but took more of a training epoch than the generic build: writing the ReLU output bounds
//! that pass, so the forward passes run the generic kernels.)
//!
//! Rows of at least `LANES` outputs run whole vectors only (the last block moved back to end
//! at the row's end, recomputing a few outputs to the same values); shorter rows run one block
//! under masks, which read and write nothing past the row.

use crate::simd::F32s;
use crate::Tier;
use std::arch::x86_64::{__m256, __m512};

/// The vector width of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Width {
    /// `__m256`, AVX2 + FMA.
    Eight,
    /// `__m512`, AVX-512F: tested, not planned (measured no faster than 8 lanes in an epoch).
    #[cfg_attr(not(test), allow(dead_code, reason = "no plan picks it"))]
    Sixteen,
}

impl Width {
    /// The tier the width needs.
    pub(crate) fn tier(self) -> Tier {
        match self {
            Width::Eight => Tier::Avx2,
            Width::Sixteen => Tier::Avx512,
        }
    }
}

/// A plane of the pool: `[h, w]` in, `[oh, ow]` out, `oh = h / 2`, `ow = w / 2`.
#[derive(Clone, Copy, Debug)]
struct Plane {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Plane {
    /// The plane of `h × w` inputs.
    ///
    /// # Panics
    /// If it is smaller than one window.
    fn new(h: usize, w: usize) -> Plane {
        assert!(h >= 2 && w >= 2, "a 2×2 window fits a {h}×{w} plane");
        Plane {
            h,
            w,
            oh: h / 2,
            ow: w / 2,
        }
    }

    fn len_in(&self) -> usize {
        self.h * self.w
    }

    fn len_out(&self) -> usize {
        self.oh * self.ow
    }
}

/// Overwrites the gradient plane `gi` (`[h, w]`) with the pooled gradient `go` (`[h / 2, ow]`)
/// spread over the windows, masked by the ReLU output `relu_output` (`[h, w]`) if it is given,
/// as `spread_2x2_body`.
///
/// # Panics
/// If the CPU lacks the width's tier, `ow != w / 2`, or the lengths disagree.
pub(crate) fn spread(
    width: Width,
    gi: &mut [f32],
    go: &[f32],
    relu_output: Option<&[f32]>,
    (w, ow): (usize, usize),
) {
    assert!(width.tier().is_supported(), "the CPU has {width:?}'s tier");
    let pl = Plane::new(gi.len() / w.max(1), w);
    assert!(ow == pl.ow && gi.len() == pl.len_in() && go.len() == pl.len_out());
    assert!(
        relu_output.is_none_or(|y| y.len() == gi.len()),
        "the ReLU output's length"
    );
    let (gi, go) = (gi.as_mut_ptr(), go.as_ptr());
    // SAFETY: the tier is supported; `gi` and the ReLU output hold the plane, `go` its pool.
    unsafe {
        match (width, relu_output) {
            (Width::Eight, None) => spread_8::<false>(pl, gi, go, go),
            (Width::Eight, Some(y)) => spread_8::<true>(pl, gi, go, y.as_ptr()),
            (Width::Sixteen, None) => spread_16::<false>(pl, gi, go, go),
            (Width::Sixteen, Some(y)) => spread_16::<true>(pl, gi, go, y.as_ptr()),
        }
    }
}

// The instances: each generic kernel compiled for its tier's instructions.

/// # Safety
/// AVX2 + FMA; [`spread_plane`]'s bounds.
#[target_feature(enable = "avx2,fma")]
unsafe fn spread_8<const MASK: bool>(pl: Plane, gi: *mut f32, go: *const f32, y: *const f32) {
    // SAFETY: the caller's contract.
    unsafe { spread_plane::<__m256, MASK>(pl, gi, go, y) }
}

/// # Safety
/// AVX-512F; [`spread_plane`]'s bounds.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn spread_16<const MASK: bool>(pl: Plane, gi: *mut f32, go: *const f32, y: *const f32) {
    // SAFETY: the caller's contract.
    unsafe { spread_plane::<__m512, MASK>(pl, gi, go, y) }
}

// The kernels, generic over the vector.

/// The blocks of `n` outputs covering a row of `ow` (`ow ≥ 1`), as `(start, n)`: blocks of
/// `LANES` (the last moved back to end at `ow`) when the row holds one, else one block of
/// `ow`. An iterator of its own: `step_by` divides to count its steps, a division per row.
#[derive(Clone, Copy)]
struct Blocks {
    next: usize,
    ow: usize,
    n: usize,
}

impl Blocks {
    #[inline(always)]
    fn new(ow: usize, lanes: usize) -> Blocks {
        Blocks {
            next: 0,
            ow,
            n: ow.min(lanes),
        }
    }
}

impl Iterator for Blocks {
    type Item = (usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        let j = self.next;
        (j < self.ow).then(|| {
            self.next = j + self.n;
            (j.min(self.ow - self.n), self.n)
        })
    }
}

/// `2n` scalars from `p` (`n ≤ LANES`) in two vectors, lanes past them 0 (and not read).
///
/// # Safety
/// The CPU has `V`'s tier; `p` is readable for `2n` scalars.
#[inline(always)]
unsafe fn load_2n<V: F32s>(p: *const f32, n: usize) -> (V, V) {
    let l = V::LANES;
    // SAFETY: every load reads below p + 2n (the caller's contract).
    unsafe {
        match 2 * n {
            m if m == 2 * l => (V::load(p), V::load(p.add(l))),
            m if m > l => (V::load(p), V::load_masked(p.add(l), V::first(m - l))),
            m if m == l => (V::load(p), V::zero()),
            m => (V::load_masked(p, V::first(m)), V::zero()),
        }
    }
}

/// Writes the `2n` first lanes of `lo ‖ hi` to `p` (`1 ≤ n ≤ LANES`; nothing past them).
///
/// # Safety
/// The CPU has `V`'s tier; `p` is writable for `2n` scalars.
#[inline(always)]
unsafe fn store_2n<V: F32s>(lo: V, hi: V, p: *mut f32, n: usize) {
    let l = V::LANES;
    // SAFETY: every store writes below p + 2n (the caller's contract).
    unsafe {
        if 2 * n <= l {
            store_n(lo, p, 2 * n);
        } else {
            lo.store(p);
            store_n(hi, p.add(l), 2 * n - l);
        }
    }
}

/// Writes the first `n` lanes of `v` to `p` (`1 ≤ n ≤ LANES`).
///
/// # Safety
/// The CPU has `V`'s tier; `p` is writable for `n` scalars.
#[inline(always)]
unsafe fn store_n<V: F32s>(v: V, p: *mut f32, n: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        match n == V::LANES {
            true => v.store(p),
            false => v.store_first(p, n),
        }
    }
}

/// The backward spread of one plane: `gi[2i+u, 2j+v] = 0 + go[i, j] · ¼`, masked by
/// `where_positive(y[2i+u, 2j+v], ·)` if `MASK`; 0 in the column and row no window covers.
///
/// # Safety
/// The CPU has `V`'s tier; `gi` is writable for the plane, `go` readable for its pool, and
/// with `MASK` `y` readable for the plane.
#[inline(always)]
unsafe fn spread_plane<V: F32s, const MASK: bool>(
    pl: Plane,
    gi: *mut f32,
    go: *const f32,
    y: *const f32,
) {
    // SAFETY: row i of go holds columns j .. j + n ≤ ow, rows 2i, 2i+1 of gi and y hold
    // columns 2j .. 2j + 2n ≤ 2·ow ≤ w; the left-over column and rows are inside the plane.
    unsafe {
        let quarter = V::splat(0.25);
        for i in 0..pl.oh {
            for (j, n) in Blocks::new(pl.ow, V::LANES) {
                let g = match n == V::LANES {
                    true => V::load(go.add(i * pl.ow + j)),
                    false => V::load_masked(go.add(i * pl.ow + j), V::first(n)),
                };
                let (lo, hi) = V::duplicate_pairs(V::add(V::zero(), V::mul(g, quarter)));
                for row in [2 * i, 2 * i + 1] {
                    let at = row * pl.w + 2 * j;
                    let (lo, hi) = match MASK {
                        true => {
                            let (ylo, yhi) = load_2n::<V>(y.add(at), n);
                            (V::where_positive(ylo, lo), V::where_positive(yhi, hi))
                        }
                        false => (lo, hi),
                    };
                    store_2n(lo, hi, gi.add(at), n);
                }
            }
            if pl.w > 2 * pl.ow {
                *gi.add(2 * i * pl.w + 2 * pl.ow) = 0.0;
                *gi.add((2 * i + 1) * pl.w + 2 * pl.ow) = 0.0;
            }
        }
        let covered = 2 * pl.oh * pl.w;
        std::ptr::write_bytes(gi.add(covered), 0, pl.len_in() - covered);
    }
}
