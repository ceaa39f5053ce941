//! The training loop: a seeded shuffle each epoch, optional augmentation, forward, loss,
//! backward and an SGD step per batch, then evaluation on the test set (and on a validation
//! set, which alone drives early stopping and best-model keeping: the test set never
//! influences training). Each batch's gradient is computed data-parallel, its shards of images
//! through the whole network at once ([`crate::data_parallel`]), and the model takes one step.
//!
//! Every buffer is allocated when the trainer is made or on the first batch; the steady-state
//! batch loop allocates nothing. Same seed (and kernel tier) → bit-identical metrics, on any
//! number of threads.

use crate::augment::{AugmentConfig, Augmenter};
use crate::data::{BatchSource, IMAGE_LEN};
use crate::data_parallel::{Batch, DataParallel};
use crate::evaluate::Evaluator;
use crate::lenet5::{LeNet5, LeNet5Config, NUM_CLASSES};
use crate::metrics::{EpochMetrics, Evaluation};
use crate::schedule::LrSchedule;
use crate::sgd::{Sgd, SgdConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Instant;

/// RNG stream for parameter initialisation (stream 1 is the data order and augmentation).
const INIT_STREAM: u64 = 0;
/// RNG stream for the per-epoch shuffle and the augmentation draws.
const DATA_STREAM: u64 = 1;

/// Largest accepted batch size (training or evaluation).
pub const MAX_BATCH: usize = 1 << 16;

/// Everything that defines a training run. [`TrainConfig::default`] is the tuned default of
/// `lenet train` (see its docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Architecture options.
    pub model: LeNet5Config,
    /// Number of epochs (also the length of the cosine schedule).
    pub epochs: usize,
    /// Training examples per SGD step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Base learning rate, in [`LR_RANGE`](crate::schedule::LR_RANGE).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay (applied to biases too, as PyTorch does).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Seed of parameter initialisation, data order and augmentation.
    pub seed: u64,
    /// Random shifts and rotations of training images, if set.
    pub augment: Option<AugmentConfig>,
    /// Stop after this many epochs without a lower validation loss (needs a validation set).
    pub early_stopping: Option<usize>,
    /// Batch size of evaluation passes (no gradients, so large batches are cheap).
    pub eval_batch_size: usize,
}

impl Default for TrainConfig {
    /// The default of `lenet train`: 10 epochs of batch 64, SGD lr 0.05, Nesterov momentum 0.9,
    /// weight decay 5e-4, cosine annealing to 0 over all batches, seed 1, inputs `p / 255`.
    /// The cosine tail lets the last epoch end at the best accuracy instead of oscillating
    /// around it as a constant rate does.
    fn default() -> Self {
        TrainConfig {
            model: LeNet5Config::default(),
            epochs: 10,
            batch_size: 64,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: true,
            schedule: LrSchedule::Cosine { min_lr: 0.0 },
            seed: 1,
            augment: None,
            early_stopping: None,
            eval_batch_size: 256,
        }
    }
}

impl TrainConfig {
    /// The optimizer settings.
    pub fn sgd(&self) -> SgdConfig {
        SgdConfig {
            lr: self.lr as f32,
            momentum: self.momentum as f32,
            weight_decay: self.weight_decay as f32,
            nesterov: self.nesterov,
        }
    }

