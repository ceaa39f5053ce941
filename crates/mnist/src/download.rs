//! A downloader that survives dead mirrors and never leaves a file a later run would trust.
//!
//! For each file of a dataset: if a copy in the folder already has the right SHA-256 (of its
//! uncompressed content), nothing is fetched. Otherwise the mirrors are tried in order, each up to
//! `1 + retries` times with doubling backoff for transient failures (network errors, 5xx, 429).
//! The body streams into a partial file of this download's own (`NAME.<pid>-<random>.part`,
//! created exclusively under an unpredictable name, so two downloads into one folder never write
//! the same file and a link planted there is never followed; the partial files of downloads
//! whose process is gone are removed first) while being hashed (decompressed on the
//! fly if it is gzip, so a re-compressed copy still matches); only a verified, synced partial
//! file is renamed to `NAME`, and the bytes then under `NAME` are hashed once more. A wrong
//! checksum, a 404 or a mirror too slow to finish (under `min_throughput`, or past the
//! `deadline`) fails that mirror at once and the next one is tried. A mirror that cannot be
//! connected to at all is skipped for the remaining files of the same call.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::dataset::{locate_file, DatasetKind, FileSpec};
use crate::error::{DownloadError, MirrorFailure};
use crate::idx::sniff_gzip;
use crate::location::mirrors_from_env;
use crate::open::{ensure_regular, exists, open_regular};

/// How to download: mirrors, files, timeouts, the slowest mirror accepted, retries, progress.
/// Build it with `DownloadOptions::default()` and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Mirror base URLs tried in order (file names are appended; `{dataset}` in a URL is replaced
    /// by `mnist` or `fashion-mnist`). `None`: [`mirrors_from_env`], i.e. `LENET_MIRRORS` or the
    /// dataset's defaults.
    pub mirrors: Option<Vec<String>>,
    /// Files to fetch with their checksums. `None`: the dataset's four files ([`DatasetKind::files`]).
    pub files: Option<Vec<FileSpec>>,
    /// Time allowed to open a connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Time allowed for any single read (headers or body) to make progress. Default 30 s.
    pub read_timeout: Duration,
    /// Extra attempts per mirror after a transient failure. Default 2.
    pub retries: u32,
    /// Wait before the first retry, doubled before each next one. Default 1 s.
    pub backoff: Duration,
    /// Show a progress bar in bytes on stderr (it stays hidden anyway when stderr is not a
    /// terminal). Default true.
    pub progress: bool,
    /// Use the proxies named by `ALL_PROXY` / `HTTPS_PROXY` / `HTTP_PROXY` (hosts in `NO_PROXY`
    /// and localhost go direct). Default true.
    pub proxy_from_env: bool,
    /// Largest body accepted, compressed or not, against a mirror serving endless data.
    /// Default 256 MiB.
    pub max_bytes: u64,
    /// Slowest transfer accepted, in bytes per second, measured over each `throughput_window`:
    /// a mirror that delivers less is given up (a trickle of bytes defeats the read timeout).
    /// Default 1024 (1 KiB/s).
    pub min_throughput: u64,
    /// The period over which `min_throughput` is measured. Default 30 s.
    pub throughput_window: Duration,
    /// Time allowed to fetch one file from one mirror, checked as the body arrives (the headers
    /// are bounded by the read timeout). Default 30 min.
    pub deadline: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            mirrors: None,
            files: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_secs(1),
            progress: true,
            proxy_from_env: true,
            max_bytes: 256 << 20,
            min_throughput: 1024,
            throughput_window: Duration::from_secs(30),
            deadline: Duration::from_secs(30 * 60),
        }
    }
}

