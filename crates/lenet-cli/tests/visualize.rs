//! `lenet summary`, `lenet visualize` and `lenet eval --png` as a user runs them.

mod common;

use std::process::Command;

use common::{one, png, random_model};

fn lenet(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(args)
        .output()
        .expect("cannot run lenet")
}

#[test]
fn summary_prints_the_layer_table() {
    let out = lenet(&[
        "summary".as_ref(),
        "--model".as_ref(),
        random_model().as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "conv1",
        "[6, 28, 28]",
        "fc3",
        "[10]",
        "61,706",
        "833,040",
        "2 × multiply-accumulates",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn visualize_writes_filter_and_feature_map_grids() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("one.png");
    std::fs::write(&image, png(&one(90, 90))).unwrap();
    let out_dir = dir.path().join("pictures");
    let out = lenet(&[
        "visualize".as_ref(),
        "--out".as_ref(),
        out_dir.as_os_str(),
        "--model".as_ref(),
        random_model().as_os_str(),
        image.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "conv1_filters",
        "conv2_filters",
        "input",
        "conv1",
        "pool1",
        "conv2",
        "pool2",
    ] {
        let path = out_dir.join(format!("{name}.png"));
        let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            img.width() > 20 && img.height() > 20,
            "{name} is {}×{}",
            img.width(),
            img.height()
        );
        let rgb = img.to_rgb8();
        let first = *rgb.get_pixel(0, 0);
        assert!(rgb.pixels().any(|p| *p != first), "{name} is blank");
    }
    // conv2's filters: 16 columns (outputs) by 6 rows (inputs) of 5×5 tiles.
    let bank = image::open(out_dir.join("conv2_filters.png")).unwrap();
    assert!(
        bank.width() > 2 * bank.height(),
        "{}×{}",
        bank.width(),
        bank.height()
    );

    // A bad image is an error naming it, before anything is written.
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not a picture").unwrap();
    let out = lenet(&[
        "visualize".as_ref(),
        "--out".as_ref(),
        dir.path().join("other").as_os_str(),
        "--model".as_ref(),
        random_model().as_os_str(),
        bad.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.png"));
    assert!(!dir.path().join("other").exists());
}

#[test]
fn eval_draws_the_confusion_matrix() {
    let Some(data) = std::env::var_os("LENET_DATA_DIR") else {
        eprintln!("skipped: LENET_DATA_DIR is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("confusion.png");
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["eval", "--model"])
        .arg(random_model())
        .arg("--png")
        .arg(&picture)
        .env("LENET_DATA_DIR", data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&picture).unwrap();
    assert_eq!(img.width(), img.height());
    assert!(img.width() >= 10 * 20);
}
