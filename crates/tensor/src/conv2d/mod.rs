//! 2-D convolution (cross-correlation, as in PyTorch), NCHW layout, by one of three methods:
//!
//! * `im2col` (every geometry): for one image, im2col lays every receptive field out as a
//!   column: `cols` is `[c·kh·kw, oh·ow]`, with row `(c, u, v)` holding
//!   `x[c, i·sh+u−ph, j·sw+v−pw]` (0 in the padding) at column `i·ow + j`. Then, with `W` viewed
//!   as `[k, c·kh·kw]`: forward `y_n = W · cols_n (+ b)`, a `[k, oh·ow]` block that *is* image n
//!   of the NCHW output; input gradient `dcols_n = Wᵀ · g_n`, scattered back by col2im (the
//!   adjoint of im2col); weight gradient `dW = Σ_n g_n · cols_nᵀ`;
//! * `direct` (one input channel, stride 1: LeNet-5's conv1): the same sums read straight from
//!   the image, output columns in the vector lanes and weights broadcast, with no columns in
//!   memory (see `direct.rs`);
//! * `shifted` (stride 1: LeNet-5's conv2): im2col's products on "wide" columns, numbered over
//!   the padded image width, so that every column row is one contiguous slice of the padded
//!   image: long copies instead of im2col's short rows, long adds instead of col2im's, and a
//!   training pass keeps only the padded images (see `shifted.rs`); on the AVX-512 tier its
//!   5 × 5 forward pass runs Winograd's F(2, 5), 0.6× the multiply-adds (`winograd.rs`).
//!
//! A [`Conv2dPlan`] with the ReLU and average pool option (`fused.rs`) runs the same kernels
//! with a ReLU and an average pool applied to each image's output inside the pass, and in
//! backward builds each image's output gradient from the pooled gradient just before it is
//! used.
//!
//! Bias gradient, for all: `db_k = Σ_{n,i,j} g[n,k,i,j]`. [`Conv2dPlan::new`] picks the method
//! ([`Conv2dMethod::choose`], the one place it is picked); the one-shot functions
//! ([`conv2d_into`], [`conv2d_backward_into`]) run a plan of their own.
//!
//! # Parallelism and determinism
//! The batch is cut into at most [`CONV_BATCH_CHUNKS`] chunks of consecutive images, each of
//! at least [`CHUNK_MIN_IMAGES`] (the last may be shorter), a pure function of the batch size
//! (never of the thread count). Each chunk owns a slot of the
//! calling thread's scratch ([`with_slots`]: the chunk's scratch and its partial weight/bias
//! sums) and runs its images in order. Chunks run on rayon's threads when the convolution is
//! big enough to pay for it. The weight and bias gradients are the chunk partial sums added in
//! chunk order, so they are bit-identical from run to run, serial or parallel, on any number
//! of threads (given a deterministic `gemm`).
//!
//! # Panics
//! Every function panics with a message naming the op and the shapes if a stride is 0, the kernel
//! does not fit the padded input, the input and weight channel counts differ, a dimension other
//! than the batch is 0, an output or gradient buffer does not have the shape it must have, or a
//! method is forced on a geometry it does not support.

mod direct;
#[cfg(target_arch = "x86_64")]
mod direct_simd;
#[cfg(target_arch = "x86_64")]
mod direct_winograd;
#[cfg(target_arch = "x86_64")]
mod dlanes;
#[cfg(target_arch = "x86_64")]
mod dwide;
mod fused;
mod im2col;
#[cfg(target_arch = "x86_64")]
mod lanes;
mod shifted;
mod taps;
#[cfg(target_arch = "x86_64")]
mod taps_simd;
#[cfg(target_arch = "x86_64")]
mod winograd;

mod plan;

pub use plan::Conv2dPlan;

use crate::parallel::{with_standard_slice_mut, PAR_MIN_WORK};
use crate::pool::Geometry as PoolGeometry;
use crate::scratch::{with_thread_buffer, ThreadBuffer};
use crate::shape::{check_shape, Expected};
use crate::{Pool2dParams, Scalar, Tier};
use fused::{GradOut, ReluPoolOut};
use ndarray::{
    Array1, Array4, ArrayView1, ArrayView4, ArrayViewMut1, ArrayViewMut4, CowArray, Ix4,
};
use rayon::iter::Either;
use rayon::prelude::*;
use std::cell::RefCell;

/// The batch is split into at most this many chunks of consecutive images, each with its own
/// scratch and partial gradient sums. Fixed (not the thread count) so that the summation order of
/// the weight gradient, and hence every bit of it, depends on the batch size only.
const CONV_BATCH_CHUNKS: usize = 32;

/// The fewest images a chunk holds (unless the batch has fewer). A chunk has fixed costs: its
/// partial sums zeroed, summed lane by lane and added to the others', and on AVX-512 conv2's
/// Winograd sums transformed back and the weight gradient transposed. With one image per chunk
/// they took about 4% of a training epoch at the data-parallel shard's 16 images per step; 4
/// images share them, and a step of 16 still splits over 4 threads (Zen 4, against one image
/// per chunk: batch 32 0.97× the epoch time on 2 threads, 10 rounds, and 0.97× on one, 5
/// rounds; batch 256 0.93×, 6 rounds; 8 and 16 images measured the same as 4).
const CHUNK_MIN_IMAGES: usize = 4;

/// Stride and zero padding of a convolution, each as (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between neighbouring output positions, (sh, sw). Both must be ≥ 1.
    pub stride: (usize, usize),
    /// Zeros added on each side of the input, (ph, pw).
    pub padding: (usize, usize),
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
        }
    }
}

impl Conv2dParams {
    /// Output spatial size for an input of `(h, w)` and a kernel of `(kh, kw)`:
    /// `floor((h + 2p - kh) / s) + 1`, or `None` if the kernel does not fit (or is empty) or a
    /// stride is 0.
    ///
    /// ```
    /// let p = tensor::Conv2dParams { stride: (2, 1), padding: (1, 0) };
    /// assert_eq!(p.output_size((9, 7), (3, 3)), Some((5, 5)));
    /// assert_eq!(p.output_size((1, 2), (3, 3)), None); // 2 columns, no padding, 3 wide
    /// ```
    pub fn output_size(
        &self,
        input: (usize, usize),
        kernel: (usize, usize),
    ) -> Option<(usize, usize)> {
        let dim = |len: usize, k: usize, s: usize, p: usize| {
            let padded = len + 2 * p;
            (k >= 1 && s >= 1 && padded >= k).then(|| (padded - k) / s + 1)
        };
        Some((
            dim(input.0, kernel.0, self.stride.0, self.padding.0)?,
            dim(input.1, kernel.1, self.stride.1, self.padding.1)?,
        ))
    }
}

