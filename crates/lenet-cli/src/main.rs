//! `lenet`: train, evaluate and run LeNet-5 on MNIST and Fashion-MNIST.

mod args;
mod atomic;
mod confusion;
mod metrics;
mod plot;
mod preprocess;
mod report;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole cause chain: "error: outer: inner: root cause".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<()> {
    anyhow::bail!("{:?}: not built yet", cli.command)
}
