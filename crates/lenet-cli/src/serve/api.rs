//! The JSON API: `POST /api/predict`, `POST /api/fool`, `GET /api/model`, and the JSON
//! errors.
//!
//! An upload (the body of either POST) is checked in this order, each failure a JSON
//! `{"error": "..."}`, and the body is read only once the headers pass:
//!
//! 1. its Content-Length at most [`MAX_BODY`] bytes (413, before any byte of the body is read
//!    or `100 Continue` sent);
//! 2. its Content-Type: `image/png`, `image/jpeg` or `application/json` for `/api/predict`,
//!    `application/json` for `/api/fool` (415);
//! 3. a free upload slot, one of [`MAX_UPLOADS`] (else 503 with `Retry-After`);
//! 4. the body itself, within [`BODY_TIMEOUT`] (408) and [`MAX_BODY`] bytes as it comes (413,
//!    for a chunked body);
//! 5. a free work slot, one per core up to [`MAX_DECODES`], within [`DECODE_WAIT`] (else 503
//!    with `Retry-After`): a slot is held while an image is decoded or gradients are computed;
//! 6. the content: an image prepared exactly as `lenet predict` prepares a file (see
//!    [`prepare`]), or a JSON body with every field checked (see [`input`]).
//!
//! So the server holds at most [`MAX_UPLOADS`] bodies and decodes at most [`MAX_DECODES`]
//! images at a time, each within `preprocess::MAX_ALLOC` bytes of pixels.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ndarray::{Array4, ArrayView2, ArrayView3, Axis};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::training::{self, Training};
use super::{input, teach};
use crate::model_source::LoadedModel;
use crate::preprocess;

/// Largest accepted request body: 2 MiB.
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Most uploads past their header checks at once (reading, waiting or decoding): at most
/// this many bodies of up to [`MAX_BODY`] bytes are held.
pub const MAX_UPLOADS: usize = 64;
/// Most images decoded (or gradient computations run) at once, fewer on a machine with fewer
/// cores: a decode may take about twice `preprocess::MAX_ALLOC` bytes at its peak.
pub const MAX_DECODES: usize = 4;
/// How long a received upload waits for a work slot before it is answered 503.
pub const DECODE_WAIT: Duration = Duration::from_secs(2);
/// How long the body of an upload may take to arrive, from the end of its headers.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// The `Retry-After` of a 503 answer, in seconds.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// What the handlers share: the model, its precomputed description, and the slots that bound
/// the uploads held and the work (decodes, gradients) done at once.
#[derive(Debug)]
pub struct AppState {
    loaded: LoadedModel,
    /// Training in the page: the job slot, its events, the weights being trained.
    pub training: Arc<Training>,
    /// The `GET /api/model` answer, built once.
    model_json: Value,
    uploads: Arc<Semaphore>,
    work: Arc<Semaphore>,
}

impl AppState {
    /// Wraps a loaded model.
    pub fn new(loaded: LoadedModel) -> AppState {
        let model_json = describe(&loaded);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        AppState {
            loaded,
            training: Arc::default(),
            model_json,
            uploads: Arc::new(Semaphore::new(MAX_UPLOADS)),
            work: Arc::new(Semaphore::new(cores.clamp(1, MAX_DECODES))),
        }
    }

    /// The served model.
    pub fn model(&self) -> &nn::LeNet5 {
        &self.loaded.model
    }

