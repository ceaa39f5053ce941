//! The JSON bodies of `POST /api/predict` (`{"input": …}`) and `POST /api/fool`, read
//! into checked values. Every field is checked as the command line checks its flags: present
//! when required, of the right type, within its range; a field nobody asked for is refused too
//! (a misspelt `"epsilon"` would otherwise be silently ignored).
//!
//! A body that is not JSON at all is a 400; a JSON body with a missing, mistyped, out-of-range
//! or unknown field is a 422 whose message names the field and the value expected, except for
//! `POST /api/train`, whose every refusal is a 400 naming the field (see [`train_args`]).

use axum::http::StatusCode;
use nn::explain::AttackConfig;
use nn::{IMAGE_SIZE, NUM_CLASSES};
use serde_json::{Map, Value};

use super::api::ApiError;
use crate::args::{Cli, Command, TrainArgs};
use clap::Parser;

/// Most gradient steps one adversarial search may take. A step is one forward and one backward
/// pass of one image (about 0.12 ms), so a search holds a work slot for at most about 25 ms
/// (measured: 200 steps answered in 25 ms on loopback).
pub const MAX_STEPS: usize = 200;

/// What `"input"` must be.
const INPUT: &str = "28 rows of 28 numbers in [0, 1]";

/// The fields of a `POST /api/predict` JSON body.
const PREDICT_FIELDS: [&str; 1] = ["input"];
/// The fields of a `POST /api/fool` body (`step_size` may be left out).
const ADVERSARIAL_FIELDS: [&str; 5] = ["input", "target", "epsilon", "steps", "step_size"];

/// The fields of a `POST /api/train` body, each the `lenet train` flag of the same name
/// (`batch_size` is `--batch-size`); any may be left out for the flag's default.
pub const TRAIN_FIELDS: [&str; 7] = [
    "dataset",
    "epochs",
    "batch_size",
    "lr",
    "augment",
    "limit",
    "seed",
];
/// Most epochs of a run started from the page: its history, sent to every page that opens,
/// stays small. Longer runs are for `lenet train`.
pub const MAX_PAGE_EPOCHS: usize = 1000;

/// A checked `POST /api/fool` body.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialRequest {
    /// The image, 28 rows of 28 values in [0, 1], row-major.
    pub input: Vec<f32>,
    /// The target, bound and steps of the search (checked by [`AttackConfig::check`] too).
    pub config: AttackConfig,
}

/// The model input of a `POST /api/predict` JSON body: 784 values in [0, 1], row-major, used as
/// they are (no preprocessing).
pub fn predict_input(body: &[u8]) -> Result<Vec<f32>, ApiError> {
    let fields = object(body, &PREDICT_FIELDS)?;
    image(required(&fields, "input", INPUT)?)
}

/// A checked `POST /api/fool` body: `input` (28×28 in [0, 1]), `target` (0-9),
/// `epsilon` (in (0, 1]), `steps` (1 to [`MAX_STEPS`]) and, optionally, `step_size` (in
/// (0, 1]; by default [`AttackConfig::default_step_size`]).
pub fn fool_request(body: &[u8]) -> Result<AdversarialRequest, ApiError> {
    let fields = object(body, &ADVERSARIAL_FIELDS)?;
    let input = image(required(&fields, "input", INPUT)?)?;
    let target = integer(&fields, "target", 0, NUM_CLASSES - 1)?;
    let epsilon = unit_interval(&fields, "epsilon")?
        .ok_or_else(|| missing("epsilon", "a number in (0, 1]"))?;
    let steps = integer(&fields, "steps", 1, MAX_STEPS)?;
    let mut config = AttackConfig::new(target, epsilon, steps);
    if let Some(step_size) = unit_interval(&fields, "step_size")? {
        config.step_size = step_size;
    }
    config.check().map_err(invalid)?;
    Ok(AdversarialRequest { input, config })
}

