//! 2-D convolution (cross-correlation, as in PyTorch) through im2col + matmul, NCHW layout.
//!
//! For one image, im2col lays every receptive field out as a column: `cols` is
//! `[c·kh·kw, oh·ow]`, with row `(c, u, v)` holding `x[c, i·sh+u−ph, j·sw+v−pw]` (0 in the
//! padding) at column `i·ow + j`. Then, with `W` viewed as `[k, c·kh·kw]`:
//!
//! * forward: `y_n = W · cols_n (+ b)`, a `[k, oh·ow]` block that *is* image n of the NCHW output;
//! * input gradient: `dcols_n = Wᵀ · g_n`, scattered back by col2im (the adjoint of im2col);
//! * weight gradient: `dW = Σ_n g_n · cols_nᵀ`; bias gradient: `db_k = Σ_{n,i,j} g[n,k,i,j]`.
//!
//! # Parallelism and determinism
//! The batch is cut into at most [`CONV_BATCH_CHUNKS`] chunks of consecutive images, a pure
//! function of the batch size (never of the thread count). Each chunk owns a slot of the
//! [`Conv2dWorkspace`] (its column buffer and its partial weight/bias sums) and runs its images in
//! order: im2col, then one [`gemm`] per image. Chunks run on rayon's threads when the convolution
//! is big enough to pay for it. The weight and bias gradients are the chunk partial sums added
//! in chunk order, so they are bit-identical from run to run, serial or parallel, on any number of
//! threads (given a deterministic `gemm`).
//!
//! # Panics
//! Every function panics with a message naming the op and the shapes if a stride is 0, the kernel
//! does not fit the padded input, the input and weight channel counts differ, a dimension other
//! than the batch is 0, or an output or gradient buffer does not have the shape it must have.

use crate::parallel::{sum, with_standard_slice_mut, PAR_MIN_WORK};
use crate::{gemm, Scalar};
use ndarray::{
    Array1, Array4, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut4,
};
use rayon::iter::Either;
use rayon::prelude::*;

/// The batch is split into at most this many chunks of consecutive images, each with its own
/// scratch and partial gradient sums. Fixed (not the thread count) so that the summation order of
/// the weight gradient, and hence every bit of it, depends on the batch size only.
pub const CONV_BATCH_CHUNKS: usize = 32;

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

/// Scratch memory for im2col/col2im, grown on first use and reused afterwards.
///
/// It holds, for each batch chunk (see the module docs), one column buffer (`c·kh·kw × oh·ow`),
/// plus in backward a second one for the column gradient and the chunk's partial weight and bias
/// gradients. Keep one workspace per layer (or one for the whole network, it grows to the
/// largest need): after the first batch the `_into` forms allocate nothing.
#[derive(Debug, Default, Clone)]
pub struct Conv2dWorkspace<T> {
    cols: Vec<T>,
}

impl<T: Scalar> Conv2dWorkspace<T> {
    /// An empty workspace; it grows to the size the first call needs.
    ///
    /// ```
    /// let ws = tensor::Conv2dWorkspace::<f32>::new();
    /// assert_eq!(ws.len(), 0);
    /// ```
    pub fn new() -> Self {
        Conv2dWorkspace { cols: Vec::new() }
    }

    /// Number of scalars of scratch held (0 until first use); it only ever grows.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    /// Whether no scratch has been allocated yet.
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// The first `chunks · slot` scalars, growing the buffer if it is smaller.
    fn slots(&mut self, chunks: usize, slot: usize) -> &mut [T] {
        let need = chunks * slot;
        if self.cols.len() < need {
            self.cols.resize(need, T::zero());
        }
        &mut self.cols[..need]
    }
}

/// The im2col columns of a whole batch, kept by a training forward pass
/// ([`conv2d_into_caching`]) so that its backward pass ([`conv2d_backward_into_cached`]) need
/// not rebuild them: the columns of `x_n` are exactly what `dW = Σ_n g_n·cols_nᵀ` reads.
///
/// It remembers the input shape, weight shape and parameters it was filled for; the backward
/// pass checks them. It cannot know whether the input *values* changed since: the caller keeps
/// the input untouched between the two calls (a layer's forward input normally is). It grows to
/// `n·c·kh·kw·oh·ow` scalars and is reused.
#[derive(Debug, Default, Clone)]
pub struct Conv2dCache<T> {
    cols: Vec<T>,
    /// Per-chunk scratch for the zero-padded image (see `im2col_padded`).
    pads: Vec<T>,
    filled_for: Option<CacheKey>,
}

