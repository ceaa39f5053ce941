//! The outputs of `lenet train`, checked before any data is read: writable, distinct, not the
//! `--resume` file, and not another weights name's training state.

use std::path::Path;

use anyhow::Result;

use super::record::{state_path, weights_name, WEIGHTS_KEY};
use crate::args::TrainArgs;
use crate::{model_file, outputs};

/// Fails now rather than after the first epoch if an output cannot be written (see
/// [`outputs::check_writable`]), if two outputs are one file, if an output is the `--resume`
/// file (except the state of `--save`, which a resumed run continues), or if the state file
/// belongs to weights of another name.
pub(super) fn check_outputs(args: &TrainArgs) -> Result<()> {
    let state = args.save.as_deref().map(state_path);
    let resume = args.resume.as_deref();
    let continued = |s: &Path| resume.is_some_and(|r| nn::guard::same_file(s, r));
    let mut outs: Vec<(&str, &Path)> = Vec::new();
    let named = [
        ("--save", args.save.as_deref()),
        (
            "--save's training state",
            state.as_deref().filter(|s| !continued(s)),
        ),
        ("--plot", args.plot.as_deref()),
        ("--metrics", args.metrics.as_deref()),
    ];
    for (flag, path) in named {
        if let Some(p) = path {
            outputs::check_writable(flag, p)?;
            outs.push((flag, p));
        }
    }
    let inputs: Vec<(&str, &Path)> = resume.map(|r| ("--resume", r)).into_iter().collect();
    outputs::check_distinct(&outs, &inputs)?;
    match (&args.save, &state) {
        (Some(weights), Some(state)) => check_state_owner(weights, state),
        _ => Ok(()),
    }
}

/// Refuses to replace a training state saved for weights of another name (`w` and
/// `w.safetensors` share `w.state.safetensors`).
fn check_state_owner(weights: &Path, state: &Path) -> Result<()> {
    let owner = model_file::metadata(state)?.and_then(|m| m.get(WEIGHTS_KEY).cloned());
    let ours = weights_name(weights);
    match owner {
        Some(owner) if owner != ours => anyhow::bail!(
            "--save {}: {} is the training state of the weights {owner:?}, not of {ours:?}: \
             refusing to replace it; choose another --save name",
            weights.display(),
            state.display()
        ),
        _ => Ok(()),
    }
}
