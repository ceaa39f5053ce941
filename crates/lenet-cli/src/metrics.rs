//! `--metrics FILE.jsonl`: one JSON object per epoch, flushed as soon as the epoch ends so that a
//! crashed or interrupted run keeps every finished epoch.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What one epoch measured. Accuracies are fractions in [0, 1]; `seconds` is the wall time of the
/// epoch's training plus its evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's training batches.
    pub train_loss: f64,
    /// Fraction of training images classified correctly during the epoch.
    pub train_accuracy: f64,
    /// Mean cross-entropy on the test set after the epoch.
    pub test_loss: f64,
    /// Fraction of test images classified correctly after the epoch.
    pub test_accuracy: f64,
    /// Wall time of training plus evaluation.
    pub seconds: f64,
    /// Mean cross-entropy on the validation split (only with `--val-split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Accuracy on the validation split (only with `--val-split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

/// Widens an `f32` to the `f64` with the same shortest decimal form, so that JSON shows `0.21`
/// rather than `0.20999999344348907`.
pub fn short_f64(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse().unwrap_or(x as f64)
    } else {
        x as f64
    }
}

/// Appends [`EpochRecord`]s to a JSONL file, one line each.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsWriter {
    /// Opens `path`: truncated for a new run, appended to when a run is resumed.
    pub fn create(path: &Path, append: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line and flushes it to the file.
    pub fn write(&mut self, record: &EpochRecord) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Reads a JSONL metrics file back (used by `--resume` to redraw the full plot, and by tests).
pub fn read_metrics(path: &Path) -> io::Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: line {}: {e}", path.display(), i + 1),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: 0.21,
            train_accuracy: 0.93,
            test_loss: 0.07,
            test_accuracy: 0.9781,
            seconds: 2.1,
            val_loss: None,
            val_accuracy: None,
        }
    }

    #[test]
    fn writes_the_documented_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut w = MetricsWriter::create(&path, false).unwrap();
        w.write(&record(1)).unwrap();
        // Flushed per line: readable before the writer is dropped.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"epoch\":1,\"train_loss\":0.21,\"train_accuracy\":0.93,\"test_loss\":0.07,\
             \"test_accuracy\":0.9781,\"seconds\":2.1}\n"
        );
        drop(w);
    }

    #[test]
    fn validation_fields_appear_only_when_present() {
        let mut r = record(2);
        r.val_loss = Some(0.5);
        r.val_accuracy = Some(0.875);
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.ends_with("\"val_loss\":0.5,\"val_accuracy\":0.875}"),
            "{line}"
        );
    }

    #[test]
    fn append_keeps_and_truncate_drops_old_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        MetricsWriter::create(&path, false)
            .unwrap()
            .write(&record(1))
            .unwrap();
        MetricsWriter::create(&path, true)
            .unwrap()
            .write(&record(2))
            .unwrap();
        let back = read_metrics(&path).unwrap();
        assert_eq!(back, vec![record(1), record(2)]);
        MetricsWriter::create(&path, false)
            .unwrap()
            .write(&record(3))
            .unwrap();
        assert_eq!(read_metrics(&path).unwrap(), vec![record(3)]);
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, "{\"epoch\":1}\n").unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains("m.jsonl") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn short_f64_keeps_the_f32_digits() {
        assert_eq!(short_f64(0.21), 0.21);
        assert_eq!(short_f64(0.9781), 0.9781);
        assert!(short_f64(f32::NAN).is_nan());
    }
}
