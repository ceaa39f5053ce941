//! Data augmentation: each 28×28 training image is warped by a random affine map (shift,
//! rotation, scale, shear) plus an elastic distortion (Simard, Steinkraus & Platt 2003: a random
//! displacement field smoothed by a Gaussian of standard deviation σ and scaled by α), resampled
//! bilinearly with zeros outside the image, and then its strokes are made thicker or thinner (a
//! blend with a grey-level dilation or erosion). Together they mimic how handwriting varies:
//! position, slant, size, wobble and pen width. Random parameters come from the caller's seeded
//! RNG, so augmented runs are reproducible and resumable; the buffers are allocated once.
//!
//! Images are augmented in parallel on rayon's threads. The caller's RNG gives one seed per
//! image, in order, and each image draws its parameters from its own generator seeded with it,
//! so the result does not depend on the number of threads or on how the batch is split.

use crate::data::IMAGE_LEN;
use crate::lenet5::IMAGE_SIZE;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Ranges of the random transforms. A zero magnitude turns its transform off (and its draw);
/// all zero leaves the images unchanged and draws nothing from the RNG.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Largest shift in pixels along each axis, drawn uniformly in ±max_shift.
    pub max_shift: f32,
    /// Largest rotation in degrees, drawn uniformly in ±max_rotation_degrees.
    pub max_rotation_degrees: f32,
    /// Largest relative change of size: the scale factor is drawn uniformly in 1 ± max_scale.
    pub max_scale: f32,
    /// Largest horizontal shear (x += shear · y, a slant), drawn uniformly in ±max_shear.
    pub max_shear: f32,
    /// Elastic distortion strength α in pixels (Simard et al.'s α); 0 turns it off.
    pub elastic_alpha: f32,
    /// Standard deviation σ in pixels of the Gaussian that smooths the displacement field.
    pub elastic_sigma: f32,
    /// Largest stroke-width change, in [0, 1]: the image is blended by a fraction drawn in
    /// ±max_stroke with its dilation (positive: thicker) or its erosion (negative: thinner).
    pub max_stroke: f32,
}

/// The defaults (`lenet train --augment`) are chosen so that 10 epochs of the default run reach
/// ≥ 99.4% on the MNIST test set: stronger elastic and stroke changes help more on hand-drawn
/// digits but need more epochs to pay off.
impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            max_shift: 1.5,
            max_rotation_degrees: 10.0,
            max_scale: 0.1,
            max_shear: 0.2,
            elastic_alpha: 10.0,
            elastic_sigma: 4.0,
            max_stroke: 0.3,
        }
    }
}

impl AugmentConfig {
    /// No transform at all.
    pub const NONE: AugmentConfig = AugmentConfig {
        max_shift: 0.0,
        max_rotation_degrees: 0.0,
        max_scale: 0.0,
        max_shear: 0.0,
        elastic_alpha: 0.0,
        elastic_sigma: 4.0,
        max_stroke: 0.0,
    };

    /// True when every magnitude is zero: augmentation leaves images unchanged.
    pub fn is_identity(&self) -> bool {
        [
            self.max_shift,
            self.max_rotation_degrees,
            self.max_scale,
            self.max_shear,
            self.elastic_alpha,
            self.max_stroke,
        ]
        .iter()
        .all(|&m| m == 0.0)
    }

    /// Checks the values, returning a message naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        let ranges: [(&str, f32, f32, f32); 7] = [
            ("max_shift", self.max_shift, 0.0, 14.0),
            (
                "max_rotation_degrees",
                self.max_rotation_degrees,
                0.0,
                180.0,
            ),
            ("max_scale", self.max_scale, 0.0, 0.9),
            ("max_shear", self.max_shear, 0.0, 2.0),
            ("elastic_alpha", self.elastic_alpha, 0.0, 100.0),
            ("elastic_sigma", self.elastic_sigma, 0.5, 8.0),
            ("max_stroke", self.max_stroke, 0.0, 1.0),
        ];
        for (name, v, lo, hi) in ranges {
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                return Err(format!("augment {name} must be in [{lo}, {hi}], got {v}"));
            }
        }
        Ok(())
    }
}

