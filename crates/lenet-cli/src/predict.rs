//! `lenet predict`: the top-3 classes of each image, with probabilities.

use anyhow::{Context, Result};
use ndarray::{Array4, Axis};
use nn::LeNet5;

use crate::args::PredictArgs;
use crate::{model_file, preprocess};

/// How many classes to show per image.
const TOP: usize = 3;

/// Runs `lenet predict`.
pub fn run(args: &PredictArgs) -> Result<()> {
    let mut model = LeNet5::from_weights_file(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    let names: Vec<String> = match model_file::recorded_dataset(&args.model) {
        Some(kind) => kind.class_names().iter().map(|s| s.to_string()).collect(),
        None => (0..nn::NUM_CLASSES).map(|d| d.to_string()).collect(),
    };
    // Every image is read and prepared first, so that a bad file fails before any output.
    let mut batch = Array4::<f32>::zeros((args.images.len(), 1, 28, 28));
    for (path, mut slot) in args.images.iter().zip(batch.axis_iter_mut(Axis(0))) {
        let digit = preprocess::load_digit(path)?;
        for (o, v) in slot.iter_mut().zip(preprocess::to_input(&digit)) {
            *o = v;
        }
    }
    let probabilities = nn::softmax(model.forward_inference(batch.view()));
    for (path, p) in args.images.iter().zip(probabilities.rows()) {
        let line: Vec<String> = top_k(p.as_slice().expect("softmax rows are contiguous"), TOP)
            .into_iter()
            .map(|c| format!("{} ({:.2}%)", names[c], 100.0 * p[c]))
            .collect();
        crate::outln!("{}: {}", path.display(), line.join("  "))?;
    }
    Ok(())
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
