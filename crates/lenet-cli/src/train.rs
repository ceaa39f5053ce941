//! `lenet train`: check the outputs, build or resume a [`Trainer`], load the data, and run
//! [`Trainer::fit`] with an observer that, after each epoch, saves the weights and the state,
//! appends the metrics, redraws the plot and prints the epoch line (in that order).
//!
//! Standard output never stops training: if it fails (a closed pipe, a full disk), the run
//! goes on to the end, saving every epoch, and the failure is reported when it is done (a
//! closed pipe quietly, see [`crate::out`]).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use mnist::DatasetKind;
use nn::{
    AugmentConfig, BatchSource, EpochMetrics, LrSchedule, Subset, TrainConfig, TrainObserver,
    Trainer,
};
use serde::{Deserialize, Serialize};

use crate::args::{ScheduleArg, TrainArgs};
use crate::data::{self, SplitSource};
use crate::metrics::MetricsWriter;
use crate::out::Deferred;
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
    c.model.activation = args.activation;
    c.model.pooling = args.pool;
    c.augment = args.augment.then(AugmentConfig::default);
    c
}

/// `NAME.state.safetensors` next to `NAME.safetensors`: the full training state for --resume.
pub fn state_path(weights: &Path) -> PathBuf {
    let stem = weights.file_stem().unwrap_or_default().to_string_lossy();
    weights.with_file_name(format!("{stem}.state.safetensors"))
}

fn train(args: &TrainArgs) -> Result<()> {
    // The run first: a bad resume file or output path fails before the data is read.
    let (mut trainer, settings, out) = start(args)?;
    check_outputs(args)?;
    crate::limits::check_batch_memory(trainer.config().batch_size)?;
    let kind = settings.dataset;
    let dataset = data::load(kind, args.data.data_dir.as_deref())?;
    let all_train = SplitSource(&dataset.train);
    let test = SplitSource(&dataset.test);
    let (train_set, val_set) = split(all_train, &settings, trainer.config().seed)?;

    let mut run = Run::new(args, settings, &trainer, out)?;
    run.out.line(format_args!(
        "{}",
        header(
            trainer.config(),
            kind,
            &train_set,
            val_set.as_ref(),
            test.len()
        )
    ));
    let started = Instant::now();
    let val = val_set.as_ref().map(|v| v as &dyn BatchSource);
    trainer.fit(&train_set, &test, val, &mut run)?;
    if let Some(err) = run.error.take() {
        run.out.finish().ok();
        return Err(err);
    }
    summary(&trainer, args, started, &mut run.out);
    Ok(run.out.finish()?)
}

/// The settings of a run that are not in nn's [`TrainConfig`]: which data it trains on. They
/// are recorded in the training state (key [`RUN_KEY`]) so that `--resume` uses the same data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// The dataset.
    #[serde(with = "dataset_name")]
    pub dataset: DatasetKind,
    /// `--limit`.
    pub limit: Option<usize>,
    /// `--val-split`.
    pub val_split: f64,
}

/// Metadata key of the [`RunSettings`] (JSON) in a training state file.
pub const RUN_KEY: &str = "lenet_run";

mod dataset_name {
    use mnist::DatasetKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &DatasetKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.dir_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DatasetKind, D::Error> {
        let name = String::deserialize(d)?;
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.dir_name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown dataset {name:?}")))
    }
}

impl RunSettings {
    /// The settings the flags give.
    fn of(args: &TrainArgs) -> Self {
        RunSettings {
            dataset: data::kind(args.data.dataset.unwrap_or(crate::args::DatasetArg::Mnist)),
            limit: args.limit,
            val_split: args.val_split,
        }
    }
}

/// A new trainer, or the resumed one with its recorded settings (see [`resume`]).
fn start(args: &TrainArgs) -> Result<(Trainer, RunSettings, Deferred)> {
    let mut out = Deferred::default();
    match &args.resume {
        Some(path) => {
            let (trainer, settings) = resume(args, path)?;
            out.line(format_args!(
                "resuming {} after epoch {} of {}",
                path.display(),
                trainer.epochs_done(),
                args.epochs
            ));
            Ok((trainer, settings, out))
        }
        None => {
            let trainer = Trainer::new(config(args)).context("invalid training settings")?;
            Ok((trainer, RunSettings::of(args), out))
        }
    }
}

/// Flags that a resumed run takes from its state, with the [`TrainConfig`] value each sets.
const RECORDED_FLAGS: [&str; 13] = [
    "lr",
    "batch_size",
    "momentum",
    "weight_decay",
    "nesterov",
    "schedule",
    "step_size",
    "gamma",
    "activation",
    "pool",
    "seed",
    "augment",
    "early_stopping",
];