/// What a [`Conv2dCache`] was filled for: input dims, weight dims, parameters.
type CacheKey = (
    (usize, usize, usize, usize),
    (usize, usize, usize, usize),
    Conv2dParams,
);

impl<T: Scalar> Conv2dCache<T> {
    /// An empty cache, holding nothing.
    ///
    /// ```
    /// let cache = tensor::Conv2dCache::<f32>::new();
    /// assert!(!cache.is_filled());
    /// ```
    pub fn new() -> Self {
        Conv2dCache {
            cols: Vec::new(),
            pads: Vec::new(),
            filled_for: None,
        }
    }

    /// Whether the last forward pass filled it (and it was not [`invalidate`](Self::invalidate)d since).
    pub fn is_filled(&self) -> bool {
        self.filled_for.is_some()
    }

    /// Whether it holds the columns of an input of shape `input` for a weight of shape `weight`
    /// and `params`.
    pub fn is_filled_for(
        &self,
        input: (usize, usize, usize, usize),
        weight: (usize, usize, usize, usize),
        params: Conv2dParams,
    ) -> bool {
        self.filled_for == Some((input, weight, params))
    }

    /// Forgets the columns (keeps the memory): the next backward pass must not use them.
    pub fn invalidate(&mut self) {
        self.filled_for = None;
    }

    /// Number of scalars held (it only ever grows).
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    /// Whether no memory has been allocated yet.
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }
}

/// The three gradients of a convolution.
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
}

impl Geometry {
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
        let per_chunk = n.div_ceil(CONV_BATCH_CHUNKS).max(1);
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
        }
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

