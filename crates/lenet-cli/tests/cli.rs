//! The `lenet` binary as a user runs it: bad input gives a clear error and a non-zero exit (never
//! a panic), small runs on a synthetic dataset print the documented output, and one epoch on the
//! real MNIST (from LENET_DATA_DIR) reaches 97%.
//!
//! No test touches the network: every command gets LENET_MIRRORS pointing at a closed port on
//! 127.0.0.1, so a download attempt fails at once.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use assert_cmd::Command;
use common::write_synthetic_dataset;
use safetensors::{tensor::TensorView, Dtype};

/// The PyTorch state_dict of LeNet-5: names and shapes.
const PARAMS: [(&str, &[usize]); 10] = [
    ("conv1.weight", &[6, 1, 5, 5]),
    ("conv1.bias", &[6]),
    ("conv2.weight", &[16, 6, 5, 5]),
    ("conv2.bias", &[16]),
    ("fc1.weight", &[120, 400]),
    ("fc1.bias", &[120]),
    ("fc2.weight", &[84, 120]),
    ("fc2.bias", &[84]),
    ("fc3.weight", &[10, 84]),
    ("fc3.bias", &[10]),
];

/// A base URL on which nothing listens.
fn closed_mirror() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// `lenet` with no data root and a dead mirror.
fn lenet() -> Command {
    let mut cmd = Command::cargo_bin("lenet").unwrap();
    cmd.env_remove("LENET_DATA_DIR")
        .env("LENET_MIRRORS", closed_mirror());
    cmd
}

/// Runs `cmd`, expects a failure, and returns stderr after checking it is a clean error.
fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "panic instead of an error: {stderr}"
    );
    assert!(stderr.contains("error"), "no error message: {stderr}");
    stderr
}

/// Runs `cmd`, expects success, returns stdout.
fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Writes a safetensors file of the ten LeNet-5 tensors, each passed through `edit` (which may
/// drop it, rename it, change its shape or its dtype).
fn write_checkpoint(
    path: &Path,
    edit: impl Fn(&str, Vec<usize>) -> Option<(String, Vec<usize>, Dtype)>,
) {
    let mut owned = Vec::new();
    for (name, shape) in PARAMS {
        if let Some((name, shape, dtype)) = edit(name, shape.to_vec()) {
            let n: usize = shape.iter().product();
            let bytes = vec![0u8; n * dtype.size()];
            owned.push((name, shape, dtype, bytes));
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

fn good_checkpoint(path: &Path) {
    write_checkpoint(path, |n, s| Some((n.to_string(), s, Dtype::F32)));
}

/// A PNG of a dark vertical bar (a "1") on a light background.
fn write_png(path: &Path) {
    let img = image::GrayImage::from_fn(40, 40, |x, y| {
        let ink = (10..30).contains(&y) && (18..23).contains(&x);
        image::Luma([if ink { 10 } else { 240 }])
    });
    img.save(path).unwrap();
}

fn synthetic_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_dataset(dir.path(), 300, 100);
    dir
}

// ---- bad input ----

#[test]
fn out_of_range_flags_are_rejected() {
    for (flag, value) in [
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--lr", "0"),
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--momentum", "1"),
        ("--momentum", "-0.1"),
        ("--weight-decay", "-0.001"),
        ("--val-split", "1"),
        ("--val-split", "-0.2"),
        ("--threads", "0"),
        ("--early-stopping", "0"),
        ("--dataset", "cifar10"),
    ] {
        let stderr = fails(lenet().args(["train", flag, value]));
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn output_folders_must_exist_before_training() {
    let data = synthetic_dir();
    for flag in ["--save", "--plot", "--metrics"] {
        let mut cmd = lenet();
        cmd.args(["train", "--data-dir"])
            .arg(data.path())
            .args([flag, "/nonexistent-folder/out.file"]);
        let stdout = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        let stderr = fails(&mut cmd);
        assert!(stderr.contains("nonexistent-folder"), "{flag}: {stderr}");
        assert!(
            epoch_lines(&stdout).is_empty(),
            "{flag}: failed only after training"
        );
    }
}

#[test]
fn early_stopping_without_validation_is_rejected() {
    let stderr = fails(lenet().args(["train", "--early-stopping", "2"]));
    assert!(stderr.contains("--val-split"), "{stderr}");
}

#[test]
fn missing_data_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-data-here");
    let stderr = fails(
        lenet()
            .args(["train", "--epochs", "1", "--data-dir"])
            .arg(&dir),
    );
    assert!(
        stderr.contains("no-data-here"),
        "names the folder: {stderr}"
    );
    assert!(
        stderr.contains("127.0.0.1"),
        "names the mirror it tried: {stderr}"
    );
    assert!(
        stderr.contains("or pass --data-dir DIR"),
        "says how to use local files: {stderr}"
    );
    // Nothing half-downloaded is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn corrupt_data_file_is_a_clear_error() {
    let dir = synthetic_dir();
    // Replace the training images by a gzip stream cut short.
    std::fs::remove_file(dir.path().join("train-images-idx3-ubyte")).unwrap();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte.gz"),
        [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
    )
    .unwrap();
    let stderr = fails(
        lenet()
            .args(["train", "--epochs", "1", "--data-dir"])
            .arg(dir.path()),
    );
    assert!(
        stderr.contains("train-images-idx3-ubyte.gz"),
        "names the file: {stderr}"
    );
}

#[test]
fn checkpoint_with_a_missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    write_checkpoint(&model, |n, s| {
        (n != "fc2.bias").then(|| (n.to_string(), s, Dtype::F32))
    });
    let png = dir.path().join("d.png");
    write_png(&png);
    let stderr = fails(lenet().args(["predict", "--model"]).arg(&model).arg(&png));
    assert!(
        stderr.contains("fc2.bias") && stderr.contains("missing"),
        "{stderr}"
    );
    let stderr = fails(lenet().args(["eval", "--model"]).arg(&model));
    assert!(stderr.contains("fc2.bias"), "{stderr}");
}

#[test]
fn checkpoint_with_a_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    write_checkpoint(&model, |n, s| {
        let s = if n == "fc1.weight" { vec![120, 401] } else { s };
        Some((n.to_string(), s, Dtype::F32))
    });
    let stderr = fails(lenet().args(["eval", "--model"]).arg(&model));
    assert!(
        stderr.contains("fc1.weight") && stderr.contains("401"),
        "{stderr}"
    );
}

#[test]
fn checkpoint_with_a_wrong_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    write_checkpoint(&model, |n, s| {
        Some((
            n.to_string(),
            s,
            if n == "conv1.weight" {
                Dtype::F64
            } else {
                Dtype::F32
            },
        ))
    });
    let stderr = fails(lenet().args(["eval", "--model"]).arg(&model));
    assert!(
        stderr.contains("conv1.weight") && stderr.contains("F64"),
        "{stderr}"
    );
}

#[test]
fn checkpoint_that_is_not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    std::fs::write(&model, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    let stderr = fails(lenet().args(["eval", "--model"]).arg(&model));
    assert!(stderr.contains("m.safetensors"), "{stderr}");
    let stderr = fails(
        lenet()
            .args(["eval", "--model"])
            .arg(dir.path().join("absent.safetensors")),
    );
    assert!(stderr.contains("absent.safetensors"), "{stderr}");
}

#[test]
fn unreadable_images() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    good_checkpoint(&model);
    let png = dir.path().join("digit.png");
    write_png(&png);
    // Control: the same model and a real image work (an all-zero model says 10% everywhere).
    let out = succeeds(lenet().args(["predict", "--model"]).arg(&model).arg(&png));
    assert!(
        out.contains("digit.png: ") && out.contains("(10.00%)"),
        "{out}"
    );

    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"GIF89a? no, just text").unwrap();
    let stderr = fails(
        lenet()
            .args(["predict", "--model"])
            .arg(&model)
            .arg(&png)
            .arg(&garbage),
    );
    assert!(stderr.contains("garbage.png"), "{stderr}");
    let stderr = fails(
        lenet()
            .args(["predict", "--model"])
            .arg(&model)
            .arg(dir.path().join("nope.jpg")),
    );
    assert!(stderr.contains("nope.jpg"), "{stderr}");
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(30, 30, image::Luma([255]))
        .save(&blank)
        .unwrap();
    let stderr = fails(lenet().args(["predict", "--model"]).arg(&model).arg(&blank));
    assert!(
        stderr.contains("blank.png") && stderr.contains("no digit"),
        "{stderr}"
    );
}