thread_local! {
    /// This thread's convolution scratch ([`with_slots`]), held by the thread that calls a
    /// pass for the whole pass.
    static SLOTS: ThreadBuffer = const { RefCell::new(Vec::new()) };
    /// The weights of this thread's forward pass in its kernel's order ([`with_regrouped`]),
    /// held by the thread that calls the pass.
    static WEIGHTS: ThreadBuffer = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with `len` scalars of the calling thread's scratch, filled by `regroup`: a forward
/// pass's weights in the order its kernel reads them, regrouped once per pass and then read by
/// every chunk (a chunk is one image at batch 32, and a regroup costs about as much as a
/// fifth of conv2's forward pass over one image).
fn with_regrouped<T: Scalar, R>(
    len: usize,
    regroup: impl FnOnce(&mut [T]),
    f: impl FnOnce(&[T]) -> R,
) -> R {
    with_thread_buffer(&WEIGHTS, len, len, |wt| {
        regroup(wt);
        f(wt)
    })
}

/// Calls `f` with `g.chunks · slot` scalars of the calling thread's scratch, one slot of
/// `slot` scalars per batch chunk (see the module docs): each holds the chunk's scratch (im2col:
/// a column buffer of `c·kh·kw × oh·ow`, plus in backward a second one for the column gradient;
/// direct: one image's zero-bordered rows) and, in backward, the chunk's partial weight and
/// bias gradients (and with the fused ReLU and pool, one image's output gradient). Its contents
/// are leftovers of earlier passes: every pass writes before it reads. The first time it grows
/// it grows to `most` scalars ([`most_slots`]), so that every later pass of the convolution
/// finds it big enough ([`with_thread_buffer`]).
fn with_slots<T: Scalar, R>(
    g: &Geometry,
    slot: usize,
    most: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    with_thread_buffer(&SLOTS, g.chunks * slot, most, f)
}

/// Scalars of [`with_slots`]' scratch that the largest pass of `g` by `method` asks for: the
/// larger of a forward pass keeping nothing ([`forward_slot`]) and a backward pass from the
/// input with an input gradient ([`backward_slot`]); `fused`: with the ReLU and average pool.
fn most_slots(g: &Geometry, method: Conv2dMethod, fused: bool) -> usize {
    let gbuf = if fused { fused::grad_image_len(g) } else { 0 };
    // f32's slot is the largest (only f32 runs the Winograd weight gradient's bigger sums).
    let (_, backward) = backward_slot::<f32>(g, method, Kept::Input(&[]), true, gbuf);
    g.chunks * forward_slot(g, method).max(backward)
}

/// What the backward pass reads of a whole batch's input, kept by a plan's training forward
/// pass ([`Conv2dPlan::forward_into`]) as a by-product, so that its backward pass need not
/// rebuild it. For
/// the im2col method these are the im2col columns (those of `x_n` are exactly what
/// `dW = Σ_n g_n·cols_nᵀ` reads); for the direct and shifted methods, each image's
/// zero-bordered rows or padded planes (no columns at all). Both passes run the same method.
///
/// It remembers the input shape, weight shape and parameters it was filled for; the backward
/// pass checks them. It cannot know whether the input *values* changed since: the caller keeps
/// the input untouched between the two calls (a layer's forward input normally is). It grows to
/// [`kept_len`] scalars and is reused. It is state, not scratch: it lives from a forward pass
/// to the backward pass after it, so a [`Conv2dPlan`] owns it (scratch is per thread,
/// [`with_slots`]).
#[derive(Debug, Clone)]
struct Conv2dCache<T> {
    /// What the backward pass of `method` reads, for every image of the batch.
    kept: Vec<T>,
    method: Conv2dMethod,
    filled_for: Option<CacheKey>,
}

impl<T: Scalar> Default for Conv2dCache<T> {
    fn default() -> Self {
        Conv2dCache::new()
    }
}

/// What a [`Conv2dCache`] was filled for: input dims, weight dims, parameters.
type CacheKey = (
    (usize, usize, usize, usize),
    (usize, usize, usize, usize),
    Conv2dParams,
);

impl<T: Scalar> Conv2dCache<T> {
    /// An empty cache, holding nothing.
    fn new() -> Self {
        Conv2dCache {
            kept: Vec::new(),
            method: Conv2dMethod::Im2col,
            filled_for: None,
        }
    }

    /// Whether it holds what backward reads of an input of shape `input` for a weight of shape
    /// `weight` and `params`.
    fn is_filled_for(
        &self,
        input: (usize, usize, usize, usize),
        weight: (usize, usize, usize, usize),
        params: Conv2dParams,
    ) -> bool {
        self.filled_for == Some((input, weight, params))
    }

    /// Forgets what it kept (keeps the memory): the next backward pass must not use it.
    fn invalidate(&mut self) {
        self.filled_for = None;
    }
}

/// Number of scalars a caching forward pass by `method` keeps for the convolution `g`: the
/// im2col columns (`n·c·kh·kw·oh·ow`) for im2col, the zero-bordered images (about
/// `n·c·(h + 2·ph)·(w + 2·pw)`) for the direct and shifted methods.
fn kept_len(g: &Geometry, method: Conv2dMethod) -> usize {
    g.n * kept_per_image(g, method)
}

/// The three gradients of a convolution, as [`conv2d_backward`] returns them.
///
/// ```
/// use ndarray::Array4;
/// use tensor::{conv2d_backward, Conv2dGrads};
/// // one 3×3 image of ones, one 2×2 kernel of twos, dL/dy = 1 at each of the 2×2 outputs
/// let (x, w) = (Array4::ones((1, 1, 3, 3)), Array4::from_elem((1, 1, 2, 2), 2.0_f32));
/// let Conv2dGrads { input, weight, bias } =
///     conv2d_backward(x.view(), w.view(), Array4::ones((1, 1, 2, 2)).view(), Default::default());
/// assert_eq!(weight, Array4::from_elem((1, 1, 2, 2), 4.0)); // Σ over 4 outputs of 1·x
/// assert_eq!(bias[0], 4.0);
/// assert_eq!(input[[0, 0, 1, 1]], 8.0); // the centre is in all 4 windows: 4 · 2
/// assert_eq!(input[[0, 0, 0, 0]], 2.0); // a corner is in one
/// ```
#[derive(Debug, Clone)]
pub struct Conv2dGrads<T> {
    /// dL/dinput, `[n, c, h, w]`.
    pub input: Array4<T>,
    /// dL/dweight, `[k, c, kh, kw]`.
    pub weight: Array4<T>,
    /// dL/dbias, `[k]`.
    pub bias: Array1<T>,
}

/// Every size of one convolution call, checked once.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: Conv2dParams,
    /// Images per chunk and number of chunks.
    per_chunk: usize,
    chunks: usize,
    /// The kernel tier of the call: [`Tier::active`], or a plan's ([`Geometry::on`]).
    tier: Tier,
}

impl Geometry {
    #[track_caller]
    fn new(
        op: &str,
        input: (usize, usize, usize, usize),
        weight: (usize, usize, usize, usize),
        p: Conv2dParams,
    ) -> Self {
        let (n, c, h, w) = input;
        let (k, wc, kh, kw) = weight;
        assert!(
            wc == c,
            "{op}: input {input:?} has {c} channels but weight {weight:?} expects {wc} \
             (weight is [out, in, kh, kw])"
        );
        assert!(
            c > 0 && h > 0 && w > 0 && k > 0,
            "{op}: empty input {input:?} or weight {weight:?} (only the batch may be 0)"
        );
        let (oh, ow) = p.output_size((h, w), (kh, kw)).unwrap_or_else(|| {
            panic!(
                "{op}: a {kh}×{kw} kernel with stride {:?} and padding {:?} does not fit an \
                 input of {h}×{w} (strides must be ≥ 1, kernels non-empty and at most the \
                 padded input)",
                p.stride, p.padding
            )
        });
        let per_chunk = n.div_ceil(CONV_BATCH_CHUNKS).max(CHUNK_MIN_IMAGES);
        Geometry {
            n,
            c,
            h,
            w,
            k,
            kh,
            kw,
            oh,
            ow,
            p,
            per_chunk,
            chunks: n.div_ceil(per_chunk),
            tier: Tier::active(),
        }
    }

    /// The same geometry with the kernels of `tier`.
    fn on(self, tier: Tier) -> Self {
        Geometry { tier, ..self }
    }