    /// Checks every value, naming the first bad one.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &'static str, message: String| {
            Err(TrainError::InvalidConfig { field, message })
        };
        if self.epochs == 0 {
            return bad("epochs", "must be ≥ 1, got 0".into());
        }
        // Upper bounds keep buffer sizes sane even for a config read from a resume file.
        for (field, value) in [
            ("batch_size", self.batch_size),
            ("eval_batch_size", self.eval_batch_size),
        ] {
            if !(1..=MAX_BATCH).contains(&value) {
                return bad(field, format!("must be in 1..={MAX_BATCH}, got {value}"));
            }
        }
        if let Err(why) = self.model.check() {
            return bad("model", why);
        }
        if let Err(m) = crate::schedule::check_lr(self.lr) {
            return bad("lr", m);
        }
        if let Err(m) = self.sgd().validate() {
            return bad("sgd", m);
        }
        if let Err(m) = self.schedule.validate() {
            return bad("schedule", m);
        }
        if let Some(a) = &self.augment {
            if let Err(m) = a.validate() {
                return bad("augment", m);
            }
        }
        if self.early_stopping == Some(0) {
            return bad("early_stopping", "patience must be ≥ 1, got 0".into());
        }
        Ok(())
    }
}

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range.
    #[error("invalid training setting {field}: {message}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong, with the value found.
        message: String,
    },
    /// The loss became NaN or infinite: the learning rate is probably too high.
    #[error(
        "the training loss became {loss} at epoch {epoch}, batch {batch} \
         (learning rate {lr}): training diverged; try a lower learning rate"
    )]
    NonFiniteLoss {
        /// Epoch (from 1).
        epoch: usize,
        /// Batch within the epoch (from 1).
        batch: usize,
        /// The loss value.
        loss: f32,
        /// The learning rate of that batch.
        lr: f64,
    },
    /// A data source has no examples.
    #[error("the {which} set is empty")]
    EmptySource {
        /// `training`, `test` or `validation`.
        which: &'static str,
    },
    /// Early stopping was asked for without a validation set.
    #[error("early stopping needs a validation set (it never looks at the test set)")]
    EarlyStoppingWithoutValidation,
    /// The observer's [`TrainObserver::batch_ended`] stopped the run in the middle of an epoch.
    #[error("training was stopped at epoch {epoch}, batch {batch}")]
    Stopped {
        /// Epoch (from 1).
        epoch: usize,
        /// The last batch trained (from 1).
        batch: usize,
    },
}

/// Callbacks from the training loop, e.g. for a progress bar and per-epoch printing. Every
/// method does nothing by default; `()` is the observer that ignores everything.
pub trait TrainObserver {
    /// Epoch `epoch` (from 1) starts with `batches` batches.
    fn epoch_started(&mut self, _epoch: usize, _batches: usize) {}
    /// Batch `batch` (from 1) of the epoch is done with mean loss `loss`. Called in the hot
    /// loop: keep it cheap and allocation-free if you care about speed.
    fn batch_finished(&mut self, _epoch: usize, _batch: usize, _loss: f32) {}
    /// After [`TrainObserver::batch_finished`], the model as this batch left it: a chance to
    /// copy its weights (e.g. to show the filters while they change). `ControlFlow::Break`
    /// stops the run now, in the middle of the epoch: [`Trainer::fit`] returns
    /// [`TrainError::Stopped`], and the model keeps the weights of the last batch. Called in
    /// the hot loop, like `batch_finished`.
    fn batch_ended(&mut self, _model: &LeNet5) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// Training of the epoch is done; evaluation starts.
    fn evaluation_started(&mut self, _epoch: usize) {}
    /// The epoch is complete.
    fn epoch_finished(&mut self, _metrics: &EpochMetrics) {}
    /// Called by [`Trainer::fit`] after each epoch, with the whole trainer (e.g. to save it or
    /// print its history). `ControlFlow::Break` ends `fit` after this epoch, without error: an
    /// observer that fails keeps its error for its owner to report.
    fn epoch_ended(&mut self, _trainer: &Trainer) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl TrainObserver for () {}

/// The weights of the epoch with the lowest validation loss so far.
#[derive(Debug, Clone)]
pub(crate) struct KeptModel {
    /// The epoch (from 1) after which they were taken.
    pub(crate) epoch: usize,
    /// The weights.
    pub(crate) model: LeNet5,
}

/// The model with the lowest validation loss so far, as [`Trainer::best`] shows it: the kept
/// weights, and the validation results of their epoch's row in [`Trainer::history`].
#[derive(Debug, Clone, Copy)]
pub struct BestModel<'a> {
    /// The epoch (from 1) after which it was taken.
    pub epoch: usize,
    /// Its validation loss.
    pub val_loss: f64,
    /// Its validation accuracy.
    pub val_accuracy: f64,
    /// Its weights.
    pub model: &'a LeNet5,
}