// ---- small runs on synthetic data ----

fn epoch_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("epoch ")).collect()
}

#[test]
fn train_prints_one_line_per_epoch_and_writes_every_file() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let (metrics, plot, weights) = (
        out.path().join("m.jsonl"),
        out.path().join("curves.svg"),
        out.path().join("w.safetensors"),
    );
    let assert = lenet()
        .args([
            "train",
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--data-dir",
        ])
        .arg(data.path())
        .arg("--metrics")
        .arg(&metrics)
        .arg("--plot")
        .arg(&plot)
        .arg("--save")
        .arg(&weights)
        .assert()
        .success();
    let output = assert.get_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines = epoch_lines(&stdout);
    assert_eq!(lines.len(), 3, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0..2], ["epoch", &format!("{}/3", i + 1)], "{line}");
        assert_eq!(f[2], "train_loss");
        assert!(f[3].parse::<f64>().unwrap().is_finite());
        assert_eq!(f[4], "test_acc");
        let acc = f[5].strip_suffix('%').unwrap();
        assert_eq!(
            acc.split('.').nth(1).unwrap().len(),
            2,
            "two decimals: {line}"
        );
        assert!((0.0..=100.0).contains(&acc.parse::<f64>().unwrap()));
        assert_eq!(f[f.len() - 2], "time");
        assert!(f[f.len() - 1].ends_with('s'));
    }
    // The progress bar hides itself when stderr is not a terminal.
    assert!(
        !stderr.contains("batches"),
        "progress bar drawn into a pipe: {stderr}"
    );

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["epoch"], i + 1);
        for key in [
            "train_loss",
            "train_accuracy",
            "test_loss",
            "test_accuracy",
            "seconds",
        ] {
            assert!(r[key].as_f64().unwrap().is_finite(), "{key} in {r}");
        }
        let acc = r["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "accuracy is a fraction: {r}");
        // The printed percentage is the same number.
        let printed = lines[i].split_whitespace().nth(5).unwrap();
        assert_eq!(printed, format!("{:.2}%", 100.0 * acc));
    }
    // Training makes progress: the loss falls.
    let loss = |i: usize| records[i]["train_loss"].as_f64().unwrap();
    assert!(loss(2) < loss(0), "{records:?}");

    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 4);

    // The weights load for evaluation, which finds the same test accuracy as the last epoch.
    let eval = succeeds(
        lenet()
            .args(["eval", "--json", "--model"])
            .arg(&weights)
            .arg("--data-dir")
            .arg(data.path()),
    );
    let v: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(v["accuracy"], records[2]["test_accuracy"]);
    assert_eq!(v["dataset"], "mnist");
    assert_eq!(v["total"], 100);
    let table = succeeds(
        lenet()
            .args(["eval", "--model"])
            .arg(&weights)
            .arg("--data-dir")
            .arg(data.path()),
    );
    assert!(
        table.contains("true \\ predicted") && table.lines().count() >= 12,
        "{table}"
    );
}

