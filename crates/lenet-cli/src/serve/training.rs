//! Training in the page: one job at a time (a training run or a data download), its events
//! kept for every page that opens later, and the weights being trained.
//!
//! * `POST /api/train` checks the body as `lenet train` checks its flags ([`input::train_args`]),
//!   that the data is there (it is never downloaded without `POST /api/data/download`), and
//!   that no job is going (409); then the run starts on a thread of its own ([`run`]) and the
//!   answer is 202. A client that goes away does not stop it; `POST /api/train/stop` does.
//! * `GET /api/train/events`: Server-Sent Events, one JSON object each, `"type"` one of
//!   `started`, `progress` (at most about 10 a second), `epoch`, `done`, `stopped`, `error`,
//!   and for a download `download` (one per file) and `downloaded`. A client that connects
//!   gets the current job's events so far first (progress events thinned past
//!   [`MAX_PROGRESS_EVENTS`]), then the new ones as they come.
//! * `GET /api/train/weights`: the weights being trained (after the run: its final weights) as
//!   safetensors, the file `lenet train --save` writes; 404 before any run.
//! * `GET /api/data`: which datasets are present, where `lenet train` looks for them.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use mnist::DatasetKind;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::api::{ApiError, AppState};
use super::{input, run};
use crate::data;

/// Most progress events kept for a page that opens later; past it, every other one is dropped
/// (the curve keeps its shape, at half the resolution).
pub const MAX_PROGRESS_EVENTS: usize = 2000;

/// The job slot, the events of the current job and the weights being trained.
#[derive(Debug)]
pub struct Training {
    jobs: Mutex<Jobs>,
    /// The number of the last event published, for the event streams to wait on.
    changed: watch::Sender<u64>,
    live: Mutex<Option<Live>>,
}

#[derive(Debug, Default)]
struct Jobs {
    /// The job going: "training" or "download".
    busy: Option<&'static str>,
    /// The number of the last job started.
    job: u64,
    /// Set to stop the training run going.
    stop: Arc<AtomicBool>,
    /// The current job's events: number, whether a progress event, the JSON.
    events: Vec<(u64, bool, Arc<str>)>,
    published: u64,
}

/// The weights being trained, with the dataset they learn.
#[derive(Debug, Clone)]
pub struct Live {
    /// The model as last copied from the run.
    pub model: nn::LeNet5,
    /// Its dataset.
    pub dataset: DatasetKind,
}

impl Default for Training {
    fn default() -> Self {
        Training {
            jobs: Mutex::default(),
            changed: watch::Sender::new(0),
            live: Mutex::default(),
        }
    }
}

/// Holds the job slot until [`Slot::finish`]; dropped before (the job's thread panicked, or
/// could not start), it frees the slot with an `error` event.
pub struct Slot {
    training: Arc<Training>,
    job: u64,
    finished: bool,
}

impl Slot {
    /// The hub this slot belongs to.
    pub fn training(&self) -> &Training {
        &self.training
    }

    /// Ends the job: frees the slot and publishes its last event, at once (a page that sees
    /// the event can start the next job).
    pub fn finish(mut self, event: Value) {
        self.free(event);
    }

    fn free(&mut self, event: Value) {
        let job = self.job;
        self.training.publish_with(event, |jobs| {
            if jobs.job == job {
                jobs.busy = None;
            }
        });
        self.finished = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.finished {
            let message = "the job ended unexpectedly (a bug: please report it)";
            self.free(json!({"type": "error", "message": message}));
        }
    }
}

impl Training {
    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The weights being trained (a poisoned lock still holds whole weights: they are only
    /// ever replaced by a copy under the lock).
    pub fn live(&self) -> MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The weights being trained, unless someone is reading them.
    pub fn try_live(&self) -> Option<MutexGuard<'_, Option<Live>>> {
        self.live.try_lock().ok()
    }

    /// Takes the job slot for `job`, clearing the previous job's events; 409 while another job
    /// is going. Returns the slot and the new run's stop flag.
    pub fn claim(self: &Arc<Self>, job: &'static str) -> Result<(Slot, Arc<AtomicBool>), ApiError> {
        let mut jobs = self.jobs();
        if let Some(going) = jobs.busy {
            let how = match going {
                "training" => "run is going: stop it first (POST /api/train/stop)",
                _ => "is going: wait for it to end",
            };
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("a {going} {how}; one job at a time"),
            ));
        }
        jobs.busy = Some(job);
        jobs.job += 1;
        jobs.stop = Arc::new(AtomicBool::new(false));
        jobs.events.clear();
        let slot = Slot {
            training: Arc::clone(self),
            job: jobs.job,
            finished: false,
        };
        Ok((slot, Arc::clone(&jobs.stop)))
    }

    /// Adds an event (a JSON object with its `"type"`) for every stream.
    pub fn publish(&self, event: Value) {
        self.publish_with(event, |_| {});
    }

    /// [`Training::publish`], with `update` applied to the jobs under the same lock.
    fn publish_with(&self, event: Value, update: impl FnOnce(&mut Jobs)) {
        let progress = event["type"] == "progress";
        let text: Arc<str> = event.to_string().into();
        let mut jobs = self.jobs();
        update(&mut jobs);
        jobs.published += 1;
        let number = jobs.published;
        jobs.events.push((number, progress, text));
        if jobs.events.iter().filter(|e| e.1).count() > MAX_PROGRESS_EVENTS {
            let mut keep = false;
            jobs.events.retain(|e| {
                keep = !keep;
                !e.1 || keep
            });
        }
        drop(jobs);
        self.changed.send_replace(number);
    }

    /// The events numbered after `seen`, and the number of the last one.
    fn events_after(&self, seen: u64) -> (Vec<Arc<str>>, u64) {
        let jobs = self.jobs();
        let from = jobs.events.partition_point(|e| e.0 <= seen);
        let new = jobs.events[from..]
            .iter()
            .map(|e| Arc::clone(&e.2))
            .collect();
        (new, jobs.published.max(seen))
    }
}

