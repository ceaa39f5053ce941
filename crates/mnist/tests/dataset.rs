//! The dataset API on small synthetic files: loading, count checks and batches.

mod common;

use std::path::Path;

use common::{good_images, good_labels, gzip, labels_idx};
use mnist::{
    Dataset, DatasetKind, IdxError, Split, IMAGE_PIXELS, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES,
    TRAIN_LABELS,
};

/// Writes a synthetic 28x28 dataset into `dir`: `n_train` and `n_test` examples, with the test
/// files unpacked (raw) to check that both forms load.
fn write_dataset(dir: &Path, n_train: u32, n_test: u32) {
    std::fs::write(dir.join(TRAIN_IMAGES), gzip(&good_images(n_train, 28, 28))).unwrap();
    std::fs::write(dir.join(TRAIN_LABELS), gzip(&good_labels(n_train))).unwrap();
    let raw_name = |name: &str| name.strip_suffix(".gz").unwrap().to_string();
    std::fs::write(dir.join(raw_name(TEST_IMAGES)), good_images(n_test, 28, 28)).unwrap();
    std::fs::write(dir.join(raw_name(TEST_LABELS)), good_labels(n_test)).unwrap();
}

/// A split of `n` 28x28 images where image i has every pixel equal to i and label i % 10.
fn numbered_split(n: usize) -> Split {
    let pixels: Vec<u8> = (0..n).flat_map(|i| [i as u8; IMAGE_PIXELS]).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    Split {
        images: ndarray::Array3::from_shape_vec((n, 28, 28), pixels).unwrap(),
        labels: ndarray::Array1::from_vec(labels),
    }
}

#[test]
fn load_reads_gzip_and_unpacked_files() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 30, 12);
    let ds = Dataset::load(DatasetKind::FashionMnist, dir.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::FashionMnist);
    assert_eq!(ds.train.images.shape(), &[30, 28, 28]);
    assert_eq!(ds.test.images.shape(), &[12, 28, 28]);
    assert_eq!(ds.train.len(), 30);
    assert_eq!(ds.train.class_counts(), [3; 10]);
    assert_eq!(ds.test.labels[11], 1);
}

#[test]
fn load_of_a_missing_folder_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::load(DatasetKind::Mnist, &dir.path().join("none")).unwrap_err();
    assert!(matches!(err, IdxError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("idx"), "{err}");
}

#[test]
fn image_and_label_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lbl) = (dir.path().join("img"), dir.path().join("lbl.gz"));
    std::fs::write(&img, good_images(3, 2, 2)).unwrap();
    std::fs::write(&lbl, gzip(&good_labels(4))).unwrap();
    let err = Split::read(&img, &lbl).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::CountMismatch {
                images: 3,
                labels: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("lbl.gz") && msg.contains("img"), "{msg}");
    assert!(msg.contains("number of items"), "{msg}");
}

#[test]
fn load_rejects_images_that_are_not_28x28() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 2, 2);
    std::fs::write(dir.path().join(TRAIN_IMAGES), good_images(2, 28, 27)).unwrap();
    let err = Dataset::load(DatasetKind::Mnist, dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::WrongImageSize {
                rows: 28,
                cols: 27,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(TRAIN_IMAGES));
}

#[test]
fn batch_is_nchw_scaled_by_exact_division() {
    // One image holding every byte value, so all 256 scalings are checked.
    let pixels: Vec<u8> = (0..2 * IMAGE_PIXELS).map(|i| (i % 256) as u8).collect();
    let split = Split {
        images: ndarray::Array3::from_shape_vec((2, 28, 28), pixels.clone()).unwrap(),
        labels: ndarray::Array1::from_vec(vec![7, 2]),
    };
    let mut x = vec![f32::NAN; 3 * IMAGE_PIXELS];
    let mut y = [99usize; 3];
    split.write_batch(&[1, 0, 1], &mut x, &mut y);
    assert_eq!(y, [2, 7, 2]);
    let order = [1usize, 0, 1];
    for (b, &i) in order.iter().enumerate() {
        for k in 0..IMAGE_PIXELS {
            let p = pixels[i * IMAGE_PIXELS + k];
            let want = p as f32 / 255.0_f32;
            assert_eq!(x[b * IMAGE_PIXELS + k].to_bits(), want.to_bits());
        }
    }
    // The division matters: multiplying by 1/255 gives different floats for some bytes.
    let differs = (0..=255u8).any(|p| p as f32 / 255.0 != p as f32 * (1.0 / 255.0));
    assert!(differs);
}

