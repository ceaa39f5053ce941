//! Small synthetic data sets for training tests: each class is a bright 6×6 square at its own
//! place (a 5×2 grid), jittered by ±1 pixel, on uniform noise. Learnable in an epoch or two.
#![allow(dead_code)]

pub mod strokes;

use nn::{InMemorySource, IMAGE_LEN, IMAGE_SIZE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn synthetic(n: usize, seed: u64) -> InMemorySource {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0.0f32; n * IMAGE_LEN];
    let mut labels = vec![0usize; n];
    for (img, label) in images.chunks_exact_mut(IMAGE_LEN).zip(labels.iter_mut()) {
        let k = rng.gen_range(0..10);
        *label = k;
        for p in img.iter_mut() {
            *p = rng.gen_range(0.0..0.3);
        }
        let top = 3 + (k / 5) * 12 + rng.gen_range(0..3);
        let left = 1 + (k % 5) * 5 + rng.gen_range(0..2);
        for i in top..top + 6 {
            for j in left..(left + 6).min(IMAGE_SIZE) {
                img[i * IMAGE_SIZE + j] = 1.0;
            }
        }
    }
    InMemorySource::new(images, labels)
}
