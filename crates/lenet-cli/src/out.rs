//! Standard output and standard error that never panic (`println!` and `eprintln!` panic when
//! their stream is a closed pipe or a full disk).
//!
//! Every subcommand prints through [`outln!`](crate::outln), which returns a `Result`. A
//! closed pipe (`lenet eval ... | head -1`) ends the program quietly with success, as other
//! Unix tools do (see [`is_broken_pipe`], checked in `main`); any other failure (a full disk)
//! is an `error:`. A long job that must finish its work whatever happens to stdout (`train`,
//! whose point is the saved weights) prints through [`Deferred`] instead, which keeps the
//! first failure for the end.
//!
//! Errors, warnings and notes go to stderr through [`errln!`](crate::errln), which ignores a
//! failed write: with stderr gone there is nowhere left to report it, and the exit code still
//! tells what happened (`lenet predict x.png 2>&1 | head -c 10` ends with the code it would
//! have had).

use std::fmt;
use std::io::{self, Write};

/// Writing to standard output failed.
#[derive(Debug)]
pub struct StdoutError(pub io::Error);

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

/// Writes one line to stdout and flushes it.
pub fn line(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

/// `println!` that returns a `Result<(), StdoutError>` instead of panicking.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// Writes one line to stderr, ignoring a failure (see the module documentation).
pub fn err_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err
        .write_fmt(args)
        .and_then(|()| err.write_all(b"\n"))
        .and_then(|()| err.flush());
}

/// `eprintln!` that never panics: a line that cannot be written to stderr is dropped.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::err_line(format_args!($($arg)*))
    };
}

/// True if `err` is (or was caused by) a write to a closed stdout pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<StdoutError>()
            .is_some_and(|e| e.0.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Lines for a job that goes on when stdout fails: the first failure is kept, later lines
/// are dropped, and [`Deferred::finish`] returns the failure once the job is done.
#[derive(Debug, Default)]
pub struct Deferred {
    error: Option<StdoutError>,
}

impl Deferred {
    /// Prints one line unless stdout has already failed.
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        if self.error.is_none() {
            self.error = line(args).err();
        }
    }

    /// The first failure, if any.
    pub fn finish(self) -> Result<(), StdoutError> {
        self.error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let err = anyhow::Error::new(StdoutError(io::ErrorKind::BrokenPipe.into()))
            .context("printing the table");
        assert!(is_broken_pipe(&err));
        let full = anyhow::Error::new(StdoutError(io::Error::from_raw_os_error(28)));
        assert!(!is_broken_pipe(&full));
        assert!(full
            .to_string()
            .starts_with("cannot write to standard output"));
    }
}
