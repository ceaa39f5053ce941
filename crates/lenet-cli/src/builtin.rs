//! The built-in model: LeNet-5 weights trained by `lenet train --augment` and built into the
//! binary, used by `predict`, `eval` and `serve` when `--model` is absent (loaded through
//! [`crate::model_source::LoadedModel`]). Its safetensors
//! metadata records how it was made and what it scored (README, "The built-in model", says how
//! to remake it).

use std::collections::HashMap;

use anyhow::{Context, Result};
use nn::LeNet5;

use crate::model_file;

/// The weights file, as built into the binary.
pub const WEIGHTS: &[u8] = include_bytes!("../assets/lenet5-mnist.safetensors");
/// The name that stands for the built-in file in messages.
pub const NAME: &str = "built-in model";

/// Metadata keys of the built-in model, written by `lenet eval --record`.
pub mod keys {
    /// The training command.
    pub const COMMAND: &str = "command";
    /// The training seed.
    pub const SEED: &str = "seed";
    /// The git commit of the code that trained it.
    pub const COMMIT: &str = "commit";
    /// Test accuracy as a fraction, e.g. `0.9952`.
    pub const TEST_ACCURACY: &str = "test_accuracy";
    /// Correct test images over all of them, e.g. `9952/10000`.
    pub const TEST_CORRECT: &str = "test_correct";
}

/// How the built-in model was made and what it scored, as recorded in its metadata (empty
/// strings for keys that are missing).
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// The training command.
    pub command: String,
    /// The training seed.
    pub seed: String,
    /// The commit of the code that trained it.
    pub commit: String,
    /// Test accuracy as a fraction.
    pub test_accuracy: String,
    /// Correct test images over all, e.g. `9952/10000`.
    pub test_correct: String,
}

/// The built-in model's recorded metadata.
pub fn info() -> Info {
    let meta = metadata();
    let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
    Info {
        command: get(keys::COMMAND),
        seed: get(keys::SEED),
        commit: get(keys::COMMIT),
        test_accuracy: get(keys::TEST_ACCURACY),
        test_correct: get(keys::TEST_CORRECT),
    }
}

/// The built-in model's `__metadata__`.
pub fn metadata() -> HashMap<String, String> {
    model_file::metadata_of(WEIGHTS).unwrap_or_default()
}

/// The built-in model, freshly loaded.
pub fn model() -> Result<LeNet5> {
    LeNet5::from_weights_bytes(WEIGHTS, NAME).context("cannot load the built-in model")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnist::DatasetKind;

    #[test]
    fn the_built_in_model_loads_and_records_how_it_was_made() {
        let model = model().unwrap();
        assert_eq!(model.config(), nn::LeNet5Config::default());
        assert_eq!(
            model_file::dataset_in(&metadata()),
            Some(DatasetKind::Mnist)
        );
        let info = info();
        assert!(info.command.starts_with("lenet train"), "{info:?}");
        assert!(info.command.contains("--augment"), "{info:?}");
        assert!(!info.seed.is_empty() && !info.commit.is_empty(), "{info:?}");
        // The target for the shipped model (it records 99.54%, see the README).
        let accuracy: f64 = info.test_accuracy.parse().unwrap();
        assert!(accuracy >= 0.995, "{info:?}");
        assert!(info.test_correct.ends_with("/10000"), "{info:?}");
        // Small enough to ship in the binary.
        assert!(WEIGHTS.len() < 300_000, "{} bytes", WEIGHTS.len());
    }
}