/// The metrics lines without the wall time.
fn metrics_without_time(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let run = |name: &str, epochs: &str, resume: bool| {
        let weights = out.path().join(format!("{name}.safetensors"));
        let mut cmd = lenet();
        cmd.args([
            "train",
            "--threads",
            "1",
            "--batch-size",
            "50",
            "--schedule",
            "constant",
        ])
        .args([
            "--augment",
            "--val-split",
            "0.2",
            "--epochs",
            epochs,
            "--data-dir",
        ])
        .arg(data.path())
        .arg("--save")
        .arg(&weights)
        .arg("--metrics")
        .arg(out.path().join(format!("{name}.jsonl")));
        if resume {
            cmd.arg("--resume")
                .arg(out.path().join(format!("{name}.state.safetensors")));
        }
        succeeds(&mut cmd)
    };
    run("whole", "3", false);
    run("parts", "1", false);
    let resumed = run("parts", "3", true);
    assert!(resumed.contains("resuming"), "{resumed}");
    assert_eq!(epoch_lines(&resumed).len(), 2, "{resumed}");
    let whole = metrics_without_time(&out.path().join("whole.jsonl"));
    let parts = metrics_without_time(&out.path().join("parts.jsonl"));
    assert_eq!(whole.len(), 3);
    assert_eq!(whole, parts, "a resumed run must give the same metrics");
    // Same weights at the end, bit for bit.
    let whole = std::fs::read(out.path().join("whole.safetensors")).unwrap();
    let parts = std::fs::read(out.path().join("parts.safetensors")).unwrap();
    let (whole, parts) = (
        safetensors::SafeTensors::deserialize(&whole).unwrap(),
        safetensors::SafeTensors::deserialize(&parts).unwrap(),
    );
    for (name, _) in PARAMS {
        assert_eq!(
            whole.tensor(name).unwrap().data(),
            parts.tensor(name).unwrap().data(),
            "{name}"
        );
    }
}

#[test]
fn resume_from_a_missing_or_bad_file() {
    let data = synthetic_dir();
    let stderr = fails(
        lenet()
            .args([
                "train",
                "--resume",
                "/nonexistent/x.state.safetensors",
                "--data-dir",
            ])
            .arg(data.path()),
    );
    assert!(stderr.contains("x.state.safetensors"), "{stderr}");
    // Plain weights are not a training state.
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w.safetensors");
    good_checkpoint(&w);
    let stderr = fails(
        lenet()
            .args(["train", "--resume"])
            .arg(&w)
            .arg("--data-dir")
            .arg(data.path()),
    );
    assert!(
        stderr.contains("w.safetensors") && stderr.contains("format"),
        "{stderr}"
    );
}

// ---- the real thing ----

/// MNIST test image `i` as a user's photo would be: four times larger, dark ink on a light
/// background, off-centre on a wider canvas.
fn as_photo(test: &mnist::Split, i: usize) -> image::GrayImage {
    let pixels: Vec<u8> = test
        .images
        .index_axis(ndarray::Axis(0), i)
        .iter()
        .copied()
        .collect();
    let digit = image::GrayImage::from_raw(28, 28, pixels).unwrap();
    let big = image::imageops::resize(&digit, 112, 112, image::imageops::FilterType::Triangle);
    let mut photo = image::GrayImage::from_pixel(180, 140, image::Luma([250]));
    for (x, y, p) in big.enumerate_pixels() {
        photo.put_pixel(
            x + 50,
            y + 10,
            image::Luma([250 - (p[0] as u32 * 230 / 255) as u8]),
        );
    }
    photo
}

/// One epoch on the full MNIST from LENET_DATA_DIR reaches 97% test accuracy (issue 4); the
/// saved model then reads MNIST test digits turned into photos (`predict`'s preprocessing).
#[test]
fn one_epoch_on_mnist_reaches_97_percent() {
    let Some(root) = std::env::var_os("LENET_DATA_DIR").filter(|v| !v.is_empty()) else {
        println!("skipped: LENET_DATA_DIR is not set");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let metrics = out.path().join("m.jsonl");
    let weights = out.path().join("w.safetensors");
    let stdout = succeeds(
        lenet()
            .env("LENET_DATA_DIR", &root)
            .args(["train", "--epochs", "1", "--metrics"])
            .arg(&metrics)
            .arg("--save")
            .arg(&weights),
    );
    assert_eq!(epoch_lines(&stdout).len(), 1, "{stdout}");
    let records = metrics_without_time(&metrics);
    assert_eq!(records.len(), 1);
    let acc = records[0]["test_accuracy"].as_f64().unwrap();
    println!("one epoch on MNIST: test accuracy {:.2}%", 100.0 * acc);
    assert!(acc >= 0.97, "test accuracy {acc} < 0.97\n{stdout}");

    let dir = Path::new(&root).join("mnist");
    let test = mnist::Split::read(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let n = 40;
    let mut cmd = lenet();
    cmd.args(["predict", "--model"]).arg(&weights);
    for i in 0..n {
        let path = out.path().join(format!("test{i}.png"));
        as_photo(&test, i).save(&path).unwrap();
        cmd.arg(path);
    }
    let predictions = succeeds(&mut cmd);
    let lines: Vec<&str> = predictions.lines().collect();
    assert_eq!(lines.len(), n, "{predictions}");
    let correct = (0..n)
        .filter(|&i| {
            // "PATH: 7 (99.12%)  3 (0.50%)  9 (0.10%)": the first class after the path.
            let top = lines[i]
                .rsplit(": ")
                .next()
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            top == test.labels[i].to_string()
        })
        .count();
    println!("predict on {n} MNIST test digits made into photos: {correct} correct");
    assert!(correct >= n - 2, "{correct}/{n} correct:\n{predictions}");
}

/// A mirror on 127.0.0.1 serving the files of `dir`; returns its base URL and a request counter.
fn local_mirror(dir: PathBuf) -> (String, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", server.server_addr().to_ip().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            counter.fetch_add(1, Ordering::SeqCst);
            let name = request.url().rsplit('/').next().unwrap_or("").to_string();
            let _ = match std::fs::File::open(dir.join(&name)) {
                Ok(file) => request.respond(tiny_http::Response::from_file(file)),
                Err(_) => request.respond(tiny_http::Response::empty(404)),
            };
        }
    });
    (url, requests)
}

