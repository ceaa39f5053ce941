//! What `lenet train` prints around the epoch lines: the first line (model, data, settings) and
//! the last ones (time, accuracy, best epoch, where the weights are).

use std::time::Instant;

use mnist::DatasetKind;
use nn::{BatchSource, Subset, TrainConfig, Trainer};

use super::record::state_path;
use crate::args::TrainArgs;
use crate::data::SplitSource;
use crate::out::Deferred;

/// The first line: model, data and settings.
pub(super) fn header(
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
        c.schedule.describe(),
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

/// The last lines: time, final accuracy, the best validation epoch and where the weights are.
pub(super) fn summary(trainer: &Trainer, args: &TrainArgs, started: Instant, out: &mut Deferred) {
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
