//! Model weights in safetensors, exactly PyTorch's `state_dict` of the reference LeNet-5: ten
//! float32 tensors named `conv1.weight` … `fc3.bias`, nothing else, so that
//! `model.load_state_dict(safetensors.torch.load_file(path))` works (strict load). The
//! architecture options go in the `__metadata__` header (key `lenet5_config`, JSON), which
//! PyTorch ignores.
//!
//! Loading validates everything and reports a typed [`CheckpointError`] naming the file, the
//! tensor, the expected and the found value: it never panics on a bad file.

use crate::lenet5::{LeNet5, LeNet5Config, PARAM_NAMES};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest file [`LeNet5::load_weights`] and friends read (1 GiB; the default model's weights
/// take 250 KB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Metadata key holding the [`LeNet5Config`] as JSON.
pub const CONFIG_KEY: &str = "lenet5_config";

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written. The operating system's error is part of the
    /// message (and deliberately not a `source`, so that a cause chain prints it once).
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The path names a directory, a FIFO, a device… (reading a FIFO would wait forever).
    #[error("{}: not a regular file ({kind})", .path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead: "a directory", "a FIFO", "a device"…
        kind: &'static str,
    },
    /// A tensor holds NaN or an infinity: the weights of a diverged run.
    #[error(
        "{}: tensor {name:?} holds {value} at index {index}: the weights are not finite \
         (a diverged training run?)",
        .path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Flat index of the first non-finite value.
        index: usize,
        /// The value (NaN, inf or -inf).
        value: f32,
    },
    /// The file is not a valid safetensors file.
    #[error("{}: not a safetensors file: {reason}", .path.display())]
    NotSafetensors {
        /// The file.
        path: PathBuf,
        /// What the parser found wrong.
        reason: String,
    },
    /// A required tensor is absent.
    #[error("{}: tensor {name:?} is missing", .path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// The convolutions' shapes ask for more channels than a model may have
    /// ([`MAX_CHANNELS`](crate::lenet5::MAX_CHANNELS)).
    #[error(
        "{}: the tensors conv1.weight and conv2.weight give a model too wide to load: {why}",
        .path.display()
    )]
    TooWide {
        /// The file.
        path: PathBuf,
        /// Which channel count, and the limit.
        why: String,
    },
    /// A tensor has the wrong shape.
    #[error("{}: tensor {name:?} has shape {found:?}, expected {expected:?}", .path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error("{}: tensor {name:?} has dtype {found}, expected {expected}", .path.display())]
    WrongDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype the model needs (`F32`).
        expected: String,
        /// The dtype in the file.
        found: String,
    },
    /// A training state of the first format stores a value that the rest of the file
    /// contradicts (see [`crate::resume`]).
    #[error(
        "{}: metadata {key:?} is {found}, but {from} gives {expected}: the file contradicts \
         itself (edited, or damaged?)",
        .path.display()
    )]
    Contradiction {
        /// The file.
        path: PathBuf,
        /// The metadata key (or part of one).
        key: String,
        /// What the file stores.
        found: String,
        /// What the rest of the file gives.
        expected: String,
        /// Where that comes from.
        from: String,
    },
    /// A `__metadata__` entry is missing or malformed.
    #[error("{}: metadata {key:?}: expected {expected}, found {found}", .path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What was expected.
        expected: String,
        /// What was there (or "nothing").
        found: String,
    },
}

/// The content of the checkpoint file at `path`, read once: it must be a regular file (reading
/// a FIFO would wait forever for a writer) of at most [`MAX_FILE_BYTES`]. Loading these bytes
/// with [`LeNet5::from_weights_bytes`] evaluates exactly what was read, however the file
/// changes afterwards.
pub fn read_checkpoint(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let io = |error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    };
    // The type first: opening a FIFO for reading would wait forever for a writer.
    let meta = std::fs::metadata(path).map_err(io)?;
    if let Some(kind) = not_regular(&meta) {
        return Err(CheckpointError::NotRegularFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let size = meta.len();
    if size > MAX_FILE_BYTES {
        return Err(CheckpointError::NotSafetensors {
            path: path.to_path_buf(),
            reason: format!(
                "the file has {size} bytes, more than any LeNet-5 checkpoint \
                 (limit {MAX_FILE_BYTES} bytes)"
            ),
        });
    }
    std::fs::read(path).map_err(io)
}

/// A safetensors file read into memory and validated.
pub(crate) struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    header_len: usize,
    metadata: Metadata,
}

