//! Average and max pooling over NCHW tensors: no padding, floor mode.
//!
//! Every `(n, c)` plane is pooled on its own, so planes are split over rayon's threads when the
//! whole op is big enough to pay for it; no value is ever summed across planes, so the result is
//! the same serial or parallel. Kernels work on contiguous planes: a non-standard-layout input
//! is copied once (caller buffers from `Array4::zeros` never are).
//!
//! LeNet's 2×2 stride-2 windows have kernels of their own, each picked by `plan_2x2` from the
//! tier: the generic `*_2x2_body` kernels, compiled per build by `vectorized!`, and, for the
//! `f32` backward spread from the AVX2 tier up, the vector kernels of `pool::vector` (the same
//! bits).
//!
//! # Panics
//! Every function panics if a kernel or stride is 0, the window does not fit the input, or an
//! output/gradient array does not have the shape the op produces.

use crate::activation::{relu_bwd, relu_fwd};
use crate::parallel::{with_standard_slice_mut, PAR_MIN_WORK};
use crate::shape::{check_shape, Expected};
use crate::tier::{Build, Needs};
use crate::{Scalar, Tier};
use ndarray::{Array4, ArrayView4, ArrayViewMut4};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod vector;

/// `vectorized!(fn name = body(args))` defines `name(build, args)`, which runs the
/// `#[inline(always)]` plain Rust kernel `body` compiled for AVX2 when `build` is
/// [`Build::Avx2`], else for the baseline target: the compiler vectorises it for whichever it
/// gets. The kernels use IEEE `+`, `·` and comparisons only (Rust never fuses a multiply-add on
/// its own), so both builds give the same bits.
macro_rules! vectorized {
    ($(#[$m:meta])* fn $name:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$m])*
        fn $name<T: Scalar>(build: Build, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2<T: Scalar>($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if build == Build::Avx2 {
                    // SAFETY: plans give the AVX2 build only to CPUs with AVX2 (`Needs`).
                    return unsafe { avx2($($arg),*) };
                }
            }
            let _ = build;
            $body($($arg),*)
        }
    };
}

/// The kernel of a 2×2 stride-2 pool pass (forward, fused ReLU forward, or backward spread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel2x2 {
    /// The generic kernel (`*_2x2_body`) in a build of [`vectorized!`].
    Generic(Build),
    /// The `f32` vector kernels of [`vector`] at a width.
    #[cfg(target_arch = "x86_64")]
    Vector(vector::Width),
}

impl Kernel2x2 {
    /// The build of a generic kernel: what [`plan_2x2`] gives every pass but the `f32` spread.
    ///
    /// # Panics
    /// For a vector kernel.
    #[track_caller]
    fn generic(self) -> Build {
        match self {
            Kernel2x2::Generic(build) => build,
            #[cfg(target_arch = "x86_64")]
            Kernel2x2::Vector(_) => unreachable!("only the f32 spread runs a vector kernel"),
        }
    }
}

impl Needs for Kernel2x2 {
    fn needs(&self) -> Tier {
        match self {
            Kernel2x2::Generic(build) => build.needs(),
            #[cfg(target_arch = "x86_64")]
            Kernel2x2::Vector(width) => width.tier(),
        }
    }
}

/// A pass of the 2×2 pool, as the plan tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// The average pool, alone or fused after the ReLU.
    Forward,
    /// The backward spread, masked by the ReLU or not.
    Spread,
}

/// The 2×2 pool kernel `tier` runs on scalars `T` for `pass`: the `f32` spread runs the vector
/// kernel at 8 lanes from the AVX2 tier up (16 lanes on AVX-512 measured no faster); every
/// other case the generic kernel's build for the tier (a vector forward, bit-identical,
/// took more time than it in a training epoch: writing the ReLU output bounds it).
fn plan_2x2<T: Scalar>(tier: Tier, pass: Pass) -> Kernel2x2 {
    let f32_spread = T::as_f32_slice(&[]).is_some() && tier >= Tier::Avx2 && pass == Pass::Spread;
    #[cfg(target_arch = "x86_64")]
    if f32_spread {
        return Kernel2x2::Vector(vector::Width::Eight);
    }
    let _ = f32_spread;
    Kernel2x2::Generic(Build::on(tier))
}

/// Window size and stride of a pooling op, each as (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window size (kh, kw), both ≥ 1.
    pub kernel: (usize, usize),
    /// Step between windows (sh, sw), both ≥ 1.
    pub stride: (usize, usize),
}

impl Pool2dParams {
    /// A square `k`×`k` window moved by `k`: the usual non-overlapping pool.
    ///
    /// ```
    /// let p = tensor::Pool2dParams::square(2);
    /// assert_eq!((p.kernel, p.stride), ((2, 2), (2, 2)));
    /// ```
    pub fn square(k: usize) -> Self {
        Pool2dParams {
            kernel: (k, k),
            stride: (k, k),
        }
    }

    /// Output size `floor((h - kh) / sh) + 1`, or `None` if the window does not fit or a kernel
    /// or stride is 0.
    ///
    /// ```
    /// let p = tensor::Pool2dParams { kernel: (3, 3), stride: (2, 2) };
    /// assert_eq!(p.output_size((9, 8)), Some((4, 3)));
    /// assert_eq!(p.output_size((2, 8)), None);
    /// ```
    pub fn output_size(&self, input: (usize, usize)) -> Option<(usize, usize)> {
        let (kh, kw) = self.kernel;
        let (sh, sw) = self.stride;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 || input.0 < kh || input.1 < kw {
            return None;
        }
        Some(((input.0 - kh) / sh + 1, (input.1 - kw) / sw + 1))
    }
}

/// The geometry of one pooling call, checked once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    p: Pool2dParams,
}

impl Geometry {
    #[track_caller]
    pub(crate) fn new(op: &str, input: (usize, usize, usize, usize), p: Pool2dParams) -> Self {
        let (n, c, h, w) = input;
        let (oh, ow) = p.output_size((h, w)).unwrap_or_else(|| {
            panic!(
                "{op}: a {:?} window with stride {:?} does not fit an input of {h}×{w} \
                 (kernel and stride must be ≥ 1 and the kernel at most the input size)",
                p.kernel, p.stride
            )
        });
        Geometry {
            planes: n * c,
            h,
            w,
            oh,
            ow,
            p,
        }
    }

    pub(crate) fn output_dim(&self, n: usize, c: usize) -> (usize, usize, usize, usize) {
        (n, c, self.oh, self.ow)
    }

    fn parallel(&self) -> bool {
        self.planes > 1
            && self.planes * self.oh * self.ow * self.p.kernel.0 * self.p.kernel.1 >= PAR_MIN_WORK
    }

    /// Elements in one input plane.
    pub(crate) fn in_plane(&self) -> usize {
        self.h * self.w
    }

