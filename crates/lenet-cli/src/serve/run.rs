//! The jobs of the page, each on a thread of its own, off the request threads: a training run
//! ([`train`]: `lenet train`'s own trainer, settings, data and thread pool, with an observer
//! that publishes events instead of printing) and a data download ([`download`]).
//!
//! The observer adds no allocation per batch to the training loop: it adds up the losses, and
//! at most every [`EVENT_INTERVAL`] copies the weights into the page's copy (into buffers
//! allocated once) and publishes a progress event.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use mnist::{DatasetKind, DownloadOptions};
use nn::{BatchSource, FitOutcome, TrainError, TrainObserver, Trainer};
use serde_json::{json, Value};

use super::api::ApiError;
use super::training::{Live, Slot, Training};
use crate::args::TrainArgs;
use crate::data::{self, SplitSource};
use crate::train::{self, RunSettings};

/// Least time between two progress events of a run (so at most about 10 a second).
pub const EVENT_INTERVAL: Duration = Duration::from_millis(100);

/// A training run about to start: its slot, its stop flag, its flags and its data.
pub struct Job {
    /// The job slot, held until the run ends.
    pub slot: Slot,
    /// Set by `POST /api/train/stop`.
    pub stop: Arc<AtomicBool>,
    /// The run's `lenet train` flags.
    pub args: TrainArgs,
    /// Its dataset.
    pub kind: DatasetKind,
    /// Where the dataset's files are.
    pub dir: PathBuf,
}

/// The trainer `lenet train` starts with these flags, after its own checks (each refusal a 400
/// naming the field): the batch against the memory, then every setting.
pub fn new_trainer(args: &TrainArgs) -> Result<Trainer, ApiError> {
    let bad = |field: &str, why: String| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("\"{field}\": {why}"))
    };
    args.validate().map_err(|why| bad("settings", why))?;
    crate::limits::check_batch_memory(args.batch_size)
        .map_err(|e| bad("batch_size", e.to_string()))?;
    Trainer::new(train::config(args)).map_err(|e| match e {
        TrainError::InvalidConfig { field, message } => bad(field, message),
        other => bad("settings", other.to_string()),
    })
}

/// Runs `job` on a new thread named `name`.
pub fn spawn(name: &str, job: impl FnOnce() + Send + 'static) -> Result<(), ApiError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(job)
        .map(drop)
        .map_err(|e| {
            let message = format!("cannot start a thread for the job: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
        })
}

/// Trains as `lenet train` does with the same flags (the same weights, bit for bit), in a
/// worker pool of its own; ends with a `done`, `stopped` or `error` event.
pub fn train(job: Job, mut trainer: Trainer) {
    let Job {
        slot,
        stop,
        args,
        kind,
        dir,
    } = job;
    let training = slot.training();
    let model = trainer.model().clone();
    *training.live() = Some(Live {
        model,
        dataset: kind,
    });
    let started = Instant::now();
    let result = train::with_threads(args.threads, || {
        let dataset = data::read(kind, &dir)?;
        let settings = RunSettings::of(&args);
        let seed = trainer.config().seed;
        let (train_set, val) = train::split(SplitSource(&dataset.train), &settings, seed)?;
        let mut observer = PageRun::new(training, &stop, train_set.len(), args.batch_size);
        let val = val.as_ref().map(|v| v as &dyn BatchSource);
        let test = SplitSource(&dataset.test);
        Ok(trainer.fit(&train_set, &test, val, &mut observer))
    });
    copy_weights(training, trainer.final_model(), true);
    let event = match result {
        Ok(Ok(outcome)) => finished(&trainer, outcome, &stop, started),
        Ok(Err(TrainError::Stopped { epoch, batch })) => {
            json!({"type": "stopped", "epoch": epoch, "batch": batch})
        }
        Ok(Err(e)) => json!({"type": "error", "message": e.to_string()}),
        Err(e) => json!({"type": "error", "message": format!("{e:#}")}),
    };
    slot.finish(event);
}

/// The last event of a run that [`Trainer::fit`] ended: `done`, or `stopped` after an epoch.
fn finished(trainer: &Trainer, outcome: FitOutcome, stop: &AtomicBool, started: Instant) -> Value {
    if stop.load(Ordering::Relaxed) && !trainer.is_finished() {
        return json!({"type": "stopped", "epoch": outcome.epochs_done, "batch": null});
    }
    let accuracy = trainer.history().last().map(|m| m.test_accuracy);
    json!({
        "type": "done", "epochs": outcome.epochs_done, "test_accuracy": accuracy,
        "seconds": started.elapsed().as_secs_f64(),
    })
}

/// Copies `model`'s weights into the page's copy; unless `wait`, only if nobody is reading it
/// (the run never waits for a prediction).
fn copy_weights(training: &Training, model: &nn::LeNet5, wait: bool) {
    let mut live = if wait {
        Some(training.live())
    } else {
        training.try_live()
    };
    if let Some(Some(live)) = live.as_deref_mut().map(|l| l.as_mut()) {
        live.model.copy_params_from(model);
    }
}

/// The observer of a page's run: progress events, the epoch events, the stop flag.
struct PageRun<'a> {
    training: &'a Training,
    stop: &'a AtomicBool,
    images: usize,
    batch_size: usize,
    epoch: usize,
    batch: usize,
    batches: usize,
    epoch_start: Instant,
    last_event: Option<Instant>,
    /// Losses of the batches since the last progress event.
    loss_sum: f64,
    loss_count: usize,
}

