//! The 10×10 confusion matrix of `lenet eval`: rows are the true classes, columns the predicted ones.

use std::fmt::Write as _;

use serde::Serialize;

/// Number of classes of MNIST and Fashion-MNIST.
pub const CLASSES: usize = nn::NUM_CLASSES;

/// Counts of (true class, predicted class) pairs, as `nn::Evaluation::confusion` holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confusion {
    /// `counts[t][p]`: images of class `t` predicted as `p`.
    pub counts: [[u64; CLASSES]; CLASSES],
}

/// The machine-readable form printed by `lenet eval --json`.
#[derive(Debug, Serialize)]
pub struct ConfusionJson<'a> {
    /// Dataset name.
    pub dataset: &'a str,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// Images classified correctly.
    pub correct: u64,
    /// Images evaluated.
    pub total: u64,
    /// Class names, by index.
    pub classes: &'a [&'a str],
    /// `confusion[true][predicted]`.
    pub confusion: [[u64; CLASSES]; CLASSES],
}

impl Confusion {
    /// Images counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Images on the diagonal.
    pub fn correct(&self) -> u64 {
        (0..CLASSES).map(|i| self.counts[i][i]).sum()
    }

    /// Fraction classified correctly (0 when empty).
    pub fn accuracy(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.correct() as f64 / n as f64,
        }
    }

    /// The matrix as a text table with class names on the rows, class indices on the columns and
    /// the per-class recall in the last column.
    pub fn to_table(&self, names: &[&str]) -> String {
        // MNIST's class names are the digits themselves: show them once.
        let label = |i: usize| match names.get(i) {
            Some(n) if *n != i.to_string() => format!("{i} {n}"),
            _ => i.to_string(),
        };
        let label_w = (0..CLASSES)
            .map(|i| label(i).len())
            .max()
            .unwrap_or(0)
            .max("true \\ predicted".len());
        let max = self.counts.iter().flatten().copied().max().unwrap_or(0);
        let cell_w = max.to_string().len().max(1) + 2;
        let mut out = String::new();
        let _ = write!(out, "{:<label_w$}", "true \\ predicted");
        for p in 0..CLASSES {
            let _ = write!(out, "{p:>cell_w$}");
        }
        let _ = writeln!(out, "   recall");
        for (t, row) in self.counts.iter().enumerate() {
            let _ = write!(out, "{:<label_w$}", label(t));
            for c in row {
                let _ = write!(out, "{c:>cell_w$}");
            }
            let n: u64 = row.iter().sum();
            let recall = if n == 0 {
                0.0
            } else {
                100.0 * row[t] as f64 / n as f64
            };
            let _ = writeln!(out, "  {recall:6.2}%");
        }
        out
    }

    /// The JSON object of `lenet eval --json`.
    pub fn to_json(&self, dataset: &str, names: &[&str]) -> String {
        let json = ConfusionJson {
            dataset,
            accuracy: self.accuracy(),
            correct: self.correct(),
            total: self.total(),
            classes: names,
            confusion: self.counts,
        };
        serde_json::to_string(&json).expect("plain numbers and strings always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];

    fn sample() -> Confusion {
        let mut c = Confusion::default();
        for t in 0..CLASSES {
            c.counts[t][t] = t as u64 + 1;
        }
        c.counts[3][5] += 1;
        c.counts[7][1] += 1;
        c
    }

    #[test]
    fn counts_and_accuracy() {
        let c = sample();
        assert_eq!(c.total(), 55 + 2);
        assert_eq!(c.correct(), 55);
        assert!((c.accuracy() - 55.0 / 57.0).abs() < 1e-12);
        assert_eq!(Confusion::default().accuracy(), 0.0);
    }

    #[test]
    fn table_rows_are_true_classes() {
        let table = sample().to_table(&NAMES);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 11);
        assert!(lines[0].starts_with("true \\ predicted"));
        let row3: Vec<&str> = lines[4].split_whitespace().collect();
        // "3 three" then the ten counts then the recall.
        assert_eq!(&row3[..2], ["3", "three"]);
        assert_eq!(row3[2 + 3], "4");
        assert_eq!(row3[2 + 5], "1");
        assert_eq!(row3[12], "80.00%");
        // Columns line up: every row has the same length.
        assert!(lines.iter().all(|l| l.len() == lines[1].len()), "{table}");
    }

    #[test]
    fn digit_names_are_not_repeated() {
        let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
        let names: Vec<&str> = digits.iter().map(String::as_str).collect();
        let table = sample().to_table(&names);
        let row3: Vec<&str> = table.lines().nth(4).unwrap().split_whitespace().collect();
        assert_eq!(row3[0], "3");
        assert_eq!(row3.len(), 12);
    }

    #[test]
    fn json_form() {
        let v: serde_json::Value =
            serde_json::from_str(&sample().to_json("mnist", &NAMES)).unwrap();
        assert_eq!(v["dataset"], "mnist");
        assert_eq!(v["total"], 57);
        assert_eq!(v["correct"], 55);
        assert_eq!(v["classes"][9], "nine");
        assert_eq!(v["confusion"][3][5], 1);
        assert_eq!(v["confusion"][7][7], 8);
        assert_eq!(v["confusion"].as_array().unwrap().len(), 10);
    }
}