/// One image's affine map, from output to source coordinates about the image centre: the source
/// of output pixel p is `inverse · (p − c − shift) + c`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Row-major 2×2 matrix `[[a, b], [c, d]]` acting on (x, y).
    pub inverse: [f32; 4],
    /// Shift (dx, dy) in pixels, applied after the linear part.
    pub shift: (f32, f32),
}

impl Affine {
    /// The identity.
    pub const IDENTITY: Affine = Affine {
        inverse: [1.0, 0.0, 0.0, 1.0],
        shift: (0.0, 0.0),
    };

    /// The map that scales by `scale`, shears by `shear` (x += shear · y), rotates by `angle`
    /// radians (clockwise on screen, y pointing down) and then shifts by (dx, dy):
    /// forward M = R(angle) · Sh(shear) · scale, stored as M⁻¹ = Sh(−shear) · R(−angle) / scale.
    pub fn new(dx: f32, dy: f32, angle: f32, scale: f32, shear: f32) -> Affine {
        let (sin, cos) = angle.sin_cos();
        // R(−angle) = [[cos, sin], [−sin, cos]]; Sh(−shear) = [[1, −shear], [0, 1]].
        let inverse = [
            (cos + shear * sin) / scale,
            (sin - shear * cos) / scale,
            -sin / scale,
            cos / scale,
        ];
        Affine {
            inverse,
            shift: (dx, dy),
        }
    }
}

/// The batch is cut into at most this many pieces, each with its own [`Scratch`], for the
/// threads. The result does not depend on it (every image has its own RNG).
const PIECES: usize = 16;

/// Applies the random transforms in place, with buffers allocated on the first batch.
#[derive(Debug, Clone)]
pub struct Augmenter {
    config: AugmentConfig,
    /// The Gaussian's taps, `2r + 1` of them with r = ⌈3σ⌉, summing to 1.
    kernel: Vec<f32>,
    /// One seed per image of the current batch.
    seeds: Vec<u64>,
    /// One scratch per piece of the batch.
    scratch: Vec<Scratch>,
}

/// The buffers one image's augmentation works in.
#[derive(Debug, Clone)]
pub(crate) struct Scratch {
    image: Vec<f32>,
    /// Noise with an r-wide zero margin on each side: (N + 2r)² values.
    noise: Vec<f32>,
    /// The noise smoothed along rows: (N + 2r) rows of N.
    rows: Vec<f32>,
    /// The smoothed displacement fields, N² each.
    field_x: Vec<f32>,
    field_y: Vec<f32>,
}

