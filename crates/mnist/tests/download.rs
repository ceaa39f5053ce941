//! The downloader against HTTP servers this test starts on 127.0.0.1 (never an outside address):
//! success, fallback after 404 / wrong checksum / stalls, a dropped connection, every mirror dead.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{good_images, good_labels, gzip, sha256_hex};
use mnist::{ensure_dataset, DatasetKind, DownloadError, DownloadOptions, FileSpec, FileStatus};

/// What the test server answers to a request.
#[derive(Clone)]
enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status and a short text body.
    Status(u16),
    /// 200 promising `claimed` bytes, sending `body`, then closing the connection.
    Dropped { body: Vec<u8>, claimed: usize },
    /// Say nothing for this long, then close.
    StallBeforeHeaders(Duration),
    /// Send the headers promising `claimed` bytes and `head`, wait until `open` is set, send
    /// `rest`, then close.
    Gated {
        head: Vec<u8>,
        rest: Vec<u8>,
        claimed: usize,
        open: Arc<AtomicBool>,
    },
    /// Send the headers and `body` one byte at a time, `every` apart.
    Trickle { body: Vec<u8>, every: Duration },
    /// Send the headers and `body`, then say nothing for this long.
    StallInBody {
        body: Vec<u8>,
        claimed: usize,
        wait: Duration,
    },
}

/// A tiny HTTP/1.1 server on a free localhost port, one thread per connection.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (handler, counter) = (Arc::new(handler), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, counter) = (handler.clone(), counter.clone());
                std::thread::spawn(move || serve_one(stream, &*handler, &counter));
            }
        });
        Server { base, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve_one(mut stream: TcpStream, handler: &dyn Fn(&str) -> Reply, hits: &AtomicUsize) {
    // Read the request head (bounded), take the path from "GET /path HTTP/1.1".
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    hits.fetch_add(1, Ordering::SeqCst);
    let header = |status: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match handler(&path) {
        Reply::Body(body) => stream
            .write_all(header("200 OK", body.len()).as_bytes())
            .and_then(|_| stream.write_all(&body)),
        Reply::Status(code) => {
            let text = format!("status {code}");
            stream
                .write_all(header(&format!("{code} Whatever"), text.len()).as_bytes())
                .and_then(|_| stream.write_all(text.as_bytes()))
        }
        Reply::Dropped { body, claimed } => stream
            .write_all(header("200 OK", claimed).as_bytes())
            .and_then(|_| stream.write_all(&body)),
        Reply::StallBeforeHeaders(wait) => {
            std::thread::sleep(wait);
            Ok(())
        }
        Reply::Gated {
            head,
            rest,
            claimed,
            open,
        } => {
            let r = stream
                .write_all(header("200 OK", claimed).as_bytes())
                .and_then(|_| stream.write_all(&head))
                .and_then(|_| stream.flush());
            while !open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            r.and_then(|_| stream.write_all(&rest))
        }
        Reply::Trickle { body, every } => {
            let mut r = stream.write_all(header("200 OK", body.len()).as_bytes());
            for byte in body {
                r = r
                    .and_then(|_| stream.write_all(&[byte]))
                    .and_then(|_| stream.flush());
                if r.is_err() {
                    break;
                }
                std::thread::sleep(every);
            }
            r
        }
        Reply::StallInBody {
            body,
            claimed,
            wait,
        } => {
            let r = stream
                .write_all(header("200 OK", claimed).as_bytes())
                .and_then(|_| stream.write_all(&body))
                .and_then(|_| stream.flush());
            std::thread::sleep(wait);
            r
        }
    };
    let _ = stream.flush();
}

/// Two small synthetic files, their uncompressed content, and the specs with checksums.
struct Files {
    images: Vec<u8>,
    labels: Vec<u8>,
    specs: Vec<FileSpec>,
}

fn files() -> Files {
    let images = good_images(3, 28, 28);
    let labels = good_labels(3);
    let specs = vec![
        FileSpec::new("train-images-idx3-ubyte.gz", &sha256_hex(&images)),
        FileSpec::new("train-labels-idx1-ubyte.gz", &sha256_hex(&labels)),
    ];
    Files {
        images,
        labels,
        specs,
    }
}

/// A handler serving the good gzip files by name, 404 for anything else.
fn good_mirror(f: &Files) -> impl Fn(&str) -> Reply + Send + Sync + 'static {
    let (images, labels) = (gzip(&f.images), gzip(&f.labels));
    move |path: &str| {
        if path.ends_with("train-images-idx3-ubyte.gz") {
            Reply::Body(images.clone())
        } else if path.ends_with("train-labels-idx1-ubyte.gz") {
            Reply::Body(labels.clone())
        } else {
            Reply::Status(404)
        }
    }
}

