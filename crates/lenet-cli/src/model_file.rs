//! Which dataset a weights file was trained on, recorded in its safetensors `__metadata__`
//! (key `dataset`, which PyTorch ignores), so that `predict` and `eval` can name the classes, and
//! the other entries `lenet train --save` records (the completed epochs).

use std::collections::HashMap;
use std::path::Path;

use mnist::DatasetKind;
use safetensors::SafeTensors;

/// Metadata key holding the dataset's folder name (`mnist` or `fashion-mnist`).
const DATASET_KEY: &str = "dataset";

/// The metadata entry that records `kind` in a weights or training state file.
pub fn dataset_entry(kind: DatasetKind) -> (String, String) {
    (DATASET_KEY.to_string(), kind.dir_name().to_string())
}

/// The `__metadata__` of a safetensors file (`None` if it cannot be read; callers that need
/// the file load it with nn first, which reports those errors properly and refuses FIFOs).
pub fn metadata(path: &Path) -> Option<HashMap<String, String>> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let (_, header) = SafeTensors::read_metadata(&bytes).ok()?;
    header.metadata().clone()
}

/// The number of completed epochs recorded in weights saved by `lenet train --save`.
pub fn recorded_epochs(path: &Path) -> Option<usize> {
    metadata(path)?.get(nn::EPOCHS_DONE_KEY)?.parse().ok()
}

/// The dataset recorded in the file, if any (unreadable files give `None`: loading the
/// weights reports those errors properly).
pub fn recorded_dataset(path: &Path) -> Option<DatasetKind> {
    let name = metadata(path)?.get(DATASET_KEY)?.clone();
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
        let meta = [dataset_entry(DatasetKind::FashionMnist)].into();
        std::fs::write(&path, model.weights_bytes(&path, meta).unwrap()).unwrap();
        assert_eq!(recorded_dataset(&path), Some(DatasetKind::FashionMnist));
        let back = nn::LeNet5::from_weights_file(&path).unwrap();
        assert_eq!(back.param("fc3.bias").unwrap().value, &bias[..]);
        assert_eq!(recorded_dataset(&dir.path().join("missing")), None);
    }
}
