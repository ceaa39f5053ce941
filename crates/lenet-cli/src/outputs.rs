//! One guard for the files a command writes, checked before any work is done: no two outputs
//! are the same file, no output is one of the command's inputs (compared after following
//! links, by device and inode when the file exists: see [`nn::guard::FileId`]), each output's
//! folder exists and takes a file of that name, and nothing that is not a regular file is
//! replaced. The writes themselves are atomic ([`nn::atomic`]); a run that saves weights holds
//! their lock ([`lock`]).

use std::path::Path;

use anyhow::{Context, Result};
use nn::guard::{same_file, RunLock};

/// Refuses two `outputs` that are the same file, and an output that is one of the `inputs`;
/// each file is named with the flag that gives it (e.g. `("--plot", path)`).
pub fn check_distinct(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<()> {
    for (i, (flag, out)) in outputs.iter().enumerate() {
        for (other, earlier) in &outputs[..i] {
            anyhow::ensure!(
                !same_file(out, earlier),
                "{flag} {} and {other} {} are the same file: one output would destroy the \
                 other; give them different names",
                out.display(),
                earlier.display()
            );
        }
        for (input_flag, input) in inputs {
            anyhow::ensure!(
                !same_file(out, input),
                "{flag} {} is the {input_flag} file {}: refusing to overwrite an input",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Fails now rather than after the work if `p` cannot be written: its folder does not exist
/// or is not a folder, it exists and is not a regular file (a device, a FIFO: replacing
/// /dev/null is not what anyone wants), or the folder does not take a file of that name (not
/// writable, or the name too long: see [`nn::guard::probe_writable`]).
pub fn check_writable(flag: &str, p: &Path) -> Result<()> {
    let dir = nn::atomic::parent_dir(p);
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "{flag} {}: the folder {} does not exist",
                p.display(),
                dir.display()
            )
        }
        Err(e) => anyhow::bail!("{flag} {}: cannot use {}: {e}", p.display(), dir.display()),
        Ok(m) if !m.is_dir() => {
            anyhow::bail!("{flag} {}: {} is not a folder", p.display(), dir.display())
        }
        Ok(_) => {}
    }
    if let Some(kind) = std::fs::metadata(p)
        .ok()
        .and_then(|m| nn::checkpoint::not_regular(&m))
    {
        anyhow::bail!(
            "{flag} {}: exists and is not a regular file ({kind}): refusing to replace it",
            p.display()
        );
    }
    nn::guard::probe_writable(p).with_context(|| {
        format!(
            "{flag} {}: cannot write a file of that name in the folder {}",
            p.display(),
            dir.display()
        )
    })
}

/// Takes the lock of `path` (`path.lock`, see [`RunLock`]) for as long as the result lives;
/// another process holding it is refused, naming the file and what holds it.
pub fn lock(flag: &str, path: &Path) -> Result<RunLock> {
    RunLock::try_acquire(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            anyhow::anyhow!(
                "{flag} {}: another lenet run is writing it (its lock {} is held); wait for \
                 it to finish or choose another name",
                path.display(),
                nn::guard::with_suffix(path, ".lock").display()
            )
        } else {
            anyhow::anyhow!("{flag} {}: cannot take its lock: {e}", path.display())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old write probe was `.lenet-write-test-<pid>`, opened with truncation: a link
    /// planted there emptied its target. The probe now never opens anything already there.
    #[cfg(unix)]
    #[test]
    fn the_write_probe_follows_no_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir
            .path()
            .join(format!(".lenet-write-test-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, planted).unwrap();
        check_writable("--save", &dir.path().join("w.safetensors")).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn collisions_name_both_flags() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.safetensors");
        let same = dir.path().join(".").join("w.safetensors");
        let e = check_distinct(&[("--save", &w), ("--plot", &same)], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("--save") && msg.contains("--plot"), "{msg}");
        let e = check_distinct(&[("--metrics", &w)], &[("--resume", &same)]).unwrap_err();
        assert!(e.to_string().contains("--resume"), "{e}");
        let other = dir.path().join("v.svg");
        check_distinct(&[("--save", &w), ("--plot", &other)], &[]).unwrap();
    }
}
