//! Downloads (or verifies) one dataset, then loads it.
//!
//! ```sh
//! cargo run -p lenet-mnist --example download -- --dataset mnist --dir /tmp/x
//! LENET_MIRRORS=http://127.0.0.1:8000/ cargo run -p lenet-mnist --example download -- --dataset mnist
//! ```
//! Without `--dir`, the folder is `$LENET_DATA_DIR/<dataset>` or `./data/<dataset>`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use mnist::{
    ensure_dataset, mirrors_from_env, resolve_data_dir, Dataset, DatasetKind, DownloadOptions,
    FileStatus,
};

fn main() -> ExitCode {
    let mut kind = DatasetKind::Mnist;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--dataset", Some(name)) => match name.parse() {
                Ok(k) => kind = k,
                Err(e) => return fail(&e),
            },
            ("--dir", Some(d)) => dir = Some(PathBuf::from(d)),
            _ => {
                eprintln!("usage: download [--dataset mnist|fashion-mnist] [--dir DIR]");
                return ExitCode::from(2);
            }
        }
    }

    let dir = resolve_data_dir(kind, dir.as_deref());
    println!(
        "{} into {} (mirrors: {})",
        kind.display_name(),
        dir.display(),
        mirrors_from_env(kind).join(", ")
    );
    let start = Instant::now();
    let reports = match ensure_dataset(kind, &dir, &DownloadOptions::default()) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    for r in &reports {
        for f in &r.failed_mirrors {
            println!("  warning: {} failed: {}", f.url, f.reason);
        }
        match &r.status {
            FileStatus::AlreadyPresent => println!("  {}: already present, checksum ok", r.name),
            FileStatus::Downloaded { url, bytes } => {
                println!(
                    "  {}: downloaded {bytes} bytes from {url}, checksum ok",
                    r.name
                )
            }
        }
    }
    let ds = match Dataset::load(kind, &dir) {
        Ok(ds) => ds,
        Err(e) => return fail(&e),
    };
    println!(
        "Loaded {}: {} training and {} test images of 28x28 in {:.2?}; training class counts {:?}",
        kind.display_name(),
        ds.train.len(),
        ds.test.len(),
        start.elapsed(),
        ds.train.class_counts()
    );
    ExitCode::SUCCESS
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::FAILURE
}
