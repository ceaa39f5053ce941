//! From `lenet train`'s flags to what a run needs: the [`TrainConfig`], the [`RunSettings`]
//! and the training and validation sets those settings draw.

use anyhow::Result;
use mnist::DatasetKind;
use nn::{AugmentConfig, BatchSource, LrSchedule, Subset, TrainConfig};

use super::RunSettings;
use crate::args::TrainArgs;
use crate::data::SplitSource;

/// The training settings the flags describe.
pub fn config(args: &TrainArgs) -> TrainConfig {
    let mut c = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        nesterov: args.nesterov(),
        seed: args.seed,
        early_stopping: args.early_stopping,
        ..TrainConfig::default()
    };
    c.schedule = match args.schedule {
        LrSchedule::Step { .. } => LrSchedule::Step {
            every_epochs: args.step_size,
            gamma: args.gamma,
        },
        named => named,
    };
    c.model.activation = args.activation;
    c.model.pooling = args.pool;
    c.augment = args.augment.then(AugmentConfig::default);
    c
}

impl RunSettings {
    /// The settings the flags give (which clap has checked with the same functions).
    pub fn of(args: &TrainArgs) -> Self {
        let dataset = args.data.dataset.unwrap_or(DatasetKind::Mnist);
        RunSettings::new(dataset, args.limit, args.val_split).expect("clap checked the flags")
    }
}

/// The training and validation sets: --limit keeps the first N images; --val-split then holds
/// out a random part of them, drawn from the run's seed (the saved one when resuming, so the
/// split is the same again).
pub fn split<'a>(
    all_train: SplitSource<'a>,
    settings: &RunSettings,
    seed: u64,
) -> Result<(Subset<SplitSource<'a>>, Option<Subset<SplitSource<'a>>>)> {
    let n = settings
        .limit
        .map_or(all_train.len(), |l| l.min(all_train.len()));
    if settings.val_split == 0.0 {
        return Ok((Subset::new(all_train, (0..n).collect()), None));
    }
    let (t, v) = nn::split_indices(n, settings.val_split, seed);
    anyhow::ensure!(
        !v.is_empty() && !t.is_empty(),
        "--val-split {} of {n} training images leaves {} for validation and {} for training",
        settings.val_split,
        v.len(),
        t.len()
    );
    Ok((Subset::new(all_train, t), Some(Subset::new(all_train, v))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn train_args(flags: &[&str]) -> TrainArgs {
        let argv = ["lenet", "train"].iter().chain(flags).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Train(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_flags_give_the_default_config() {
        assert_eq!(config(&train_args(&[])), TrainConfig::default());
    }

    #[test]
    fn flags_reach_the_config() {
        let c = config(&train_args(&[
            "--schedule",
            "step",
            "--step-size",
            "4",
            "--gamma",
            "0.5",
            "--augment",
            "--pool",
            "max",
            "--activation",
            "tanh",
            "--lr",
            "0.01",
            "--epochs",
            "7",
        ]));
        assert_eq!(
            c.schedule,
            LrSchedule::Step {
                every_epochs: 4,
                gamma: 0.5
            }
        );
        assert_eq!(c.augment, Some(AugmentConfig::default()));
        assert_eq!(c.model.pooling, nn::PoolKind::Max);
        assert_eq!(c.model.activation, nn::ActivationKind::Tanh);
        assert_eq!((c.lr, c.epochs), (0.01, 7));
        assert!(c.validate().is_ok());
    }
}