/// How a call to [`Trainer::fit`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitOutcome {
    /// Epochs completed in total (including ones before a resume).
    pub epochs_done: usize,
    /// True if early stopping ended training before `epochs`.
    pub stopped_early: bool,
    /// The epoch of the best validation model, if a validation set was used.
    pub best_epoch: Option<usize>,
}

/// A training run in progress: model, optimizer, RNG, history and reusable buffers. The
/// epochs done, the epochs since the best one and whether early stopping ended the run are
/// not stored: they follow from the history and the best epoch.
#[derive(Debug, Clone)]
pub struct Trainer {
    pub(crate) config: TrainConfig,
    pub(crate) model: LeNet5,
    pub(crate) sgd: Sgd,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) history: Vec<EpochMetrics>,
    pub(crate) best: Option<KeptModel>,
    /// The replicas and losses of the data-parallel gradient; `model` is the one trained.
    parallel: DataParallel,
    /// The confusion matrix of the last epoch's test evaluation.
    test_confusion: Option<[[u64; NUM_CLASSES]; NUM_CLASSES]>,
    augmenter: Option<Augmenter>,
    evaluator: Evaluator,
    order: Vec<usize>,
    images: Vec<f32>,
    labels: Vec<usize>,
}

impl Trainer {
    /// A fresh run: the model initialised from `config.seed`, momentum buffers allocated.
    pub fn new(config: TrainConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let mut init_rng = ChaCha8Rng::seed_from_u64(config.seed);
        init_rng.set_stream(INIT_STREAM);
        let model = LeNet5::new(config.model, &mut init_rng);
        Ok(Self::with_model(config, model))
    }

    /// A run that starts from `model` instead of a fresh initialisation (e.g. fine-tuning).
    /// `config.model` is replaced by the model's config.
    pub fn with_model(mut config: TrainConfig, model: LeNet5) -> Self {
        config.model = model.config();
        let sgd = Sgd::new(config.sgd(), model.params().iter().map(|p| p.value.len()));
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(DATA_STREAM);
        let bs = config.batch_size;
        Trainer {
            augmenter: config.augment.map(Augmenter::new),
            evaluator: Evaluator::new(config.eval_batch_size),
            config,
            model,
            sgd,
            rng,
            history: Vec::new(),
            best: None,
            parallel: DataParallel::default(),
            test_confusion: None,
            order: Vec::new(),
            images: vec![0.0; bs * IMAGE_LEN],
            labels: vec![0; bs],
        }
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Changes the total number of epochs (e.g. to train further after a resume). The cosine
    /// schedule is defined over the total, so changing it changes the remaining rates.
    pub fn set_epochs(&mut self, epochs: usize) {
        self.config.epochs = epochs;
    }

    /// The model as trained so far.
    pub fn model(&self) -> &LeNet5 {
        &self.model
    }

    /// Mutable access to the model (e.g. to evaluate it with its own buffers).
    pub fn model_mut(&mut self) -> &mut LeNet5 {
        &mut self.model
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &Sgd {
        &self.sgd
    }

    /// The best validation model so far (None without a validation set).
    pub fn best(&self) -> Option<BestModel<'_>> {
        let kept = self.best.as_ref()?;
        let row = &self.history[kept.epoch - 1];
        let results = "the best epoch's row has validation results (checked on load)";
        Some(BestModel {
            epoch: kept.epoch,
            val_loss: row.val_loss.expect(results),
            val_accuracy: row.val_accuracy.expect(results),
            model: &kept.model,
        })
    }

    /// Metrics of every completed epoch (including those before a resume).
    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }

    /// `confusion[true_class][predicted_class]` of the test set after the last epoch trained by
    /// this trainer (None before its first epoch, also after a resume).
    pub fn test_confusion(&self) -> Option<&[[u64; NUM_CLASSES]; NUM_CLASSES]> {
        self.test_confusion.as_ref()
    }

