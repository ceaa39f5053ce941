//! The two datasets this crate knows (MNIST and Fashion-MNIST), their files and checksums, and
//! the in-memory train/test sets as u8 arrays. Shuffling, batching and validation splits are the
//! training loop's job (`nn`), not this crate's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ndarray::{Array1, Array3, Axis};

use crate::error::IdxError;
use crate::idx::{read_images, read_labels};
use crate::open::exists;

/// Rows of one image.
pub const IMAGE_ROWS: usize = 28;
/// Columns of one image.
pub const IMAGE_COLS: usize = 28;
/// Pixels of one image (28 x 28).
pub const IMAGE_PIXELS: usize = IMAGE_ROWS * IMAGE_COLS;
/// Number of classes in both datasets.
pub const NUM_CLASSES: usize = 10;

/// File name of the training images (the same for both datasets).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
/// File name of the training labels.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
/// File name of the test images.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
/// File name of the test labels.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// SHA-256 of the uncompressed MNIST files (from `shared/data/README.md`), in the order
/// train images, train labels, test images, test labels.
const MNIST_SHA256: [&str; 4] = [
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
];

/// SHA-256 of the uncompressed Fashion-MNIST files, same order.
const FASHION_SHA256: [&str; 4] = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

/// Default MNIST mirrors, tried in order.
pub const MNIST_MIRRORS: [&str; 3] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

/// Default Fashion-MNIST mirrors, tried in order.
pub const FASHION_MNIST_MIRRORS: [&str; 2] = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
];

const MNIST_CLASSES: [&str; NUM_CLASSES] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const FASHION_CLASSES: [&str; NUM_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which dataset: both have the same format and sizes, only the pictures and class names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Handwritten digits (LeCun, Cortes, Burges).
    Mnist,
    /// Zalando's pictures of clothes.
    FashionMnist,
}

impl DatasetKind {
    /// Both datasets.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// The folder name under a data root, and the name parsed by `FromStr`:
    /// `"mnist"` or `"fashion-mnist"`.
    pub fn dir_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// A name for people: `"MNIST"` or `"Fashion-MNIST"`.
    pub fn display_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "MNIST",
            DatasetKind::FashionMnist => "Fashion-MNIST",
        }
    }

    /// The name of each class, indexed by label.
    pub fn class_names(self) -> &'static [&'static str; NUM_CLASSES] {
        match self {
            DatasetKind::Mnist => &MNIST_CLASSES,
            DatasetKind::FashionMnist => &FASHION_CLASSES,
        }
    }

    /// The four files with the SHA-256 of their uncompressed content, in the order train images,
    /// train labels, test images, test labels.
    pub fn files(self) -> Vec<FileSpec> {
        let sums = match self {
            DatasetKind::Mnist => &MNIST_SHA256,
            DatasetKind::FashionMnist => &FASHION_SHA256,
        };
        [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
            .iter()
            .zip(sums)
            .map(|(name, sha)| FileSpec::new(name, sha))
            .collect()
    }

    /// The data set and file name whose uncompressed content has this SHA-256, if it is one of
    /// the known files (MNIST's and Fashion-MNIST's eight).
    pub fn identify(sha256: &str) -> Option<(DatasetKind, &'static str)> {
        let names = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];
        [
            (DatasetKind::Mnist, &MNIST_SHA256),
            (DatasetKind::FashionMnist, &FASHION_SHA256),
        ]
        .into_iter()
        .flat_map(|(kind, sums)| sums.iter().zip(names).map(move |(s, n)| (kind, *s, n)))
        .find(|(_, s, _)| s.eq_ignore_ascii_case(sha256))
        .map(|(kind, _, name)| (kind, name))
    }

    /// The built-in mirror base URLs, tried in order (overridable with `LENET_MIRRORS`, see
    /// [`crate::mirrors_from_env`]).
    pub fn default_mirrors(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mnist => &MNIST_MIRRORS,
            DatasetKind::FashionMnist => &FASHION_MNIST_MIRRORS,
        }
    }
}

