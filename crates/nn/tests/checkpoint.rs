//! Weight files: round trip, exactly PyTorch's ten state_dict tensors, and typed errors for
//! every kind of bad file.

use nn::{ActivationKind, CheckpointError, LeNet5, LeNet5Config, PoolKind, PARAM_NAMES};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// Writes `m`'s weights file at `path`.
fn save(m: &LeNet5, path: &Path) {
    nn::write_atomic(path, &m.weights_bytes(path, HashMap::new()).unwrap()).unwrap();
}

fn model(config: LeNet5Config, seed: u64) -> LeNet5 {
    LeNet5::new(config, &mut ChaCha8Rng::seed_from_u64(seed))
}

fn assert_same_params(a: &LeNet5, b: &LeNet5) {
    for (p, q) in a.params().iter().zip(b.params()) {
        assert_eq!(p.name, q.name);
        assert_eq!(p.shape, q.shape, "{}", p.name);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(p.value), bits(q.value), "{} differs", p.name);
    }
}

/// Writes a safetensors file from (name, dtype, shape, raw bytes).
fn write_raw(path: &Path, tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

/// The default model's tensors as raw f32 entries, for tampering.
fn raw_tensors(m: &LeNet5) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    m.params()
        .iter()
        .map(|p| {
            (
                p.name.to_string(),
                Dtype::F32,
                p.shape.to_vec(),
                p.value.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect()
}

#[test]
fn round_trip_keeps_every_bit_and_the_config() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        LeNet5Config::default(),
        LeNet5Config {
            activation: ActivationKind::Tanh,
            pooling: PoolKind::Max,
            c1: 8,
            c2: 20,
        },
    ] {
        let m = model(config, 3);
        let path = dir.path().join("w.safetensors");
        save(&m, &path);

        let loaded = LeNet5::from_weights_file(&path).unwrap();
        assert_eq!(loaded.config(), config);
        assert_same_params(&m, &loaded);

        let mut into = LeNet5::zeros(config);
        into.load_weights(&path).unwrap();
        assert_same_params(&m, &into);
    }
    // Only the file itself is left: the temporary file was renamed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn file_holds_exactly_the_pytorch_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let m = model(LeNet5Config::default(), 1);
    save(&m, &path);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut want: Vec<String> = PARAM_NAMES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        names, want,
        "a strict load_state_dict needs exactly these tensors"
    );
    let expected_shapes: HashMap<&str, Vec<usize>> = [
        ("conv1.weight", vec![6, 1, 5, 5]),
        ("conv1.bias", vec![6]),
        ("conv2.weight", vec![16, 6, 5, 5]),
        ("conv2.bias", vec![16]),
        ("fc1.weight", vec![120, 400]),
        ("fc1.bias", vec![120]),
        ("fc2.weight", vec![84, 120]),
        ("fc2.bias", vec![84]),
        ("fc3.weight", vec![10, 84]),
        ("fc3.bias", vec![10]),
    ]
    .into_iter()
    .collect();
    for (name, t) in st.tensors() {
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        assert_eq!(
            t.shape(),
            expected_shapes[name.as_str()].as_slice(),
            "{name}"
        );
    }
}

#[test]
fn loads_a_file_without_metadata_as_pytorch_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torch.safetensors");
    let m = model(LeNet5Config::default(), 5);
    write_raw(&path, raw_tensors(&m));
    let loaded = LeNet5::from_weights_file(&path).unwrap();
    assert_eq!(loaded.config(), LeNet5Config::default());
    assert_same_params(&m, &loaded);
}

