//! Checks made before a file is written, so that no output destroys data: whether two paths
//! are the same file ([`FileId`]), whether a folder takes a file of a given name
//! ([`probe_writable`]), and a lock that one run holds on the files it saves ([`RunLock`]).
//! The writes themselves go through [`crate::atomic`].

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{create_new, parent_dir, resolve_link};

/// What makes a file the file it is: its device and inode when it exists (so symbolic links
/// and hard links to it compare equal), else the canonical path of its folder with its name
/// (after following a link to a file not yet created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileId {
    /// An existing file: device and inode.
    Inode(u64, u64),
    /// A file still to be created: where it will be.
    Path(PathBuf),
}

impl FileId {
    /// The identity of `path`.
    pub fn of(path: &Path) -> FileId {
        #[cfg(unix)]
        if let Ok(m) = fs::metadata(path) {
            use std::os::unix::fs::MetadataExt;
            return FileId::Inode(m.dev(), m.ino());
        }
        let target = resolve_link(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = parent_dir(&target);
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        FileId::Path(dir.join(target.file_name().unwrap_or_default()))
    }
}

/// True if `a` and `b` name the same file (see [`FileId`]).
pub fn same_file(a: &Path, b: &Path) -> bool {
    FileId::of(a) == FileId::of(b)
}

/// `path` with `suffix` appended to its file name, byte for byte (a name that is not UTF-8
/// keeps its bytes): `w.safetensors` → `w.safetensors.lock`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Checks that a file named like `path` can be created in its folder: creates, exclusively, a
/// file with an unpredictable name of the same length (at least 32 bytes) in that folder and
/// removes it. A name too long for the file system, a read-only or full folder fails here, with
/// the system's error, instead of after an epoch of training.
pub fn probe_writable(path: &Path) -> io::Result<()> {
    let target = resolve_link(path)?;
    let dir = parent_dir(&target);
    let len = target.file_name().map_or(0, |n| n.len()).max(32);
    let mut last = None;
    for _ in 0..16 {
        let random = format!("{:032x}", rand::random::<u128>());
        let mut name = String::from(".lenet.probe-");
        while name.len() < len {
            name.push_str(&random[..(len - name.len()).min(random.len())]);
        }
        let probe = dir.join(name);
        match create_new(&probe) {
            Ok(_) => return fs::remove_file(&probe),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("16 attempts"))
}

/// A new random identifier, 16 hex digits (64 bits from the thread's OS-seeded generator): the
/// run id stamped on both files of a saved pair.
pub fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// An exclusive advisory lock (`flock`) on `<file>.lock`, held by one run for as long as it
/// writes `<file>` and the files that go with it; the lock file is removed when the lock is
/// dropped. A second run asking for the same lock gets an error of kind `WouldBlock` at once.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `target` (the file a link points to, if it is one), or fails with
    /// `WouldBlock` if another process holds it. The lock file is created exclusively or, if
    /// it is there, opened only if it is a regular file (never through a link).
    pub fn try_acquire(target: &Path) -> io::Result<RunLock> {
        let path = with_suffix(&resolve_link(target)?, ".lock");
        // The holder removes the file before unlocking: a file opened just before that is no
        // longer the lock once locked, and the next attempt opens the new one.
        for _ in 0..8 {
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is held by another process", path.display()),
                    ))
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
            if still_at(&file, &path) {
                return Ok(RunLock { file, path });
            }
        }
        Err(io::Error::other(format!(
            "{} keeps being replaced",
            path.display()
        )))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked; the lock goes with the file handle.
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Creates the lock file exclusively, or opens the regular file already there.
fn open_lock_file(path: &Path) -> io::Result<File> {
    match create_new(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path)?;
            if !meta.file_type().is_file() {
                return Err(io::Error::other(format!(
                    "{} exists and is not a regular file",
                    path.display()
                )));
            }
            let file = OpenOptions::new().write(true).open(path)?;
            if still_at(&file, path) {
                Ok(file)
            } else {
                Err(io::Error::other(format!(
                    "{} was replaced while it was opened",
                    path.display()
                )))
            }
        }
        other => other,
    }
}

/// True if `path` (not followed if a link) is the file `file` has open.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Without inodes to compare, the file opened is taken to be the one at `path`.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- one file, however it is named ----

    #[cfg(unix)]
    #[test]
    fn links_hard_links_and_other_spellings_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.safetensors");
        fs::write(&w, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("w.safetensors", &link).unwrap();
        let hard = dir.path().join("hard");
        fs::hard_link(&w, &hard).unwrap();
        let spelled = dir.path().join("sub/../w.safetensors");
        fs::create_dir(dir.path().join("sub")).unwrap();
        for other in [&link, &hard, &spelled] {
            assert!(same_file(&w, other), "{}", other.display());
        }
        assert!(!same_file(&w, &dir.path().join("v.safetensors")));
        // Files still to be created: by folder and name, through a dangling link too.
        let new = dir.path().join("new.svg");
        let to_new = dir.path().join("to-new");
        std::os::unix::fs::symlink("new.svg", &to_new).unwrap();
        assert!(same_file(&new, &dir.path().join("sub/../new.svg")));
        assert!(same_file(&new, &to_new));
        assert!(!same_file(&new, &w));
    }

    #[cfg(unix)]
    #[test]
    fn suffixes_keep_the_bytes_of_a_name() {
        use std::os::unix::ffi::OsStrExt;
        let a = Path::new(std::ffi::OsStr::from_bytes(b"d/a\xff"));
        let b = Path::new(std::ffi::OsStr::from_bytes(b"d/a\xfe"));
        assert_ne!(with_suffix(a, ".lock"), with_suffix(b, ".lock"));
        assert_eq!(
            with_suffix(a, ".lock").as_os_str().as_bytes(),
            b"d/a\xff.lock"
        );
    }

    // ---- names checked before the work ----

    #[test]
    fn probe_checks_the_name_length_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        probe_writable(&dir.path().join("w".repeat(230))).unwrap();
        let e = probe_writable(&dir.path().join("w".repeat(300))).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("too long"), "{e}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    // ---- one run per saved pair ----

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w.safetensors");
        let first = RunLock::try_acquire(&w).unwrap();
        assert_eq!(first.path(), dir.path().join("w.safetensors.lock"));
        let e = RunLock::try_acquire(&w).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        drop(first);
        assert!(!dir.path().join("w.safetensors.lock").exists());
        let again = RunLock::try_acquire(&w).unwrap();
        drop(again);
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_file_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("w.lock")).unwrap();
        assert!(RunLock::try_acquire(&dir.path().join("w")).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }
}
