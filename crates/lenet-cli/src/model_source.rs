//! The one model loader of the CLI (`predict`, `eval`, `serve`, `summary`, `visualize`,
//! `bench`): a weights file given with `--model`, read once, else the built-in one, with the
//! dataset and the test accuracy recorded in it and the bytes it was loaded from.

use std::path::Path;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use nn::LeNet5;

use crate::{builtin, model_file};

/// A model with what is known about it.
#[derive(Debug)]
pub struct LoadedModel {
    /// The network.
    pub model: LeNet5,
    /// Where it came from: the file's name (without its folders, which the web page shows).
    pub source: String,
    /// The dataset it was trained on, if recorded.
    pub dataset: Option<DatasetKind>,
    /// Its test accuracy in [0, 1], if recorded (the built-in model's is).
    pub accuracy: Option<f64>,
    /// The file's content as it was read and loaded (`None` for the built-in model): what
    /// `eval --record` adds its notes to.
    pub bytes: Option<Vec<u8>>,
}

impl LoadedModel {
    /// Loads `--model FILE`, or the built-in model without one.
    pub fn load(path: Option<&Path>) -> Result<LoadedModel> {
        let Some(path) = path else {
            return Ok(LoadedModel {
                model: builtin::model()?,
                source: builtin::NAME.to_string(),
                dataset: model_file::dataset_in(&builtin::metadata()),
                accuracy: builtin::info().test_accuracy.parse().ok(),
                bytes: None,
            });
        };
        let load = || {
            let bytes = nn::checkpoint::read_checkpoint(path)?;
            let model = LeNet5::from_weights_bytes(&bytes, &path.display().to_string())?;
            Ok::<_, nn::CheckpointError>((model, bytes))
        };
        let (model, bytes) =
            load().with_context(|| format!("cannot load the model {}", path.display()))?;
        let source = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(LoadedModel {
            model,
            source,
            dataset: model_file::metadata_of(&bytes).and_then(|m| model_file::dataset_in(&m)),
            accuracy: None,
            bytes: Some(bytes),
        })
    }

    /// The class names: the recorded dataset's, else the digits.
    pub fn class_names(&self) -> Vec<String> {
        match self.dataset {
            Some(kind) => kind.class_names().iter().map(|s| s.to_string()).collect(),
            None => (0..nn::NUM_CLASSES).map(|d| d.to_string()).collect(),
        }
    }
}