impl DownloadOptions {
    /// Uses these mirror base URLs, in this order.
    pub fn with_mirrors<S: Into<String>>(mut self, mirrors: impl IntoIterator<Item = S>) -> Self {
        self.mirrors = Some(mirrors.into_iter().map(Into::into).collect());
        self
    }
    /// Fetches these files instead of the dataset's own (for tests and other datasets).
    pub fn with_files(mut self, files: Vec<FileSpec>) -> Self {
        self.files = Some(files);
        self
    }
    /// Sets the connect and read timeouts.
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }
    /// Sets the number of extra attempts per mirror and the first backoff.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }
    /// Turns the progress bar on or off.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }
    /// Gives up a mirror that delivers under `bytes_per_second` over any `window`.
    pub fn with_min_throughput(mut self, bytes_per_second: u64, window: Duration) -> Self {
        self.min_throughput = bytes_per_second;
        self.throughput_window = window;
        self
    }
    /// Sets the time allowed to fetch one file from one mirror.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
    /// Turns the use of proxies from the environment on or off.
    pub fn with_proxy_from_env(mut self, proxy: bool) -> Self {
        self.proxy_from_env = proxy;
        self
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// A verified copy was already in the folder; nothing was fetched.
    AlreadyPresent,
    /// The file was downloaded and verified.
    Downloaded {
        /// The URL it came from.
        url: String,
        /// Bytes received.
        bytes: u64,
    },
}

/// The outcome for one file of [`ensure_dataset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file name.
    pub name: String,
    /// Where the verified file is.
    pub path: PathBuf,
    /// Present already or downloaded.
    pub status: FileStatus,
    /// Mirrors that failed before one succeeded (worth a warning).
    pub failed_mirrors: Vec<MirrorFailure>,
}

/// Makes sure `dir` holds every file of `kind` (or of `options.files`) with the right checksum,
/// downloading what is missing or wrong. Verified files are not fetched again. A mirror may serve
/// a file gzip-compressed (re-compressed copies are fine) or raw: it is stored as received under
/// the file's name, and the reader tells the two apart by content. Returns one report per file,
/// in order; on failure nothing unverified is left in `dir` (a wrong copy that was already there
/// is left untouched and mentioned in the error).
pub fn ensure_dataset(
    kind: DatasetKind,
    dir: &Path,
    options: &DownloadOptions,
) -> Result<Vec<FileReport>, DownloadError> {
    let files = options.files.clone().unwrap_or_else(|| kind.files());
    let mirrors: Vec<String> = options
        .mirrors
        .clone()
        .unwrap_or_else(|| mirrors_from_env(kind))
        .iter()
        .map(|m| m.replace("{dataset}", kind.dir_name()))
        .collect();

    // Verify the copies already there, in parallel (hashing 47 MB takes a moment).
    let checks: Vec<Result<Existing, DownloadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|spec| s.spawn(move || check_existing(dir, spec)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("checksum thread panicked"))
            .collect()
    });

    let mut fetcher = Fetcher::new(kind, options);
    let mut reports = Vec::with_capacity(files.len());
    for (spec, check) in files.iter().zip(checks) {
        let existing = match check? {
            Existing::Verified(path) => {
                reports.push(FileReport {
                    name: spec.name.clone(),
                    path,
                    status: FileStatus::AlreadyPresent,
                    failed_mirrors: Vec::new(),
                });
                continue;
            }
            Existing::Missing => None,
            Existing::Wrong(why) => Some(why),
        };
        reports.push(fetcher.fetch_file(spec, dir, &mirrors, existing)?);
    }
    Ok(reports)
}

/// What is already in the folder under a file's name.
enum Existing {
    /// A copy with the right checksum, at this path.
    Verified(PathBuf),
    /// Nothing.
    Missing,
    /// A copy with another checksum (or unreadable content): why it is not used.
    Wrong(String),
}

/// Looks for a verified copy of the file in `dir`. Something that is not a regular file (a FIFO,
/// a device) or cannot be looked at (a symlink loop) is an error: it is neither read (it could
/// block or never end) nor replaced by a download.
fn check_existing(dir: &Path, spec: &FileSpec) -> Result<Existing, DownloadError> {
    let path = locate_file(dir, &spec.name);
    let cannot_use = |source| DownloadError::Io {
        path: path.clone(),
        action: "cannot use the file already there",
        source,
    };
    if !exists(&path).map_err(cannot_use)? {
        return Ok(Existing::Missing);
    }
    ensure_regular(&path).map_err(cannot_use)?;
    match sha256_of_uncompressed_file(&path) {
        Ok(sum) if sum == spec.sha256 => Ok(Existing::Verified(path)),
        Ok(sum) => match (
            DatasetKind::identify(&sum),
            DatasetKind::identify(&spec.sha256),
        ) {
            (Some((found, name)), Some((expected, _))) if found != expected => {
                Err(DownloadError::OtherDataset {
                    path,
                    expected: expected.display_name(),
                    found: found.display_name(),
                    name,
                })
            }
            _ => Ok(Existing::Wrong(format!(
                "{} has SHA-256 (uncompressed) {sum}, expected {}",
                path.display(),
                spec.sha256
            ))),
        },
        Err(e) => Ok(Existing::Wrong(format!("{}: {e}", path.display()))),
    }
}

