//! Error types. Every message names the file, the field, the expected value and the value found,
//! so a user can tell a truncated download from a wrong file without a debugger.

use std::io;
use std::path::PathBuf;

/// An IDX file (or a pair of them) that could not be read or is not what it claims to be.
///
/// Each kind of corruption has its own variant so that callers and tests can tell them apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdxError {
    /// The file could not be opened or read (missing file, permission denied, ...).
    #[error("{file}: cannot read the file: {source}")]
    Io {
        /// The file being read.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The file has no bytes at all.
    #[error("{file}: field `magic number`: expected an IDX {expected} file, found an empty file (0 bytes)")]
    Empty {
        /// The file being read.
        file: String,
        /// What the file should hold: "images" or "labels".
        expected: &'static str,
    },

    /// The file starts with the gzip magic bytes but its stream is damaged (bad CRC, bad length,
    /// invalid deflate data, or cut short).
    #[error(
        "{file}: field `gzip stream`: expected a valid gzip stream, found a corrupt one ({reason})"
    )]
    CorruptGzip {
        /// The file being read.
        file: String,
        /// What flate2 reported.
        reason: String,
    },

    /// The stream ends inside the header.
    #[error(
        "{file}: field `{field}`: expected a header of {expected} bytes, found only {found} bytes"
    )]
    TruncatedHeader {
        /// The file being read.
        file: String,
        /// The header field that was cut: "magic number" or "dimension sizes".
        field: &'static str,
        /// Header length in bytes.
        expected: usize,
        /// Bytes actually present.
        found: usize,
    },

    /// The first two bytes of the magic number are not zero: this is not an IDX file.
    #[error("{file}: field `magic number`: expected {expected:#010x}, found {found:#010x} (not an IDX file)")]
    BadMagic {
        /// The file being read.
        file: String,
        /// The magic number an IDX file of this kind has.
        expected: u32,
        /// The first four bytes of the (decompressed) file, big-endian.
        found: u32,
    },

    /// The data-type byte of the magic number is not 0x08 (unsigned byte).
    #[error("{file}: field `data type` (third byte of the magic number): expected {expected:#04x} (unsigned byte), found {found:#04x}")]
    WrongDataType {
        /// The file being read.
        file: String,
        /// 0x08, unsigned byte.
        expected: u8,
        /// The data type found.
        found: u8,
    },

    /// The number of dimensions (fourth byte of the magic number) is wrong, e.g. a labels file
    /// given where an images file is expected.
    #[error("{file}: field `number of dimensions` (fourth byte of the magic number): expected {expected} (IDX {kind}), found {found}")]
    WrongDimensionCount {
        /// The file being read.
        file: String,
        /// What the file should hold: "images" or "labels".
        kind: &'static str,
        /// 3 for images, 1 for labels.
        expected: u8,
        /// The number found.
        found: u8,
    },

    /// The product of the dimension sizes does not fit in 64 bits.
    #[error("{file}: field `dimension sizes`: expected a product of at most {cap} items, found {dims:?} whose product overflows 64 bits")]
    DimsOverflow {
        /// The file being read.
        file: String,
        /// The dimension sizes in the header.
        dims: Vec<u32>,
        /// The largest number of items the reader accepts.
        cap: u64,
    },

    /// The header promises more items than the reader accepts ([`crate::idx::MAX_ITEMS`]); a
    /// size of zero counts as one, so a zero count does not excuse absurd image sizes.
    #[error("{file}: field `dimension sizes`: expected a product of at most {cap} items, found {dims:?} = {items} items")]
    TooLarge {
        /// The file being read.
        file: String,
        /// The dimension sizes in the header.
        dims: Vec<u32>,
        /// Their product (zero sizes counted as one).
        items: u64,
        /// The largest number of items the reader accepts.
        cap: u64,
    },

    /// The data ends before the number of bytes the header promises.
    #[error("{file}: field `data`: expected {expected} bytes after the header (from dimensions {dims:?}), found only {found} bytes")]
    TruncatedData {
        /// The file being read.
        file: String,
        /// The dimension sizes in the header.
        dims: Vec<u32>,
        /// Bytes promised.
        expected: u64,
        /// Bytes present.
        found: u64,
    },

    /// More bytes follow the data than the header promises.
    #[error("{file}: field `data`: expected exactly {expected} bytes after the header (from dimensions {dims:?}), found {extra} more byte(s) after them")]
    TrailingBytes {
        /// The file being read.
        file: String,
        /// The dimension sizes in the header.
        dims: Vec<u32>,
        /// Bytes promised.
        expected: u64,
        /// Extra bytes counted (counting stops at [`crate::idx::MAX_ITEMS`]).
        extra: u64,
    },

    /// A label is not a digit class 0-9.
    #[error("{file}: field `label[{index}]`: expected a class in 0-9, found {found}")]
    LabelOutOfRange {
        /// The labels file.
        file: String,
        /// Position of the first bad label.
        index: usize,
        /// Its value.
        found: u8,
    },

    /// The images file and the labels file hold different numbers of items.
    #[error("{labels_file}: field `number of items`: expected {images} labels (one per image in {images_file}), found {labels}")]
    CountMismatch {
        /// The images file.
        images_file: String,
        /// The labels file.
        labels_file: String,
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },

    /// The labels file is, by its SHA-256, the other data set's.
    #[error("{file}: holds the {found} labels, not {expected}'s: point the data folder at a {expected} copy (each data set needs its own folder)")]
    OtherDataset {
        /// The labels file.
        file: String,
        /// The data set asked for.
        expected: &'static str,
        /// The data set the file belongs to (by its SHA-256).
        found: &'static str,
    },

    /// The images are not of the size the dataset uses (28x28 for MNIST and Fashion-MNIST).
    #[error("{file}: field `rows x columns`: expected {expected_rows}x{expected_cols}, found {rows}x{cols}")]
    WrongImageSize {
        /// The images file.
        file: String,
        /// Expected number of rows.
        expected_rows: usize,
        /// Expected number of columns.
        expected_cols: usize,
        /// Rows found.
        rows: usize,
        /// Columns found.
        cols: usize,
    },
}

