//! `lenet`: train, evaluate and run LeNet-5 on MNIST and Fashion-MNIST.
//!
//! One file per concept: `args` (the command line), `data` (finding and adapting the data),
//! `train`, `eval`, `predict`, `download` (the subcommands), `report` (progress bar and epoch
//! lines), `metrics` (JSONL), `plot` (SVG), `confusion` (the matrix), `preprocess` (photos to
//! MNIST-style 28×28 images), `model_file` (the dataset recorded in a weights file) and `builtin`
//! (the model built into the binary).

mod args;
mod builtin;
mod confusion;
mod data;
mod download;
mod eval;
mod metrics;
mod model_file;
mod model_source;
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
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Download(a) => download::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Summary(a) => summary::run(a),
        Command::Visualize(a) => visualize::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole cause chain: "error: what failed: why: root cause".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