impl<'a> PageRun<'a> {
    fn new(training: &'a Training, stop: &'a AtomicBool, images: usize, batch_size: usize) -> Self {
        PageRun {
            training,
            stop,
            images,
            batch_size,
            epoch: 0,
            batch: 0,
            batches: 0,
            epoch_start: Instant::now(),
            last_event: None,
            loss_sum: 0.0,
            loss_count: 0,
        }
    }

    /// The progress event: the mean loss of the batches since the last one, and the speed of
    /// this epoch so far.
    fn progress(&mut self) {
        let done = (self.batch * self.batch_size).min(self.images);
        let seconds = self.epoch_start.elapsed().as_secs_f64().max(1e-9);
        let loss = self.loss_sum / self.loss_count.max(1) as f64;
        self.training.publish(json!({
            "type": "progress", "epoch": self.epoch, "batch": self.batch,
            "batches": self.batches, "loss": loss, "images_per_second": done as f64 / seconds,
        }));
        (self.loss_sum, self.loss_count) = (0.0, 0);
        self.last_event = Some(Instant::now());
    }
}

impl TrainObserver for PageRun<'_> {
    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        (self.epoch, self.batches) = (epoch, batches);
        self.epoch_start = Instant::now();
    }

    fn batch_finished(&mut self, _epoch: usize, batch: usize, loss: f32) {
        self.batch = batch;
        self.loss_sum += f64::from(loss);
        self.loss_count += 1;
    }

    fn batch_ended(&mut self, model: &nn::LeNet5) -> ControlFlow<()> {
        if self.stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        let due = self
            .last_event
            .is_none_or(|t| t.elapsed() >= EVENT_INTERVAL);
        if due || self.batch == self.batches {
            copy_weights(self.training, model, false);
            self.progress();
        }
        ControlFlow::Continue(())
    }

    fn epoch_ended(&mut self, trainer: &Trainer) -> ControlFlow<()> {
        let m = trainer.history().last().expect("an epoch has ended");
        self.training.publish(json!({
            "type": "epoch", "epoch": m.epoch, "epochs": trainer.config().epochs,
            "train_loss": m.train_loss, "train_accuracy": m.train_accuracy,
            "test_loss": m.test_loss, "test_accuracy": m.test_accuracy, "seconds": m.seconds,
            "confusion": trainer.test_confusion(),
        }));
        copy_weights(self.training, trainer.final_model(), true);
        if self.stop.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Downloads the files of `kind` missing from `dir` (verified against their SHA-256), one after
/// the other, with a `download` event before each; ends with `downloaded` or `error`.
pub fn download(slot: Slot, kind: DatasetKind, dir: &Path) {
    let files = kind.files();
    for (i, file) in files.iter().enumerate() {
        slot.training().publish(json!({
            "type": "download", "dataset": kind.dir_name(), "file": file.name,
            "index": i + 1, "files": files.len(),
        }));
        let options = DownloadOptions {
            files: Some(vec![file.clone()]),
            ..DownloadOptions::default().with_progress(false)
        };
        if let Err(e) = mnist::ensure_dataset(kind, dir, &options) {
            return slot.finish(json!({"type": "error", "message": e.to_string()}));
        }
    }
    let dir = dir.display().to_string();
    slot.finish(json!({"type": "downloaded", "dataset": kind.dir_name(), "dir": dir}));
}
