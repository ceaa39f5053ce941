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
use crate::{model_file, outputs, plot};

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

/// The training state file that goes with the weights file `weights`, next to it:
/// `NAME.safetensors` → `NAME.state.safetensors`; any other name gets `.state.safetensors`
/// appended whole (`w.bin` → `w.bin.state.safetensors`), so that `w.safetensors` and `w.bin`
/// keep states of their own. Built from the name's bytes, so names that are not UTF-8 stay
/// apart. (`w` and `w.safetensors` still share one: the state records its weights' name,
/// [`WEIGHTS_KEY`], and [`check_outputs`] refuses to replace another name's state.)
pub fn state_path(weights: &Path) -> PathBuf {
    let stem = match weights.extension() {
        Some(ext) if ext == "safetensors" => weights.file_stem(),
        _ => weights.file_name(),
    };
    let mut name = stem.unwrap_or_default().to_os_string();
    name.push(".state.safetensors");
    weights.with_file_name(name)
}

/// Metadata key, in both files of a saved pair, of the weights' file name.
pub const WEIGHTS_KEY: &str = "lenet_weights";

/// Metadata key, in both files of a saved pair, of the run that saved them: a new run draws
/// one, a resumed run keeps its state's. Resume refuses weights saved by another run.
pub const RUN_ID_KEY: &str = "lenet_run_id";

/// The file name of `weights` as recorded under [`WEIGHTS_KEY`] (bytes that are not UTF-8
/// escaped, so that different names stay different).
fn weights_name(weights: &Path) -> String {
    let name = weights.file_name().unwrap_or_default();
    match name.to_str() {
        Some(s) => s.to_string(),
        None => name.as_encoded_bytes().escape_ascii().to_string(),
    }
}

fn train(args: &TrainArgs) -> Result<()> {
    // The run first: a bad resume file or output path fails before the data is read.
    let (mut trainer, settings, run_id, out) = start(args)?;
    check_outputs(args)?;
    // Held to the end of the run: a second run saving to the same name is refused.
    let _lock = match &args.save {
        Some(p) => Some(outputs::lock("--save", p)?),
        None => None,
    };
    crate::limits::check_batch_memory(trainer.config().batch_size)?;
    let kind = settings.dataset;
    let dataset = data::load(kind, args.data.data_dir.as_deref())?;
    let all_train = SplitSource(&dataset.train);
    let test = SplitSource(&dataset.test);
    let (train_set, val_set) = split(all_train, &settings, trainer.config().seed)?;

    let mut run = Run::new(args, settings, run_id, &trainer, out)?;
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
/// Every value is checked, by [`RunSettings::new`], whether it comes from flags or from a file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RecordedRun")]
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

/// [`RunSettings`] as a file holds them, before they are checked.
#[derive(Deserialize)]
struct RecordedRun {
    #[serde(with = "dataset_name")]
    dataset: DatasetKind,
    limit: Option<usize>,
    val_split: f64,
}

impl TryFrom<RecordedRun> for RunSettings {
    type Error = String;
    fn try_from(r: RecordedRun) -> Result<Self, String> {
        RunSettings::new(r.dataset, r.limit, r.val_split)
    }
}

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
    /// The settings, each value checked: the one constructor for flags and files alike.
    pub fn new(dataset: DatasetKind, limit: Option<usize>, val_split: f64) -> Result<Self, String> {
        Ok(RunSettings {
            dataset,
            limit: limit.map(Self::check_limit).transpose()?,
            val_split: Self::check_val_split(val_split)?,
        })
    }

    /// `limit` if it keeps at least one image.
    pub fn check_limit(limit: usize) -> Result<usize, String> {
        match limit {
            0 => Err("limit 0 leaves no image: must be at least 1".into()),
            n => Ok(n),
        }
    }

    /// `val_split` if it is a fraction in [0, 1).
    pub fn check_val_split(val_split: f64) -> Result<f64, String> {
        if (0.0..1.0).contains(&val_split) {
            Ok(val_split)
        } else {
            Err(format!("val_split {val_split} is outside [0, 1)"))
        }
    }

    /// The settings the flags give (which clap has checked with the same functions).
    pub fn of(args: &TrainArgs) -> Self {
        let dataset = data::kind(args.data.dataset.unwrap_or(crate::args::DatasetArg::Mnist));
        RunSettings::new(dataset, args.limit, args.val_split).expect("clap checked the flags")
    }
}