/// First use without data: `train` downloads MNIST from a (local) mirror, verifies it and trains;
/// `download` then finds every file present and verified, and fetches nothing.
#[test]
fn first_use_downloads_then_download_finds_everything() {
    let Some(root) = std::env::var_os("LENET_DATA_DIR").filter(|v| !v.is_empty()) else {
        println!("skipped: LENET_DATA_DIR is not set");
        return;
    };
    let (mirror, requests) = local_mirror(Path::new(&root).join("mnist"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    let stdout = succeeds(
        lenet()
            .env("LENET_MIRRORS", &mirror)
            .args(["train", "--epochs", "1", "--limit", "200", "--data-dir"])
            .arg(&dir),
    );
    assert_eq!(epoch_lines(&stdout).len(), 1, "{stdout}");
    assert_eq!(requests.load(Ordering::SeqCst), 4, "one request per file");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names.iter().all(|n| n.ends_with("-ubyte.gz")),
        "no .part left: {names:?}"
    );

    let stdout = succeeds(
        lenet()
            .env("LENET_MIRRORS", &mirror)
            .args(["download", "--data-dir"])
            .arg(&dir),
    );
    assert_eq!(
        stdout.matches("already present, checksum verified").count(),
        4,
        "{stdout}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 4, "nothing fetched again");
}

// ---- hardening (issue 9) ----

/// `lenet train` on the synthetic data, `epochs` epochs, one thread.
fn quick_train(data: &Path, epochs: &str) -> Command {
    let mut cmd = lenet();
    cmd.args(["train", "--epochs", epochs, "--threads", "1", "--data-dir"])
        .arg(data);
    cmd
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

/// A copy of /dev/null made with mknod (we may be root in CI), else a FIFO.
#[cfg(unix)]
fn device_or_fifo(path: &Path) {
    let made = std::process::Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        mkfifo(path);
    }
}

#[cfg(unix)]
#[test]
fn outputs_that_are_not_regular_files_are_refused_before_training() {
    use std::os::unix::fs::FileTypeExt;
    let data = synthetic_dir();
    let tmp = tempfile::tempdir().unwrap();
    for flag in ["--save", "--plot", "--metrics"] {
        let target = tmp
            .path()
            .join(format!("dev{}", flag.trim_start_matches('-')));
        device_or_fifo(&target);
        let mut cmd = quick_train(data.path(), "1");
        cmd.arg(flag).arg(&target);
        let stdout = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        let stderr = fails(&mut cmd);
        assert!(
            stderr.contains("not a regular file") && stderr.contains(flag),
            "{flag}: {stderr}"
        );
        assert!(epoch_lines(&stdout).is_empty(), "{flag}: trained first");
        let t = std::fs::metadata(&target).unwrap().file_type();
        assert!(t.is_char_device() || t.is_fifo(), "{flag}: target replaced");
    }
}

/// `lenet` as a std Command (for stdout redirections), with the same environment as [`lenet`].
fn std_lenet(args: &[&std::ffi::OsStr]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("lenet"));
    cmd.env_remove("LENET_DATA_DIR")
        .env("LENET_MIRRORS", closed_mirror())
        .args(args);
    cmd
}

/// Closed stdout: eval and train end quietly (train after its saves); a full disk on stdout
/// is an error, and train still saves.
#[cfg(target_os = "linux")]
#[test]
fn closed_or_full_stdout_is_not_a_panic() {
    use std::process::Stdio;
    let data = synthetic_dir();
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("w.safetensors");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let train = [
        os("train"),
        os("--epochs"),
        os("1"),
        os("--threads"),
        os("1"),
        os("--data-dir"),
        data.path().as_os_str(),
        os("--save"),
        weights.as_os_str(),
    ];
    let eval = [
        os("eval"),
        os("--model"),
        weights.as_os_str(),
        os("--data-dir"),
        data.path().as_os_str(),
    ];
    let run_closed = |args: &[&std::ffi::OsStr]| {
        let mut child = std_lenet(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone, as after `| head -0`
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
        assert!(!stderr.contains("error"), "{stderr}");
    };
    run_closed(&train);
    assert!(weights.exists(), "train saved nothing");
    run_closed(&eval);

    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    if full().is_err() {
        println!("skipped the /dev/full part: no /dev/full");
        return;
    }
    std::fs::remove_file(&weights).unwrap();
    let run_full = |args: &[&std::ffi::OsStr]| {
        let out = std_lenet(args).stdout(full().unwrap()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains("error: cannot write to standard output"),
            "{stderr}"
        );
    };
    run_full(&train);
    assert!(weights.exists(), "train saved nothing");
    run_full(&eval);
}

/// A closed stderr (`lenet predict x.png 2>&1 | head -c 10`, `lenet download 2>&1 | head -4`)
/// does not turn an error into a panic: the command ends with the code it would have had.
#[cfg(unix)]
#[test]
fn closed_stderr_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image").unwrap();
    let data = dir.path().join("data");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let cases: [&[&std::ffi::OsStr]; 2] = [
        &[os("predict"), garbage.as_os_str()],
        &[os("download"), os("--data-dir"), data.as_os_str()],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // stdout and stderr share one pipe whose reader is gone
        let status = std_lenet(args)
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{args:?}: {status:?}");
    }
}

/// FIFOs as --model or --resume fail at once instead of waiting for a writer.
#[cfg(unix)]
#[test]
fn fifo_model_and_resume_files_are_refused() {
    let data = synthetic_dir();
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("m.safetensors");
    mkfifo(&fifo);
    let started = std::time::Instant::now();
    let stderr = fails(
        lenet()
            .args(["eval", "--model"])
            .arg(&fifo)
            .timeout(std::time::Duration::from_secs(30)),
    );
    assert!(stderr.contains("not a regular file"), "{stderr}");
    let stderr = fails(
        quick_train(data.path(), "1")
            .arg("--resume")
            .arg(&fifo)
            .timeout(std::time::Duration::from_secs(30)),
    );
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(started.elapsed().as_secs() < 30);
}

/// NaN weights are refused naming the tensor (not "loss NaN").
#[test]
fn non_finite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("nan.safetensors");
    let mut owned = Vec::new();
    for (name, shape) in PARAMS {
        let n: usize = shape.iter().product();
        let value = if name == "fc1.bias" { f32::NAN } else { 0.0 };
        let bytes: Vec<u8> = (0..n).flat_map(|_| value.to_le_bytes()).collect();
        owned.push((name.to_string(), shape.to_vec(), bytes));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&model, safetensors::serialize(views, &None).unwrap()).unwrap();
    let data = synthetic_dir();
    let stderr = fails(
        lenet()
            .args(["eval", "--model"])
            .arg(&model)
            .arg("--data-dir")
            .arg(data.path()),
    );
    assert!(
        stderr.contains("fc1.bias") && stderr.contains("NaN"),
        "{stderr}"
    );
}

