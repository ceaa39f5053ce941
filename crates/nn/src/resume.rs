//! Resume files: everything a [`Trainer`] needs to continue exactly where it stopped, in one
//! safetensors file. Tensors: the model (`conv1.weight` …, so the file also loads as plain
//! weights), the momentum buffers (`optimizer.momentum.<name>`) and the best validation model
//! (`best.<name>`). Metadata: the [`TrainConfig`] (JSON), completed epochs, optimizer steps,
//! the data RNG state (seed, stream, word position), the best model's epoch and validation
//! results (f64 stored as exact bit patterns), the early-stopping count and the metrics
//! history.

use crate::atomic::{write_atomic, write_atomic_all};
use crate::checkpoint::{check_shapes, serialize_tensors, CheckpointError, TensorFile};
use crate::lenet5::LeNet5;
use crate::metrics::EpochMetrics;
use crate::trainer::{BestModel, TrainConfig, Trainer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

const FORMAT: &str = "lenet-training-state-v1";
const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
const BEST_PREFIX: &str = "best.";

/// Metadata key of the completed epochs, in the state file and in the weights saved with it.
pub const EPOCHS_DONE_KEY: &str = "epochs_done";

/// Every metadata key a training state file uses for itself (notes added to a file must not
/// replace them).
pub const STATE_KEYS: [&str; 14] = [
    "format",
    "train_config",
    crate::checkpoint::CONFIG_KEY,
    EPOCHS_DONE_KEY,
    "sgd_steps",
    "rng_seed",
    "rng_stream",
    "rng_word_pos",
    "epochs_since_best",
    "stopped_early",
    "best_epoch",
    "best_val_loss_bits",
    "best_val_accuracy_bits",
    "history",
];

/// The 32-byte seed as 64 hex digits (two big-endian u128).
fn seed_to_hex(seed: &[u8; 32]) -> String {
    let half = |b: &[u8]| u128::from_be_bytes(b.try_into().expect("16 bytes"));
    format!("{:032x}{:032x}", half(&seed[..16]), half(&seed[16..]))
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&u128::from_str_radix(&s[..32], 16).ok()?.to_be_bytes());
    out[16..].copy_from_slice(&u128::from_str_radix(&s[32..], 16).ok()?.to_be_bytes());
    Some(out)
}

impl Trainer {
    /// Writes the complete training state to `path` (atomically).
    pub fn save_training_state(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        let data = self.training_state_bytes(path, HashMap::new())?;
        write_atomic(path, &data).map_err(|error| CheckpointError::Io {
            path: path.to_path_buf(),
            error,
        })
    }

    /// Saves the training state to `state` and the weights worth keeping
    /// ([`Trainer::final_model`]) to `weights` as one pair: both files are written and synced
    /// before either replaces the old one (a full disk leaves both old), the state is renamed
    /// first, and both record the completed epochs ([`EPOCHS_DONE_KEY`]) so that the pair
    /// left by a crash between the two renames (new state, old weights) is recognised. `extra`
    /// metadata goes into both files.
    pub fn save_with_weights(
        &self,
        weights: &Path,
        state: &Path,
        extra: HashMap<String, String>,
    ) -> Result<(), CheckpointError> {
        let mut weights_meta = extra.clone();
        weights_meta.insert(EPOCHS_DONE_KEY.to_string(), self.epochs_done.to_string());
        let w = self.final_model().weights_bytes(weights, weights_meta)?;
        let s = self.training_state_bytes(state, extra)?;
        write_atomic_all(&[(state, &s), (weights, &w)]).map_err(|error| CheckpointError::Io {
            path: weights.to_path_buf(),
            error,
        })
    }

    /// The content of the training state file, with `extra` metadata entries (which may not
    /// replace the state's own keys); `path` names the file in errors.
    pub fn training_state_bytes(
        &self,
        path: &Path,
        extra: HashMap<String, String>,
    ) -> Result<Vec<u8>, CheckpointError> {
        let params = self.model.params();
        let names: Vec<String> = params.iter().map(|p| p.name.to_string()).collect();
        let momentum_names: Vec<String> = names
            .iter()
            .map(|n| format!("{MOMENTUM_PREFIX}{n}"))
            .collect();
        let best_names: Vec<String> = names.iter().map(|n| format!("{BEST_PREFIX}{n}")).collect();

        let mut tensors: Vec<(&str, &[usize], &[f32])> =
            params.iter().map(|p| (p.name, p.shape, p.value)).collect();
        for ((name, p), buf) in momentum_names
            .iter()
            .zip(&params)
            .zip(self.sgd.momentum_buffers())
        {
            tensors.push((name, p.shape, buf));
        }
        let best_params = self.best.as_ref().map(|b| b.model.params());
        if let Some(bp) = &best_params {
            for (name, p) in best_names.iter().zip(bp) {
                tensors.push((name, p.shape, p.value));
            }
        }

        let mut meta = extra;
        let mut put = |k: &str, v: String| {
            meta.insert(k.to_string(), v);
        };
        put("format", FORMAT.to_string());
        put(
            "train_config",
            serde_json::to_string(&self.config).expect("config serialises"),
        );
        put(
            crate::checkpoint::CONFIG_KEY,
            serde_json::to_string(&self.model.config()).expect("config serialises"),
        );
        put(EPOCHS_DONE_KEY, self.epochs_done.to_string());
        put("sgd_steps", self.sgd.steps().to_string());
        put("rng_seed", seed_to_hex(&self.rng.get_seed()));
        put("rng_stream", self.rng.get_stream().to_string());
        put("rng_word_pos", self.rng.get_word_pos().to_string());
        put("epochs_since_best", self.epochs_since_best.to_string());
        put("stopped_early", self.stopped_early.to_string());
        if let Some(b) = &self.best {
            put("best_epoch", b.epoch.to_string());
            put("best_val_loss_bits", b.val_loss.to_bits().to_string());
            put(
                "best_val_accuracy_bits",
                b.val_accuracy.to_bits().to_string(),
            );
        }
        put(
            "history",
            serde_json::to_string(&self.history).expect("metrics serialise"),
        );
        serialize_tensors(path, &tensors, meta)
    }