    /// Rows of the column matrix: c·kh·kw.
    fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Length of the zero-padded copy of one image that [`im2col_padded`] works from: the
    /// padded planes for a stride-1 convolution with padding, else 0 (no copy needed).
    fn padded_len(&self) -> usize {
        if self.p.stride == (1, 1) && self.p.padding != (0, 0) {
            self.c * (self.h + 2 * self.p.padding.0) * (self.w + 2 * self.p.padding.1)
        } else {
            0
        }
    }
    /// Output positions per image: oh·ow.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
    fn input_dim(&self) -> (usize, usize, usize, usize) {
        (self.n, self.c, self.h, self.w)
    }
    fn output_dim(&self) -> (usize, usize, usize, usize) {
        (self.n, self.k, self.oh, self.ow)
    }
    fn weight_dim(&self) -> (usize, usize, usize, usize) {
        (self.k, self.c, self.kh, self.kw)
    }
    /// Length of one chunk's slot of per-image scratch: `one` scalars reused for every image
    /// when `img_stride` is 0, else one `img_stride` per image of the chunk (kept for the
    /// backward pass).
    fn slot_len(&self, one: usize, img_stride: usize) -> usize {
        if img_stride == 0 {
            one
        } else {
            self.per_chunk * img_stride
        }
    }

    /// Smallest number of chunks per rayon task: all of them (serial, on the calling thread)
    /// when the whole convolution is too small to pay for threads.
    fn min_chunks_per_task(&self) -> usize {
        let macs = self.n * self.k * self.ckk() * self.positions();
        if macs >= PAR_MIN_WORK {
            1
        } else {
            self.chunks.max(1)
        }
    }
}

/// `dst.copy_from_slice(src)` for the short rows convolutions move (an output row of 10 to 28
/// scalars): fixed-size pieces of 8, 4, 2 and 1 that compile to register moves. A plain
/// `copy_from_slice` of a length unknown at compile time calls `memcpy`, whose call and size
/// dispatch cost more than moving a few dozen bytes (it was an eighth of a single-image forward
/// pass).
#[inline(always)]
fn copy_row<T: Copy>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "copy_row: lengths differ");
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    let (d, s) = (d.into_remainder(), s.remainder());
    // The last n < 8 as two possibly overlapping pieces of a fixed size: the first and the last
    // 4 (or 2) scalars cover all n of them.
    let n = s.len();
    if n >= 4 {
        d[..4].copy_from_slice(&s[..4]);
        d[n - 4..].copy_from_slice(&s[n - 4..]);
    } else if n >= 2 {
        d[..2].copy_from_slice(&s[..2]);
        d[n - 2..].copy_from_slice(&s[n - 2..]);
    } else if n == 1 {
        d[0] = s[0];
    }
}

/// Copies one image `x` (`[c, h, w]`) into `xpad` (`[c, h + 2·ph, w + 2·pw]`), zeros around.
fn pad_planes<T: Scalar>(g: &Geometry, x: &[T], xpad: &mut [T]) {
    let (ph, pw) = g.p.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    if (ph, pw) == (0, 0) {
        return xpad.copy_from_slice(x);
    }
    xpad.fill(T::zero());
    for (src, dst) in x
        .chunks_exact(g.h * g.w)
        .zip(xpad.chunks_exact_mut(hp * wp))
    {
        for (r, row) in src.chunks_exact(g.w).enumerate() {
            copy_row(&mut dst[(r + ph) * wp + pw..][..g.w], row);
        }
    }
}

/// Starts the rows of one image's output (`[k, len]`, row `k` in `rows[k·len..]`) from the
/// bias, for a product that then accumulates on top: returns the `beta` to give `gemm` (1 with a
/// bias, 0 without, when the rows are left as they are).
fn start_from_bias<T: Scalar>(rows: &mut [T], len: usize, bias: Option<ArrayView1<'_, T>>) -> T {
    match bias {
        Some(b) => {
            for (row, &bk) in rows.chunks_exact_mut(len).zip(b.iter()) {
                row.fill(bk);
            }
            T::one()
        }
        None => T::zero(),
    }
}

/// Output indices `j` whose input index `j·s + v − p` lies in `0..len`, as a range `j0..j1`
/// within `0..out` (empty when the whole row falls in the padding).
fn valid_range(out: usize, s: usize, v: usize, p: usize, len: usize) -> (usize, usize) {
    let j0 = if p > v { (p - v).div_ceil(s) } else { 0 }.min(out);
    let j1 = if len + p > v {
        (len + p - v).div_ceil(s).min(out)
    } else {
        0
    };
    (j0, j1.max(j0))
}

// ---------------------------------------------------------------------------------------------
// Choosing the method
// ---------------------------------------------------------------------------------------------

/// How a convolution is computed. All give the same values up to rounding; a [`Conv2dPlan`]
/// runs [`Conv2dMethod::choose`]'s (benchmarks and tests can force another one, with the
/// `bench-internals` feature).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conv2dMethod {
    /// im2col columns and [`gemm`](crate::gemm): every geometry.
    Im2col,
    /// Direct convolution, reading the image in place (no columns in memory), vectorised over
    /// output columns: one input channel and stride 1 only (any kernel, padding, channel count
    /// out). LeNet-5's conv1.
    Direct,
    /// Stride 1 only: [`gemm`](crate::gemm) on "wide" columns, each row a contiguous slice of
    /// the padded image (long copies instead of im2col's short rows, long adds instead of
    /// col2im's; `shifted.rs`). LeNet-5's conv2.
    Shifted,
}

impl Conv2dMethod {
    /// The method for a weight of shape `weight` (`[k, c, kh, kw]`) and `params`, forward and
    /// backward: [`Direct`](Self::Direct) wherever it applies (forward measured 1.4–2× faster
    /// than im2col on LeNet-5's conv1 at batch 32 and 256, its weight and bias gradient 1.3–2×,
    /// `benches/benches/conv2d.rs`), else [`Shifted`](Self::Shifted) for stride 1 (on LeNet-5's
    /// conv2 it made a one-thread training epoch 1.1–1.3× faster than im2col), else
    /// [`Im2col`](Self::Im2col). So a training pass over LeNet-5 keeps no columns, only padded
    /// images. The only place the choice is made.
    pub fn choose(weight: (usize, usize, usize, usize), params: Conv2dParams) -> Conv2dMethod {
        if Conv2dMethod::Direct.supports(weight, params) {
            Conv2dMethod::Direct
        } else if Conv2dMethod::Shifted.supports(weight, params) {
            Conv2dMethod::Shifted
        } else {
            Conv2dMethod::Im2col
        }
    }

    /// Whether this method can compute a convolution with this weight shape and `params`
    /// (im2col: always; direct: one input channel and stride 1; shifted: stride 1).
    pub fn supports(self, weight: (usize, usize, usize, usize), params: Conv2dParams) -> bool {
        match self {
            Conv2dMethod::Im2col => true,
            Conv2dMethod::Direct => weight.1 == 1 && params.stride == (1, 1),
            Conv2dMethod::Shifted => params.stride == (1, 1),
        }
    }

