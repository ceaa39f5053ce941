//! `lenet eval`: test accuracy and confusion matrix of saved weights.

use anyhow::{Context, Result};
use nn::LeNet5;

use crate::args::EvalArgs;
use crate::confusion::Confusion;
use crate::data::{self, SplitSource};
use crate::model_file;

/// Runs `lenet eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let mut model = LeNet5::from_weights_file(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    // The dataset: the flag, else the one the model was trained on, else MNIST.
    let kind = match args.data.dataset {
        Some(d) => data::kind(d),
        None => model_file::recorded_dataset(&args.model).unwrap_or(mnist::DatasetKind::Mnist),
    };
    let test = data::load_test(kind, args.data.data_dir.as_deref())?;
    let eval = nn::evaluate(&mut model, &SplitSource(&test), 1000);
    let confusion = Confusion {
        counts: eval.confusion,
    };
    let names: Vec<&str> = kind.class_names().to_vec();
    if args.json {
        println!("{}", confusion.to_json(kind.dir_name(), &names));
    } else {
        println!(
            "{} test set: accuracy {:.2}% ({}/{}), loss {:.4}",
            kind.display_name(),
            100.0 * eval.accuracy,
            eval.correct,
            eval.total,
            eval.loss
        );
        println!();
        print!("{}", confusion.to_table(&names));
    }
    if let Some(png) = &args.png {
        crate::visualize::confusion_png(&confusion, png)?;
        eprintln!("wrote the confusion matrix to {}", png.display());
    }
    Ok(())
}