fn check_dim<D: std::fmt::Debug + PartialEq>(op: &str, what: &str, expected: D, got: D) {
    assert!(
        expected == got,
        "{op}: {what} must be {expected:?}, got {got:?}"
    );
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

/// im2col of one image `x` (`[c, h, w]`) into `cols` (`[c·kh·kw, oh·ow]`); every element written.
fn im2col<T: Scalar>(g: &Geometry, x: &[T], cols: &mut [T]) {
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let plane = g.h * g.w;
    let mut rows = cols.chunks_exact_mut(g.positions());
    for c in 0..g.c {
        let xc = &x[c * plane..][..plane];
        for u in 0..g.kh {
            let (i0, i1) = valid_range(g.oh, sh, u, ph, g.h);
            for v in 0..g.kw {
                let (j0, j1) = valid_range(g.ow, sw, v, pw, g.w);
                let row = rows.next().expect("cols has c·kh·kw rows");
                row[..i0 * g.ow].fill(T::zero());
                row[i1 * g.ow..].fill(T::zero());
                for i in i0..i1 {
                    let out = &mut row[i * g.ow..][..g.ow];
                    let xrow = &xc[(i * sh + u - ph) * g.w..][..g.w];
                    out[..j0].fill(T::zero());
                    out[j1..].fill(T::zero());
                    if sw == 1 {
                        let x0 = j0 + v - pw;
                        out[j0..j1].copy_from_slice(&xrow[x0..x0 + (j1 - j0)]);
                    } else {
                        for j in j0..j1 {
                            out[j] = xrow[j * sw + v - pw];
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] for a stride-1 convolution with padding: copies the image once into `xpad`
/// (`padded_len` scalars, zero borders), after which every output row of a column row is one
/// plain copy of `ow` scalars, with no border cases (conv1 of LeNet: 25·28 copies of 28 instead
/// of as many copies plus as many short zero fills). Other geometries go to [`im2col`].
fn im2col_padded<T: Scalar>(g: &Geometry, x: &[T], xpad: &mut [T], cols: &mut [T]) {
    if g.padded_len() == 0 {
        return im2col(g, x, cols);
    }
    let (ph, pw) = g.p.padding;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let xpad = &mut xpad[..g.padded_len()];
    xpad.fill(T::zero());
    for (src, dst) in x
        .chunks_exact(g.h * g.w)
        .zip(xpad.chunks_exact_mut(hp * wp))
    {
        for (r, row) in src.chunks_exact(g.w).enumerate() {
            dst[(r + ph) * wp + pw..][..g.w].copy_from_slice(row);
        }
    }
    let mut rows = cols.chunks_exact_mut(g.positions());
    for plane in xpad.chunks_exact(hp * wp) {
        for u in 0..g.kh {
            for v in 0..g.kw {
                let row = rows.next().expect("cols has c·kh·kw rows");
                for (i, out) in row.chunks_exact_mut(g.ow).enumerate() {
                    out.copy_from_slice(&plane[(i + u) * wp + v..][..g.ow]);
                }
            }
        }
    }
}

/// col2im, the adjoint of [`im2col`]: overwrites `dx` (`[c, h, w]`) with the sum, over every
/// column entry that im2col copied from an input position, of that entry of `dcols`.
fn col2im<T: Scalar>(g: &Geometry, dcols: &[T], dx: &mut [T]) {
    let (sh, sw) = g.p.stride;
    let (ph, pw) = g.p.padding;
    let plane = g.h * g.w;
    dx.fill(T::zero());
    let mut rows = dcols.chunks_exact(g.positions());
    for c in 0..g.c {
        let dxc = &mut dx[c * plane..][..plane];
        for u in 0..g.kh {
            let (i0, i1) = valid_range(g.oh, sh, u, ph, g.h);
            for v in 0..g.kw {
                let (j0, j1) = valid_range(g.ow, sw, v, pw, g.w);
                let row = rows.next().expect("dcols has c·kh·kw rows");
                for i in i0..i1 {
                    let src = &row[i * g.ow..][..g.ow];
                    let dst = &mut dxc[(i * sh + u - ph) * g.w..][..g.w];
                    if sw == 1 {
                        let x0 = j0 + v - pw;
                        for (d, &s) in dst[x0..x0 + (j1 - j0)].iter_mut().zip(&src[j0..j1]) {
                            *d = *d + s;
                        }
                    } else {
                        for j in j0..j1 {
                            let d = &mut dst[j * sw + v - pw];
                            *d = *d + src[j];
                        }
                    }
                }
            }
        }
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
pub fn conv2d<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
) -> Array4<T> {
    let g = Geometry::new("conv2d", input.dim(), weight.dim(), params);
    let mut out = Array4::zeros(g.output_dim());
    conv2d_into(
        input,
        weight,
        bias,
        params,
        out.view_mut(),
        &mut Conv2dWorkspace::new(),
    );
    out
}

/// Like [`conv2d`], overwriting `out` (`[n, k, oh, ow]`), with scratch from `ws` (no allocation
/// once `ws` has grown to this size).
///
/// # Panics
/// If the shapes do not agree or the kernel does not fit (see the module docs).
///
/// ```
/// use ndarray::Array4;
/// use tensor::{conv2d_into, Conv2dParams, Conv2dWorkspace};
/// let x = Array4::from_elem((2, 1, 4, 4), 1.0_f64);
/// let w = Array4::from_elem((3, 1, 3, 3), 1.0);
/// let p = Conv2dParams { stride: (1, 1), padding: (1, 1) }; // "same" size
/// let mut y = Array4::zeros((2, 3, 4, 4));
/// let mut ws = Conv2dWorkspace::new();
/// conv2d_into(x.view(), w.view(), None, p, y.view_mut(), &mut ws);
/// assert_eq!(y[[1, 2, 0, 0]], 4.0); // corner: 2×2 of the 3×3 window is inside
/// assert_eq!(y[[1, 2, 1, 1]], 9.0);
/// ```
pub fn conv2d_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
    out: ArrayViewMut4<'_, T>,
    ws: &mut Conv2dWorkspace<T>,
) {
    let g = Geometry::new("conv2d", input.dim(), weight.dim(), params);
    // One column buffer per chunk, rebuilt for each of its images, then one padded image each.
    let cols_len = g.chunks * g.ckk() * g.positions();
    let scratch = ws.slots(g.chunks, g.ckk() * g.positions() + g.padded_len().max(1));
    let (cols, pads) = scratch.split_at_mut(cols_len);
    forward(&g, input, weight, bias, out, (cols, 0), pads);
}

/// Like [`conv2d_into`], but keeps every image's im2col columns in `cache`, so that
/// [`conv2d_backward_into_cached`] can reuse them instead of rebuilding them (training calls
/// this, inference calls [`conv2d_into`]). The output is bit-identical to [`conv2d_into`]'s.
///
/// # Panics
/// If the shapes do not agree or the kernel does not fit (see the module docs).
///
/// ```
/// use ndarray::{Array1, Array4};
/// use tensor::*;
/// let p = Conv2dParams::default();
/// let x = Array4::from_elem((2, 1, 4, 4), 1.0_f32);
/// let w = Array4::from_elem((3, 1, 3, 3), 0.5_f32);
/// let mut y = Array4::zeros((2, 3, 2, 2));
/// let mut cache = Conv2dCache::new();
/// conv2d_into_caching(x.view(), w.view(), None, p, y.view_mut(), &mut cache);
/// assert!(cache.is_filled_for((2, 1, 4, 4), (3, 1, 3, 3), p));
/// assert_eq!(y, conv2d(x.view(), w.view(), None, p));
/// ```
pub fn conv2d_into_caching<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    params: Conv2dParams,
    out: ArrayViewMut4<'_, T>,
    cache: &mut Conv2dCache<T>,
) {
    let g = Geometry::new("conv2d", input.dim(), weight.dim(), params);
    let img = g.ckk() * g.positions();
    let need = g.n * img;
    cache.filled_for = None;
    if cache.cols.len() < need {
        cache.cols.resize(need, T::zero());
    }
    let pads_len = g.chunks * g.padded_len().max(1);
    if cache.pads.len() < pads_len {
        cache.pads.resize(pads_len, T::zero());
    }
    let cols = &mut cache.cols[..need];
    let pads = &mut cache.pads[..pads_len];
    forward(&g, input, weight, bias, out, (cols, img), pads);
    cache.filled_for = Some((g.input_dim(), g.weight_dim(), params));
}

/// The forward pass. `cols` holds one slot per chunk; image `i` of a chunk writes its columns
/// at `i·img_stride` within the slot (0: one buffer reused; `c·kh·kw·oh·ow`: every image kept).
/// `pads` holds one scratch of `max(padded_len, 1)` scalars per chunk for [`im2col_padded`].
fn forward<T: Scalar>(
    g: &Geometry,
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    out: ArrayViewMut4<'_, T>,
    (cols, img_stride): (&mut [T], usize),
    pads: &mut [T],
) {
    check_dim("conv2d", "out", g.output_dim(), out.dim());
    if let Some(b) = bias {
        check_dim("conv2d", "bias length", g.k, b.len());
    }
    if g.n == 0 {
        return;
    }
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    let weight = weight.as_standard_layout();
    let w2 = weight
        .view()
        .into_shape_with_order((g.k, g.ckk()))
        .expect("a standard-layout weight is [k, c·kh·kw]");
    let (ckk, pos) = (g.ckk(), g.positions());
    let (in_img, out_img) = (g.c * g.h * g.w, g.k * pos);
    let slot_len = if img_stride == 0 {
        ckk * pos
    } else {
        g.per_chunk * img_stride
    };
    with_standard_slice_mut(out, |y| {
        y.par_chunks_mut(g.per_chunk * out_img)
            .zip(cols.par_chunks_mut(slot_len))
            .zip(pads.par_chunks_mut(g.padded_len().max(1)))
            .enumerate()
            .with_min_len(g.min_chunks_per_task())
            .for_each(|(chunk, ((y, slot), xpad))| {
                for (i, y_n) in y.chunks_exact_mut(out_img).enumerate() {
                    let n = chunk * g.per_chunk + i;
                    let cols = &mut slot[i * img_stride..][..ckk * pos];
                    im2col_padded(g, &x[n * in_img..][..in_img], xpad, cols);
                    let cols = ArrayView2::from_shape((ckk, pos), &*cols).expect("cols");
                    let mut y_n = ArrayViewMut2::from_shape((g.k, pos), y_n).expect("y_n");
                    // y_n = W·cols (+ b): start from the bias and let gemm accumulate on top.
                    let beta = match bias {
                        Some(b) => {
                            for (row, &bk) in y_n
                                .as_slice_mut()
                                .expect("contiguous")
                                .chunks_exact_mut(pos)
                                .zip(b.iter())
                            {
                                row.fill(bk);
                            }
                            T::one()
                        }
                        None => T::zero(),
                    };
                    gemm(T::one(), w2, cols, beta, y_n.view_mut());
                }
            });
    });
}

// ---------------------------------------------------------------------------------------------
// Backward. With cols_n = im2col(x_n) and g_n = dL/dy_n ([k, oh·ow]):
//   y_n = W·cols_n + b·1ᵀ   ⇒   dL/dW = Σ_n g_n·cols_nᵀ,   dL/db_k = Σ_n Σ_p g_n[k, p],
//   dL/dcols_n = Wᵀ·g_n,  and since cols_n is a linear copy of x_n, dL/dx_n = col2im(Wᵀ·g_n)
//   (im2col's adjoint adds every column entry back onto the input position it was read from;
//   entries read from the padding are dropped).
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
        &mut Conv2dWorkspace::new(),
    );
    grads
}

/// Like [`conv2d_backward`], overwriting caller-owned buffers. `grad_input` and `grad_bias` are
/// optional: the first layer of a network needs no input gradient (and skipping it saves the
/// `Wᵀ·g` product and col2im).
///
/// # Panics
/// If the shapes do not agree or the kernel does not fit (see the module docs).
///
/// ```
/// use ndarray::{Array1, Array4};
/// use tensor::{conv2d_backward_into, Conv2dParams, Conv2dWorkspace};
/// let x = Array4::from_elem((4, 2, 5, 5), 1.0_f32);
/// let w = Array4::from_elem((3, 2, 3, 3), 0.1_f32);
/// let g = Array4::from_elem((4, 3, 3, 3), 1.0_f32);
/// let (mut gw, mut gb) = (Array4::zeros((3, 2, 3, 3)), Array1::zeros(3));
/// let mut ws = Conv2dWorkspace::new();
/// conv2d_backward_into(x.view(), w.view(), g.view(), Conv2dParams::default(),
///                      None, gw.view_mut(), Some(gb.view_mut()), &mut ws);
/// assert!(gw.iter().all(|&v| v == 36.0)); // 4 images × 9 positions × 1 × 1
/// assert!(gb.iter().all(|&v| v == 36.0));
/// ```
pub fn conv2d_backward_into<T: Scalar>(
    input: ArrayView4<'_, T>,
    weight: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Conv2dParams,
    grad_input: Option<ArrayViewMut4<'_, T>>,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
    ws: &mut Conv2dWorkspace<T>,
) {
    let g = Geometry::new("conv2d_backward", input.dim(), weight.dim(), params);
    let input = input.as_standard_layout();
    let x = input.as_slice().expect("standard layout");
    backward(
        &g,
        Columns::Rebuild(x),
        weight,
        grad_out,
        grad_input,
        grad_weight,
        grad_bias,
        ws,
    );
}

/// Like [`conv2d_backward_into`], reading the columns that [`conv2d_into_caching`] kept in
/// `cache` instead of rebuilding them from the input (which it therefore does not take): the
/// weight gradient needs no im2col at all. Bit-identical to [`conv2d_backward_into`] on the same
/// input.
///
/// # Panics
/// If `cache` was not filled by a forward pass with this weight shape and `params`, or the
/// other shapes do not agree (see the module docs).
///
/// ```
/// use ndarray::{Array1, Array4};
/// use tensor::*;
/// let p = Conv2dParams::default();
/// let x = Array4::from_shape_fn((2, 2, 5, 5), |(n, c, i, j)| (n + c * i) as f32 - j as f32);
/// let w = Array4::from_elem((3, 2, 3, 3), 0.1_f32);
/// let mut y = Array4::zeros((2, 3, 3, 3));
/// let mut cache = Conv2dCache::new();
/// conv2d_into_caching(x.view(), w.view(), None, p, y.view_mut(), &mut cache);
/// let go = Array4::from_elem((2, 3, 3, 3), 1.0_f32);
/// let (mut gi, mut gw, mut gb) = (Array4::zeros(x.dim()), Array4::zeros(w.dim()), Array1::zeros(3));
/// conv2d_backward_into_cached(&cache, w.view(), go.view(), p, Some(gi.view_mut()),
///                             gw.view_mut(), Some(gb.view_mut()), &mut Conv2dWorkspace::new());
/// let want = conv2d_backward(x.view(), w.view(), go.view(), p);
/// assert_eq!((gi, gw, gb), (want.input, want.weight, want.bias));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_into_cached<T: Scalar>(
    cache: &Conv2dCache<T>,
    weight: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    params: Conv2dParams,
    grad_input: Option<ArrayViewMut4<'_, T>>,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
    ws: &mut Conv2dWorkspace<T>,
) {
    let op = "conv2d_backward_cached";
    let (input_dim, weight_dim, cached_params) = cache
        .filled_for
        .unwrap_or_else(|| panic!("{op}: the cache holds no columns (run conv2d_into_caching)"));
    assert!(
        weight_dim == weight.dim() && cached_params == params,
        "{op}: the cache was filled for weight {weight_dim:?} and {cached_params:?}, \
         not weight {:?} and {params:?}",
        weight.dim()
    );
    let g = Geometry::new(op, input_dim, weight.dim(), params);
    let cols = &cache.cols[..g.n * g.ckk() * g.positions()];
    backward(
        &g,
        Columns::Cached(cols),
        weight,
        grad_out,
        grad_input,
        grad_weight,
        grad_bias,
        ws,
    );
}

/// Where the backward pass gets each image's im2col columns.
#[derive(Clone, Copy)]
enum Columns<'a, T> {
    /// Rebuilt from the input (`[n, c, h, w]`, contiguous) into the chunk's scratch.
    Rebuild(&'a [T]),
    /// Read from a batch of columns kept by the forward pass (`[n, c·kh·kw, oh·ow]`).
    Cached(&'a [T]),
}

#[allow(clippy::too_many_arguments)]
fn backward<T: Scalar>(
    g: &Geometry,
    columns: Columns<'_, T>,
    weight: ArrayView4<'_, T>,
    grad_out: ArrayView4<'_, T>,
    grad_input: Option<ArrayViewMut4<'_, T>>,
    grad_weight: ArrayViewMut4<'_, T>,
    grad_bias: Option<ArrayViewMut1<'_, T>>,
    ws: &mut Conv2dWorkspace<T>,
) {
    let op = "conv2d_backward";
    check_dim(op, "grad_out", g.output_dim(), grad_out.dim());
    check_dim(op, "grad_weight", g.weight_dim(), grad_weight.dim());
    if let Some(gi) = &grad_input {
        check_dim(op, "grad_input", g.input_dim(), gi.dim());
    }
    if let Some(gb) = &grad_bias {
        check_dim(op, "grad_bias length", g.k, gb.len());
    }
    let grad_out = grad_out.as_standard_layout();
    let go = grad_out.as_slice().expect("standard layout");
    let weight = weight.as_standard_layout();
    let w2 = weight
        .view()
        .into_shape_with_order((g.k, g.ckk()))
        .expect("a standard-layout weight is [k, c·kh·kw]");

    // Each chunk's slot: cols and padded image (only if rebuilt) | dcols (only if the input
    // gradient is wanted) | dW part | db part.
    let (ckk, pos) = (g.ckk(), g.positions());
    let cols_len = match columns {
        Columns::Rebuild(_) => ckk * pos + g.padded_len(),
        Columns::Cached(_) => 0,
    };
    let dcols_len = if grad_input.is_some() { ckk * pos } else { 0 };
    let part_len = g.k * ckk + g.k;
    let slot = cols_len + dcols_len + part_len;
    let slots = ws.slots(g.chunks, slot);
    let scratch = (slot, cols_len, dcols_len);
    match grad_input {
        Some(gi) => with_standard_slice_mut(gi, |gi| {
            backward_chunks(g, columns, w2, go, slots, scratch, Some(gi))
        }),
        None => backward_chunks(g, columns, w2, go, slots, scratch, None),
    }

    // Deterministic reduction: chunk partial sums added in chunk order.
    let partials = || {
        slots
            .chunks_exact(slot)
            .take(g.chunks)
            .map(|s| &s[cols_len + dcols_len..])
    };
    with_standard_slice_mut(grad_weight, |gw| {
        gw.fill(T::zero());
        for part in partials() {
            for (d, &s) in gw.iter_mut().zip(&part[..g.k * ckk]) {
                *d = *d + s;
            }
        }
    });
    if let Some(gb) = grad_bias {
        with_standard_slice_mut(gb, |gb| {
            gb.fill(T::zero());
            for part in partials() {
                for (d, &s) in gb.iter_mut().zip(&part[g.k * ckk..]) {
                    *d = *d + s;
                }
            }
        });
    }
}

/// Runs every chunk of the backward pass: fills each chunk's partial weight and bias gradients
/// and, when `grad_input` is given, its images' input gradients. `scratch` is (slot length,
/// cols length, dcols length) of each chunk's slot.
fn backward_chunks<T: Scalar>(
    g: &Geometry,
    columns: Columns<'_, T>,
    w2: ArrayView2<'_, T>,
    go: &[T],
    slots: &mut [T],
    (slot, cols_len, dcols_len): (usize, usize, usize),
    grad_input: Option<&mut [T]>,
) {
    let (ckk, pos) = (g.ckk(), g.positions());
    let (in_img, out_img) = (g.c * g.h * g.w, g.k * pos);
    let gi_chunks = match grad_input {
        Some(gi) => Either::Left(gi.par_chunks_mut(g.per_chunk * in_img).map(Some)),
        None => Either::Right(rayon::iter::repeat_n((), g.chunks).map(|_| None)),
    };
    slots
        .par_chunks_mut(slot)
        .zip(gi_chunks)
        .enumerate()
        .with_min_len(g.min_chunks_per_task())
        .for_each(|(chunk, (slot, mut gi))| {
            let (cols_buf, rest) = slot.split_at_mut(cols_len);
            let (dcols, part) = rest.split_at_mut(dcols_len);
            let (dw, db) = part.split_at_mut(g.k * ckk);
            let mut dw = ArrayViewMut2::from_shape((g.k, ckk), dw).expect("dW part");
            db.fill(T::zero());
            let first = chunk * g.per_chunk;
            let last = (first + g.per_chunk).min(g.n);
            for n in first..last {
                let g_n =
                    ArrayView2::from_shape((g.k, pos), &go[n * out_img..][..out_img]).expect("g_n");
                let cols: &[T] = match columns {
                    Columns::Rebuild(x) => {
                        let (cols, xpad) = cols_buf.split_at_mut(ckk * pos);
                        im2col_padded(g, &x[n * in_img..][..in_img], xpad, cols);
                        cols
                    }
                    Columns::Cached(all) => &all[n * ckk * pos..][..ckk * pos],
                };
                let cols_v = ArrayView2::from_shape((ckk, pos), cols).expect("cols");
                // dW += g_n·cols_nᵀ (the chunk's first image overwrites stale scratch)
                let beta = if n == first { T::zero() } else { T::one() };
                gemm(T::one(), g_n, cols_v.t(), beta, dw.view_mut());
                // db_k += Σ_p g_n[k, p]
                let g_rows = go[n * out_img..][..out_img].chunks_exact(pos);
                for (b, row) in db.iter_mut().zip(g_rows) {
                    *b = *b + sum(row);
                }
                if let Some(gi) = gi.as_deref_mut() {
                    let mut dc = ArrayViewMut2::from_shape((ckk, pos), &mut *dcols).expect("dc");
                    gemm(T::one(), w2.t(), g_n, T::zero(), dc.view_mut());
                    col2im(g, dcols, &mut gi[(n - first) * in_img..][..in_img]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn pseudo(shape: (usize, usize, usize, usize), seed: usize) -> Array4<f64> {
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

    #[test]
    fn padded_im2col_equals_im2col() {
        for &(c, h, w, kh, kw, pd) in &[
            (1, 28, 28, 5, 5, (2, 2)),
            (2, 5, 4, 3, 2, (1, 2)),
            (3, 3, 6, 5, 1, (2, 0)),
            (2, 4, 4, 3, 3, (0, 0)),
        ] {
            let p = Conv2dParams {
                stride: (1, 1),
                padding: pd,
            };
            let g = Geometry::new("t", (1, c, h, w), (1, c, kh, kw), p);
            let x = pseudo((1, c, h, w), 3).into_raw_vec_and_offset().0;
            let mut want = vec![f64::NAN; g.ckk() * g.positions()];
            im2col(&g, &x, &mut want);
            let mut got = vec![f64::NAN; want.len()];
            let mut xpad = vec![f64::NAN; g.padded_len().max(1)];
            im2col_padded(&g, &x, &mut xpad, &mut got);
            assert_eq!(got, want, "{:?}", (c, h, w, kh, kw, pd));
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), d> == <x, col2im(d)> for every geometry: the identity behind dL/dx.
        for &(c, h, w, kh, kw, s, pd) in &[
            (2, 5, 4, 3, 2, (2, 1), (1, 2)),
            (1, 7, 7, 5, 5, (1, 1), (2, 2)),
            (3, 4, 6, 4, 1, (3, 4), (0, 3)),
        ] {
            let p = Conv2dParams {
                stride: s,
                padding: pd,
            };
            let g = Geometry::new("t", (1, c, h, w), (1, c, kh, kw), p);
            let x = pseudo((1, c, h, w), 3).into_raw_vec_and_offset().0;
            let d = pseudo((1, 1, g.ckk(), g.positions()), 4)
                .into_raw_vec_and_offset()
                .0;
            let mut cols = vec![f64::NAN; g.ckk() * g.positions()];
            im2col(&g, &x, &mut cols);
            let mut dx = vec![f64::NAN; x.len()];
            col2im(&g, &d, &mut dx);
            let lhs: f64 = cols.iter().zip(&d).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn workspace_is_reused_and_backward_is_deterministic() {
        // 45 images: 23 chunks of 2 (the last one has 1), parallel.
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
        };
        let x = pseudo((45, 6, 14, 14), 5).mapv(|v| v as f32);
        let w = pseudo((16, 6, 5, 5), 6).mapv(|v| v as f32);
        let go = pseudo((45, 16, 10, 10), 7).mapv(|v| v as f32);
        let mut ws = Conv2dWorkspace::new();
        let mut y = Array4::zeros((45, 16, 10, 10));
        conv2d_into(x.view(), w.view(), None, p, y.view_mut(), &mut ws);
        let forward_len = ws.len();
        let mut gi = Array4::from_elem((45, 6, 14, 14), f32::NAN);
        let mut gw = Array4::from_elem((16, 6, 5, 5), f32::NAN);
        let mut gb = Array1::from_elem(16, f32::NAN);
        conv2d_backward_into(
            x.view(),
            w.view(),
            go.view(),
            p,
            Some(gi.view_mut()),
            gw.view_mut(),
            Some(gb.view_mut()),
            &mut ws,
        );
        let grown = ws.len();
        assert!(grown > forward_len);
        let first = (gi.clone(), gw.clone(), gb.clone());
        for _ in 0..5 {
            conv2d_into(x.view(), w.view(), None, p, y.view_mut(), &mut ws);
            conv2d_backward_into(
                x.view(),
                w.view(),
                go.view(),
                p,
                Some(gi.view_mut()),
                gw.view_mut(),
                Some(gb.view_mut()),
                &mut ws,
            );
            assert_eq!(ws.len(), grown, "workspace must not grow again");
            assert_eq!(
                (&gi, &gw, &gb),
                (&first.0, &first.1, &first.2),
                "bit-identical gradients"
            );
        }
        // without the input gradient, the weight and bias gradients are the same bits
        conv2d_backward_into(
            x.view(),
            w.view(),
            go.view(),
            p,
            None,
            gw.view_mut(),
            Some(gb.view_mut()),
            &mut ws,
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
        let mut cache = Conv2dCache::new();
        let mut ws = Conv2dWorkspace::new();
        for (xs, wsz, p) in cases {
            let x = pseudo(xs, 11).mapv(|v| v as f32);
            let w = pseudo(wsz, 12).mapv(|v| v as f32);
            let b = Array1::from_shape_fn(wsz.0, |k| k as f32 * 0.1 - 0.2);
            let want_y = conv2d(x.view(), w.view(), Some(b.view()), p);
            let mut y = Array4::from_elem(want_y.dim(), f32::NAN);
            conv2d_into_caching(
                x.view(),
                w.view(),
                Some(b.view()),
                p,
                y.view_mut(),
                &mut cache,
            );
            assert_eq!(y, want_y, "{xs:?}: forward");
            assert!(cache.is_filled_for(xs, wsz, p));
            let go = pseudo(y.dim(), 13).mapv(|v| v as f32);
            let want = conv2d_backward(x.view(), w.view(), go.view(), p);
            let mut gi = Array4::from_elem(xs, f32::NAN);
            let mut gw = Array4::from_elem(wsz, f32::NAN);
            let mut gb = Array1::from_elem(wsz.0, f32::NAN);
            conv2d_backward_into_cached(
                &cache,
                w.view(),
                go.view(),
                p,
                Some(gi.view_mut()),
                gw.view_mut(),
                Some(gb.view_mut()),
                &mut ws,
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
        let mut c64 = Conv2dCache::new();
        let mut y = Array4::zeros((5, 4, 5, 10));
        conv2d_into_caching(x.view(), w.view(), None, p, y.view_mut(), &mut c64);
        let go = pseudo(y.dim(), 16);
        let want = conv2d_backward(x.view(), w.view(), go.view(), p);
        let mut gw = Array4::zeros(w.dim());
        conv2d_backward_into_cached(
            &c64,
            w.view(),
            go.view(),
            p,
            None,
            gw.view_mut(),
            None,
            &mut Conv2dWorkspace::new(),
        );
        assert_eq!(gw, want.weight);
        c64.invalidate();
        assert!(!c64.is_filled());
    }

    #[test]
    #[should_panic(expected = "conv2d_backward_cached: the cache holds no columns")]
    fn backward_from_an_empty_cache_panics() {
        conv2d_backward_into_cached(
            &Conv2dCache::<f32>::new(),
            Array4::zeros((1, 1, 3, 3)).view(),
            Array4::zeros((1, 1, 2, 2)).view(),
            Conv2dParams::default(),
            None,
            Array4::zeros((1, 1, 3, 3)).view_mut(),
            None,
            &mut Conv2dWorkspace::new(),
        );
    }

    #[test]
    #[should_panic(
        expected = "conv2d_backward_cached: the cache was filled for weight (2, 1, 3, 3)"
    )]
    fn backward_from_a_cache_of_another_weight_panics() {
        let mut cache = Conv2dCache::new();
        let x = Array4::<f32>::zeros((1, 1, 4, 4));
        let mut y = Array4::zeros((1, 2, 2, 2));
        let p = Conv2dParams::default();
        conv2d_into_caching(
            x.view(),
            Array4::zeros((2, 1, 3, 3)).view(),
            None,
            p,
            y.view_mut(),
            &mut cache,
        );
        conv2d_backward_into_cached(
            &cache,
            Array4::zeros((1, 1, 3, 3)).view(),
            Array4::zeros((1, 1, 2, 2)).view(),
            p,
            None,
            Array4::zeros((1, 1, 3, 3)).view_mut(),
            None,
            &mut Conv2dWorkspace::new(),
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
            &mut Conv2dWorkspace::new(),
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