    /// Elements in one output plane.
    pub(crate) fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Calls `f(p, plane)` for every plane `p` of `out`, planes being `plane_len` elements
    /// (an input or an output plane), in parallel if it pays. The one place pooling chooses
    /// between serial and parallel: `f` reads plane `p` of its other arrays itself.
    fn for_each_plane<T: Scalar>(
        &self,
        out: &mut [T],
        plane_len: usize,
        f: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        if self.parallel() {
            out.par_chunks_mut(plane_len)
                .enumerate()
                .for_each(|(p, o)| f(p, o));
        } else {
            out.chunks_mut(plane_len)
                .enumerate()
                .for_each(|(p, o)| f(p, o));
        }
    }

    /// Plane `p` of `a`, whose planes are `plane_len` elements.
    fn plane<T>(a: &[T], p: usize, plane_len: usize) -> &[T] {
        &a[p * plane_len..][..plane_len]
    }

    /// LeNet's pool: 2×2 windows with stride 2, which have their own kernels.
    fn is_2x2(&self) -> bool {
        self.p == Pool2dParams::square(2)
    }

    /// Index in the input plane of window (i, j)'s top-left corner.
    fn corner(&self, i: usize, j: usize) -> usize {
        i * self.p.stride.0 * self.w + j * self.p.stride.1
    }
}

// ---------------------------------------------------------------------------------------------
// Average pool: y[i,j] = (1/(kh·kw)) Σ_{u<kh, v<kw} x[i·sh+u, j·sw+v]
// ---------------------------------------------------------------------------------------------

/// `yrow[j] += Σ_{v < kw} xrow[j·sw + v]` for every output `j`, adding in `v` order. The usual
/// non-overlapping 2- and 3-wide windows get a constant width, so the compiler vectorises them;
/// every path adds in the same order, so they agree to the bit.
fn add_window_rows<T: Scalar>(yrow: &mut [T], xrow: &[T], kw: usize, sw: usize) {
    fn fixed<T: Scalar, const K: usize>(yrow: &mut [T], xrow: &[T]) {
        for (y, win) in yrow.iter_mut().zip(xrow.chunks_exact(K)) {
            *y = win.iter().fold(*y, |s, &v| s + v);
        }
    }
    match (kw, sw) {
        (2, 2) => fixed::<T, 2>(yrow, xrow),
        (3, 3) => fixed::<T, 3>(yrow, xrow),
        _ => {
            for (j, y) in yrow.iter_mut().enumerate() {
                *y = xrow[j * sw..][..kw].iter().fold(*y, |s, &v| s + v);
            }
        }
    }
}

/// `girow[j·sw + v] += grow[j] / area` for every output `j` and `v < kw` (the adjoint of
/// [`add_window_rows`], scaled).
fn spread_window_rows<T: Scalar>(girow: &mut [T], grow: &[T], area: T, kw: usize, sw: usize) {
    fn fixed<T: Scalar, const K: usize>(girow: &mut [T], grow: &[T], area: T) {
        for (win, &g) in girow.chunks_exact_mut(K).zip(grow) {
            let share = g / area;
            win.iter_mut().for_each(|v| *v = *v + share);
        }
    }
    match (kw, sw) {
        (2, 2) => fixed::<T, 2>(girow, grow, area),
        (3, 3) => fixed::<T, 3>(girow, grow, area),
        _ => {
            for (j, &g) in grow.iter().enumerate() {
                let share = g / area;
                girow[j * sw..][..kw]
                    .iter_mut()
                    .for_each(|v| *v = *v + share);
            }
        }
    }
}

/// Overwrites the input-gradient plane `gi` with the output-gradient plane `go` spread over
/// the windows: `gi[i·sh+u, j·sw+v] += go[i, j] / area` for every window `(i, j)` and every
/// `(u, v)` in it, starting from 0. The one spread of average pooling's backward passes; then
/// masked by `relu_output` (`[y > 0]`) when it is given. The 2×2 stride-2 case is
/// [`spread_2x2`].
fn spread_plane<T: Scalar>(gi: &mut [T], go: &[T], g: &Geometry, relu_output: Option<&[T]>) {
    if g.is_2x2() {
        let kernel = plan_2x2::<T>(Tier::active(), Pass::Spread);
        return spread_2x2(kernel, gi, go, relu_output, (g.w, g.ow));
    }
    spread_windows(gi, go, g);
    if let Some(y) = relu_output {
        for (d, &y) in gi.iter_mut().zip(y) {
            *d = relu_bwd(y, *d);
        }
    }
}

/// The general spread: zero-fill, then every window adds its share row by row (windows may
/// overlap, so inputs sum several shares).
fn spread_windows<T: Scalar>(gi: &mut [T], go: &[T], g: &Geometry) {
    let (kh, kw) = g.p.kernel;
    let (sh, sw) = g.p.stride;
    let area = T::from_f64((kh * kw) as f64);
    gi.fill(T::zero());
    for (i, grow) in go.chunks_exact(g.ow).enumerate() {
        for u in 0..kh {
            let girow = &mut gi[(i * sh + u) * g.w..][..g.w];
            spread_window_rows(girow, grow, area, kw, sw);
        }
    }
}

// 2×2 windows with stride 2 tile the plane: input (2i+u, 2j+v) is in window (i, j) only, so
// it gets exactly one share, 0 + g[i,j]/4 (the general loop's sum from 0; x/4 = x·¼ exactly),
// and the last row/column left over by an odd size gets none.
/// [`spread_windows`] (then the ReLU mask `relu_bwd(y, ·)` if `relu_output` is given) for 2×2
/// windows with stride 2: each element of `gi` (`[h, w]`) written once, no zero-fill pass.
#[inline(always)]
fn spread_2x2_body<T: Scalar>(
    gi: &mut [T],
    go: &[T],
    relu_output: Option<&[T]>,
    w: usize,
    ow: usize,
) {
    let covered = go.len() / ow * 2 * w; // rows 0..2·oh
    let (pairs, rest) = gi.split_at_mut(covered);
    rest.fill(T::zero());
    for (r, girow) in pairs.chunks_exact_mut(w).enumerate() {
        let (body, tail) = girow.split_at_mut(2 * ow);
        tail.fill(T::zero());
        let grow = &go[r / 2 * ow..][..ow];
        let yrow = relu_output.map(|y| &y[r * w..][..2 * ow]);
        match ow {
            8.. => spread_2x2_row::<T, 8>(body, grow, yrow),
            4.. => spread_2x2_row::<T, 4>(body, grow, yrow),
            _ => spread_2x2_row::<T, 1>(body, grow, yrow),
        }
    }
}

