//! The stride-1 path without im2col: every row of the column matrix is one contiguous slice of
//! the (zero-padded) image, so building it is a few long copies and col2im a few long adds.
//!
//! With stride 1, im2col's row `(c, u, v)` holds `plane_c[i+u, j+v]` at output `(i, j)`. Number
//! the outputs `q = i·wp + j` over the padded width `wp = w + 2·pw` instead of `i·ow + j`: the
//! row is then `plane_c[u·wp + v + q]` for `q < L = (oh−1)·wp + ow`, one slice of the plane.
//! The `q` with `j ≥ ow` are "wide" columns, not outputs: the forward pass drops them and the
//! backward pass gives them a zero gradient, so they add nothing. With `wide` the
//! `[c·kh·kw, L]` matrix of those slices and `W` viewed as `[k, c·kh·kw]`:
//!
//! ```text
//! forward       y_wide = W · wide (+ b)          y[k, i, j] = y_wide[k, i·wp + j]
//! weight grad   dW    += g_wide · wideᵀ          g_wide[k, i·wp + j] = g[k, i, j], 0 if j ≥ ow
//! bias grad     db    += Σ_{i,j} g[k, i, j]
//! input grad    dwide  = Wᵀ · g_wide             dplane_c[u·wp + v + q] += dwide[(c,u,v), q]
//! ```
//!
//! The forward pass does not build `wide`: `y_wide[k, q] = Σ_{c,u,v} W[k, (c,u,v)] ·
//! plane_c[u·wp + v + q] + b[k]` is the stride-1 taps kernel (`taps.rs`) reading the planes in
//! place, in `gemm`'s order (from 0 over `(c, u, v)` ascending, then the bias), so with the
//! same bits as `W · wide + b` when `c·kh·kw` is within gemm's depth block of 256. Nor does
//! the weight gradient: gemm packs `wideᵀ`'s panels straight from the image lines ([`WideT`]),
//! except on gemm's dot route, which reads a built `wide` in place.
//!
//! On the AVX2 path with whole blocks of 16 channels ([`Kernels`]), the forward pass and the
//! weight gradient run the lanes kernels instead (`lanes.rs`, 16 output channels in two
//! vectors): the same chains as above, over the `oh·ow` real outputs only, so without the wide
//! columns' multiply-adds, the `y_wide` copy or the transposing pack of `wideᵀ`. The input
//! gradient's `dwide` is then made 6 rows at a time by a register-blocked kernel
//! (`dwide.rs`: at depth `k` = 16 a `gemm` spends its time packing and writing tiles) and
//! added to the planes while in L1, in the same order. On the AVX-512 tier the three run at 16
//! lanes, and the input gradient skips `dwide`: the channels-in-lanes kernel (`dlanes.rs`)
//! makes each product `W·g` once, straight into `dx`, summed in another order (within a
//! rounding bound of `gemm`'s).
//!
//! The wide kernels cost `L / (oh·ow)` times im2col's multiply-adds (136/100 for LeNet-5's conv2) and
//! saves what the profile showed to be dearer: im2col's and col2im's `oh` short rows per column
//! row, and the batch's columns streamed through memory from the forward to the backward pass
//! (a training forward keeps only the padded images). The zero gradient of the wide columns
//! adds exact zeros, so every sum has the same terms, in the same order, as im2col's.

use super::fused::{epilogue_chunks, Epilogue, EpilogueChunk, GradOut};
#[cfg(target_arch = "x86_64")]
use super::lanes::{self, Width};
use super::taps::{self, block_bias, regroup_weights, BiasAt, Block, Taps};
use super::{copy_row, pad_planes, with_regrouped, Geometry, Kept};
#[cfg(target_arch = "x86_64")]
use super::{dlanes, dwide, winograd};
use crate::matmul::gemm_with_kernel;
use crate::matmul::{gemm_packed_b, pack_b_lines, wide_weight_grad_route, PackB, Route};
use crate::parallel::sum as sum_of;
use crate::scratch::{with_thread_buffer, ThreadBuffer};
use crate::{Scalar, Tier};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use std::cell::RefCell;

/// Output channels per block of the forward pass's taps kernel.
const KB: usize = 6;

thread_local! {
    /// This thread's scratch ([`with_wide`]): one per thread, not per batch chunk, so that it
    /// stays in the core's cache from one image to the next.
    static WIDE: ThreadBuffer = const { RefCell::new(Vec::new()) };
}

/// `L`: the wide columns of one image, `(oh − 1)·wp + ow`.
fn wide_cols(g: &Geometry) -> usize {
    (g.oh - 1) * padded_width(g) + g.ow
}

fn padded_width(g: &Geometry) -> usize {
    g.w + 2 * g.p.padding.1
}

/// One image's zero-padded planes, `c·(h + 2·ph)·(w + 2·pw)`: what a caching forward pass keeps
/// per image.
pub(super) fn image_len(g: &Geometry) -> usize {
    g.c * (g.h + 2 * g.p.padding.0) * padded_width(g)
}

/// Calls `f` with this thread's scratch: room for the forward pass's `y_wide`, and for the
/// backward pass's [`WeightGradSum`] buffers, `g_wide`, then `wide` (dot route only) or
/// `dwide`, and one padded input gradient.
fn with_wide<T: Scalar, R>(g: &Geometry, f: impl FnOnce(&mut [T]) -> R) -> R {
    let forward = g.k * wide_cols(g);
    let len = forward.max(backward_len(g));
    with_thread_buffer(&WIDE, len, len, f)
}

/// Thread scratch of the backward pass, the most any tier's kernels take: [`WeightGradSum`]'s
/// buffers, then, unless the input gradient is made by [`InputGrad::Lanes`], `g_wide`, `wide`
/// or `dwide`, and one padded input gradient.
fn backward_len(g: &Geometry) -> usize {
    let wide = (g.ckk() + g.k) * wide_cols(g) + image_len(g);
    let with = |kernels: Kernels| {
        let rest = if kernels.input_grad(g) == InputGrad::Lanes {
            0
        } else {
            wide
        };
        lanes_sums_len(kernels, g) + rest
    };
    with(Kernels::Lanes16).max(with(Kernels::Lanes))
}

/// Scalars of [`WeightGradSum::Lanes`]'s buffers for `kernels`: Winograd's transformed sums
/// and work buffer ([`winograd_sum_lens`]), `dwt` (`[c·kh·kw, k]`) and `gt` (`[oh·ow, k]`).
fn lanes_sums_len(kernels: Kernels, g: &Geometry) -> usize {
    let (m, work) = winograd_sum_lens(kernels, g);
    m + work + (g.ckk() + g.positions()) * g.k
}

/// Lengths of Winograd's transformed weight-gradient sums and work buffer when `kernels` run
/// [`WeightGrad::Winograd`] for `g`, else zeros.
fn winograd_sum_lens(kernels: Kernels, g: &Geometry) -> (usize, usize) {
    match kernels.weight_grad(g) {
        #[cfg(target_arch = "x86_64")]
        WeightGrad::Winograd => (
            winograd::weights_len(g.k, g.c),
            winograd::weight_grad_work_len(&out_grid(g)),
        ),
        _ => (0, 0),
    }
}

/// Per-chunk scratch of the backward pass: the padded image, when rebuilt from a padded input
/// (an unpadded one is read in place).
pub(super) fn backward_scratch<T>(g: &Geometry, kept: Kept<'_, T>) -> usize {
    match kept {
        Kept::Input(_) => g.padded_len(),
        Kept::Columns(_) | Kept::Images(_) => 0,
    }
}

/// The padded planes of image `x_n`: `x_n` itself without padding, else its copy in `pad`.
fn planes<'a, T: Scalar>(g: &Geometry, x_n: &'a [T], pad: &'a mut [T]) -> &'a [T] {
    if g.padded_len() == 0 {
        x_n
    } else {
        let pad = &mut pad[..image_len(g)];
        pad_planes(g, x_n, pad);
        pad
    }
}

/// The taps `(c, u, v)` over `g.c` padded planes of `plane` scalars: tap `(c, u, v)` starts
/// row `(c, u, v)` of `wide` at `c·plane + u·wp + v` (the one place this offset is derived).
fn tap_grid(g: &Geometry, plane: usize) -> Taps {
    Taps {
        planes: g.c,
        plane,
        rows: g.kh,
        row: padded_width(g),
        cols: g.kw,
    }
}