#[test]
#[should_panic(expected = "images_out has")]
fn batch_with_a_wrong_buffer_size_panics() {
    let split = numbered_split(3);
    let mut x = vec![0.0; IMAGE_PIXELS];
    let mut y = [0usize; 2];
    split.write_batch(&[0, 1], &mut x, &mut y);
}

#[test]
fn batches_in_any_order_cover_every_example_once() {
    let split = numbered_split(10);
    // The order a training loop's shuffle might give (nn::split_indices and the trainer own that).
    let order = vec![3, 9, 0, 4, 8, 1, 7, 2, 6, 5];
    let (mut x, mut y) = (vec![0.0f32; 4 * IMAGE_PIXELS], vec![0usize; 4]);
    let mut seen = Vec::new();
    for idx in order.chunks(4) {
        let n = idx.len();
        split.write_batch(idx, &mut x[..n * IMAGE_PIXELS], &mut y[..n]);
        for b in 0..n {
            // Image i has all pixels = i, so the first pixel tells which image landed here.
            seen.push((x[b * IMAGE_PIXELS] * 255.0).round() as usize);
            assert_eq!(y[b], idx[b] % 10);
        }
    }
    assert_eq!(seen, order);
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[test]
fn dataset_kind_names_and_tables() {
    for kind in DatasetKind::ALL {
        assert_eq!(kind.to_string().parse::<DatasetKind>().unwrap(), kind);
        let files = kind.files();
        assert_eq!(files.len(), 4);
        for f in &files {
            assert_eq!(f.sha256.len(), 64);
            assert!(f.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert!(!kind.default_mirrors().is_empty());
    }
    assert_eq!("fashion-mnist".parse(), Ok(DatasetKind::FashionMnist));
    assert_eq!("MNIST".parse(), Ok(DatasetKind::Mnist));
    let err = "cifar".parse::<DatasetKind>().unwrap_err();
    assert!(err.to_string().contains("cifar"));
    assert_eq!(DatasetKind::FashionMnist.class_names()[0], "T-shirt/top");
    assert_eq!(DatasetKind::FashionMnist.class_names()[9], "Ankle boot");
    assert_eq!(DatasetKind::Mnist.class_names()[3], "3");
    assert_eq!(
        DatasetKind::Mnist.default_mirrors()[0],
        "https://ossci-datasets.s3.amazonaws.com/mnist/"
    );
}

#[test]
fn labels_out_of_range_are_rejected_by_load() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 2, 2);
    std::fs::write(dir.path().join(TRAIN_LABELS), labels_idx(2, &[1, 11])).unwrap();
    let err = Dataset::load(DatasetKind::Mnist, dir.path()).unwrap_err();
    assert!(matches!(err, IdxError::LabelOutOfRange { found: 11, .. }));
}

/// A folder given as Fashion-MNIST that holds MNIST's files (with the real data from
/// `LENET_DATA_DIR`): loading refuses it by the labels' checksum instead of training digits
/// under clothing names, and a download refuses to replace the files, leaving them as they were.
#[test]
fn another_data_sets_files_are_refused_not_used_or_replaced() {
    let Some(root) = std::env::var_os("LENET_DATA_DIR") else {
        eprintln!("skipped: LENET_DATA_DIR is not set (needs the real MNIST files)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mnist_dir = Path::new(&root).join("mnist");
    for spec in DatasetKind::Mnist.files() {
        let from = mnist::locate_file(&mnist_dir, &spec.name);
        let to = dir.path().join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
    }
    match Dataset::load(DatasetKind::FashionMnist, dir.path()) {
        Err(IdxError::OtherDataset {
            expected, found, ..
        }) => {
            assert_eq!((expected, found), ("Fashion-MNIST", "MNIST"));
        }
        other => panic!("expected OtherDataset, got {:?}", other.map(|d| d.kind)),
    }
    assert!(Dataset::load(DatasetKind::Mnist, dir.path()).is_ok());
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let sizes = |paths: &[std::path::PathBuf]| -> Vec<u64> {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect()
    };
    let sizes_before = sizes(&before);
    let options = mnist::DownloadOptions {
        mirrors: Some(vec!["http://127.0.0.1:9/".into()]),
        ..Default::default()
    };
    let err = mnist::ensure_dataset(DatasetKind::FashionMnist, dir.path(), &options).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("holds MNIST's") && text.contains("not Fashion-MNIST's"),
        "{text}"
    );
    assert_eq!(sizes(&before), sizes_before, "a file was replaced");
}