/// The value of the setting flag `id` sets, as text to compare and print.
fn setting(c: &TrainConfig, id: &str) -> String {
    match id {
        "lr" => c.lr.to_string(),
        "batch_size" => c.batch_size.to_string(),
        "momentum" => c.momentum.to_string(),
        "weight_decay" => c.weight_decay.to_string(),
        "nesterov" => c.nesterov.to_string(),
        "activation" => c.model.activation.name().to_string(),
        "pool" => c.model.pooling.name().to_string(),
        "seed" => c.seed.to_string(),
        "augment" => c.augment.is_some().to_string(),
        "early_stopping" => format!("{:?}", c.early_stopping),
        _ => schedule_name(&c.schedule),
    }
}

/// `--flag-name` of a clap argument id.
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// Loads a training state. The run keeps every setting it was started with: a flag given with
/// another value is refused, naming it (only `--epochs` may change); `--dataset`, `--limit`
/// and `--val-split` default to the recorded ones.
fn resume(args: &TrainArgs, path: &Path) -> Result<(Trainer, RunSettings)> {
    let mut trainer = Trainer::load_training_state(path)
        .with_context(|| format!("cannot resume from {}", path.display()))?;
    let ours = config(args);
    for id in RECORDED_FLAGS.iter().filter(|id| args.given(id)) {
        let (given, recorded) = (setting(&ours, id), setting(trainer.config(), id));
        anyhow::ensure!(
            given == recorded,
            "{} {given} differs from the resumed run's {recorded} ({}): a resumed run keeps \
             its settings, only --epochs may change",
            flag(id),
            path.display()
        );
    }
    let recorded = model_file::metadata(path)
        .and_then(|m| serde_json::from_str::<RunSettings>(m.get(RUN_KEY)?).ok());
    let settings = match recorded {
        Some(r) => check_run_settings(args, r, path)?,
        None => RunSettings::of(args),
    };
    if args.save.is_none() {
        crate::errln!("warning: --resume without --save: the continued run will not be saved");
    }
    check_saved_pair(args, &trainer);
    trainer.set_epochs(args.epochs);
    Ok((trainer, settings))
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

/// Explains a weights file that does not belong to the state being resumed (a crash between
/// the two renames of a save): the state is complete, and the weights are rewritten after the
/// next epoch.
fn check_saved_pair(args: &TrainArgs, trainer: &Trainer) {
    let Some(weights) = &args.save else { return };
    let Some(epochs) = model_file::recorded_epochs(weights) else {
        return;
    };
    if epochs != trainer.epochs_done() {
        crate::errln!(
            "warning: {} holds the weights of epoch {epochs}, the training state those of epoch \
             {} (a save was interrupted): resuming from the state; the weights are rewritten \
             after the next epoch",
            weights.display(),
            trainer.epochs_done()
        );
    }
}

/// The training and validation sets: --limit keeps the first N images; --val-split then holds
/// out a random part of them, drawn from the run's seed (the saved one when resuming, so the
/// split is the same again).
fn split<'a>(
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

/// The first line: model, data and settings.
fn header(
    c: &TrainConfig,
    kind: DatasetKind,
    train: &dyn BatchSource,
    val: Option<&Subset<SplitSource<'_>>>,
    test: usize,
) -> String {
    format!(
        "LeNet-5 ({}, {} pooling) on {}: {} training, {} validation, {} test images; \
         batch {}, lr {} ({}), momentum {}{}, weight decay {}, seed {}{}, {}, {} kernels",
        c.model.activation.name(),
        c.model.pooling.name(),
        kind.display_name(),
        train.len(),
        val.map_or(0, |v| v.len()),
        test,
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
        threads(rayon::current_num_threads()),
        tensor::Tier::active().name()
    )
}

/// Fails now rather than after the first epoch if an output cannot be written: its folder
/// does not exist or is not a folder, it exists and is not a regular file (a device, a FIFO:
/// replacing /dev/null is not what anyone wants), or the folder is not writable.
fn check_outputs(args: &TrainArgs) -> Result<()> {
    let state = args.save.as_deref().map(state_path);
    let outputs = [
        ("--save", args.save.as_deref()),
        ("--save", state.as_deref()),
        ("--plot", args.plot.as_deref()),
        ("--metrics", args.metrics.as_deref()),
    ];
    for (flag, path) in outputs {
        if let Some(p) = path {
            check_output(flag, p)?;
        }
    }
    Ok(())
}

fn check_output(flag: &str, p: &Path) -> Result<()> {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "{flag} {}: the folder {} does not exist",
                p.display(),
                dir.display()
            )
        }
        Err(e) => anyhow::bail!("{flag} {}: cannot use {}: {e}", p.display(), dir.display()),
        Ok(m) if !m.is_dir() => {
            anyhow::bail!("{flag} {}: {} is not a folder", p.display(), dir.display())
        }
        Ok(_) => {}
    }
    if let Some(kind) = std::fs::metadata(p)
        .ok()
        .and_then(|m| nn::checkpoint::not_regular(&m))
    {
        anyhow::bail!(
            "{flag} {}: exists and is not a regular file ({kind}): refusing to replace it",
            p.display()
        );
    }
    let probe = dir.join(format!(".lenet-write-test-{}", std::process::id()));
    std::fs::File::create(&probe).with_context(|| {
        format!(
            "{flag} {}: cannot write in the folder {}",
            p.display(),
            dir.display()
        )
    })?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// The training loop's observer: the progress bar, and after each epoch the saves, the
