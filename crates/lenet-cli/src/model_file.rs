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

/// Keys that the tool itself writes and reads, which notes may not replace: they decide how the
/// file is read (`format`, the model config, the dataset), tie a saved pair together (the
/// run, the weights' name, the epochs) or hold what `eval --record` measures.
pub fn reserved_keys() -> Vec<&'static str> {
    let mut keys = nn::STATE_KEYS.to_vec();
    keys.extend([
        DATASET_KEY,
        crate::train::RUN_KEY,
        crate::train::RUN_ID_KEY,
        crate::train::WEIGHTS_KEY,
        crate::builtin::keys::TEST_ACCURACY,
        crate::builtin::keys::TEST_CORRECT,
    ]);
    keys
}

/// Adds (or replaces) `entries` in the metadata of the safetensors file at `path`, whose
/// content was `read`: the new file is made from those bytes and replaces the file only if it
/// still holds them (see [`nn::replace_if_unchanged`]), so notes about what was read never
/// land in another version of the file. The tensors are kept as they are.
pub fn record_metadata(path: &Path, read: &[u8], entries: &[(String, String)]) -> Result<()> {
    let tensors = SafeTensors::deserialize(read)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut metadata = metadata_of(read).unwrap_or_default();
    metadata.extend(entries.iter().cloned());
    let out = safetensors::serialize(tensors.tensors(), &Some(metadata))
        .with_context(|| format!("cannot rewrite {}", path.display()))?;
    nn::replace_if_unchanged(path, read, &out)
        .with_context(|| format!("cannot record in {}", path.display()))
}

/// The `__metadata__` of the safetensors file at `path`, for a file nothing else reads (the
/// files `lenet train --save` is about to replace): read once with
/// [`nn::checkpoint::read_checkpoint`] (a regular file within its size limit). `None` when
/// there is no such file or it is not a safetensors file of a size ours can have (then it holds
/// no entry of ours); an error naming the file when it cannot be read.
pub fn metadata(path: &Path) -> Result<Option<HashMap<String, String>>> {
    use nn::CheckpointError as E;
    match nn::checkpoint::read_checkpoint(path) {
        Ok(bytes) => Ok(metadata_of(&bytes)),
        Err(E::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(E::NotRegularFile { .. } | E::NotSafetensors { .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The metadata of safetensors content held in memory (`None` if it is not safetensors).
pub fn metadata_of(bytes: &[u8]) -> Option<HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    Some(header.metadata().clone().unwrap_or_default())
}

/// The dataset named by a metadata map, if any.
pub fn dataset_in(metadata: &HashMap<String, String>) -> Option<DatasetKind> {
    metadata.get(DATASET_KEY)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(m: &nn::LeNet5, path: &Path) {
        nn::write_atomic(path, &m.weights_bytes(path, HashMap::new()).unwrap()).unwrap();
    }

    fn recorded_dataset(path: &Path) -> Option<DatasetKind> {
        dataset_in(&metadata(path).unwrap()?)
    }

    #[test]
    fn dataset_round_trips_and_weights_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut model = nn::LeNet5::zeros(nn::LeNet5Config::default());
        let bias: Vec<f32> = (0..10).map(|i| i as f32 * 0.25 - 1.0).collect();
        model.set_param("fc3.bias", &bias);
        save(&model, &path);
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
        save(&model, &path);
        let entries = [("test_accuracy".to_string(), "0.9948".to_string())];
        let read = std::fs::read(&path).unwrap();
        record_metadata(&path, &read, &entries).unwrap();
        let meta = metadata(&path).unwrap().unwrap();
        assert_eq!(meta["test_accuracy"], "0.9948");
        assert!(
            meta.contains_key(nn::checkpoint::CONFIG_KEY),
            "earlier entries stay: {meta:?}"
        );
        let back = nn::LeNet5::from_weights_file(&path).unwrap();
        assert_eq!(back.param("fc3.bias").unwrap().value, &[0.5; 10]);
    }

    /// Notes are about the bytes that were read: a file saved again in between (a training
    /// run's next epoch) is left as that run wrote it.
    #[test]
    fn notes_never_land_in_a_file_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut model = nn::LeNet5::zeros(nn::LeNet5Config::default());
        save(&model, &path);
        let read = std::fs::read(&path).unwrap();
        model.set_param("fc3.bias", &[0.25; 10]);
        save(&model, &path);
        let newer = std::fs::read(&path).unwrap();
        let entries = [("test_accuracy".to_string(), "0.5".to_string())];
        let err = record_metadata(&path, &read, &entries).unwrap_err();
        assert!(format!("{err:#}").contains("changed"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), newer);
    }
}
