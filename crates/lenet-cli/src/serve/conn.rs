//! The connection loop: every accepted connection is served by hyper (HTTP/1) under two bounds,
//! so that idle or slow clients cannot hold the server:
//!
//! * a connection that sends no complete request headers within [`HEADER_TIMEOUT`] (a new one,
//!   or a kept-alive one between requests) is closed;
//! * at most [`max_connections`] are open at once, fewer than the process may open files; one
//!   over the cap is answered 503 with `Retry-After` and closed.
//!
//! The body's own timeout and the bounds on uploads and decodes are in [`super::api`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection may take to send a request's headers, counted from when it opens or
/// its previous answer was sent: also the idle timeout of a kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections open at once, whatever the file limit.
pub const MAX_CONNECTIONS: usize = 512;
/// Files kept free for everything else: the listener, the runtime, refusals in progress.
const RESERVED_FILES: usize = 64;
/// Most connections over the cap kept for a second after their 503 (see [`refuse`]).
const MAX_REFUSALS: usize = 32;

/// Accepts and serves connections until the process is stopped.
pub async fn serve(listener: TcpListener, app: Router) {
    let cap = max_connections();
    let open = Arc::new(Semaphore::new(cap));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                wait_after_accept_error(&err).await;
                continue;
            }
        };
        if let Ok(permit) = Arc::clone(&open).try_acquire_owned() {
            tokio::spawn(connection(stream, app.clone(), permit));
        } else {
            refuse(stream, cap, &refusals);
        }
    }
}

/// Serves one connection, holding `_permit` (its place under the cap) until it closes.
async fn connection(stream: TcpStream, app: Router, _permit: OwnedSemaphorePermit) {
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await;
    // A client that goes away or times out is nothing the server must report.
    drop(served);
}

/// Answers 503 on a connection over the cap: whatever the client has sent is read, the answer
/// written and the sending side shut, all without waiting. Then, while fewer than
/// [`MAX_REFUSALS`] are doing so, what the client sends is read for up to a second before the
/// connection closes (closing with unread data would reset it, and the client might lose the
/// answer); otherwise it closes at once.
fn refuse(stream: TcpStream, cap: usize, refusals: &Arc<Semaphore>) {
    use std::io::{Read, Write};
    let Ok(mut std_stream) = stream.into_std() else {
        return;
    };
    let mut scratch = [0u8; 4096];
    while matches!(std_stream.read(&mut scratch), Ok(n) if n > 0) {}
    // A fresh socket's buffer takes these few bytes at once.
    let _ = std_stream.write_all(busy_answer(cap).as_bytes());
    let _ = std_stream.shutdown(std::net::Shutdown::Write);
    if let Ok(permit) = Arc::clone(refusals).try_acquire_owned() {
        if let Ok(stream) = TcpStream::from_std(std_stream) {
            tokio::spawn(drain(stream, permit));
        }
    }
}

/// The 503 answer of a connection over the cap.
fn busy_answer(cap: usize) -> String {
    let retry = super::api::RETRY_AFTER_SECONDS;
    let body = format!(
        "{{\"error\":\"the server is busy ({cap} connections open, its limit): try again in \
         {retry} s\"}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {retry}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads and drops what the client sends until it closes, for up to a second.
async fn drain(stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let read_all = async {
        let mut buf = [0u8; 4096];
        while stream.readable().await.is_ok() {
            match stream.try_read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read_all).await;
}

/// After a failed accept: out of files (or memory) lasts a while, so wait a little instead of
/// spinning; a connection that failed before it was accepted concerns only its client.
async fn wait_after_accept_error(err: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cap on open connections: [`MAX_CONNECTIONS`], or fewer so that [`RESERVED_FILES`]
/// files stay free under the process's limit on open files (`ulimit -n`).
pub fn max_connections() -> usize {
    let files = open_files_limit().unwrap_or(1024);
    files
        .saturating_sub(RESERVED_FILES)
        .clamp(1, MAX_CONNECTIONS)
}

/// The soft limit on open files (`RLIMIT_NOFILE`).
#[cfg(unix)]
fn open_files_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given, which lives for the call.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_files_limit() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_under_the_file_limit() {
        let cap = max_connections();
        assert!((1..=MAX_CONNECTIONS).contains(&cap));
        if let Some(files) = open_files_limit() {
            assert!(
                cap + RESERVED_FILES <= files.max(RESERVED_FILES + 1),
                "{cap} of {files}"
            );
        }
    }
}
