//! Data augmentation: a random shift (± a few pixels) and a small random rotation of each
//! 28×28 image, resampled bilinearly with zeros outside the image (the seed's "image
//! processing" bonus). Random parameters come from the caller's seeded RNG, so augmented runs
//! are reproducible and resumable.

use crate::data::IMAGE_LEN;
use crate::lenet5::IMAGE_SIZE;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Ranges of the random transforms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Largest shift in pixels along each axis, drawn uniformly in ±max_shift.
    pub max_shift: f32,
    /// Largest rotation in degrees, drawn uniformly in ±max_rotation_degrees.
    pub max_rotation_degrees: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            max_shift: 2.0,
            max_rotation_degrees: 10.0,
        }
    }
}

impl AugmentConfig {
    /// Checks the values, returning a message naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_shift.is_finite() && (0.0..=14.0).contains(&self.max_shift)) {
            return Err(format!(
                "augment max_shift must be in [0, 14], got {}",
                self.max_shift
            ));
        }
        if !(self.max_rotation_degrees.is_finite()
            && (0.0..=180.0).contains(&self.max_rotation_degrees))
        {
            return Err(format!(
                "augment max_rotation_degrees must be in [0, 180], got {}",
                self.max_rotation_degrees
            ));
        }
        Ok(())
    }
}

/// Applies random shifts and rotations in place, with one reused 28×28 scratch image.
#[derive(Debug, Clone)]
pub struct Augmenter {
    config: AugmentConfig,
    scratch: Vec<f32>,
}

impl Augmenter {
    /// An augmenter with the given ranges.
    pub fn new(config: AugmentConfig) -> Self {
        Augmenter {
            config,
            scratch: vec![0.0; IMAGE_LEN],
        }
    }

    /// The ranges.
    pub fn config(&self) -> AugmentConfig {
        self.config
    }

    /// Transforms every 28×28 image of `images` (a whole number of images), drawing three
    /// numbers per image from `rng`: the shifts in x and y, then the angle.
    ///
    /// # Panics
    /// If `images.len()` is not a multiple of 784.
    pub fn apply<R: Rng + ?Sized>(&mut self, images: &mut [f32], rng: &mut R) {
        assert_eq!(images.len() % IMAGE_LEN, 0, "Augmenter: whole 28x28 images");
        let s = self.config.max_shift as f64;
        let r = (self.config.max_rotation_degrees as f64).to_radians();
        for image in images.chunks_exact_mut(IMAGE_LEN) {
            let dx = if s > 0.0 { rng.gen_range(-s..=s) } else { 0.0 };
            let dy = if s > 0.0 { rng.gen_range(-s..=s) } else { 0.0 };
            let angle = if r > 0.0 { rng.gen_range(-r..=r) } else { 0.0 };
            self.scratch.copy_from_slice(image);
            transform(&self.scratch, image, dx as f32, dy as f32, angle as f32);
        }
    }
}

/// Writes into `dst` the image `src` rotated by `angle` radians about its centre and then
/// shifted by (dx, dy) pixels, sampling `src` bilinearly at the inverse-mapped position.
pub fn transform(src: &[f32], dst: &mut [f32], dx: f32, dy: f32, angle: f32) {
    let n = IMAGE_SIZE;
    let c = (n as f32 - 1.0) / 2.0;
    let (sin, cos) = angle.sin_cos();
    for i in 0..n {
        for j in 0..n {
            // Output pixel relative to the centre, minus the shift, rotated back by −angle.
            let x = j as f32 - c - dx;
            let y = i as f32 - c - dy;
            let sx = cos * x + sin * y + c;
            let sy = -sin * x + cos * y + c;
            dst[i * n + j] = bilinear(src, sx, sy);
        }
    }
}

/// `src` sampled at (x, y) with bilinear weights, zero outside the image.
fn bilinear(src: &[f32], x: f32, y: f32) -> f32 {
    let n = IMAGE_SIZE as isize;
    let x0 = x.floor();
    let y0 = y.floor();
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn image_with_dot(i: usize, j: usize) -> Vec<f32> {
        let mut v = vec![0.0; IMAGE_LEN];
        v[i * IMAGE_SIZE + j] = 1.0;
        v
    }

    #[test]
    fn identity_keeps_the_image() {
        let src: Vec<f32> = (0..IMAGE_LEN).map(|k| (k % 17) as f32).collect();
        let mut dst = vec![0.0; IMAGE_LEN];
        transform(&src, &mut dst, 0.0, 0.0, 0.0);
        assert_eq!(src, dst);
    }

    #[test]
    fn integer_shift_moves_pixels() {
        let src = image_with_dot(10, 12);
        let mut dst = vec![0.0; IMAGE_LEN];
        transform(&src, &mut dst, 2.0, -1.0, 0.0);
        assert!((dst[9 * IMAGE_SIZE + 14] - 1.0).abs() < 1e-6);
        assert!((dst.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn quarter_turn_rotates_about_the_centre() {
        // A dot right of the centre goes below it for +90° in image coordinates (y down).
        let src = image_with_dot(13, 20);
        let mut dst = vec![0.0; IMAGE_LEN];
        transform(&src, &mut dst, 0.0, 0.0, std::f32::consts::FRAC_PI_2);
        let (k, v) = dst
            .iter()
            .enumerate()
            .fold((0, 0.0f32), |b, (k, &v)| if v > b.1 { (k, v) } else { b });
        assert!(v > 0.4, "peak {v}");
        let (i, j) = (k / IMAGE_SIZE, k % IMAGE_SIZE);
        assert!(
            (i as i32 - 20).abs() <= 1 && (j as i32 - 14).abs() <= 1,
            "{i},{j}"
        );
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
}