/// Fills `wide` (`[c·kh·kw, L]`) from the padded planes `img`: row `(c, u, v)` is
/// `plane_c[u·wp + v ..][..L]`.
fn build_wide<T: Scalar>(g: &Geometry, img: &[T], wide: &mut [T]) {
    let (taps, cols) = (tap_grid(g, img.len() / g.c), wide_cols(g));
    for (t, row) in wide.chunks_exact_mut(cols).enumerate() {
        copy_row(row, &img[taps.offset(t)..][..cols]);
    }
}

/// The forward pass over contiguous `x` (`[n, c, h, w]`), `w` (`[k, c·kh·kw]`) and `y`
/// (`[n, k, oh, ow]`). `images` holds one slot per chunk, where image `i` of the chunk is
/// padded at `i·img_stride` (0: one buffer reused; [`image_len`]: every image kept, for the
/// backward pass). The weights are regrouped once ([`with_regrouped`]) for all chunks. With
/// `epi`, each image's output then goes through the fused ReLU and pool while in cache.
pub(super) fn forward<T: Scalar>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<ArrayView1<'_, T>>,
    y: &mut [T],
    (images, img_stride): (&mut [T], usize),
    epi: Option<Epilogue<'_, T>>,
) {
    let out_img = g.k * g.positions();
    let slot_len = g.slot_len(image_len(g), img_stride);
    let kernel = Kernels::choose(g.tier, g, bias);
    let regroup = |wt: &mut [T]| kernel.regroup(g, w, wt);
    with_regrouped(kernel.weights_len(g), regroup, |wt| {
        y.par_chunks_mut(g.per_chunk * out_img)
            .zip(images.par_chunks_mut(slot_len))
            .zip(epilogue_chunks(g, epi))
            .enumerate()
            .with_min_len(g.min_chunks_per_task())
            .for_each(|(chunk, ((y, slot), epi))| {
                let first = chunk * g.per_chunk;
                forward_chunk(
                    (kernel, g),
                    x,
                    (wt, bias),
                    y,
                    (first, slot, img_stride),
                    epi,
                );
            });
    });
}

/// One chunk of [`forward`]: the outputs `y` of images `first..`, each padded into `slot` at
/// `i·img_stride`, then through the fused ReLU and pool if `epi` is given.
fn forward_chunk<T: Scalar>(
    (kernel, g): (Kernels, &Geometry),
    x: &[T],
    (wt, bias): (&[T], Option<ArrayView1<'_, T>>),
    y: &mut [T],
    (first, slot, img_stride): (usize, &mut [T], usize),
    mut epi: Option<EpilogueChunk<'_, T>>,
) {
    let (in_img, out_img) = (g.c * g.h * g.w, g.k * g.positions());
    with_wide(g, |scratch| {
        let y_wide = &mut scratch[..g.k * wide_cols(g)];
        for (i, y_n) in y.chunks_exact_mut(out_img).enumerate() {
            let x_n = &x[(first + i) * in_img..][..in_img];
            let img = if img_stride == 0 {
                planes(g, x_n, slot)
            } else {
                // Kept for the backward pass, padded or not.
                let kept = &mut slot[i * img_stride..][..image_len(g)];
                pad_planes(g, x_n, kept);
                kept
            };
            forward_image((kernel, g.tier), g, (wt, bias), img, y_wide, y_n);
            if let Some(epi) = epi.as_mut() {
                epi.image(i, y_n);
            }
        }
    })
}

/// The kernels of the forward pass and of the weight gradient, chosen in one place
/// ([`Kernels::choose`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // lanes: x86-64 only
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernels {
    /// Over the `L` wide columns: the forward pass by [`taps::forward`] in blocks of [`KB`]
    /// channels, the weight gradient by `gemm`. Any scalar, any path.
    Wide,
    /// `f32` from the AVX2 tier up when the channels come in whole blocks of 16 and the output
    /// rows hold a run of 6 (LeNet-5's conv2: 16 channels, rows of 10): the forward pass and
    /// the weight gradient over the `oh·ow` real outputs, 16 channels in two vectors of 8
    /// (`lanes.rs`), and the input gradient's `Wᵀ·g_wide` 6 rows at a time in registers
    /// (`dwide.rs`).
    Lanes,
    /// [`Kernels::Lanes`] with the forward pass and the weight gradient at 16 lanes (`lanes.rs`:
    /// 16 channels in one vector, forward runs of 10 outputs), on the AVX-512 tier when the
    /// rows hold a run of 10; the same bits. The forward pass by Winograd's F(2, 5) where that
    /// kernel fits (`winograd.rs`, [`Forward::Winograd`]: LeNet-5's conv2), within its
    /// rounding bound. The input gradient: straight into `dx` with the channels in the lanes
    /// where that kernel fits (`dlanes.rs`, [`InputGrad::Lanes`]: LeNet-5's conv2), else by
    /// rows of `dwide` at 16 lanes.
    Lanes16,
}

impl crate::tier::Needs for Kernels {
    fn needs(&self) -> Tier {
        match self {
            Kernels::Wide => Tier::Portable,
            Kernels::Lanes => Tier::Avx2,
            Kernels::Lanes16 => Tier::Avx512,
        }
    }
}

impl Kernels {
    /// Lanes where they run, else wide. Both give the same bits (the weight gradient: when
    /// gemm sums each product in one depth block, as it does up to `L` = 256). `bias` is the
    /// forward pass's (the lanes kernel reads it as a slice); the backward pass passes `None`.
    fn choose<T: Scalar>(isa: Tier, g: &Geometry, bias: Option<ArrayView1<'_, T>>) -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::tier::Build::on(isa) == crate::tier::Build::Avx2
            && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
            && g.k.is_multiple_of(lanes::KB)
            && g.ow >= Width::Eight.run()
            && bias.is_none_or(|b| b.as_slice().is_some())
        {
            return if isa >= Tier::Avx512 && g.ow >= Width::Sixteen.run() {
                Kernels::Lanes16
            } else {
                Kernels::Lanes
            };
        }
        let _ = (isa, g, bias);
        Kernels::Wide
    }

    /// How the backward pass makes `g`'s input gradient next to these kernels' weight gradient.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // g: x86-64 kernels
    fn input_grad(self, g: &Geometry) -> InputGrad {
        match self {
            Kernels::Wide => InputGrad::Gemm,
            #[cfg(target_arch = "x86_64")]
            Kernels::Lanes16 if dlanes::fits(g) => InputGrad::Lanes,
            Kernels::Lanes | Kernels::Lanes16 => InputGrad::Rows,
        }
    }

    /// How the images' weight gradients are summed: Winograd's F(2, 5) transposed at 16 lanes
    /// where it fits (LeNet-5's conv2 on the AVX-512 tier: 0.6× the multiply-adds), else the
    /// lanes kernel or `gemm`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // g: x86-64 kernels
    fn weight_grad(self, g: &Geometry) -> WeightGrad {
        match self {
            Kernels::Wide => WeightGrad::Gemm,
            #[cfg(target_arch = "x86_64")]
            Kernels::Lanes16
                if winograd::fits_weight_grad(self.width(), g.c, (g.kh, g.kw), &out_grid(g)) =>
            {
                WeightGrad::Winograd
            }
            Kernels::Lanes | Kernels::Lanes16 => WeightGrad::Lanes,
        }
    }

    /// The vector width of the lanes kernels.
    #[cfg(target_arch = "x86_64")]
    fn width(self) -> Width {
        match self {
            Kernels::Lanes16 => Width::Sixteen,
            Kernels::Lanes | Kernels::Wide => Width::Eight,
        }
    }

    /// The forward pass's kernel: Winograd's F(2, 5) at 16 lanes where it fits (LeNet-5's
    /// conv2 on the AVX-512 tier: 0.6× the multiply-adds), else the lanes or taps kernel.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // g: x86-64 kernels
    fn forward(self, g: &Geometry) -> Forward {
        match self {
            Kernels::Wide => Forward::Taps,
            #[cfg(target_arch = "x86_64")]
            Kernels::Lanes16 if winograd::fits(self.width(), g.c, (g.kh, g.kw), &out_grid(g)) => {
                Forward::Winograd
            }
            Kernels::Lanes | Kernels::Lanes16 => Forward::Lanes,
        }
    }

    /// Scalars of the weights as the forward kernel reads them ([`Kernels::regroup`]).
    fn weights_len(self, g: &Geometry) -> usize {
        match self.forward(g) {
            Forward::Taps => taps::weights_len::<KB>(g.k, g.ckk()),
            Forward::Lanes => g.k * g.ckk(),
            #[cfg(target_arch = "x86_64")]
            Forward::Winograd => winograd::weights_len(g.k, g.c),
            #[cfg(not(target_arch = "x86_64"))]
            Forward::Winograd => unreachable!("Winograd's kernel is x86-64 only"),
        }
    }

    /// Writes `w` (`[k, c·kh·kw]`) as the forward kernel reads it: tap-major in its channel
    /// blocks, or transformed for Winograd's.
    fn regroup<T: Scalar>(self, g: &Geometry, w: &[T], wt: &mut [T]) {
        match self.forward(g) {
            Forward::Taps => regroup_weights::<T, KB>(w, g.ckk(), wt),
            Forward::Lanes => regroup_lanes(g, w, wt),
            #[cfg(target_arch = "x86_64")]
            Forward::Winograd => {
                let f32s = |s| T::as_f32_slice(s).expect("Winograd's kernel runs on f32");
                let wt = T::as_f32_slice_mut(wt).expect("Winograd's kernel runs on f32");
                winograd::transform_weights(f32s(w), g.c, wt)
            }
            #[cfg(not(target_arch = "x86_64"))]
            Forward::Winograd => unreachable!("Winograd's kernel is x86-64 only"),
        }
    }
}

/// Writes `w` (`[k, c·kh·kw]`) tap-major in blocks of 16 channels, as the lanes kernels read it.
fn regroup_lanes<T: Scalar>(g: &Geometry, w: &[T], wt: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    regroup_weights::<T, { lanes::KB }>(w, g.ckk(), wt);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "the lanes kernels are x86-64 only: {g:?} {} {}",
        w.len(),
        wt.len()
    );
}

