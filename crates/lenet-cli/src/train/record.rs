//! What a run records next to its weights: the training state's file name
//! ([`state_path`]), the metadata keys that tie a saved pair together ([`WEIGHTS_KEY`],
//! [`RUN_ID_KEY`]), the run's data settings ([`RunSettings`], key [`RUN_KEY`]) with their one
//! validating constructor, and [`save`], which writes the pair.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mnist::DatasetKind;
use nn::Trainer;
use serde::{Deserialize, Serialize};

use crate::model_file;

/// The training state file that goes with the weights file `weights`, next to it:
/// `NAME.safetensors` → `NAME.state.safetensors`; any other name gets `.state.safetensors`
/// appended whole (`w.bin` → `w.bin.state.safetensors`), so that `w.safetensors` and `w.bin`
/// keep states of their own. Built from the name's bytes, so names that are not UTF-8 stay
/// apart. (`w` and `w.safetensors` still share one: the state records its weights' name,
/// [`WEIGHTS_KEY`], and [`check_outputs`](super::checks::check_outputs) refuses to replace another name's state.)
pub fn state_path(weights: &Path) -> PathBuf {
    let stem = match weights.extension() {
        Some(ext) if ext == "safetensors" => weights.file_stem(),
        _ => weights.file_name(),
    };
    let mut name = stem.unwrap_or_default().to_os_string();
    name.push(".state.safetensors");
    weights.with_file_name(name)
}

/// Metadata key, in both files of a saved pair, of the weights' file name.
pub const WEIGHTS_KEY: &str = "lenet_weights";

/// Metadata key, in both files of a saved pair, of the run that saved them: a new run draws
/// one, a resumed run keeps its state's. Resume refuses weights saved by another run.
pub const RUN_ID_KEY: &str = "lenet_run_id";

/// The file name of `weights` as recorded under [`WEIGHTS_KEY`] (bytes that are not UTF-8
/// escaped, so that different names stay different).
pub(super) fn weights_name(weights: &Path) -> String {
    let name = weights.file_name().unwrap_or_default();
    match name.to_str() {
        Some(s) => s.to_string(),
        None => name.as_encoded_bytes().escape_ascii().to_string(),
    }
}

/// The settings of a run that are not in nn's [`TrainConfig`]: which data it trains on. They
/// are recorded in the training state (key [`RUN_KEY`]) so that `--resume` uses the same data.
/// Every value is checked, by [`RunSettings::new`], whether it comes from flags or from a file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RecordedRun")]
pub struct RunSettings {
    /// The dataset.
    #[serde(with = "dataset_name")]
    pub dataset: DatasetKind,
    /// `--limit`.
    pub limit: Option<usize>,
    /// `--val-split`.
    pub val_split: f64,
}

/// Metadata key of the [`RunSettings`] (JSON) in a training state file.
pub const RUN_KEY: &str = "lenet_run";

/// [`RunSettings`] as a file holds them, before they are checked.
#[derive(Deserialize)]
struct RecordedRun {
    #[serde(with = "dataset_name")]
    dataset: DatasetKind,
    limit: Option<usize>,
    val_split: f64,
}

impl TryFrom<RecordedRun> for RunSettings {
    type Error = String;
    fn try_from(r: RecordedRun) -> Result<Self, String> {
        RunSettings::new(r.dataset, r.limit, r.val_split)
    }
}

mod dataset_name {
    use mnist::DatasetKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &DatasetKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.dir_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DatasetKind, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl RunSettings {
    /// The settings, each value checked: the one constructor for flags and files alike.
    pub fn new(dataset: DatasetKind, limit: Option<usize>, val_split: f64) -> Result<Self, String> {
        Ok(RunSettings {
            dataset,
            limit: limit.map(Self::check_limit).transpose()?,
            val_split: Self::check_val_split(val_split)?,
        })
    }

    /// `limit` if it keeps at least one image.
    pub fn check_limit(limit: usize) -> Result<usize, String> {
        match limit {
            0 => Err("limit 0 leaves no image: must be at least 1".into()),
            n => Ok(n),
        }
    }

    /// `val_split` if it is a fraction in [0, 1).
    pub fn check_val_split(val_split: f64) -> Result<f64, String> {
        if (0.0..1.0).contains(&val_split) {
            Ok(val_split)
        } else {
            Err(format!("val_split {val_split} is outside [0, 1)"))
        }
    }
}

/// Writes the weights worth keeping and the full training state as one pair (see
/// [`Trainer::pair_bytes`]), both tagged with the dataset, the [`RunSettings`], the
/// weights' name and the run id.
pub(super) fn save(
    trainer: &Trainer,
    path: &Path,
    settings: &RunSettings,
    run_id: &str,
) -> Result<()> {
    let state = state_path(path);
    let run = serde_json::to_string(settings).expect("settings serialise");
    let extra: HashMap<String, String> = [
        model_file::dataset_entry(settings.dataset),
        (RUN_KEY.to_string(), run),
        (WEIGHTS_KEY.to_string(), weights_name(path)),
        (RUN_ID_KEY.to_string(), run_id.to_string()),
    ]
    .into();
    let context = || format!("cannot save the weights to {}", path.display());
    let (weights, state_bytes) = trainer
        .pair_bytes(path, &state, extra)
        .with_context(context)?;
    // Both written and synced before either replaces the old one; the state renamed first.
    nn::write_atomic_all(&[(&state, &state_bytes), (path, &weights)])
        .map_err(|error| nn::CheckpointError::Io {
            path: path.to_path_buf(),
            error,
        })
        .with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_sits_next_to_the_weights() {
        assert_eq!(
            state_path(Path::new("/x/lenet.safetensors")),
            Path::new("/x/lenet.state.safetensors")
        );
        assert_eq!(state_path(Path::new("w")), Path::new("w.state.safetensors"));
    }

    /// Weights of different names get states of their own: another extension, or bytes that
    /// are not UTF-8 (which a lossy conversion would merge into one U+FFFD name).
    #[cfg(unix)]
    #[test]
    fn different_weights_names_get_different_states() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let (a, b) = (
            Path::new(OsStr::from_bytes(b"/x/w\xff.safetensors")),
            Path::new(OsStr::from_bytes(b"/x/w\xfe.safetensors")),
        );
        assert_ne!(state_path(a), state_path(b));
        assert_eq!(
            state_path(a).as_os_str().as_bytes(),
            b"/x/w\xff.state.safetensors"
        );
        assert_ne!(
            state_path(Path::new("model.safetensors")),
            state_path(Path::new("model.bin"))
        );
        assert_eq!(
            state_path(Path::new("model.bin")),
            Path::new("model.bin.state.safetensors")
        );
        assert_ne!(weights_name(a), weights_name(b));
    }
}