/// One mirror that could not deliver a file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFailure {
    /// The full URL tried.
    pub url: String,
    /// Why it failed (HTTP status, network error, checksum mismatch, ...), with the attempt count.
    pub reason: String,
}

/// The downloader could not make a dataset file available.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// Every mirror failed for one file. The message lists each mirror with its reason and says
    /// how to use local files or other mirrors.
    #[error("{}", all_mirrors_failed_message(.dataset, .file, .dir, .failures, .existing))]
    AllMirrorsFailed {
        /// The dataset's name for people, e.g. `MNIST`.
        dataset: String,
        /// The file name, e.g. `train-images-idx3-ubyte.gz`.
        file: String,
        /// The folder it should be written to.
        dir: PathBuf,
        /// Each mirror tried, in order, with its failure.
        failures: Vec<MirrorFailure>,
        /// If a file of that name was already there but did not match its checksum: why.
        existing: Option<String>,
    },

    /// No mirror was configured at all (e.g. `LENET_MIRRORS` holds only commas).
    #[error("cannot download {file}: no mirror is configured. Set LENET_MIRRORS=url1,url2, or put the file there yourself")]
    NoMirrors {
        /// The file name.
        file: String,
    },

    /// After a verified download was renamed into place, the file under that name did not have
    /// the expected checksum (something else wrote it in between).
    #[error("{path}: the file moved into place has SHA-256 (uncompressed) {found}, expected {expected}; something else changed it. Run the download again")]
    ChangedInPlace {
        /// The file.
        path: PathBuf,
        /// The SHA-256 it should have.
        expected: String,
        /// The SHA-256 it has.
        found: String,
    },

    /// A file in the folder is, by its SHA-256, another data set's: it is not replaced.
    #[error("{path}: holds {found}'s {name}, not {expected}'s: it is not replaced. Give each data set its own folder (--data-dir)")]
    OtherDataset {
        /// The file.
        path: PathBuf,
        /// The data set being downloaded.
        expected: &'static str,
        /// The data set the file belongs to.
        found: &'static str,
        /// The file's name in that data set.
        name: &'static str,
    },

    /// A local file system operation failed (creating the folder, writing, renaming), or a file
    /// already in the folder cannot be used (not a regular file, a symlink loop).
    #[error("{path}: {action}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done, e.g. "cannot create the data folder".
        action: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
}

fn all_mirrors_failed_message(
    dataset: &str,
    file: &str,
    dir: &std::path::Path,
    failures: &[MirrorFailure],
    existing: &Option<String>,
) -> String {
    let mut msg = format!(
        "cannot download {dataset} file {file} into {}: every mirror failed:",
        dir.display()
    );
    for f in failures {
        msg.push_str(&format!("\n  - {}: {}", f.url, f.reason));
    }
    if let Some(why) = existing {
        msg.push_str(&format!(
            "\nThe file already in the folder was not used: {why}."
        ));
    }
    msg.push_str(&format!(
        "\nTo use files you already have: put them in {}\
         \n  or set LENET_DATA_DIR=ROOT (a folder holding mnist/ and fashion-mnist/).\
         \nTo try other mirrors: set LENET_MIRRORS=url1,url2 (base URLs; the file names are appended).",
        dir.display()
    ));
    msg
}

/// Anything that can go wrong when making a dataset available: reading it, or downloading it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file is missing, unreadable or malformed.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// A file could not be downloaded.
    #[error(transparent)]
    Download(#[from] DownloadError),
}
