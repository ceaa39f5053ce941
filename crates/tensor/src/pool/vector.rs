//! LeNet's pool (2×2 windows, stride 2) on `f32` in vector registers, written once over
//! [`F32s`] and instantiated at 8 lanes (AVX2) and 16 lanes (AVX-512F). Each output lane is
//! computed with the generic kernels' operations in their order, so every instance gives the
//! generic bits:
//!
//! * forward: two input rows loaded `2·LANES` scalars at a time, split into even and odd
//!   columns ([`F32s::deinterleave`]), then `((((0 + a_even) + a_odd) + b_even) + b_odd) · ¼`;
//!   fused with the ReLU, the input lanes are rectified in registers ([`F32s::relu`]) and the
//!   ReLU output is written by a flat pass over the plane;
//! * backward: `LANES` pooled gradients `0 + g · ¼`, each duplicated into its two columns
//!   ([`F32s::duplicate_pairs`]) and stored in both rows, masked by the ReLU output
//!   ([`F32s::where_positive`]) when it is given; the column and row an odd size leaves out of
//!   every window are set to 0.
//!
//! Rows of at least `LANES` outputs run whole vectors only (the last block moved back to end
//! at the row's end, recomputing a few outputs to the same values); shorter rows run one block
//! under masks, which read and write nothing past the row.

use crate::activation::relu_fwd;
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

/// `y` (`[h / 2, ow]`) = the average pool of the plane `x` (`[h, w]`), as
/// `avg_pool_2x2_body`.
///
/// # Panics
/// If the CPU lacks the width's tier, `ow != w / 2`, or the lengths disagree.
pub(crate) fn avg_pool(width: Width, x: &[f32], w: usize, y: &mut [f32], ow: usize) {
    assert!(width.tier().is_supported(), "the CPU has {width:?}'s tier");
    let pl = Plane::new(x.len() / w.max(1), w);
    assert!(ow == pl.ow && x.len() == pl.len_in() && y.len() == pl.len_out());
    // SAFETY: the tier is supported; `x` holds the plane, `y` its pool (asserted).
    unsafe {
        match width {
            Width::Eight => pool_8(pl, x.as_ptr(), y.as_mut_ptr()),
            Width::Sixteen => pool_16(pl, x.as_ptr(), y.as_mut_ptr()),
        }
    }
}

/// For the planes of `y` (`plane` scalars, `w` wide): the ReLU output `r = relu(y)` and the
/// average pool `z` of `r`, as `relu_avg_pool_2x2_body`.
///
/// # Panics
/// If the CPU lacks the width's tier, `ow != w / 2`, or the lengths disagree.
pub(crate) fn relu_avg_pool(
    width: Width,
    (y, r, z): (&[f32], &mut [f32], &mut [f32]),
    plane: usize,
    (w, ow): (usize, usize),
) {
    assert!(width.tier().is_supported(), "the CPU has {width:?}'s tier");
    let pl = Plane::new(plane / w.max(1), w);
    assert!(ow == pl.ow && plane == pl.len_in() && y.len() % plane == 0);
    assert!(r.len() == y.len() && z.len() == y.len() / plane * pl.len_out());
    let (y, r, z) = (
        y.chunks_exact(plane),
        r.chunks_exact_mut(plane),
        z.chunks_exact_mut(pl.len_out()),
    );
    for ((y, r), z) in y.zip(r).zip(z) {
        // SAFETY: the tier is supported; `y` and `r` hold one plane, `z` its pool.
        unsafe {
            match width {
                Width::Eight => relu_pool_8(pl, y.as_ptr(), r.as_mut_ptr(), z.as_mut_ptr()),
                Width::Sixteen => relu_pool_16(pl, y.as_ptr(), r.as_mut_ptr(), z.as_mut_ptr()),
            }
        }
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
/// AVX2 + FMA; [`pool_plane`]'s bounds.
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_8(pl: Plane, x: *const f32, y: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { pool_plane::<__m256>(pl, x, y) }
}

/// # Safety
/// AVX-512F; [`pool_plane`]'s bounds.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pool_16(pl: Plane, x: *const f32, y: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { pool_plane::<__m512>(pl, x, y) }
}

/// # Safety
/// AVX2 + FMA; [`relu_pool_plane`]'s bounds.
#[target_feature(enable = "avx2,fma")]
unsafe fn relu_pool_8(pl: Plane, y: *const f32, r: *mut f32, z: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { relu_pool_plane::<__m256>(pl, y, r, z) }
}

/// # Safety
/// AVX-512F; [`relu_pool_plane`]'s bounds.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn relu_pool_16(pl: Plane, y: *const f32, r: *mut f32, z: *mut f32) {
    // SAFETY: the caller's contract.
    unsafe { relu_pool_plane::<__m512>(pl, y, r, z) }
}

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