/// The output grid of `g`'s images as the lanes and Winograd kernels read it.
#[cfg(target_arch = "x86_64")]
fn out_grid(g: &Geometry) -> lanes::OutGrid {
    lanes::OutGrid {
        oh: g.oh,
        ow: g.ow,
        wp: padded_width(g),
    }
}

/// How an image's forward pass is made ([`Kernels::forward`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // Winograd: x86-64 only
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forward {
    /// The taps kernel over the wide columns (`taps.rs`).
    Taps,
    /// The lanes kernel at the kernels' width (`lanes.rs`): the taps kernel's bits.
    Lanes,
    /// Winograd's F(2, 5) at 16 lanes (`winograd.rs`): within its rounding bound of the
    /// others.
    Winograd,
}

impl crate::tier::Needs for Forward {
    fn needs(&self) -> Tier {
        match self {
            Forward::Taps => Tier::Portable,
            Forward::Lanes => Tier::Avx2,
            Forward::Winograd => Tier::Avx512,
        }
    }
}

/// How the images' weight gradients are summed ([`Kernels::weight_grad`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WeightGrad {
    /// `gemm` of the wide output gradient and the wide columns, into the chunk's `dw`.
    Gemm,
    /// The lanes kernel, tap-major (`lanes.rs`): `gemm`'s bits.
    Lanes,
    /// Winograd's F(2, 5) transposed (`winograd.rs`), summed over the chunk's images in the
    /// transformed domain and transformed back when the chunk ends: within its rounding bound
    /// of the others.
    Winograd,
}

impl crate::tier::Needs for WeightGrad {
    fn needs(&self) -> Tier {
        match self {
            WeightGrad::Gemm => Tier::Portable,
            WeightGrad::Lanes => Tier::Avx2,
            WeightGrad::Winograd => Tier::Avx512,
        }
    }
}

/// How an image's input gradient is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputGrad {
    /// `dwide = Wᵀ · g_wide` by `gemm`, then its rows added into the planes.
    Gemm,
    /// The same `dwide` a block of rows at a time by the register-blocked kernel (`dwide.rs`)
    /// at the lanes kernels' width, each block added while in L1: `gemm`'s bits.
    Rows,
    /// Straight into `dx`, the output channels in the lanes (`dlanes.rs`): each product once,
    /// in another order than `gemm`'s.
    Lanes,
}

impl crate::tier::Needs for InputGrad {
    fn needs(&self) -> Tier {
        match self {
            InputGrad::Gemm => Tier::Portable,
            InputGrad::Rows => Tier::Avx2,
            InputGrad::Lanes => Tier::Avx512,
        }
    }
}

