//! `--resume`: the run a state file continues, reconciled with the flags. The flags a resumed
//! run takes from its state are listed once ([`RECORDED_FLAGS`]); a given flag that
//! contradicts the state is refused, and so are a state with bad data settings and weights
//! that another run saved to the same name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use nn::{TrainConfig, Trainer};

use super::flags::config;
use super::record::{RunSettings, RUN_ID_KEY, RUN_KEY};
use crate::args::TrainArgs;
use crate::model_file;
use crate::out::Deferred;

/// A new trainer with a new run id, or the resumed one with its recorded settings and run id
/// (see [`resume`]).
pub(super) fn start(args: &TrainArgs) -> Result<(Trainer, RunSettings, String, Deferred)> {
    let mut out = Deferred::default();
    match &args.resume {
        Some(path) => {
            let (trainer, settings, run_id) = resume(args, path)?;
            out.line(format_args!(
                "resuming {} after epoch {} of {}",
                path.display(),
                trainer.epochs_done(),
                args.epochs
            ));
            Ok((trainer, settings, run_id, out))
        }
        None => {
            let trainer = Trainer::new(config(args)).context("invalid training settings")?;
            let run_id = nn::guard::random_id();
            Ok((trainer, RunSettings::of(args), run_id, out))
        }
    }
}

/// A recorded setting as text to compare and print.
type Setting = fn(&TrainConfig) -> String;

/// The flags a resumed run takes from its state, in one table: each flag's clap id (its field
/// in [`TrainArgs`]) and the [`TrainConfig`] value it sets. Resume compares exactly these (a
/// test checks that every id is a flag of `lenet train`).
const RECORDED_FLAGS: [(&str, Setting); 13] = [
    ("lr", |c| c.lr.to_string()),
    ("batch_size", |c| c.batch_size.to_string()),
    ("momentum", |c| c.momentum.to_string()),
    ("weight_decay", |c| c.weight_decay.to_string()),
    ("nesterov", |c| c.nesterov.to_string()),
    ("schedule", |c| c.schedule.describe()),
    ("step_size", |c| c.schedule.describe()),
    ("gamma", |c| c.schedule.describe()),
    ("activation", |c| c.model.activation.name().to_string()),
    ("pool", |c| c.model.pooling.name().to_string()),
    ("seed", |c| c.seed.to_string()),
    ("augment", |c| c.augment.is_some().to_string()),
    ("early_stopping", |c| format!("{:?}", c.early_stopping)),
];

/// `--flag-name` of a clap argument id.
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// Loads a training state and its run id. The run keeps every setting it was started with: a
/// flag given with another value is refused, naming it (only `--epochs` may change, and only
/// to more than the epochs done); `--dataset`, `--limit` and `--val-split` default to the
/// recorded ones.
fn resume(args: &TrainArgs, path: &Path) -> Result<(Trainer, RunSettings, String)> {
    // The file is read once: the trainer and the run's metadata come from the same bytes.
    let bytes = nn::checkpoint::read_checkpoint(path)
        .with_context(|| format!("cannot resume from {}", path.display()))?;
    let mut trainer = Trainer::from_state_bytes(&bytes, path)
        .with_context(|| format!("cannot resume from {}", path.display()))?;
    anyhow::ensure!(
        args.epochs > trainer.epochs_done(),
        "--epochs {}: {} has {} epochs done already, so there is nothing to train; with \
         --resume, --epochs is the total: give more than {}",
        args.epochs,
        path.display(),
        trainer.epochs_done(),
        trainer.epochs_done()
    );
    let ours = config(args);
    for (id, setting) in RECORDED_FLAGS.iter().filter(|(id, _)| args.given(id)) {
        let (given, recorded) = (setting(&ours), setting(trainer.config()));
        anyhow::ensure!(
            given == recorded,
            "{} {given} differs from the resumed run's {recorded} ({}): a resumed run keeps \
             its settings, only --epochs may change",
            flag(id),
            path.display()
        );
    }
    let metadata = model_file::metadata_of(&bytes).unwrap_or_default();
    let recorded = recorded_settings(&metadata, path)?;
    let settings = check_run_settings(args, recorded, path)?;
    if args.save.is_none() {
        crate::errln!("warning: --resume without --save: the continued run will not be saved");
    }
    // A state saved before run ids existed starts a new one.
    let run_id = metadata
        .get(RUN_ID_KEY)
        .cloned()
        .unwrap_or_else(nn::guard::random_id);
    check_saved_pair(args, &trainer, &run_id, path)?;
    trainer.set_epochs(args.epochs);
    Ok((trainer, settings, run_id))
}

