//! The command line: `lenet train | eval | predict | download`, parsed with clap's derive API.
//!
//! Every numeric flag goes through a range-checking parser, so an out-of-range value is a clap
//! error (message on stderr, exit code 2) and never reaches the training code. A value that a
//! file can hold too is checked by the one function its type has for it (`nn::check_lr`,
//! `LrSchedule::check_gamma`, `RunSettings::check_limit`, `RunSettings::check_val_split`),
//! which the file's reader calls as well.

use std::path::PathBuf;
use std::str::FromStr;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, Parser, Subcommand};
use mnist::DatasetKind;
use nn::{ActivationKind, LrSchedule, PoolKind, TrainConfig};

use crate::train::RunSettings;

/// Train, evaluate and run LeNet-5 on MNIST and Fashion-MNIST.
#[derive(Debug, Parser)]
#[command(name = "lenet", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// One value, parsed once per process: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Train LeNet-5 and print one line per epoch.
    // Negative numbers parse as values, so that `--lr -1` reports the range, not a stray flag.
    #[command(allow_negative_numbers = true)]
    Train(TrainArgs),
    /// Print the test accuracy and the confusion matrix of saved weights.
    Eval(EvalArgs),
    /// Classify PNG or JPEG images of single digits (or clothes) with saved weights.
    Predict(PredictArgs),
    /// Download a dataset and verify its checksums.
    Download(DataArgs),
    /// Serve a web page to draw digits on and watch every layer of the network respond.
    Serve(ServeArgs),
    /// Print the layer table of the model: output shapes, parameters, FLOPs per image.
    Summary(SummaryArgs),
    /// Write the learned filters, and the feature maps of an image, as PNG grids.
    Visualize(VisualizeArgs),
    /// Time a training step and inference on every kernel tier this CPU has.
    Bench(BenchArgs),
}

/// Where the data comes from (shared by every subcommand).
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The dataset [default: mnist; for eval, the one recorded in the model file].
    #[arg(long, value_parser = one_of::<DatasetKind>(DatasetKind::ALL.map(DatasetKind::dir_name)))]
    pub dataset: Option<DatasetKind>,
    /// Folder holding the dataset's four IDX files. Default: $LENET_DATA_DIR/<dataset>, else
    /// ./data/<dataset> (downloaded on first use).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Flags of `lenet train`. The defaults of the hyper-parameters are those of
/// `nn::TrainConfig::default()`, tuned to pass 99.1% test accuracy on MNIST in 10 epochs.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Dataset and data location.
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of epochs (with --resume: the total, including the epochs already done).
    #[arg(long, value_name = "N", default_value_t = defaults().epochs, value_parser = at_least_one)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, value_name = "N", default_value_t = defaults().batch_size, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Learning rate (the peak of the schedule), in [1e-8, 100].
    #[arg(long, value_name = "LR", default_value_t = defaults().lr, value_parser = learning_rate, allow_hyphen_values = true)]
    pub lr: f64,
    /// SGD momentum, in [0, 1).
    #[arg(long, value_name = "M", default_value_t = defaults().momentum, value_parser = unit_interval_open, allow_hyphen_values = true)]
    pub momentum: f64,
    /// Nesterov momentum (`--nesterov false` for classical momentum). Default: on whenever
    /// --momentum is above 0 (plain SGD with `--momentum 0` needs no flag).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set)]
    pub nesterov: Option<bool>,
    /// L2 weight decay, >= 0.
    #[arg(long, value_name = "WD", default_value_t = defaults().weight_decay, value_parser = non_negative_finite, allow_hyphen_values = true)]
    pub weight_decay: f64,
    /// Learning-rate schedule: cosine annealing to 0 per batch, a step decay (PyTorch's StepLR),
    /// or a constant rate.
    #[arg(long, default_value = defaults().schedule.name(), value_parser = schedule())]
    pub schedule: LrSchedule,
    /// Epochs between two decays of `--schedule step`.
    #[arg(long, value_name = "N", default_value_t = nn::schedule::STEP_EVERY, value_parser = at_least_one)]
    pub step_size: usize,
    /// Factor of each decay of `--schedule step`, in (0, 1].
    #[arg(long, value_name = "G", default_value_t = nn::schedule::STEP_GAMMA, value_parser = decay_factor, allow_hyphen_values = true)]
    pub gamma: f64,
    /// Non-linearity of the model.
    #[arg(
        long,
        default_value_t = defaults().model.activation,
        value_parser = one_of::<ActivationKind>(
            [ActivationKind::Relu, ActivationKind::Tanh, ActivationKind::Sigmoid]
                .map(ActivationKind::name)
        )
    )]
    pub activation: ActivationKind,
    /// Pooling of the model.
    #[arg(
        long,
        default_value_t = defaults().model.pooling,
        value_parser = one_of::<PoolKind>([PoolKind::Avg, PoolKind::Max].map(PoolKind::name))
    )]
    pub pool: PoolKind,
    /// Seed of the weight initialisation, the shuffles, the validation split and the augmentation.
    #[arg(long, value_name = "SEED", default_value_t = defaults().seed)]
    pub seed: u64,
    /// Worker threads [default: all cores; at most 8 per core].
    #[arg(long, value_name = "N", value_parser = thread_count)]
    pub threads: Option<usize>,
    /// Save the weights (safetensors, PyTorch state_dict names) here after every epoch: the best
    /// validation epoch's with --val-split, else the latest. The full training state goes next to
    /// it, in NAME.state.safetensors (other names than *.safetensors: FILE.state.safetensors),
    /// for --resume. The run holds FILE.lock meanwhile: one run at a time saves to a name.
    #[arg(long, value_name = "FILE.safetensors")]
    pub save: Option<PathBuf>,
    /// Continue a run from a NAME.state.safetensors file written by --save. Its saved settings
    /// (including --dataset, --limit and --val-split) are used; --epochs sets the new total;
    /// any other setting flag given with another value is refused.
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Write one JSON object per epoch to this file (with --resume: rewritten from the saved
    /// history, then appended to).
    #[arg(long, value_name = "FILE.jsonl")]
    pub metrics: Option<PathBuf>,
    /// Draw the loss and accuracy curves as an SVG file (redrawn after every epoch).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Distort each training image as handwriting varies: shift, rotation, scale, slant, an
    /// elastic distortion and a stroke-width change (see the README for the ranges).
    #[arg(long)]
    pub augment: bool,
    /// Fraction of the training set held out for validation, in [0, 1).
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = val_split, allow_hyphen_values = true)]
    pub val_split: f64,
    /// Stop when the validation loss has not improved for N epochs (needs --val-split).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub early_stopping: Option<usize>,
    /// Train on the first N training images only (quick runs and tests).
    #[arg(long, value_name = "N", value_parser = limit)]
    pub limit: Option<usize>,
    /// Ids of the flags given on the command line (not defaulted), filled by `main`: a resumed
    /// run refuses a given flag that contradicts its recorded settings.
    #[arg(skip)]
    pub given: Vec<String>,
}

