//! What the page teaches beyond the forward pass: why the network gives its answer (the saliency
//! map of `POST /api/predict?explain=true`) and how it can be fooled (`POST /api/fool`).
//! The math is `nn::explain`, on a copy of the served model (its forward and backward passes
//! need buffers of their own); this module only reads the query, calls and serialises.

use axum::http::StatusCode;
use ndarray::{Array2, ArrayView2};
use serde::Serialize;

use super::api::{rows, ApiError, AppState};
use super::input;

/// The query of `POST /api/predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PredictQuery {
    /// `explain=true`: add the saliency map.
    pub explain: bool,
    /// `model=training`: predict with the weights being trained in the page (`model=builtin`,
    /// the default: with the served model).
    pub training: bool,
}

/// The [`PredictQuery`] of a query string such as `explain=true&model=training`; any other
/// parameter or value is a 400.
pub fn predict_query(query: Option<&str>) -> Result<PredictQuery, ApiError> {
    let mut q = PredictQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |expected: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{name} must be {expected}, found {value:?}"),
            )
        };
        match (name, value) {
            ("explain", "true" | "false") => q.explain = value == "true",
            ("explain", _) => return Err(bad("true or false")),
            ("model", "training" | "builtin") => q.training = value == "training",
            ("model", _) => return Err(bad("training or builtin")),
            (other, _) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter {other:?}: expected only explain=true and \
                         model=training"
                    ),
                ))
            }
        }
    }
    Ok(q)
}

/// The saliency map of `image` (28×28) for `class`: |∂ logit / ∂ pixel| as 28 rows of 28.
pub fn saliency(model: &nn::LeNet5, image: ArrayView2<'_, f32>, class: usize) -> Vec<Vec<f32>> {
    let mut model = model.clone();
    rows(nn::explain::saliency(&mut model, image, class).view())
}

/// The `POST /api/fool` answer.
#[derive(Debug, Serialize)]
pub struct Fooled {
    /// The changed image (the adversarial example), 28 rows of 28 values in [0, 1].
    pub input: Vec<Vec<f32>>,
    /// `adversarial − input`, every value within ±epsilon.
    pub perturbation: Vec<Vec<f32>>,
    /// The class probabilities for the changed image.
    pub probabilities: Vec<f32>,
    /// The class the network reads in it.
    pub prediction: usize,
    /// That class's name.
    pub label: String,
    /// Whether it is the target.
    pub fooled: bool,
    /// Gradient steps taken.
    pub steps: usize,
    /// The step size used (the default unless the request gave one).
    pub step_size: f32,
}

/// The whole `POST /api/fool` answer for a body (already size-checked).
pub fn fool(state: &AppState, body: &[u8]) -> Result<Fooled, ApiError> {
    let request = input::fool_request(body)?;
    let image = Array2::from_shape_vec((28, 28), request.input).expect("784 checked pixels");
    let mut model = state.model().clone();
    let a = nn::explain::targeted_attack(&mut model, image.view(), &request.config);
    Ok(Fooled {
        input: rows(a.adversarial.view()),
        perturbation: rows(a.perturbation.view()),
        probabilities: a.probabilities,
        prediction: a.prediction,
        label: state.class_names()[a.prediction].clone(),
        fooled: a.reached,
        steps: a.steps_taken,
        step_size: request.config.step_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predict_query() {
        let q = |explain, training| Ok(PredictQuery { explain, training });
        assert_eq!(predict_query(None), q(false, false));
        assert_eq!(predict_query(Some("")), q(false, false));
        assert_eq!(predict_query(Some("explain=true")), q(true, false));
        assert_eq!(predict_query(Some("explain=false")), q(false, false));
        assert_eq!(predict_query(Some("model=training")), q(false, true));
        let both = predict_query(Some("explain=true&model=builtin"));
        assert_eq!(both, q(true, false));
        for bad in [
            "explain=yes",
            "explain",
            "explain=TRUE",
            "explian=true",
            "x=1",
            "model=mine",
        ] {
            let err = predict_query(Some(bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            let named = err.message.contains("explain") || err.message.contains("model");
            assert!(named, "{bad}: {}", err.message);
        }
    }
}
