//! The Host check of a server bound to loopback: a web page on another origin can reach
//! 127.0.0.1 through DNS rebinding (its own name made to resolve to 127.0.0.1), but its
//! requests still carry its own name as Host. Only loopback names are served: `localhost`,
//! `127.0.0.1` and `[::1]`, with or without a port; anything else is a 421 JSON error.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;

/// The middleware: passes requests whose Host is a loopback name, answers the others 421.
pub async fn loopback_only(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).map(|v| v.as_bytes());
    if host.is_some_and(is_loopback_host) {
        return next.run(request).await;
    }
    let found = match host {
        Some(value) => format!("{:?}", String::from_utf8_lossy(value)),
        None => "none".to_string(),
    };
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this server answers only to its loopback names: the Host header must be localhost, \
             127.0.0.1 or [::1] (with or without a port), found {found}"
        ),
    )
    .into_response()
}

/// `localhost`, `127.0.0.1` or `[::1]` (any case), optionally followed by `:PORT`.
pub fn is_loopback_host(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let value = value.to_ascii_lowercase();
    let (name, port) = match value.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, Some(port)),
        _ => (value.as_str(), None),
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_or_without_a_port() {
        for good in [
            "localhost",
            "LocalHost:8080",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:65535",
        ] {
            assert!(is_loopback_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "127.0.0.2",
            "::1",
            "[::1]:",
            "localhost:80a",
            "localhost:123456",
            "",
            "\u{ff}",
        ] {
            assert!(!is_loopback_host(bad.as_bytes()), "{bad}");
        }
        assert!(!is_loopback_host(b"\xff\xfe"));
    }
}
