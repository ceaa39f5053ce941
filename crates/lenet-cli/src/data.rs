//! Getting the data: where it lives (`--data-dir`, `LENET_DATA_DIR`, `./data`), fetching it when
//! it is missing, and the adapter that lets the `nn` training loop read `mnist` splits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mnist::{Dataset, DatasetKind, DownloadOptions, Split};
use nn::BatchSource;

/// True if all four files of `kind` are in `dir` (gzip or unpacked).
pub fn all_present(kind: DatasetKind, dir: &Path) -> bool {
    kind.files()
        .iter()
        .all(|f| mnist::locate_file(dir, &f.name).exists())
}

/// Downloads and verifies the files of `kind` missing from `dir`. The library's error names the
/// dataset, the folder and every mirror tried; the command line adds its own way out.
pub fn fetch(kind: DatasetKind, dir: &Path) -> Result<Vec<mnist::FileReport>> {
    mnist::ensure_dataset(kind, dir, &DownloadOptions::default()).map_err(|e| {
        anyhow::anyhow!("{e}\n  or pass --data-dir DIR (the folder holding the four files)")
    })
}

/// The folder of `kind` after making sure its files are there: files already present are used
/// as they are (the strict IDX reader checks them when they are read); if any is missing, the
/// missing ones are downloaded from the mirrors and verified against their SHA-256.
pub fn ensure(kind: DatasetKind, data_dir: Option<&Path>) -> Result<PathBuf> {
    let dir = mnist::resolve_data_dir(kind, data_dir);
    if !all_present(kind, &dir) {
        crate::errln!(
            "{} is not (completely) in {}: downloading it",
            kind.display_name(),
            dir.display()
        );
        fetch(kind, &dir)?;
    }
    Ok(dir)
}

/// Training and test sets of `kind` (see [`ensure`]).
pub fn load(kind: DatasetKind, data_dir: Option<&Path>) -> Result<Dataset> {
    read(kind, &ensure(kind, data_dir)?)
}

/// Training and test sets of `kind` from the files in `dir`, downloading nothing.
pub fn read(kind: DatasetKind, dir: &Path) -> Result<Dataset> {
    Dataset::load(kind, dir)
        .with_context(|| format!("cannot read {} from {}", kind.display_name(), dir.display()))
}

/// The test set of `kind` only (see [`ensure`]).
pub fn load_test(kind: DatasetKind, data_dir: Option<&Path>) -> Result<Split> {
    let dir = ensure(kind, data_dir)?;
    let images = mnist::locate_file(&dir, mnist::TEST_IMAGES);
    let labels = mnist::locate_file(&dir, mnist::TEST_LABELS);
    let split = Split::read(&images, &labels).with_context(|| {
        format!(
            "cannot read the {} test set from {}",
            kind.display_name(),
            dir.display()
        )
    })?;
    anyhow::ensure!(
        split.pixels_per_image() == nn::IMAGE_LEN,
        "{}: images are {:?} pixels, the model needs 28×28",
        images.display(),
        &split.images.shape()[1..]
    );
    Ok(split)
}

/// Which dataset the test labels in `dir` belong to, recognised by their SHA-256 (`None` for
/// files of neither dataset, e.g. a subset).
pub fn identify_test_set(dir: &Path) -> Option<DatasetKind> {
    let sum =
        mnist::sha256_of_uncompressed_file(&mnist::locate_file(dir, mnist::TEST_LABELS)).ok()?;
    DatasetKind::ALL.into_iter().find(|k| {
        k.files()
            .iter()
            .any(|f| f.name == mnist::TEST_LABELS && f.sha256 == sum)
    })
}

/// An `mnist` split seen as an `nn` batch source: pixels scaled to `p / 255`.
#[derive(Debug, Clone, Copy)]
pub struct SplitSource<'a>(pub &'a Split);

impl BatchSource for SplitSource<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn fill_batch(&self, indices: &[usize], images: &mut [f32], labels: &mut [usize]) {
        self.0.write_batch(indices, images, labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array3};

    #[test]
    fn split_source_fills_scaled_batches() {
        let mut images = Array3::<u8>::zeros((3, 28, 28));
        images[[1, 0, 0]] = 255;
        images[[2, 27, 27]] = 51;
        let split = Split {
            images,
            labels: Array1::from(vec![4, 7, 9]),
        };
        let source = SplitSource(&split);
        assert_eq!(source.len(), 3);
        let mut batch = vec![-1.0; 2 * 784];
        let mut labels = vec![0; 2];
        source.fill_batch(&[2, 1], &mut batch, &mut labels);
        assert_eq!(labels, [9, 7]);
        assert_eq!(batch[783], 0.2);
        assert_eq!(batch[784], 1.0);
        assert_eq!(batch.iter().filter(|&&v| v != 0.0).count(), 2);
    }

    #[test]
    fn present_files_are_not_downloaded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!all_present(DatasetKind::Mnist, dir.path()));
        for f in DatasetKind::Mnist.files() {
            std::fs::write(dir.path().join(&f.name), b"x").unwrap();
        }
        assert!(all_present(DatasetKind::Mnist, dir.path()));
        assert_eq!(
            ensure(DatasetKind::Mnist, Some(dir.path())).unwrap(),
            dir.path()
        );
        // The garbage is then rejected by the reader, naming the file.
        let err = format!(
            "{:#}",
            load(DatasetKind::Mnist, Some(dir.path())).unwrap_err()
        );
        assert!(err.contains("idx"), "{err}");
    }
}