    /// Its class names.
    pub fn class_names(&self) -> Vec<String> {
        self.loaded.class_names()
    }
}

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status (always 4xx or 5xx).
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A 503: the server is at its limit of `what`; the client may retry after
    /// [`RETRY_AFTER_SECONDS`] (sent as `Retry-After`).
    pub fn busy(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server is busy ({what}): try again in {RETRY_AFTER_SECONDS} s"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// `POST /api/predict`: the checks of the module documentation, then the prediction of an image
/// or, as JSON `{"input": 28 rows of 28}`, of the model input itself; with `?explain=true`,
/// also the saliency map.
pub async fn predict(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let query = match teach::predict_query(request.uri().query()) {
        Ok(query) => query,
        Err(err) => return err.into_response(),
    };
    let accepted = &[BodyKind::Image, BodyKind::Json];
    let job =
        move |state: &AppState, kind: BodyKind, body: &[u8]| predict_body(state, kind, body, query);
    respond(upload(state, request, accepted, job).await)
}

/// `POST /api/train`: the checks of the module documentation, then [`training::start`].
pub async fn train(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let job = |state: &AppState, _: BodyKind, body: &[u8]| training::start(state, body);
    upload(state, request, &[BodyKind::Json], job)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/data/download`: the checks of the module documentation, then
/// [`training::download`].
pub async fn download(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let job = |state: &AppState, _: BodyKind, body: &[u8]| training::download(state, body);
    upload(state, request, &[BodyKind::Json], job)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/fool`: the checks of the module documentation, then the search
/// ([`teach::fool`]).
pub async fn fool(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let job = |state: &AppState, _: BodyKind, body: &[u8]| teach::fool(state, body);
    respond(upload(state, request, &[BodyKind::Json], job).await)
}

fn respond<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Steps 1 to 5 of the module documentation for `request`, whose Content-Type must be one of
/// `accepted`; then `job` on the body, on a blocking thread, holding both slots.
async fn upload<T, F>(
    state: Arc<AppState>,
    request: Request,
    accepted: &'static [BodyKind],
    job: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&AppState, BodyKind, &[u8]) -> Result<T, ApiError> + Send + 'static,
{
    let (parts, body) = request.into_parts();
    check_length(&parts.headers)?;
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    let kind = body_kind(content_type.map(|v| v.as_bytes()), accepted)?;
    let upload = Arc::clone(&state.uploads)
        .try_acquire_owned()
        .map_err(|_| ApiError::busy(&format!("{MAX_UPLOADS} uploads in progress")))?;
    let bytes = read_body(body).await?;
    let work = tokio::time::timeout(DECODE_WAIT, Arc::clone(&state.work).acquire_owned())
        .await
        .map_err(|_| ApiError::busy("every work slot stayed taken"))?
        .expect("the work slots are never closed");
    let job = tokio::task::spawn_blocking(move || {
        let _slots = (upload, work);
        job(&state, kind, &bytes)
    });
    job.await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the computation failed",
        ))
    })
}

/// Refuses a Content-Length over [`MAX_BODY`] from the header alone.
fn check_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(()); // chunked: counted while reading
    };
    match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(length) if length <= MAX_BODY as u64 => Ok(()),
        Some(length) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {length} bytes, more than the limit of {MAX_BODY} bytes"),
        )),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Content-Length must be a number of bytes, found {value:?}"),
        )),
    }
}

/// The whole body: at most [`MAX_BODY`] bytes, arrived within [`BODY_TIMEOUT`].
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let read = axum::body::to_bytes(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) => {
            let source = std::error::Error::source(&err);
            if source.is_some_and(|e| e.is::<http_body_util::LengthLimitError>()) {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than the limit of {MAX_BODY} bytes"),
                ))
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {err}"),
                ))
            }
        }
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// What a request body holds, as its Content-Type says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `image/png` or `image/jpeg`: an image, prepared as `lenet predict` prepares a file.
    Image,
    /// `application/json`: fields checked by [`input`].
    Json,
}

impl BodyKind {
    fn media_types(self) -> &'static str {
        match self {
            BodyKind::Image => "image/png or image/jpeg",
            BodyKind::Json => "application/json",
        }
    }
}

/// The kind of body a Content-Type announces, which must be one of `accepted` (parameters after
/// `;` are ignored); else a 415 naming the accepted types.
pub fn body_kind(value: Option<&[u8]>, accepted: &[BodyKind]) -> Result<BodyKind, ApiError> {
    let expected: Vec<&str> = accepted.iter().map(|k| k.media_types()).collect();
    let unsupported = |found: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be {}, found {found}",
                expected.join(" or ")
            ),
        )
    };
    let Some(value) = value else {
        return Err(unsupported("none"));
    };
    let text = String::from_utf8_lossy(value);
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let kind = match essence.as_str() {
        "image/png" | "image/jpeg" => Some(BodyKind::Image),
        "application/json" => Some(BodyKind::Json),
        _ => None,
    };
    kind.filter(|k| accepted.contains(k))
        .ok_or_else(|| unsupported(&format!("{text:?}")))
}

/// The `POST /api/predict` answer. Numbers are f32, printed in their shortest form.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// The most probable class.
    pub prediction: usize,
    /// Its name (the digit, or the garment for Fashion-MNIST).
    pub label: String,
    /// Softmax of the logits, one per class.
    pub probabilities: Vec<f32>,
    /// The 28×28 image the network received, rows of values in [0, 1].
    pub input: Vec<Vec<f32>>,
    /// Every layer's output for this image.
    pub layers: Layers,
    /// With `?explain=true`: |∂ logit of the predicted class / ∂ input pixel|, 28 rows of 28.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saliency: Option<Vec<Vec<f32>>>,
}

