//! `lenet predict`: the top-3 classes of each image, with probabilities (with `--json`, every
//! class's probability, to the bit).

use anyhow::{bail, Result};
use ndarray::{Array4, Axis};

use crate::args::PredictArgs;
use crate::model_source::LoadedModel;
use crate::preprocess;

/// How many classes to show per image.
const TOP: usize = 3;

/// Runs `lenet predict`: one line per readable image; the unreadable ones are reported on
/// stderr as they come, and make the command fail once every image has been tried.
pub fn run(args: &PredictArgs) -> Result<()> {
    let mut loaded = LoadedModel::load(args.model.as_deref())?;
    let names = loaded.class_names();
    let inputs: Vec<Result<Vec<f32>>> = args
        .images
        .iter()
        .map(|path| preprocess::load_input(path))
        .collect();
    let good: Vec<&Vec<f32>> = inputs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut batch = Array4::<f32>::zeros((good.len(), 1, 28, 28));
    for (input, mut slot) in good.iter().zip(batch.axis_iter_mut(Axis(0))) {
        for (o, &v) in slot.iter_mut().zip(input.iter()) {
            *o = v;
        }
    }
    let probabilities = nn::softmax(loaded.model.forward_inference(batch.view()));
    let mut rows = probabilities.rows().into_iter();
    let mut failed = 0;
    for (path, input) in args.images.iter().zip(&inputs) {
        match input {
            Ok(_) => {
                let p = rows.next().expect("one row per readable image");
                let p = p.as_slice().expect("softmax rows are contiguous");
                crate::outln!("{}", line(path, p, &names, args.json))?;
            }
            Err(err) => {
                crate::errln!("error: {err:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be read", args.images.len());
    }
    Ok(())
}

/// The output line of one image: its top [`TOP`] classes, or with `json` every probability.
fn line(path: &std::path::Path, p: &[f32], names: &[String], json: bool) -> String {
    if json {
        // A struct, not `json!`: the f32s are written as f32s (the page's shortest form).
        #[derive(serde::Serialize)]
        struct Line<'a> {
            image: String,
            probabilities: &'a [f32],
        }
        let image = path.display().to_string();
        let line = Line {
            image,
            probabilities: p,
        };
        return serde_json::to_string(&line).expect("a string and numbers always serialise");
    }
    let top: Vec<String> = top_k(p, TOP)
        .into_iter()
        .map(|c| format!("{} ({:.2}%)", names[c], 100.0 * p[c]))
        .collect();
    format!("{}: {}", path.display(), top.join("  "))
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_three() {
        assert_eq!(top_k(&[0.1, 0.5, 0.05, 0.3, 0.05], 3), vec![1, 3, 0]);
        assert_eq!(top_k(&[0.5, 0.5], 3), vec![0, 1]);
    }
}