/// One input-gradient row of [`spread_2x2_body`]: `girow[2j + v] = 0 + grow[j]·¼`, masked by
/// `relu_bwd(yrow[2j + v], ·)` if the ReLU output row is given; `B` windows at a time.
#[inline(always)]
fn spread_2x2_row<T: Scalar, const B: usize>(girow: &mut [T], grow: &[T], yrow: Option<&[T]>) {
    let quarter = T::from_f64(0.25);
    let share = |g: T| T::zero() + g * quarter;
    for j in block_starts::<B>(grow.len()) {
        let (d, g) = (girow[2 * j..][..2 * B].chunks_exact_mut(2), &grow[j..][..B]);
        match yrow {
            Some(y) => {
                for ((d, y), &g) in d.zip(y[2 * j..][..2 * B].chunks_exact(2)).zip(g) {
                    d[0] = relu_bwd(y[0], share(g));
                    d[1] = relu_bwd(y[1], share(g));
                }
            }
            None => d.zip(g).for_each(|(d, &g)| d.fill(share(g))),
        }
    }
}

/// Mean over each window (divided by kh·kw).
///
/// # Panics
/// If the window does not fit (see the module docs).
///
/// ```
/// use ndarray::Array4;
/// let x = Array4::from_shape_vec((1, 1, 2, 4), vec![1.0_f32, 2., 3., 4., 5., 6., 7., 8.]).unwrap();
/// let y = tensor::avg_pool2d(x.view(), tensor::Pool2dParams::square(2));
/// assert_eq!(y.into_raw_vec_and_offset().0, vec![3.5, 5.5]);
/// ```
#[track_caller]
pub fn avg_pool2d<T: Scalar>(input: ArrayView4<'_, T>, params: Pool2dParams) -> Array4<T> {
    let (n, c, h, w) = input.dim();
    let g = Geometry::new("avg_pool2d", (n, c, h, w), params);
    let mut out = Array4::zeros(g.output_dim(n, c));
    avg_pool2d_into(input, params, out.view_mut());
    out
}

/// Like [`avg_pool2d`], overwriting `out` (`[n, c, oh, ow]`).
///
/// # Panics
/// If the window does not fit or `out` has the wrong shape.
///
/// ```
/// use ndarray::Array4;
/// let x = Array4::from_elem((2, 3, 5, 5), 1.0_f64);
/// let mut y = Array4::zeros((2, 3, 2, 2));
/// tensor::avg_pool2d_into(x.view(), tensor::Pool2dParams::square(2), y.view_mut());
/// assert!(y.iter().all(|&v| v == 1.0));
/// ```
#[track_caller]
pub fn avg_pool2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    params: Pool2dParams,
    out: ArrayViewMut4<'_, T>,
) {
    let (n, c, h, w) = input.dim();
    let g = Geometry::new("avg_pool2d", (n, c, h, w), params);
    check_shape(
        "avg_pool2d",
        "out",
        Expected::Shape(g.output_dim(n, c)),
        out.dim(),
    );
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    with_standard_slice_mut(out, |y| {
        g.for_each_plane(y, g.out_plane(), |p, y| {
            avg_pool_plane(&g, Geometry::plane(x, p, g.in_plane()), y);
        });
    });
}

/// Average-pools one input plane `x` (`[h, w]`) into the output plane `y` (`[oh, ow]`): the one
/// average-pool kernel, also run per image by the fused convolution
/// ([`relu_avg_pool_image`]). The 2×2 stride-2 case is [`avg_pool_2x2`].
pub(crate) fn avg_pool_plane<T: Scalar>(g: &Geometry, x: &[T], y: &mut [T]) {
    if g.is_2x2() {
        avg_pool_2x2(
            plan_2x2::<T>(Tier::active(), Pass::Forward),
            x,
            g.w,
            y,
            g.ow,
        );
    } else {
        avg_pool_windows(g, x, y);
    }
}

/// The general average pool of one plane, output row by output row: window row u of every
/// window is added at once, from 0, then the sums are divided by kh·kw.
fn avg_pool_windows<T: Scalar>(g: &Geometry, x: &[T], y: &mut [T]) {
    let (kh, kw) = g.p.kernel;
    let (sh, sw) = g.p.stride;
    let area = T::from_f64((kh * kw) as f64);
    for (i, yrow) in y.chunks_exact_mut(g.ow).enumerate() {
        yrow.fill(T::zero());
        for u in 0..kh {
            let xrow = &x[(i * sh + u) * g.w..][..g.w];
            add_window_rows(yrow, xrow, kw, sw);
        }
        for y in yrow.iter_mut() {
            *y = *y / area;
        }
    }
}

/// LeNet's pool, 2×2 windows with stride 2, over the plane `x` (`[h, w]`, rows 2i and 2i+1
/// pooled into row i of `y`): `y[i, j] = ((((0 + a0) + a1) + b0) + b1) · ¼` with `a`, `b` the
/// two rows' columns 2j, 2j+1 — the general loop's order (from 0, window row by window row),
/// and x/4 = x·¼ exactly, so it gives the same bits. The last row/column of an odd size is in
/// no window.
#[inline(always)]
fn avg_pool_2x2_body<T: Scalar>(x: &[T], w: usize, y: &mut [T], ow: usize) {
    for (pair, yrow) in x.chunks_exact(2 * w).zip(y.chunks_exact_mut(ow)) {
        let (a, b) = pair.split_at(w);
        match ow {
            8.. => avg_pool_2x2_row::<T, 8>(a, b, yrow),
            4.. => avg_pool_2x2_row::<T, 4>(a, b, yrow),
            _ => avg_pool_2x2_row::<T, 1>(a, b, yrow),
        }
    }
}

/// Starts of the blocks of `B` that cover `0..n` (`n ≥ B`), the last one moved back to end at
/// `n`: a block overlapping the one before recomputes a few outputs, to the same values. So
/// the 2×2 kernels run whole vectors only, with no scalar remainder on LeNet's narrow rows (5
/// and 14 outputs: blocks of 4 at 0, 1; of 8 at 0, 6).
#[inline(always)]
fn block_starts<const B: usize>(n: usize) -> impl Iterator<Item = usize> {
    (0..n).step_by(B).map(move |j| j.min(n - B))
}

/// One output row of [`avg_pool_2x2_body`] from input rows `a` and `b`, `B` outputs at a time.
#[inline(always)]
fn avg_pool_2x2_row<T: Scalar, const B: usize>(a: &[T], b: &[T], yrow: &mut [T]) {
    for j in block_starts::<B>(yrow.len()) {
        let (a, b) = (&a[2 * j..][..2 * B], &b[2 * j..][..2 * B]);
        avg_pool_2x2_block(a, b, &mut yrow[j..][..B]);
    }
}

/// `y[j] = ((((0 + a[2j]) + a[2j+1]) + b[2j]) + b[2j+1]) · ¼` for every `j < y.len()`.
#[inline(always)]
fn avg_pool_2x2_block<T: Scalar>(a: &[T], b: &[T], y: &mut [T]) {
    let quarter = T::from_f64(0.25);
    let (a, b) = (a.chunks_exact(2), b.chunks_exact(2));
    for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
        *y = (T::zero() + a[0] + a[1] + b[0] + b[1]) * quarter;
    }
}

