//! `lenet download`: fetch a dataset from the mirrors and verify every file's SHA-256.

use anyhow::Result;
use mnist::{DatasetKind, FileStatus};

use crate::args::DataArgs;
use crate::{data, outln};

/// Runs `lenet download`.
pub fn run(args: &DataArgs) -> Result<()> {
    let kind = args.dataset.unwrap_or(DatasetKind::Mnist);
    let dir = mnist::resolve_data_dir(kind, args.data_dir.as_deref());
    let reports = data::fetch(kind, &dir)?;
    for r in &reports {
        for f in &r.failed_mirrors {
            crate::errln!("warning: {}: {} failed: {}", r.name, f.url, f.reason);
        }
        match &r.status {
            FileStatus::AlreadyPresent => {
                outln!("{}: already present, checksum verified", r.path.display())?
            }
            FileStatus::Downloaded { url, bytes } => outln!(
                "{}: downloaded {bytes} bytes from {url}, checksum verified",
                r.path.display()
            )?,
        }
    }
    outln!("{} is ready in {}", kind.display_name(), dir.display())?;
    Ok(())
}
