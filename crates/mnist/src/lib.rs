//! # mnist
//!
//! A strict reader for the IDX files of MNIST and Fashion-MNIST, a dataset API with seeded
//! shuffling and batching, and a downloader that verifies every file.
#![deny(missing_docs)]

mod dataset;
mod error;
pub mod idx;

pub use dataset::{
    epoch_order, locate_file, shuffled_indices, Dataset, DatasetKind, FileSpec,
    ParseDatasetKindError, Split, FASHION_MNIST_MIRRORS, IMAGE_COLS, IMAGE_PIXELS, IMAGE_ROWS,
    MNIST_MIRRORS, NUM_CLASSES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
};
pub use error::{DownloadError, Error, IdxError, MirrorFailure};