fn defaults() -> TrainConfig {
    TrainConfig::default()
}

/// `--schedule`: the names [`LrSchedule`]'s `FromStr` takes, each with its help (the step
/// schedule's values come from `--step-size` and `--gamma`, see `train::config`).
fn schedule() -> impl TypedValueParser<Value = LrSchedule> {
    PossibleValuesParser::new([
        PossibleValue::new("cosine").help("Cosine annealing from --lr to 0 over all batches"),
        PossibleValue::new("step").help("Multiply the rate by --gamma every --step-size epochs"),
        PossibleValue::new("constant")
            .alias("none")
            .help("--lr throughout"),
    ])
    .try_map(|s| s.parse::<LrSchedule>())
}

/// A parser accepting exactly `values` (listed in `--help` and in errors), each turned into
/// `T` by its `FromStr` (nn's enums parse and print themselves; nn does not depend on clap).
fn one_of<T>(values: impl IntoIterator<Item = &'static str>) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let names: Vec<&'static str> = values.into_iter().collect();
    PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

/// Flags of `lenet eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Weights written by `lenet train --save` [default: the built-in model].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Record the measured test accuracy (keys test_accuracy, test_correct) and these KEY=VALUE
    /// notes in the metadata of the --model file (how the built-in model is documented). The
    /// keys lenet itself uses (format, lenet5_config, dataset, …) are refused.
    #[arg(long, value_name = "KEY=VALUE", num_args = 0.., requires = "model", value_parser = note)]
    pub record: Option<Vec<(String, String)>>,
    /// Dataset and data location.
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also draw the confusion matrix as a PNG picture.
    #[arg(long, value_name = "FILE.png")]
    pub png: Option<PathBuf>,
}

/// Flags of `lenet predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Weights written by `lenet train --save` [default: the built-in model].
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// PNG or JPEG images, one digit (or garment) each.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// Print one JSON object per image (`image`, `probabilities` of every class) instead of
    /// the top 3.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `lenet serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Weights written by `lenet train --save`.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Address and port to listen on; loopback unless another address is asked for (port 0:
    /// any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub bind: std::net::SocketAddr,
}

/// Flags of `lenet summary`.
#[derive(Debug, Clone, Args)]
pub struct SummaryArgs {
    /// Weights written by `lenet train --save`.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
}

/// Flags of `lenet bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Rounds: every tier is measured once per round, the tiers taking turns.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Measure this process's tier only and print one line (what each round runs).
    #[arg(long, hide = true)]
    pub measure: bool,
}