    /// Number of completed epochs: the length of the history.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// Epochs completed since the best validation epoch (0 without one).
    pub fn epochs_since_best(&self) -> usize {
        self.best
            .as_ref()
            .map_or(0, |b| self.history.len() - b.epoch)
    }

    /// True once `epochs` are done or early stopping triggered.
    pub fn is_finished(&self) -> bool {
        self.stopped_early() || self.epochs_done() >= self.config.epochs
    }

    /// True if early stopping ended the run: `early_stopping` epochs have passed since the
    /// best validation epoch.
    pub fn stopped_early(&self) -> bool {
        self.config
            .early_stopping
            .is_some_and(|patience| self.epochs_since_best() >= patience)
    }

    /// The model worth keeping: the best validation model if there is one, else the current
    /// one.
    pub fn final_model(&self) -> &LeNet5 {
        self.best.as_ref().map_or(&self.model, |b| &b.model)
    }

    /// Evaluates the current model on `source` (no gradients, eval batch size).
    pub fn evaluate(&mut self, source: &dyn BatchSource) -> Evaluation {
        self.evaluator.evaluate(&self.model, source)
    }

    /// Runs epochs until [`Trainer::is_finished`] or until the observer's
    /// [`TrainObserver::epoch_ended`] asks to stop, calling `observer` along the way.
    pub fn fit(
        &mut self,
        train: &dyn BatchSource,
        test: &dyn BatchSource,
        val: Option<&dyn BatchSource>,
        observer: &mut dyn TrainObserver,
    ) -> Result<FitOutcome, TrainError> {
        while !self.is_finished() {
            self.train_epoch(train, test, val, observer)?;
            if observer.epoch_ended(self).is_break() {
                break;
            }
        }
        Ok(FitOutcome {
            epochs_done: self.epochs_done(),
            stopped_early: self.stopped_early(),
            best_epoch: self.best.as_ref().map(|b| b.epoch),
        })
    }

