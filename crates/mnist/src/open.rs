//! Opening data files: only regular files are read. A named pipe (FIFO) would block the reader
//! until some other program writes to it, and a device such as `/dev/zero` never ends, so both
//! are refused before any byte is read. A symlink loop fails with the system's ELOOP error
//! ("too many levels of symbolic links"), never as a missing file.

use std::fs::{self, File, FileType};
use std::io;
use std::path::Path;

/// Opens `path` for reading if it is a regular file (symlinks are followed).
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    ensure_regular(path)?;
    let file = File::open(path)?;
    // And again on what was opened, in case the entry was swapped in between.
    check_regular(file.metadata()?.file_type())?;
    Ok(file)
}

/// True if there is something at `path` (following symlinks), false if nothing is there. Any
/// other failure to look, a symlink loop (ELOOP) for one, is an error, not "missing".
pub(crate) fn exists(path: &Path) -> io::Result<bool> {
    path.try_exists()
}

/// Ok if `path` is a regular file (symlinks are followed); else an `InvalidInput` error saying
/// "not a regular file" and what it is, or the error met while looking (ELOOP for a loop).
pub(crate) fn ensure_regular(path: &Path) -> io::Result<()> {
    check_regular(fs::metadata(path)?.file_type())
}

fn check_regular(kind: FileType) -> io::Result<()> {
    if kind.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file: it is {}", describe(kind)),
    ))
}

/// What a file that is not a regular file is, for people.
fn describe(kind: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}