/// The `lenet train` flags of a `POST /api/train` body: each field of [`TRAIN_FIELDS`] becomes
/// its flag and the whole is parsed by the command line's own parser, so every value is
/// checked exactly as `lenet train` checks it. Any refusal is a 400 naming the field.
pub fn train_args(body: &[u8]) -> Result<TrainArgs, ApiError> {
    let bad_request = |e: ApiError| ApiError::new(StatusCode::BAD_REQUEST, e.message);
    let fields = object(body, &TRAIN_FIELDS).map_err(bad_request)?;
    let mut argv = vec!["lenet".to_string(), "train".to_string()];
    for (field, value) in &fields {
        // `--flag=value` keeps a value that starts with `-` a value.
        let flag = format!("--{}", field.replace('_', "-"));
        match (field.as_str(), value) {
            ("augment", Value::Bool(on)) => argv.extend(on.then_some(flag)),
            ("limit", Value::Null) => {}
            ("dataset", Value::String(name)) => argv.push(format!("{flag}={name}")),
            ("lr", Value::Number(n)) => argv.push(format!("{flag}={n}")),
            ("epochs" | "batch_size" | "limit" | "seed", Value::Number(n)) if n.is_u64() => {
                argv.push(format!("{flag}={n}"))
            }
            _ => {
                let expected = train_field_type(field);
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("\"{field}\" must be {expected}, found {}", describe(value)),
                ));
            }
        }
    }
    let cli = Cli::try_parse_from(&argv).map_err(|err| flag_error(&err))?;
    let Command::Train(args) = cli.command else {
        unreachable!("the arguments start with train")
    };
    if args.epochs > MAX_PAGE_EPOCHS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "\"epochs\" must be at most {MAX_PAGE_EPOCHS} in the page, found {} (use lenet \
                 train for longer runs)",
                args.epochs
            ),
        ));
    }
    Ok(args)
}

/// The dataset of a `POST /api/data/download` body, `{"dataset": "mnist" or "fashion-mnist"}`
/// (any refusal a 400, as for [`train_args`]).
pub fn dataset(body: &[u8]) -> Result<mnist::DatasetKind, ApiError> {
    let bad_request = |e: ApiError| ApiError::new(StatusCode::BAD_REQUEST, e.message);
    let fields = object(body, &["dataset"]).map_err(bad_request)?;
    let value = fields.get("dataset").unwrap_or(&Value::Null);
    mnist::DatasetKind::ALL
        .into_iter()
        .find(|k| value.as_str() == Some(k.dir_name()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "\"dataset\" must be {}, found {}",
                    train_field_type("dataset"),
                    describe(value)
                ),
            )
        })
}

/// What a field of [`TRAIN_FIELDS`] holds, for messages.
fn train_field_type(field: &str) -> &'static str {
    match field {
        "dataset" => "\"mnist\" or \"fashion-mnist\"",
        "augment" => "true or false",
        "lr" => "a number",
        "limit" => "null or an integer of at least 1",
        _ => "a whole number",
    }
}

/// A 400 naming the field whose flag the command line's parser refused, with its reason.
fn flag_error(err: &clap::Error) -> ApiError {
    use clap::error::{ContextKind, ContextValue};
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split([' ', '=']).next().unwrap_or("").to_string(),
        _ => String::new(),
    };
    let field = flag.trim_start_matches("--").replace('-', "_");
    let text = err.to_string();
    let reason = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ");
    ApiError::new(StatusCode::BAD_REQUEST, format!("\"{field}\": {reason}"))
}

/// A 422 with `message`.
fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn missing(field: &str, expected: &str) -> ApiError {
    invalid(format!("missing field \"{field}\": expected {expected}"))
}

/// The body as a JSON object with no field outside `allowed`.
fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is not valid JSON ({err}); every number must be finite (JSON has no \
                 NaN or Infinity)"
            ),
        )
    })?;
    let names = allowed
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = match value {
        Value::Object(fields) => fields,
        other => {
            return Err(invalid(format!(
                "the body must be a JSON object with the fields {names}, found {}",
                describe(&other)
            )))
        }
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field {unknown:?}: expected only {names}"
        )));
    }
    Ok(fields)
}

fn required<'a>(
    fields: &'a Map<String, Value>,
    field: &str,
    expected: &str,
) -> Result<&'a Value, ApiError> {
    fields.get(field).ok_or_else(|| missing(field, expected))
}

