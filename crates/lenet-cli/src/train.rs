//! `lenet train`: load the data, build or resume a [`Trainer`], run it epoch by epoch, and after
//! each epoch print a line, append the metrics, redraw the plot and save the weights.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use nn::{AugmentConfig, BatchSource, LrSchedule, Subset, TrainConfig, Trainer};

use crate::args::{ScheduleArg, TrainArgs};
use crate::data::{self, SplitSource};
use crate::metrics::MetricsWriter;
use crate::report::{epoch_line, Progress};
use crate::{model_file, plot};

/// Runs `lenet train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    with_threads(args.threads, || train(args))
}

/// Runs `f` inside a rayon pool of `threads` workers (the kernels parallelise with rayon); without
/// `--threads`, as many workers as rayon's default (`RAYON_NUM_THREADS`, else one per core).
///
/// Training always runs *inside* a pool, never as a caller from outside one: rayon hands jobs
/// from an outside thread over through a queue that allocates, and the training loop promises
/// no allocation per batch.
pub fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let n = threads.unwrap_or_else(rayon::current_num_threads);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .with_context(|| format!("cannot start {n} worker threads"))?
        .install(f)
}

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
        ScheduleArg::Cosine => LrSchedule::Cosine { min_lr: 0.0 },
        ScheduleArg::Step => LrSchedule::Step {
            every_epochs: args.step_size,
            gamma: args.gamma,
        },
        ScheduleArg::Constant => LrSchedule::Constant,
    };
    c.model.activation = args.activation.kind();
    c.model.pooling = args.pool.kind();
    c.augment = args.augment.then(AugmentConfig::default);
    c
}

/// `NAME.state.safetensors` next to `NAME.safetensors`: the full training state for --resume.
pub fn state_path(weights: &Path) -> PathBuf {
    let stem = weights.file_stem().unwrap_or_default().to_string_lossy();
    weights.with_file_name(format!("{stem}.state.safetensors"))
}