    /// Restores a trainer saved by [`Trainer::save_training_state`]; training continues with
    /// exactly the results an uninterrupted run would have given.
    pub fn load_training_state(path: impl AsRef<Path>) -> Result<Trainer, CheckpointError> {
        let file = TensorFile::open(path.as_ref())?;
        file.meta_parse("format", FORMAT, |s| (s == FORMAT).then_some(()))?;
        let config: TrainConfig =
            file.meta_parse("train_config", "a training config in JSON", |s| {
                serde_json::from_str::<TrainConfig>(s)
                    .ok()
                    .filter(|c| c.validate().is_ok())
            })?;
        let int =
            |key: &str| file.meta_parse(key, "an unsigned integer", |s| s.parse::<u64>().ok());
        let epochs_done = int(EPOCHS_DONE_KEY)? as usize;
        let sgd_steps = int("sgd_steps")?;
        let epochs_since_best = int("epochs_since_best")? as usize;
        let stopped_early =
            file.meta_parse("stopped_early", "true or false", |s| s.parse().ok())?;
        let seed = file.meta_parse("rng_seed", "64 hex digits", unhex32)?;
        let stream = int("rng_stream")?;
        let word_pos = file.meta_parse("rng_word_pos", "an unsigned integer", |s| {
            s.parse::<u128>().ok()
        })?;
        let history: Vec<EpochMetrics> =
            file.meta_parse("history", "a JSON list of epoch metrics", |s| {
                serde_json::from_str(s).ok()
            })?;

        // Every tensor is checked against the file before any model is allocated.
        check_shapes(&file, &config.model, "")?;
        let mut model = LeNet5::zeros(config.model);
        model.load_from(&file, "")?;
        let mut trainer = Trainer::with_model(config, model);

        // Momentum buffers exist once a step has been taken with momentum > 0.
        if !trainer.sgd.momentum_buffers().is_empty() && sgd_steps > 0 {
            let mut buffers: Vec<Vec<f32>> = trainer.sgd.momentum_buffers().to_vec();
            for (p, buf) in trainer.model.params().iter().zip(buffers.iter_mut()) {
                file.read_f32(&format!("{MOMENTUM_PREFIX}{}", p.name), p.shape, buf)?;
            }
            trainer.sgd.restore_state(sgd_steps, &buffers);
        } else {
            let buffers = trainer.sgd.momentum_buffers().to_vec();
            trainer.sgd.restore_state(sgd_steps, &buffers);
        }

        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(stream);
        rng.set_word_pos(word_pos);
        trainer.rng = rng;

        if file.meta("best_epoch").is_some() {
            let epoch = int("best_epoch")? as usize;
            let bits = |key: &str| {
                file.meta_parse(key, "an f64 bit pattern", |s| s.parse::<u64>().ok())
                    .map(f64::from_bits)
            };
            let val_loss = bits("best_val_loss_bits")?;
            let val_accuracy = bits("best_val_accuracy_bits")?;
            check_shapes(&file, &trainer.config.model, BEST_PREFIX)?;
            let mut best = LeNet5::zeros(trainer.config.model);
            best.load_from(&file, BEST_PREFIX)?;
            trainer.best = Some(BestModel {
                epoch,
                val_loss,
                val_accuracy,
                model: best,
            });
        }
        trainer.epochs_done = epochs_done;
        trainer.epochs_since_best = epochs_since_best;
        trainer.stopped_early = stopped_early;
        trainer.history = history;
        Ok(trainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_hex_is_two_digits_per_byte_and_reads_back() {
        let seed: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let per_byte: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(seed_to_hex(&seed), per_byte);
        assert_eq!(unhex32(&per_byte), Some(seed));
        assert_eq!(unhex32(&per_byte[1..]), None);
        assert_eq!(unhex32(&format!("+{}", &per_byte[1..])), None);
    }
}