/// The average pool of one plane.
///
/// # Safety
/// The CPU has `V`'s tier; `x` is readable for the plane (`h·w`), `y` writable for its pool
/// (`oh·ow`).
#[inline(always)]
unsafe fn pool_plane<V: F32s>(pl: Plane, x: *const f32, y: *mut f32) {
    // SAFETY (every block): rows 2i and 2i+1 of x hold columns 2j .. 2j + 2n ≤ 2·ow ≤ w,
    // row i of y columns j .. j + n ≤ ow.
    unsafe {
        for i in 0..pl.oh {
            let (a, b) = (x.add(2 * i * pl.w), x.add((2 * i + 1) * pl.w));
            for (j, n) in Blocks::new(pl.ow, V::LANES) {
                let (a, b) = (load_2n::<V>(a.add(2 * j), n), load_2n::<V>(b.add(2 * j), n));
                store_n(mean_2x2(a, b), y.add(i * pl.ow + j), n);
            }
        }
    }
}

/// `((((0 + a_even) + a_odd) + b_even) + b_odd) · ¼` for the `2·LANES` columns `a` of one row
/// and `b` of the next, each as two vectors `(lo, hi)`.
///
/// # Safety
/// The CPU has `V`'s tier.
#[inline(always)]
unsafe fn mean_2x2<V: F32s>((a_lo, a_hi): (V, V), (b_lo, b_hi): (V, V)) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        let (ae, ao) = V::deinterleave(a_lo, a_hi);
        let (be, bo) = V::deinterleave(b_lo, b_hi);
        let sum = V::add(V::add(V::add(V::add(V::zero(), ae), ao), be), bo);
        V::mul(sum, V::splat(0.25))
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

/// One plane of the fused forward: row pair by row pair, the columns in windows loaded,
/// rectified, stored to `r` and pooled into `z`; the column and row left over by an odd size
/// rectified alone.
///
/// # Safety
/// The CPU has `V`'s tier; `y` is readable and `r` writable for the plane, `z` for its pool.
#[inline(always)]
unsafe fn relu_pool_plane<V: F32s>(pl: Plane, y: *const f32, r: *mut f32, z: *mut f32) {
    // SAFETY (every block): rows 2i and 2i+1 hold columns 2j .. 2j + 2n ≤ 2·ow ≤ w, row i of
    // z columns j .. j + n ≤ ow; the left-over column and row are inside the plane.
    unsafe {
        for i in 0..pl.oh {
            let (a, b) = (2 * i * pl.w, (2 * i + 1) * pl.w);
            for (j, n) in Blocks::new(pl.ow, V::LANES) {
                let (a, b) = (a + 2 * j, b + 2 * j);
                let (a_lo, a_hi) = load_2n::<V>(y.add(a), n);
                let (a_lo, a_hi) = (V::relu(a_lo), V::relu(a_hi));
                store_2n(a_lo, a_hi, r.add(a), n);
                let (b_lo, b_hi) = load_2n::<V>(y.add(b), n);
                let (b_lo, b_hi) = (V::relu(b_lo), V::relu(b_hi));
                store_2n(b_lo, b_hi, r.add(b), n);
                store_n(
                    mean_2x2((a_lo, a_hi), (b_lo, b_hi)),
                    z.add(i * pl.ow + j),
                    n,
                );
            }
            if pl.w > 2 * pl.ow {
                for at in [a + 2 * pl.ow, b + 2 * pl.ow] {
                    *r.add(at) = relu_fwd(*y.add(at));
                }
            }
        }
        let covered = 2 * pl.oh * pl.w;
        relu_flat::<V>(y.add(covered), r.add(covered), pl.len_in() - covered);
    }
}

/// `r[i] = relu(y[i])` for `i < len`.
///
/// # Safety
/// The CPU has `V`'s tier; `y` is readable and `r` writable for `len` scalars.
#[inline(always)]
unsafe fn relu_flat<V: F32s>(y: *const f32, r: *mut f32, len: usize) {
    let l = V::LANES;
    // SAFETY: whole vectors end at or before `len`, the last one reads and stores `len − i`
    // lanes (the caller's contract).
    unsafe {
        let mut i = 0;
        while i + l <= len {
            V::relu(V::load(y.add(i))).store(r.add(i));
            i += l;
        }
        if i < len {
            let tail = V::load_masked(y.add(i), V::first(len - i));
            V::relu(tail).store_first(r.add(i), len - i);
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
