//! `lenet serve`: a small web server (axum on tokio) with one page to draw a digit on and watch
//! the network classify it, layer by layer.
//!
//! Routes: `GET /` the page (HTML, CSS and JS built into the binary), `POST /api/predict` a PNG
//! or JPEG (or the model input as JSON) in, the prediction and every layer's output out, with
//! `?explain=true` the saliency map too, `POST /api/fool` an image and a target class
//! in, an adversarial example out (see [`teach`]), `GET /api/model` the layer table, the
//! dataset, the recorded accuracy, the learned filters and the windows of the layers (for
//! receptive fields); `/api/train…` and `/api/data…` train in the page (see [`training`]).
//! `?model=training` predicts with the weights being trained. Anything else gets a JSON error
//! (404, 405); see [`api`] for the checks on uploads and the bounds on uploads and work,
//! [`input`] for the checks on JSON bodies, [`conn`] for the connection timeouts and cap, and
//! [`host`] for the Host check of a server bound to loopback.

mod api;
mod conn;
mod host;
mod input;
mod page;
mod run;
mod teach;
mod training;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::routing::{get, post};
use axum::Router;

use crate::args::ServeArgs;
use crate::model_source::LoadedModel;

pub use api::AppState;

/// Runs `lenet serve` until the process is stopped.
pub fn run(args: &ServeArgs) -> Result<()> {
    let loaded = LoadedModel::load(args.model.as_deref())?;
    let state = Arc::new(AppState::new(loaded));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args.bind, state))
}

async fn serve(bind: SocketAddr, state: Arc<AppState>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let loopback = addr.ip().is_loopback();
    if !loopback {
        crate::errln!(
            "warning: listening on {addr}, which other machines may reach: anyone who can \
             connect can use this server"
        );
    }
    // Tests and scripts read this line to learn the port (with --bind 127.0.0.1:0).
    crate::outln!("lenet serve: open http://{addr}/ in a browser (Ctrl-C to stop)")?;
    conn::serve(listener, router(state, loopback)).await;
    Ok(())
}

/// The application: every route, with JSON errors for unknown paths and wrong methods; bound
/// to `loopback`, only requests with a loopback Host (see [`host`]).
pub fn router(state: Arc<AppState>, loopback: bool) -> Router {
    let app = Router::new()
        .route("/", get(page::index))
        .route("/api/predict", post(api::predict))
        .route("/api/fool", post(api::fool))
        .route("/api/model", get(api::model))
        .route("/api/train", post(api::train))
        .route("/api/train/stop", post(training::stop))
        .route("/api/train/events", get(training::events))
        .route("/api/train/weights", get(training::weights))
        .route("/api/data", get(training::data_status))
        .route("/api/data/download", post(api::download))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state);
    if loopback {
        app.layer(axum::middleware::from_fn(host::loopback_only))
    } else {
        app
    }
}

#[cfg(test)]
mod tests {
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn serve_args(args: &[&str]) -> crate::args::ServeArgs {
        let all = ["lenet", "serve"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn listens_on_loopback_unless_asked() {
        let a = serve_args(&[]);
        assert!(a.bind.ip().is_loopback());
        assert_eq!(a.bind.port(), 8080);
        assert!(a.model.is_none());
        let a = serve_args(&["--bind", "0.0.0.0:9000", "--model", "w.safetensors"]);
        assert!(!a.bind.ip().is_loopback());
        assert_eq!(a.bind.port(), 9000);
        assert!(Cli::try_parse_from(["lenet", "serve", "--bind", "localhost"]).is_err());
    }
}