impl Augmenter {
    /// An augmenter with the given ranges.
    pub fn new(config: AugmentConfig) -> Self {
        Augmenter {
            config,
            kernel: gaussian_kernel(config.elastic_sigma),
            seeds: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The ranges.
    pub fn config(&self) -> AugmentConfig {
        self.config
    }

    /// Transforms every 28×28 image of `images` (a whole number of images). Draws one `u64`
    /// seed per image from `rng`, in order (nothing when every magnitude is zero); image `i`'s
    /// own generator then draws, for each transform whose magnitude is not zero and in this
    /// order: the shifts in x and y, the angle, the scale, the shear, the two noise fields (N²
    /// values each) and the stroke change.
    ///
    /// # Panics
    /// If `images.len()` is not a multiple of 784.
    pub fn apply<R: Rng + ?Sized>(&mut self, images: &mut [f32], rng: &mut R) {
        assert_eq!(images.len() % IMAGE_LEN, 0, "Augmenter: whole 28x28 images");
        let n = images.len() / IMAGE_LEN;
        let per_piece = n.div_ceil(PIECES).max(1);
        let pieces = n.div_ceil(per_piece);
        if self.scratch.len() < pieces {
            let scratch = Scratch::new(self.kernel.len());
            self.scratch.resize(pieces, scratch);
        }
        let Augmenter {
            config,
            kernel,
            seeds,
            scratch,
        } = self;
        let Some(batch) = draw_seeds(*config, kernel, seeds, n, rng) else {
            return;
        };
        images
            .par_chunks_mut(per_piece * IMAGE_LEN)
            .zip(scratch.par_iter_mut())
            .enumerate()
            .for_each(|(p, (images, scratch))| batch.rows(p * per_piece, images, scratch));
    }

    /// Draws the seeds of a batch of `n` images from `rng` as [`Augmenter::apply`] does, and
    /// returns what augments the batch's rows piece by piece ([`BatchAugment::rows`]), so
    /// that the pieces can run where their rows are filled; `None` (no draw) when every
    /// magnitude is zero.
    pub(crate) fn begin_batch<R: Rng + ?Sized>(
        &mut self,
        n: usize,
        rng: &mut R,
    ) -> Option<BatchAugment<'_>> {
        draw_seeds(self.config, &self.kernel, &mut self.seeds, n, rng)
    }
}

/// One seed per image of a batch of `n` from `rng`, into `seeds`; nothing when `config` is the
/// identity.
fn draw_seeds<'a, R: Rng + ?Sized>(
    config: AugmentConfig,
    kernel: &'a [f32],
    seeds: &'a mut Vec<u64>,
    n: usize,
    rng: &mut R,
) -> Option<BatchAugment<'a>> {
    if config.is_identity() {
        return None;
    }
    seeds.clear();
    seeds.extend((0..n).map(|_| rng.gen::<u64>()));
    Some(BatchAugment {
        config,
        kernel,
        seeds,
    })
}

/// A batch's augmentation once its seeds are drawn ([`Augmenter::begin_batch`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchAugment<'a> {
    config: AugmentConfig,
    kernel: &'a [f32],
    seeds: &'a [u64],
}

impl BatchAugment<'_> {
    /// The buffers in `slot`, made for this batch's Gaussian first if they are missing or were
    /// made for another (allocates only then).
    pub(crate) fn scratch<'s>(&self, slot: &'s mut Option<Scratch>) -> &'s mut Scratch {
        let taps = self.kernel.len();
        if slot.as_ref().is_none_or(|s| !s.fits(taps)) {
            *slot = Some(Scratch::new(taps));
        }
        slot.as_mut().expect("just made")
    }

    /// Transforms the batch's images `first..` held in `images` (whole images), each from its
    /// own seed, in `scratch`: the same bits wherever the batch is cut.
    pub(crate) fn rows(&self, first: usize, images: &mut [f32], scratch: &mut Scratch) {
        let seeds = &self.seeds[first..][..images.len() / IMAGE_LEN];
        for (image, &seed) in images.chunks_exact_mut(IMAGE_LEN).zip(seeds) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            scratch.augment(self.config, self.kernel, image, &mut rng);
        }
    }
}

impl Scratch {
    /// Buffers for a Gaussian of `taps` taps.
    fn new(taps: usize) -> Self {
        let n = IMAGE_SIZE;
        let padded = n + taps - 1;
        Scratch {
            image: vec![0.0; IMAGE_LEN],
            noise: vec![0.0; padded * padded],
            rows: vec![0.0; padded * n],
            field_x: vec![0.0; IMAGE_LEN],
            field_y: vec![0.0; IMAGE_LEN],
        }
    }

    /// Whether the buffers were made for a Gaussian of `taps` taps.
    fn fits(&self, taps: usize) -> bool {
        let padded = IMAGE_SIZE + taps - 1;
        self.noise.len() == padded * padded
    }

