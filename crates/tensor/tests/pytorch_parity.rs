//! Parity with PyTorch: every case of `ops.safetensors`, outputs and every input gradient, in f32.
//!
//! The file comes from `$LENET_REFERENCE_DIR/ops.safetensors`, or from the copy in `tests/data/`
//! when the variable is unset. Nothing about the cases is hard-coded: the case names, their ops
//! (the `cases` map in the file's metadata), every shape and every hyper-parameter are read from
//! the file, so any reference set made by the same generator passes or fails on its own merits.
//! Every tensor in the file must be consumed as an input or checked as a result, and a case with
//! an op this test does not know fails the test: nothing is skipped silently.
//!
//! Tolerance, per element: `|got − ref| ≤ 1e-5·(max|ref| + |ref|)` (see the reference README:
//! the references are float64 results rounded to float32; the `max|ref|` term absorbs the
//! cancellation in long f32 sums, the `|ref|` term the rounding of large elements).

use ndarray::{Array1, Array2, ArrayD, Dimension, Ix1, Ix2, Ix4, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tensor::*;

const RTOL: f32 = 1e-5;

/// The ops this test can check (the `op` field of a case).
const KNOWN_OPS: [&str; 10] = [
    "conv2d",
    "avg_pool2d",
    "max_pool2d",
    "linear",
    "matmul",
    "relu",
    "tanh",
    "sigmoid",
    "cross_entropy",
    "log_softmax",
];

fn reference_file() -> PathBuf {
    match std::env::var_os("LENET_REFERENCE_DIR") {
        Some(dir) => PathBuf::from(dir).join("ops.safetensors"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ops.safetensors"),
    }
}

/// The reference file, with bookkeeping of which tensors were used and what failed.
struct Reference<'a> {
    st: SafeTensors<'a>,
    used: BTreeSet<String>,
    checked: BTreeSet<String>,
    checked_values: usize,
    failures: Vec<String>,
}

impl<'a> Reference<'a> {
    fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    fn f32(&mut self, name: &str) -> ArrayD<f32> {
        let t = self
            .st
            .tensor(name)
            .unwrap_or_else(|e| panic!("reference tensor `{name}` is missing: {e}"));
        assert_eq!(t.dtype(), Dtype::F32, "`{name}` must be F32");
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        self.used.insert(name.to_string());
        ArrayD::from_shape_vec(IxDyn(t.shape()), data).expect("shape matches data")
    }

    fn i64(&mut self, name: &str) -> Vec<i64> {
        let t = self
            .st
            .tensor(name)
            .unwrap_or_else(|e| panic!("reference tensor `{name}` is missing: {e}"));
        assert_eq!(t.dtype(), Dtype::I64, "`{name}` must be I64");
        self.used.insert(name.to_string());
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// A `[2]` int64 hyper-parameter as (h, w).
    fn pair(&mut self, name: &str) -> (usize, usize) {
        let v = self.i64(name);
        assert!(
            v.len() == 2 && v.iter().all(|&x| x >= 0),
            "`{name}` must be two non-negative integers, got {v:?}"
        );
        (v[0] as usize, v[1] as usize)
    }

    fn f32_as<D: ndarray::Dimension>(&mut self, name: &str) -> ndarray::Array<f32, D> {
        let a = self.f32(name);
        let shape = a.shape().to_vec();
        a.into_dimensionality::<D>().unwrap_or_else(|_| {
            panic!(
                "`{name}` has shape {shape:?}, expected {} dimensions",
                D::NDIM.unwrap_or(0)
            )
        })
    }

    /// Compares `got` with the reference tensor `name`, element by element.
    fn check<D: ndarray::Dimension>(&mut self, name: &str, got: ndarray::ArrayView<'_, f32, D>) {
        let want = self.f32(name);
        self.checked.insert(name.to_string());
        if want.shape() != got.shape() {
            self.failures.push(format!(
                "{name}: shape {:?}, reference {:?}",
                got.shape(),
                want.shape()
            ));
            return;
        }
        let max_ref = want.iter().fold(0.0_f32, |m, v| m.max(v.abs()));
        let mut bad = 0;
        for ((idx, &r), &g) in want.indexed_iter().zip(got.iter()) {
            self.checked_values += 1;
            let ok = (g - r).abs() <= RTOL * (max_ref + r.abs());
            if !ok {
                bad += 1;
                if bad <= 3 {
                    self.failures.push(format!(
                        "{name}[{:?}]: got {g:e}, ref {r:e} (|d| = {:.3e} > {RTOL:e}·({max_ref:e} + |ref|))",
                        idx.slice(),
                        (g - r).abs()
                    ));
                }
            }
        }
        if bad > 3 {
            self.failures
                .push(format!("{name}: {bad} elements out of tolerance in all"));
        }
    }
}

/// Case name → op, from the metadata `cases` map (checked against the tensor names).
fn discover_cases(st: &SafeTensors<'_>, bytes: &[u8]) -> BTreeMap<String, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).expect("safetensors header");
    let cases_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cases"))
        .expect("ops.safetensors metadata has no `cases` map");
    let cases: serde_json::Value = serde_json::from_str(cases_json).expect("`cases` is JSON");
    let cases = cases.as_object().expect("`cases` is a JSON object");
    let mut out = BTreeMap::new();
    for (name, case) in cases {
        let op = case["op"]
            .as_str()
            .unwrap_or_else(|| panic!("case `{name}` has no `op` string"));
        out.insert(name.clone(), op.to_string());
    }
    // Every tensor belongs to a listed case: no case hides outside the map.
    for name in st.names() {
        let case = name.split('.').next().unwrap();
        assert!(
            out.contains_key(case),
            "tensor `{name}` belongs to case `{case}`, which the metadata `cases` map does not list"
        );
    }
    out
}

fn usize_targets(case: &str, t: Vec<i64>) -> Vec<usize> {
    t.into_iter()
        .map(|v| usize::try_from(v).unwrap_or_else(|_| panic!("{case}: negative target {v}")))
        .collect()
}

fn run_case(r: &mut Reference<'_>, case: &str, op: &str) {
    let name = |t: &str| format!("{case}.{t}");
    match op {
        "conv2d" => {
            let x = r.f32_as::<Ix4>(&name("input"));
            let w = r.f32_as::<Ix4>(&name("weight"));
            let b = r.has(&name("bias")).then(|| r.f32_as::<Ix1>(&name("bias")));
            let p = Conv2dParams {
                stride: r.pair(&name("stride")),
                padding: r.pair(&name("padding")),
            };
            let g = r.f32_as::<Ix4>(&name("grad_out"));
            let y = conv2d(x.view(), w.view(), b.as_ref().map(|b| b.view()), p);
            r.check(&name("output"), y.view());
            let grads = conv2d_backward(x.view(), w.view(), g.view(), p);
            r.check(&name("grad_input"), grads.input.view());
            r.check(&name("grad_weight"), grads.weight.view());
            if b.is_some() {
                r.check(&name("grad_bias"), grads.bias.view());
            }
        }
        "avg_pool2d" | "max_pool2d" => {
            let x = r.f32_as::<Ix4>(&name("input"));
            let p = Pool2dParams {
                kernel: r.pair(&name("kernel_size")),
                stride: r.pair(&name("stride")),
            };
            let g = r.f32_as::<Ix4>(&name("grad_out"));
            let (y, gi) = if op == "avg_pool2d" {
                (
                    avg_pool2d(x.view(), p),
                    avg_pool2d_backward(g.view(), p, x.dim()),
                )
            } else {
                (
                    max_pool2d(x.view(), p),
                    max_pool2d_backward(x.view(), g.view(), p),
                )
            };
            r.check(&name("output"), y.view());
            r.check(&name("grad_input"), gi.view());
        }
        "linear" => {
            let x = r.f32_as::<Ix2>(&name("input"));
            let w = r.f32_as::<Ix2>(&name("weight"));
            let b = r.has(&name("bias")).then(|| r.f32_as::<Ix1>(&name("bias")));
            let g = r.f32_as::<Ix2>(&name("grad_out"));
            let y = linear(x.view(), w.view(), b.as_ref().map(|b| b.view()));
            r.check(&name("output"), y.view());
            let grads = linear_backward(x.view(), w.view(), g.view());
            r.check(&name("grad_input"), grads.input.view());
            r.check(&name("grad_weight"), grads.weight.view());
            if b.is_some() {
                r.check(&name("grad_bias"), grads.bias.view());
            }
        }
        "matmul" => {
            let a = r.f32_as::<Ix2>(&name("a"));
            let b = r.f32_as::<Ix2>(&name("b"));
            let g = r.f32_as::<Ix2>(&name("grad_out"));
            r.check(&name("output"), matmul(a.view(), b.view()).view());
            // dA = G·Bᵀ, dB = Aᵀ·G, through gemm on transposed views
            let mut ga = Array2::zeros(a.raw_dim());
            gemm(1.0, g.view(), b.t(), 0.0, ga.view_mut());
            let mut gb = Array2::zeros(b.raw_dim());
            gemm(1.0, a.t(), g.view(), 0.0, gb.view_mut());
            r.check(&name("grad_a"), ga.view());
            r.check(&name("grad_b"), gb.view());
        }
        "relu" | "tanh" | "sigmoid" => {
            let x = r.f32(&name("input"));
            let g = r.f32(&name("grad_out"));
            let (y, gi) = match op {
                "relu" => {
                    let y = Activation::Relu.forward(x.view());
                    let gi = Activation::Relu.backward(y.view(), g.view());
                    (y, gi)
                }
                "tanh" => {
                    let y = Activation::Tanh.forward(x.view());
                    let gi = Activation::Tanh.backward(y.view(), g.view());
                    (y, gi)
                }
                _ => {
                    let y = Activation::Sigmoid.forward(x.view());
                    let gi = Activation::Sigmoid.backward(y.view(), g.view());
                    (y, gi)
                }
            };
            r.check(&name("output"), y.view());
            r.check(&name("grad_input"), gi.view());
        }
        "log_softmax" => {
            let x = r.f32_as::<Ix2>(&name("input"));
            let g = r.f32_as::<Ix2>(&name("grad_out"));
            let y = log_softmax(x.view());
            r.check(&name("output"), y.view());
            r.check(
                &name("grad_input"),
                log_softmax_backward(y.view(), g.view()).view(),
            );
        }
        "cross_entropy" => {
            let logits = r.f32_as::<Ix2>(&name("logits"));
            let targets = usize_targets(case, r.i64(&name("target")));
            let upstream = r.f32_as::<Ix1>(&name("grad_out"));
            assert_eq!(upstream.len(), 1, "{case}.grad_out must be a scalar [1]");
            let loss = cross_entropy(logits.view(), &targets);
            r.check(&name("output"), Array1::from_elem(1, loss).view());
            let gl = cross_entropy_backward(logits.view(), &targets, upstream[0]);
            r.check(&name("grad_logits"), gl.view());
            if r.has(&name("grad_logits_unit")) {
                // the fused training path: loss and gradient for an upstream gradient of 1
                let mut fused = Array2::zeros(logits.raw_dim());
                let l = softmax_cross_entropy_into(logits.view(), &targets, fused.view_mut());
                r.check(&name("grad_logits_unit"), fused.view());
                r.check(&name("output"), Array1::from_elem(1, l).view());
            }
        }
        other => unreachable!("op `{other}` was filtered out before"),
    }
}

#[test]
fn every_case_matches_pytorch() {
    let path = reference_file();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); set LENET_REFERENCE_DIR to a folder holding ops.safetensors",
            path.display()
        )
    });
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors file");
    let cases = discover_cases(&st, &bytes);
    let unknown: Vec<_> = cases
        .iter()
        .filter(|(_, op)| !KNOWN_OPS.contains(&op.as_str()))
        .map(|(c, op)| format!("{c} (op `{op}`)"))
        .collect();
    assert!(
        unknown.is_empty(),
        "{}: cases with ops this test cannot check: {unknown:?}",
        path.display()
    );
    let all_names: BTreeSet<String> = st.names().into_iter().cloned().collect();
    let mut r = Reference {
        st,
        used: BTreeSet::new(),
        checked: BTreeSet::new(),
        checked_values: 0,
        failures: Vec::new(),
    };
    for (case, op) in &cases {
        let before = r.failures.len();
        run_case(&mut r, case, op);
        for f in &mut r.failures[before..] {
            *f = format!("case {case} ({op}): {f}");
        }
    }
    let unused: Vec<_> = all_names.difference(&r.used).collect();
    assert!(
        unused.is_empty(),
        "tensors in {} that no check used: {unused:?}",
        path.display()
    );
    println!(
        "pytorch_parity: {}: {} cases, {} result tensors ({} values) checked against PyTorch, all {} tensors in the file used",
        path.display(),
        cases.len(),
        r.checked.len(),
        r.checked_values,
        all_names.len()
    );
    assert!(
        r.failures.is_empty(),
        "{} mismatches against PyTorch:\n{}",
        r.failures.len(),
        r.failures.join("\n")
    );
}