/// Layer outputs of one image: maps as `[channel][row][column]`, vectors as lists.
#[derive(Debug, Serialize)]
pub struct Layers {
    /// After conv1 and its activation, `[c1][28][28]`.
    pub conv1: Vec<Vec<Vec<f32>>>,
    /// After the first pooling, `[c1][14][14]`.
    pub pool1: Vec<Vec<Vec<f32>>>,
    /// After conv2 and its activation, `[c2][10][10]`.
    pub conv2: Vec<Vec<Vec<f32>>>,
    /// After the second pooling, `[c2][5][5]`.
    pub pool2: Vec<Vec<Vec<f32>>>,
    /// After fc1 and its activation, 120 values.
    pub fc1: Vec<f32>,
    /// After fc2 and its activation, 84 values.
    pub fc2: Vec<f32>,
    /// fc3's output, the logits.
    pub logits: Vec<f32>,
}

/// The prediction for a body of `kind` (already size-checked): an image, or the JSON model
/// input; with `explain`, with the saliency map.
fn predict_body(
    state: &AppState,
    kind: BodyKind,
    body: &[u8],
    query: teach::PredictQuery,
) -> Result<Prediction, ApiError> {
    let pixels = match kind {
        BodyKind::Image => prepare(body)?,
        BodyKind::Json => input::predict_input(body)?,
    };
    let (model, names) = if query.training {
        let live = state.training.live().clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "model=training: no weights are being trained yet (start a run first)",
            )
        })?;
        let names = live.dataset.class_names().map(String::from).to_vec();
        (std::borrow::Cow::Owned(live.model), names)
    } else {
        (
            std::borrow::Cow::Borrowed(state.model()),
            state.class_names(),
        )
    };
    let x = Array4::from_shape_vec((1, 1, 28, 28), pixels).expect("28×28 input");
    let mut prediction = prediction_for(&model, &names, x.view());
    if query.explain {
        let image = x.slice(ndarray::s![0, 0, .., ..]);
        prediction.saliency = Some(teach::saliency(&model, image, prediction.prediction));
    }
    Ok(prediction)
}

/// The prediction of `model` (whose classes are `names`) and every layer's output for the
/// model input `x` (`[1, 1, 28, 28]`).
fn prediction_for(
    model: &nn::LeNet5,
    names: &[String],
    x: ndarray::ArrayView4<'_, f32>,
) -> Prediction {
    // The server shares one model between its threads: the pass runs on a copy.
    let out = nn::inspect::activations(&mut model.clone(), x);
    let probabilities = nn::softmax(out.logits.view()).row(0).to_vec();
    let prediction = nn::argmax(probabilities.iter().copied());
    let first = |a: &ndarray::Array4<f32>| maps(a.index_axis(Axis(0), 0));
    Prediction {
        prediction,
        label: names[prediction].clone(),
        probabilities,
        input: rows(x.slice(ndarray::s![0, 0, .., ..])),
        layers: Layers {
            conv1: first(&out.conv1),
            pool1: first(&out.pool1),
            conv2: first(&out.conv2),
            pool2: first(&out.pool2),
            fc1: out.fc1.row(0).to_vec(),
            fc2: out.fc2.row(0).to_vec(),
            logits: out.logits.row(0).to_vec(),
        },
        saliency: None,
    }
}