/// One image's output `y_n` (`[k, oh·ow]`) from its padded planes `img` and the weights
/// regrouped by [`Kernels::regroup`]: `y[k, i, j] = Σ_{c,u,v} w[k,c,u,v] ·
/// plane_c[(i+u)·wp + j+v] + b[k]`, summed from 0 in tap order with the bias last (the bits of
/// `gemm`'s `W·wide + b`), by `kernel`.
fn forward_image<T: Scalar>(
    (kernel, isa): (Kernels, Tier),
    g: &Geometry,
    (wt, bias): (&[T], Option<ArrayView1<'_, T>>),
    img: &[T],
    y_wide: &mut [T],
    y_n: &mut [T],
) {
    match kernel.forward(g) {
        Forward::Taps => forward_image_taps(isa, g, (wt, bias), img, y_wide, y_n),
        Forward::Lanes => forward_image_lanes(kernel, g, (wt, bias), img, y_n),
        Forward::Winograd => forward_image_winograd(kernel, g, (wt, bias), img, y_n),
    }
}

/// [`forward_image`] by the taps kernel: per block of [`KB`] channels, one [`taps::forward`]
/// run over the `L` wide columns into `y_wide`, then the output columns `j < ow` of each row
/// of `y_wide` into `y_n`.
fn forward_image_taps<T: Scalar>(
    isa: Tier,
    g: &Geometry,
    (wt, bias): (&[T], Option<ArrayView1<'_, T>>),
    img: &[T],
    y_wide: &mut [T],
    y_n: &mut [T],
) {
    let (ckk, cols, wp) = (g.ckk(), wide_cols(g), padded_width(g));
    let taps = tap_grid(g, img.len() / g.c);
    for (k0, wt) in (0..g.k).step_by(KB).zip(wt.chunks_exact(KB * ckk)) {
        let blk = Block::<T, KB> {
            taps,
            src: img,
            wt,
            bias: block_bias(bias, k0),
            at: BiasAt::Last,
            n: cols,
        };
        let out = &mut y_wide[k0 * cols..];
        taps::forward(isa, &blk, (out, cols, KB.min(g.k - k0)));
    }
    for (y_k, yw_k) in y_n
        .chunks_exact_mut(g.positions())
        .zip(y_wide.chunks_exact(cols))
    {
        for (y_row, yw_row) in y_k.chunks_exact_mut(g.ow).zip(yw_k.chunks(wp)) {
            copy_row(y_row, &yw_row[..g.ow]);
        }
    }
}

/// [`forward_image`] by the lanes kernel at `kernel`'s width, straight into `y_n` (`f32` only).
fn forward_image_lanes<T: Scalar>(
    kernel: Kernels,
    g: &Geometry,
    (wt, bias): (&[T], Option<ArrayView1<'_, T>>),
    img: &[T],
    y_n: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32s = |s| T::as_f32_slice(s).expect("the lanes kernel runs on f32");
        let bias = bias.map(|b| f32s(b.to_slice().expect("a contiguous bias (choose)")));
        let lanes = lanes::Lanes {
            taps: tap_grid(g, img.len() / g.c),
            out: out_grid(g),
            src: f32s(img),
            wt: f32s(&wt[..g.k * g.ckk()]),
            bias,
        };
        let y_n = T::as_f32_slice_mut(y_n).expect("the lanes kernel runs on f32");
        lanes::forward(kernel.width(), &lanes, y_n);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "the lanes kernel is x86-64 only: {kernel:?} {g:?} {:?} {} {} {}",
        bias.map(|b| b.len()),
        wt.len(),
        img.len(),
        y_n.len()
    );
}

/// [`forward_image`] by Winograd's F(2, 5) at 16 lanes, straight into `y_n` (`f32` only),
/// from the weights transformed by [`Kernels::regroup`].
fn forward_image_winograd<T: Scalar>(
    kernel: Kernels,
    g: &Geometry,
    (u, bias): (&[T], Option<ArrayView1<'_, T>>),
    img: &[T],
    y_n: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32s = |s| T::as_f32_slice(s).expect("Winograd's kernel runs on f32");
        let bias = bias.map(|b| f32s(b.to_slice().expect("a contiguous bias (choose)")));
        let l = winograd::Winograd {
            c: g.c,
            plane: img.len() / g.c,
            out: out_grid(g),
            src: f32s(img),
            u: f32s(&u[..winograd::weights_len(g.k, g.c)]),
            bias,
        };
        let y_n = T::as_f32_slice_mut(y_n).expect("Winograd's kernel runs on f32");
        winograd::forward(kernel.width(), &l, y_n);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "Winograd's kernel is x86-64 only: {kernel:?} {g:?} {} {} {} {}",
        u.len(),
        bias.is_some(),
        img.len(),
        y_n.len()
    );
}

/// Calls `f` with the weights `w` as the backward pass's input gradient reads them besides
/// `w` itself: regrouped tap-major once for all chunks ([`with_regrouped`]) for
/// [`InputGrad::Lanes`] when `dx` is wanted, else empty.
pub(super) fn with_backward_weights<T: Scalar, R>(
    g: &Geometry,
    w: &[T],
    dx: bool,
    f: impl FnOnce(&[T]) -> R,
) -> R {
    let kernels = Kernels::choose::<T>(g.tier, g, None);
    if !dx || kernels.input_grad(g) != InputGrad::Lanes {
        return f(&[]);
    }
    with_regrouped(g.k * g.ckk(), |wt| regroup_lanes(g, w, wt), f)
}

/// One chunk of the backward pass (the weights `w`, and `wt` from [`with_backward_weights`]):
/// overwrites the chunk's partial weight and bias gradients
/// (`[k, c·kh·kw]` then `[k]`, after the [`backward_scratch`] in `slot`), summed over its images
/// in order, and, when `gi` is given, its images' input gradients. `gbuf` is where `go` builds
/// an image's output gradient when it must ([`GradOut::scratch_len`]).
pub(super) fn backward_chunk<T: Scalar>(
    g: &Geometry,
    kept: Kept<'_, T>,
    (w, wt): (&[T], &[T]),
    (go, gbuf): (GradOut<'_, T>, &mut [T]),
    chunk: usize,
    slot: &mut [T],
    mut gi: Option<&mut [T]>,
) {
    let in_img = g.c * g.h * g.w;
    let (image, part) = slot.split_at_mut(backward_scratch(g, kept));
    let (dw, db) = part.split_at_mut(g.k * g.ckk());
    db.fill(T::zero());
    let first = chunk * g.per_chunk;
    let last = (first + g.per_chunk).min(g.n);
    let isa = g.tier;
    let kernels = Kernels::choose::<T>(isa, g, None);
    with_wide(g, |scratch| {
        let (mut sum, scratch) = WeightGradSum::new((kernels, isa), g, scratch);
        for n in first..last {
            let img: &[T] = match kept {
                Kept::Input(x) => planes(g, &x[n * in_img..][..in_img], &mut *image),
                Kept::Images(all) => &all[n * image_len(g)..][..image_len(g)],
                Kept::Columns(_) => unreachable!("the shifted method never keeps columns"),
            };
            let g_n = go.image(g, n, gbuf);
            let dx = gi
                .as_deref_mut()
                .map(|gi| &mut gi[(n - first) * in_img..][..in_img]);
            // The chunk's first image overwrites stale scratch.
            let sum = (&mut sum, &mut *dw, n == first);
            backward_image(g, (w, wt), img, g_n, scratch, sum, dx);
            // db_k += Σ_{i,j} g_n[k, i, j]
            for (b, row) in db.iter_mut().zip(g_n.chunks_exact(g.positions())) {
                *b = *b + sum_of(row);
            }
        }
        sum.finish(g, dw);
    })
}

/// Where the images' weight gradients are summed: by `gemm` straight into the chunk's `dw`
/// (`[k, c·kh·kw]`), or by the lanes kernels ([`Kernels::weight_grad`]: `by`) into `dwt`
/// (`[c·kh·kw, k]`, tap-major: each tap's 16 channels are one pair of vectors), copied into `dw`
/// transposed when the chunk ends; `gt` holds each image's output gradient outputs-major
/// (`[oh·ow, k]`) for it. Winograd's kernel sums into `m` (transformed, with `work` as its
/// scratch) and writes `dwt` from it when the chunk ends; for the others both are empty.
enum WeightGradSum<'a, T> {
    Gemm(Tier),
    Lanes {
        kernels: Kernels,
        by: WeightGrad,
        m: &'a mut [T],
        work: &'a mut [T],
        dwt: &'a mut [T],
        gt: &'a mut [T],
    },
}

impl<'a, T: Scalar> WeightGradSum<'a, T> {
    /// The sum for `kernels` (by `gemm` on `isa` when wide), with its buffers taken from the
    /// front of `scratch` ([`lanes_sums_len`] scalars); the rest of `scratch`.
    fn new(
        (kernels, isa): (Kernels, Tier),
        g: &Geometry,
        scratch: &'a mut [T],
    ) -> (Self, &'a mut [T]) {
        match kernels {
            Kernels::Wide => (WeightGradSum::Gemm(isa), scratch),
            Kernels::Lanes | Kernels::Lanes16 => {
                let (m_len, work_len) = winograd_sum_lens(kernels, g);
                let (m, rest) = scratch.split_at_mut(m_len);
                let (work, rest) = rest.split_at_mut(work_len);
                let (dwt, rest) = rest.split_at_mut(g.ckk() * g.k);
                let (gt, rest) = rest.split_at_mut(g.positions() * g.k);
                let by = kernels.weight_grad(g);
                let sum = WeightGradSum::Lanes {
                    kernels,
                    by,
                    m,
                    work,
                    dwt,
                    gt,
                };
                (sum, rest)
            }
        }
    }

    /// Leaves the chunk's weight gradient in `dw`.
    fn finish(&mut self, g: &Geometry, dw: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if let WeightGradSum::Lanes {
            kernels,
            by,
            m,
            dwt,
            ..
        } = self
        {
            let dwt = T::as_f32_slice_mut(dwt).expect("the lanes kernel runs on f32");
            if *by == WeightGrad::Winograd {
                let m = T::as_f32_slice(m).expect("Winograd's kernel runs on f32");
                winograd::finish_weight_grad(kernels.width(), m, g.c, dwt);
            }
            let dw = T::as_f32_slice_mut(dw).expect("the lanes kernel runs on f32");
            lanes::transpose(dwt, g.ckk(), dw);
        }
        let _ = (g, dw);
    }
}

/// `wideᵀ` (`[L, c·kh·kw]`) as a gemm B operand packed straight from the padded planes `img`:
/// its column `(c, u, v)` is the line `plane_c[u·wp + v ..][..L]` ([`build_wide`]'s row), so
/// the weight gradient needs no wide copy.
struct WideT<'a, T> {
    g: &'a Geometry,
    img: &'a [T],
}

impl<T: Scalar> PackB<T> for WideT<'_, T> {
    fn dim(&self) -> (usize, usize) {
        (wide_cols(self.g), self.g.ckk())
    }

    fn columns_contiguous(&self) -> bool {
        true
    }

    fn pack(&self, pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, dst: &mut [T]) {
        let taps = tap_grid(self.g, self.img.len() / self.g.c);
        pack_b_lines(self.img, |j| taps.offset(j), (pc, kc), (jc, nc), nr, dst);
    }
}

