//! `lenet eval`: test accuracy and confusion matrix of saved weights.

use anyhow::Result;

use crate::args::EvalArgs;
use crate::builtin::{self, keys};
use crate::confusion::Confusion;
use crate::data::{self, SplitSource};
use crate::model_file;

/// Runs `lenet eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let (mut model, recorded) = builtin::model_or_builtin(args.model.as_deref())?;
    // The dataset: the flag, else the one the model was trained on, else MNIST.
    let kind = match args.data.dataset {
        Some(d) => data::kind(d),
        None => recorded.unwrap_or(mnist::DatasetKind::Mnist),
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
        if args.model.is_none() {
            let info = builtin::info();
            println!(
                "built-in model: `{}` (seed {}, commit {})",
                info.command, info.seed, info.commit
            );
        }
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
    if let (Some(notes), Some(path)) = (&args.record, &args.model) {
        let mut entries = notes.clone();
        entries.push((keys::TEST_ACCURACY.into(), format!("{:.4}", eval.accuracy)));
        entries.push((
            keys::TEST_CORRECT.into(),
            format!("{}/{}", eval.correct, eval.total),
        ));
        model_file::record_metadata(path, &entries)?;
    }
    Ok(())
}