/// SHA-256 (lowercase hex) of a file's content, decompressed first if it is gzip. Anything but a
/// regular file is refused with an `InvalidInput` error saying "not a regular file".
pub fn sha256_of_uncompressed_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    match sniff_gzip(open_regular(path)?)? {
        None => {}
        Some((true, stream)) => {
            io::copy(&mut MultiGzDecoder::new(stream), &mut hasher)?;
        }
        Some((false, mut stream)) => {
            io::copy(&mut stream, &mut hasher)?;
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why one attempt failed.
enum AttemptError {
    /// Worth retrying on the same mirror (network trouble, 5xx, 429).
    Transient(String),
    /// Could not connect at all: retried like `Transient`, and if it persists the mirror is
    /// skipped for the remaining files instead of being waited on again.
    Unreachable(String),
    /// This mirror will not do (404, wrong checksum, not gzip nor IDX...): go to the next one.
    Permanent(String),
    /// A local problem (disk full, permission): stop everything.
    Local(DownloadError),
}

/// Holds the HTTP agents: one through the environment's proxy, one direct.
struct Fetcher<'a> {
    dataset: &'static str,
    options: &'a DownloadOptions,
    proxied: ureq::Agent,
    direct: ureq::Agent,
    /// Mirrors that could not be reached, each with the file for which that happened.
    unreachable: Vec<(String, String)>,
}

impl<'a> Fetcher<'a> {
    fn new(kind: DatasetKind, options: &'a DownloadOptions) -> Self {
        let agent = |proxy: bool| {
            ureq::AgentBuilder::new()
                .timeout_connect(options.connect_timeout)
                .timeout_read(options.read_timeout)
                .timeout_write(options.read_timeout)
                .try_proxy_from_env(proxy)
                .build()
        };
        Fetcher {
            dataset: kind.display_name(),
            options,
            proxied: agent(options.proxy_from_env),
            direct: agent(false),
            unreachable: Vec::new(),
        }
    }

    /// Tries every mirror for one file; renames the verified partial file into place.
    fn fetch_file(
        &mut self,
        spec: &FileSpec,
        dir: &Path,
        mirrors: &[String],
        existing: Option<String>,
    ) -> Result<FileReport, DownloadError> {
        if mirrors.is_empty() {
            return Err(DownloadError::NoMirrors {
                file: spec.name.clone(),
            });
        }
        fs::create_dir_all(dir).map_err(|source| DownloadError::Io {
            path: dir.to_path_buf(),
            action: "cannot create the data folder",
            source,
        })?;
        let final_path = dir.join(&spec.name);
        remove_stale_parts(dir, &spec.name);
        let part = part_path(dir, &spec.name);

        let mut failures = Vec::new();
        for mirror in mirrors {
            let url = join_url(mirror, &spec.name);
            if let Some((_, earlier)) = self.unreachable.iter().find(|(m, _)| m == mirror) {
                let reason = format!("skipped: it was unreachable for {earlier}");
                failures.push(MirrorFailure { url, reason });
                continue;
            }
            match self.try_mirror(&url, spec, &part) {
                Ok(bytes) => {
                    move_into_place(&part, &final_path, spec)?;
                    return Ok(FileReport {
                        name: spec.name.clone(),
                        path: final_path,
                        status: FileStatus::Downloaded { url, bytes },
                        failed_mirrors: failures,
                    });
                }
                Err(AttemptError::Local(e)) => {
                    let _ = fs::remove_file(&part);
                    return Err(e);
                }
                Err(AttemptError::Unreachable(reason)) => {
                    let _ = fs::remove_file(&part);
                    self.unreachable.push((mirror.clone(), spec.name.clone()));
                    failures.push(MirrorFailure { url, reason });
                }
                Err(AttemptError::Transient(reason) | AttemptError::Permanent(reason)) => {
                    let _ = fs::remove_file(&part);
                    failures.push(MirrorFailure { url, reason });
                }
            }
        }
        Err(DownloadError::AllMirrorsFailed {
            dataset: self.dataset.to_string(),
            file: spec.name.clone(),
            dir: dir.to_path_buf(),
            failures,
            existing,
        })
    }

    /// Up to `1 + retries` attempts on one URL, with doubling backoff between transient failures.
    fn try_mirror(&self, url: &str, spec: &FileSpec, part: &Path) -> Result<u64, AttemptError> {
        let attempts = 1 + self.options.retries;
        let mut wait = self.options.backoff;
        for attempt in 1..=attempts {
            match self.attempt(url, spec, part) {
                Err(AttemptError::Transient(_) | AttemptError::Unreachable(_))
                    if attempt < attempts =>
                {
                    // The next attempt creates the partial file anew (exclusively).
                    let _ = fs::remove_file(part);
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
                Err(AttemptError::Transient(reason)) if attempts > 1 => {
                    return Err(AttemptError::Transient(format!(
                        "{reason} (failed {attempts} times)"
                    )))
                }
                Err(AttemptError::Unreachable(reason)) if attempts > 1 => {
                    return Err(AttemptError::Unreachable(format!(
                        "{reason} (failed {attempts} times)"
                    )))
                }
                other => return other,
            }
        }
        unreachable!("the last attempt always returns")
    }

    /// One GET: streams the body into `part`, hashing the uncompressed content on the way.
    fn attempt(&self, url: &str, spec: &FileSpec, part: &Path) -> Result<u64, AttemptError> {
        let agent = if self.options.proxy_from_env && !bypasses_proxy(url) {
            &self.proxied
        } else {
            &self.direct
        };
        let started = Instant::now();
        let response = agent.get(url).call().map_err(classify_ureq_error)?;
        let max = self.options.max_bytes;
        let length: Option<u64> = response
            .header("Content-Length")
            .and_then(|v| v.trim().parse().ok());
        if length.is_some_and(|len| len > max) {
            return Err(AttemptError::Permanent(format!(
                "the body is {} bytes, more than the {max} accepted",
                length.unwrap_or(0)
            )));
        }

        let local = |action, source| {
            AttemptError::Local(DownloadError::Io {
                path: part.to_path_buf(),
                action,
                source,
            })
        };
        let mut file = create_new(part).map_err(|e| local("cannot create the file", e))?;
        let progress = progress_bar(self.options.progress, length, &spec.name, url);
        let mut tee = Tee {
            inner: response.into_reader().take(max + 1),
            file: &mut file,
            progress: &progress,
            bytes: 0,
            pace: Pace::new(started, self.options),
            too_slow: None,
            network_error: None,
            write_error: None,
        };

        let hashed = hash_stream(&mut tee, max);
        progress.finish_and_clear();
        let bytes = tee.bytes;
        if let Some(failure) = tee.failure(part, self.options.read_timeout) {
            return Err(failure);
        }
        check_body(hashed, bytes, max, spec)?;
        file.flush()
            .and_then(|_| file.sync_all())
            .map_err(|e| local("cannot flush the file", e))?;
        Ok(bytes)
    }
}

/// A name for one download's partial file of `name` in `dir` that no other download uses and
/// nobody can guess: `NAME.<pid>-<16 random hex digits>.part`.
fn part_path(dir: &Path, name: &str) -> PathBuf {
    let random: u64 = rand::random();
    dir.join(format!("{name}.{}-{random:016x}.part", std::process::id()))
}

/// Opens `path` for writing only if nothing is there (`O_CREAT | O_EXCL`): an existing file or
/// a symbolic link, even a dangling one, is an error and is not touched.
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Removes the partial files of `name` in `dir` (`NAME.<pid>-….part`) left by downloads whose
/// process is no longer running. Best effort: errors are ignored, and nothing is removed where
/// liveness is unknown (only Linux's `/proc` tells).
fn remove_stale_parts(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(middle) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".part"))
        else {
            continue;
        };
        let pid = middle.split('-').next().and_then(|p| p.parse::<u32>().ok());
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

/// Renames the verified partial file to `final_path`, then checks the bytes now under that name:
/// what a later run will trust is what was verified.
fn move_into_place(part: &Path, final_path: &Path, spec: &FileSpec) -> Result<(), DownloadError> {
    let io_error = |action, source| DownloadError::Io {
        path: final_path.to_path_buf(),
        action,
        source,
    };
    if let Err(e) = fs::rename(part, final_path) {
        let _ = fs::remove_file(part);
        return Err(io_error("cannot move the downloaded file into place", e));
    }
    sync_dir(final_path.parent().unwrap_or(Path::new(".")));
    let sum = sha256_of_uncompressed_file(final_path)
        .map_err(|e| io_error("cannot read the file moved into place", e))?;
    if sum != spec.sha256 {
        return Err(DownloadError::ChangedInPlace {
            path: final_path.to_path_buf(),
            expected: spec.sha256.clone(),
            found: sum,
        });
    }
    Ok(())
}

/// Gives up a mirror that is too slow: under `min_throughput` bytes per second over a
/// `throughput_window`, or still not done at the `deadline`.
struct Pace {
    started: Instant,
    deadline: Duration,
    min_throughput: u64,
    window: Duration,
    window_start: Instant,
    window_bytes: u64,
}

impl Pace {
    fn new(started: Instant, options: &DownloadOptions) -> Pace {
        Pace {
            started,
            deadline: options.deadline,
            min_throughput: options.min_throughput,
            window: options.throughput_window,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Counts `n` more bytes; `Err(why)` if the mirror is too slow.
    fn record(&mut self, n: usize) -> Result<(), String> {
        self.window_bytes += n as u64;
        let now = Instant::now();
        if now.duration_since(self.started) > self.deadline {
            return Err(format!(
                "too slow: not done within the deadline of {:?} per file",
                self.deadline
            ));
        }
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= self.window {
            let wanted = self.min_throughput as f64 * elapsed.as_secs_f64();
            if (self.window_bytes as f64) < wanted {
                return Err(format!(
                    "too slow: {} bytes in {elapsed:.1?}, under the {} bytes/s required",
                    self.window_bytes, self.min_throughput
                ));
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }
}

/// Hashes the uncompressed content of `stream` (gunzipping it if it starts with the gzip magic),
/// then drains the rest so that every byte reaches the file. Errors are described for people.
fn hash_stream<R: Read>(stream: R, max: u64) -> Result<String, String> {
    let mut hasher = Sha256::new();
    let mut stream = match sniff_gzip(stream) {
        Ok(Some(s)) => s,
        Ok(None) => return Err("the body is empty".to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let result = if stream.0 {
        let mut decoder = MultiGzDecoder::new(&mut stream.1).take(max + 1);
        io::copy(&mut decoder, &mut hasher).map_err(|e| format!("corrupt gzip body: {e}"))
    } else {
        io::copy(&mut (&mut stream.1).take(max + 1), &mut hasher).map_err(|e| e.to_string())
    };
    let copied = result?;
    if copied > max {
        return Err(format!(
            "the uncompressed content is more than the {max} bytes accepted"
        ));
    }
    io::copy(&mut stream.1, &mut io::sink()).map_err(|e| e.to_string())?;
    Ok(hex(&hasher.finalize()))
}

/// Copies every byte read from the network into the file and the progress bar, and remembers
/// whether a failure came from the network or the disk (the decoder above only sees io errors).
struct Tee<'a, R> {
    inner: R,
    file: &'a mut File,
    progress: &'a ProgressBar,
    bytes: u64,
    pace: Pace,
    /// Set when `pace` gives the mirror up.
    too_slow: Option<String>,
    network_error: Option<io::Error>,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let err = io::Error::new(e.kind(), e.to_string());
                self.network_error = Some(e);
                return Err(err);
            }
        };
        if let Err(e) = self.file.write_all(&buf[..n]) {
            let err = io::Error::new(e.kind(), e.to_string());
            self.write_error = Some(e);
            return Err(err);
        }
        self.bytes += n as u64;
        self.progress.inc(n as u64);
        if let Err(why) = self.pace.record(n) {
            let err = io::Error::new(io::ErrorKind::TimedOut, why.clone());
            self.too_slow = Some(why);
            return Err(err);
        }
        Ok(n)
    }
}

impl<R> Tee<'_, R> {
    /// Why the transfer stopped early, if it did: the disk, a too slow mirror or the network.
    fn failure(&mut self, part: &Path, read_timeout: Duration) -> Option<AttemptError> {
        if let Some(source) = self.write_error.take() {
            return Some(AttemptError::Local(DownloadError::Io {
                path: part.to_path_buf(),
                action: "cannot write the file",
                source,
            }));
        }
        if let Some(reason) = self.too_slow.take() {
            return Some(AttemptError::Permanent(reason));
        }
        let e = self.network_error.take()?;
        let reason = match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                format!("read timed out (no data for {read_timeout:?})")
            }
            _ => e.to_string(),
        };
        Some(AttemptError::Transient(format!(
            "transfer failed after {} bytes: {reason}",
            self.bytes
        )))
    }
}