/// A run killed after it wrote an epoch to --metrics but before it saved that epoch's state:
/// the resumed run writes that epoch once, and ends with the metrics of an uninterrupted run.
#[test]
fn resume_after_a_kill_writes_each_epoch_once() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let p = |name: &str| out.path().join(name);
    let run = |name: &str, epochs: &str, resume: bool| {
        let mut cmd = quick_train(data.path(), epochs);
        cmd.args(["--batch-size", "50", "--schedule", "constant"])
            .arg("--save")
            .arg(p(&format!("{name}.safetensors")))
            .arg("--metrics")
            .arg(p(&format!("{name}.jsonl")));
        if resume {
            cmd.arg("--resume")
                .arg(p(&format!("{name}.state.safetensors")));
        }
        succeeds(&mut cmd)
    };
    run("whole", "3", false);
    run("parts", "1", false);
    let state_after_1 = std::fs::read(p("parts.state.safetensors")).unwrap();
    let weights_after_1 = std::fs::read(p("parts.safetensors")).unwrap();
    run("parts", "2", true);
    // The kill: epoch 2 is in the metrics file, its state was never saved.
    std::fs::write(p("parts.state.safetensors"), state_after_1).unwrap();
    std::fs::write(p("parts.safetensors"), weights_after_1).unwrap();
    run("parts", "3", true);
    let epochs: Vec<u64> = metrics_without_time(&p("parts.jsonl"))
        .iter()
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2, 3]);
    assert_eq!(
        metrics_without_time(&p("parts.jsonl")),
        metrics_without_time(&p("whole.jsonl"))
    );
}

/// --resume keeps the run's settings: another dataset, --limit, --val-split or --lr is
/// refused naming the flag; the same values are accepted; no --save gets a warning.
#[test]
fn resume_refuses_other_settings() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let weights = out.path().join("w.safetensors");
    let state = out.path().join("w.state.safetensors");
    succeeds(
        quick_train(data.path(), "1")
            .args(["--limit", "200", "--val-split", "0.25", "--lr", "0.02"])
            .arg("--save")
            .arg(&weights),
    );
    for (flag, value) in [
        ("--dataset", "fashion-mnist"),
        ("--limit", "100"),
        ("--val-split", "0.1"),
        ("--lr", "0.05"),
        ("--batch-size", "32"),
    ] {
        let stderr = fails(
            quick_train(data.path(), "2")
                .args([flag, value, "--resume"])
                .arg(&state)
                .arg("--save")
                .arg(&weights),
        );
        assert!(stderr.contains(&format!("{flag} {value}")), "{stderr}");
    }
    // Same values, or none: accepted; without --save, a warning.
    let output = quick_train(data.path(), "2")
        .args(["--lr", "0.02", "--limit", "200", "--resume"])
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("--resume without --save"), "{stderr}");
    // The recorded --limit and --val-split are used: 150 training and 50 validation images.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("150 training, 50 validation"), "{stdout}");
}