/// Short timeouts and backoff, no progress bar, no proxy: tests take milliseconds.
fn options(f: &Files, mirrors: &[&str]) -> DownloadOptions {
    DownloadOptions::default()
        .with_mirrors(mirrors.iter().copied())
        .with_files(f.specs.clone())
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(500))
        .with_retries(1, Duration::from_millis(10))
        .with_progress(false)
        .with_proxy_from_env(false)
}

/// A base URL on a localhost port nobody listens on.
fn dead_mirror() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    base
}

/// Names of the entries in `dir`, sorted.
fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn read_uncompressed(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn success_then_nothing_fetched_again() {
    let f = files();
    let server = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/mnist");
    let opts = options(&f, &[&server.base]);

    let reports = ensure_dataset(DatasetKind::Mnist, &data, &opts).unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(
            matches!(&r.status, FileStatus::Downloaded { url, bytes } if url.starts_with(&server.base) && *bytes > 0),
            "{r:?}"
        );
        assert!(r.failed_mirrors.is_empty());
    }
    assert_eq!(
        dir_entries(&data),
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    );
    assert_eq!(
        read_uncompressed(&data.join("train-images-idx3-ubyte.gz")),
        f.images
    );
    assert_eq!(
        read_uncompressed(&data.join("train-labels-idx1-ubyte.gz")),
        f.labels
    );
    assert_eq!(server.hits(), 2);

    // Second run: both files verified by checksum, no request made.
    let again = ensure_dataset(DatasetKind::Mnist, &data, &opts).unwrap();
    assert!(again.iter().all(|r| r.status == FileStatus::AlreadyPresent));
    assert_eq!(server.hits(), 2);
}

#[test]
fn not_found_on_first_mirror_falls_back_to_second() {
    let f = files();
    let missing = Server::start(|_: &str| Reply::Status(404));
    let good = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let reports = ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&missing.base, &good.base]),
    )
    .unwrap();
    for r in &reports {
        assert!(
            matches!(&r.status, FileStatus::Downloaded { url, .. } if url.starts_with(&good.base))
        );
        assert_eq!(r.failed_mirrors.len(), 1);
        assert!(r.failed_mirrors[0].url.starts_with(&missing.base));
        assert!(
            r.failed_mirrors[0].reason.contains("404"),
            "{:?}",
            r.failed_mirrors
        );
    }
    // A 404 is not retried: one request per file.
    assert_eq!(missing.hits(), 2);
    assert_eq!(
        read_uncompressed(&dir.path().join("train-labels-idx1-ubyte.gz")),
        f.labels
    );
}