#[test]
fn missing_tensor_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.safetensors");
    let mut t = raw_tensors(&model(LeNet5Config::default(), 1));
    t.retain(|(n, ..)| n != "fc2.bias");
    write_raw(&path, t);
    let err = LeNet5::from_weights_file(&path).unwrap_err();
    match &err {
        CheckpointError::MissingTensor { path: p, name } => {
            assert_eq!(p, &path);
            assert_eq!(name, "fc2.bias");
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("missing.safetensors") && msg.contains("fc2.bias"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shape.safetensors");
    let mut t = raw_tensors(&model(LeNet5Config::default(), 1));
    let fc1 = t.iter_mut().find(|(n, ..)| n == "fc1.weight").unwrap();
    fc1.2 = vec![100, 480];
    write_raw(&path, t);
    let mut m = LeNet5::zeros(LeNet5Config::default());
    let err = m.load_weights(&path).unwrap_err();
    match &err {
        CheckpointError::WrongShape {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "fc1.weight");
            assert_eq!(expected, &vec![120, 400]);
            assert_eq!(found, &vec![100, 480]);
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("[120, 400]") && msg.contains("[100, 480]"),
        "{msg}"
    );
}

#[test]
fn wrong_dtype_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dtype.safetensors");
    let mut t = raw_tensors(&model(LeNet5Config::default(), 1));
    let b = t.iter_mut().find(|(n, ..)| n == "conv1.bias").unwrap();
    b.1 = Dtype::F64;
    b.3 = vec![0u8; 6 * 8];
    write_raw(&path, t);
    let err = LeNet5::from_weights_file(&path).unwrap_err();
    match &err {
        CheckpointError::WrongDtype {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "conv1.bias");
            assert_eq!(expected, "F32");
            assert_eq!(found, "F64");
        }
        other => panic!("expected WrongDtype, got {other:?}"),
    }
}

#[test]
fn not_a_safetensors_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        (
            "text.safetensors",
            b"this is not a checkpoint at all".to_vec(),
        ),
        ("short.safetensors", vec![1, 2, 3]),
        // A header length far larger than the file.
        ("huge.safetensors", {
            let mut v = u64::MAX.to_le_bytes().to_vec();
            v.extend_from_slice(b"{}");
            v
        }),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = LeNet5::from_weights_file(&path).unwrap_err();
        assert!(
            matches!(err, CheckpointError::NotSafetensors { .. }),
            "{name}: expected NotSafetensors, got {err:?}"
        );
        assert!(err.to_string().contains(name));
    }
    let err = LeNet5::from_weights_file(dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
}

#[test]
fn bad_config_metadata_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.safetensors");
    let t = raw_tensors(&model(LeNet5Config::default(), 1));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: HashMap<String, String> =
        [("lenet5_config".to_string(), "{not json".to_string())].into();
    std::fs::write(&path, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
    let err = LeNet5::from_weights_file(&path).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::BadMetadata { key, .. } if key == "lenet5_config"),
        "{err:?}"
    );
}

/// A safetensors file of `tensors` with `lenet5_config` metadata `config` (when given).
fn write_with_config(
    path: &Path,
    t: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    config: Option<&str>,
) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: Option<HashMap<String, String>> =
        config.map(|c| [("lenet5_config".to_string(), c.to_string())].into());
    std::fs::write(path, safetensors::serialize(views, &meta).unwrap()).unwrap();
}

#[test]
fn metadata_cannot_make_the_loader_allocate_a_huge_model() {
    // Configs claiming 100k channels, one past the limit, or a c2 whose fc1 width overflows:
    // refused from the metadata, naming the field and the limit, before anything is sized by
    // them (100k channels would ask for ~1 TB; the overflow would panic).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liar.safetensors");
    let t = raw_tensors(&model(LeNet5Config::default(), 1));
    let too_wide = nn::MAX_CHANNELS + 1;
    for (c1, c2, field) in [
        (100_000, 100_000, "c1"),
        (6, too_wide, "c2"),
        (6, usize::MAX / 3, "c2"),
    ] {
        let config = format!(r#"{{"activation":"relu","pooling":"avg","c1":{c1},"c2":{c2}}}"#);
        write_with_config(&path, &t, Some(&config));
        let err = LeNet5::from_weights_file(&path).unwrap_err();
        match &err {
            CheckpointError::BadMetadata { key, expected, .. } => {
                assert_eq!(key, "lenet5_config");
                let limit = format!("{field} must be in 1..={}", nn::MAX_CHANNELS);
                assert!(expected.contains(&limit), "{expected}");
            }
            other => panic!("expected BadMetadata, got {other:?}"),
        }
    }
}

#[test]
fn shapes_cannot_make_the_loader_build_a_huge_model() {
    // A file without a config (as PyTorch writes it) whose conv1.weight has one channel more
    // than a model may: refused from the header's shape, naming the tensors and the limit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.safetensors");
    let c1 = nn::MAX_CHANNELS + 1;
    let bytes = vec![0u8; c1 * 25 * 4];
    let t = vec![(
        "conv1.weight".to_string(),
        Dtype::F32,
        vec![c1, 1, 5, 5],
        bytes,
    )];
    write_with_config(&path, &t, None);
    let err = LeNet5::from_weights_file(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::TooWide { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("conv1.weight")
            && text.contains(&format!("c1 must be in 1..={}", nn::MAX_CHANNELS)),
        "{text}"
    );
}

#[test]
fn a_weights_file_is_not_a_training_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    save(&model(LeNet5Config::default(), 1), &path);
    let err = nn::Trainer::load_training_state(&path).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::BadMetadata { key, .. } if key == "format"),
        "{err:?}"
    );
    assert!(err.to_string().contains("w.safetensors"), "{err}");
}