#[test]
fn limits_are_checked_naming_the_flag() {
    for (flag, value) in [("--threads", "1000"), ("--lr", "1e308"), ("--lr", "1e-50")] {
        let stderr = fails(lenet().args(["train", flag, value]));
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    // One cap for both ways of asking for threads: the environment cannot bypass --threads'.
    let stderr = fails(lenet().env("RAYON_NUM_THREADS", "1000").args(["summary"]));
    assert!(
        stderr.contains("RAYON_NUM_THREADS=1000") && stderr.contains("at most"),
        "{stderr}"
    );
    succeeds(lenet().env("RAYON_NUM_THREADS", "2").args(["summary"]));
    // Either name alone (LENET_KERNEL wins when both are set): the test's own environment,
    // which may force a tier (CI runs the suite per tier), must not leak into the other case.
    let names = ["LENET_KERNEL", "LENET_GEMM_KERNEL"];
    for var in names {
        let mut cmd = lenet();
        for name in names {
            cmd.env_remove(name);
        }
        let stderr = fails(cmd.env(var, "bogus").args(["train"]));
        assert!(
            stderr.contains(var) && stderr.contains("portable, avx2, avx512"),
            "{stderr}"
        );
    }
}

#[test]
fn eval_of_an_empty_test_set_is_an_error() {
    let data = tempfile::tempdir().unwrap();
    write_synthetic_dataset(data.path(), 10, 0);
    let model = data.path().join("m.safetensors");
    good_checkpoint(&model);
    let stderr = fails(
        lenet()
            .args(["eval", "--model"])
            .arg(&model)
            .arg("--data-dir")
            .arg(data.path()),
    );
    assert!(stderr.contains("no images"), "{stderr}");
}

/// Saves: an unwritable folder is found before training; temporaries of dead processes go.
#[cfg(target_os = "linux")]
#[test]
fn save_targets_are_checked_and_stale_temporaries_removed() {
    let data = synthetic_dir();
    let mut cmd = quick_train(data.path(), "1");
    cmd.args(["--save", "/proc/lenet-test.safetensors"]);
    let stdout = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let stderr = fails(&mut cmd);
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert!(epoch_lines(&stdout).is_empty(), "trained first");

    let out = tempfile::tempdir().unwrap();
    let stale = out.path().join(".w.safetensors.tmp-4194305-0");
    std::fs::write(&stale, b"half a file").unwrap();
    succeeds(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(out.path().join("w.safetensors")),
    );
    assert!(!stale.exists(), "stale temporary file kept");
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["w.safetensors", "w.state.safetensors"]);
}

#[test]
fn small_error_messages() {
    let data = synthetic_dir();
    let tmp = tempfile::tempdir().unwrap();
    let afile = tmp.path().join("afile");
    std::fs::write(&afile, b"x").unwrap();
    let stderr = fails(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(afile.join("m")),
    );
    assert!(stderr.contains("is not a folder"), "{stderr}");
    // Each OS error once.
    let stderr = fails(
        lenet()
            .args(["eval", "--model"])
            .arg(tmp.path().join("absent.safetensors")),
    );
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    // A parser error in words.
    let bad = tmp.path().join("bad.safetensors");
    let mut bytes = (200u64 << 20).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&bad, bytes).unwrap();
    let stderr = fails(lenet().args(["eval", "--model"]).arg(&bad));
    assert!(!stderr.contains("HeaderTooLarge"), "{stderr}");
}

/// Fashion-MNIST weights evaluated on MNIST: a warning, and the table names MNIST; eval
/// reports its speed.
#[test]
fn eval_names_the_data_evaluated_and_its_speed() {
    let data = synthetic_dir();
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("f.safetensors");
    succeeds(
        quick_train(data.path(), "1")
            .args(["--dataset", "fashion-mnist", "--save"])
            .arg(&weights),
    );
    let output = lenet()
        .args(["eval", "--dataset", "mnist", "--model"])
        .arg(&weights)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("Fashion-MNIST"),
        "{stderr}"
    );
    assert!(stdout.starts_with("MNIST test set"), "{stdout}");
    assert!(
        stdout.lines().next().unwrap().contains(" images/s ("),
        "{stdout}"
    );
    let json = succeeds(
        lenet()
            .args(["eval", "--json", "--model"])
            .arg(&weights)
            .arg("--data-dir")
            .arg(data.path()),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["images_per_second"].as_f64().unwrap() > 0.0, "{v}");
}

/// A torn pair (new state, weights of an older epoch: a crash between the two renames) is
/// explained on resume, and the next save makes the pair whole again.
#[test]
fn resume_explains_weights_older_than_the_state() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let weights = out.path().join("w.safetensors");
    let state = out.path().join("w.state.safetensors");
    succeeds(quick_train(data.path(), "1").arg("--save").arg(&weights));
    let weights_after_1 = std::fs::read(&weights).unwrap();
    succeeds(
        quick_train(data.path(), "2")
            .arg("--save")
            .arg(&weights)
            .arg("--resume")
            .arg(&state),
    );
    std::fs::write(&weights, weights_after_1).unwrap();
    let output = quick_train(data.path(), "3")
        .arg("--save")
        .arg(&weights)
        .arg("--resume")
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("weights of epoch 1") && stderr.contains("epoch 2"),
        "{stderr}"
    );
    let bytes = std::fs::read(&weights).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["epochs_done"], "3");
}

/// `lenet bench` measures every tier the CPU has (one column each, the picked one starred, the
/// figures positive) and `LENET_KERNEL` moves the star down; a tier list that the table does
/// not match, a missing figure or a wrong star fails.
#[test]
fn bench_times_every_tier_and_marks_the_picked_one() {
    let tiers: Vec<&str> = tensor::Tier::available()
        .into_iter()
        .map(|t| t.name())
        .collect();
    for (env, picked) in [
        (None, *tiers.last().unwrap()),
        (Some("portable"), "portable"),
    ] {
        let mut cmd = lenet();
        cmd.env_remove("LENET_KERNEL")
            .env_remove("LENET_GEMM_KERNEL");
        if let Some(v) = env {
            cmd.env("LENET_KERNEL", v);
        }
        let out = succeeds(cmd.args(["bench", "--rounds", "1"]));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("CPU: "), "{out}");
        assert!(
            lines[0].contains(&format!("this binary runs {picked}")),
            "{out}"
        );
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        let want: Vec<String> = tiers
            .iter()
            .map(|t| format!("{t}{}", if *t == picked { "*" } else { "" }))
            .collect();
        assert_eq!(header, want, "{out}");
        for row in &lines[2..5] {
            let figures: Vec<f64> = row
                .split_whitespace()
                .rev()
                .take(tiers.len())
                .map(|f| f.parse().unwrap())
                .collect();
            assert!(figures.iter().all(|&f| f > 0.0), "{row}");
        }
        // The picked tier's arithmetic rate, from the training step's 2,263,920 FLOPs.
        let rate = lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{picked}'s arithmetic: ")))
            .unwrap_or_else(|| panic!("no arithmetic line:\n{out}"));
        let gflops: f64 = rate.split_whitespace().next().unwrap().parse().unwrap();
        assert!(gflops > 0.0, "{rate}");
        assert!(out.contains("(2,263,920 FLOPs a training image"), "{out}");
    }
    fails(lenet().args(["bench", "--rounds", "0"]));
}

