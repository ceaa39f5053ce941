//! The built-in model on digits that do not come from MNIST: the handwriting-like set in
//! tests/data/handwriting (see its README), read by `lenet predict`, so through the same
//! preprocessing as any user's image.

use std::collections::BTreeMap;
use std::path::PathBuf;

use assert_cmd::Command;

/// The accuracy the README states as the target for this set.
const TARGET: f64 = 0.97;

#[test]
fn built_in_model_reads_the_handwriting_set() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/handwriting");
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    images.sort();
    assert!(images.len() >= 200, "{} images", images.len());
    let out = Command::cargo_bin("lenet")
        .unwrap()
        .arg("predict")
        .args(&images)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), images.len());
    // Per style: (correct, total).
    let mut styles: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (path, line) in images.iter().zip(&lines) {
        let name = path.file_stem().unwrap().to_str().unwrap();
        let mut parts = name.split('_');
        let style = parts.next().unwrap().to_string();
        let label = parts.next().unwrap();
        let predicted = line.rsplit_once(": ").unwrap().1.split(' ').next().unwrap();
        let entry = styles.entry(style).or_default();
        entry.1 += 1;
        if predicted == label {
            entry.0 += 1;
        } else {
            wrong.push(format!("{name} read as {predicted}"));
        }
    }
    let correct: usize = styles.values().map(|s| s.0).sum();
    for (style, (c, n)) in &styles {
        println!("{style:>10}: {c}/{n}");
    }
    let accuracy = correct as f64 / images.len() as f64;
    println!(
        "handwriting set: {correct}/{} = {:.2}%; misread: {}",
        images.len(),
        100.0 * accuracy,
        wrong.join(", ")
    );
    assert!(
        accuracy >= TARGET,
        "{:.2}% < {:.0}%",
        100.0 * accuracy,
        100.0 * TARGET
    );
}