impl fmt::Display for DatasetKind {
    /// Writes [`DatasetKind::dir_name`], so that `to_string` and `parse` round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// A dataset name that is neither `mnist` nor `fashion-mnist`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dataset `{found}`: expected `mnist` or `fashion-mnist`")]
pub struct ParseDatasetKindError {
    /// The name given.
    pub found: String,
}

impl FromStr for DatasetKind {
    type Err = ParseDatasetKindError;

    /// Parses `mnist` or `fashion-mnist` (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.dir_name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseDatasetKindError {
                found: s.to_string(),
            })
    }
}

/// A file to fetch: its name (appended to a mirror's base URL) and the SHA-256 of its
/// uncompressed content, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// File name, e.g. `train-images-idx3-ubyte.gz`.
    pub name: String,
    /// SHA-256 of the uncompressed content, 64 lowercase hex digits.
    pub sha256: String,
}

impl FileSpec {
    /// A file spec from its name and checksum.
    pub fn new(name: &str, sha256: &str) -> FileSpec {
        FileSpec {
            name: name.to_string(),
            sha256: sha256.to_ascii_lowercase(),
        }
    }
}

/// The path of file `name` in `dir`: `dir/name` if there is something under that name, else the
/// same name without `.gz` if that exists (an unpacked copy; the reader detects gzip by content),
/// else `dir/name`. An entry that cannot be looked at (a symlink loop, say) counts as there, so
/// that reading it reports why instead of "not found".
pub fn locate_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    if matches!(exists(&path), Ok(false)) {
        if let Some(stem) = name.strip_suffix(".gz") {
            let raw = dir.join(stem);
            if !matches!(exists(&raw), Ok(false)) {
                return raw;
            }
        }
    }
    path
}

/// Images and their labels, as read from the files: `images[i]` is a 28x28 u8 picture
/// (0 = background) and `labels[i]` its class 0-9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// `[N, rows, cols]` pixels.
    pub images: Array3<u8>,
    /// `[N]` classes.
    pub labels: Array1<u8>,
}

/// `p as f32 / 255.0` for every byte `p`, computed once at compile time: a batch's pixels
/// are scaled by looking them up, which gives the division's bits without a division per
/// pixel (it took 2.4% of a training epoch's profile).
static SCALED: [f32; 256] = {
    let mut t = [0.0; 256];
    let mut p = 0;
    while p < 256 {
        t[p] = p as f32 / 255.0;
        p += 1;
    }
    t
};

/// Asks the CPU to start loading `bytes` into its caches without waiting for them. A batch's
/// images sit at random places in a training set larger than the caches (47 MB for MNIST), so
/// `write_batch` asks for all of them first and their cache misses overlap, instead of one
/// image's misses after another's (they were 2–3% of a training epoch's profile).
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint that reads nothing architecturally and cannot fault;
        // the address is inside `bytes` anyway. SSE, which has it, is part of x86-64.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