/// Checks a body received whole: its size and the checksum of its uncompressed content.
fn check_body(
    hashed: Result<String, String>,
    bytes: u64,
    max: u64,
    spec: &FileSpec,
) -> Result<(), AttemptError> {
    let sum = hashed.map_err(AttemptError::Permanent)?;
    if bytes > max {
        return Err(AttemptError::Permanent(format!(
            "the body is more than the {max} bytes accepted"
        )));
    }
    if sum != spec.sha256 {
        return Err(AttemptError::Permanent(format!(
            "wrong checksum: SHA-256 of the uncompressed content is {sum}, expected {}",
            spec.sha256
        )));
    }
    Ok(())
}

/// Sorts ureq's errors into transient (retry) and permanent (next mirror).
fn classify_ureq_error(err: ureq::Error) -> AttemptError {
    match err {
        ureq::Error::Status(code, response) => {
            let reason = format!("HTTP {code} {}", response.status_text());
            if code == 408 || code == 429 || code >= 500 {
                AttemptError::Transient(reason)
            } else {
                AttemptError::Permanent(reason)
            }
        }
        ureq::Error::Transport(t) => {
            use ureq::ErrorKind as K;
            // Kind, message and cause, without the URL (the report shows it) and without a
            // part that the next one repeats ("Network Error: Network Error: ...").
            let parts: Vec<String> = [
                Some(t.kind().to_string()),
                t.message().map(String::from),
                std::error::Error::source(&t).map(|e| e.to_string()),
            ]
            .into_iter()
            .flatten()
            .collect();
            let kept: Vec<&str> = parts
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    !parts[i + 1..]
                        .iter()
                        .any(|later| later.starts_with(p.as_str()))
                })
                .map(|(_, p)| p.as_str())
                .collect();
            let reason = kept.join(": ");
            match t.kind() {
                K::InvalidUrl | K::UnknownScheme | K::InvalidProxyUrl | K::Dns => {
                    AttemptError::Permanent(reason)
                }
                K::ConnectionFailed => AttemptError::Unreachable(reason),
                _ => AttemptError::Transient(reason),
            }
        }
    }
}

