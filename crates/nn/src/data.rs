//! Where training and evaluation read their examples from. This crate knows nothing about
//! MNIST files: anything that can fill a batch of 1×28×28 f32 images and labels will do.

use crate::lenet5::IMAGE_SIZE;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Number of f32 values per image (1 × 28 × 28).
pub const IMAGE_LEN: usize = IMAGE_SIZE * IMAGE_SIZE;

/// A labelled image collection that can copy any subset of its examples into a batch. It is
/// `Sync`: the trainer fills the shards of a batch on several threads at once.
pub trait BatchSource: Sync {
    /// Number of examples.
    fn len(&self) -> usize;

    /// True if there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the examples `indices` (each `< len()`) into `images` (NCHW, `[indices.len(), 1,
    /// 28, 28]`, pixel values as the model expects them, e.g. `p as f32 / 255.0`) and `labels`
    /// (`indices.len()` class indices). Called once per batch: it should not allocate.
    fn fill_batch(&self, indices: &[usize], images: &mut [f32], labels: &mut [usize]);
}

impl<T: BatchSource + ?Sized> BatchSource for &T {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn fill_batch(&self, indices: &[usize], images: &mut [f32], labels: &mut [usize]) {
        (**self).fill_batch(indices, images, labels)
    }
}

/// Images and labels held in memory as f32 (handy for tests and small data sets).
#[derive(Debug, Clone, Default)]
pub struct InMemorySource {
    images: Vec<f32>,
    labels: Vec<usize>,
}

impl InMemorySource {
    /// Wraps `images` (`labels.len()` × 784 values) and `labels`.
    ///
    /// # Panics
    /// If `images.len() != labels.len() * 784`.
    pub fn new(images: Vec<f32>, labels: Vec<usize>) -> Self {
        assert_eq!(
            images.len(),
            labels.len() * IMAGE_LEN,
            "InMemorySource: {} labels need {} pixel values, got {}",
            labels.len(),
            labels.len() * IMAGE_LEN,
            images.len()
        );
        InMemorySource { images, labels }
    }

    /// All images, example after example.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }
}

impl BatchSource for InMemorySource {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn fill_batch(&self, indices: &[usize], images: &mut [f32], labels: &mut [usize]) {
        for ((&i, img), label) in indices
            .iter()
            .zip(images.chunks_exact_mut(IMAGE_LEN))
            .zip(labels.iter_mut())
        {
            img.copy_from_slice(&self.images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]);
            *label = self.labels[i];
        }
    }
}

/// The examples `indices` of another source (e.g. a validation split of the training set).
#[derive(Debug, Clone)]
pub struct Subset<S> {
    source: S,
    indices: Vec<usize>,
}

impl<S: BatchSource> Subset<S> {
    /// The examples of `source` listed in `indices` (each `< source.len()`), in that order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn new(source: S, indices: Vec<usize>) -> Self {
        let n = source.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            panic!("Subset: index {bad} out of range for a source of {n} examples");
        }
        Subset { source, indices }
    }

    /// The indices into the underlying source.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<S: BatchSource> BatchSource for Subset<S> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn fill_batch(&self, indices: &[usize], images: &mut [f32], labels: &mut [usize]) {
        // Translate indices through a small stack buffer, chunk by chunk: no allocation.
        const CHUNK: usize = 64;
        let mut mapped = [0usize; CHUNK];
        for (k, chunk) in indices.chunks(CHUNK).enumerate() {
            for (m, &i) in mapped.iter_mut().zip(chunk) {
                *m = self.indices[i];
            }
            let start = k * CHUNK;
            let end = start + chunk.len();
            self.source.fill_batch(
                &mapped[..chunk.len()],
                &mut images[start * IMAGE_LEN..end * IMAGE_LEN],
                &mut labels[start..end],
            );
        }
    }
}

/// Splits `0..len` into (train, validation) index lists: a seeded shuffle, then the last
/// `round(len · fraction)` indices become the validation set. Both lists come back sorted.
///
/// # Panics
/// If `fraction` is not in [0, 1).
pub fn split_indices(len: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert!(
        (0.0..1.0).contains(&fraction),
        "split_indices: fraction must be in [0, 1), got {fraction}"
    );
    let mut order: Vec<usize> = (0..len).collect();
    // A stream of its own, so the split does not depend on the training RNG.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(7);
    order.shuffle(&mut rng);
    let n_val = ((len as f64) * fraction).round() as usize;
    let mut val = order.split_off(len - n_val);
    order.sort_unstable();
    val.sort_unstable();
    (order, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_a_partition_and_seeded() {
        let (t, v) = split_indices(1000, 0.1, 3);
        assert_eq!(v.len(), 100);
        assert_eq!(t.len(), 900);
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(split_indices(1000, 0.1, 3), (t, v.clone()));
        assert_ne!(split_indices(1000, 0.1, 4).1, v);
    }

    #[test]
    fn subset_maps_indices_across_chunks() {
        let n = 150;
        let images: Vec<f32> = (0..n * IMAGE_LEN).map(|i| (i / IMAGE_LEN) as f32).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % 10).collect();
        let src = InMemorySource::new(images, labels);
        let sub = Subset::new(&src, (0..n).rev().collect());
        let idx: Vec<usize> = (0..100).collect();
        let mut img = vec![0.0; 100 * IMAGE_LEN];
        let mut lab = vec![0; 100];
        sub.fill_batch(&idx, &mut img, &mut lab);
        for k in 0..100 {
            assert_eq!(img[k * IMAGE_LEN], (n - 1 - k) as f32);
            assert_eq!(lab[k], (n - 1 - k) % 10);
        }
    }
}