    /// Panics, naming the op, if this method cannot compute the convolution `g`.
    #[track_caller]
    fn check(self, op: &str, g: &Geometry) {
        assert!(
            self.supports(g.weight_dim(), g.p),
            "{op}: method {self:?} does not support input {:?}, weight {:?}, stride {:?} \
             (direct: one input channel and stride 1; shifted: stride 1)",
            g.input_dim(),
            g.weight_dim(),
            g.p.stride
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Forward: y[n,k,i,j] = b[k] + Σ_{c,u,v} x[n,c,i·sh+u−ph, j·sw+v−pw] · w[k,c,u,v]
// ---------------------------------------------------------------------------------------------

/// `y[n,k,i,j] = b[k] + Σ_{c,u,v} x[n,c,i·sh+u−ph, j·sw+v−pw] · w[k,c,u,v]`.
///
/// `input` is `[n, c, h, w]`, `weight` `[k, c, kh, kw]`, `bias` `[k]`; the result is
/// `[n, k, oh, ow]` with `(oh, ow)` from [`Conv2dParams::output_size`].
///
/// # Panics
/// If the shapes do not agree or the kernel does not fit (see the module docs).
///
/// ```
/// use ndarray::{array, Array4};
/// // one 3×3 image, one 2×2 kernel summing its window, bias 0.5
/// let x = Array4::from_shape_vec((1, 1, 3, 3), (1..=9).map(|v| v as f32).collect()).unwrap();
/// let w = Array4::from_elem((1, 1, 2, 2), 1.0_f32);
/// let y = tensor::conv2d(x.view(), w.view(), Some(array![0.5].view()), Default::default());
/// assert_eq!(y.into_raw_vec_and_offset().0, vec![12.5, 16.5, 24.5, 28.5]);
/// ```
#[track_caller]
pub fn conv2d<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
) -> Array4<T> {
    let g = Geometry::new("conv2d", input.dim(), weight.dim(), params);
    let mut out = Array4::zeros(g.output_dim());
    conv2d_into(input, weight, bias, params, out.view_mut());
    out
}

/// Like [`conv2d`], overwriting `out` (`[n, k, oh, ow]`). Its scratch is the calling thread's,
/// grown on the first call and reused, so a second call of the same shapes allocates nothing.
/// A training loop uses a [`Conv2dPlan`] instead, whose forward pass keeps what the backward
/// pass reads.
///
/// # Panics
/// If the shapes do not agree or the kernel does not fit (see the module docs).
///
/// ```
/// use ndarray::Array4;
/// use tensor::{conv2d_into, Conv2dParams};
/// let x = Array4::from_elem((2, 1, 4, 4), 1.0_f64);
/// let w = Array4::from_elem((3, 1, 3, 3), 1.0);
/// let p = Conv2dParams { stride: (1, 1), padding: (1, 1) }; // "same" size
/// let mut y = Array4::zeros((2, 3, 4, 4));
/// conv2d_into(x.view(), w.view(), None, p, y.view_mut());
/// assert_eq!(y[[1, 2, 0, 0]], 4.0); // corner: 2×2 of the 3×3 window is inside
/// assert_eq!(y[[1, 2, 1, 1]], 9.0);
/// ```
#[track_caller]
pub fn conv2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
    out: ArrayViewMut4<'_, T>,
) {
    Conv2dPlan::new(weight.dim(), params).inference_into(input, weight, bias, out, None);
}

/// Length of one chunk's slot of [`with_slots`] in a forward pass by `method` that keeps
/// nothing: im2col's column buffer and padded image, direct's and shifted's padded image.
fn forward_slot(g: &Geometry, method: Conv2dMethod) -> usize {
    match method {
        Conv2dMethod::Im2col => g.ckk() * g.positions() + im2col::pad_len(g),
        Conv2dMethod::Direct => direct::image_len(g),
        Conv2dMethod::Shifted => shifted::image_len(g),
    }
}

/// The forward pass by `method`, keeping nothing for backward, and the fused ReLU and pool
/// when `epi` is given.
#[track_caller]
fn forward_uncached<T: Scalar>(
    g: &Geometry,
    method: Conv2dMethod,
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    out: ArrayViewMut4<'_, T>,
    epi: Option<ReluPoolOut<'_, T>>,
) {
    let most = most_slots(g, method, epi.is_some());
    let epi = check_forward(g, &out, bias, epi);
    with_slots(g, forward_slot(g, method), most, |slots| {
        let scratch = match method {
            Conv2dMethod::Im2col => {
                // One column buffer per chunk, rebuilt for each of its images, then one padded
                // image each.
                let (cols, pads) = slots.split_at_mut(g.chunks * g.ckk() * g.positions());
                Scratch::Im2col(cols, 0, pads)
            }
            // One padded image per chunk, reused for each of its images.
            Conv2dMethod::Direct => Scratch::Direct(slots, 0),
            Conv2dMethod::Shifted => Scratch::Shifted(slots, 0),
        };
        forward(g, input, weight, bias, out, scratch, epi);
    });
}

/// The forward pass by `method`, keeping in `cache` what the backward pass reads, and the fused
/// ReLU and pool when `epi` is given.
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn forward_caching<T: Scalar>(
    g: &Geometry,
    method: Conv2dMethod,
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    out: ArrayViewMut4<'_, T>,
    epi: Option<ReluPoolOut<'_, T>>,
    cache: &mut Conv2dCache<T>,
) {
    let most = most_slots(g, method, epi.is_some());
    let epi = check_forward(g, &out, bias, epi);
    cache.filled_for = None;
    // What the backward pass reads, kept for each image in the cache; per-chunk scratch in
    // the thread's slots.
    let img = kept_per_image(g, method);
    if cache.kept.len() < g.n * img {
        cache.kept.resize(g.n * img, T::zero());
    }
    let kept = &mut cache.kept[..g.n * img];
    let pads_len = match method {
        Conv2dMethod::Im2col => im2col::pad_len(g),
        Conv2dMethod::Direct | Conv2dMethod::Shifted => 0,
    };
    with_slots(g, pads_len, most, |pads| {
        // Either way, what the backward pass reads is a by-product of the forward pass.
        let scratch = match method {
            Conv2dMethod::Im2col => Scratch::Im2col(kept, img, pads),
            Conv2dMethod::Direct => Scratch::Direct(kept, img),
            Conv2dMethod::Shifted => Scratch::Shifted(kept, img),
        };
        forward(g, input, weight, bias, out, scratch, epi);
    });
    cache.method = method;
    cache.filled_for = Some((g.input_dim(), g.weight_dim(), g.p));
}

/// Scalars a caching forward pass keeps per image for `method`'s backward pass: the im2col
/// columns, or the direct method's zero-bordered image.
fn kept_per_image(g: &Geometry, method: Conv2dMethod) -> usize {
    match method {
        Conv2dMethod::Im2col => g.ckk() * g.positions(),
        Conv2dMethod::Direct => direct::image_len(g),
        Conv2dMethod::Shifted => shifted::image_len(g),
    }
}

/// Scratch of one forward pass, and by its kind the method that runs.
enum Scratch<'a, T> {
    /// im2col: the column slots of the chunks, where image `i` of a chunk writes its columns
    /// at `i·img_stride` within its slot (0: one buffer reused; `c·kh·kw·oh·ow`: every image
    /// kept), and one padded image per chunk.
    Im2col(&'a mut [T], usize, &'a mut [T]),
    /// direct: the image slots of the chunks, where image `i` of a chunk writes its
    /// zero-bordered rows at `i·img_stride` within its slot (0: one buffer reused; the image
    /// length: every image kept).
    Direct(&'a mut [T], usize),
    /// shifted: the padded-image slots of the chunks, as for direct (its wide matrices are
    /// per-thread scratch).
    Shifted(&'a mut [T], usize),
}

/// Checks a forward pass's output, bias and fused outputs against `g`, at the caller's line
/// (so before any closure: a closure does not pass it on); returns the fused outputs with the
/// pool's geometry.
#[track_caller]
fn check_forward<'a, T>(
    g: &Geometry,
    out: &ArrayViewMut4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    epi: Option<ReluPoolOut<'a, T>>,
) -> Option<(ReluPoolOut<'a, T>, PoolGeometry)> {
    check_shape("conv2d", "out", Expected::Shape(g.output_dim()), out.dim());
    if let Some(b) = bias {
        check_shape("conv2d", "bias length", Expected::Shape(g.k), b.len());
    }
    epi.map(|e| {
        let pool = e.check(g);
        (e, pool)
    })
}

/// The forward pass on checked outputs ([`check_forward`]): makes the operands contiguous,
/// runs the method (with the fused ReLU and pool when `epi` is given).
fn forward<T: Scalar>(
    g: &Geometry,
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    out: ArrayViewMut4<'_, T>,
    scratch: Scratch<'_, T>,
    epi: Option<(ReluPoolOut<'_, T>, PoolGeometry)>,
) {
    if g.n == 0 {
        return;
    }
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    let weight = weight.as_standard_layout();
    let w = weight.as_slice().expect("standard layout");
    let run = |y: &mut [T], epi: Option<fused::Epilogue<'_, T>>| match scratch {
        Scratch::Im2col(cols, img_stride, pads) => {
            im2col::forward(g, x, w, bias, y, (cols, img_stride), pads, epi)
        }
        Scratch::Direct(images, img_stride) => {
            direct::forward(g, x, w, bias, y, (images, img_stride), epi)
        }
        Scratch::Shifted(images, img_stride) => {
            shifted::forward(g, x, w, bias, y, (images, img_stride), epi)
        }
    };
    with_standard_slice_mut(out, |y| match epi {
        Some((e, pool)) => with_standard_slice_mut(e.relu, |relu| {
            with_standard_slice_mut(e.pooled, |pooled| {
                run(y, Some(fused::Epilogue { relu, pooled, pool }))
            })
        }),
        None => run(y, None),
    });
}

// ---------------------------------------------------------------------------------------------
// Backward. y is linear in w, b and x, so with g = dL/dy:
//   dL/dw[k,c,u,v] = Σ_{n,i,j} g[n,k,i,j] · x[n,c,i·sh+u−ph, j·sw+v−pw],
//   dL/db[k]       = Σ_{n,i,j} g[n,k,i,j],
//   dL/dx[n,c,r,s] = Σ_{k,u,v : r = i·sh+u−ph, s = j·sw+v−pw} g[n,k,i,j] · w[k,c,u,v].
// im2col.rs and direct.rs each derive the form they compute it in.
// ---------------------------------------------------------------------------------------------

/// Gradients of [`conv2d`] for the upstream gradient `grad_out` (`[n, k, oh, ow]`).
///
/// # Panics
/// If the shapes do not agree or the kernel does not fit (see the module docs).
///
/// ```
/// use ndarray::Array4;
/// use tensor::{conv2d_backward, Conv2dParams};
/// let x = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0_f32, 2., 3., 4.]).unwrap();
/// let w = Array4::from_elem((1, 1, 2, 2), 0.5_f32);
/// let g = Array4::from_elem((1, 1, 1, 1), 2.0_f32);
/// let grads = conv2d_backward(x.view(), w.view(), g.view(), Conv2dParams::default());
/// assert_eq!(grads.weight.into_raw_vec_and_offset().0, vec![2., 4., 6., 8.]); // g·x
/// assert_eq!(grads.input.into_raw_vec_and_offset().0, vec![1.; 4]);          // g·w
/// assert_eq!(grads.bias[0], 2.0);                                             // Σ g
/// ```
#[track_caller]
pub fn conv2d_backward<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Conv2dParams,
) -> Conv2dGrads<T> {
    let g = Geometry::new("conv2d_backward", input.dim(), weight.dim(), params);
    let mut grads = Conv2dGrads {
        input: Array4::zeros(g.input_dim()),
        weight: Array4::zeros(g.weight_dim()),
        bias: Array1::zeros(g.k),
    };
    conv2d_backward_into(
        input,
        weight,
        grad_out,
        params,
        Some(grads.input.view_mut()),
        grads.weight.view_mut(),
        Some(grads.bias.view_mut()),
    );
    grads
}