/// For one image's convolution output `y` (`k` planes of `[h, w]`): the ReLU output `r =
/// relu(y)` and, plane by plane while it is in L1, its average pool `z` (`k` planes of `[oh,
/// ow]`). What [`Activation::Relu`](crate::Activation::Relu) then [`avg_pool2d`] compute, to the bit.
pub(crate) fn relu_avg_pool_image<T: Scalar>(g: &Geometry, y: &[T], r: &mut [T], z: &mut [T]) {
    if g.is_2x2() {
        let kernel = plan_2x2::<T>(Tier::active(), Pass::Forward);
        relu_avg_pool_2x2(kernel, (y, r, z), g.in_plane(), (g.w, g.ow));
        return;
    }
    let planes = r
        .chunks_exact_mut(g.in_plane())
        .zip(z.chunks_exact_mut(g.out_plane()));
    for ((r, z), y) in planes.zip(y.chunks_exact(g.in_plane())) {
        r.iter_mut().zip(y).for_each(|(r, &y)| *r = relu_fwd(y));
        avg_pool_windows(g, r, z);
    }
}

/// [`relu_avg_pool_image`] for 2×2 windows with stride 2, planes of `plane` elements `w` wide:
/// each plane rectified, then pooled while in L1.
#[inline(always)]
fn relu_avg_pool_2x2_body<T: Scalar>(
    y: &[T],
    r: &mut [T],
    z: &mut [T],
    plane: usize,
    w: usize,
    ow: usize,
) {
    let planes = r
        .chunks_exact_mut(plane)
        .zip(z.chunks_exact_mut(plane / w / 2 * ow));
    for ((r, z), y) in planes.zip(y.chunks_exact(plane)) {
        r.iter_mut().zip(y).for_each(|(r, &y)| *r = relu_fwd(y));
        avg_pool_2x2_body(r, w, z, ow);
    }
}

vectorized!(fn avg_pool_2x2_generic = avg_pool_2x2_body(x: &[T], w: usize, y: &mut [T], ow: usize));
vectorized!(fn relu_avg_pool_2x2_generic = relu_avg_pool_2x2_body(
    y: &[T], r: &mut [T], z: &mut [T], plane: usize, w: usize, ow: usize,
));
vectorized!(fn spread_2x2_generic = spread_2x2_body(
    gi: &mut [T], go: &[T], relu_output: Option<&[T]>, w: usize, ow: usize,
));

/// [`avg_pool_2x2_body`] by the kernel `kernel` (from [`plan_2x2`]).
fn avg_pool_2x2<T: Scalar>(kernel: Kernel2x2, x: &[T], w: usize, y: &mut [T], ow: usize) {
    avg_pool_2x2_generic(kernel.generic(), x, w, y, ow)
}

/// [`relu_avg_pool_2x2_body`] by the kernel `kernel` (from [`plan_2x2`]).
fn relu_avg_pool_2x2<T: Scalar>(
    kernel: Kernel2x2,
    (y, r, z): (&[T], &mut [T], &mut [T]),
    plane: usize,
    (w, ow): (usize, usize),
) {
    relu_avg_pool_2x2_generic(kernel.generic(), y, r, z, plane, w, ow)
}

/// [`spread_2x2_body`] by the kernel `kernel` (from [`plan_2x2`]).
fn spread_2x2<T: Scalar>(
    kernel: Kernel2x2,
    gi: &mut [T],
    go: &[T],
    relu_output: Option<&[T]>,
    (w, ow): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if let (Kernel2x2::Vector(width), Some(go)) = (kernel, T::as_f32_slice(go)) {
        let gi = T::as_f32_slice_mut(gi).expect("f32 like go");
        let y = relu_output.map(|y| T::as_f32_slice(y).expect("f32 like go"));
        return vector::spread(width, gi, go, y, (w, ow));
    }
    spread_2x2_generic(kernel.generic(), gi, go, relu_output, w, ow)
}

// ∂y[i,j]/∂x[i·sh+u, j·sw+v] = 1/(kh·kw) for every (u, v) in the window, so each input gets
// g[i,j]/(kh·kw) from every window that covers it (a sum where windows overlap).
/// Gradient of [`avg_pool2d`]: each window's upstream gradient, divided by kh·kw, spread over
/// the window (summed where windows overlap). `input_dim` is the forward input's shape.
///
/// # Panics
/// If the window does not fit `input_dim` or `grad_out` is not the forward output's shape.
///
/// ```
/// use ndarray::Array4;
/// let g = Array4::from_elem((1, 1, 1, 1), 4.0_f32);
/// let gi = tensor::avg_pool2d_backward(g.view(), tensor::Pool2dParams::square(2), (1, 1, 3, 3));
/// // the window covers the top-left 2×2; the last row and column are dropped (floor mode)
/// assert_eq!(gi.into_raw_vec_and_offset().0, vec![1., 1., 0., 1., 1., 0., 0., 0., 0.]);
/// ```
#[track_caller]
pub fn avg_pool2d_backward<T: Scalar>(
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
    input_dim: (usize, usize, usize, usize),
) -> Array4<T> {
    let mut gi = Array4::zeros(input_dim);
    avg_pool2d_backward_into(grad_out, params, gi.view_mut());
    gi
}

/// Like [`avg_pool2d_backward`], overwriting `grad_input` (whose shape is the forward input's).
///
/// # Panics
/// As [`avg_pool2d_backward`].
///
/// ```
/// use ndarray::Array4;
/// let g = Array4::from_elem((1, 1, 1, 1), 4.0_f64);
/// let mut gi = Array4::from_elem((1, 1, 2, 2), f64::NAN); // overwritten
/// tensor::avg_pool2d_backward_into(g.view(), tensor::Pool2dParams::square(2), gi.view_mut());
/// assert!(gi.iter().all(|&v| v == 1.0));
/// ```
#[track_caller]
pub fn avg_pool2d_backward_into<T: Scalar>(
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
    grad_input: ArrayViewMut4<'_, T>,
) {
    let (n, c, h, w) = grad_input.dim();
    let g = Geometry::new("avg_pool2d_backward", (n, c, h, w), params);
    let expected = Expected::Shape(g.output_dim(n, c));
    check_shape("avg_pool2d_backward", "grad_out", expected, grad_out.dim());
    let grad_out = grad_out.as_standard_layout();
    let go = grad_out.as_slice().expect("standard layout");
    with_standard_slice_mut(grad_input, |gi| {
        g.for_each_plane(gi, g.in_plane(), |p, gi| {
            spread_plane(gi, Geometry::plane(go, p, g.out_plane()), &g, None);
        });
    });
}

// Fused with the ReLU before the pool (LeNet-5's conv → relu → avg pool): with y = relu(x) and
// z = avg_pool(y), dL/dx = relu'(x) ⊙ avg_pool_backward(dL/dz), and relu'(x) = [y > 0] (x > 0
// exactly where y > 0). One pass: each gradient plane is spread, then masked while still in L1,
// instead of a pooling pass and a separate ReLU pass over the whole batch.

