//! `--metrics FILE.jsonl`: one JSON object per epoch (nn's [`EpochMetrics`]), flushed as soon as
//! the epoch ends so that an interrupted run keeps every finished epoch. A resumed run rewrites
//! the file from the history in its training state, so that the file holds each epoch once
//! however the previous run ended (e.g. killed after writing an epoch to this file but before
//! saving the state of that epoch).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use nn::EpochMetrics;

/// Writes [`EpochMetrics`] to a JSONL file, one line each:
/// `{"epoch":1,"train_loss":0.21,"train_accuracy":0.93,"test_loss":0.07,"test_accuracy":0.9781,"seconds":2.1,"lr":0.05}`
/// (plus `val_loss`/`val_accuracy` with a validation split).
#[derive(Debug)]
pub struct MetricsWriter {
    out: BufWriter<File>,
}

impl MetricsWriter {
    /// Starts `path` with the epochs of `history` (none for a new run; a resumed run's so
    /// far), written atomically, then appends to it.
    pub fn create(path: &Path, history: &[EpochMetrics]) -> io::Result<Self> {
        let mut start = Vec::new();
        for m in history {
            serde_json::to_writer(&mut start, m)?;
            start.push(b'\n');
        }
        nn::write_atomic(path, &start)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Self {
            out: BufWriter::new(file),
        })
    }

    /// Writes one line and flushes it to the file.
    pub fn write(&mut self, metrics: &EpochMetrics) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, metrics)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(epoch: usize) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 0.21,
            train_accuracy: 0.93,
            test_loss: 0.07,
            test_accuracy: 0.9781,
            seconds: 2.1,
            val_loss: None,
            val_accuracy: None,
            lr: 0.05,
        }
    }

    fn lines(path: &Path) -> Vec<EpochMetrics> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn writes_the_documented_line_and_flushes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut w = MetricsWriter::create(&path, &[]).unwrap();
        w.write(&metrics(1)).unwrap();
        // Readable before the writer is dropped: every line is flushed.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"epoch\":1,\"train_loss\":0.21,\"train_accuracy\":0.93,\"test_loss\":0.07,\
             \"test_accuracy\":0.9781,\"seconds\":2.1,\"lr\":0.05}\n"
        );
        drop(w);
    }

    #[test]
    fn the_file_starts_with_the_history_and_drops_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut w = MetricsWriter::create(&path, &[]).unwrap();
        w.write(&metrics(1)).unwrap();
        w.write(&metrics(2)).unwrap();
        drop(w);
        // Resumed from a state saved after epoch 1: epoch 2 is run again, and written once.
        MetricsWriter::create(&path, &[metrics(1)])
            .unwrap()
            .write(&metrics(2))
            .unwrap();
        assert_eq!(lines(&path), vec![metrics(1), metrics(2)]);
        MetricsWriter::create(&path, &[])
            .unwrap()
            .write(&metrics(3))
            .unwrap();
        assert_eq!(lines(&path), vec![metrics(3)]);
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(MetricsWriter::create(&dir.path().join("no/such/m.jsonl"), &[]).is_err());
    }
}