impl Split {
    /// Reads an images file and a labels file (gzip or raw) and checks that they hold the same
    /// number of items.
    pub fn read(images_path: &Path, labels_path: &Path) -> Result<Split, IdxError> {
        let images = read_images(images_path)?;
        let labels = read_labels(labels_path)?;
        if images.len_of(Axis(0)) != labels.len() {
            return Err(IdxError::CountMismatch {
                images_file: images_path.display().to_string(),
                labels_file: labels_path.display().to_string(),
                images: images.len_of(Axis(0)),
                labels: labels.len(),
            });
        }
        Ok(Split { images, labels })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of one image (rows x cols).
    pub fn pixels_per_image(&self) -> usize {
        self.images.shape()[1] * self.images.shape()[2]
    }

    /// How many examples each class has.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// Writes the examples `indices` (in that order) into caller-owned buffers, allocating
    /// nothing: `images_out` receives an f32 NCHW batch `[indices.len(), 1, rows, cols]` with
    /// each pixel scaled as `p as f32 / 255.0` (an exact division, as torchvision's `ToTensor`
    /// does, so results match PyTorch bit for bit), and `labels_out` the classes.
    ///
    /// For training, `nn` shuffles and batches: a `BatchSource` whose `fill_batch` calls this
    /// is all it needs (the `lenet` CLI's `SplitSource` is one).
    ///
    /// # Panics
    /// If `images_out.len() != indices.len() * pixels_per_image()`, if
    /// `labels_out.len() != indices.len()`, or if an index is out of range.
    pub fn write_batch(&self, indices: &[usize], images_out: &mut [f32], labels_out: &mut [usize]) {
        let pixels = self.pixels_per_image();
        assert_eq!(
            images_out.len(),
            indices.len() * pixels,
            "write_batch: images_out has {} floats, expected {} images x {} pixels",
            images_out.len(),
            indices.len(),
            pixels
        );
        assert_eq!(
            labels_out.len(),
            indices.len(),
            "write_batch: labels_out has {} entries, expected {}",
            labels_out.len(),
            indices.len()
        );
        for &i in indices {
            if let Some(src) = self.images.index_axis(Axis(0), i).as_slice() {
                prefetch(src);
            }
        }
        for ((&i, out), label) in indices
            .iter()
            .zip(images_out.chunks_exact_mut(pixels))
            .zip(labels_out.iter_mut())
        {
            let image = self.images.index_axis(Axis(0), i);
            match image.as_slice() {
                Some(src) => {
                    for (o, &p) in out.iter_mut().zip(src) {
                        *o = SCALED[usize::from(p)];
                    }
                }
                None => {
                    for (o, &p) in out.iter_mut().zip(image.iter()) {
                        *o = SCALED[usize::from(p)];
                    }
                }
            }
            *label = self.labels[i] as usize;
        }
    }
}

/// A whole dataset: the training and test sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Which dataset this is.
    pub kind: DatasetKind,
    /// 60,000 training examples.
    pub train: Split,
    /// 10,000 test examples.
    pub test: Split,
}

impl Dataset {
    /// Reads the four files of `kind` from `dir` (gzip or unpacked, see [`locate_file`]) and
    /// checks that the images are 28x28 and each labels file matches its images file. The
    /// training and test sets are read in parallel. No checksum is computed here: use
    /// [`crate::ensure_dataset`] for that.
    pub fn load(kind: DatasetKind, dir: &Path) -> Result<Dataset, IdxError> {
        let read = |images: &str, labels: &str| -> Result<Split, IdxError> {
            let images_path = locate_file(dir, images);
            let split = Split::read(&images_path, &locate_file(dir, labels))?;
            let (rows, cols) = (split.images.shape()[1], split.images.shape()[2]);
            if (rows, cols) != (IMAGE_ROWS, IMAGE_COLS) {
                return Err(IdxError::WrongImageSize {
                    file: images_path.display().to_string(),
                    expected_rows: IMAGE_ROWS,
                    expected_cols: IMAGE_COLS,
                    rows,
                    cols,
                });
            }
            Ok(split)
        };
        let (train, test) = std::thread::scope(|s| {
            let train = s.spawn(|| read(TRAIN_IMAGES, TRAIN_LABELS));
            let test = read(TEST_IMAGES, TEST_LABELS);
            (train.join().expect("reader thread panicked"), test)
        });
        let (train, test) = (train?, test?);
        for (split, name) in [(&train, TRAIN_LABELS), (&test, TEST_LABELS)] {
            check_labels_belong_to(kind, split, &locate_file(dir, name))?;
        }
        Ok(Dataset { kind, train, test })
    }
}

/// Refuses labels that are, bit for bit, the other data set's labels file (MNIST's digits in a
/// Fashion-MNIST folder, or the reverse: the images would train under the wrong class names).
/// The checksum is that of the IDX file the labels came from, rebuilt from its header and the
/// labels in memory, so nothing is read again.
fn check_labels_belong_to(kind: DatasetKind, split: &Split, file: &Path) -> Result<(), IdxError> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(0x0000_0801u32.to_be_bytes());
    hash.update((split.labels.len() as u32).to_be_bytes());
    hash.update(split.labels.as_slice().expect("labels are contiguous"));
    let sum: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    match DatasetKind::identify(&sum) {
        Some((found, _)) if found != kind => Err(IdxError::OtherDataset {
            file: file.display().to_string(),
            expected: kind.display_name(),
            found: found.display_name(),
        }),
        _ => Ok(()),
    }
}