/// [`avg_pool2d_backward_into`] followed by ReLU's backward in one pass: `grad_input` is
/// overwritten with `avg_pool2d_backward(grad_out)` where `relu_output > 0`, and 0 elsewhere.
/// The fused convolution runs its plane kernel; this whole-batch form is its test.
#[cfg(test)]
#[track_caller]
pub(crate) fn avg_pool2d_relu_backward_into<T: Scalar>(
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
    relu_output: ArrayView4<'_, T>,
    grad_input: ArrayViewMut4<'_, T>,
) {
    let op = "avg_pool2d_relu_backward";
    let (n, c, h, w) = grad_input.dim();
    let g = Geometry::new(op, (n, c, h, w), params);
    check_shape(
        op,
        "grad_out",
        Expected::Shape(g.output_dim(n, c)),
        grad_out.dim(),
    );
    let expected = Expected::ShapeOf("grad_input", (n, c, h, w));
    check_shape(op, "relu_output", expected, relu_output.dim());
    let grad_out = grad_out.as_standard_layout();
    let go = grad_out.as_slice().expect("standard layout");
    let relu_output = relu_output.as_standard_layout();
    let y = relu_output.as_slice().expect("standard layout");
    with_standard_slice_mut(grad_input, |gi| {
        g.for_each_plane(gi, g.in_plane(), |p, gi| {
            let go = Geometry::plane(go, p, g.out_plane());
            avg_pool_relu_backward_plane(&g, go, Geometry::plane(y, p, g.in_plane()), gi);
        });
    });
}

/// One plane of [`avg_pool2d_relu_backward_into`]: overwrites `gi` (`[h, w]`) with the pooled
/// gradient `go` (`[oh, ow]`) spread over the windows, where the ReLU output `y` (`[h, w]`) is
/// positive, and 0 elsewhere. Also run per image by the fused convolution's backward pass.
pub(crate) fn avg_pool_relu_backward_plane<T: Scalar>(
    g: &Geometry,
    go: &[T],
    y: &[T],
    gi: &mut [T],
) {
    spread_plane(gi, go, g, Some(y));
}

// ---------------------------------------------------------------------------------------------
// Max pool: y[i,j] = max_{u<kh, v<kw} x[i·sh+u, j·sw+v]
// ---------------------------------------------------------------------------------------------

/// Offset, inside the plane, of the first maximum of window (i, j) in row-major order (the
/// element PyTorch's max pool picks). NaN counts as the maximum, so it propagates.
fn argmax_in_window<T: Scalar>(x: &[T], g: &Geometry, i: usize, j: usize) -> usize {
    let corner = g.corner(i, j);
    let mut best = corner;
    for u in 0..g.p.kernel.0 {
        let row = corner + u * g.w;
        for idx in row..row + g.p.kernel.1 {
            // strict `>`: a later equal value never replaces the first maximum
            if x[idx] > x[best] || (x[idx].is_nan() && !x[best].is_nan()) {
                best = idx;
            }
        }
    }
    best
}

/// Maximum over each window.
///
/// # Panics
/// If the window does not fit (see the module docs).
///
/// ```
/// use ndarray::Array4;
/// let x = Array4::from_shape_vec((1, 1, 2, 4), vec![1.0_f32, 2., 3., 4., 5., 6., 7., 0.]).unwrap();
/// let y = tensor::max_pool2d(x.view(), tensor::Pool2dParams::square(2));
/// assert_eq!(y.into_raw_vec_and_offset().0, vec![6., 7.]);
/// ```
#[track_caller]
pub fn max_pool2d<T: Scalar>(input: ArrayView4<'_, T>, params: Pool2dParams) -> Array4<T> {
    let (n, c, h, w) = input.dim();
    let g = Geometry::new("max_pool2d", (n, c, h, w), params);
    let mut out = Array4::zeros(g.output_dim(n, c));
    max_pool2d_into(input, params, out.view_mut());
    out
}

/// Like [`max_pool2d`], overwriting `out` (`[n, c, oh, ow]`).
///
/// # Panics
/// If the window does not fit or `out` has the wrong shape.
///
/// ```
/// use ndarray::Array4;
/// let x = Array4::from_shape_fn((1, 2, 3, 3), |(_, c, i, j)| (c * 9 + i * 3 + j) as f32);
/// let mut y = Array4::zeros((1, 2, 1, 1));
/// let p = tensor::Pool2dParams { kernel: (3, 3), stride: (1, 1) };
/// tensor::max_pool2d_into(x.view(), p, y.view_mut());
/// assert_eq!(y.into_raw_vec_and_offset().0, vec![8., 17.]);
/// ```
#[track_caller]
pub fn max_pool2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    params: Pool2dParams,
    out: ArrayViewMut4<'_, T>,
) {
    let (n, c, h, w) = input.dim();
    let g = Geometry::new("max_pool2d", (n, c, h, w), params);
    check_shape(
        "max_pool2d",
        "out",
        Expected::Shape(g.output_dim(n, c)),
        out.dim(),
    );
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    with_standard_slice_mut(out, |y| {
        g.for_each_plane(y, g.out_plane(), |p, y| {
            let x = Geometry::plane(x, p, g.in_plane());
            for i in 0..g.oh {
                for j in 0..g.ow {
                    y[i * g.ow + j] = x[argmax_in_window(x, &g, i, j)];
                }
            }
        });
    });
}

// y[i,j] = x[a(i,j)] with a(i,j) the window's first argmax, so ∂y[i,j]/∂x = 1 at a(i,j) and 0
// elsewhere (away from ties): each window's gradient goes to its argmax, summed over windows.
/// Gradient of [`max_pool2d`]: each window's upstream gradient goes to the window's first
/// maximum (row-major order), as in PyTorch. The argmax is recomputed from `input`.
///
/// # Panics
/// If the window does not fit or `grad_out` is not the forward output's shape.
///
/// ```
/// use ndarray::Array4;
/// // a tie: both 5s are maxima, the first one (row-major) gets the gradient
/// let x = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0_f32, 5., 5., 0.]).unwrap();
/// let g = Array4::from_elem((1, 1, 1, 1), 3.0_f32);
/// let gi = tensor::max_pool2d_backward(x.view(), g.view(), tensor::Pool2dParams::square(2));
/// assert_eq!(gi.into_raw_vec_and_offset().0, vec![0., 3., 0., 0.]);
/// ```
#[track_caller]
pub fn max_pool2d_backward<T: Scalar>(
    input: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
) -> Array4<T> {
    let mut gi = Array4::zeros(input.raw_dim());
    max_pool2d_backward_into(input, grad_out, params, gi.view_mut());
    gi
}