/// One image's weight gradient, added to the chunk's `sum` (overwriting it when `first`), and,
/// when `dx` is given, its input gradient (overwritten), from the weights `w` and, for
/// [`InputGrad::Lanes`], the same regrouped ([`Kernels::regroup`]) in `wt`.
fn backward_image<T: Scalar>(
    g: &Geometry,
    (w, wt): (&[T], &[T]),
    img: &[T],
    g_n: &[T],
    scratch: &mut [T],
    (sum, dw, first): (&mut WeightGradSum<'_, T>, &mut [T], bool),
    dx: Option<&mut [T]>,
) {
    let (ckk, cols) = (g.ckk(), wide_cols(g));
    let by = match sum {
        WeightGradSum::Gemm(_) => InputGrad::Gemm,
        WeightGradSum::Lanes { kernels, .. } => kernels.input_grad(g),
    };
    // The channels-in-lanes input gradient reads `gt` alone: no wide buffers (not reserved).
    let wide_len = if by == InputGrad::Lanes {
        0
    } else {
        g.k * cols
    };
    let (g_wide, rest) = scratch.split_at_mut(wide_len);
    if by == InputGrad::Gemm || dx.is_some() && by == InputGrad::Rows {
        widen_grad(g, g_n, g_wide);
    }
    match sum {
        WeightGradSum::Gemm(isa) => {
            let beta = if first { T::zero() } else { T::one() };
            gemm_weight_grad(*isa, g, img, g_wide, rest, (dw, beta));
        }
        WeightGradSum::Lanes {
            kernels,
            by,
            m,
            work,
            dwt,
            gt,
        } => {
            let sums = (&mut **m, &mut **work, &mut **dwt, &mut **gt);
            lanes_weight_grad((*kernels, *by), g, (img, g_n), sums, !first)
        }
    }
    let Some(dx) = dx else { return };
    if let (InputGrad::Lanes, WeightGradSum::Lanes { kernels, gt, .. }) = (by, &*sum) {
        return input_grad_by_lanes(*kernels, g, (wt, gt), dx);
    }
    let (dwide, dimg) = rest.split_at_mut(ckk * cols);
    let dimg = &mut dimg[..image_len(g)];
    match (by, &*sum) {
        (InputGrad::Rows, WeightGradSum::Lanes { kernels, .. }) => {
            input_grad_by_rows(*kernels, g, (w, g_wide), dwide, (dimg, dx))
        }
        (InputGrad::Gemm, &WeightGradSum::Gemm(isa)) => {
            let w2 = ArrayView2::from_shape((g.k, ckk), w).expect("weight is [k, c·kh·kw]");
            let g_wide = ArrayView2::from_shape((g.k, cols), &*g_wide).expect("g_wide");
            let mut dwide_v = ArrayViewMut2::from_shape((ckk, cols), &mut *dwide).expect("dwide");
            gemm_with_kernel(isa, T::one(), w2.t(), g_wide, T::zero(), dwide_v.view_mut());
            unwiden_input_grad(g, dwide, dimg, dx);
        }
        (by, _) => unreachable!("{by:?}: the weight gradient's kernels decide"),
    }
}

/// `dw = g_wide·wideᵀ + beta·dw` by `gemm`, with `wide` built in `rest` on gemm's dot route.
fn gemm_weight_grad<T: Scalar>(
    kernel: Tier,
    g: &Geometry,
    img: &[T],
    g_wide: &[T],
    rest: &mut [T],
    (dw, beta): (&mut [T], T),
) {
    let (ckk, cols) = (g.ckk(), wide_cols(g));
    let g_wide = ArrayView2::from_shape((g.k, cols), g_wide).expect("g_wide");
    let mut dw = ArrayViewMut2::from_shape((g.k, ckk), dw).expect("dW part");
    if let Route::Dot(_) = wide_weight_grad_route::<T>(kernel) {
        // The dot route reads wideᵀ's columns in place: build them.
        let wide = &mut rest[..ckk * cols];
        build_wide(g, img, wide);
        let wide = ArrayView2::from_shape((ckk, cols), &*wide).expect("wide");
        gemm_with_kernel(kernel, T::one(), g_wide, wide.t(), beta, dw.view_mut());
    } else {
        // Packed route: wideᵀ's panels straight from the image.
        gemm_packed_b(
            kernel,
            T::one(),
            g_wide,
            &WideT { g, img },
            beta,
            dw.view_mut(),
        );
    }
}

/// `dwt[t][o] = Σ_p g_n[o][p] · img[base_p + off_t] (+ dwt[t][o] when add)` by the lanes
/// kernel at `kernels`' width, or the same sums transformed into `m` by Winograd's (`by`), with
/// `g_n` copied outputs-major into `gt` first (`f32` only).
fn lanes_weight_grad<T: Scalar>(
    (kernels, by): (Kernels, WeightGrad),
    g: &Geometry,
    (img, g_n): (&[T], &[T]),
    (m, work, dwt, gt): (&mut [T], &mut [T], &mut [T], &mut [T]),
    add: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32s = |s| T::as_f32_slice(s).expect("the lanes kernel runs on f32");
        let f32s_mut = |s| T::as_f32_slice_mut(s).expect("the lanes kernel runs on f32");
        let gt = f32s_mut(gt);
        lanes::transpose(f32s(g_n), g.k, gt);
        let (taps, out, src) = (tap_grid(g, img.len() / g.c), out_grid(g), f32s(img));
        if by == WeightGrad::Winograd {
            let (c, plane) = (g.c, taps.plane);
            let wg = winograd::WinogradGrad {
                c,
                plane,
                out,
                src,
                gt,
            };
            return winograd::weight_grad(kernels.width(), &wg, (f32s_mut(m), f32s_mut(work)), add);
        }
        let wg = lanes::WeightGrad { taps, out, src, gt };
        lanes::weight_grad(kernels.width(), &wg, f32s_mut(dwt), add);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "the lanes kernel is x86-64 only: {kernels:?} {by:?} {g:?} {} {} {} {} {} {} {add}",
        img.len(),
        g_n.len(),
        m.len(),
        work.len(),
        dwt.len(),
        gt.len()
    );
}

/// `g_wide` (`[k, L]`): `g_n[k, i, j]` at `i·wp + j`, zero in the wide columns `j ≥ ow`.
fn widen_grad<T: Scalar>(g: &Geometry, g_n: &[T], g_wide: &mut [T]) {
    let (wp, cols) = (padded_width(g), wide_cols(g));
    for (src, dst) in g_n
        .chunks_exact(g.positions())
        .zip(g_wide.chunks_exact_mut(cols))
    {
        for (s_row, d_row) in src.chunks_exact(g.ow).zip(dst.chunks_mut(wp)) {
            let (out, wide) = d_row.split_at_mut(g.ow);
            copy_row(out, s_row);
            wide.fill(T::zero());
        }
    }
}

/// The adjoint of [`build_wide`] then of the padding: sums every row of `dwide` into the
/// padded planes `dimg` at the offset it was read from, then overwrites `dx` (`[c, h, w]`)
/// with the planes' inner part.
fn unwiden_input_grad<T: Scalar>(g: &Geometry, dwide: &[T], dimg: &mut [T], dx: &mut [T]) {
    dimg.fill(T::zero());
    add_wide_rows(g, 0, dwide, dimg);
    inner_to_dx(g, dimg, dx);
}

/// Adds rows `t0, t0 + 1, …` of `dwide` (`rows`, `[n, L]`), in order, into the padded planes
/// `dimg` at the offsets they were read from: `dplane_c[u·wp + v + q] += dwide[(c,u,v), q]`.
fn add_wide_rows<T: Scalar>(g: &Geometry, t0: usize, rows: &[T], dimg: &mut [T]) {
    let taps = tap_grid(g, dimg.len() / g.c);
    let cols = wide_cols(g);
    for (t, row) in (t0..).zip(rows.chunks_exact(cols)) {
        for (d, &s) in dimg[taps.offset(t)..][..cols].iter_mut().zip(row) {
            *d = *d + s;
        }
    }
}

/// Overwrites `dx` (`[c, h, w]`) with the inner part of the padded planes `dimg`.
fn inner_to_dx<T: Scalar>(g: &Geometry, dimg: &[T], dx: &mut [T]) {
    let (ph, pw) = g.p.padding;
    let (wp, plane) = (padded_width(g), dimg.len() / g.c);
    for (p, dx_c) in dimg.chunks_exact(plane).zip(dx.chunks_exact_mut(g.h * g.w)) {
        for (r, dx_row) in dx_c.chunks_exact_mut(g.w).enumerate() {
            copy_row(dx_row, &p[(r + ph) * wp + pw..][..g.w]);
        }
    }
}