    /// Transforms one image in place with parameters drawn from `rng` (see
    /// [`Augmenter::apply`]).
    fn augment(&mut self, c: AugmentConfig, kernel: &[f32], image: &mut [f32], rng: &mut impl Rng) {
        let dx = symmetric(rng, c.max_shift);
        let dy = symmetric(rng, c.max_shift);
        let angle = symmetric(rng, c.max_rotation_degrees.to_radians());
        let scale = 1.0 + symmetric(rng, c.max_scale);
        let shear = symmetric(rng, c.max_shear);
        let affine = Affine::new(dx, dy, angle, scale, shear);
        let elastic = c.elastic_alpha > 0.0;
        if elastic {
            self.fill_field(c.elastic_alpha, kernel, rng);
        }
        let stroke = symmetric(rng, c.max_stroke);
        self.image.copy_from_slice(image);
        let field = elastic.then_some((&self.field_x[..], &self.field_y[..]));
        warp(&self.image, image, &affine, field);
        if stroke != 0.0 {
            self.image.copy_from_slice(image);
            change_stroke(&self.image, image, stroke);
        }
    }

    /// Draws the two displacement fields: uniform noise in [−1, 1], smoothed by the Gaussian
    /// `kernel` and scaled by `alpha`.
    fn fill_field(&mut self, alpha: f32, kernel: &[f32], rng: &mut impl Rng) {
        for axis in 0..2 {
            smooth_noise(&mut self.noise, &mut self.rows, kernel, rng);
            let field = if axis == 0 {
                &mut self.field_x
            } else {
                &mut self.field_y
            };
            vertical_pass(&self.rows, kernel, field);
            for v in field.iter_mut() {
                *v *= alpha;
            }
        }
    }
}

/// A uniform draw in ±m, or 0 without drawing when m is 0.
fn symmetric<R: Rng + ?Sized>(rng: &mut R, m: f32) -> f32 {
    if m > 0.0 {
        rng.gen_range(-m..=m)
    } else {
        0.0
    }
}

/// Taps of a Gaussian of standard deviation `sigma`, truncated at ⌈3σ⌉ and normalised to sum 1.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let sigma = sigma.max(0.5);
    let r = (3.0 * sigma).ceil() as i32;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Fills the inner N×N of `noise` (side N + 2r, zero margin) with uniform values in [−1, 1] and
/// writes into rows `r..r + N` of `rows` (N + 2r rows of N) its convolution with `kernel` along
/// each row. The other rows of the convolution are those of the zero margin, all +0: they are
/// neither computed nor stored, and [`vertical_pass`] does not read them.
fn smooth_noise<R: Rng + ?Sized>(noise: &mut [f32], rows: &mut [f32], kernel: &[f32], rng: &mut R) {
    let n = IMAGE_SIZE;
    let r = kernel.len() / 2;
    let side = n + 2 * r;
    for i in 0..n {
        for v in &mut noise[(i + r) * side + r..(i + r) * side + r + n] {
            *v = rng.gen_range(-1.0..=1.0);
        }
    }
    for i in r..r + n {
        let src = &noise[i * side..(i + 1) * side];
        let taps = kernel.iter().enumerate().map(|(k, &w)| (w, &src[k..k + n]));
        accumulate_row(&mut rows[i * n..(i + 1) * n], taps);
    }
}

/// `out[j] = Σ_t w_t · s_t[j]`, summed from +0 in the order of `taps` (each product rounded,
/// then added), over one row of N: a fixed length, so the loop runs in vector registers.
fn accumulate_row<'a>(out: &mut [f32], taps: impl Iterator<Item = (f32, &'a [f32])>) {
    let out: &mut [f32; IMAGE_SIZE] = out.try_into().expect("a row of N");
    out.fill(0.0);
    for (w, s) in taps {
        let s: &[f32; IMAGE_SIZE] = s.try_into().expect("a row of N");
        for (o, &s) in out.iter_mut().zip(s) {
            *o += w * s;
        }
    }
}

