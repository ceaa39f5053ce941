//! # mnist
//!
//! A strict reader for the IDX files of MNIST and Fashion-MNIST, a dataset API with seeded
//! shuffling and batching, and a downloader that verifies every file.
#![deny(missing_docs)]

mod error;
pub mod idx;

pub use error::{DownloadError, Error, IdxError, MirrorFailure};
