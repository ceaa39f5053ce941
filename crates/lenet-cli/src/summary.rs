//! `lenet summary`: the layer table of the model (output shape, parameters, FLOPs per image), as
//! `torchinfo.summary` prints it for a PyTorch model. The rows come from
//! `nn::inspect::layer_table`, which `lenet serve` shows too.

use std::fmt::Write as _;

use anyhow::Result;
use nn::inspect::LayerRow;

use crate::args::SummaryArgs;
use crate::model_source::LoadedModel;

/// Runs `lenet summary`.
pub fn run(args: &SummaryArgs) -> Result<()> {
    let loaded = LoadedModel::load(args.model.as_deref())?;
    let config = loaded.model.config();
    crate::outln!(
        "LeNet-5 from {} ({} activation, {} pooling, {} and {} channels)",
        loaded.source,
        config.activation,
        config.pooling,
        config.c1,
        config.c2
    )?;
    crate::outln!()?;
    let table = table(&nn::inspect::layer_table(&config));
    crate::outln!("{}", table.trim_end_matches('\n'))?;
    Ok(())
}

/// The table as text: one line per layer, a rule, the totals and a note on how FLOPs are counted.
pub fn table(rows: &[LayerRow]) -> String {
    let shape = |s: &[usize]| {
        let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    };
    let kind_width = rows
        .iter()
        .map(|r| r.kind.chars().count())
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, shape: &str, params: &str, flops: &str| {
        let pad = kind_width.saturating_sub(kind.chars().count());
        let _ = writeln!(
            out,
            "{name:<8}  {kind}{:pad$}  {shape:<13}  {params:>10}  {flops:>10}",
            ""
        );
    };
    line("Layer", "Type", "Output shape", "Params", "FLOPs");
    line("input", "", &shape(&[1, 28, 28]), "", "");
    for r in rows {
        line(
            &r.name,
            &r.kind,
            &shape(&r.output_shape),
            &thousands(r.params as u64),
            &thousands(r.flops),
        );
    }
    let params: usize = rows.iter().map(|r| r.params).sum();
    let flops: u64 = rows.iter().map(|r| r.flops).sum();
    let width = 8 + 2 + kind_width + 2 + 13 + 2 + 10 + 2 + 10;
    let _ = writeln!(out, "{}", "-".repeat(width));
    let pad = kind_width;
    let _ = writeln!(
        out,
        "{:<8}  {:pad$}  {:<13}  {:>10}  {:>10}",
        "Total",
        "",
        "",
        thousands(params as u64),
        thousands(flops)
    );
    let _ = writeln!(
        out,
        "\nFLOPs per image = 2 × multiply-accumulates of the convolutions and linear layers \
         (biases, activations and pooling are not counted)."
    );
    out
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(61_706), "61,706");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn table_of_the_default_model() {
        let text = table(&nn::inspect::layer_table(&nn::LeNet5Config::default()));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Layer") && lines[0].contains("FLOPs"));
        let conv1 = lines.iter().find(|l| l.starts_with("conv1")).unwrap();
        assert!(
            conv1.contains("[6, 28, 28]") && conv1.contains("156") && conv1.contains("235,200")
        );
        let total = lines.iter().find(|l| l.starts_with("Total")).unwrap();
        assert!(
            total.contains("61,706") && total.contains("833,040"),
            "{total}"
        );
        // Columns line up: every row has the same width up to the FLOPs column's end.
        let widths: Vec<usize> = lines[..14].iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{widths:?}\n{text}");
    }
}
