//! Atomic file writes: a reader sees either the old file or the complete new one, never a
//! half-written file, even if the process dies mid-write.
//!
//! A write goes to a temporary file next to the target, is synced, then renamed over it, and the
//! folder is synced so that the rename itself survives a power cut. The
//! temporary file is created exclusively (`O_CREAT | O_EXCL`: nothing already there, not even
//! a symbolic link, is opened) under an unpredictable name, `.lenet.tmp-<pid>-<random>`, whose
//! length does not depend on the target's. A target that is a symbolic link is written
//! through: the temporary file goes next to the file the link points to and replaces that
//! file, so the link stays; an existing target keeps its permissions.
//!
//! A process killed between the write and the rename leaves its temporary file behind: the
//! next write into the same folder removes the temporaries of processes that no longer run
//! (Linux, where `/proc` tells which processes are alive).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Start of every temporary file name.
const TEMP_PREFIX: &str = ".lenet.tmp-";

/// Most symbolic links followed to find the file a write replaces (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed and synced to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_all(&[(path, bytes)], || Ok(()))
}

/// Writes several files so that none is replaced unless every one was written completely:
/// all temporary files are written and synced first (a full disk fails here, replacing
/// nothing), then renamed over their targets in the order given. Only a crash between two
/// renames leaves a mix of new and old files; callers that care record a generation number in
/// each file to detect it.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> io::Result<()> {
    replace_all(files, || Ok(()))
}

/// Replaces `path` by `bytes` only if it still holds `expected` (the bytes the new content was
/// made from): the file is read again just before the rename, and a file changed in between
/// is left as it is, with an error of kind `Other` saying so.
pub fn replace_if_unchanged(path: &Path, expected: &[u8], bytes: &[u8]) -> io::Result<()> {
    replace_all(&[(path, bytes)], || {
        if fs::read(resolve_link(path)?)? == expected {
            Ok(())
        } else {
            Err(io::Error::other(
                "the file changed since it was read (another process wrote it): left as it is",
            ))
        }
    })
}

/// Makes the renames into `dir` durable where the platform allows it (a folder opened and
/// synced on Unix); a failure here is not an error: the files are already complete.
fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Writes every temporary file, runs `before_rename` (which may veto the replacement), then
/// renames the temporaries over their targets; on any error the temporaries are removed.
fn replace_all(
    files: &[(&Path, &[u8])],
    before_rename: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let mut temps: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let result = (|| {
        for (path, bytes) in files {
            let target = resolve_link(path)?;
            let temp = write_temp(&target, bytes)?;
            temps.push((temp, target));
        }
        before_rename()?;
        for (temp, target) in &temps {
            fs::rename(temp, target)?;
        }
        for (_, target) in &temps {
            sync_dir(target.parent().unwrap_or(Path::new(".")));
        }
        Ok(())
    })();
    if result.is_err() {
        for (temp, _) in &temps {
            let _ = fs::remove_file(temp);
        }
    }
    result
}