/// `"input"`: exactly 28 rows of 28 finite numbers in [0, 1], as 784 values row-major.
fn image(value: &Value) -> Result<Vec<f32>, ApiError> {
    let wrong = |found: String| invalid(format!("\"input\" must be {INPUT}, found {found}"));
    let rows = value.as_array().ok_or_else(|| wrong(describe(value)))?;
    if rows.len() != IMAGE_SIZE {
        return Err(wrong(format!("{} rows", rows.len())));
    }
    let mut pixels = Vec::with_capacity(IMAGE_SIZE * IMAGE_SIZE);
    for (r, row) in rows.iter().enumerate() {
        let row = row
            .as_array()
            .ok_or_else(|| wrong(format!("{} as row {r}", describe(row))))?;
        if row.len() != IMAGE_SIZE {
            return Err(wrong(format!("{} numbers in row {r}", row.len())));
        }
        for (c, v) in row.iter().enumerate() {
            let pixel = v
                .as_f64()
                .filter(|x| x.is_finite() && (0.0..=1.0).contains(x))
                .ok_or_else(|| {
                    invalid(format!(
                        "\"input\"[{r}][{c}] must be a number in [0, 1], found {}",
                        describe(v)
                    ))
                })?;
            pixels.push(pixel as f32);
        }
    }
    Ok(pixels)
}

/// The integer `field`, from `min` to `max`.
fn integer(
    fields: &Map<String, Value>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let expected = format!("an integer from {min} to {max}");
    let value = required(fields, field, &expected)?;
    value
        .as_u64()
        .filter(|&n| (min as u64..=max as u64).contains(&n))
        .map(|n| n as usize)
        .ok_or_else(|| {
            invalid(format!(
                "\"{field}\" must be {expected}, found {}",
                describe(value)
            ))
        })
}

/// The number `field` in (0, 1] (as an f32: a value that rounds to 0 is refused), or `None`
/// when absent.
fn unit_interval(fields: &Map<String, Value>, field: &str) -> Result<Option<f32>, ApiError> {
    let Some(value) = fields.get(field) else {
        return Ok(None);
    };
    let number = value.as_f64().map(|x| x as f32);
    match number {
        Some(x) if x.is_finite() && x > 0.0 && x <= 1.0 => Ok(Some(x)),
        _ => Err(invalid(format!(
            "\"{field}\" must be a number in (0, 1], found {}",
            describe(value)
        ))),
    }
}