/// Like [`max_pool2d_backward`], overwriting `grad_input` (the shape of `input`).
///
/// # Panics
/// As [`max_pool2d_backward`], or if `grad_input` is not the shape of `input`.
///
/// ```
/// use ndarray::Array4;
/// let x = Array4::from_shape_vec((1, 1, 1, 3), vec![1.0_f64, 4., 2.]).unwrap();
/// let g = Array4::from_elem((1, 1, 1, 2), 1.0);
/// let p = tensor::Pool2dParams { kernel: (1, 2), stride: (1, 1) };
/// let mut gi = Array4::zeros((1, 1, 1, 3));
/// tensor::max_pool2d_backward_into(x.view(), g.view(), p, gi.view_mut());
/// assert_eq!(gi.into_raw_vec_and_offset().0, vec![0., 2., 0.]); // 4 wins both windows
/// ```
#[track_caller]
pub fn max_pool2d_backward_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Pool2dParams,
    grad_input: ArrayViewMut4<'_, T>,
) {
    let (n, c, h, w) = input.dim();
    let g = Geometry::new("max_pool2d_backward", (n, c, h, w), params);
    let op = "max_pool2d_backward";
    check_shape(
        op,
        "grad_out",
        Expected::Shape(g.output_dim(n, c)),
        grad_out.dim(),
    );
    let expected = Expected::ShapeOf("input", (n, c, h, w));
    check_shape(op, "grad_input", expected, grad_input.dim());
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    let grad_out = grad_out.as_standard_layout();
    let go = grad_out.as_slice().expect("standard layout");
    with_standard_slice_mut(grad_input, |gi| {
        g.for_each_plane(gi, g.in_plane(), |p, gi| {
            let x = Geometry::plane(x, p, g.in_plane());
            let go = Geometry::plane(go, p, g.out_plane());
            gi.fill(T::zero());
            for i in 0..g.oh {
                for j in 0..g.ow {
                    let a = argmax_in_window(x, &g, i, j);
                    gi[a] = gi[a] + go[i * g.ow + j];
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_edge_cases() {
        let p = |k, s| Pool2dParams {
            kernel: (k, k),
            stride: (s, s),
        };
        assert_eq!(p(2, 2).output_size((2, 2)), Some((1, 1)));
        assert_eq!(p(2, 2).output_size((5, 7)), Some((2, 3)));
        assert_eq!(p(1, 1).output_size((3, 1)), Some((3, 1)));
        assert_eq!(p(3, 1).output_size((2, 5)), None);
        assert_eq!(p(0, 1).output_size((2, 5)), None);
        assert_eq!(p(2, 0).output_size((2, 5)), None);
    }

    #[test]
    fn max_pool_ties_go_to_the_first_maximum() {
        // every window is constant: all gradient goes to each window's top-left element
        let x = Array4::from_elem((1, 2, 4, 4), 7.0_f32);
        let go = Array4::from_shape_fn((1, 2, 2, 2), |(_, c, i, j)| (1 + c * 4 + i * 2 + j) as f32);
        let gi = max_pool2d_backward(x.view(), go.view(), Pool2dParams::square(2));
        for ((_, c, i, j), &v) in gi.indexed_iter() {
            let expect = if i % 2 == 0 && j % 2 == 0 {
                go[[0, c, i / 2, j / 2]]
            } else {
                0.0
            };
            assert_eq!(v, expect, "at {:?}", (c, i, j));
        }
        // a tie between the second and the last element: the second wins
        let x = Array4::from_shape_vec((1, 1, 2, 2), vec![0.0_f64, 3.0, 1.0, 3.0]).unwrap();
        let gi = max_pool2d_backward(
            x.view(),
            Array4::ones((1, 1, 1, 1)).view(),
            Pool2dParams::square(2),
        );
        assert_eq!(gi.into_raw_vec_and_offset().0, vec![0.0, 1.0, 0.0, 0.0]);
    }

    type PoolInto = for<'a, 'b> fn(ArrayView4<'a, f32>, Pool2dParams, ArrayViewMut4<'b, f32>);

    #[test]
    fn into_forms_overwrite_and_parallel_equals_serial() {
        // big enough (64 planes × 14 × 14 × 4) to take the parallel path
        let x = Array4::from_shape_fn((8, 8, 28, 28), |(n, c, i, j)| {
            (((n * 31 + c * 17 + i * 7 + j * 3) % 101) as f32) * 0.01 - 0.5
        });
        let p = Pool2dParams::square(2);
        for (fwd, name) in [
            (avg_pool2d_into::<f32> as PoolInto, "avg"),
            (max_pool2d_into::<f32>, "max"),
        ] {
            let mut big = Array4::from_elem((8, 8, 14, 14), f32::NAN);
            fwd(x.view(), p, big.view_mut());
            // serial reference: plane by plane (each plane alone is below the threshold)
            for n in 0..8 {
                let one = x.slice(ndarray::s![n..n + 1, .., .., ..]);
                let mut small = Array4::zeros((1, 8, 14, 14));
                fwd(one, p, small.view_mut());
                assert_eq!(
                    small.slice(ndarray::s![0, .., .., ..]),
                    big.slice(ndarray::s![n, .., .., ..]),
                    "{name}"
                );
            }
        }
        let go = Array4::from_shape_fn((8, 8, 14, 14), |(n, c, i, j)| (n + c + i + j) as f32);
        let mut gi = Array4::from_elem((8, 8, 28, 28), f32::NAN);
        max_pool2d_backward_into(x.view(), go.view(), p, gi.view_mut());
        assert_eq!(gi, max_pool2d_backward(x.view(), go.view(), p));
        assert!(gi.iter().all(|v| v.is_finite()));
        avg_pool2d_backward_into(go.view(), p, gi.view_mut());
        assert_eq!(gi, avg_pool2d_backward(go.view(), p, (8, 8, 28, 28)));
    }

    #[test]
    fn avg_pool_fast_paths_match_the_definition() {
        let x = Array4::from_shape_fn((2, 3, 7, 9), |(n, c, i, j)| {
            ((n * 131 + c * 71 + i * 37 + j * 11) % 97) as f64 / 97.0 - 0.5
        });
        for (kh, kw, sh, sw) in [
            (2, 2, 2, 2),
            (3, 3, 3, 3),
            (2, 3, 1, 3),
            (3, 2, 2, 2),
            (1, 2, 1, 2),
        ] {
            let p = Pool2dParams {
                kernel: (kh, kw),
                stride: (sh, sw),
            };
            let y = avg_pool2d(x.view(), p);
            let (oh, ow) = p.output_size((7, 9)).unwrap();
            assert_eq!(y.dim(), (2, 3, oh, ow));
            let g =
                Array4::from_shape_fn(y.dim(), |(n, c, i, j)| (n + 2 * c + 3 * i + 5 * j) as f64);
            let gi = avg_pool2d_backward(g.view(), p, x.dim());
            let mut gi_ref = Array4::<f64>::zeros(x.dim());
            for ((n, c, i, j), &yv) in y.indexed_iter() {
                let mut s = 0.0;
                for u in 0..kh {
                    for v in 0..kw {
                        s += x[[n, c, i * sh + u, j * sw + v]];
                        gi_ref[[n, c, i * sh + u, j * sw + v]] +=
                            g[[n, c, i, j]] / (kh * kw) as f64;
                    }
                }
                assert!(
                    (yv - s / (kh * kw) as f64).abs() < 1e-15,
                    "{p:?} at {:?}",
                    (n, c, i, j)
                );
            }
            assert!(
                gi.iter().zip(&gi_ref).all(|(a, b)| (a - b).abs() < 1e-12),
                "{p:?} backward"
            );
        }
    }

    #[test]
    fn fused_relu_backward_matches_the_two_steps_and_finite_differences() {
        use crate::Activation::Relu;
        // Pool windows of several shapes; x has exact zeros and values on both signs.
        for &((n, c, h, w), p) in &[
            ((3, 2, 6, 6), Pool2dParams::square(2)),
            (
                (2, 3, 7, 5),
                Pool2dParams {
                    kernel: (3, 2),
                    stride: (2, 1),
                },
            ),
            ((40, 6, 8, 8), Pool2dParams::square(2)), // parallel path
        ] {
            let x = Array4::from_shape_fn((n, c, h, w), |(a, b, i, j)| {
                ((a * 31 + b * 17 + i * 7 + j * 3) % 11) as f64 / 5.0 - 1.0
            });
            let y = Relu.forward(x.view());
            let (oh, ow) = p.output_size((h, w)).unwrap();
            let go = Array4::from_shape_fn((n, c, oh, ow), |(a, b, i, j)| {
                ((a + 2 * b + 3 * i + 5 * j) % 7) as f64 - 3.0
            });
            let want = Relu.backward(
                y.view(),
                avg_pool2d_backward(go.view(), p, (n, c, h, w)).view(),
            );
            let mut got = Array4::from_elem((n, c, h, w), f64::NAN);
            avg_pool2d_relu_backward_into(go.view(), p, y.view(), got.view_mut());
            assert_eq!(got, want);
            // L(x) = Σ go ⊙ avg_pool(Relu.forward(x)); central differences away from the kink at 0.
            let loss = |x: &Array4<f64>| (avg_pool2d(Relu.forward(x.view()).view(), p) * &go).sum();
            for idx in [(0, 0, 0, 0), (n - 1, c - 1, h - 1, w - 2), (1, 1, 2, 3)] {
                if x[idx].abs() < 1e-3 {
                    continue;
                }
                let mut xp = x.clone();
                xp[idx] += 1e-6;
                let mut xm = x.clone();
                xm[idx] -= 1e-6;
                let fd = (loss(&xp) - loss(&xm)) / 2e-6;
                assert!(
                    (fd - got[idx]).abs() < 1e-6,
                    "{idx:?}: {fd} vs {}",
                    got[idx]
                );
            }
        }
    }

    #[test]
    fn non_contiguous_views_are_accepted() {
        let x = Array4::from_shape_fn((2, 3, 6, 5), |(n, c, i, j)| {
            (n * 100 + c * 30 + i * 5 + j) as f64
        });
        let xt = x.view().permuted_axes([0, 1, 3, 2]); // [2, 3, 5, 6], not standard layout
        let p = Pool2dParams {
            kernel: (2, 3),
            stride: (1, 2),
        };
        let y = max_pool2d(xt, p);
        let y_ref = max_pool2d(xt.as_standard_layout().view(), p);
        assert_eq!(y, y_ref);
        let mut out_t = Array4::zeros((2, 3, 2, 4));
        let out_view = out_t.view_mut().permuted_axes([0, 1, 3, 2]);
        avg_pool2d_into(xt, p, out_view);
        assert_eq!(out_t.view().permuted_axes([0, 1, 3, 2]), avg_pool2d(xt, p));
    }

    /// Every value kind the 2×2 kernels must treat as the general loop does: both signs, both
    /// zeros (`0 + -0 = +0`), NaN (propagated forward, masked backward) and subnormals.
    fn special_f32() -> impl proptest::strategy::Strategy<Value = f32> {
        use proptest::prelude::*;
        prop_oneof![
            6 => -2.0_f32..2.0,
            1 => Just(0.0),
            1 => Just(-0.0),
            1 => Just(f32::NAN),
            1 => Just(-1e-40),
        ]
    }

    /// `planes` planes of `h`×`w` (even and odd sizes: 1-, 4- and 8-wide blocks, dropped last
    /// row/column) with their values.
    fn planes_2x2() -> impl proptest::strategy::Strategy<Value = (usize, usize, usize, Vec<f32>)> {
        use proptest::prelude::*;
        (1..4_usize, 2..12_usize, 2..22_usize).prop_flat_map(|(p, h, w)| {
            let values = proptest::collection::vec(special_f32(), p * h * w);
            (Just(p), Just(h), Just(w), values)
        })
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(200))]

        /// The 2×2 stride-2 forward kernels (baseline build, the run-time choice, fused with
        /// the ReLU) give the bits of the general window loop.
        #[test]
        fn avg_pool_2x2_equals_the_window_loop((planes, h, w, x) in planes_2x2()) {
            let g = Geometry::new("test", (1, planes, h, w), Pool2dParams::square(2));
            let (pin, pout) = (g.in_plane(), g.out_plane());
            let r: Vec<f32> = x.iter().map(|&v| relu_fwd(v)).collect();
            for (x, name) in [(&x, "raw"), (&r, "relu")] {
                let mut want = vec![f32::NAN; planes * pout];
                let mut fast = vec![f32::NAN; planes * pout];
                let mut baseline = vec![f32::NAN; planes * pout];
                for p in 0..planes {
                    let (x, o) = (&x[p * pin..][..pin], p * pout..(p + 1) * pout);
                    avg_pool_windows(&g, x, &mut want[o.clone()]);
                    avg_pool_plane(&g, x, &mut fast[o.clone()]);
                    avg_pool_2x2_body(x, w, &mut baseline[o], g.ow);
                }
                proptest::prop_assert_eq!(bits(&fast), bits(&want), "{} {:?}", name, (h, w));
                proptest::prop_assert_eq!(bits(&baseline), bits(&want), "{}", name);
            }
            // fused: from the convolution output x, the ReLU output and its pool
            let (mut fr, mut fz) = (vec![f32::NAN; x.len()], vec![f32::NAN; planes * pout]);
            relu_avg_pool_image(&g, &x, &mut fr, &mut fz);
            let mut want = vec![0.0; planes * pout];
            for (r, z) in r.chunks_exact(pin).zip(want.chunks_exact_mut(pout)) {
                avg_pool_windows(&g, r, z);
            }
            proptest::prop_assert_eq!(bits(&fr), bits(&r));
            proptest::prop_assert_eq!(bits(&fz), bits(&want));
        }

        /// The 2×2 stride-2 backward spread (single write, ReLU mask fused; baseline build and
        /// the run-time choice) gives the bits of zero-fill + general spread (+ mask).
        #[test]
        fn spread_2x2_equals_the_window_loop((planes, h, w, y) in planes_2x2(), seed: u64) {
            let g = Geometry::new("test", (1, planes, h, w), Pool2dParams::square(2));
            let (pin, pout) = (g.in_plane(), g.out_plane());
            // the output gradient: the input values reused, shuffled by the seed
            let go: Vec<f32> = (0..planes * pout)
                .map(|i| y[(i * 7 + seed as usize % 13) % y.len()])
                .collect();
            for mask in [None, Some(&y[..])] {
                let mut want = vec![f32::NAN; y.len()];
                let mut fast = vec![f32::NAN; y.len()];
                let mut baseline = vec![f32::NAN; y.len()];
                for p in 0..planes {
                    let (i, go) = (p * pin..(p + 1) * pin, &go[p * pout..][..pout]);
                    let m = mask.map(|y| &y[i.clone()]);
                    spread_windows(&mut want[i.clone()], go, &g);
                    if let Some(m) = m {
                        let want = &mut want[i.clone()];
                        want.iter_mut().zip(m).for_each(|(d, &y)| *d = relu_bwd(y, *d));
                    }
                    spread_plane(&mut fast[i.clone()], go, &g, m);
                    spread_2x2_body(&mut baseline[i], go, m, w, g.ow);
                }
                let masked = mask.is_some();
                proptest::prop_assert_eq!(bits(&fast), bits(&want), "mask {} {:?}", masked, (h, w));
                proptest::prop_assert_eq!(bits(&baseline), bits(&want), "mask {}", masked);
            }
        }
    }

    /// On every tier, whatever this machine has: the 2×2 kernels need no more than the tier;
    /// the `f32` spread runs the 8-lane vector kernel from the AVX2 tier up (measured faster
    /// than the AVX2 build of the generic one), the forward passes and `f64` the generic
    /// kernels' builds.
    #[test]
    fn every_tier_runs_what_it_has_and_nothing_slower() {
        let avx2 = Kernel2x2::Generic(Build::Avx2);
        #[cfg(target_arch = "x86_64")]
        let spread = [avx2, Kernel2x2::Vector(vector::Width::Eight)];
        #[cfg(not(target_arch = "x86_64"))]
        let spread = [avx2];
        let f32_spread = |t| plan_2x2::<f32>(t, Pass::Spread);
        crate::tier::check_plan("2×2 spread, f32", f32_spread, &spread);
        for pass in [Pass::Forward, Pass::Spread] {
            let f64_plan = |t| plan_2x2::<f64>(t, pass);
            crate::tier::check_plan("2×2 pool, f64", f64_plan, &[avx2]);
        }
        let f32_forward = |t| plan_2x2::<f32>(t, Pass::Forward);
        crate::tier::check_plan("2×2 forward, f32", f32_forward, &[avx2]);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            f32_spread(Tier::Avx512),
            Kernel2x2::Vector(vector::Width::Eight)
        );
        assert_eq!(f32_forward(Tier::Avx512), avx2);
        assert_eq!(
            f32_spread(Tier::Portable),
            Kernel2x2::Generic(Build::Baseline)
        );
    }

    /// The vector kernels a test can run here: every width whose tier the CPU has.
    fn vector_kernels() -> Vec<Kernel2x2> {
        #[cfg(target_arch = "x86_64")]
        {
            let widths = [vector::Width::Eight, vector::Width::Sixteen];
            let have = widths.into_iter().filter(|w| w.tier().is_supported());
            have.map(Kernel2x2::Vector).collect()
        }
        #[cfg(not(target_arch = "x86_64"))]
        Vec::new()
    }

    /// A value of every kind at `i`: both signs, both zeros, NaN, subnormals.
    fn value(i: usize) -> f32 {
        match i * 7 % 11 {
            0 => 0.0,
            1 => -0.0,
            2 => f32::NAN,
            3 => -1e-40,
            k => (i % 13) as f32 * 0.37 - 2.0 + k as f32 * 0.01,
        }
    }

    const FILL: u32 = 0x7fc0_dead; // a NaN the kernels never write

    /// A buffer of `len` scalars followed by `extra` of [`FILL`], for the kernels to write the
    /// first `len`: the rest must stay [`FILL`].
    fn padded(len: usize) -> Vec<f32> {
        vec![f32::from_bits(FILL); len + 19]
    }

    fn untouched_past(v: &[f32], len: usize) -> bool {
        v[len..].iter().all(|v| v.to_bits() == FILL)
    }

    /// Every vector spread gives the generic kernel's bits on every row length from 2 to 40
    /// (rows ending mid-vector, odd widths and heights), writes nothing past its outputs, and
    /// masks as `relu_bwd` does at 0, −0 and NaN.
    #[test]
    fn vector_kernels_give_the_generic_bits_on_every_tail() {
        for kernel in vector_kernels() {
            for (h, w) in (2..=7).flat_map(|h| (2..=40).map(move |w| (h, w))) {
                let g = Geometry::new("t", (1, 2, h, w), Pool2dParams::square(2));
                let (pin, pout) = (g.in_plane(), g.out_plane());
                let at = format!("{kernel:?} {h}×{w}");
                let x: Vec<f32> = (0..2 * pin).map(|i| value(i + h + w)).collect();
                // backward, unmasked and masked by a ReLU output with 0, −0, NaN and negatives
                let go: Vec<f32> = (0..pout).map(|i| value(3 * i + 5)).collect();
                for mask in [None, Some(&x[pin..])] {
                    let (mut want, mut got) = (padded(pin), padded(pin));
                    spread_2x2_body(&mut want[..pin], &go, mask, w, g.ow);
                    spread_2x2(kernel, &mut got[..pin], &go, mask, (w, g.ow));
                    let at = format!("backward {at}, mask {}", mask.is_some());
                    assert_eq!(bits(&got), bits(&want), "{at}");
                    assert!(untouched_past(&got, pin), "{at}");
                }
            }
        }
    }

    #[test]
    #[should_panic(
        expected = "max_pool2d: a (3, 3) window with stride (1, 1) does not fit an input of 2×5"
    )]
    fn window_too_big_panics() {
        let p = Pool2dParams {
            kernel: (3, 3),
            stride: (1, 1),
        };
        max_pool2d(Array4::<f32>::zeros((1, 1, 2, 5)).view(), p);
    }

    #[test]
    #[should_panic(
        expected = "avg_pool2d_backward: grad_out must be (1, 1, 2, 2), got (1, 1, 3, 3)"
    )]
    fn wrong_grad_out_shape_panics() {
        avg_pool2d_backward(
            Array4::<f32>::zeros((1, 1, 3, 3)).view(),
            Pool2dParams::square(2),
            (1, 1, 4, 4),
        );
    }
}
