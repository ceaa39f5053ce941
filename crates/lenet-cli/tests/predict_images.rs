//! `lenet predict` with several images, some of them bad: every good image still gets its line,
//! every bad one is reported with its name and reason, and the exit status says something failed.

mod common;

use std::path::Path;

use assert_cmd::Command;

fn lenet() -> Command {
    Command::cargo_bin("lenet").expect("the lenet binary is built")
}

/// A dark stroke on white paper.
fn write_digit(path: &Path) {
    let mut img = image::GrayImage::from_pixel(60, 60, image::Luma([240]));
    for y in 10..50 {
        for x in 27..33 {
            img.put_pixel(x, y, image::Luma([20]));
        }
    }
    img.save(path).unwrap();
}

#[test]
fn bad_images_do_not_hide_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let zeros = nn::LeNet5::zeros(nn::LeNet5Config::default());
    let bytes = zeros.weights_bytes(&model, Default::default()).unwrap();
    nn::write_atomic(&model, &bytes).unwrap();
    let (one, two) = (dir.path().join("one.png"), dir.path().join("two.png"));
    write_digit(&one);
    write_digit(&two);
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image").unwrap();
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(30, 30, image::Luma([255]))
        .save(&blank)
        .unwrap();

    let out = lenet()
        .args(["predict", "--model"])
        .arg(&model)
        .args([&one, &garbage, &two, &blank])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{}: ", one.display())),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("{}: ", two.display())),
        "{stdout}"
    );
    assert!(
        stderr.contains("garbage.png") && stderr.contains("not a PNG or JPEG"),
        "{stderr}"
    );
    assert!(
        stderr.contains("blank.png") && stderr.contains("no digit"),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 4 images"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn a_fifo_is_not_read_as_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let zeros = nn::LeNet5::zeros(nn::LeNet5Config::default());
    let bytes = zeros.weights_bytes(&model, Default::default()).unwrap();
    nn::write_atomic(&model, &bytes).unwrap();
    let fifo = dir.path().join("pipe.png");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = lenet()
        .args(["predict", "--model"])
        .arg(&model)
        .arg(&fifo)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pipe.png") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

/// A phone photo of a 7 taken sideways: the pixels stored turned a quarter, the EXIF orientation
/// saying to turn them back. It reads as the upright file does; a truncated copy is refused.
#[test]
fn a_sideways_phone_photo_is_read_upright_and_a_truncated_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/handwriting/neat_7_0.png");
    let seven = image::open(source).unwrap().to_luma8();
    let upright = dir.path().join("upright.jpg");
    std::fs::write(&upright, common::jpeg(&seven)).unwrap();
    // Orientation 6: turn the stored pixels 90° clockwise to show them.
    let stored = common::jpeg(&image::imageops::rotate270(&seven));
    let sideways = dir.path().join("sideways.jpg");
    std::fs::write(&sideways, common::with_orientation(&stored, 6)).unwrap();
    let out = lenet()
        .arg("predict")
        .args([&upright, &sideways])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("upright.jpg: 7 ("), "{stdout}");
    assert!(lines[1].contains("sideways.jpg: 7 ("), "{stdout}");

    let photo = std::fs::read(&sideways).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &photo[..photo.len() / 2]).unwrap();
    let out = lenet().arg("predict").arg(&cut).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cut.jpg") && stderr.contains("truncated"),
        "{stderr}"
    );
}