/// Like [`conv2d_backward`], overwriting caller-owned buffers. `grad_input` and `grad_bias` are
/// optional: the first layer of a network needs no input gradient (and skipping it saves the
/// `Wᵀ·g` product and col2im). Scratch as in [`conv2d_into`]. It rebuilds from `input` what
/// it reads (the im2col columns or padded images); a [`Conv2dPlan`] reads what its forward
/// pass kept.
///
/// # Panics
/// If the shapes do not agree or the kernel does not fit (see the module docs).
///
/// ```
/// use ndarray::{Array1, Array4};
/// use tensor::{conv2d_backward_into, Conv2dParams};
/// let x = Array4::from_elem((4, 2, 5, 5), 1.0_f32);
/// let w = Array4::from_elem((3, 2, 3, 3), 0.1_f32);
/// let g = Array4::from_elem((4, 3, 3, 3), 1.0_f32);
/// let (mut gw, mut gb) = (Array4::zeros((3, 2, 3, 3)), Array1::zeros(3));
/// conv2d_backward_into(x.view(), w.view(), g.view(), Conv2dParams::default(),
///                      None, gw.view_mut(), Some(gb.view_mut()));
/// assert!(gw.iter().all(|&v| v == 36.0)); // 4 images × 9 positions × 1 × 1
/// assert!(gb.iter().all(|&v| v == 36.0));
/// ```
#[track_caller]
pub fn conv2d_backward_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Conv2dParams,
    grad_input: Option<ArrayViewMut4<'_, T>>,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
) {
    let grads = (grad_input, grad_weight, grad_bias);
    Conv2dPlan::new(weight.dim(), params).backward_into(input, weight, grad_out, None, grads);
}

/// The backward pass from the input itself (nothing kept), by `method` on the kernels of
/// `tier`.
#[track_caller]
fn backward_from_input<T: Scalar>(
    (method, tier): (Conv2dMethod, Tier),
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    upstream: Upstream<'_, T>,
    params: Conv2dParams,
    grads: GradsMut<'_, T>,
) {
    let op = "conv2d_backward";
    let g = Geometry::new(op, input.dim(), weight.dim(), params).on(tier);
    method.check(op, &g);
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    backward(&g, method, Kept::Input(x), weight, upstream, grads);
}

/// The backward pass from what a caching forward pass kept in `cache`, on the kernels of
/// `tier`.
#[track_caller]
fn backward_from_kept<T: Scalar>(
    (cache, tier): (&Conv2dCache<T>, Tier),
    weight: ArrayView4<'_, T>,
    upstream: Upstream<'_, T>,
    params: Conv2dParams,
    grads: GradsMut<'_, T>,
) {
    let (g, kept) = cached_kept("conv2d_backward", cache, weight.dim(), params);
    backward(&g.on(tier), cache.method, kept, weight, upstream, grads);
}

/// The geometry `cache` was filled for and what it kept, checked against `weight` and `params`.
#[track_caller]
fn cached_kept<'c, T: Scalar>(
    op: &str,
    cache: &'c Conv2dCache<T>,
    weight: (usize, usize, usize, usize),
    params: Conv2dParams,
) -> (Geometry, Kept<'c, T>) {
    let (input_dim, weight_dim, cached_params) = cache
        .filled_for
        .unwrap_or_else(|| panic!("{op}: the cache holds no columns (run conv2d_into_caching)"));
    assert!(
        weight_dim == weight && cached_params == params,
        "{op}: the cache was filled for weight {weight_dim:?} and {cached_params:?}, \
         not weight {weight:?} and {params:?}"
    );
    let g = Geometry::new(op, input_dim, weight, params);
    let all = &cache.kept[..g.n * kept_per_image(&g, cache.method)];
    let kept = match cache.method {
        Conv2dMethod::Im2col => Kept::Columns(all),
        Conv2dMethod::Direct | Conv2dMethod::Shifted => Kept::Images(all),
    };
    (g, kept)
}

