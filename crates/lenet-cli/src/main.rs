//! `lenet`: train, evaluate and run LeNet-5 on MNIST and Fashion-MNIST.
//!
//! One file per concept: `args` (the command line), `data` (finding and adapting the data),
//! `train`, `eval`, `predict`, `download` (the subcommands), `report` (progress bar and epoch
//! lines), `metrics` (JSONL), `plot` (SVG), `confusion` (the matrix), `preprocess` (photos to
//! MNIST-style 28×28 images), `model_file` (the dataset recorded in a weights file), `builtin`
//! (the model built into the binary), `out` (printing without panicking), `outputs` (the checks
//! every output passes before any work: no collisions, writable, locked) and `limits` (thread,
//! memory and kernel checks).

mod args;
mod bench;
mod builtin;
mod confusion;
mod data;
mod download;
mod eval;
mod limits;
mod metrics;
mod model_file;
mod model_source;
mod out;
mod outputs;
mod plot;
mod predict;
mod preprocess;
mod report;
mod serve;
mod summary;
mod train;
mod visualize;

use std::process::ExitCode;

use args::{Cli, Command};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let cli = parse();
    let result = limits::check_kernel_tier()
        .and_then(|()| limits::check_rayon_threads())
        .and_then(|()| match &cli.command {
            Command::Train(a) => train::run(a),
            Command::Eval(a) => eval::run(a),
            Command::Predict(a) => predict::run(a),
            Command::Download(a) => download::run(a),
            Command::Serve(a) => serve::run(a),
            Command::Summary(a) => summary::run(a),
            Command::Visualize(a) => visualize::run(a),
            Command::Bench(a) => bench::run(a),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`lenet ... | head`) ends quietly, as other Unix tools do.
        Err(err) if out::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole cause chain: "error: what failed: why: root cause".
            crate::errln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, with the flags given to `train` recorded (see `TrainArgs::given`).
fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Train(t), Some(("train", m))) = (&mut cli.command, matches.subcommand()) {
        t.given = given_ids(m);
    }
    cli
}

/// Ids of the arguments that come from the command line.
fn given_ids(m: &ArgMatches) -> Vec<String> {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}