/// The data settings recorded in a training state (key [`RUN_KEY`]), each field checked: a
/// missing or malformed entry is an error naming the file, the key and what was expected (the
/// run's images cannot be told without it), never a run on other data or a panic.
fn recorded_settings(metadata: &HashMap<String, String>, path: &Path) -> Result<RunSettings> {
    let bad = |found: &str, why: &str| {
        anyhow::anyhow!(
            "{}: metadata {RUN_KEY:?}: expected the run's data settings as JSON \
             {{\"dataset\": \"mnist\" or \"fashion-mnist\", \"limit\": null or N >= 1, \
             \"val_split\": F in [0, 1)}}, found {found} ({why})",
            path.display()
        )
    };
    let raw = metadata.get(RUN_KEY).ok_or_else(|| {
        bad(
            "nothing",
            "the file does not say which images the run trained on",
        )
    })?;
    serde_json::from_str(raw).map_err(|e| bad(&format!("{raw:?}"), &e.to_string()))
}

/// The recorded data settings, after checking that no flag asks for others.
fn check_run_settings(args: &TrainArgs, recorded: RunSettings, path: &Path) -> Result<RunSettings> {
    let ours = RunSettings::of(args);
    let differs = |id: &str, given: String, was: String| {
        anyhow::anyhow!(
            "{} {given} differs from the resumed run's {was} ({}): a resumed run trains on \
             the same data",
            flag(id),
            path.display()
        )
    };
    if args.given("dataset") && ours.dataset != recorded.dataset {
        let name = |k: DatasetKind| k.dir_name().to_string();
        return Err(differs(
            "dataset",
            name(ours.dataset),
            name(recorded.dataset),
        ));
    }
    if args.given("limit") && ours.limit != recorded.limit {
        let n = |l: Option<usize>| l.map_or("(none)".into(), |l| l.to_string());
        return Err(differs("limit", n(ours.limit), n(recorded.limit)));
    }
    if args.given("val_split") && ours.val_split != recorded.val_split {
        let (a, b) = (ours.val_split.to_string(), recorded.val_split.to_string());
        return Err(differs("val_split", a, b));
    }
    Ok(recorded)
}

/// Checks the weights file that `--save` will replace against the state being resumed. Weights
/// saved by another run (another run id: two runs saved to one name) are refused. Weights of
/// another epoch of this run (a crash between the two renames of a save) are explained: the
/// state is complete, and the weights are rewritten after the next epoch.
fn check_saved_pair(args: &TrainArgs, trainer: &Trainer, run_id: &str, state: &Path) -> Result<()> {
    let Some(weights) = &args.save else {
        return Ok(());
    };
    let Some(meta) = model_file::metadata(weights)? else {
        return Ok(());
    };
    if let Some(theirs) = meta.get(RUN_ID_KEY).filter(|id| *id != run_id) {
        anyhow::bail!(
            "{} was saved by run {theirs}, the training state {} by run {run_id}: two runs \
             saved to the same name, and the pair is mixed; resume with a --save name of its \
             own, or move {} away",
            weights.display(),
            state.display(),
            weights.display()
        );
    }
    let epochs = meta
        .get(nn::EPOCHS_DONE_KEY)
        .and_then(|e| e.parse::<usize>().ok());
    if let Some(epochs) = epochs.filter(|&e| e != trainer.epochs_done()) {
        crate::errln!(
            "warning: {} holds the weights of epoch {epochs}, the training state those of epoch \
             {} (a save was interrupted): resuming from the state; the weights are rewritten \
             after the next epoch",
            weights.display(),
            trainer.epochs_done()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag that resume compares is a flag of `lenet train` (a renamed flag fails here,
    /// not silently at resume).
    #[test]
    fn recorded_flags_are_flags_of_lenet_train() {
        let cli = crate::args::Cli::command();
        let train = cli.find_subcommand("train").expect("lenet train");
        for (id, _) in RECORDED_FLAGS {
            assert!(
                train.get_arguments().any(|a| a.get_id() == id),
                "{id} is not a flag of lenet train"
            );
        }
    }
}