/// What the backward pass reads of the forward pass's input.
#[derive(Clone, Copy)]
enum Kept<'a, T> {
    /// The input itself (`[n, c, h, w]`, contiguous); im2col rebuilds the columns from it.
    Input(&'a [T]),
    /// The im2col columns of the whole batch (`[n, c·kh·kw, oh·ow]`): the im2col method's.
    Columns(&'a [T]),
    /// The zero-bordered rows (direct) or padded planes (shifted) of every image of the batch.
    Images(&'a [T]),
}

/// The caller's gradient buffers: input (optional), weight, bias (optional).
type GradsMut<'a, T> = (
    Option<ArrayViewMut4<'a, T>>,
    ArrayViewMut4<'a, T>,
    Option<ArrayViewMut1<'a, T>>,
);

/// The upstream gradient of a backward pass, as the caller gives it.
#[derive(Clone, Copy)]
enum Upstream<'a, T> {
    /// dL/d(convolution output), `[n, k, oh, ow]`.
    Conv(ArrayView4<'a, T>),
    /// dL/d(pooled output) `[n, k, poh, pow]` of the fused ReLU and average pool, with the
    /// ReLU output `[n, k, oh, ow]` (see `fused.rs`).
    ReluAvgPool {
        grad: ArrayView4<'a, T>,
        relu: ArrayView4<'a, T>,
        pool: Pool2dParams,
    },
}

/// The backward pass: checks the shapes, runs every chunk of the method (each writes its
/// partial weight and bias gradients after its scratch, in its own slot of [`with_slots`]),
/// then adds the partials in chunk order.
#[track_caller]
fn backward<T: Scalar>(
    g: &Geometry,
    method: Conv2dMethod,
    kept: Kept<'_, T>,
    weight: ArrayView4<'_, T>,
    upstream: Upstream<'_, T>,
    (grad_input, grad_weight, grad_bias): GradsMut<'_, T>,
) {
    let (grad, relu) = checked_upstream(g, &upstream);
    let grad = grad.as_slice().expect("standard layout");
    let go = match &relu {
        None => GradOut::Conv(grad),
        Some((relu, pool)) => GradOut::ReluAvgPool {
            grad,
            relu: relu.as_slice().expect("standard layout"),
            pool: *pool,
        },
    };
    check_grads(g, (&grad_input, &grad_weight, &grad_bias));
    let weight = weight.as_standard_layout();
    let w = weight.as_slice().expect("standard layout");

    let gbuf_len = go.scratch_len(g);
    let im2col_scratch = im2col::backward_scratch(g, kept, grad_input.is_some());
    let (scratch, slot) = backward_slot(g, method, kept, grad_input.is_some(), gbuf_len);
    let chunk = |wt: &[T], chunk: usize, s: &mut [T], gi: Option<&mut [T]>| {
        let (gbuf, s) = s.split_at_mut(gbuf_len);
        let go = (go, gbuf);
        match method {
            Conv2dMethod::Im2col => {
                im2col::backward_chunk(g, kept, w, go, chunk, s, im2col_scratch, gi)
            }
            Conv2dMethod::Direct => direct::backward_chunk(g, kept, w, go, chunk, s, gi),
            Conv2dMethod::Shifted => shifted::backward_chunk(g, kept, (w, wt), go, chunk, s, gi),
        }
    };
    let most = most_slots(g, method, go.is_fused());
    let dx = grad_input.is_some();
    with_slots(g, slot, most, |slots| {
        let all_chunks = |wt: &[T]| {
            let chunk = |n: usize, s: &mut [T], gi: Option<&mut [T]>| chunk(wt, n, s, gi);
            match grad_input {
                Some(gi) => with_standard_slice_mut(gi, |gi| {
                    for_each_chunk(g, slots, slot, Some(gi), chunk)
                }),
                None => for_each_chunk(g, slots, slot, None, chunk),
            }
        };
        match method {
            Conv2dMethod::Shifted => shifted::with_backward_weights(g, w, dx, all_chunks),
            Conv2dMethod::Im2col | Conv2dMethod::Direct => all_chunks(&[]),
        }
        sum_partials(g, slots, slot, scratch, grad_weight, grad_bias);
    });
}

/// The upstream gradient and, for the fused ReLU and pool, the ReLU output with the pool's
/// geometry: checked against `g`, contiguous.
type UpstreamArrays<'b, T> = (
    CowArray<'b, T, Ix4>,
    Option<(CowArray<'b, T, Ix4>, PoolGeometry)>,
);

/// [`UpstreamArrays`] of `upstream`, its shapes checked against `g`.
#[track_caller]
fn checked_upstream<'b, T: Scalar>(
    g: &Geometry,
    upstream: &'b Upstream<'_, T>,
) -> UpstreamArrays<'b, T> {
    let op = "conv2d_backward";
    match upstream {
        Upstream::Conv(grad_out) => {
            let want = Expected::Shape(g.output_dim());
            check_shape(op, "grad_out", want, grad_out.dim());
            (grad_out.as_standard_layout(), None)
        }
        Upstream::ReluAvgPool { grad, relu, pool } => {
            let op = "conv2d_relu_avg_pool2d_backward";
            let pool = PoolGeometry::new(op, g.output_dim(), *pool);
            let want = Expected::Shape(pool.output_dim(g.n, g.k));
            check_shape(op, "grad_pooled", want, grad.dim());
            let want = Expected::Shape(g.output_dim());
            check_shape(op, "relu_out", want, relu.dim());
            (
                grad.as_standard_layout(),
                Some((relu.as_standard_layout(), pool)),
            )
        }
    }
}

/// Panics, naming the op, unless the gradient buffers have the shapes of `g`'s input, weight
/// and bias.
#[track_caller]
fn check_grads<T>(
    g: &Geometry,
    (grad_input, grad_weight, grad_bias): (
        &Option<ArrayViewMut4<'_, T>>,
        &ArrayViewMut4<'_, T>,
        &Option<ArrayViewMut1<'_, T>>,
    ),
) {
    let op = "conv2d_backward";
    let want = Expected::Shape(g.weight_dim());
    check_shape(op, "grad_weight", want, grad_weight.dim());
    if let Some(gi) = grad_input {
        check_shape(op, "grad_input", Expected::Shape(g.input_dim()), gi.dim());
    }
    if let Some(gb) = grad_bias {
        check_shape(op, "grad_bias length", Expected::Shape(g.k), gb.len());
    }
}

/// One chunk's slot of [`with_slots`] in a backward pass by `method` that reads `kept`, with an
/// input gradient or not, when the upstream gradient builds each image's output gradient in
/// `gbuf` scalars ([`GradOut::scratch_len`]): that buffer, the method's scratch, then the
/// chunk's partial weight and bias gradients. Returns (where the partials start, slot length).
fn backward_slot<T: Scalar>(
    g: &Geometry,
    method: Conv2dMethod,
    kept: Kept<'_, T>,
    input_grad: bool,
    gbuf: usize,
) -> (usize, usize) {
    let scratch = gbuf
        + match method {
            Conv2dMethod::Im2col => {
                let (cols, dcols) = im2col::backward_scratch(g, kept, input_grad);
                cols + dcols
            }
            Conv2dMethod::Direct => direct::backward_scratch(g, kept),
            Conv2dMethod::Shifted => shifted::backward_scratch(g, kept),
        };
    (scratch, scratch + g.k * g.ckk() + g.k)
}

/// Runs `f(chunk, slot, grad_input of the chunk's images)` for every batch chunk, on rayon's
/// threads when the convolution is big enough.
fn for_each_chunk<T: Scalar>(
    g: &Geometry,
    slots: &mut [T],
    slot: usize,
    grad_input: Option<&mut [T]>,
    f: impl Fn(usize, &mut [T], Option<&mut [T]>) + Sync + Send,
) {
    let in_img = g.c * g.h * g.w;
    let gi_chunks = match grad_input {
        Some(gi) => Either::Left(gi.par_chunks_mut(g.per_chunk * in_img).map(Some)),
        None => Either::Right(rayon::iter::repeat_n((), g.chunks).map(|_| None)),
    };
    slots
        .par_chunks_mut(slot)
        .zip(gi_chunks)
        .enumerate()
        .with_min_len(g.min_chunks_per_task())
        .for_each(|(chunk, (s, gi))| f(chunk, s, gi));
}

