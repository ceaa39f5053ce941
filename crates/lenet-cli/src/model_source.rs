//! The model of `serve`, `summary` and `visualize`: a weights file given with `--model`, with
//! the dataset recorded in it.

use std::path::Path;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use nn::LeNet5;

use crate::model_file;

/// A model with what is known about it.
#[derive(Debug)]
pub struct LoadedModel {
    /// The network.
    pub model: LeNet5,
    /// Where it came from: the file's name (without its folders, which the web page shows).
    pub source: String,
    /// The dataset it was trained on, if recorded.
    pub dataset: Option<DatasetKind>,
    /// Its test accuracy in [0, 1], if recorded.
    pub accuracy: Option<f64>,
}

impl LoadedModel {
    /// Loads `--model FILE`.
    pub fn load(path: Option<&Path>) -> Result<LoadedModel> {
        let path =
            path.context("no model: pass --model FILE (weights from `lenet train --save`)")?;
        let model = LeNet5::from_weights_file(path)
            .with_context(|| format!("cannot load the model {}", path.display()))?;
        Ok(LoadedModel {
            model,
            source: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            dataset: model_file::recorded_dataset(path),
            accuracy: None,
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
