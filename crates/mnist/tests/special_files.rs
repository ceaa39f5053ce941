//! Data files that are not regular files (issue 9, items 5 and 11): a named pipe (FIFO) or a
//! device would block the reader or never end, and a symlink loop is not a missing file. Each
//! must be an error naming the file, from the reader and from the downloader's check of the
//! copy already in the folder. Unix only (FIFOs, /dev/zero, symlinks).
#![cfg(unix)]

mod common;

use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::sha256_hex;
use mnist::idx::read_images;
use mnist::{ensure_dataset, DatasetKind, DownloadError, DownloadOptions, FileSpec, IdxError};

const NAME: &str = "train-images-idx3-ubyte";

/// Runs `f` on a thread and fails the test if it takes more than 10 s (a FIFO read blocks).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("hung: the special file was read as data")
}

/// Makes a FIFO at `path` with `mkfifo`; false (and a message) if that is not possible here.
fn make_fifo(path: &Path) -> bool {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: mkfifo is not available");
    }
    ok
}

/// Options for one file of `name` whose only mirror is a closed localhost port.
fn offline(name: &str) -> DownloadOptions {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    DownloadOptions::default()
        .with_mirrors([mirror])
        .with_files(vec![FileSpec::new(name, &sha256_hex(b"anything"))])
        .with_retries(0, Duration::ZERO)
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(500))
        .with_progress(false)
        .with_proxy_from_env(false)
}

fn assert_not_regular(msg: &str, what: &str) {
    assert!(msg.contains(NAME), "does not name the file: {msg}");
    assert!(msg.contains("not a regular file"), "{msg}");
    assert!(msg.contains(what), "does not say it is {what}: {msg}");
}

#[test]
fn a_fifo_is_not_read_as_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    if !make_fifo(&path) {
        return;
    }
    let err = within_10s(move || read_images(&path).unwrap_err());
    assert!(matches!(err, IdxError::Io { .. }), "{err:?}");
    assert_not_regular(&err.to_string(), "FIFO");
}

#[test]
fn a_character_device_is_not_read_as_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    symlink("/dev/zero", &path).unwrap();
    let err = within_10s(move || read_images(&path).unwrap_err());
    assert_not_regular(&err.to_string(), "character device");
}

#[test]
fn download_does_not_hash_or_replace_an_existing_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    if !make_fifo(&path) {
        return;
    }
    let d = dir.path().to_path_buf();
    let err =
        within_10s(move || ensure_dataset(DatasetKind::Mnist, &d, &offline(NAME))).unwrap_err();
    assert!(matches!(err, DownloadError::Io { .. }), "{err:?}");
    assert_not_regular(&err.to_string(), "FIFO");
}

#[test]
fn download_does_not_hash_an_existing_character_device() {
    let dir = tempfile::tempdir().unwrap();
    symlink("/dev/zero", dir.path().join(NAME)).unwrap();
    let d = dir.path().to_path_buf();
    let err =
        within_10s(move || ensure_dataset(DatasetKind::Mnist, &d, &offline(NAME))).unwrap_err();
    assert!(matches!(err, DownloadError::Io { .. }), "{err:?}");
    assert_not_regular(&err.to_string(), "character device");
}

#[test]
fn a_symlink_loop_is_an_error_not_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join(NAME), dir.path().join("other"));
    symlink(&b, &a).unwrap();
    symlink(&a, &b).unwrap();
    let err = ensure_dataset(DatasetKind::Mnist, dir.path(), &offline(NAME)).unwrap_err();
    // Not "every mirror failed" after trying to download over it: the loop itself is the error.
    assert!(matches!(err, DownloadError::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(NAME), "{msg}");
    assert!(msg.contains("symbolic links"), "says ELOOP: {msg}");
    assert!(std::fs::symlink_metadata(&a).unwrap().is_symlink());
}

#[test]
fn a_symlink_loop_under_the_gz_name_is_not_skipped_for_the_unpacked_copy() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join(format!("{NAME}.gz"));
    symlink(&gz, &gz).unwrap();
    std::fs::write(dir.path().join(NAME), b"unpacked").unwrap();
    assert_eq!(mnist::locate_file(dir.path(), &format!("{NAME}.gz")), gz);
    let err = read_images(&gz).unwrap_err();
    assert!(err.to_string().contains("symbolic links"), "{err}");
}