#[test]
fn wrong_checksum_on_first_mirror_falls_back_and_raw_bodies_are_accepted() {
    let f = files();
    // The first mirror serves a valid gzip of different labels (e.g. a stale copy).
    let wrong = gzip(&good_labels(4));
    let bad = Server::start(move |_: &str| Reply::Body(wrong.clone()));
    // The second serves the files uncompressed; the checksum is of the content, so they match.
    let (images, labels) = (f.images.clone(), f.labels.clone());
    let raw = Server::start(move |p: &str| {
        Reply::Body(if p.contains("images") {
            images.clone()
        } else {
            labels.clone()
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let reports = ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&bad.base, &raw.base]),
    )
    .unwrap();
    for r in &reports {
        assert!(
            matches!(&r.status, FileStatus::Downloaded { url, .. } if url.starts_with(&raw.base))
        );
        let reason = &r.failed_mirrors[0].reason;
        assert!(reason.contains("wrong checksum"), "{reason}");
    }
    // A checksum mismatch is not retried on the same mirror.
    assert_eq!(bad.hits(), 2);
    let stored = std::fs::read(dir.path().join("train-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(stored, f.images);
    assert_eq!(dir_entries(dir.path()).len(), 2);
}

#[test]
fn recompressed_copy_verifies() {
    let f = files();
    let best = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&f.labels).unwrap();
        enc.finish().unwrap()
    };
    assert_ne!(best, gzip(&f.labels));
    let server = Server::start(move |_: &str| Reply::Body(best.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&f, &[&server.base]);
    opts.files = Some(vec![f.specs[1].clone()]);
    let reports = ensure_dataset(DatasetKind::Mnist, dir.path(), &opts).unwrap();
    assert!(matches!(reports[0].status, FileStatus::Downloaded { .. }));
}

#[test]
fn connection_dropped_mid_body_leaves_no_file() {
    let f = files();
    let body = gzip(&f.images);
    let half = body[..body.len() / 2].to_vec();
    let claimed = body.len();
    let dropping = Server::start(move |_: &str| Reply::Dropped {
        body: half.clone(),
        claimed,
    });
    let dir = tempfile::tempdir().unwrap();
    let err = ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&dropping.base]),
    )
    .unwrap_err();
    match &err {
        DownloadError::AllMirrorsFailed { file, failures, .. } => {
            assert_eq!(file, "train-images-idx3-ubyte.gz");
            assert_eq!(failures.len(), 1);
            assert!(
                failures[0].reason.contains("transfer failed after"),
                "{failures:?}"
            );
            assert!(
                failures[0].reason.contains("failed 2 times"),
                "{failures:?}"
            );
        }
        other => panic!("expected AllMirrorsFailed, got {other:?}"),
    }
    // Transient failure: retried once (retries = 1), then given up. Nothing left behind.
    assert_eq!(dropping.hits(), 2);
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn stalled_servers_time_out_and_the_next_mirror_is_used() {
    let f = files();
    let silent = Server::start(|_: &str| Reply::StallBeforeHeaders(Duration::from_secs(5)));
    let body = gzip(&f.images);
    let (part, claimed) = (body[..20].to_vec(), body.len());
    let slow_body = Server::start(move |_: &str| Reply::StallInBody {
        body: part.clone(),
        claimed,
        wait: Duration::from_secs(5),
    });
    let good = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&f, &[&silent.base, &slow_body.base, &good.base]);
    opts.files = Some(vec![f.specs[0].clone()]);
    opts.retries = 0;
    let start = Instant::now();
    let reports = ensure_dataset(DatasetKind::Mnist, dir.path(), &opts).unwrap();
    let elapsed = start.elapsed();
    // Two 500 ms read timeouts, not two 5 s stalls.
    assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
    let r = &reports[0];
    assert!(matches!(&r.status, FileStatus::Downloaded { url, .. } if url.starts_with(&good.base)));
    assert_eq!(r.failed_mirrors.len(), 2);
    for failure in &r.failed_mirrors {
        println!("{}: {}", failure.url, failure.reason);
        assert!(failure.reason.contains("timed out"), "{failure:?}");
    }
    assert_eq!(dir_entries(dir.path()), ["train-images-idx3-ubyte.gz"]);
}

#[test]
fn every_mirror_failing_names_each_one_and_how_to_recover() {
    let f = files();
    let missing = Server::start(|_: &str| Reply::Status(404));
    let broken = Server::start(|_: &str| Reply::Status(503));
    let dead = dead_mirror();
    let dir = tempfile::tempdir().unwrap();
    let err = ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&missing.base, &dead, &broken.base]),
    )
    .unwrap_err();
    let msg = err.to_string();
    for base in [&missing.base, &dead, &broken.base] {
        assert!(
            msg.contains(&format!("{base}train-images-idx3-ubyte.gz")),
            "{base} missing from:\n{msg}"
        );
    }
    assert!(msg.contains("HTTP 404"), "{msg}");
    assert!(msg.contains("HTTP 503"), "{msg}");
    assert!(msg.contains("Connection Failed"), "{msg}");
    let folder = format!("put them in {}", dir.path().display());
    for hint in [&folder, "LENET_DATA_DIR", "LENET_MIRRORS=url1,url2"] {
        assert!(msg.contains(hint), "hint {hint} missing from:\n{msg}");
    }
    // Command-line flags are the CLI's to mention, not the library's.
    assert!(!msg.contains("--data-dir"), "{msg}");
    // 503 is transient: retried (1 + 1 attempts); 404 is not.
    assert_eq!(broken.hits(), 2);
    assert_eq!(missing.hits(), 1);
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn an_existing_file_with_the_wrong_checksum_is_replaced() {
    let f = files();
    let server = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-labels-idx1-ubyte.gz");
    std::fs::write(&path, gzip(&good_labels(5))).unwrap();
    let reports = ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&server.base]),
    )
    .unwrap();
    assert!(reports
        .iter()
        .all(|r| matches!(r.status, FileStatus::Downloaded { .. })));
    assert_eq!(read_uncompressed(&path), f.labels);
}

