//! The model built into `lenet`: used when `--model` is absent, and as good as it records.

use std::path::PathBuf;

use assert_cmd::Command;
use safetensors::SafeTensors;

fn lenet() -> Command {
    Command::cargo_bin("lenet").expect("the lenet binary is built")
}

fn asset() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/lenet5-mnist.safetensors")
}

fn recorded(key: &str) -> String {
    let bytes = std::fs::read(asset()).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    meta.get(key)
        .unwrap_or_else(|| panic!("the built-in model records no {key}"))
        .clone()
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn predict_without_model_uses_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("seven.png");
    let mut img = image::GrayImage::from_pixel(80, 80, image::Luma([235]));
    for x in 15..65 {
        for y in 12..18 {
            img.put_pixel(x, y, image::Luma([25]));
        }
    }
    for t in 0..55 {
        for d in 0..6 {
            img.put_pixel(60 - t * 30 / 55 + d, 18 + t, image::Luma([25]));
        }
    }
    img.save(&png).unwrap();
    let built_in = stdout(lenet().arg("predict").arg(&png));
    let from_file = stdout(lenet().args(["predict", "--model"]).arg(asset()).arg(&png));
    assert_eq!(built_in, from_file);
    assert!(
        built_in.starts_with(&format!("{}: 7 (", png.display())),
        "{built_in}"
    );
}

#[test]
fn eval_without_model_reproduces_the_recorded_accuracy() {
    if std::env::var_os("LENET_DATA_DIR").is_none() {
        println!("skipped: LENET_DATA_DIR is not set");
        return;
    }
    let correct = recorded("test_correct");
    let out = stdout(lenet().arg("eval"));
    let first = out
        .lines()
        .find(|l| l.contains("test set: accuracy"))
        .unwrap_or_default();
    println!("{first} (recorded: {correct})");
    assert!(first.contains(&format!("({correct})")), "{first}");
    let accuracy: f64 = recorded("test_accuracy").parse().unwrap();
    // The target for the shipped model (it records 99.54%, see the README).
    assert!(accuracy >= 0.995, "recorded accuracy {accuracy}");
}