/// Flags of `lenet visualize`.
#[derive(Debug, Clone, Args)]
pub struct VisualizeArgs {
    /// Folder to write the PNG files to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Weights written by `lenet train --save`.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// A PNG or JPEG of one digit: its feature maps are drawn too.
    #[arg(value_name = "IMAGE")]
    pub image: Option<PathBuf>,
}

impl TrainArgs {
    /// True if the flag with clap id `id` (the field name, e.g. `batch_size`) was given.
    pub fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }

    /// Whether to use Nesterov momentum: `--nesterov` if given, else the default whenever there
    /// is momentum at all.
    pub fn nesterov(&self) -> bool {
        self.nesterov
            .unwrap_or(defaults().nesterov && self.momentum > 0.0)
    }

    /// Checks that need more than one flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.early_stopping.is_some() && self.val_split == 0.0 {
            return Err(
                "--early-stopping needs a validation split (--val-split F with F > 0): \
                 early stopping never looks at the test set"
                    .into(),
            );
        }
        Ok(())
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse::<T>().map_err(|e| format!("{e}"))
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match parse::<usize>(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn thread_count(s: &str) -> Result<usize, String> {
    let max = crate::limits::max_threads();
    match parse::<usize>(s)? {
        0 => Err("must be at least 1".into()),
        n if n > max => Err(format!(
            "{n} threads is more than {} per core of this machine (at most {max}): extra \
             threads only wait for the cores",
            crate::limits::THREADS_PER_CORE
        )),
        n => Ok(n),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    let v = parse::<f64>(s)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err("must be a finite number".into())
    }
}

/// `--lr`: nn's one range of a base learning rate ([`nn::check_lr`]).
fn learning_rate(s: &str) -> Result<f64, String> {
    nn::check_lr(finite(s)?)
}

fn non_negative_finite(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be at least 0, found {v}"))
    }
}

/// `--gamma`: the range of a step decay's factor ([`LrSchedule::check_gamma`]).
fn decay_factor(s: &str) -> Result<f64, String> {
    LrSchedule::check_gamma(finite(s)?)
}

/// `--limit`: [`RunSettings::check_limit`].
fn limit(s: &str) -> Result<usize, String> {
    RunSettings::check_limit(parse(s)?)
}

/// `--val-split`: [`RunSettings::check_val_split`].
fn val_split(s: &str) -> Result<f64, String> {
    RunSettings::check_val_split(finite(s)?)
}

/// `KEY=VALUE`, split at the first `=`.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

/// A `--record` note: KEY=VALUE whose key is not one of the tool's own
/// ([`crate::model_file::reserved_keys`]).
fn note(s: &str) -> Result<(String, String), String> {
    let (key, value) = key_value(s)?;
    if crate::model_file::reserved_keys().contains(&key.as_str()) {
        return Err(format!(
            "the key {key:?} is lenet's own (it decides how the file is read or records what \
             eval measures): choose another name"
        ));
    }
    Ok((key, value))
}

