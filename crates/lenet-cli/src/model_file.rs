//! Which dataset a weights file was trained on, recorded in its safetensors `__metadata__`
//! (key `dataset`, which PyTorch ignores), so that `predict` and `eval` can name the classes, and
//! the other entries: the completed epochs (`lenet train --save`) and notes such as the measured
//! test accuracy (`lenet eval --record`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use safetensors::SafeTensors;

/// Metadata key holding the dataset's folder name (`mnist` or `fashion-mnist`).
const DATASET_KEY: &str = "dataset";

/// The metadata entry that records `kind` in a weights or training state file.
pub fn dataset_entry(kind: DatasetKind) -> (String, String) {
    (DATASET_KEY.to_string(), kind.dir_name().to_string())
}

/// Adds (or replaces) `entries` in the metadata of the safetensors file at `path`, rewriting it
/// atomically; the tensors are kept as they are.
pub fn record_metadata(path: &Path, entries: &[(String, String)]) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut metadata = metadata_of(&bytes).unwrap_or_default();
    metadata.extend(entries.iter().cloned());
    let out = safetensors::serialize(tensors.tensors(), &Some(metadata))
        .with_context(|| format!("cannot rewrite {}", path.display()))?;
    nn::write_atomic(path, &out).with_context(|| format!("cannot write {}", path.display()))
}

/// The `__metadata__` of a safetensors file (`None` if it cannot be read; callers that need
/// the file load it with nn first, which reports those errors properly and refuses FIFOs).
pub fn metadata(path: &Path) -> Option<HashMap<String, String>> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    metadata_of(&std::fs::read(path).ok()?)
}

/// The metadata of safetensors content held in memory (`None` if it is not safetensors).
pub fn metadata_of(bytes: &[u8]) -> Option<HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    Some(header.metadata().clone().unwrap_or_default())
}

/// The dataset named by a metadata map, if any.
pub fn dataset_in(metadata: &HashMap<String, String>) -> Option<DatasetKind> {
    let name = metadata.get(DATASET_KEY)?;
    DatasetKind::ALL.into_iter().find(|k| k.dir_name() == name)
}

/// The dataset recorded in the file, if any (unreadable files give `None`: loading the
/// weights reports those errors properly).
pub fn recorded_dataset(path: &Path) -> Option<DatasetKind> {
    dataset_in(&metadata(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_round_trips_and_weights_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut model = nn::LeNet5::zeros(nn::LeNet5Config::default());
        let bias: Vec<f32> = (0..10).map(|i| i as f32 * 0.25 - 1.0).collect();
        model.set_param("fc3.bias", &bias);
        model.save_weights(&path).unwrap();
        assert_eq!(recorded_dataset(&path), None);
        let meta = [dataset_entry(DatasetKind::FashionMnist)].into();
        std::fs::write(&path, model.weights_bytes(&path, meta).unwrap()).unwrap();
        assert_eq!(recorded_dataset(&path), Some(DatasetKind::FashionMnist));
        let back = nn::LeNet5::from_weights_file(&path).unwrap();
        assert_eq!(back.param("fc3.bias").unwrap().value, &bias[..]);
        assert_eq!(recorded_dataset(&dir.path().join("missing")), None);
    }

    #[test]
    fn recorded_notes_are_added_and_weights_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut model = nn::LeNet5::zeros(nn::LeNet5Config::default());
        model.set_param("fc3.bias", &[0.5; 10]);
        model.save_weights(&path).unwrap();
        let entries = [("test_accuracy".to_string(), "0.9948".to_string())];
        record_metadata(&path, &entries).unwrap();
        let meta = metadata(&path).unwrap();
        assert_eq!(meta["test_accuracy"], "0.9948");
        assert!(
            meta.contains_key(nn::checkpoint::CONFIG_KEY),
            "earlier entries stay: {meta:?}"
        );
        let back = nn::LeNet5::from_weights_file(&path).unwrap();
        assert_eq!(back.param("fc3.bias").unwrap().value, &[0.5; 10]);
    }
}