/// A JSON value as a message shows it: numbers, booleans and null as written, a string quoted
/// (cut at 40 characters), a list or an object by its kind and size.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) if s.chars().count() > 40 => {
            format!("the string {:?}…", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(a) => format!("a list of {} items", a.len()),
        Value::Object(o) => format!("an object with {} fields", o.len()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn blank() -> Value {
        json!(vec![vec![0.0; 28]; 28])
    }

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn refusal(result: Result<impl std::fmt::Debug, ApiError>) -> (u16, String) {
        let err = result.unwrap_err();
        (err.status.as_u16(), err.message)
    }

    #[test]
    fn a_valid_input_is_read_row_major() {
        let mut rows = vec![vec![0.0; 28]; 28];
        rows[1][2] = 0.5;
        let pixels = predict_input(&body(json!({ "input": rows }))).unwrap();
        assert_eq!(pixels.len(), 784);
        assert_eq!(pixels[28 + 2], 0.5);
    }

    #[test]
    fn adversarial_fields_and_the_default_step_size() {
        let request = json!({"input": blank(), "target": 3, "epsilon": 0.2, "steps": 50});
        let r = fool_request(&body(request)).unwrap();
        assert_eq!(r.config, AttackConfig::new(3, 0.2, 50));
        let request =
            json!({"input": blank(), "target": 9, "epsilon": 1, "steps": 200, "step_size": 0.01});
        let r = fool_request(&body(request)).unwrap();
        assert_eq!((r.config.target, r.config.steps), (9, 200));
        assert_eq!(r.config.step_size, 0.01);
    }

    #[test]
    fn every_wrong_field_is_named() {
        let ok = || json!({"input": blank(), "target": 3, "epsilon": 0.2, "steps": 50});
        let with = |field: &str, v: Value| {
            let mut b = ok();
            b[field] = v;
            body(b)
        };
        let without = |field: &str| {
            let mut b = ok();
            b.as_object_mut().unwrap().remove(field);
            body(b)
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "not valid JSON"),
            (b"{\"input\": NaN}".to_vec(), "finite"),
            (body(json!([1, 2])), "must be a JSON object"),
            (with("epsilom", json!(0.1)), "unknown field \"epsilom\""),
            (without("input"), "missing field \"input\""),
            (without("target"), "missing field \"target\""),
            (without("epsilon"), "missing field \"epsilon\""),
            (without("steps"), "missing field \"steps\""),
            (with("input", json!("x")), "\"input\" must be 28 rows"),
            (with("input", json!(vec![vec![0.0; 28]; 27])), "27 rows"),
            (
                with("target", json!(10)),
                "\"target\" must be an integer from 0 to 9",
            ),
            (with("target", json!(-1)), "\"target\""),
            (with("target", json!(2.5)), "\"target\""),
            (
                with("epsilon", json!(0)),
                "\"epsilon\" must be a number in (0, 1]",
            ),
            (with("epsilon", json!(1.5)), "\"epsilon\""),
            (with("epsilon", json!(1e-60)), "\"epsilon\""),
            (with("epsilon", json!("0.1")), "\"epsilon\""),
            (
                with("steps", json!(0)),
                "\"steps\" must be an integer from 1 to 200",
            ),
            (with("steps", json!(201)), "\"steps\""),
            (with("step_size", json!(-0.1)), "\"step_size\""),
        ];
        for (b, expected) in cases {
            let (status, message) = refusal(fool_request(&b));
            let what = String::from_utf8_lossy(&b)
                .chars()
                .take(60)
                .collect::<String>();
            assert!(message.contains(expected), "{what}: {message}");
            let want = if expected == "not valid JSON" || expected == "finite" {
                400
            } else {
                422
            };
            assert_eq!(status, want, "{what}: {message}");
        }
    }

    #[test]
    fn every_pixel_is_checked() {
        let mut short = vec![vec![0.0; 28]; 28];
        short[4].pop();
        let (_, m) = refusal(predict_input(&body(json!({ "input": short }))));
        assert!(m.contains("27 numbers in row 4"), "{m}");
        for (bad, shown) in [
            (json!(1.5), "1.5"),
            (json!(-0.01), "-0.01"),
            (json!(null), "null"),
        ] {
            let mut rows = blank();
            rows[3][4] = bad;
            let (status, m) = refusal(predict_input(&body(json!({ "input": rows }))));
            assert_eq!(status, 422);
            assert!(
                m.contains("\"input\"[3][4] must be a number in [0, 1]"),
                "{m}"
            );
            assert!(m.contains(shown), "{m}");
        }
        let (status, m) = refusal(predict_input(b"{\"input\": [[1e999]]}"));
        assert_eq!(status, 400, "{m}");
        let (_, m) = refusal(predict_input(&body(
            json!({"input": blank(), "explain": true}),
        )));
        assert!(m.contains("unknown field \"explain\""), "{m}");
    }

    #[test]
    fn train_fields_become_the_flags_of_lenet_train() {
        let body = json!({"dataset": "fashion-mnist", "epochs": 2, "batch_size": 32,
                          "lr": 0.01, "augment": true, "limit": 500, "seed": 9});
        let args = train_args(body.to_string().as_bytes()).unwrap();
        assert_eq!(args.data.dataset, Some(mnist::DatasetKind::FashionMnist));
        assert_eq!((args.epochs, args.batch_size, args.seed), (2, 32, 9));
        assert_eq!((args.lr, args.augment, args.limit), (0.01, true, Some(500)));
        let defaults = train_args(b"{}").unwrap();
        assert_eq!(crate::train::config(&defaults), nn::TrainConfig::default());
        assert_eq!(defaults.limit, None);
    }

    #[test]
    fn bad_train_fields_are_named_in_a_400() {
        for (body, field) in [
            (json!({"epochs": 0}), "epochs"),
            (json!({"epochs": 1001}), "epochs"),
            (json!({"epochs": -1}), "epochs"),
            (json!({"epochs": 1.5}), "epochs"),
            (json!({"batch_size": "64"}), "batch_size"),
            (json!({"lr": 1000.0}), "lr"),
            (json!({"lr": 0}), "lr"),
            (json!({"lr": null}), "lr"),
            (json!({"limit": 0}), "limit"),
            (json!({"seed": -3}), "seed"),
            (json!({"augment": "yes"}), "augment"),
            (json!({"dataset": "cifar"}), "dataset"),
            (json!({"dataset": "--save=/tmp/x"}), "dataset"),
            (json!({"threads": 2}), "threads"),
        ] {
            let err = train_args(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                err.message.contains(&format!("\"{field}\"")),
                "{body}: {}",
                err.message
            );
        }
        assert_eq!(
            train_args(b"[1]").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            train_args(b"{").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
