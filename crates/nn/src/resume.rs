//! Resume files: everything a [`Trainer`] needs to continue exactly where it stopped, in one
//! safetensors file. Tensors: the model (`conv1.weight` …, so the file also loads as plain
//! weights), the momentum buffers (`optimizer.momentum.<name>`) and the best validation model
//! (`best.<name>`). Metadata: the model's [`LeNet5Config`](crate::LeNet5Config) (key
//! `lenet5_config`, as in a weights file), the rest of the [`TrainConfig`] (JSON), optimizer
//! steps, the data RNG state (seed, stream, word position), the metrics history and the best
//! model's epoch.
//!
//! What follows from those is not written: the epochs done (the history's length), the epochs
//! since the best one, whether early stopping ended the run, the best model's validation
//! results (its history row). Files of the first format ([`FORMAT_V1`]) still hold them, and
//! the model config twice: reading one checks each against what the rest of the file gives
//! and refuses a contradiction ([`CheckpointError::Contradiction`]).

use crate::checkpoint::{check_shapes, serialize_tensors, CheckpointError, TensorFile, CONFIG_KEY};
use crate::lenet5::{LeNet5, LeNet5Config};
use crate::metrics::EpochMetrics;
use crate::trainer::{KeptModel, TrainConfig, Trainer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// The format written.
const FORMAT: &str = "lenet-training-state-v2";
/// The first format, read too: it also stores the derived values, and the model config inside
/// `train_config` as well.
pub const FORMAT_V1: &str = "lenet-training-state-v1";
const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
const BEST_PREFIX: &str = "best.";

/// Metadata key of the completed epochs in the weights saved with a state (and in states of
/// format [`FORMAT_V1`]).
pub const EPOCHS_DONE_KEY: &str = "epochs_done";

/// Every metadata key a training state file uses for itself (notes added to a file must not
/// replace them): the ones written, and the derived ones a [`FORMAT_V1`] file holds, which are
/// read to check them.
pub const STATE_KEYS: [&str; 14] = [
    "format",
    "train_config",
    CONFIG_KEY,
    "sgd_steps",
    "rng_seed",
    "rng_stream",
    "rng_word_pos",
    "best_epoch",
    "history",
    EPOCHS_DONE_KEY,
    "epochs_since_best",
    "stopped_early",
    "best_val_loss_bits",
    "best_val_accuracy_bits",
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
    /// The content of a weights file and of a training state file saved as one pair: the
    /// weights worth keeping ([`Trainer::final_model`]) at `weights` and the full state at
    /// `state`, both recording the completed epochs ([`EPOCHS_DONE_KEY`]) so that the pair left
    /// by a crash between two renames (new state, old weights) is recognised. `extra` metadata
    /// goes into both. Write them with [`crate::atomic::write_atomic_all`], the state first.
    pub fn pair_bytes(
        &self,
        weights: &Path,
        state: &Path,
        extra: HashMap<String, String>,
    ) -> Result<(Vec<u8>, Vec<u8>), CheckpointError> {
        let mut weights_meta = extra.clone();
        weights_meta.insert(EPOCHS_DONE_KEY.to_string(), self.epochs_done().to_string());
        let w = self.final_model().weights_bytes(weights, weights_meta)?;
        let s = self.training_state_bytes(state, extra)?;
        Ok((w, s))
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

        // The model config once, under the key a weights file uses.
        let mut train_config = serde_json::to_value(&self.config).expect("config serialises");
        train_config
            .as_object_mut()
            .expect("a config is a JSON object")
            .remove("model");
        let mut meta = extra;
        let mut put = |k: &str, v: String| {
            meta.insert(k.to_string(), v);
        };
        put("format", FORMAT.to_string());
        put("train_config", train_config.to_string());
        put(
            CONFIG_KEY,
            serde_json::to_string(&self.model.config()).expect("config serialises"),
        );
        put("sgd_steps", self.sgd.steps().to_string());
        put("rng_seed", seed_to_hex(&self.rng.get_seed()));
        put("rng_stream", self.rng.get_stream().to_string());
        put("rng_word_pos", self.rng.get_word_pos().to_string());
        if let Some(b) = &self.best {
            put("best_epoch", b.epoch.to_string());
        }
        put(
            "history",
            serde_json::to_string(&self.history).expect("metrics serialise"),
        );
        serialize_tensors(path, &tensors, meta)
    }

    /// Restores a trainer saved from [`Trainer::training_state_bytes`] (or by the first format,
    /// [`FORMAT_V1`]); training continues with exactly the results an uninterrupted run would
    /// have given.
    pub fn load_training_state(path: impl AsRef<Path>) -> Result<Trainer, CheckpointError> {
        Self::from_state_file(&TensorFile::open(path.as_ref())?)
    }

    /// As [`Trainer::load_training_state`], from the content of a state file already read
    /// (with [`crate::checkpoint::read_checkpoint`]); `name` stands for the file in errors. A
    /// caller that also wants the file's metadata reads it from the same bytes.
    pub fn from_state_bytes(bytes: &[u8], name: &Path) -> Result<Trainer, CheckpointError> {
        Self::from_state_file(&TensorFile::from_bytes(name, bytes.to_vec())?)
    }

    fn from_state_file(file: &TensorFile) -> Result<Trainer, CheckpointError> {
        let formats = format!("{FORMAT} or {FORMAT_V1}");
        file.meta_parse("format", &formats, |s| {
            [FORMAT, FORMAT_V1].contains(&s).then_some(())
        })?;
        let config = read_config(file)?;
        let history = read_history(file)?;
        let best_epoch = read_best_epoch(file, &history)?;

        // Every tensor is checked against the file before any model is allocated.
        check_shapes(file, &config.model, "")?;
        let mut model = LeNet5::zeros(config.model);
        model.load_from(file, "")?;
        let mut trainer = Trainer::with_model(config, model);
        restore_optimizer(file, &mut trainer)?;
        trainer.rng = read_rng(file)?;
        if let Some(epoch) = best_epoch {
            check_shapes(file, &trainer.config.model, BEST_PREFIX)?;
            let mut model = LeNet5::zeros(trainer.config.model);
            model.load_from(file, BEST_PREFIX)?;
            trainer.best = Some(KeptModel { epoch, model });
        }
        trainer.history = history;
        check_derived(file, &trainer)?;
        Ok(trainer)
    }
}

/// The [`TrainConfig`]: `train_config` with the model config of [`CONFIG_KEY`]. A
/// [`FORMAT_V1`] file also holds the model inside `train_config`; the two must agree.
fn read_config(file: &TensorFile) -> Result<TrainConfig, CheckpointError> {
    let model: LeNet5Config = file.meta_parse(CONFIG_KEY, "a LeNet-5 config in JSON", |s| {
        serde_json::from_str(s).ok()
    })?;
    let expected = "a training config in JSON";
    let raw = file.meta("train_config");
    let value: serde_json::Value =
        file.meta_parse("train_config", expected, |s| serde_json::from_str(s).ok())?;
    let json = |m: &LeNet5Config| serde_json::to_string(m).expect("config serialises");
    if let Some(inner) = value.get("model") {
        if serde_json::from_value::<LeNet5Config>(inner.clone()).ok() != Some(model) {
            let from = format!("metadata {CONFIG_KEY:?}");
            return Err(file.contradiction(
                "train_config's model",
                &inner.to_string(),
                &json(&model),
                &from,
            ));
        }
    }
    let mut config: TrainConfig =
        serde_json::from_value(value).map_err(|_| file.bad_meta("train_config", expected, raw))?;
    config.model = model;
    config.validate().map_err(|e| {
        let valid = format!("{expected} with valid values ({e})");
        file.bad_meta("train_config", &valid, raw)
    })?;
    Ok(config)
}

/// The metrics history, whose rows are epochs 1, 2, 3… in order.
fn read_history(file: &TensorFile) -> Result<Vec<EpochMetrics>, CheckpointError> {
    let expected = "a JSON list of epoch metrics numbered 1, 2, 3… in order";
    file.meta_parse("history", expected, |s| {
        serde_json::from_str::<Vec<EpochMetrics>>(s)
            .ok()
            .filter(|h| h.iter().enumerate().all(|(i, m)| m.epoch == i + 1))
    })
}

/// The best validation epoch, if the file has one: an epoch of `history` with validation
/// results.
fn read_best_epoch(
    file: &TensorFile,
    history: &[EpochMetrics],
) -> Result<Option<usize>, CheckpointError> {
    if file.meta("best_epoch").is_none() {
        return Ok(None);
    }
    let expected = format!(
        "an epoch of the history (1..={}) with validation results",
        history.len()
    );
    let has_val = |m: &EpochMetrics| m.val_loss.is_some() && m.val_accuracy.is_some();
    file.meta_parse("best_epoch", &expected, |s| {
        let epoch = s.parse::<usize>().ok()?;
        let row = history.get(epoch.checked_sub(1)?)?;
        has_val(row).then_some(epoch)
    })
    .map(Some)
}

/// Restores the optimizer's step count and its momentum buffers, which exist once a step has
/// been taken with momentum > 0.
fn restore_optimizer(file: &TensorFile, trainer: &mut Trainer) -> Result<(), CheckpointError> {
    let steps = file.meta_parse("sgd_steps", "an unsigned integer", |s| {
        s.parse::<u64>().ok()
    })?;
    let mut buffers: Vec<Vec<f32>> = trainer.sgd.momentum_buffers().to_vec();
    if !buffers.is_empty() && steps > 0 {
        for (p, buf) in trainer.model.params().iter().zip(buffers.iter_mut()) {
            file.read_f32(&format!("{MOMENTUM_PREFIX}{}", p.name), p.shape, buf)?;
        }
    }
    trainer.sgd.restore_state(steps, &buffers);
    Ok(())
}

/// The data RNG at the position where the run stopped.
fn read_rng(file: &TensorFile) -> Result<ChaCha8Rng, CheckpointError> {
    let seed = file.meta_parse("rng_seed", "64 hex digits", unhex32)?;
    let stream = file.meta_parse("rng_stream", "an unsigned integer", |s| s.parse().ok())?;
    let word_pos = file.meta_parse("rng_word_pos", "an unsigned integer", |s| s.parse().ok())?;
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(stream);
    rng.set_word_pos(word_pos);
    Ok(rng)
}

/// Checks each derived value that a [`FORMAT_V1`] file stores against the value the history,
/// the best epoch and the config give.
fn check_derived(file: &TensorFile, trainer: &Trainer) -> Result<(), CheckpointError> {
    let best = trainer.best();
    let bits = |x: f64| x.to_bits().to_string();
    let (row, history) = ("the best epoch's history row", "the history and best_epoch");
    let derived = [
        (
            EPOCHS_DONE_KEY,
            Some(trainer.epochs_done().to_string()),
            "the history's length",
        ),
        (
            "epochs_since_best",
            Some(trainer.epochs_since_best().to_string()),
            history,
        ),
        (
            "stopped_early",
            Some(trainer.stopped_early().to_string()),
            history,
        ),
        ("best_val_loss_bits", best.map(|b| bits(b.val_loss)), row),
        (
            "best_val_accuracy_bits",
            best.map(|b| bits(b.val_accuracy)),
            row,
        ),
    ];
    for (key, expected, from) in derived {
        let Some(found) = file.meta(key) else {
            continue;
        };
        if Some(found) != expected.as_deref() {
            let expected = expected.unwrap_or_else(|| "nothing (no best_epoch)".to_string());
            return Err(file.contradiction(key, found, &expected, from));
        }
    }
    Ok(())
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

    fn row(epoch: usize, val_loss: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0,
            train_accuracy: 0.5,
            test_loss: 1.0,
            test_accuracy: 0.5,
            seconds: 1.0,
            val_loss: Some(val_loss),
            val_accuracy: Some(1.0 - val_loss),
            lr: 0.05,
        }
    }

    /// A state of the first format, which stores the derived values and the model config
    /// twice, loads when they agree with the rest of the file and is refused, naming the file,
    /// the key and the value expected, when one does not.
    #[test]
    fn first_format_derived_values_are_checked() {
        let mut t = Trainer::new(TrainConfig {
            early_stopping: Some(1),
            ..TrainConfig::default()
        })
        .unwrap();
        t.history = vec![row(1, 0.5), row(2, 0.6)];
        t.best = Some(KeptModel {
            epoch: 1,
            model: t.model.clone(),
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.state.safetensors");
        let bits = |x: f64| x.to_bits().to_string();
        let v1 = |changes: &[(&str, String)]| {
            let bytes = t.training_state_bytes(&path, HashMap::new()).unwrap();
            let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let mut meta = header.metadata().clone().unwrap();
            let full_config = serde_json::to_string(&t.config).unwrap();
            for (key, value) in [
                ("format", FORMAT_V1.to_string()),
                ("train_config", full_config),
                (EPOCHS_DONE_KEY, "2".to_string()),
                ("epochs_since_best", "1".to_string()),
                ("stopped_early", "true".to_string()),
                ("best_val_loss_bits", bits(0.5)),
                ("best_val_accuracy_bits", bits(0.5)),
            ]
            .into_iter()
            .chain(changes.iter().map(|(k, v)| (*k, v.clone())))
            {
                meta.insert(key.to_string(), value);
            }
            let out = safetensors::serialize(tensors.tensors(), &Some(meta)).unwrap();
            std::fs::write(&path, out).unwrap();
            Trainer::load_training_state(&path)
        };
        let back = v1(&[]).unwrap();
        assert_eq!((back.epochs_done(), back.stopped_early()), (2, true));
        assert_eq!(back.best().unwrap().val_loss, 0.5);

        let mut wider = t.config.clone();
        wider.model.c1 = 7;
        let wider = serde_json::to_string(&wider).unwrap();
        for (key, bad, expected) in [
            (EPOCHS_DONE_KEY, "3".to_string(), "2".to_string()),
            ("epochs_since_best", "0".to_string(), "1".to_string()),
            ("stopped_early", "false".to_string(), "true".to_string()),
            ("best_val_loss_bits", bits(0.4), bits(0.5)),
            ("best_val_accuracy_bits", bits(0.4), bits(0.5)),
            ("train_config", wider, "\"c1\":6".to_string()),
        ] {
            let err = v1(&[(key, bad)]).unwrap_err();
            assert!(
                matches!(&err, CheckpointError::Contradiction { key: k, .. } if k.starts_with(key)),
                "{key}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("v1.state.safetensors") && text.contains(&expected),
                "{key}: {text}"
            );
        }
    }
}
