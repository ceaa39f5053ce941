//! The real MNIST and Fashion-MNIST files from `LENET_DATA_DIR` (a root holding `mnist/` and
//! `fashion-mnist/`). Skipped, with a message, when the variable is not set.

use std::path::PathBuf;
use std::time::Instant;

use mnist::{
    ensure_dataset, Dataset, DatasetKind, DownloadOptions, FileStatus, IMAGE_PIXELS, NUM_CLASSES,
};

const MNIST_TRAIN_COUNTS: [usize; NUM_CLASSES] =
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const MNIST_TEST_COUNTS: [usize; NUM_CLASSES] =
    [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

fn data_root() -> Option<PathBuf> {
    match std::env::var_os("LENET_DATA_DIR") {
        Some(root) if !root.is_empty() => Some(PathBuf::from(root)),
        _ => {
            println!("skipped: LENET_DATA_DIR is not set");
            None
        }
    }
}

/// Options that cannot reach any network: a closed localhost port as the only mirror.
fn offline() -> DownloadOptions {
    DownloadOptions::default()
        .with_mirrors(["http://127.0.0.1:9/"])
        .with_retries(0, std::time::Duration::ZERO)
        .with_progress(false)
        .with_proxy_from_env(false)
}

fn check_sizes(ds: &Dataset) {
    assert_eq!(ds.train.images.shape(), &[60_000, 28, 28]);
    assert_eq!(ds.train.labels.len(), 60_000);
    assert_eq!(ds.test.images.shape(), &[10_000, 28, 28]);
    assert_eq!(ds.test.labels.len(), 10_000);
    // Real pictures use the whole byte range.
    assert_eq!(ds.train.images.iter().max(), Some(&255));
    assert_eq!(ds.train.images.iter().min(), Some(&0));
}

#[test]
fn mnist_sizes_and_class_counts() {
    let Some(root) = data_root() else { return };
    let start = Instant::now();
    let ds = Dataset::load(DatasetKind::Mnist, &root.join("mnist")).unwrap();
    println!("MNIST loaded in {:?}", start.elapsed());
    check_sizes(&ds);
    assert_eq!(ds.train.class_counts(), MNIST_TRAIN_COUNTS);
    assert_eq!(ds.test.class_counts(), MNIST_TEST_COUNTS);

    // A batch of real data: scaled into [0, 1], labels as stored.
    let idx = [0usize, 1, 59_999];
    let mut x = vec![0.0f32; idx.len() * IMAGE_PIXELS];
    let mut y = [0usize; 3];
    ds.train.write_batch(&idx, &mut x, &mut y);
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(x.contains(&1.0));
    for (b, &i) in idx.iter().enumerate() {
        assert_eq!(y[b], ds.train.labels[i] as usize);
    }
}

#[test]
fn fashion_mnist_sizes_and_balanced_classes() {
    let Some(root) = data_root() else { return };
    let ds = Dataset::load(DatasetKind::FashionMnist, &root.join("fashion-mnist")).unwrap();
    check_sizes(&ds);
    // Fashion-MNIST is balanced: 6,000 training and 1,000 test pictures per class.
    assert_eq!(ds.train.class_counts(), [6000; NUM_CLASSES]);
    assert_eq!(ds.test.class_counts(), [1000; NUM_CLASSES]);
}

#[test]
fn shared_files_match_the_checksum_table_without_network() {
    let Some(root) = data_root() else { return };
    for kind in DatasetKind::ALL {
        let dir = root.join(kind.dir_name());
        let reports = ensure_dataset(kind, &dir, &offline()).unwrap();
        assert_eq!(reports.len(), 4);
        for r in &reports {
            assert_eq!(r.status, FileStatus::AlreadyPresent, "{kind}: {r:?}");
        }
    }
    // The checksums are not the same for the two datasets: MNIST's table rejects Fashion files,
    // and names them as Fashion-MNIST's (they are not replaced).
    let err = ensure_dataset(DatasetKind::Mnist, &root.join("fashion-mnist"), &offline())
        .map(|_| ())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("holds Fashion-MNIST's") && text.contains("not MNIST's"),
        "{err}"
    );
}

#[test]
fn a_data_dir_with_every_file_loads_offline() {
    let Some(root) = data_root() else { return };
    let dir = mnist::resolve_data_dir(DatasetKind::Mnist, Some(&root.join("mnist")));
    ensure_dataset(DatasetKind::Mnist, &dir, &offline()).unwrap();
    let ds = Dataset::load(DatasetKind::Mnist, &dir).unwrap();
    assert_eq!(ds.kind, DatasetKind::Mnist);
    assert_eq!(ds.test.len(), 10_000);
}