/// metrics line, the plot and the epoch line, in that order (an epoch line on stdout means
/// the epoch is saved). An error is kept for [`train`] to report and stops training.
struct Run<'a> {
    args: &'a TrainArgs,
    settings: RunSettings,
    title: String,
    progress: Progress,
    metrics: Option<MetricsWriter>,
    out: Deferred,
    error: Option<anyhow::Error>,
}

impl<'a> Run<'a> {
    fn new(
        args: &'a TrainArgs,
        settings: RunSettings,
        trainer: &Trainer,
        out: Deferred,
    ) -> Result<Self> {
        let metrics = match &args.metrics {
            Some(p) => Some(
                MetricsWriter::create(p, trainer.history())
                    .with_context(|| format!("cannot open the metrics file {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Run {
            args,
            settings,
            title: format!("LeNet-5 on {}", settings.dataset.display_name()),
            progress: Progress::new(args.epochs),
            metrics,
            out,
            error: None,
        })
    }

    fn after_epoch(&mut self, trainer: &Trainer) -> Result<()> {
        let m = trainer.history().last().expect("an epoch has ended");
        if let Some(p) = &self.args.save {
            save(trainer, p, &self.settings)?;
        }
        if let Some(w) = &mut self.metrics {
            w.write(m).context("cannot write the metrics file")?;
        }
        if let Some(p) = &self.args.plot {
            plot::write_plot(p, trainer.history(), &self.title)
                .with_context(|| format!("cannot write the plot {}", p.display()))?;
        }
        self.out
            .line(format_args!("{}", epoch_line(m, self.args.epochs)));
        Ok(())
    }
}

impl TrainObserver for Run<'_> {
    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        self.progress.epoch_started(epoch, batches);
    }

    fn batch_finished(&mut self, epoch: usize, batch: usize, loss: f32) {
        self.progress.batch_finished(epoch, batch, loss);
    }

    fn evaluation_started(&mut self, epoch: usize) {
        self.progress.evaluation_started(epoch);
    }

    fn epoch_finished(&mut self, metrics: &EpochMetrics) {
        self.progress.epoch_finished(metrics);
    }

    fn epoch_ended(&mut self, trainer: &Trainer) -> ControlFlow<()> {
        match self.after_epoch(trainer) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

/// The last lines: time, final accuracy, the best validation epoch and where the weights are.
fn summary(trainer: &Trainer, args: &TrainArgs, started: Instant, out: &mut Deferred) {
    let last = trainer
        .history()
        .last()
        .map_or(f64::NAN, |m| m.test_accuracy);
    out.line(format_args!(
        "done: {} epochs in {:.1}s{}, final test accuracy {:.2}%",
        trainer.epochs_done(),
        started.elapsed().as_secs_f64(),
        if trainer.stopped_early() {
            " (stopped early)"
        } else {
            ""
        },
        100.0 * last
    ));
    if let Some(best) = trainer.best() {
        out.line(format_args!(
            "best validation epoch {}: val_loss {:.4}, val_acc {:.2}%",
            best.epoch,
            best.val_loss,
            100.0 * best.val_accuracy
        ));
    }
    if let Some(p) = &args.save {
        out.line(format_args!(
            "saved {} weights to {} (training state: {})",
            if trainer.best().is_some() {
                "the best validation epoch's"
            } else {
                "the final"
            },
            p.display(),
            state_path(p).display()
        ));
    }
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

/// Writes the weights worth keeping and the full training state as one pair (see
/// [`Trainer::save_with_weights`]), both tagged with the dataset, the state also with the
/// [`RunSettings`].
fn save(trainer: &Trainer, path: &Path, settings: &RunSettings) -> Result<()> {
    let state = state_path(path);
    let run = serde_json::to_string(settings).expect("settings serialise");
    let extra: HashMap<String, String> = [
        model_file::dataset_entry(settings.dataset),
        (RUN_KEY.to_string(), run),
    ]
    .into();
    trainer
        .save_with_weights(path, &state, extra)
        .with_context(|| format!("cannot save the weights to {}", path.display()))
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