/// [`unwiden_input_grad`] of `dwide = Wᵀ·g_wide` with `dwide` made a block of rows at a time
/// by the register-blocked kernel (`dwide.rs`) at `kernels`' width into `rows` and added at
/// once, in the same order (`f32` only).
fn input_grad_by_rows<T: Scalar>(
    kernels: Kernels,
    g: &Geometry,
    (w, g_wide): (&[T], &[T]),
    rows: &mut [T],
    (dimg, dx): (&mut [T], &mut [T]),
) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32s = |s| T::as_f32_slice(s).expect("the dwide kernel runs on f32");
        let (ckk, cols) = (g.ckk(), wide_cols(g));
        let taps = tap_grid(g, dimg.len() / g.c);
        let width = kernels.width();
        let op = dwide::Operands {
            w: f32s(w),
            taps: ckk,
            g_wide: f32s(g_wide),
            cols,
        };
        dimg.fill(T::zero());
        let per_block = dwide::rows_per_block(width);
        for t0 in (0..ckk).step_by(per_block) {
            let n = per_block.min(ckk - t0);
            let rows = &mut rows[..n * cols];
            let out = T::as_f32_slice_mut(rows).expect("the dwide kernel runs on f32");
            dwide::rows(width, &op, t0, n, out);
            let mut offsets = [0; dwide::MAX_ROWS];
            for (j, at) in offsets[..n].iter_mut().enumerate() {
                *at = taps.offset(t0 + j);
            }
            let dst = T::as_f32_slice_mut(dimg).expect("the dwide kernel runs on f32");
            dwide::add_rows(width, out, &offsets[..n], dst);
        }
        inner_to_dx(g, dimg, dx);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "the dwide kernel is x86-64 only: {kernels:?} {g:?} {} {} {} {} {}",
        w.len(),
        g_wide.len(),
        rows.len(),
        dimg.len(),
        dx.len()
    );
}

/// `dx` (`[c, h, w]`) by the lanes kernel (`dlanes.rs`) at `kernels`' width, from the weights
/// regrouped tap-major `wt` and the output gradient outputs-major `gt` (`f32` only).
fn input_grad_by_lanes<T: Scalar>(
    kernels: Kernels,
    g: &Geometry,
    (wt, gt): (&[T], &[T]),
    dx: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32s = |s| T::as_f32_slice(s).expect("the lanes kernel runs on f32");
        let dx = T::as_f32_slice_mut(dx).expect("the lanes kernel runs on f32");
        dlanes::input_grad(kernels.width(), g, f32s(wt), f32s(gt), dx);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "the lanes kernel is x86-64 only: {kernels:?} {g:?} {} {} {}",
        wt.len(),
        gt.len(),
        dx.len()
    );
}

#[cfg(test)]
mod tests {
    use super::super::taps::same_bits;
    use super::super::tests::pseudo;
    use super::*;
    use crate::matmul::MatrixB;
    use crate::tier::on_x86;
    use crate::Conv2dParams;
    use ndarray::Array2;

    /// One image's output the way the forward pass computed it before the taps kernel:
    /// `y_wide = W·wide + b` by `gemm` on `isa` (each output summed over `p` ascending from 0,
    /// then `1·acc + 1·b`), then the output columns.
    fn by_gemm(isa: Tier, g: &Geometry, w: &[f32], b: Option<&[f32]>, img: &[f32]) -> Vec<f32> {
        let (ckk, cols) = (g.ckk(), wide_cols(g));
        let mut wide = vec![f32::NAN; ckk * cols];
        build_wide(g, img, &mut wide);
        let mut y_wide = vec![f32::NAN; g.k * cols];
        let beta = match b {
            Some(b) => {
                for (row, &bk) in y_wide.chunks_exact_mut(cols).zip(b) {
                    row.fill(bk);
                }
                1.0
            }
            None => 0.0,
        };
        let w2 = ArrayView2::from_shape((g.k, ckk), w).unwrap();
        let wide = ArrayView2::from_shape((ckk, cols), &wide[..]).unwrap();
        let yw = ArrayViewMut2::from_shape((g.k, cols), &mut y_wide[..]).unwrap();
        gemm_with_kernel(isa, 1.0, w2, wide, beta, yw);
        let wp = padded_width(g);
        let at = |k: usize, i: usize, j: usize| y_wide[k * cols + i * wp + j];
        let (oh, ow) = (g.oh, g.ow);
        (0..g.k)
            .flat_map(|k| (0..oh).flat_map(move |i| (0..ow).map(move |j| (k, i, j))))
            .map(|(k, i, j)| at(k, i, j))
            .collect()
    }

    /// Both forward kernels give the same bits as the `gemm` formulation, on every path the CPU
    /// has: LeNet-5's conv2 (read in place) and shapes with channel counts that
    /// are or are not a multiple of either kernel's block, wide rows that end mid-vector,
    /// output counts that end mid-run (fewer than one run, too) and padding, with and without
    /// a bias.
    #[test]
    fn forward_equals_the_gemm_of_the_wide_matrix_bit_for_bit() {
        for isa in Tier::available() {
            for &(c, k, h, w, kh, kw, ph, pw) in &[
                (6, 16, 14, 14, 5, 5, 0, 0),
                (3, 7, 9, 11, 3, 4, 1, 2),
                (3, 8, 9, 11, 3, 4, 1, 2),
                (1, 5, 6, 5, 2, 3, 0, 1),
                (2, 24, 3, 9, 2, 2, 0, 0),
                (2, 8, 3, 4, 2, 2, 0, 0),
                (2, 32, 5, 8, 2, 3, 0, 0),
                (3, 16, 4, 9, 2, 2, 0, 1),
                (4, 13, 8, 20, 5, 3, 2, 0),
                (4, 16, 8, 20, 5, 3, 2, 0),
                (2, 1, 3, 3, 3, 3, 0, 0),
            ] {
                let p = Conv2dParams {
                    stride: (1, 1),
                    padding: (ph, pw),
                };
                let g = Geometry::new("t", (1, c, h, w), (k, c, kh, kw), p);
                let at = format!("{isa:?}, c {c} k {k} {h}×{w} kernel {kh}×{kw} pad {p:?}");
                forward_case(isa, &g, &at);
            }
        }
    }

    /// On every tier, whatever this machine has, for LeNet-5's conv2 and shapes around the
    /// lanes kernel's limits: the kernels need no more than the tier, the lanes kernels run
    /// from the AVX2 tier up (measured faster than wide columns + gemm on Zen 3), and the
    /// AVX-512 tier runs the AVX2 tier's (no AVX-512 kernel of this method exists yet).
    #[test]
    fn every_tier_runs_what_it_has_and_nothing_slower() {
        for (c, k, h, w) in [
            (6, 16, 14, 14),
            (6, 16, 5, 5),
            (3, 15, 9, 9),
            (2, 32, 6, 12),
        ] {
            for n in [1, 32, 256] {
                let g = stride1(n, (c, h, w), (k, 5, 5), 0);
                let what = format!("conv {c}→{k} on {h}×{w}, batch {n}");
                let lanes = [Kernels::Lanes, Kernels::Lanes16];
                crate::tier::check_plan(&what, |t| Kernels::choose::<f32>(t, &g, None), &lanes);
                crate::tier::check_plan(&what, |t| Kernels::choose::<f64>(t, &g, None), &[]);
            }
        }
        let conv2 = stride1(32, (6, 14, 14), (16, 5, 5), 0);
        assert_eq!(
            Kernels::choose::<f32>(Tier::Avx512, &conv2, None),
            on_x86(Kernels::Lanes16, Kernels::Wide)
        );
        assert_eq!(
            Kernels::choose::<f32>(Tier::Avx2, &conv2, None),
            on_x86(Kernels::Lanes, Kernels::Wide)
        );
        assert_eq!(
            Kernels::choose::<f32>(Tier::Portable, &conv2, None),
            Kernels::Wide
        );
    }

