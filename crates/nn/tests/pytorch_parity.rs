//! LeNet-5 against PyTorch: forward activations, loss, every gradient (parameters and input)
//! and three SGD steps from `lenet5_step.safetensors` (see the reference README).
//!
//! The file comes from `$LENET_REFERENCE_DIR/lenet5_step.safetensors`, or, when that variable is
//! unset, from the repository copy `crates/tensor/tests/data/lenet5_step.safetensors`. Every
//! shape (batch size, channels) is read from the file. Tolerance per element:
//! `|got − ref| ≤ rtol·(max|ref| + |ref|)`, rtol = 1e-5 (1e-3 for `sgd.update*`, which we get
//! by subtracting f32 parameters).

use ndarray::ArrayView4;
use nn::{LeNet5, LeNet5Config, Sgd, SgdConfig, SoftmaxCrossEntropy, PARAM_NAMES};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

const RTOL: f64 = 1e-5;
const RTOL_UPDATE: f64 = 1e-3;

fn reference_file() -> PathBuf {
    match std::env::var_os("LENET_REFERENCE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("lenet5_step.safetensors"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tensor/tests/data/lenet5_step.safetensors"),
    }
}

struct Reference<'a> {
    st: SafeTensors<'a>,
}

impl Reference<'_> {
    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self
            .st
            .tensor(name)
            .unwrap_or_else(|e| panic!("reference tensor {name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name} dtype");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.shape().to_vec(), v)
    }

    fn targets(&self, name: &str) -> Vec<usize> {
        let t = self.st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I64, "{name} dtype");
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect()
    }
}

/// Compares element-wise, recording failures; returns the worst |d| / (max|ref| + |ref|).
struct Checker {
    checked: usize,
    failures: Vec<String>,
    worst: Vec<(String, f64)>,
}

impl Checker {
    fn check(
        &mut self,
        name: &str,
        got_shape: &[usize],
        got: &[f32],
        reference: &(Vec<usize>, Vec<f32>),
        rtol: f64,
    ) {
        self.checked += 1;
        let (ref_shape, r) = reference;
        if got_shape != ref_shape.as_slice() {
            self.failures.push(format!(
                "{name}: shape {got_shape:?}, reference {ref_shape:?}"
            ));
            return;
        }
        let max_ref = r.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        let mut worst = 0.0f64;
        let mut first_bad = None;
        for (i, (&g, &x)) in got.iter().zip(r).enumerate() {
            let d = (g as f64 - x as f64).abs();
            let scale = max_ref + (x as f64).abs();
            let ratio = if scale > 0.0 { d / scale } else { d };
            worst = worst.max(ratio);
            // Written so that NaN fails.
            let within = d <= rtol * scale;
            if !within && first_bad.is_none() {
                first_bad = Some(format!(
                    "{name}[{i}]: got {g}, ref {x} (|d| = {d:e}, allowed {:e})",
                    rtol * scale
                ));
            }
        }
        self.worst.push((name.to_string(), worst));
        if let Some(f) = first_bad {
            self.failures.push(f);
        }
    }
}

fn param_value(model: &LeNet5, name: &str) -> (Vec<usize>, Vec<f32>) {
    let p = model.param(name).unwrap();
    (p.shape.to_vec(), p.value.to_vec())
}