impl TensorFile {
    /// Reads and validates `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, CheckpointError> {
        Self::from_bytes(path, read_checkpoint(path)?)
    }

    /// Validates `bytes`, a safetensors file's content; `path` names it in errors.
    pub(crate) fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, CheckpointError> {
        let not_st = |e: safetensors::SafeTensorError| CheckpointError::NotSafetensors {
            path: path.to_path_buf(),
            reason: describe_safetensors_error(&e),
        };
        // deserialize checks the header, the offsets and the buffer length.
        SafeTensors::deserialize(&bytes).map_err(not_st)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(not_st)?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            bytes,
            header_len,
            metadata,
        })
    }

    /// The `__metadata__` value for `key`.
    pub(crate) fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(key))
            .map(String::as_str)
    }

    /// A required `__metadata__` value parsed with `parse`, or a `BadMetadata` error.
    pub(crate) fn meta_parse<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, CheckpointError> {
        let raw = self.meta(key);
        raw.and_then(parse)
            .ok_or_else(|| self.bad_meta(key, expected, raw))
    }

    /// A `BadMetadata` error for `key`.
    pub(crate) fn bad_meta(
        &self,
        key: &str,
        expected: &str,
        found: Option<&str>,
    ) -> CheckpointError {
        CheckpointError::BadMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: found.map_or_else(|| "nothing".to_string(), |s| format!("{s:?}")),
        }
    }

    /// A `Contradiction` error: `key` holds `found`, but `from` gives `expected`.
    pub(crate) fn contradiction(
        &self,
        key: &str,
        found: &str,
        expected: &str,
        from: &str,
    ) -> CheckpointError {
        CheckpointError::Contradiction {
            path: self.path.clone(),
            key: key.to_string(),
            found: found.to_string(),
            expected: expected.to_string(),
            from: from.to_string(),
        }
    }

    /// The shape of tensor `name`, if present.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.metadata.info(name).map(|i| i.shape.as_slice())
    }

    /// Copies the f32 tensor `name`, which must have shape `expected`, into `out`.
    pub(crate) fn read_f32(
        &self,
        name: &str,
        expected: &[usize],
        out: &mut [f32],
    ) -> Result<(), CheckpointError> {
        self.check_f32(name, expected)?;
        let info = self.metadata.info(name).expect("checked above");
        assert_eq!(
            out.len(),
            expected.iter().product::<usize>(),
            "read_f32 {name}: output size"
        );
        // Offsets were validated by `open`; data starts after the 8-byte length and the header.
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        for (o, b) in out.iter_mut().zip(self.bytes[start..end].chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        match out.iter().position(|v| !v.is_finite()) {
            Some(index) => Err(CheckpointError::NonFinite {
                path: self.path.clone(),
                name: name.to_string(),
                index,
                value: out[index],
            }),
            None => Ok(()),
        }
    }

    /// Checks that tensor `name` exists, is F32 and has shape `expected`. Callers check every
    /// tensor before allocating a model, so that allocation is bounded by the file's real size
    /// and never sized by numbers from its header alone.
    pub(crate) fn check_f32(&self, name: &str, expected: &[usize]) -> Result<(), CheckpointError> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        if info.dtype != Dtype::F32 {
            return Err(CheckpointError::WrongDtype {
                path: self.path.clone(),
                name: name.to_string(),
                expected: "F32".to_string(),
                found: format!("{:?}", info.dtype),
            });
        }
        if info.shape != expected {
            return Err(CheckpointError::WrongShape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        Ok(())
    }
}

/// A safetensors file's content holding f32 tensors `(name, shape, values)` and string
/// metadata; `path` names it in errors.
pub(crate) fn serialize_tensors(
    path: &Path,
    tensors: &[(&str, &[usize], &[f32])],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), b)
                .map(|view| (name.to_string(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .expect("tensor byte length matches its shape");
    safetensors::serialize(views, &Some(metadata)).map_err(|e| CheckpointError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(describe_safetensors_error(&e)),
    })
}

/// What a file that is not a regular file is (`None` for a regular file).
pub fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO");
        }
        if t.is_char_device() || t.is_block_device() {
            return Some("a device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a file")
}

/// A sentence for a safetensors parser error (its `Display` shows only the variant's name,
/// such as `HeaderTooLarge`).
pub fn describe_safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::InvalidHeader => "the header is not valid UTF-8 text".into(),
        E::InvalidHeaderStart => "the header does not start with '{'".into(),
        E::InvalidHeaderDeserialization => "the header is not valid JSON".into(),
        E::HeaderTooLarge => "the header length is larger than the limit of 100 MB".into(),
        E::HeaderTooSmall => "the file is shorter than the 8-byte header length".into(),
        E::InvalidHeaderLength => "the header length points past the end of the file".into(),
        E::TensorNotFound(name) => format!("tensor {name:?} is missing"),
        E::TensorInvalidInfo => "a tensor's shape, dtype and offsets disagree".into(),
        E::InvalidOffset(name) => format!("the offsets of tensor {name:?} are invalid"),
        E::IoError(err) => format!("read error: {err}"),
        E::JsonError(err) => format!("the header is not valid JSON: {err}"),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("{len} bytes do not hold a {dtype:?} tensor of shape {shape:?}")
        }
        E::MetadataIncompleteBuffer => {
            "the tensors do not cover the data part of the file exactly (truncated or padded)"
                .into()
        }
        E::ValidationOverflow => "a tensor's shape overflows when its size is computed".into(),
    }
}