    /// [`crate::tier::check_plan`] of an op's plan on LeNet-5's conv2 and two shapes near it
    /// (an odd number of output rows; 9 input channels on wider rows), at batch 1, 32 and 256.
    fn check_near_conv2<K>(plan: impl Fn(&Geometry, Tier) -> K, faster: &[K])
    where
        K: crate::tier::Needs + PartialEq + std::fmt::Debug,
    {
        for (c, k, h, w) in [(6, 16, 14, 14), (6, 16, 13, 14), (9, 32, 8, 30)] {
            for n in [1, 32, 256] {
                let g = stride1(n, (c, h, w), (k, 5, 5), 0);
                let what = format!("conv {c}→{k} on {h}×{w}, kernel 5×5, batch {n}");
                crate::tier::check_plan(&what, |t| plan(&g, t), faster);
            }
        }
    }

    /// What `plan` runs on LeNet-5's conv2 at batch 32 on the AVX-512, AVX2 and portable tiers
    /// (`want`, as on x86-64: elsewhere every tier runs the portable tier's kernel), and on
    /// the AVX-512 tier for `others`, shapes its kernel does not take (`fallback`).
    fn check_conv2_plan<K>(
        plan: impl Fn(&Geometry, Tier) -> K,
        [avx512, avx2, portable]: [K; 3],
        others: &[Geometry],
        fallback: K,
    ) where
        K: Copy + PartialEq + std::fmt::Debug,
    {
        let conv2 = stride1(32, (6, 14, 14), (16, 5, 5), 0);
        assert_eq!(plan(&conv2, Tier::Avx512), on_x86(avx512, portable));
        assert_eq!(plan(&conv2, Tier::Avx2), on_x86(avx2, portable));
        assert_eq!(plan(&conv2, Tier::Portable), portable);
        for g in others {
            let want = on_x86(fallback, portable);
            assert_eq!(plan(g, Tier::Avx512), want, "{g:?}");
        }
    }