/// Convolves the row-smoothed noise (rows `r..r + N` of N + 2r rows of N, see
/// [`smooth_noise`]) with `kernel` along columns, into N×N. The taps that would read a margin
/// row are skipped: each adds `w · (+0) = +0` to a sum that is not −0 (it starts at +0, and
/// only products of the nonzero noise are added to it), which leaves the sum's bits unchanged.
fn vertical_pass(rows: &[f32], kernel: &[f32], field: &mut [f32]) {
    let n = IMAGE_SIZE;
    let r = kernel.len() / 2;
    for (i, out) in field.chunks_exact_mut(n).enumerate() {
        // Row i + k of `rows` is a noise row when r ≤ i + k < r + n.
        let taps = (r.saturating_sub(i)..kernel.len().min(r + n - i))
            .map(|k| (kernel[k], &rows[(i + k) * n..(i + k + 1) * n]));
        accumulate_row(out, taps);
    }
}

/// Writes into `dst` the image `src` warped by `affine` and, if given, displaced by the
/// per-pixel fields `(fx, fy)`: output pixel (x, y) takes `src` sampled bilinearly at
/// `inverse · ((x, y) − c − shift) + c + (fx, fy)[y][x]`.
pub fn warp(src: &[f32], dst: &mut [f32], affine: &Affine, field: Option<(&[f32], &[f32])>) {
    let n = IMAGE_SIZE;
    let c = (n as f32 - 1.0) / 2.0;
    let [a, b, cc, d] = affine.inverse;
    let (dx, dy) = affine.shift;
    for i in 0..n {
        for j in 0..n {
            let x = j as f32 - c - dx;
            let y = i as f32 - c - dy;
            let mut sx = a * x + b * y + c;
            let mut sy = cc * x + d * y + c;
            if let Some((fx, fy)) = field {
                sx += fx[i * n + j];
                sy += fy[i * n + j];
            }
            dst[i * n + j] = bilinear(src, sx, sy);
        }
    }
}

/// Writes into `dst` the blend `(1 − |t|)·src + |t|·m`, where m is the grey-level dilation of
/// `src` (maximum over the pixel and its four neighbours) for t > 0, its erosion (minimum) for
/// t < 0. Outside the image counts as background (0) for the erosion and is ignored for the
/// dilation.
pub fn change_stroke(src: &[f32], dst: &mut [f32], t: f32) {
    let n = IMAGE_SIZE;
    let w = t.abs();
    for i in 0..n {
        for j in 0..n {
            let v = src[i * n + j];
            let neighbours = [
                (i > 0).then(|| src[(i - 1) * n + j]),
                (i + 1 < n).then(|| src[(i + 1) * n + j]),
                (j > 0).then(|| src[i * n + j - 1]),
                (j + 1 < n).then(|| src[i * n + j + 1]),
            ];
            let m = if t > 0.0 {
                neighbours.iter().flatten().fold(v, |m, &u| m.max(u))
            } else {
                neighbours
                    .iter()
                    .map(|u| u.unwrap_or(0.0))
                    .fold(v, f32::min)
            };
            dst[i * n + j] = (1.0 - w) * v + w * m;
        }
    }
}