impl LeNet5 {
    /// The content of a weights file: the ten parameters as PyTorch's state_dict (f32, PyTorch
    /// names and layouts) with the config and `extra` entries (e.g. the dataset) in the
    /// `__metadata__` header; `path` names the file in errors. Writing it is the caller's
    /// ([`crate::atomic::write_atomic`], behind the CLI's output checks).
    pub fn weights_bytes(
        &self,
        path: &Path,
        extra: HashMap<String, String>,
    ) -> Result<Vec<u8>, CheckpointError> {
        let params = self.params();
        let tensors: Vec<(&str, &[usize], &[f32])> =
            params.iter().map(|p| (p.name, p.shape, p.value)).collect();
        let mut meta = extra;
        meta.insert("format".to_string(), "pt".to_string());
        meta.insert(
            CONFIG_KEY.to_string(),
            serde_json::to_string(&self.config()).expect("config serialises"),
        );
        serialize_tensors(path, &tensors, meta)
    }

    /// Loads the ten parameters from `path` into this model. Every tensor must be present, F32
    /// and shaped for this model's config; other tensors in the file are ignored. On error the
    /// model may be partly updated.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let file = TensorFile::open(path.as_ref())?;
        self.load_from(&file, "")
    }

    /// A model read from `path`: the config comes from the file's metadata if present (files
    /// saved from [`LeNet5::weights_bytes`]), otherwise (e.g. a file saved by PyTorch) it is the
    /// default with the channel counts taken from the shapes of `conv1.weight` and
    /// `conv2.weight`.
    pub fn from_weights_file(path: impl AsRef<Path>) -> Result<LeNet5, CheckpointError> {
        Self::from_tensor_file(&TensorFile::open(path.as_ref())?)
    }

    /// A model read from the content of a safetensors file held in memory (for example weights
    /// built into a binary with `include_bytes!`); `name` stands for the file in errors. Same
    /// rules as [`LeNet5::from_weights_file`].
    pub fn from_weights_bytes(bytes: &[u8], name: &str) -> Result<LeNet5, CheckpointError> {
        Self::from_tensor_file(&TensorFile::from_bytes(Path::new(name), bytes.to_vec())?)
    }

    fn from_tensor_file(file: &TensorFile) -> Result<LeNet5, CheckpointError> {
        let config = match file.meta(CONFIG_KEY) {
            Some(raw) => {
                let config = file.meta_parse(CONFIG_KEY, "a LeNet-5 config in JSON", |s| {
                    serde_json::from_str::<LeNet5Config>(s).ok()
                })?;
                // Checked before anything is sized by it.
                config
                    .check()
                    .map_err(|why| file.bad_meta(CONFIG_KEY, &why, Some(raw)))?;
                config
            }
            None => {
                let mut config = LeNet5Config::default();
                if let Some(&[c1, ..]) = file.shape("conv1.weight") {
                    config.c1 = c1.max(1);
                }
                if let Some(&[c2, ..]) = file.shape("conv2.weight") {
                    config.c2 = c2.max(1);
                }
                config.check().map_err(|why| CheckpointError::TooWide {
                    path: file.path.clone(),
                    why,
                })?;
                config
            }
        };
        check_shapes(file, &config, "")?;
        let mut model = LeNet5::zeros(config);
        model.load_from(file, "")?;
        Ok(model)
    }

    /// Loads every parameter from tensors named `<prefix><state_dict name>`.
    pub(crate) fn load_from(
        &mut self,
        file: &TensorFile,
        prefix: &str,
    ) -> Result<(), CheckpointError> {
        for p in self.params_mut() {
            let name = format!("{prefix}{}", p.name);
            file.read_f32(&name, p.shape, p.value)?;
        }
        Ok(())
    }
}

/// Checks that `file` holds every parameter of a `config` model (named `<prefix><name>`) as
/// F32 with the right shape, before anything is allocated for it.
pub(crate) fn check_shapes(
    file: &TensorFile,
    config: &LeNet5Config,
    prefix: &str,
) -> Result<(), CheckpointError> {
    for (name, shape) in PARAM_NAMES.iter().zip(config.param_shapes()) {
        file.check_f32(&format!("{prefix}{name}"), &shape)?;
    }
    Ok(())
}

/// The state_dict names, for callers that list what a checkpoint holds.
pub fn state_dict_names() -> [&'static str; 10] {
    PARAM_NAMES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_and_shape_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let bytes = serialize_tensors(&p, &[("a", &[2, 1], &[1.0, 2.0])], HashMap::new()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        let f = TensorFile::open(&p).unwrap();
        assert_eq!(f.shape("b"), None);
        assert_eq!(f.shape("a"), Some(&[2usize, 1][..]));
        let mut out = [0.0; 2];
        f.read_f32("a", &[2, 1], &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0]);
    }
}
