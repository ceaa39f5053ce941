//! # nn
//!
//! Layers, the LeNet-5 model, SGD with momentum and a training loop, built on the `tensor`
//! kernels. Training reads batches from any [`BatchSource`]: this crate does not know about
//! MNIST files.
//!
//! ```no_run
//! use nn::{InMemorySource, TrainConfig, Trainer};
//! # let (train, test) = (InMemorySource::default(), InMemorySource::default());
//! let mut trainer = Trainer::new(TrainConfig::default())?;
//! trainer.fit(&train, &test, None, &mut ())?;
//! let path = std::path::Path::new("lenet5.safetensors");
//! nn::write_atomic(path, &trainer.final_model().weights_bytes(path, Default::default())?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Files: layers (`conv2d`, `linear`, `activation`, `pool`, `flatten`), the model (`lenet5`),
//! `loss`, `sgd`, `schedule`, `data`, `augment`, `evaluate`, `metrics`, `trainer` (with
//! `data_parallel`: each step's gradient, shard by shard), `inspect` (every layer's output and
//! the layer table), `explain` (saliency maps and adversarial examples from the input
//! gradient), `checkpoint` (PyTorch-loadable weights), `resume` (training state), `atomic`
//! (crash-safe writes) and `guard` (checks before writing: one file under two names, names too
//! long, one run per saved pair).
#![deny(missing_docs)]

pub mod activation;
pub mod atomic;
pub mod augment;
pub mod buffer;
pub mod checkpoint;
pub mod conv2d;
pub mod data;
pub mod data_parallel;
pub mod evaluate;
pub mod explain;
mod fc_shards;
pub mod flatten;
pub mod guard;
pub mod init;
pub mod inspect;
pub mod lenet5;
pub mod linear;
pub mod loss;
pub mod metrics;
pub mod param;
pub mod pool;
pub mod resume;
pub mod schedule;
pub mod sgd;
pub mod trainer;

pub use activation::{Activation, ActivationKind};
pub use atomic::{replace_if_unchanged, write_atomic, write_atomic_all};
pub use augment::{AugmentConfig, Augmenter};
pub use buffer::Buffer;
pub use checkpoint::CheckpointError;
pub use conv2d::Conv2d;
pub use data::{split_indices, BatchSource, InMemorySource, Subset, IMAGE_LEN};
pub use evaluate::Evaluator;
pub use flatten::Flatten;
pub use lenet5::{
    LeNet5, LeNet5Activations, LeNet5Config, IMAGE_SIZE, MAX_CHANNELS, NUM_CLASSES, PARAM_NAMES,
};
pub use linear::Linear;
pub use loss::{argmax, count_correct, cross_entropy_loss, softmax, SoftmaxCrossEntropy};
pub use metrics::{EpochMetrics, Evaluation};
pub use param::{ParamMut, ParamRef};
pub use pool::{Pool2d, PoolKind};
pub use resume::{EPOCHS_DONE_KEY, STATE_KEYS};
pub use schedule::{check_lr, LrSchedule, LR_RANGE};
pub use sgd::{Sgd, SgdConfig};
pub use trainer::{BestModel, FitOutcome, TrainConfig, TrainError, TrainObserver, Trainer};