    /// The forward kernel's plan on every tier, whatever this machine has: the taps kernel on
    /// the portable tier, the lanes kernel from the AVX2 tier up (measured faster than wide
    /// columns on Zen 3), Winograd's F(2, 5) at 16 lanes on the AVX-512 tier where it fits
    /// (0.97× the 2-thread batch-32 epoch time of the lanes kernel at 16 lanes on Zen 4; at 8
    /// lanes it took 0.99–1.01× the time of the lanes kernel, so the AVX2 tier keeps lanes).
    #[test]
    fn the_forward_pass_runs_what_the_tier_has_and_nothing_slower() {
        fn plan(g: &Geometry) -> impl Fn(Tier) -> Forward + '_ {
            move |t| Kernels::choose::<f32>(t, g, None).forward(g)
        }
        check_near_conv2(|g, t| plan(g)(t), &[Forward::Lanes, Forward::Winograd]);
        // An odd number of output rows, or more input channels than the scratch holds: lanes.
        let others = [
            stride1(32, (6, 13, 14), (16, 5, 5), 0),
            stride1(32, (9, 8, 30), (32, 5, 5), 0),
        ];
        let tiers = [Forward::Winograd, Forward::Lanes, Forward::Taps];
        check_conv2_plan(|g, t| plan(g)(t), tiers, &others, Forward::Lanes);
    }

    /// The weight gradient's plan on every tier, whatever this machine has: the lanes kernel
    /// from the AVX2 tier up (the same bits as `gemm`), Winograd's F(2, 5) transposed on the
    /// AVX-512 tier where it fits (0.97× the batch-32 epoch time on 1 and 2 threads, Zen 4:
    /// docs/performance.md).
    #[test]
    fn the_weight_gradient_runs_what_the_tier_has_and_nothing_slower() {
        fn plan(g: &Geometry) -> impl Fn(Tier) -> WeightGrad + '_ {
            move |t| Kernels::choose::<f32>(t, g, None).weight_grad(g)
        }
        check_near_conv2(
            |g, t| plan(g)(t),
            &[WeightGrad::Lanes, WeightGrad::Winograd],
        );
        // An odd number of output rows, more input channels or output rows than the scratch
        // holds: the lanes kernel.
        let others = [
            stride1(32, (6, 13, 14), (16, 5, 5), 0),
            stride1(32, (9, 8, 30), (32, 5, 5), 0),
            stride1(32, (2, 22, 14), (16, 5, 5), 0),
        ];
        let tiers = [WeightGrad::Winograd, WeightGrad::Lanes, WeightGrad::Gemm];
        check_conv2_plan(|g, t| plan(g)(t), tiers, &others, WeightGrad::Lanes);
    }

    /// The input gradient's plan on every tier, whatever this machine has: rows of `dwide`
    /// from the AVX2 tier up (the same bits as `gemm`), the channels-in-lanes kernel on the
    /// AVX-512 tier (0.95× the 1-thread epoch time at batch 32 and 256 on Zen 4; at 8 lanes it
    /// took 1.03× the time of rows, so the AVX2 tier keeps rows), where it fits.
    #[test]
    fn the_input_gradient_runs_what_the_tier_has_and_nothing_slower() {
        fn plan(g: &Geometry) -> impl Fn(Tier) -> InputGrad + '_ {
            move |t| Kernels::choose::<f32>(t, g, None).input_grad(g)
        }
        let faster = [InputGrad::Rows, InputGrad::Lanes];
        for (c, k, h, w, kw) in [(6, 16, 14, 14, 5), (3, 32, 9, 70, 3), (2, 16, 12, 20, 9)] {
            for n in [1, 32, 256] {
                let g = stride1(n, (c, h, w), (k, 5, kw), 0);
                let what = format!("conv {c}→{k} on {h}×{w}, kernel 5×{kw}, batch {n}");
                crate::tier::check_plan(&what, plan(&g), &faster);
            }
        }
        let conv2 = stride1(32, (6, 14, 14), (16, 5, 5), 0);
        let wide_row = stride1(32, (3, 9, 70), (32, 5, 3), 0);
        let wide_kernel = stride1(32, (2, 12, 20), (16, 5, 9), 0);
        let gemm = InputGrad::Gemm;
        assert_eq!(plan(&conv2)(Tier::Avx512), on_x86(InputGrad::Lanes, gemm));
        assert_eq!(plan(&conv2)(Tier::Avx2), on_x86(InputGrad::Rows, gemm));
        assert_eq!(plan(&conv2)(Tier::Portable), InputGrad::Gemm);
        assert_eq!(
            plan(&wide_row)(Tier::Avx512),
            on_x86(InputGrad::Rows, gemm),
            "rows past 64"
        );
        assert_eq!(
            plan(&wide_kernel)(Tier::Avx512),
            on_x86(InputGrad::Rows, gemm),
            "kernels past 7"
        );
    }

    /// A thread's backward scratch for LeNet-5's conv2 (at any batch: it is per image) stays
    /// within 128 KiB, the size the kernels assume stays in cache: the wide gradient and
    /// `dwide` rows, the lanes sums and one padded image, about 114 KB. A length formula that
    /// multiplies where it should add grows it by orders of magnitude and fails here.
    #[test]
    fn the_backward_scratch_stays_small() {
        for n in [1, 32, 256] {
            let g = stride1(n, (6, 14, 14), (16, 5, 5), 0);
            let bytes = backward_len(&g) * std::mem::size_of::<f32>();
            assert!(
                bytes <= 128 << 10,
                "batch {n}: {bytes} bytes of scratch per thread"
            );
        }
    }

    /// One shape of [`forward_equals_the_gemm_of_the_wide_matrix_bit_for_bit`]: the taps
    /// kernel, and the lanes kernel where it runs, against [`by_gemm`].
    fn forward_case(isa: Tier, g: &Geometry, at: &str) {
        let f32s = |a: ndarray::Array4<f64>| a.mapv(|v| v as f32).into_raw_vec_and_offset().0;
        let (x, wts) = (
            f32s(pseudo(g.input_dim(), 1)),
            f32s(pseudo(g.weight_dim(), 2)),
        );
        let b: Vec<f32> = (0..g.k).map(|i| i as f32 * 0.375 - 1.0).collect();
        let mut pad = vec![f32::NAN; image_len(g)];
        let img = planes(g, &x, &mut pad);
        let chosen = Kernels::choose::<f32>(isa, g, None);
        let fits = g.k.is_multiple_of(16) && g.ow >= 6;
        let want = match isa {
            Tier::Portable => Kernels::Wide,
            _ if !fits => Kernels::Wide,
            Tier::Avx512 if g.ow >= 10 => Kernels::Lanes16,
            _ => Kernels::Lanes,
        };
        assert_eq!(chosen, want, "{at}");
        for kernel in [Kernels::Wide, chosen] {
            let mut wt = vec![f32::NAN; kernel.weights_len(g)];
            kernel.regroup(g, &wts, &mut wt);
            for bias in [Some(&b[..]), None] {
                let want = by_gemm(isa, g, &wts, bias, img);
                let mut y_wide = vec![f32::NAN; g.k * wide_cols(g)];
                let mut y = vec![f32::NAN; g.k * g.positions()];
                let bv = bias.map(ArrayView1::from);
                forward_image((kernel, isa), g, (&wt, bv), img, &mut y_wide, &mut y);
                let at = format!("{at}, {kernel:?}, bias {}", bias.is_some());
                match kernel.forward(g) {
                    #[cfg(target_arch = "x86_64")]
                    Forward::Winograd => {
                        let shape = (g.c, g.k, g.oh, g.ow);
                        winograd::check_within_bound(shape, (img, &wts, bias), &y, &at);
                    }
                    _ => same_bits(&y, &want, &at),
                }
            }
        }
    }

    /// The stride-1 geometry of `n` images `c×h×w`, `k` kernels `kh×kw`, padding `pad` on
    /// every side.
    fn stride1(
        n: usize,
        (c, h, w): (usize, usize, usize),
        (k, kh, kw): (usize, usize, usize),
        pad: usize,
    ) -> Geometry {
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (pad, pad),
        };
        Geometry::new("test", (n, c, h, w), (k, c, kh, kw), p)
    }

    /// Packing `wideᵀ` straight from the image ([`WideT`]) gives the weight gradient the same
    /// bits as packing the built wide matrix's `.t()` view, on every kernel, including edge
    /// panels (`c·kh·kw` not a multiple of the panel width) and padded planes.
    #[test]
    fn weight_grad_packed_from_the_image_equals_the_built_wide_matrix() {
        let cases = [
            ((6, 14, 14), (16, 5, 5), 0),
            ((3, 9, 7), (5, 3, 2), 1),
            ((1, 12, 10), (7, 4, 3), 2),
        ];
        for ((c, h, w), (k, kh, kw), pad) in cases {
            let g = stride1(1, (c, h, w), (k, kh, kw), pad);
            let img: Vec<f32> = (0..image_len(&g))
                .map(|i| ((i * 7919) % 113) as f32 / 17.0 - 3.0)
                .collect();
            let (ckk, cols) = (g.ckk(), wide_cols(&g));
            let mut wide = vec![0.0; ckk * cols];
            build_wide(&g, &img, &mut wide);
            let wide = ArrayView2::from_shape((ckk, cols), &wide[..]).unwrap();
            let g_wide =
                Array2::from_shape_fn((k, cols), |(a, q)| ((a * 31 + q) % 13) as f32 - 6.0);
            let dw0 = Array2::from_shape_fn((k, ckk), |(a, j)| ((a + 3 * j) % 7) as f32 / 8.0);
            for kernel in Tier::available() {
                let (mut want, mut got) = (dw0.clone(), dw0.clone());
                let wide_t = wide.t();
                let built = MatrixB::new(&wide_t);
                gemm_packed_b(kernel, 1.0, g_wide.view(), &built, 1.0, want.view_mut());
                let from_image = WideT { g: &g, img: &img };
                gemm_packed_b(kernel, 1.0, g_wide.view(), &from_image, 1.0, got.view_mut());
                assert!(got == want, "{} {c}x{h}x{w}, k {k}", kernel.name());
            }
        }
    }

    /// The lanes weight gradient (summed tap-major, then transposed) and the input gradient by
    /// rows of `dwide` give the same bits as `gemm`'s on the AVX2 kernel, over three images of a
    /// chunk (the first overwrites stale scratch): LeNet-5's conv2, padding, rows that end
    /// mid-run, wide rows that end mid-vector, more than 6 taps per kernel row, 32 channels.
    #[test]
    fn backward_by_lanes_equals_gemm_bit_for_bit() {
        if !Tier::Avx2.is_supported() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        let cases = [
            ((6, 14, 14), (16, 5, 5), 0),
            ((3, 9, 8), (16, 3, 2), 1),
            ((2, 6, 12), (32, 2, 7), 0),
        ];
        for ((c, h, w), (k, kh, kw), pad) in cases {
            let g = stride1(3, (c, h, w), (k, kh, kw), pad);
            assert_eq!(Kernels::choose::<f32>(Tier::Avx2, &g, None), Kernels::Lanes);
            let at = format!("{c}x{h}x{w}, k {k} {kh}x{kw}, pad {pad}");
            let (gemm_dw, gemm_dx) = chunk_grads(&g, Kernels::Wide);
            let (lanes_dw, lanes_dx) = chunk_grads(&g, Kernels::Lanes);
            assert_ne!(
                Kernels::choose::<f32>(Tier::Avx512, &g, None),
                Kernels::Wide,
                "{at}: an AVX-512 CPU runs the lanes kernels too"
            );
            same_bits(&lanes_dw, &gemm_dw, &format!("dW, {at}"));
            same_bits(&lanes_dx, &gemm_dx, &format!("dx, {at}"));
            if Tier::Avx512.is_supported() {
                // At 16 lanes the input gradient sums in another order (`dlanes.rs`, whose
                // test bounds it against f64): here it must land in the right place. Its
                // rounding is about 1e-6 of a value's size; a value from the wrong input, or
                // a stale one, is off by the size of the values themselves.
                // Likewise Winograd's weight gradient where it runs (its bound is tested in
                // `winograd.rs`); the lanes kernel's is `gemm`'s bits.
                let (dw16, dx16) = chunk_grads(&g, Kernels::Lanes16);
                // Its sums cancel (transformed terms several times a weight's size), so the
                // rounding is measured against the largest weight, not each one.
                if Kernels::Lanes16.weight_grad(&g) == WeightGrad::Winograd {
                    let top = gemm_dw.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                    for (i, (&a, &b)) in dw16.iter().zip(&gemm_dw).enumerate() {
                        let close = (a - b).abs() <= 1e-5 * top;
                        assert!(close, "dW at 16 lanes, {at}: [{i}] {a} against {b}");
                    }
                } else {
                    same_bits(&dw16, &gemm_dw, &format!("dW at 16 lanes, {at}"));
                }
                for (i, (&a, &b)) in dx16.iter().zip(&gemm_dx).enumerate() {
                    let close = (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                    assert!(close, "dx at 16 lanes, {at}: [{i}] {a} against {b}");
                }
            } else {
                eprintln!("skipped the 16-lane kernels: this CPU has no AVX-512F");
            }
        }
    }

    /// The weight gradient of `g.n` pseudo-random images and output gradients summed by
    /// `kernels` (from a stale, NaN-filled start), and the last image's input gradient.
    fn chunk_grads(g: &Geometry, kernels: Kernels) -> (Vec<f32>, Vec<f32>) {
        let val = |i: usize, m: usize| ((i * 7919 + m) % 113) as f32 / 17.0 - 3.0;
        let w: Vec<f32> = (0..g.k * g.ckk()).map(|i| val(i, 5)).collect();
        let mut scratch = vec![f32::NAN; backward_len(g)];
        // The AVX2 gemm: the lanes kernels sum in its order (AVX-512's dot route does not).
        let (mut sum, rest) = WeightGradSum::new((kernels, Tier::Avx2), g, &mut scratch);
        let mut wt = vec![f32::NAN; w.len()];
        if kernels.input_grad(g) == InputGrad::Lanes {
            regroup_lanes(g, &w, &mut wt);
        }
        let mut dw = vec![f32::NAN; g.k * g.ckk()];
        let mut dx = vec![f32::NAN; g.c * g.h * g.w];
        for n in 0..g.n {
            let img: Vec<f32> = (0..image_len(g)).map(|i| val(i, n)).collect();
            let g_n: Vec<f32> = (0..g.k * g.positions()).map(|i| val(i, 40 + n)).collect();
            let first = n == 0;
            backward_image(
                g,
                (&w, &wt),
                &img,
                &g_n,
                rest,
                (&mut sum, &mut dw, first),
                Some(&mut dx),
            );
        }
        sum.finish(g, &mut dw);
        (dw, dx)
    }
}