// ---- one guard for every output (issue 20, section A) ----

/// Runs `cmd`, expects a clean failure before the first epoch, returns stderr.
fn refused_before_training(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(epoch_lines(&stdout).is_empty(), "trained first: {stdout}");
    fails(cmd)
}

/// D5: two outputs that are one file (by name, through a link, or the state of --save), an
/// output that is an input, and a state that belongs to weights of another name are refused
/// before training, naming both flags; the file that would have been destroyed is intact.
#[cfg(unix)]
#[test]
fn outputs_that_are_one_file_are_refused() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let p = |name: &str| out.path().join(name);
    good_checkpoint(&p("w.safetensors"));
    let weights = std::fs::read(p("w.safetensors")).unwrap();
    std::os::unix::fs::symlink("w.safetensors", p("link.svg")).unwrap();
    for (flag, other, names) in [
        ("--plot", "w.safetensors", ["--plot", "--save"]),
        ("--plot", "link.svg", ["--plot", "--save"]),
        (
            "--metrics",
            "w.state.safetensors",
            ["--metrics", "training state"],
        ),
    ] {
        let stderr = refused_before_training(
            quick_train(data.path(), "1")
                .arg("--save")
                .arg(p("w.safetensors"))
                .arg(flag)
                .arg(p(other)),
        );
        for name in names {
            assert!(stderr.contains(name), "{flag} {other}: {stderr}");
        }
        assert_eq!(std::fs::read(p("w.safetensors")).unwrap(), weights);
    }

    // An output onto the --resume file; the state of --save may be it (the run continues).
    succeeds(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(p("r.safetensors")),
    );
    let state = std::fs::read(p("r.state.safetensors")).unwrap();
    let stderr = refused_before_training(
        quick_train(data.path(), "2")
            .arg("--resume")
            .arg(p("r.state.safetensors"))
            .arg("--metrics")
            .arg(p("r.state.safetensors")),
    );
    assert!(
        stderr.contains("--metrics") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(p("r.state.safetensors")).unwrap(), state);

    // eval --png onto its --model.
    let stderr = fails(
        lenet()
            .args(["eval", "--model"])
            .arg(p("w.safetensors"))
            .arg("--png")
            .arg(p("w.safetensors"))
            .arg("--data-dir")
            .arg(data.path()),
    );
    assert!(
        stderr.contains("--png") && stderr.contains("--model"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(p("w.safetensors")).unwrap(), weights);
}

/// D5, D4: weights of different names keep states of their own (`model.bin` its
/// `model.bin.state.safetensors`); `model` and `model.safetensors`, which share one name for
/// their state, are refused instead of replacing the other's.
#[test]
fn each_weights_name_keeps_its_own_state() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let p = |name: &str| out.path().join(name);
    succeeds(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(p("model.safetensors")),
    );
    let state = std::fs::read(p("model.state.safetensors")).unwrap();
    succeeds(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(p("model.bin")),
    );
    assert!(p("model.bin.state.safetensors").exists());
    assert_eq!(std::fs::read(p("model.state.safetensors")).unwrap(), state);
    let stderr =
        refused_before_training(quick_train(data.path(), "1").arg("--save").arg(p("model")));
    assert!(
        stderr.contains("model.state.safetensors") && stderr.contains("model.safetensors"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(p("model.state.safetensors")).unwrap(), state);
}

/// D3: a legal 230-byte name saves with its 248-byte state (temporary names do not grow with
/// the target's); a name whose state file would pass the 255-byte limit fails before
/// training, naming that file.
#[test]
fn long_names_are_checked_before_training() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let long = out.path().join("w".repeat(230));
    succeeds(quick_train(data.path(), "1").arg("--save").arg(&long));
    assert!(long.exists());
    assert!(out
        .path()
        .join(format!("{}.state.safetensors", "w".repeat(230)))
        .exists());
    let too_long = out
        .path()
        .join(format!("{}.safetensors", "v".repeat(250 - 12)));
    let stderr =
        refused_before_training(quick_train(data.path(), "1").arg("--save").arg(&too_long));
    assert!(
        stderr.contains("training state") && stderr.contains("too long"),
        "{stderr}"
    );
}

/// D9: --resume with --epochs at or below the epochs done trains nothing: refused, naming
/// --epochs and the epochs done; the files are left as they are.
#[test]
fn resume_without_epochs_left_is_refused() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let weights = out.path().join("w.safetensors");
    let state = out.path().join("w.state.safetensors");
    succeeds(quick_train(data.path(), "2").arg("--save").arg(&weights));
    let before = std::fs::read(&weights).unwrap();
    for epochs in ["1", "2"] {
        let stderr = fails(
            quick_train(data.path(), epochs)
                .arg("--resume")
                .arg(&state)
                .arg("--save")
                .arg(&weights),
        );
        assert!(
            stderr.contains(&format!("--epochs {epochs}")) && stderr.contains("2 epochs done"),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);
}