#[test]
fn lenet5_matches_pytorch_forward_backward_and_sgd() {
    let path = reference_file();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); set LENET_REFERENCE_DIR to the folder holding lenet5_step.safetensors",
            path.display()
        )
    });
    println!("reference: {}", path.display());
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    let r = Reference { st };

    // Architecture from the parameter shapes.
    let (w1, _) = r.f32("conv1.weight");
    let (w2, _) = r.f32("conv2.weight");
    let config = LeNet5Config {
        c1: w1[0],
        c2: w2[0],
        ..LeNet5Config::default()
    };
    let mut model = LeNet5::zeros(config);
    for name in PARAM_NAMES {
        let (shape, v) = r.f32(name);
        assert_eq!(
            model.param(name).unwrap().shape,
            shape.as_slice(),
            "{name} shape"
        );
        model.set_param(name, &v);
    }

    let (in_shape, input) = r.f32("input");
    let target = r.targets("target");
    let dim = (in_shape[0], in_shape[1], in_shape[2], in_shape[3]);
    let x = ArrayView4::from_shape(dim, &input).unwrap();

    let mut c = Checker {
        checked: 0,
        failures: Vec::new(),
        worst: Vec::new(),
    };
    let mut loss_fn = SoftmaxCrossEntropy::new();

    // Forward.
    model.forward(x);
    {
        let a = model.activations();
        let views4 = [
            ("act.conv1", a.conv1),
            ("act.relu1", a.act1),
            ("act.pool1", a.pool1),
            ("act.conv2", a.conv2),
            ("act.relu2", a.act2),
            ("act.pool2", a.pool2),
        ];
        for (name, v) in views4 {
            c.check(name, v.shape(), v.as_slice().unwrap(), &r.f32(name), RTOL);
        }
        let views2 = [
            ("act.fc1", a.fc1),
            ("act.relu3", a.act3),
            ("act.fc2", a.fc2),
            ("act.relu4", a.act4),
            ("logits", a.logits),
        ];
        for (name, v) in views2 {
            c.check(name, v.shape(), v.as_slice().unwrap(), &r.f32(name), RTOL);
        }
    }
    let loss = loss_fn.forward_backward(model.logits(), &target);
    c.check("loss", &[1], &[loss], &r.f32("loss"), RTOL);

    // Backward, with the input gradient.
    model.backward(x, loss_fn.grad_logits(), true);
    for p in model.params() {
        let name = format!("grad.{}", p.name);
        c.check(&name, p.shape, p.grad, &r.f32(&name), RTOL);
    }
    let gi = model.grad_input();
    c.check(
        "grad.input",
        gi.shape(),
        gi.as_slice().unwrap(),
        &r.f32("grad.input"),
        RTOL,
    );

    // SGD: hyper-parameters from the metadata if present, else the documented values.
    let sgd_meta: serde_json::Value = meta
        .get("sgd")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null);
    let num = |k: &str, default: f64| sgd_meta.get(k).and_then(|v| v.as_f64()).unwrap_or(default);
    let config = SgdConfig {
        lr: num("lr", 0.05) as f32,
        momentum: num("momentum", 0.9) as f32,
        weight_decay: num("weight_decay", 5e-4) as f32,
        nesterov: sgd_meta
            .get("nesterov")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    };
    let steps = num("steps", 3.0) as usize;
    println!("SGD {config:?}, {steps} steps");
    let mut sgd = Sgd::new(config, model.params().iter().map(|p| p.value.len()));
    for k in 1..=steps {
        model.forward(x);
        let loss = loss_fn.forward_backward(model.logits(), &target);
        c.check(
            &format!("sgd.loss{k}"),
            &[1],
            &[loss],
            &r.f32(&format!("sgd.loss{k}")),
            RTOL,
        );
        model.backward(x, loss_fn.grad_logits(), false);
        let before: Vec<(Vec<usize>, Vec<f32>)> =
            PARAM_NAMES.iter().map(|n| param_value(&model, n)).collect();
        sgd.step(&mut model.params_mut());
        for (name, (shape, old)) in PARAM_NAMES.iter().zip(before) {
            let (_, new) = param_value(&model, name);
            let step_name = format!("sgd.step{k}.{name}");
            c.check(&step_name, &shape, &new, &r.f32(&step_name), RTOL);
            let update: Vec<f32> = new.iter().zip(&old).map(|(a, b)| a - b).collect();
            let update_name = format!("sgd.update{k}.{name}");
            c.check(
                &update_name,
                &shape,
                &update,
                &r.f32(&update_name),
                RTOL_UPDATE,
            );
        }
    }

    c.worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("worst relative deviations (|d| / (max|ref| + |ref|)):");
    let (updates, others): (Vec<_>, Vec<_>) = c
        .worst
        .iter()
        .partition(|(n, _)| n.starts_with("sgd.update"));
    for (name, w) in others.iter().take(5).chain(updates.iter().take(3)) {
        println!("  {name}: {w:.3e}");
    }
    println!("checked {} tensors, {} failed", c.checked, c.failures.len());
    assert!(
        c.checked >= 10 + 1 + 1 + 10 + 1 + 3 * 21,
        "too few tensors checked: {}",
        c.checked
    );
    assert!(
        c.failures.is_empty(),
        "parity failures:\n{}",
        c.failures.join("\n")
    );
}