fn train(args: &TrainArgs) -> Result<()> {
    // The run first: a bad resume file fails before the data is read.
    let mut trainer = match &args.resume {
        Some(path) => {
            let mut t = Trainer::load_training_state(path)
                .with_context(|| format!("cannot resume from {}", path.display()))?;
            t.set_epochs(args.epochs);
            println!(
                "resuming {} after epoch {} of {}",
                path.display(),
                t.epochs_done(),
                args.epochs
            );
            t
        }
        None => Trainer::new(config(args)).context("invalid training settings")?,
    };
    let kind = data::kind(args.data.dataset.unwrap_or(crate::args::DatasetArg::Mnist));
    let dataset = data::load(kind, args.data.data_dir.as_deref())?;
    let all_train = SplitSource(&dataset.train);
    let test = SplitSource(&dataset.test);

    // --limit keeps the first N images; --val-split then holds out a random part of them, drawn
    // from the run's seed (the saved one when resuming, so the split is the same again).
    let n = args
        .limit
        .map_or(all_train.len(), |l| l.min(all_train.len()));
    let (train_idx, val_idx) = if args.val_split > 0.0 {
        let (t, v) = nn::split_indices(n, args.val_split, trainer.config().seed);
        anyhow::ensure!(
            !v.is_empty() && !t.is_empty(),
            "--val-split {} of {n} training images leaves {} for validation and {} for training",
            args.val_split,
            v.len(),
            t.len()
        );
        (t, Some(v))
    } else {
        ((0..n).collect(), None)
    };
    let train_set = Subset::new(all_train, train_idx);
    let val_set = val_idx.map(|v| Subset::new(all_train, v));

    let c = trainer.config().clone();
    println!(
        "LeNet-5 ({}, {} pooling) on {}: {} training, {} validation, {} test images; \
         batch {}, lr {} ({}), momentum {}{}, weight decay {}, seed {}{}, {}",
        c.model.activation.name(),
        c.model.pooling.name(),
        kind.display_name(),
        train_set.len(),
        val_set.as_ref().map_or(0, |v| v.len()),
        test.len(),
        c.batch_size,
        c.lr,
        schedule_name(&c.schedule),
        c.momentum,
        if c.nesterov { " (Nesterov)" } else { "" },
        c.weight_decay,
        c.seed,
        if c.augment.is_some() {
            ", augmented"
        } else {
            ""
        },
        threads(rayon::current_num_threads())
    );

    // Fail now rather than after the first epoch if an output folder does not exist.
    for (flag, path) in [("--save", &args.save), ("--plot", &args.plot)] {
        if let Some(p) = path {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            anyhow::ensure!(
                dir.is_dir(),
                "{flag} {}: the folder {} does not exist",
                p.display(),
                dir.display()
            );
        }
    }
    let mut metrics = match &args.metrics {
        Some(p) => Some(
            MetricsWriter::create(p, args.resume.is_some())
                .with_context(|| format!("cannot open the metrics file {}", p.display()))?,
        ),
        None => None,
    };
    let title = format!("LeNet-5 on {}", kind.display_name());
    let mut progress = Progress::new(args.epochs);
    let started = Instant::now();
    while !trainer.is_finished() {
        let val = val_set.as_ref().map(|v| v as &dyn BatchSource);
        let m = trainer.train_epoch(&train_set, &test, val, &mut progress)?;
        println!("{}", epoch_line(&m, args.epochs));
        if let Some(w) = &mut metrics {
            w.write(&m).context("cannot write the metrics file")?;
        }
        if let Some(p) = &args.plot {
            plot::write_plot(p, trainer.history(), &title)
                .with_context(|| format!("cannot write the plot {}", p.display()))?;
        }
        if let Some(p) = &args.save {
            save(&trainer, p, kind)?;
        }
    }

    let last = trainer
        .history()
        .last()
        .map_or(f64::NAN, |m| m.test_accuracy);
    println!(
        "done: {} epochs in {:.1}s{}, final test accuracy {:.2}%",
        trainer.epochs_done(),
        started.elapsed().as_secs_f64(),
        if trainer.stopped_early() {
            " (stopped early)"
        } else {
            ""
        },
        100.0 * last
    );
    if let Some(best) = trainer.best() {
        println!(
            "best validation epoch {}: val_loss {:.4}, val_acc {:.2}%",
            best.epoch,
            best.val_loss,
            100.0 * best.val_accuracy
        );
    }
    if let Some(p) = &args.save {
        println!(
            "saved {} weights to {} (training state: {})",
            if trainer.best().is_some() {
                "the best validation epoch's"
            } else {
                "the final"
            },
            p.display(),
            state_path(p).display()
        );
    }
    Ok(())
}

fn threads(n: usize) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

fn schedule_name(s: &LrSchedule) -> String {
    match s {
        LrSchedule::Constant => "constant".into(),
        LrSchedule::Step {
            every_epochs,
            gamma,
        } => format!("×{gamma} every {every_epochs} epochs"),
        LrSchedule::Cosine { min_lr } => format!("cosine to {min_lr}"),
    }
}

/// Writes the weights worth keeping (tagged with the dataset) and the full training state.
fn save(trainer: &Trainer, path: &Path, kind: DatasetKind) -> Result<()> {
    trainer
        .final_model()
        .save_weights(path)
        .with_context(|| format!("cannot save the weights to {}", path.display()))?;
    model_file::record_dataset(path, kind)?;
    let state = state_path(path);
    trainer
        .save_training_state(&state)
        .with_context(|| format!("cannot save the training state to {}", state.display()))
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

    #[test]
    fn state_file_sits_next_to_the_weights() {
        assert_eq!(
            state_path(Path::new("/x/lenet.safetensors")),
            Path::new("/x/lenet.state.safetensors")
        );
        assert_eq!(state_path(Path::new("w")), Path::new("w.state.safetensors"));
    }

    #[test]
    fn thread_pool_has_the_asked_size() {
        assert_eq!(
            with_threads(Some(3), || Ok(rayon::current_num_threads())).unwrap(),
            3
        );
    }
}
