//! Atomic file writes: a reader sees either the old file or the complete new one, never a
//! half-written file, even if the process dies mid-write.
//!
//! A write goes to `.<name>.tmp-<pid>-<n>` next to the target, is synced, then renamed over
//! it. A process killed between the two leaves that temporary file behind: the next write to
//! the same target removes the temporaries of processes that no longer run (Linux, where
//! `/proc` tells which processes are alive).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed and synced to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_all(&[(path, bytes)])
}

/// Writes several files so that none is replaced unless every one was written completely:
/// all temporary files are written and synced first (a full disk fails here, replacing
/// nothing), then renamed over their targets in the order given. Only a crash between two
/// renames leaves a mix of new and old files; callers that care record a generation number in
/// each file to detect it.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> io::Result<()> {
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let result = (|| {
        for (path, bytes) in files {
            remove_stale_temps(path);
            let tmp = temp_path(path)?;
            temps.push(tmp.clone());
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.flush()?;
            file.sync_all()?;
        }
        for ((path, _), tmp) in files.iter().zip(&temps) {
            fs::rename(tmp, path)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for tmp in &temps {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// `.<name>.tmp-` : the start of every temporary file name for `name`.
fn temp_prefix(name: &std::ffi::OsStr) -> String {
    format!(".{}.tmp-", name.to_string_lossy())
}

/// `.<name>.tmp-<pid>-<counter>` next to `path` (same directory, so rename is atomic).
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let tmp_name = format!(
        "{}{}-{}",
        temp_prefix(name),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    Ok(path.with_file_name(tmp_name))
}

/// Removes the temporary files of `path` left by processes that are no longer running
/// (best effort: errors are ignored, and nothing is removed where liveness is unknown).
fn remove_stale_temps(path: &Path) {
    let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = temp_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(process_is_gone) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// True if no process `pid` runs (only known on Linux; elsewhere: false, keep the file).
fn process_is_gone(pid: u32) -> bool {
    cfg!(target_os = "linux")
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/a.bin");
        assert!(write_atomic(&p, b"x").is_err());
    }

    /// If the second file cannot be written, the first keeps its old content.
    #[test]
    fn a_pair_is_replaced_both_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("state.bin");
        let second = dir.path().join("weights.bin");
        write_atomic_all(&[(&first, b"old"), (&second, b"old")]).unwrap();
        // A directory in place of the second file: its rename fails, after the temporaries
        // were written. Use a path whose folder is missing to fail while writing instead.
        let missing = dir.path().join("gone/weights.bin");
        assert!(write_atomic_all(&[(&first, b"new"), (&missing, b"new")]).is_err());
        assert_eq!(fs::read(&first).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        write_atomic_all(&[(&first, b"new"), (&second, b"new")]).unwrap();
        assert_eq!(fs::read(&second).unwrap(), b"new");
    }

    /// Temporaries of dead processes are removed by the next write; those of live ones stay.
    #[cfg(target_os = "linux")]
    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        // Above Linux's largest possible pid (2^22), so never a running process.
        let dead = dir.path().join(".w.bin.tmp-4194305-0");
        let alive = dir
            .path()
            .join(format!(".w.bin.tmp-{}-999", std::process::id()));
        let other = dir.path().join(".x.bin.tmp-4194305-0");
        for f in [&dead, &alive, &other] {
            fs::write(f, b"partial").unwrap();
        }
        write_atomic(&p, b"data").unwrap();
        assert!(!dead.exists(), "stale temporary file kept");
        assert!(alive.exists() && other.exists());
    }
}
