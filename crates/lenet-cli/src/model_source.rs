//! The model of `serve`, `summary` and `visualize`: a weights file given with `--model`, else
//! the built-in one, with the dataset and the test accuracy recorded in it.

use std::path::Path;

use anyhow::Result;
use mnist::DatasetKind;
use nn::LeNet5;

use crate::builtin;

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
}

impl LoadedModel {
    /// Loads `--model FILE`, or the built-in model without one.
    pub fn load(path: Option<&Path>) -> Result<LoadedModel> {
        let (model, dataset) = builtin::model_or_builtin(path)?;
        let (source, accuracy) = match path {
            Some(path) => (
                path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                None,
            ),
            None => (
                builtin::NAME.to_string(),
                builtin::info().test_accuracy.parse().ok(),
            ),
        };
        Ok(LoadedModel {
            model,
            source,
            dataset,
            accuracy,
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