#[test]
fn weights_load_from_bytes_as_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let mut model = nn::LeNet5::zeros(nn::LeNet5Config::default());
    let bias: Vec<f32> = (0..10).map(|i| i as f32 * 0.5 - 2.0).collect();
    model.set_param("fc3.bias", &bias);
    save(&model, &path);
    let bytes = std::fs::read(&path).unwrap();
    let back = nn::LeNet5::from_weights_bytes(&bytes, "built-in").unwrap();
    assert_eq!(back.param("fc3.bias").unwrap().value, &bias[..]);
    let err = nn::LeNet5::from_weights_bytes(&bytes[..100], "built-in").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("built-in: not a safetensors file"),
        "{err}"
    );
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A FIFO as a model or resume file is refused at once (reading it would wait forever).
#[cfg(unix)]
#[test]
fn a_fifo_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("w.safetensors");
    mkfifo(&fifo);
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let weights = LeNet5::from_weights_file(&path).map(|_| ());
        let state = nn::Trainer::load_training_state(&path).map(|_| ());
        tx.send((weights, state)).unwrap();
    });
    let (weights, state) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("loading a FIFO hangs");
    for err in [weights.unwrap_err(), state.unwrap_err()] {
        assert!(
            matches!(&err, CheckpointError::NotRegularFile { kind, .. } if *kind == "a FIFO"),
            "{err:?}"
        );
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    let err = LeNet5::from_weights_file(dir.path()).unwrap_err();
    assert!(err.to_string().contains("a directory"), "{err}");
}

/// NaN or infinite weights are refused, naming the tensor, by every loader.
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut m = model(LeNet5Config::default(), 1);
        let mut bias = m.param("fc2.bias").unwrap().value.to_vec();
        bias[7] = bad;
        m.set_param("fc2.bias", &bias);
        save(&m, &path);
        let from_file = LeNet5::from_weights_file(&path).unwrap_err();
        let from_bytes =
            LeNet5::from_weights_bytes(&std::fs::read(&path).unwrap(), "mem").unwrap_err();
        let into_model = model(LeNet5Config::default(), 2)
            .load_weights(&path)
            .unwrap_err();
        for err in [from_file, from_bytes, into_model] {
            match &err {
                CheckpointError::NonFinite { name, index, .. } => {
                    assert_eq!((name.as_str(), *index), ("fc2.bias", 7));
                }
                other => panic!("expected NonFinite, got {other:?}"),
            }
            assert!(err.to_string().contains("fc2.bias"), "{err}");
        }
    }
}

/// An I/O error prints its cause once in a cause chain, and a parser error is a sentence.
#[test]
fn errors_print_each_cause_once_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let err = LeNet5::from_weights_file(dir.path().join("absent.safetensors")).unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain += &format!(": {s}");
        source = s.source();
    }
    assert_eq!(chain.matches("os error").count(), 1, "{chain}");

    let path = dir.path().join("huge-header.safetensors");
    let mut bytes = (200u64 << 20).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, bytes).unwrap();
    let msg = LeNet5::from_weights_file(&path).unwrap_err().to_string();
    assert!(!msg.contains("HeaderTooLarge"), "{msg}");
    assert!(msg.contains("header length"), "{msg}");
}