/// A new temporary file next to `target` holding `bytes`, synced, with `target`'s permissions
/// if it exists. Nothing is left behind on error.
fn write_temp(target: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let dir = parent_dir(target);
    remove_stale_temps(dir, target.file_name());
    let (mut file, temp) = create_temp(dir)?;
    let written = (|| {
        if let Ok(meta) = fs::metadata(target) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.flush()?;
        file.sync_all()
    })();
    match written {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Creates a new, empty file in `dir` under an unpredictable name,
/// `.lenet.tmp-<pid>-<16 random hex digits>`, exclusively (see [`create_new`]); returns it
/// with its path. The caller removes or renames it.
pub fn create_temp(dir: &Path) -> io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..16 {
        let name = format!(
            "{TEMP_PREFIX}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = dir.join(name);
        match create_new(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("16 attempts"))
}

/// Opens `path` for writing only if nothing is there (`O_CREAT | O_EXCL`): an existing file or
/// a symbolic link, even a dangling one, is an `AlreadyExists` error and is not touched. The
/// new file gets mode 0666 less the umask, as `File::create` gives.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// The file a write to `path` replaces: `path` itself, or, if it is a symbolic link, the file
/// it points to (through up to 40 links; a relative link is read from the link's folder). The
/// result may not exist yet (a new file, or a dangling link's target).
pub fn resolve_link(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p)?;
                p = parent_dir(&p).join(target);
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "{}: more than {MAX_LINKS} symbolic links in a row",
        path.display()
    )))
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Removes from `dir` the temporary files of processes that are no longer running: this
/// module's (`.lenet.tmp-<pid>-…`) and, for `name`, those of earlier versions
/// (`.<name>.tmp-<pid>-…`). Best effort: errors are ignored, and nothing is removed where
/// liveness is unknown.
fn remove_stale_temps(dir: &Path, name: Option<&OsStr>) {
    let legacy: Option<Vec<u8>> =
        name.map(|n| [&b"."[..], n.as_encoded_bytes(), &b".tmp-"[..]].concat());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let bytes = file_name.as_encoded_bytes();
        let rest = bytes
            .strip_prefix(TEMP_PREFIX.as_bytes())
            .or_else(|| legacy.as_deref().and_then(|l| bytes.strip_prefix(l)));
        if rest.and_then(pid_of).is_some_and(process_is_gone) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The process id at the start of `<pid>-…`.
fn pid_of(rest: &[u8]) -> Option<u32> {
    let digits = rest.split(|&b| b == b'-').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// True if no process `pid` runs (only known on Linux; elsewhere: false, keep the file).
pub fn process_is_gone(pid: u32) -> bool {
    cfg!(target_os = "linux")
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(names(dir.path()), ["a.bin"]);
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
        // A path whose folder is missing fails while the temporaries are written.
        let missing = dir.path().join("gone/weights.bin");
        assert!(write_atomic_all(&[(&first, b"new"), (&missing, b"new")]).is_err());
        assert_eq!(fs::read(&first).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["state.bin", "weights.bin"]);
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
        let dead = dir.path().join(".lenet.tmp-4194305-0123456789abcdef");
        let dead_legacy = dir.path().join(".w.bin.tmp-4194305-0");
        let alive = dir.path().join(format!(
            ".lenet.tmp-{}-0000000000000000",
            std::process::id()
        ));
        let other = dir.path().join(".x.bin.tmp-4194305-0");
        for f in [&dead, &dead_legacy, &alive, &other] {
            fs::write(f, b"partial").unwrap();
        }
        write_atomic(&p, b"data").unwrap();
        assert!(
            !dead.exists() && !dead_legacy.exists(),
            "stale temporary kept"
        );
        assert!(alive.exists() && other.exists());
    }

    // ---- temporary files: exclusive, unpredictable, independent of the target's name ----

    /// Links planted where the temporary file of a predictable scheme would go
    /// (`.<name>.tmp-<pid>-<counter>`) are never opened: the victim keeps its bytes.
    #[cfg(unix)]
    #[test]
    fn planted_links_at_guessable_temp_names_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let pid = std::process::id();
        for n in 0..256 {
            let link = dir.path().join(format!(".w.bin.tmp-{pid}-{n}"));
            std::os::unix::fs::symlink(&victim, link).unwrap();
        }
        let target = dir.path().join("w.bin");
        write_atomic(&target, b"checkpoint").unwrap();
        write_atomic_all(&[(&target, b"again")]).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&target).unwrap(), b"again");
    }

    /// `create_new` refuses an existing name, a link to a file and a dangling link, and
    /// leaves each as it was.
    #[cfg(unix)]
    #[test]
    fn create_new_never_opens_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling");
        let absent = dir.path().join("absent");
        std::os::unix::fs::symlink(&absent, &dangling).unwrap();
        for p in [&victim, &link, &dangling] {
            let e = create_new(p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{}", p.display());
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!absent.exists(), "the dangling link's target was created");
    }

    /// Two temporary files in one folder get different names that a pid and a counter do not
    /// predict, and their length does not grow with the target's name.
    #[test]
    fn temp_names_are_random_and_short() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = create_temp(dir.path()).unwrap();
        let (_, b) = create_temp(dir.path()).unwrap();
        assert_ne!(a, b);
        let suffix = |p: &Path| p.to_string_lossy().rsplit('-').next().unwrap().to_string();
        assert_ne!(suffix(&a), suffix(&b));
        assert_eq!(suffix(&a).len(), 16, "{}", a.display());
        // A legal 230-byte name: its temporary name is far under the 255-byte limit.
        let long = dir.path().join("w".repeat(230));
        write_atomic(&long, b"x").unwrap();
        assert_eq!(fs::read(&long).unwrap(), b"x");
    }

    // ---- symbolic links and permissions: written through, kept ----

    #[cfg(unix)]
    #[test]
    fn a_link_is_written_through_and_the_mode_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("real");
        fs::create_dir(&sub).unwrap();
        let target = sub.join("w.bin");
        fs::write(&target, b"old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("w.link");
        std::os::unix::fs::symlink("real/w.bin", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(&sub), ["w.bin"], "no temporary file left");
    }

    // ---- replace only what was read ----

    #[test]
    fn replace_if_unchanged_refuses_a_file_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        fs::write(&p, b"read").unwrap();
        replace_if_unchanged(&p, b"read", b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        let e = replace_if_unchanged(&p, b"read", b"newer").unwrap_err();
        assert!(e.to_string().contains("changed"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["w.bin"]);
    }
}
