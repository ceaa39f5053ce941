//! `lenet eval`: test accuracy, confusion matrix and speed of saved weights.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use nn::LeNet5;

use crate::args::EvalArgs;
use crate::confusion::Confusion;
use crate::data::{self, SplitSource};
use crate::{model_file, outln};

/// Runs `lenet eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let mut model = LeNet5::from_weights_file(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    let assumed = dataset(args);
    let test = data::load_test(assumed, args.data.data_dir.as_deref())?;
    let dir = mnist::resolve_data_dir(assumed, args.data.data_dir.as_deref());
    anyhow::ensure!(
        !test.is_empty(),
        "the test set in {} has no images: nothing to evaluate",
        dir.display()
    );
    let kind = actual_dataset(args, assumed, &dir);
    // Only the forward passes are timed: the data is already in memory.
    let started = Instant::now();
    let eval = nn::evaluate(&mut model, &SplitSource(&test), 1000);
    let images_per_second = eval.total as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let confusion = Confusion {
        counts: eval.confusion,
    };
    let names: Vec<&str> = kind.class_names().to_vec();
    if args.json {
        let mut json: serde_json::Value =
            serde_json::from_str(&confusion.to_json(kind.dir_name(), &names))?;
        json["images_per_second"] = images_per_second.round().into();
        outln!("{json}")?;
    } else {
        outln!(
            "{} test set: accuracy {:.2}% ({}/{}), loss {:.4}, {:.0} images/s",
            kind.display_name(),
            100.0 * eval.accuracy,
            eval.correct,
            eval.total,
            eval.loss,
            images_per_second
        )?;
        outln!()?;
        outln!("{}", confusion.to_table(&names).trim_end_matches('\n'))?;
    }
    Ok(())
}

/// The dataset to read: `--dataset`, else the one recorded in the model file, else MNIST.
fn dataset(args: &EvalArgs) -> DatasetKind {
    match args.data.dataset {
        Some(d) => data::kind(d),
        None => model_file::recorded_dataset(&args.model).unwrap_or(DatasetKind::Mnist),
    }
}

/// The dataset the files in `dir` really are (recognised by checksum, else `assumed`), with a
/// warning when it is not the one assumed or not the one the model was trained on: evaluating
/// on another dataset is allowed, and the output names the data actually evaluated.
fn actual_dataset(args: &EvalArgs, assumed: DatasetKind, dir: &Path) -> DatasetKind {
    let kind = data::identify_test_set(dir).unwrap_or(assumed);
    if kind != assumed {
        eprintln!(
            "warning: the test set in {} is {}'s, not {}'s",
            dir.display(),
            kind.display_name(),
            assumed.display_name()
        );
    }
    let recorded = model_file::recorded_dataset(&args.model);
    if let Some(trained) = recorded.filter(|&r| r != kind) {
        eprintln!(
            "warning: {} was trained on {}, evaluated here on {}",
            args.model.display(),
            trained.display_name(),
            kind.display_name()
        );
    }
    kind
}