/// Deterministic reduction: overwrites the weight (and bias) gradient with the chunks' partial
/// sums (`[k, c·kh·kw]` then `[k]`, at `part_at` in each slot) added in chunk order.
fn sum_partials<T: Scalar>(
    g: &Geometry,
    slots: &[T],
    slot: usize,
    part_at: usize,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
) {
    let dw_len = g.k * g.ckk();
    let partials = || {
        slots
            .chunks_exact(slot)
            .take(g.chunks)
            .map(|s| &s[part_at..])
    };
    with_standard_slice_mut(grad_weight, |gw| {
        gw.fill(T::zero());
        for part in partials() {
            for (d, &s) in gw.iter_mut().zip(&part[..dw_len]) {
                *d = *d + s;
            }
        }
    });
    if let Some(gb) = grad_bias {
        with_standard_slice_mut(gb, |gb| {
            gb.fill(T::zero());
            for part in partials() {
                for (d, &s) in gb.iter_mut().zip(&part[dw_len..]) {
                    *d = *d + s;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_row_copies_every_length_and_nothing_more() {
        let src: Vec<u32> = (1..=40).collect();
        for n in 0..=40 {
            let mut dst = [0u32; 41];
            copy_row(&mut dst[..n], &src[..n]);
            assert_eq!(&dst[..n], &src[..n], "length {n}");
            assert!(
                dst[n..].iter().all(|&d| d == 0),
                "length {n} wrote past its end"
            );
        }
    }

    /// The definition, summed directly: the reference for the im2col kernels.
    fn conv_direct(
        x: &Array4<f64>,
        w: &Array4<f64>,
        b: &Array1<f64>,
        p: Conv2dParams,
    ) -> Array4<f64> {
        let (n, c, h, wd) = x.dim();
        let (k, _, kh, kw) = w.dim();
        let (oh, ow) = p.output_size((h, wd), (kh, kw)).unwrap();
        Array4::from_shape_fn((n, k, oh, ow), |(n, k, i, j)| {
            let mut s = b[k];
            for c in 0..c {
                for u in 0..kh {
                    for v in 0..kw {
                        let iy = (i * p.stride.0 + u) as isize - p.padding.0 as isize;
                        let ix = (j * p.stride.1 + v) as isize - p.padding.1 as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                            s += x[[n, c, iy as usize, ix as usize]] * w[[k, c, u, v]];
                        }
                    }
                }
            }
            s
        })
    }

    pub(super) fn pseudo(shape: (usize, usize, usize, usize), seed: usize) -> Array4<f64> {
        Array4::from_shape_fn(shape, |(a, b, c, d)| {
            let h = (a * 7919 + b * 104729 + c * 1299709 + d * 15485863 + seed * 32452843) % 2003;
            h as f64 / 1001.0 - 1.0
        })
    }

    #[test]
    fn output_size_edge_cases() {
        let p = |s, pad| Conv2dParams {
            stride: (s, s),
            padding: (pad, pad),
        };
        assert_eq!(p(1, 0).output_size((5, 5), (5, 5)), Some((1, 1)));
        assert_eq!(p(1, 2).output_size((28, 28), (5, 5)), Some((28, 28)));
        assert_eq!(p(2, 1).output_size((9, 7), (3, 3)), Some((5, 4)));
        assert_eq!(p(3, 0).output_size((4, 4), (2, 2)), Some((1, 1)));
        assert_eq!(p(1, 0).output_size((4, 4), (5, 1)), None);
        assert_eq!(p(1, 1).output_size((3, 1), (5, 3)), Some((1, 1)));
        assert_eq!(p(0, 0).output_size((4, 4), (1, 1)), None);
        assert_eq!(p(1, 0).output_size((4, 4), (0, 1)), None);
    }

    #[test]
    fn matches_the_direct_sum_for_odd_shapes() {
        let cases = [
            ((1, 1, 5, 5), (1, 1, 5, 5), Conv2dParams::default()),
            (
                (2, 3, 9, 7),
                (4, 3, 3, 3),
                Conv2dParams {
                    stride: (2, 2),
                    padding: (1, 1),
                },
            ),
            (
                (3, 2, 6, 11),
                (2, 2, 4, 2),
                Conv2dParams {
                    stride: (3, 2),
                    padding: (2, 0),
                },
            ),
            (
                (1, 1, 2, 3),
                (2, 1, 5, 5),
                Conv2dParams {
                    stride: (1, 3),
                    padding: (2, 3),
                },
            ),
            (
                (40, 1, 12, 12),
                (6, 1, 5, 5),
                Conv2dParams {
                    stride: (1, 1),
                    padding: (2, 2),
                },
            ),
        ];
        for (i, (xs, wsz, p)) in cases.into_iter().enumerate() {
            let x = pseudo(xs, 1);
            let w = pseudo(wsz, 2);
            let b = Array1::from_shape_fn(wsz.0, |k| k as f64 * 0.1 - 0.2);
            let got = conv2d(x.view(), w.view(), Some(b.view()), p);
            let want = conv_direct(&x, &w, &b, p);
            let err = (&got - &want).iter().fold(0.0_f64, |m, d| m.max(d.abs()));
            assert!(err < 1e-12, "case {i}: max error {err}");
        }
    }

    /// Scalars of this thread's convolution scratch.
    fn slots_len() -> usize {
        SLOTS.with(|lines| lines.borrow().len()) * std::mem::size_of::<crate::scratch::Line>()
            / std::mem::size_of::<f32>()
    }

    #[test]
    fn scratch_grows_once_and_backward_is_deterministic() {
        // 45 images: 23 chunks of 2 (the last one has 1), parallel.
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
        };
        let x = pseudo((45, 6, 14, 14), 5).mapv(|v| v as f32);
        let w = pseudo((16, 6, 5, 5), 6).mapv(|v| v as f32);
        let go = pseudo((45, 16, 10, 10), 7).mapv(|v| v as f32);
        let mut plan = Conv2dPlan::new(w.dim(), p);
        let mut y = Array4::zeros((45, 16, 10, 10));
        plan.inference_into(x.view(), w.view(), None, y.view_mut(), None);
        let grown = slots_len();
        assert!(grown > 0);
        let mut gi = Array4::from_elem((45, 6, 14, 14), f32::NAN);
        let mut gw = Array4::from_elem((16, 6, 5, 5), f32::NAN);
        let mut gb = Array1::from_elem(16, f32::NAN);
        plan.backward_into(
            x.view(),
            w.view(),
            go.view(),
            None,
            (Some(gi.view_mut()), gw.view_mut(), Some(gb.view_mut())),
        );
        assert_eq!(
            slots_len(),
            grown,
            "the forward pass grew it for backward too"
        );
        let first = (gi.clone(), gw.clone(), gb.clone());
        for _ in 0..5 {
            plan.inference_into(x.view(), w.view(), None, y.view_mut(), None);
            plan.backward_into(
                x.view(),
                w.view(),
                go.view(),
                None,
                (Some(gi.view_mut()), gw.view_mut(), Some(gb.view_mut())),
            );
            assert_eq!(slots_len(), grown, "scratch must not grow again");
            assert_eq!(
                (&gi, &gw, &gb),
                (&first.0, &first.1, &first.2),
                "bit-identical gradients"
            );
        }
        // without the input gradient, the weight and bias gradients are the same bits
        plan.backward_into(
            x.view(),
            w.view(),
            go.view(),
            None,
            (None, gw.view_mut(), Some(gb.view_mut())),
        );
        assert_eq!((&gw, &gb), (&first.1, &first.2));
        // and the f32 kernels agree with the f64 ones
        let g64 = conv2d_backward(
            x.mapv(f64::from).view(),
            w.mapv(f64::from).view(),
            go.mapv(f64::from).view(),
            p,
        );
        let rel = |a: &Array4<f32>, b: &Array4<f64>| {
            let m = b.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            a.iter()
                .zip(b)
                .fold(0.0_f64, |e, (&a, &b)| e.max((f64::from(a) - b).abs()))
                / m
        };
        assert!(rel(&first.0, &g64.input) < 1e-5);
        assert!(rel(&first.1, &g64.weight) < 1e-5);
    }

    #[test]
    fn cached_columns_give_bit_identical_outputs_and_gradients() {
        // Odd geometries and batch sizes (45: chunks of 2 with a short last one), f32 and f64.
        let cases = [
            ((45, 6, 14, 14), (16, 6, 5, 5), Conv2dParams::default()),
            (
                (32, 1, 28, 28),
                (6, 1, 5, 5),
                Conv2dParams {
                    stride: (1, 1),
                    padding: (2, 2),
                },
            ),
            (
                (3, 2, 6, 11),
                (2, 2, 4, 2),
                Conv2dParams {
                    stride: (3, 2),
                    padding: (2, 0),
                },
            ),
            ((0, 2, 6, 6), (2, 2, 3, 3), Conv2dParams::default()),
        ];
        for (xs, wsz, p) in cases {
            let mut plan = Conv2dPlan::new(wsz, p);
            let x = pseudo(xs, 11).mapv(|v| v as f32);
            let w = pseudo(wsz, 12).mapv(|v| v as f32);
            let b = Array1::from_shape_fn(wsz.0, |k| k as f32 * 0.1 - 0.2);
            let want_y = conv2d(x.view(), w.view(), Some(b.view()), p);
            let mut y = Array4::from_elem(want_y.dim(), f32::NAN);
            plan.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut(), None);
            assert_eq!(y, want_y, "{xs:?}: forward");
            assert!(plan.kept.is_filled_for(xs, wsz, p));
            let go = pseudo(y.dim(), 13).mapv(|v| v as f32);
            let want = conv2d_backward(x.view(), w.view(), go.view(), p);
            let mut gi = Array4::from_elem(xs, f32::NAN);
            let mut gw = Array4::from_elem(wsz, f32::NAN);
            let mut gb = Array1::from_elem(wsz.0, f32::NAN);
            let grads = (Some(gi.view_mut()), gw.view_mut(), Some(gb.view_mut()));
            // from what the forward pass kept: the input itself is not read
            backward_from_kept(
                (&plan.kept, plan.tier),
                w.view(),
                Upstream::Conv(go.view()),
                p,
                grads,
            );
            assert_eq!(
                (&gi, &gw, &gb),
                (&want.input, &want.weight, &want.bias),
                "{xs:?}: backward"
            );
        }
        // f64, without the input gradient
        let p = Conv2dParams {
            stride: (2, 1),
            padding: (1, 2),
        };
        let (x, w) = (pseudo((5, 3, 9, 7), 14), pseudo((4, 3, 3, 2), 15));
        let mut plan = Conv2dPlan::new(w.dim(), p);
        let mut y = Array4::zeros((5, 4, 5, 10));
        plan.forward_into(x.view(), w.view(), None, y.view_mut(), None);
        let go = pseudo(y.dim(), 16);
        let want = conv2d_backward(x.view(), w.view(), go.view(), p);
        let mut gw = Array4::zeros(w.dim());
        let grads = (None, gw.view_mut(), None);
        backward_from_kept(
            (&plan.kept, plan.tier),
            w.view(),
            Upstream::Conv(go.view()),
            p,
            grads,
        );
        assert_eq!(gw, want.weight);
        plan.inference_into(x.view(), w.view(), None, y.view_mut(), None);
        assert!(
            !plan.kept.is_filled_for(x.dim(), w.dim(), p),
            "inference keeps nothing"
        );
    }

    #[test]
    #[should_panic(expected = "conv2d_backward: the cache holds no columns")]
    fn backward_from_an_empty_cache_panics() {
        backward_from_kept(
            (&Conv2dCache::<f32>::new(), Tier::active()),
            Array4::zeros((1, 1, 3, 3)).view(),
            Upstream::Conv(Array4::zeros((1, 1, 2, 2)).view()),
            Conv2dParams::default(),
            (None, Array4::zeros((1, 1, 3, 3)).view_mut(), None),
        );
    }

    #[test]
    #[should_panic(expected = "conv2d_backward: the cache was filled for weight (2, 1, 3, 3)")]
    fn backward_from_a_cache_of_another_weight_panics() {
        let x = Array4::<f32>::zeros((1, 1, 4, 4));
        let mut y = Array4::zeros((1, 2, 2, 2));
        let p = Conv2dParams::default();
        let mut plan = Conv2dPlan::new((2, 1, 3, 3), p);
        plan.forward_into(
            x.view(),
            Array4::zeros((2, 1, 3, 3)).view(),
            None,
            y.view_mut(),
            None,
        );
        backward_from_kept(
            (&plan.kept, plan.tier),
            Array4::zeros((1, 1, 3, 3)).view(),
            Upstream::Conv(Array4::zeros((1, 1, 2, 2)).view()),
            p,
            (None, Array4::zeros((1, 1, 3, 3)).view_mut(), None),
        );
    }

    #[test]
    fn non_contiguous_views_are_accepted() {
        let p = Conv2dParams {
            stride: (2, 1),
            padding: (1, 0),
        };
        let x = pseudo((2, 3, 7, 6), 8);
        let xt = x.view().permuted_axes([0, 1, 3, 2]); // [2, 3, 6, 7]
        let w = pseudo((4, 3, 3, 2), 9);
        let y = conv2d(xt, w.view(), None, p);
        assert_eq!(y, conv2d(xt.as_standard_layout().view(), w.view(), None, p));
        let go = pseudo(y.dim(), 10);
        let want = conv2d_backward(xt.as_standard_layout().view(), w.view(), go.view(), p);
        let mut gi_t = Array4::zeros((2, 3, 7, 6));
        let mut gw = Array4::zeros(w.dim());
        conv2d_backward_into(
            xt,
            w.view(),
            go.view(),
            p,
            Some(gi_t.view_mut().permuted_axes([0, 1, 3, 2])),
            gw.view_mut(),
            None,
        );
        assert_eq!(gi_t.view().permuted_axes([0, 1, 3, 2]), want.input);
        assert_eq!(gw, want.weight);
    }

    #[test]
    #[should_panic(
        expected = "conv2d: input (1, 2, 5, 5) has 2 channels but weight (3, 1, 3, 3) expects 1"
    )]
    fn channel_mismatch_panics() {
        conv2d(
            Array4::<f32>::zeros((1, 2, 5, 5)).view(),
            Array4::zeros((3, 1, 3, 3)).view(),
            None,
            Conv2dParams::default(),
        );
    }

    #[test]
    #[should_panic(
        expected = "conv2d: a 5×5 kernel with stride (1, 1) and padding (0, 0) does not fit an input of 4×4"
    )]
    fn kernel_too_big_panics() {
        conv2d(
            Array4::<f32>::zeros((1, 1, 4, 4)).view(),
            Array4::zeros((1, 1, 5, 5)).view(),
            None,
            Conv2dParams::default(),
        );
    }

    #[test]
    #[should_panic(expected = "conv2d_backward: grad_out must be (1, 1, 2, 2), got (1, 1, 3, 3)")]
    fn wrong_grad_out_panics() {
        conv2d_backward(
            Array4::<f32>::zeros((1, 1, 4, 4)).view(),
            Array4::zeros((1, 1, 3, 3)).view(),
            Array4::zeros((1, 1, 3, 3)).view(),
            Conv2dParams::default(),
        );
    }
}
