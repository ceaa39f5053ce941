//! Which dataset a weights file was trained on, recorded in its safetensors `__metadata__`
//! (key `dataset`, which PyTorch ignores), so that `predict` and `eval` can name the classes.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use safetensors::SafeTensors;

/// Metadata key holding the dataset's folder name (`mnist` or `fashion-mnist`).
const DATASET_KEY: &str = "dataset";

/// Adds `dataset = kind` to the metadata of the safetensors file at `path` (rewritten atomically).
pub fn record_dataset(path: &Path, kind: DatasetKind) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    let mut metadata: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    metadata.insert(DATASET_KEY.to_string(), kind.dir_name().to_string());
    let out = safetensors::serialize(tensors.tensors(), &Some(metadata))
        .with_context(|| format!("cannot rewrite {}", path.display()))?;
    nn::write_atomic(path, &out).with_context(|| format!("cannot write {}", path.display()))
}

/// The dataset recorded in the file, if any (unreadable files give `None`: loading the
/// weights reports those errors properly).
pub fn recorded_dataset(path: &Path) -> Option<DatasetKind> {
    let bytes = std::fs::read(path).ok()?;
    let (_, header) = SafeTensors::read_metadata(&bytes).ok()?;
    let name = header.metadata().as_ref()?.get(DATASET_KEY)?.clone();
    DatasetKind::ALL.into_iter().find(|k| k.dir_name() == name)
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
        record_dataset(&path, DatasetKind::FashionMnist).unwrap();
        assert_eq!(recorded_dataset(&path), Some(DatasetKind::FashionMnist));
        let back = nn::LeNet5::from_weights_file(&path).unwrap();
        assert_eq!(back.param("fc3.bias").unwrap().value, &bias[..]);
        assert_eq!(recorded_dataset(&dir.path().join("missing")), None);
    }
}