/// The network's input for an uploaded image, prepared exactly as `lenet predict` prepares a
/// file (`preprocess::digit_input`, which refuses images over 4096 pixels a side from their
/// header, before decoding).
fn prepare(bytes: &[u8]) -> Result<Vec<f32>, ApiError> {
    use preprocess::ImageError;
    preprocess::digit_input(bytes).map_err(|err| {
        let status = match err {
            ImageError::UnknownFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImageError::TooLarge { .. } | ImageError::TooMuchMemory { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ImageError::Corrupt(_) | ImageError::Empty => StatusCode::BAD_REQUEST,
            ImageError::NoDigit => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, err.to_string())
    })
}

/// `[c][h][w]` nested lists.
fn maps(a: ArrayView3<'_, f32>) -> Vec<Vec<Vec<f32>>> {
    a.outer_iter().map(rows).collect()
}

/// `[h][w]` nested lists.
pub(super) fn rows(a: ArrayView2<'_, f32>) -> Vec<Vec<f32>> {
    a.outer_iter().map(|row| row.to_vec()).collect()
}

/// `GET /api/model`.
pub async fn model(State(state): State<Arc<AppState>>) -> Response {
    Json(state.model_json.clone()).into_response()
}

/// The `GET /api/model` answer.
fn describe(loaded: &LoadedModel) -> Value {
    let config = loaded.model.config();
    let table = nn::inspect::layer_table(&config);
    let filters = |name: &str| {
        let p = loaded.model.param(name).expect("LeNet5 has conv weights");
        let (k, c) = (p.shape[0], p.shape[1]);
        let w = ndarray::ArrayView4::from_shape((k, c, 5, 5), p.value).expect("5×5 kernels");
        w.outer_iter().map(|f| maps(f)).collect::<Vec<_>>()
    };
    json!({
        "source": loaded.source,
        "dataset": loaded.dataset.map(|d| d.display_name()),
        "classes": loaded.class_names(),
        "accuracy": loaded.accuracy,
        "config": config,
        "layers": table,
        "total_params": table.iter().map(|r| r.params).sum::<usize>(),
        "total_flops": table.iter().map(|r| r.flops).sum::<u64>(),
        "flops_note": "FLOPs per image = 2 × multiply-accumulates of the convolutions and linear \
                       layers (biases, activations and pooling are not counted)",
        "filters": { "conv1": filters("conv1.weight"), "conv2": filters("conv2.weight") },
        "windows": nn::inspect::windows(),
    })
}

/// Unknown paths.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such path: {}", uri.path()),
    )
}

/// Known paths with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    /// The whole prediction for one uploaded image.
    fn predict_bytes(state: &AppState, bytes: &[u8]) -> Result<Prediction, ApiError> {
        predict_body(state, BodyKind::Image, bytes, Default::default())
    }

    fn state() -> &'static AppState {
        static STATE: std::sync::OnceLock<AppState> = std::sync::OnceLock::new();
        STATE.get_or_init(|| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            AppState::new(LoadedModel {
                model: nn::LeNet5::new(nn::LeNet5Config::default(), &mut rng),
                source: "random weights".into(),
                dataset: None,
                accuracy: None,
                bytes: None,
            })
        })
    }

    /// A small valid image of a stroke, as PNG or JPEG.
    fn valid(format: image::ImageFormat) -> Vec<u8> {
        let img = image::GrayImage::from_fn(40, 32, |x, y| {
            image::Luma([if (14..20).contains(&x) && (4..28).contains(&y) {
                0
            } else {
                255
            }])
        });
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    /// The answer must be a prediction or a client error: never a panic, never a 5xx.
    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        match predict_bytes(state(), bytes) {
            Ok(answer) => {
                prop_assert_eq!(answer.probabilities.len(), 10);
            }
            Err(err) => {
                prop_assert!(err.status.is_client_error(), "{:?}", err);
                prop_assert!(!err.message.is_empty());
            }
        }
        Ok(())
    }

    #[test]
    fn a_valid_upload_is_answered() {
        for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
            let answer = predict_bytes(state(), &valid(format)).unwrap();
            assert_eq!(answer.input.len(), 28);
            assert_eq!(answer.layers.conv2.len(), 16);
            assert_eq!(answer.layers.fc1.len(), 120);
        }
    }

    #[test]
    fn content_types() {
        let both = [BodyKind::Image, BodyKind::Json];
        assert_eq!(body_kind(Some(b"image/png"), &both), Ok(BodyKind::Image));
        let jpeg = body_kind(Some(b"IMAGE/JPEG; charset=binary"), &both);
        assert_eq!(jpeg, Ok(BodyKind::Image));
        let json = body_kind(Some(b"application/json; charset=utf-8"), &both);
        assert_eq!(json, Ok(BodyKind::Json));
        let err = body_kind(Some(b"image/png"), &[BodyKind::Json]).unwrap_err();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(err.message.contains("must be application/json"), "{err:?}");
        for bad in [&b"text/plain"[..], b"image/gif", b"", b"\xff\xfe"] {
            assert_eq!(
                body_kind(Some(bad), &both).unwrap_err().status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
        }
        assert!(body_kind(None, &both).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn random_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            check(&bytes)?;
        }

        #[test]
        fn mutated_images_never_panic(
            jpeg in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let format = if jpeg { image::ImageFormat::Jpeg } else { image::ImageFormat::Png };
            let mut bytes = valid(format);
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            check(&bytes)?;
        }

        #[test]
        fn any_content_type_is_checked_without_panic(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = body_kind(Some(&value), &[BodyKind::Image, BodyKind::Json]);
        }
    }
}