/// A value in [0, 1): the momentum.
fn unit_interval_open(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be in [0, 1), found {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse_args(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lenet").chain(args.iter().copied()))
    }

    fn train(args: &[&str]) -> Result<TrainArgs, clap::Error> {
        let mut all = vec!["train"];
        all.extend_from_slice(args);
        match parse_args(&all)?.command {
            Command::Train(t) => Ok(t),
            other => panic!("expected train, got {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plain_sgd_needs_no_nesterov_flag() {
        // `--momentum 0` alone must give plain SGD, not a Nesterov-without-momentum error.
        assert!(!train(&["--momentum", "0"]).unwrap().nesterov());
        assert!(train(&["--momentum", "0.5"]).unwrap().nesterov());
        assert!(!train(&["--momentum", "0.5", "--nesterov", "false"])
            .unwrap()
            .nesterov());
        // An explicit contradiction is kept, so that nn's validation reports it.
        assert!(train(&["--momentum", "0", "--nesterov", "true"])
            .unwrap()
            .nesterov());
    }

    #[test]
    fn train_defaults_are_the_nn_defaults() {
        let t = train(&[]).unwrap();
        let d = TrainConfig::default();
        assert_eq!(t.epochs, 10);
        assert_eq!(t.data.dataset, None);
        assert_eq!(
            (t.batch_size, t.seed, t.nesterov()),
            (d.batch_size, d.seed, d.nesterov)
        );
        assert_eq!(
            (t.lr, t.momentum, t.weight_decay),
            (d.lr, d.momentum, d.weight_decay)
        );
        assert_eq!(t.schedule, d.schedule);
        assert_eq!(t.activation, d.model.activation);
        assert_eq!(t.pool, d.model.pooling);
        assert_eq!(t.val_split, 0.0);
        assert!(!t.augment && t.threads.is_none() && t.limit.is_none());
        assert!(t.validate().is_ok());
    }

    #[test]
    fn train_accepts_every_flag() {
        let t = train(&[
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            "/d",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--lr",
            "0.05",
            "--momentum",
            "0.5",
            "--nesterov",
            "false",
            "--weight-decay",
            "0",
            "--schedule",
            "step",
            "--step-size",
            "2",
            "--gamma",
            "0.5",
            "--activation",
            "tanh",
            "--pool",
            "max",
            "--seed",
            "7",
            "--threads",
            "2",
            "--save",
            "w.safetensors",
            "--resume",
            "r",
            "--metrics",
            "m.jsonl",
            "--plot",
            "p.svg",
            "--augment",
            "--val-split",
            "0.1",
            "--early-stopping",
            "2",
            "--limit",
            "100",
        ])
        .unwrap();
        assert_eq!(t.data.dataset, Some(DatasetKind::FashionMnist));
        assert_eq!(t.data.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(
            (t.epochs, t.batch_size, t.threads, t.limit),
            (3, 32, Some(2), Some(100))
        );
        assert_eq!(
            (t.lr, t.momentum, t.weight_decay, t.nesterov()),
            (0.05, 0.5, 0.0, false)
        );
        assert_eq!((t.schedule.name(), t.step_size, t.gamma), ("step", 2, 0.5));
        assert_eq!(
            (t.activation, t.pool),
            (ActivationKind::Tanh, PoolKind::Max)
        );
        assert_eq!((t.seed, t.early_stopping, t.val_split), (7, Some(2), 0.1));
        assert_eq!(t.save, Some(PathBuf::from("w.safetensors")));
        assert!(t.augment && t.resume.is_some() && t.metrics.is_some() && t.plot.is_some());
        assert!(t.validate().is_ok());
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for bad in [
            &["--epochs", "0"][..],
            &["--epochs", "-1"],
            &["--epochs", "ten"],
            &["--batch-size", "0"],
            &["--lr", "0"],
            &["--lr", "-0.1"],
            &["--lr", "NaN"],
            &["--lr", "inf"],
            &["--momentum", "1"],
            &["--momentum", "-0.5"],
            &["--weight-decay", "-1e-4"],
            &["--val-split", "1"],
            &["--val-split", "1.5"],
            &["--val-split", "-0.1"],
            &["--threads", "0"],
            &["--threads", "100000"],
            &["--threads", "1000"],
            &["--lr", "1e308"],
            &["--lr", "1e-50"],
            &["--lr", "1000"],
            &["--early-stopping", "0"],
            &["--limit", "0"],
            &["--gamma", "0"],
            &["--gamma", "2"],
            &["--step-size", "0"],
            &["--nesterov", "maybe"],
            &["--dataset", "cifar"],
            &["--schedule", "linear"],
            &["--activation", "gelu"],
            &["--pool", "min"],
        ] {
            let err = train(bad).expect_err(&format!("{bad:?} must be rejected"));
            let msg = err.to_string();
            assert!(
                msg.contains(bad[0]),
                "{bad:?}: message {msg:?} must name the flag"
            );
        }
    }

    #[test]
    fn early_stopping_needs_a_validation_split() {
        let err = train(&["--early-stopping", "3"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("--val-split"), "{err}");
        assert!(train(&["--early-stopping", "3", "--val-split", "0.1"])
            .unwrap()
            .validate()
            .is_ok());
    }

    #[test]
    fn other_subcommands() {
        match parse_args(&["eval", "--model", "w.safetensors", "--json"])
            .unwrap()
            .command
        {
            Command::Eval(e) => {
                assert!(e.json);
                assert_eq!(e.model, Some(PathBuf::from("w.safetensors")));
            }
            other => panic!("{other:?}"),
        }
        match parse_args(&["predict", "--model", "w", "a.png", "b.jpg"])
            .unwrap()
            .command
        {
            Command::Predict(p) => assert_eq!(p.images.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(
            parse_args(&["predict", "--model", "w"]).is_err(),
            "an image is required"
        );
        match parse_args(&["eval"]).unwrap().command {
            Command::Eval(e) => assert_eq!(e.model, None, "the built-in model"),
            other => panic!("{other:?}"),
        }
        assert!(
            parse_args(&["eval", "--record", "seed=1"]).is_err(),
            "--record needs a --model file"
        );
        match parse_args(&["download", "--dataset", "fashion-mnist"])
            .unwrap()
            .command
        {
            Command::Download(d) => assert_eq!(d.dataset, Some(DatasetKind::FashionMnist)),
            other => panic!("{other:?}"),
        }
    }
}
