//! # mnist
//!
//! A strict reader for the IDX files of MNIST and Fashion-MNIST, the datasets as u8 arrays, and a
//! downloader that verifies every file. Shuffling, batching and validation splits belong to the
//! training loop (the `nn` crate's `BatchSource` and `split_indices`).
#![deny(missing_docs)]

mod dataset;
mod download;
mod error;
pub mod idx;
mod location;
mod open;

pub use dataset::{
    locate_file, Dataset, DatasetKind, FileSpec, ParseDatasetKindError, Split,
    FASHION_MNIST_MIRRORS, IMAGE_COLS, IMAGE_PIXELS, IMAGE_ROWS, MNIST_MIRRORS, NUM_CLASSES,
    TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
};
pub use download::{
    ensure_dataset, sha256_of_uncompressed_file, DownloadOptions, FileReport, FileStatus,
};
pub use error::{DownloadError, Error, IdxError, MirrorFailure};
pub use location::{
    mirrors_from_env, parse_mirrors, resolve_data_dir, resolve_data_dir_with, DATA_DIR_ENV,
    MIRRORS_ENV,
};
