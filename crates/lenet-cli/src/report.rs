//! What `lenet train` shows while it runs: a progress bar over the batches (drawn on stderr only
//! when stderr is a terminal) and one line per epoch on stdout.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use nn::{EpochMetrics, TrainObserver};

/// A bar over one epoch's batches. `ProgressDrawTarget::stderr` draws nothing when stderr is not a
/// terminal (a pipe, a file, CI logs), so redirected output stays clean.
pub fn batch_bar(batches: u64, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(batches), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        // `wide_bar` takes what the terminal width leaves, so the line never wraps.
        "{prefix} [{wide_bar:.cyan/blue}] {pos}/{len} batches {msg:12} eta {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

/// The training loop's observer: one progress bar per epoch, advanced batch by batch.
#[derive(Debug)]
pub struct Progress {
    epochs: usize,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Bars for a run of `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Self { epochs, bar: None }
    }
}

impl TrainObserver for Progress {
    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        self.bar = Some(batch_bar(batches as u64, epoch, self.epochs));
    }

    fn batch_finished(&mut self, _epoch: usize, batch: usize, loss: f32) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            // The message is a formatted string: refresh it now and then, and only when drawn.
            if batch % 25 == 1 && !bar.is_hidden() {
                bar.set_message(format!("loss {loss:.4}"));
            }
        }
    }

    fn evaluation_started(&mut self, _epoch: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message("evaluating");
        }
    }

    fn epoch_finished(&mut self, _metrics: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The line printed after each epoch, e.g.
/// `epoch  3/10  train_loss 0.0521  test_acc 98.87%  lr 0.04523  time 2.31s`
/// (`val_acc` is added with a validation split; `lr` is the rate of the epoch's first batch).
pub fn epoch_line(r: &EpochMetrics, epochs: usize) -> String {
    let width = epochs.to_string().len();
    let mut line = format!(
        "epoch {:>width$}/{epochs}  train_loss {:.4}  test_acc {:.2}%",
        r.epoch,
        r.train_loss,
        100.0 * r.test_accuracy
    );
    if let Some(v) = r.val_accuracy {
        line += &format!("  val_acc {:.2}%", 100.0 * v);
    }
    line += &format!("  lr {:.5}", r.lr);
    line += &format!("  time {:.2}s", r.seconds);
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EpochMetrics {
        EpochMetrics {
            lr: 0.045234,
            epoch: 3,
            train_loss: 0.05213,
            train_accuracy: 0.98,
            test_loss: 0.04,
            test_accuracy: 0.98874,
            seconds: 2.3141,
            val_loss: None,
            val_accuracy: None,
        }
    }

    #[test]
    fn the_documented_line() {
        assert_eq!(
            epoch_line(&record(), 10),
            "epoch  3/10  train_loss 0.0521  test_acc 98.87%  lr 0.04523  time 2.31s"
        );
        assert_eq!(
            epoch_line(&record(), 5),
            "epoch 3/5  train_loss 0.0521  test_acc 98.87%  lr 0.04523  time 2.31s"
        );
    }

    #[test]
    fn validation_accuracy() {
        let mut r = record();
        r.val_accuracy = Some(0.9912);
        assert_eq!(
            epoch_line(&r, 10),
            "epoch  3/10  train_loss 0.0521  test_acc 98.87%  val_acc 99.12%  lr 0.04523  time 2.31s"
        );
    }

    #[test]
    fn bar_counts_batches() {
        let bar = batch_bar(469, 1, 10);
        bar.inc(2);
        assert_eq!(bar.position(), 2);
        assert_eq!(bar.length(), Some(469));
        bar.finish_and_clear();
    }
}