/// `POST /api/train`, after the upload checks: see the module documentation.
pub fn start(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let args = input::train_args(body)?;
    let kind = args.data.dataset.unwrap_or(mnist::DatasetKind::Mnist);
    let dir = mnist::resolve_data_dir(kind, None);
    if !data::all_present(kind, &dir) {
        return Err(missing_data(kind, &dir));
    }
    let trainer = run::new_trainer(&args)?;
    let (slot, stop) = state.training.claim("training")?;
    let settings = json!({
        "dataset": kind.dir_name(), "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "augment": args.augment, "limit": args.limit, "seed": args.seed,
    });
    state
        .training
        .publish(json!({"type": "started", "settings": settings}));
    let job = run::Job {
        slot,
        stop,
        args,
        kind,
        dir,
    };
    run::spawn("lenet-train", move || run::train(job, trainer))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "started": settings }))).into_response())
}

/// The 409 of a start whose data is missing.
fn missing_data(kind: DatasetKind, dir: &Path) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "{} is not (completely) in {}: download it first (the page's Download button, \
             POST /api/data/download, or lenet download)",
            kind.display_name(),
            dir.display()
        ),
    )
}

/// `POST /api/train/stop`: asks the run going to stop (202); 409 if none is.
pub async fn stop(State(state): State<Arc<AppState>>) -> Response {
    let jobs = state.training.jobs();
    if jobs.busy != Some("training") {
        return ApiError::new(StatusCode::CONFLICT, "no training run is going").into_response();
    }
    jobs.stop.store(true, Ordering::Relaxed);
    (StatusCode::ACCEPTED, Json(json!({"stopping": true}))).into_response()
}

/// `GET /api/train/events`: the current job's events so far, then the new ones.
pub async fn events(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let training = Arc::clone(&state.training);
    let changes = training.changed.subscribe();
    let start = (training, changes, 0u64, Vec::<Arc<str>>::new().into_iter());
    let stream = futures_util::stream::unfold(
        start,
        |(training, mut changes, mut seen, mut queue)| async move {
            loop {
                if let Some(text) = queue.next() {
                    let event = Event::default().data(&*text);
                    return Some((Ok(event), (training, changes, seen, queue)));
                }
                let (new, last) = training.events_after(seen);
                seen = last;
                if new.is_empty() {
                    changes.changed().await.ok()?;
                }
                queue = new.into_iter();
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /api/train/weights`.
pub async fn weights(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let live = state.training.live();
    let Some(live) = live.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no weights yet: start a training run first (POST /api/train)",
        ));
    };
    let name = format!("lenet5-{}-page.safetensors", live.dataset.dir_name());
    let extra = [crate::model_file::dataset_entry(live.dataset)].into();
    let bytes = live
        .model
        .weights_bytes(Path::new(&name), extra)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let disposition = format!("attachment; filename=\"{name}\"");
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    Ok((headers, bytes).into_response())
}

/// `GET /api/data`: each dataset, whether its four files are where `lenet train` looks, and
/// the job going.
pub async fn data_status(State(state): State<Arc<AppState>>) -> Response {
    let datasets: Vec<Value> = DatasetKind::ALL
        .into_iter()
        .map(|kind| {
            let dir = mnist::resolve_data_dir(kind, None);
            json!({
                "name": kind.dir_name(), "display": kind.display_name(),
                "present": data::all_present(kind, &dir), "dir": dir.display().to_string(),
            })
        })
        .collect();
    let busy = state.training.jobs().busy;
    Json(json!({"datasets": datasets, "busy": busy})).into_response()
}

/// `POST /api/data/download` `{"dataset": "mnist" or "fashion-mnist"}`, after the upload
/// checks: downloads the files missing from where `lenet train` looks, on a thread of its own
/// (202; its events on the stream), one file after the other.
pub fn download(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let kind = input::dataset(body)?;
    let dir = mnist::resolve_data_dir(kind, None);
    let (slot, _) = state.training.claim("download")?;
    let job_dir = dir.clone();
    run::spawn("lenet-download", move || {
        run::download(slot, kind, &job_dir)
    })?;
    let answer = json!({"downloading": kind.dir_name(), "dir": dir.display().to_string()});
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
