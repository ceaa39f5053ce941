//! `lenet train`: check the outputs, build or resume a [`Trainer`], load the data, and run
//! [`Trainer::fit`] with an observer that, after each epoch, saves the weights and the state,
//! appends the metrics, redraws the plot and prints the epoch line (in that order).
//!
//! Standard output never stops training: if it fails (a closed pipe, a full disk), the run
//! goes on to the end, saving every epoch, and the failure is reported when it is done (a
//! closed pipe quietly, see [`crate::out`]).
//!
//! This file holds the run and its observer; the rest, by concern:
//! - [`threads`]: the rayon pool a run works inside ([`with_threads`]);
//! - [`flags`]: flags → [`nn::TrainConfig`] ([`config`]), [`RunSettings`] and the data split
//!   ([`split`]);
//! - [`record`]: the run record (state file name, metadata keys, [`RunSettings`], saving);
//! - [`resume`]: `--resume` reconciled with the flags (the one table of recorded flags);
//! - [`checks`]: the output checks made before any data is read;
//! - [`print`]: the first and last lines.

mod checks;
mod flags;
mod print;
mod record;
mod resume;
mod threads;

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::{Context, Result};
use nn::{BatchSource, EpochMetrics, TrainObserver, Trainer};

pub use flags::{config, split};
pub use record::{RunSettings, RUN_ID_KEY, RUN_KEY, WEIGHTS_KEY};
pub use threads::with_threads;

use checks::check_outputs;
use print::{header, summary};
use record::save;
use resume::start;

use crate::args::TrainArgs;
use crate::data::{self, SplitSource};
use crate::metrics::MetricsWriter;
use crate::out::Deferred;
use crate::report::{epoch_line, Progress};
use crate::{outputs, plot};

/// Runs `lenet train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    with_threads(args.threads, || train(args))
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