/// Holds `<file>.lock` as a running `lenet train --save file` does.
fn hold_lock(file: &Path) -> std::fs::File {
    let lock = std::fs::File::create(format!("{}.lock", file.display())).unwrap();
    lock.try_lock().unwrap();
    lock
}

/// D20: a second run saving to the same name is refused while the first holds the lock;
/// weights saved by another run (a mixed pair) are refused on resume, naming both runs.
#[test]
fn one_run_per_saved_pair() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let p = |name: &str| out.path().join(name);
    let held = hold_lock(&p("w.safetensors"));
    let stderr = refused_before_training(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(p("w.safetensors")),
    );
    assert!(
        stderr.contains("another lenet run") && stderr.contains("w.safetensors.lock"),
        "{stderr}"
    );
    assert!(!p("w.safetensors").exists());
    drop(held);

    succeeds(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(p("a.safetensors")),
    );
    succeeds(
        quick_train(data.path(), "1")
            .arg("--save")
            .arg(p("b.safetensors")),
    );
    std::fs::copy(p("b.safetensors"), p("a.safetensors")).unwrap();
    let stderr = fails(
        quick_train(data.path(), "2")
            .arg("--resume")
            .arg(p("a.state.safetensors"))
            .arg("--save")
            .arg(p("a.safetensors")),
    );
    assert!(
        stderr.contains("saved by run") && stderr.contains("a.safetensors"),
        "{stderr}"
    );
}

/// D16, D17: `eval --record` refuses the tool's own keys (naming the key) and a file that a
/// training run is saving to (its lock is held); the file is left as it is.
#[test]
fn eval_record_writes_only_notes_about_the_bytes_it_evaluated() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let weights = out.path().join("w.safetensors");
    succeeds(quick_train(data.path(), "1").arg("--save").arg(&weights));
    let before = std::fs::read(&weights).unwrap();
    let eval = |notes: &[&str]| {
        let mut cmd = lenet();
        cmd.args(["eval", "--model"])
            .arg(&weights)
            .arg("--data-dir")
            .arg(data.path())
            .arg("--record")
            .args(notes);
        cmd
    };
    for key in [
        "lenet5_config",
        "dataset",
        "format",
        "epochs_done",
        "lenet_run_id",
    ] {
        let note = format!("{key}=x");
        let stderr = fails(&mut eval(&[note.as_str()]));
        assert!(stderr.contains(&format!("{key:?}")), "{key}: {stderr}");
    }
    let held = hold_lock(&weights);
    let stderr = fails(&mut eval(&["seed=1"]));
    assert!(stderr.contains("another lenet run"), "{stderr}");
    drop(held);
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    succeeds(&mut eval(&["seed=1"]));
    let bytes = std::fs::read(&weights).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["seed"], "1");
    assert!(meta.contains_key("test_accuracy"), "{meta:?}");
}

/// D2: saving through a symbolic link writes the file it points to (the link stays) and keeps
/// that file's mode.
#[cfg(unix)]
#[test]
fn saving_through_a_link_keeps_the_link_and_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("real.safetensors");
    good_checkpoint(&target);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = out.path().join("link.safetensors");
    std::os::unix::fs::symlink("real.safetensors", &link).unwrap();
    let before = std::fs::read(&target).unwrap();
    succeeds(quick_train(data.path(), "1").arg("--save").arg(&link));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_ne!(
        std::fs::read(&target).unwrap(),
        before,
        "the target kept its old bytes"
    );
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

// ---- the state file's own fields, validated (issue 20, section B) ----

/// Rewrites the metadata entry `key` of the safetensors file at `path` (`None`: removes it).
fn set_metadata(path: &Path, key: &str, value: Option<&str>) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    match value {
        Some(v) => meta.insert(key.to_string(), v.to_string()),
        None => meta.remove(key),
    };
    std::fs::write(
        path,
        safetensors::serialize(file.tensors(), &Some(meta)).unwrap(),
    )
    .unwrap();
}

/// D7, D8: a state whose `lenet_run` is missing, malformed or holds a `val_split` outside
/// [0, 1) is refused naming the file, the key and the value: never a panic, never a run on
/// all the images instead of the recorded subset.
#[test]
fn resume_validates_the_recorded_data_settings() {
    let data = synthetic_dir();
    let out = tempfile::tempdir().unwrap();
    let weights = out.path().join("w.safetensors");
    let state = out.path().join("w.state.safetensors");
    succeeds(
        quick_train(data.path(), "1")
            .args(["--limit", "200", "--val-split", "0.25", "--save"])
            .arg(&weights),
    );
    let good = std::fs::read(&state).unwrap();
    let run = |v: f64| format!(r#"{{"dataset":"mnist","limit":200,"val_split":{v}}}"#);
    for (value, shown) in [
        (Some(run(1.5)), "1.5"),
        (Some(run(1.0)), "val_split 1 "),
        (Some(run(-0.5)), "-0.5"),
        (
            Some(r#"{"dataset":"mnist","limit":0,"val_split":0.25}"#.to_string()),
            "limit 0",
        ),
        (Some("{".to_string()), "\"{\""),
        (None, "found nothing"),
    ] {
        std::fs::write(&state, &good).unwrap();
        set_metadata(&state, "lenet_run", value.as_deref());
        let stderr =
            refused_before_training(quick_train(data.path(), "2").arg("--resume").arg(&state));
        assert!(
            stderr.contains("\"lenet_run\"") && stderr.contains(shown),
            "{value:?}: {stderr}"
        );
        assert!(stderr.contains("w.state.safetensors"), "{stderr}");
    }
}