/// A new trainer with a new run id, or the resumed one with its recorded settings and run id
/// (see [`resume`]).
fn start(args: &TrainArgs) -> Result<(Trainer, RunSettings, String, Deferred)> {
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

/// Loads a training state and its run id. The run keeps every setting it was started with: a
/// flag given with another value is refused, naming it (only `--epochs` may change, and only
/// to more than the epochs done); `--dataset`, `--limit` and `--val-split` default to the
/// recorded ones.
fn resume(args: &TrainArgs, path: &Path) -> Result<(Trainer, RunSettings, String)> {
    let mut trainer = Trainer::load_training_state(path)
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
    let metadata = model_file::metadata(path).unwrap_or_default();
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
    let Some(meta) = model_file::metadata(weights) else {
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

/// Fails now rather than after the first epoch if an output cannot be written (see
/// [`outputs::check_writable`]), if two outputs are one file, if an output is the `--resume`
/// file (except the state of `--save`, which a resumed run continues), or if the state file
/// belongs to weights of another name.
fn check_outputs(args: &TrainArgs) -> Result<()> {
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
    let owner = model_file::metadata(state).and_then(|m| m.get(WEIGHTS_KEY).cloned());
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

/// The training loop's observer: the progress bar, and after each epoch the saves, the
/// metrics line, the plot and the epoch line, in that order (an epoch line on stdout means
/// the epoch is saved). An error is kept for [`train`] to report and stops training.
struct Run<'a> {
    args: &'a TrainArgs,
    settings: RunSettings,
    run_id: String,
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
        run_id: String,
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
            run_id,
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
            save(trainer, p, &self.settings, &self.run_id)?;
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
/// [`Trainer::save_with_weights`]), both tagged with the dataset, the [`RunSettings`], the
/// weights' name and the run id.
fn save(trainer: &Trainer, path: &Path, settings: &RunSettings, run_id: &str) -> Result<()> {
    let state = state_path(path);
    let run = serde_json::to_string(settings).expect("settings serialise");
    let extra: HashMap<String, String> = [
        model_file::dataset_entry(settings.dataset),
        (RUN_KEY.to_string(), run),
        (WEIGHTS_KEY.to_string(), weights_name(path)),
        (RUN_ID_KEY.to_string(), run_id.to_string()),
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

    /// Weights of different names get states of their own: another extension, or bytes that
    /// are not UTF-8 (which a lossy conversion would merge into one U+FFFD name).
    #[cfg(unix)]
    #[test]
    fn different_weights_names_get_different_states() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let (a, b) = (
            Path::new(OsStr::from_bytes(b"/x/w\xff.safetensors")),
            Path::new(OsStr::from_bytes(b"/x/w\xfe.safetensors")),
        );
        assert_ne!(state_path(a), state_path(b));
        assert_eq!(
            state_path(a).as_os_str().as_bytes(),
            b"/x/w\xff.state.safetensors"
        );
        assert_ne!(
            state_path(Path::new("model.safetensors")),
            state_path(Path::new("model.bin"))
        );
        assert_eq!(
            state_path(Path::new("model.bin")),
            Path::new("model.bin.state.safetensors")
        );
        assert_ne!(weights_name(a), weights_name(b));
    }

    #[test]
    fn thread_pool_has_the_asked_size() {
        assert_eq!(
            with_threads(Some(3), || Ok(rayon::current_num_threads())).unwrap(),
            3
        );
    }
}