/// A progress bar in bytes on stderr, hidden if turned off or stderr is not a terminal.
fn progress_bar(enabled: bool, length: Option<u64>, name: &str, url: &str) -> ProgressBar {
    if !enabled || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
    let template = if length.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("{name} from {}", host_of(url)));
    bar
}

/// `base` + `name`, with exactly one `/` between them.
fn join_url(base: &str, name: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), name)
}

/// The host of a URL (no scheme, user info, port or path).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

/// True if `url` should not go through a proxy: loopback hosts and hosts listed in `NO_PROXY`
/// (ureq 2 reads the proxy variables but not `NO_PROXY`).
fn bypasses_proxy(url: &str) -> bool {
    let host = host_of(url).to_ascii_lowercase();
    if host == "localhost" || host == "::1" || host.starts_with("127.") {
        return true;
    }
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry.trim_start_matches('.').to_ascii_lowercase();
        entry == "*"
            || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
    })
}

/// Makes the rename durable where the platform allows it; failure here is not an error.
///
/// `nn::atomic` does the same for the files `nn` and the CLI write; the downloader keeps its own
/// partial-file-then-rename because it streams a body of unknown content into the partial file
/// and verifies it before the rename (nn's writes take bytes already in memory), and because
/// `mnist` does not depend on `nn`.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_helpers() {
        assert_eq!(join_url("http://h/a/", "f.gz"), "http://h/a/f.gz");
        assert_eq!(join_url("http://h/a", "f.gz"), "http://h/a/f.gz");
        assert_eq!(host_of("https://u:p@Example.com:8080/x?y"), "Example.com");
        assert_eq!(host_of("http://[::1]:80/"), "::1");
        assert_eq!(host_of("http://127.0.0.1:9/"), "127.0.0.1");
        assert!(bypasses_proxy("http://127.0.0.1:8000/"));
        assert!(bypasses_proxy("http://localhost/"));
    }
}