#[test]
fn an_existing_wrong_file_is_reported_when_no_mirror_works() {
    let f = files();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    std::fs::write(&path, b"not the right file").unwrap();
    let mut opts = options(&f, &[&dead_mirror()]);
    opts.retries = 0;
    let err = ensure_dataset(DatasetKind::Mnist, dir.path(), &opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("was not used") && msg.contains("expected"),
        "{msg}"
    );
    // The user's file is left alone.
    assert_eq!(std::fs::read(&path).unwrap(), b"not the right file");
}

#[test]
fn no_mirror_at_all_is_its_own_error() {
    let f = files();
    let dir = tempfile::tempdir().unwrap();
    let err = ensure_dataset(DatasetKind::Mnist, dir.path(), &options(&f, &[])).unwrap_err();
    assert!(matches!(err, DownloadError::NoMirrors { .. }), "{err:?}");
}

#[test]
fn an_unreachable_mirror_is_not_waited_on_again_for_the_next_files() {
    let f = files();
    let good = Server::start(good_mirror(&f));
    let dead = dead_mirror();
    let dir = tempfile::tempdir().unwrap();
    let reports = ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&dead, &good.base]),
    )
    .unwrap();
    // First file: the dead mirror was tried (and retried); second file: skipped at once.
    assert!(reports[0].failed_mirrors[0]
        .reason
        .contains("Connection Failed"));
    let second = &reports[1].failed_mirrors[0];
    assert!(second.url.starts_with(&dead));
    assert!(
        second.reason.contains("skipped: it was unreachable"),
        "{second:?}"
    );
    assert!(
        second.reason.contains("train-images-idx3-ubyte.gz"),
        "{second:?}"
    );
    assert!(matches!(reports[1].status, FileStatus::Downloaded { .. }));
}

/// Waits (up to 10 s) until `ready` holds.
fn wait_until(mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 9, item 3: a second download of the same file into the same folder, interrupted after
/// the first one finished, must not write into the file the first one verified.
#[test]
fn concurrent_downloads_of_one_file_do_not_corrupt_it() {
    let f = files();
    let name = &f.specs[0].name;
    let good_body = gzip(&f.images);
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let slow = Server::start(move |_: &str| Reply::Gated {
        head: b"XXXXXXXXXX".to_vec(),
        rest: vec![b'Y'; 100],
        claimed: 1000,
        open: gate.clone(),
    });
    let good = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let one_file = |mirror: &str| {
        let mut opts = options(&f, &[mirror]);
        opts.files = Some(vec![f.specs[0].clone()]);
        opts.retries = 0;
        opts.with_timeouts(Duration::from_secs(5), Duration::from_secs(5))
    };

    // The slow download starts first and writes its first bytes into its partial file...
    let (slow_dir, slow_opts) = (dir.path().to_path_buf(), one_file(&slow.base));
    let slow_run =
        std::thread::spawn(move || ensure_dataset(DatasetKind::Mnist, &slow_dir, &slow_opts));
    wait_until(|| {
        dir_entries(dir.path()).iter().any(|n| {
            n.ends_with(".part")
                && std::fs::metadata(dir.path().join(n)).is_ok_and(|m| m.len() >= 10)
        })
    });
    // ...the second one completes meanwhile...
    let reports = ensure_dataset(DatasetKind::Mnist, dir.path(), &one_file(&good.base)).unwrap();
    assert!(matches!(reports[0].status, FileStatus::Downloaded { .. }));
    // ...then the first receives more bytes and is cut off.
    open.store(true, Ordering::SeqCst);
    assert!(slow_run.join().unwrap().is_err());

    assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), good_body);
    assert_eq!(dir_entries(dir.path()), [name.as_str()]);
}

