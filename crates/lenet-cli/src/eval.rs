//! `lenet eval`: test accuracy, confusion matrix and speed of saved weights (or of the model
//! built into the binary when `--model` is absent).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use mnist::{DatasetKind, Split};

use crate::args::EvalArgs;
use crate::builtin::{self, keys};
use crate::confusion::Confusion;
use crate::data::{self, SplitSource};
use crate::model_source::LoadedModel;
use crate::{model_file, outln, outputs};

/// Runs `lenet eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    check_outputs(args)?;
    // --record: no training run may save to the file until the notes are in (a run that holds
    // the lock now is refused here).
    let _lock = match (&args.record, &args.model) {
        (Some(_), Some(path)) => Some(outputs::lock("--model", path)?),
        _ => None,
    };
    // The file is read once: the notes go into the very bytes evaluated.
    let loaded = LoadedModel::load(args.model.as_deref())?;
    let (test, kind) = test_set(args, loaded.dataset)?;
    // Only the forward passes are timed: the data is already in memory.
    let started = Instant::now();
    let eval = nn::Evaluator::new(1000).evaluate(&loaded.model, &SplitSource(&test));
    let images_per_second = eval.total as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let confusion = Confusion {
        counts: eval.confusion,
    };
    print(args, kind, &eval, &confusion, images_per_second)?;
    if let Some(png) = &args.png {
        crate::visualize::confusion_png(&confusion, png)?;
        crate::errln!("wrote the confusion matrix to {}", png.display());
    }
    if let (Some(notes), Some(path), Some(read)) = (&args.record, &args.model, &loaded.bytes) {
        let mut entries = notes.clone();
        entries.push((keys::TEST_ACCURACY.into(), format!("{:.4}", eval.accuracy)));
        entries.push((
            keys::TEST_CORRECT.into(),
            format!("{}/{}", eval.correct, eval.total),
        ));
        model_file::record_metadata(path, read, &entries)?;
    }
    Ok(())
}

/// The test set to evaluate on and the dataset it really is. The dataset assumed: the flag,
/// else the one the model was trained on (`recorded`), else MNIST.
fn test_set(args: &EvalArgs, recorded: Option<DatasetKind>) -> Result<(Split, DatasetKind)> {
    let assumed = args.data.dataset.or(recorded).unwrap_or(DatasetKind::Mnist);
    let test = data::load_test(assumed, args.data.data_dir.as_deref())?;
    let dir = mnist::resolve_data_dir(assumed, args.data.data_dir.as_deref());
    anyhow::ensure!(
        !test.is_empty(),
        "the test set in {} has no images: nothing to evaluate",
        dir.display()
    );
    let kind = actual_dataset(args, recorded, assumed, &dir);
    Ok((test, kind))
}

/// Prints the result: one JSON object with --json, else the accuracy line and the table.
fn print(
    args: &EvalArgs,
    kind: DatasetKind,
    eval: &nn::Evaluation,
    confusion: &Confusion,
    images_per_second: f64,
) -> Result<()> {
    let names: Vec<&str> = kind.class_names().to_vec();
    if args.json {
        let mut json: serde_json::Value =
            serde_json::from_str(&confusion.to_json(kind.dir_name(), &names))?;
        json["loss"] = eval.loss.into();
        json["images_per_second"] = images_per_second.round().into();
        json["kernels"] = tensor::Tier::active().name().into();
        outln!("{json}")?;
        return Ok(());
    }
    if args.model.is_none() {
        let info = builtin::info();
        outln!(
            "built-in model: `{}` (seed {}, commit {})",
            info.command,
            info.seed,
            info.commit
        )?;
    }
    outln!(
        "{} test set: accuracy {:.2}% ({}/{}), loss {:.4}, {:.0} images/s ({} kernels)",
        kind.display_name(),
        100.0 * eval.accuracy,
        eval.correct,
        eval.total,
        eval.loss,
        images_per_second,
        tensor::Tier::active().name()
    )?;
    outln!()?;
    outln!("{}", confusion.to_table(&names).trim_end_matches('\n'))?;
    Ok(())
}

/// The --png picture must be writable and neither the --model file nor the file --record
/// writes (the same one).
fn check_outputs(args: &EvalArgs) -> Result<()> {
    let Some(png) = &args.png else {
        return Ok(());
    };
    outputs::check_writable("--png", png)?;
    let inputs: Vec<(&str, &Path)> = args
        .model
        .iter()
        .map(|m| ("--model", m.as_path()))
        .collect();
    outputs::check_distinct(&[("--png", png.as_path())], &inputs)
}

/// The dataset the files in `dir` really are (recognised by checksum, else `assumed`), with a
/// warning when it is not the one assumed or not the one the model was trained on (`recorded`):
/// evaluating on another dataset is allowed, and the output names the data actually evaluated.
fn actual_dataset(
    args: &EvalArgs,
    recorded: Option<DatasetKind>,
    assumed: DatasetKind,
    dir: &Path,
) -> DatasetKind {
    let kind = data::identify_test_set(dir).unwrap_or(assumed);
    if kind != assumed {
        crate::errln!(
            "warning: the test set in {} is {}'s, not {}'s",
            dir.display(),
            kind.display_name(),
            assumed.display_name()
        );
    }
    if let Some(trained) = recorded.filter(|&r| r != kind) {
        let model = match &args.model {
            Some(path) => path.display().to_string(),
            None => "the built-in model".to_string(),
        };
        crate::errln!(
            "warning: {model} was trained on {}, evaluated here on {}",
            trained.display_name(),
            kind.display_name()
        );
    }
    kind
}