/// `src` sampled at (x, y) with bilinear weights, zero outside the image.
fn bilinear(src: &[f32], x: f32, y: f32) -> f32 {
    let n = IMAGE_SIZE as isize;
    let x0 = floor(x);
    let y0 = floor(y);
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as isize, y0 as isize);
    let at = |yy: isize, xx: isize| -> f32 {
        if (0..n).contains(&yy) && (0..n).contains(&xx) {
            src[(yy * n + xx) as usize]
        } else {
            0.0
        }
    };
    let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1) * fx;
    let bottom = at(y0 + 1, x0) * (1.0 - fx) + at(y0 + 1, x0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// `v.floor()`, bit for bit, without the libm call that `f32::floor` makes on the baseline
/// x86-64 build (no SSE4.1 `roundps`): it was a tenth of an augmented epoch, two calls per
/// pixel. Below 2²³ in magnitude the truncation toward zero is exact in an `i32`, and one step
/// down fixes the negatives; from 2²³ every float is an integer (and NaN and the infinities
/// are their own floor). `copysign` keeps −0 as −0.
fn floor(v: f32) -> f32 {
    if v.abs() < 8_388_608.0 {
        let t = v as i32 as f32;
        let t = if t > v { t - 1.0 } else { t };
        t.copysign(v)
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The smoothing as first written: both passes over every row of the padded grid, margin
    /// rows included, in plain loops.
    fn smooth_by_hand(noise: &[f32], kernel: &[f32]) -> Vec<f32> {
        let (n, r) = (IMAGE_SIZE, kernel.len() / 2);
        let side = n + 2 * r;
        let mut rows = vec![0.0f32; side * n];
        for i in 0..side {
            for j in 0..n {
                let mut o = 0.0f32;
                for (k, &w) in kernel.iter().enumerate() {
                    o += w * noise[i * side + j + k];
                }
                rows[i * n + j] = o;
            }
        }
        let mut field = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut o = 0.0f32;
                for (k, &w) in kernel.iter().enumerate() {
                    o += w * rows[(i + k) * n + j];
                }
                field[i * n + j] = o;
            }
        }
        field
    }

    /// Skipping the margin rows and running the rows in vector registers changes no bit of
    /// the smoothed field, for several widths of the Gaussian (σ 0.5 to 6: r from 2 to 18).
    #[test]
    fn smoothing_skips_the_margin_without_changing_a_bit() {
        for sigma in [0.5, 1.0, 4.0, 6.0] {
            let kernel = gaussian_kernel(sigma);
            let side = IMAGE_SIZE + kernel.len() - 1;
            let mut noise = vec![0.0f32; side * side];
            let mut rows = vec![f32::NAN; side * IMAGE_SIZE];
            let mut field = vec![f32::NAN; IMAGE_LEN];
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            smooth_noise(&mut noise, &mut rows, &kernel, &mut rng);
            vertical_pass(&rows, &kernel, &mut field);
            let want = smooth_by_hand(&noise, &kernel);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&field), bits(&want), "sigma {sigma}");
            assert!(
                field.iter().any(|&v| v != 0.0),
                "sigma {sigma}: a field, not zeros"
            );
        }
    }

    /// `floor` against `f32::floor`, bit for bit: signed zeros, NaN, the infinities, the
    /// subnormals, both sides of every integer in the warp's range, the 2²³ and i32 limits,
    /// and a sweep of random bit patterns.
    #[test]
    fn floor_matches_the_library_bit_for_bit() {
        let mut values = vec![0.0f32, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        values.extend([
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::MAX,
            f32::MIN,
        ]);
        for k in -70..70 {
            let k = k as f32;
            values.extend([k, k.next_up(), k.next_down(), k + 0.5]);
        }
        for big in [8_388_608.0f32, 2_147_483_648.0] {
            for v in [big, -big] {
                values.extend([v, v.next_up(), v.next_down()]);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        values.extend((0..100_000).map(|_| f32::from_bits(rng.gen())));
        values.extend((0..100_000).map(|_| rng.gen_range(-60.0f32..60.0)));
        for v in values {
            // A NaN's payload may come back quieted from libm: any NaN will do.
            if v.is_nan() {
                assert!(floor(v).is_nan(), "floor(NaN) = {}", floor(v));
            } else {
                assert_eq!(floor(v).to_bits(), v.floor().to_bits(), "floor({v:e})");
            }
        }
    }

    fn image_with_dot(i: usize, j: usize) -> Vec<f32> {
        let mut v = vec![0.0; IMAGE_LEN];
        v[i * IMAGE_SIZE + j] = 1.0;
        v
    }

    /// A ring of radius 7 around the centre, 2 pixels wide: digit-like mass.
    fn ring() -> Vec<f32> {
        (0..IMAGE_LEN)
            .map(|k| {
                let (y, x) = (
                    (k / IMAGE_SIZE) as f32 - 13.5,
                    (k % IMAGE_SIZE) as f32 - 13.5,
                );
                let r = (x * x + y * y).sqrt();
                if (6.0..8.0).contains(&r) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn peak(img: &[f32]) -> (usize, usize, f32) {
        let (k, v) = img
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (k, &v)| if v > b.1 { (k, v) } else { b });
        (k / IMAGE_SIZE, k % IMAGE_SIZE, v)
    }

    fn centre_of_mass(img: &[f32]) -> (f32, f32) {
        let m: f32 = img.iter().sum();
        let (mut x, mut y) = (0.0, 0.0);
        for (k, &v) in img.iter().enumerate() {
            y += v * (k / IMAGE_SIZE) as f32;
            x += v * (k % IMAGE_SIZE) as f32;
        }
        (x / m, y / m)
    }

    #[test]
    fn zero_magnitudes_leave_images_and_rng_untouched() {
        let src: Vec<f32> = (0..2 * IMAGE_LEN).map(|k| (k % 17) as f32).collect();
        let mut img = src.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        Augmenter::new(AugmentConfig::NONE).apply(&mut img, &mut rng);
        assert_eq!(img, src);
        let fresh: u64 = ChaCha8Rng::seed_from_u64(3).gen();
        assert_eq!(rng.gen::<u64>(), fresh);
    }

    #[test]
    fn integer_shift_moves_pixels() {
        let src = image_with_dot(10, 12);
        let mut dst = vec![0.0; IMAGE_LEN];
        warp(&src, &mut dst, &Affine::new(2.0, -1.0, 0.0, 1.0, 0.0), None);
        assert!((dst[9 * IMAGE_SIZE + 14] - 1.0).abs() < 1e-6);
        assert!((dst.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn quarter_turn_rotates_about_the_centre() {
        // A dot right of the centre goes below it for +90° in image coordinates (y down).
        let src = image_with_dot(13, 20);
        let mut dst = vec![0.0; IMAGE_LEN];
        let quarter = Affine::new(0.0, 0.0, std::f32::consts::FRAC_PI_2, 1.0, 0.0);
        warp(&src, &mut dst, &quarter, None);
        let (i, j, v) = peak(&dst);
        assert!(v > 0.4, "peak {v}");
        assert!(
            (i as i32 - 20).abs() <= 1 && (j as i32 - 14).abs() <= 1,
            "{i},{j}"
        );
    }

    #[test]
    fn scale_and_shear_move_points_as_stated() {
        // Centre 13.5: the dot at (x, y) = (17.5, 13.5) is 4 right of it; scale 2 puts it 8 right.
        let mut src = vec![0.0; IMAGE_LEN];
        for (i, j) in [(13, 17), (13, 18), (14, 17), (14, 18)] {
            src[i * IMAGE_SIZE + j] = 1.0;
        }
        let mut dst = vec![0.0; IMAGE_LEN];
        warp(&src, &mut dst, &Affine::new(0.0, 0.0, 0.0, 2.0, 0.0), None);
        let (cx, cy) = centre_of_mass(&dst);
        assert!(
            (cx - 21.5).abs() < 0.3 && (cy - 13.5).abs() < 0.3,
            "({cx}, {cy})"
        );
        // Shear 0.5 moves a point 4 below the centre 2 to the right: x += 0.5·y.
        let below = image_with_dot(17, 13);
        warp(
            &below,
            &mut dst,
            &Affine::new(0.0, 0.0, 0.0, 1.0, 0.5),
            None,
        );
        let (cx, cy) = centre_of_mass(&dst);
        assert!(
            (cx - 15.0).abs() < 0.3 && (cy - 17.0).abs() < 0.3,
            "({cx}, {cy})"
        );
    }

    #[test]
    fn strokes_get_thicker_or_thinner() {
        let src = ring();
        let mass: f32 = src.iter().sum();
        let mut dst = vec![0.0; IMAGE_LEN];
        change_stroke(&src, &mut dst, 1.0);
        let thick: f32 = dst.iter().sum();
        change_stroke(&src, &mut dst, -1.0);
        let thin: f32 = dst.iter().sum();
        assert!(
            thick > 1.5 * mass && thin < 0.5 * mass,
            "{thin} {mass} {thick}"
        );
        change_stroke(&src, &mut dst, 0.5);
        let half: f32 = dst.iter().sum();
        assert!((half - (mass + thick) / 2.0).abs() < 1e-3);
    }

    #[test]
    fn elastic_field_has_the_expected_size_and_is_smooth() {
        let config = AugmentConfig {
            elastic_alpha: 34.0,
            ..AugmentConfig::NONE
        };
        let kernel = gaussian_kernel(config.elastic_sigma);
        let mut s = Scratch::new(kernel.len());
        s.fill_field(
            config.elastic_alpha,
            &kernel,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        let n = IMAGE_SIZE;
        let centre = &s.field_x[10 * n + 10..10 * n + 18];
        let rms = (centre.iter().map(|v| v * v).sum::<f32>() / 8.0).sqrt();
        // Uniform noise (variance 1/3) smoothed by a 2-D Gaussian keeps a standard deviation of
        // about 0.577 / (2·√π·σ) = 0.041 for σ = 4; times α = 34 that is 1.4 pixels.
        assert!((0.3..4.0).contains(&rms), "rms {rms}");
        let step = centre
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max);
        assert!(step < 0.8 * rms, "neighbours differ by {step}, rms {rms}");
    }

    #[test]
    fn default_augmentation_keeps_digits_near_the_centre() {
        let base = ring();
        let mass: f32 = base.iter().sum();
        let mut a = Augmenter::new(AugmentConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..50 {
            let mut img = base.clone();
            a.apply(&mut img, &mut rng);
            let (cx, cy) = centre_of_mass(&img);
            assert!(
                (cx - 13.5).abs() < 3.0 && (cy - 13.5).abs() < 3.0,
                "({cx}, {cy})"
            );
            let m: f32 = img.iter().sum();
            assert!(m > 0.4 * mass && m < 2.0 * mass, "mass {m} of {mass}");
            assert!(img.iter().all(|v| (0.0..=1.0 + 1e-5).contains(v)));
        }
    }

    #[test]
    fn apply_is_deterministic_from_the_seed() {
        let base: Vec<f32> = (0..3 * IMAGE_LEN).map(|k| ((k * 7) % 13) as f32).collect();
        let run = |seed| {
            let mut a = Augmenter::new(AugmentConfig::default());
            let mut v = base.clone();
            a.apply(&mut v, &mut ChaCha8Rng::seed_from_u64(seed));
            v
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        assert_ne!(run(5), base);
    }

    #[test]
    fn apply_gives_the_same_bits_on_any_number_of_threads() {
        let base: Vec<f32> = (0..37 * IMAGE_LEN)
            .map(|k| ((k * 7) % 13) as f32 / 13.0)
            .collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut v = base.clone();
            let mut a = Augmenter::new(AugmentConfig::default());
            pool.install(|| a.apply(&mut v, &mut ChaCha8Rng::seed_from_u64(4)));
            v
        };
        let one = run(1);
        assert_ne!(one, base);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn out_of_range_values_are_named() {
        assert!(AugmentConfig::default().validate().is_ok());
        let bad = AugmentConfig {
            max_stroke: 1.5,
            ..AugmentConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_stroke"));
        let bad = AugmentConfig {
            elastic_alpha: f32::NAN,
            ..AugmentConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("elastic_alpha"));
    }
}