/// Issue 9, item 4: a mirror trickling bytes (which the per-read timeout never catches) is
/// given up after the throughput window, and the next mirror is used.
#[test]
fn a_trickling_mirror_is_given_up_for_the_next() {
    let f = files();
    let body = gzip(&f.images);
    let trickle = Server::start(move |_: &str| Reply::Trickle {
        body: body.clone(),
        every: Duration::from_millis(50),
    });
    let good = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let mut opts =
        options(&f, &[&trickle.base, &good.base]).with_min_throughput(1024, Duration::from_secs(1));
    opts.files = Some(vec![f.specs[0].clone()]);
    let start = Instant::now();
    let reports = ensure_dataset(DatasetKind::Mnist, dir.path(), &opts).unwrap();
    let elapsed = start.elapsed();
    let r = &reports[0];
    assert!(matches!(&r.status, FileStatus::Downloaded { url, .. } if url.starts_with(&good.base)));
    assert_eq!(r.failed_mirrors.len(), 1, "{:?}", r.failed_mirrors);
    let reason = &r.failed_mirrors[0].reason;
    assert!(
        reason.contains("too slow") && reason.contains("1024 bytes/s"),
        "{reason}"
    );
    // Given up after the 1 s window, not retried.
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert_eq!(trickle.hits(), 1);
    assert_eq!(dir_entries(dir.path()), [f.specs[0].name.as_str()]);
}

/// Issue 9, item 4: a mirror fast enough for the throughput rule but still not done at the
/// deadline is given up, and the next mirror is used.
#[test]
fn a_mirror_past_the_deadline_is_given_up_for_the_next() {
    let f = files();
    let body = gzip(&f.images);
    // 20 bytes/s passes a 10 bytes/s rule, but the body takes longer than the 1.5 s deadline.
    let slow = Server::start(move |_: &str| Reply::Trickle {
        body: body.clone(),
        every: Duration::from_millis(50),
    });
    let good = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&f, &[&slow.base, &good.base])
        .with_min_throughput(10, Duration::from_millis(500))
        .with_deadline(Duration::from_millis(1500));
    opts.files = Some(vec![f.specs[0].clone()]);
    let start = Instant::now();
    let reports = ensure_dataset(DatasetKind::Mnist, dir.path(), &opts).unwrap();
    let elapsed = start.elapsed();
    let r = &reports[0];
    assert!(matches!(&r.status, FileStatus::Downloaded { url, .. } if url.starts_with(&good.base)));
    let reason = &r.failed_mirrors[0].reason;
    assert!(reason.contains("deadline"), "{reason}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

// ---- partial files: exclusive, unpredictable, and cleaned up after dead processes ----

/// Issue 20, D1: partial files of a download whose process is gone (killed mid-body) are
/// removed by the next download into the folder; those of a running process stay.
#[cfg(target_os = "linux")]
#[test]
fn partial_files_of_dead_processes_are_removed() {
    let f = files();
    let server = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let name = &f.specs[0].name;
    // Above Linux's largest possible pid (2^22), so never a running process.
    let dead = dir.path().join(format!("{name}.4194305-0.part"));
    let dead_random = dir
        .path()
        .join(format!("{name}.4194305-0123456789abcdef.part"));
    let alive = dir
        .path()
        .join(format!("{name}.{}-999.part", std::process::id()));
    for p in [&dead, &dead_random, &alive] {
        std::fs::write(p, b"half a download").unwrap();
    }
    ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&server.base]),
    )
    .unwrap();
    assert!(
        !dead.exists() && !dead_random.exists(),
        "{:?}",
        dir_entries(dir.path())
    );
    assert!(alive.exists());
}

/// Issue 20, D6: links planted at every partial-file name a pid and a counter predict are
/// never opened: their target keeps its bytes.
#[cfg(unix)]
#[test]
fn planted_links_at_guessable_partial_names_are_not_followed() {
    let f = files();
    let server = Server::start(good_mirror(&f));
    let dir = tempfile::tempdir().unwrap();
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let pid = std::process::id();
    for spec in &f.specs {
        for n in 0..256 {
            let link = dir.path().join(format!("{}.{pid}-{n}.part", spec.name));
            std::os::unix::fs::symlink(&victim, link).unwrap();
        }
    }
    ensure_dataset(
        DatasetKind::Mnist,
        dir.path(),
        &options(&f, &[&server.base]),
    )
    .unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(
        read_uncompressed(&dir.path().join(&f.specs[0].name)),
        f.images
    );
}