    /// Trains one epoch on `train`, then evaluates on `test` and, if given, on `val` (which
    /// may make this epoch the best one). Returns the epoch's metrics, also
    /// appended to [`Trainer::history`].
    pub fn train_epoch(
        &mut self,
        train: &dyn BatchSource,
        test: &dyn BatchSource,
        val: Option<&dyn BatchSource>,
        observer: &mut dyn TrainObserver,
    ) -> Result<EpochMetrics, TrainError> {
        self.check_sources(train, test, val)?;
        let start = Instant::now();
        let epoch = self.epochs_done() + 1;
        let n = train.len();
        let bs = self.config.batch_size;
        let batches = n.div_ceil(bs);
        observer.epoch_started(epoch, batches);

        // A fresh permutation each epoch, from the saved RNG state alone (resumable).
        self.order.clear();
        self.order.extend(0..n);
        self.order.shuffle(&mut self.rng);

        let (loss_sum, correct, first_lr) = self.run_batches(train, batches, observer)?;

        observer.evaluation_started(epoch);
        let test_eval = self.evaluator.evaluate(&self.model, test);
        self.test_confusion = Some(test_eval.confusion);
        let val_eval = val.map(|v| self.evaluator.evaluate(&self.model, v));
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / n as f64,
            train_accuracy: correct as f64 / n as f64,
            test_loss: test_eval.loss,
            test_accuracy: test_eval.accuracy,
            seconds: start.elapsed().as_secs_f64(),
            val_loss: val_eval.as_ref().map(|v| v.loss),
            val_accuracy: val_eval.as_ref().map(|v| v.accuracy),
            lr: first_lr,
        };
        self.history.push(metrics.clone());
        self.keep_if_best();
        observer.epoch_finished(&metrics);
        Ok(metrics)
    }

    /// The sources an epoch needs: training and test data, validation data if given (and
    /// required by early stopping), none of them empty.
    fn check_sources(
        &self,
        train: &dyn BatchSource,
        test: &dyn BatchSource,
        val: Option<&dyn BatchSource>,
    ) -> Result<(), TrainError> {
        if train.is_empty() {
            return Err(TrainError::EmptySource { which: "training" });
        }
        if test.is_empty() {
            return Err(TrainError::EmptySource { which: "test" });
        }
        if val.is_some_and(|v| v.is_empty()) {
            return Err(TrainError::EmptySource {
                which: "validation",
            });
        }
        if self.config.early_stopping.is_some() && val.is_none() {
            return Err(TrainError::EarlyStoppingWithoutValidation);
        }
        Ok(())
    }

    /// The SGD steps of one epoch, in the order already drawn: (summed loss over the
    /// examples, correct predictions, the epoch's first learning rate).
    fn run_batches(
        &mut self,
        train: &dyn BatchSource,
        batches: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<(f64, usize, f64), TrainError> {
        let epochs_done = self.epochs_done();
        let epoch = epochs_done + 1;
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        let mut first_lr = 0.0;
        for b in 0..batches {
            let lr = self.config.schedule.lr(
                self.config.lr,
                epochs_done,
                b,
                batches,
                self.config.epochs,
            );
            if b == 0 {
                first_lr = lr;
            }
            self.sgd.set_lr(lr as f32);
            let (loss, batch_correct, nb) = self.train_batch(train, b)?;
            if !loss.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    batch: b + 1,
                    loss,
                    lr,
                });
            }
            loss_sum += loss as f64 * nb as f64;
            correct += batch_correct;
            observer.batch_finished(epoch, b + 1, loss);
            if observer.batch_ended(&self.model).is_break() {
                return Err(TrainError::Stopped {
                    epoch,
                    batch: b + 1,
                });
            }
        }
        Ok((loss_sum, correct, first_lr))
    }

    /// One SGD step on batch `b` of the current epoch's order, its gradient computed
    /// data-parallel: returns (mean loss, correct predictions, batch size). Allocation-free
    /// once the buffers have grown.
    fn train_batch(
        &mut self,
        train: &dyn BatchSource,
        b: usize,
    ) -> Result<(f32, usize, usize), TrainError> {
        let bs = self.config.batch_size;
        let idx = &self.order[b * bs..((b + 1) * bs).min(self.order.len())];
        let nb = idx.len();
        let images = &mut self.images[..nb * IMAGE_LEN];
        let labels = &mut self.labels[..nb];
        // Each shard fills (and augments) its own rows in the parallel region; the seeds are
        // drawn here, in image order, so the cut changes no bit.
        let augment = match &mut self.augmenter {
            Some(aug) => aug.begin_batch(nb, &mut self.rng),
            None => None,
        };
        let batch = Batch {
            images,
            labels,
            fill: Some((train, idx)),
            augment,
        };
        let (loss, batch_correct) = self.parallel.gradients(&mut self.model, batch);
        if !loss.is_finite() {
            // Leave the weights as they were: the caller reports the divergence.
            return Ok((loss, batch_correct, nb));
        }
        self.sgd.step(&mut self.model.params_mut());
        Ok((loss, batch_correct, nb))
    }

    /// Keeps a copy of the model if the last history row has the lowest validation loss so
    /// far.
    fn keep_if_best(&mut self) {
        let last = self.history.last().expect("an epoch has ended");
        let Some(loss) = last.val_loss else {
            return;
        };
        let epoch = last.epoch;
        match &mut self.best {
            Some(kept) => {
                if loss < self.history[kept.epoch - 1].val_loss.unwrap_or(f64::NAN) {
                    kept.model.copy_params_from(&self.model);
                    kept.epoch = epoch;
                }
            }
            None => {
                let mut model = LeNet5::zeros(self.model.config());
                model.copy_params_from(&self.model);
                self.best = Some(KeptModel { epoch, model });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ends an epoch of `t` whose validation loss is `loss` (as `train_epoch` does after
    /// training it).
    fn end_epoch(t: &mut Trainer, loss: f64) {
        t.history.push(EpochMetrics {
            epoch: t.history.len() + 1,
            train_loss: 0.0,
            train_accuracy: 0.0,
            test_loss: 0.0,
            test_accuracy: 0.0,
            seconds: 0.0,
            val_loss: Some(loss),
            val_accuracy: Some(1.0 - loss),
            lr: 0.0,
        });
        t.keep_if_best();
    }

    /// A training step is one SGD step of the model on the data-parallel gradient of the batch
    /// in the epoch's order (a batch of 48: three shards of 16), with the same bits on 1, 2 and
    /// 3 threads.
    #[test]
    fn a_step_is_sgd_on_the_data_parallel_gradient_of_the_batch() {
        use crate::data::InMemorySource;
        use rand::Rng;
        let rng = &mut ChaCha8Rng::seed_from_u64(4);
        let n = 48;
        let images: Vec<f32> = (0..n * IMAGE_LEN)
            .map(|_| rng.gen_range(0.0..1.0))
            .collect();
        let labels: Vec<usize> = (0..n).map(|_| rng.gen_range(0..10)).collect();
        let source = InMemorySource::new(images.clone(), labels.clone());
        let order: Vec<usize> = (0..n).rev().collect();
        let config = TrainConfig {
            batch_size: n,
            ..TrainConfig::default()
        };
        let start = Trainer::new(config.clone()).unwrap();

        let mut want = start.model().clone();
        let mut x: Vec<f32> = order
            .iter()
            .flat_map(|&i| &images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN])
            .copied()
            .collect();
        let mut t: Vec<usize> = order.iter().map(|&i| labels[i]).collect();
        let batch = Batch {
            images: &mut x,
            labels: &mut t,
            fill: None,
            augment: None,
        };
        let (loss, correct) = DataParallel::default().gradients(&mut want, batch);
        let mut sgd = Sgd::new(config.sgd(), want.params().iter().map(|p| p.value.len()));
        sgd.step(&mut want.params_mut());

        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut trainer = start.clone();
            trainer.order = order.clone();
            let got = pool.install(|| trainer.train_batch(&source, 0)).unwrap();
            assert_eq!(got, (loss, correct, n), "{threads} threads");
            for (p, q) in trainer.model().params().iter().zip(want.params()) {
                assert!(p.value == q.value, "{threads} threads: {} differs", p.name);
            }
        }
    }

    #[test]
    fn early_stopping_waits_patience_epochs_after_the_best() {
        let mut t = Trainer::new(TrainConfig {
            early_stopping: Some(2),
            ..TrainConfig::default()
        })
        .unwrap();
        for (epoch, loss) in [0.5, 0.4, 0.45].into_iter().enumerate() {
            end_epoch(&mut t, loss);
            assert!(!t.stopped_early(), "stopped after epoch {}", epoch + 1);
        }
        // The model kept is the one after epoch 2, whose weights equal the model's then.
        assert_eq!(t.best().unwrap().epoch, 2);
        end_epoch(&mut t, 0.41);
        assert!(t.stopped_early());
        assert!(t.is_finished());
        assert_eq!(t.best().unwrap().val_loss, 0.4);
    }

    #[test]
    fn best_model_is_a_copy_of_the_weights_at_its_epoch() {
        let mut t = Trainer::new(TrainConfig::default()).unwrap();
        end_epoch(&mut t, 0.5);
        let before = t.model().params()[0].value.to_vec();
        t.model_mut().set_param("conv1.bias", &[9.0; 6]);
        end_epoch(&mut t, 0.6); // worse: best stays at epoch 1
        let best = t.best().unwrap();
        assert_eq!(best.epoch, 1);
        assert_eq!(best.model.params()[0].value, before.as_slice());
        assert_ne!(best.model.param("conv1.bias").unwrap().value, &[9.0; 6]);
        assert_eq!(
            t.final_model().param("conv1.bias").unwrap().value,
            best.model.param("conv1.bias").unwrap().value
        );
    }
}
