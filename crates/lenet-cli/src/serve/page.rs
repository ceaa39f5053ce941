//! `GET /`: the one page, its style and script inlined, so it works offline from the binary.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;

const HTML: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// The page with `/* STYLE */` and `/* SCRIPT */` replaced by the stylesheet and the script.
static PAGE: LazyLock<String> =
    LazyLock::new(|| HTML.replace("/* STYLE */", CSS).replace("/* SCRIPT */", JS));

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        assert!(!PAGE.contains("/* STYLE */") && !PAGE.contains("/* SCRIPT */"));
        assert!(PAGE.contains("<canvas") && PAGE.contains("/api/predict"));
        // No external resources: everything is inline.
        for external in ["http://", "https://", "src=\"", "<link"] {
            assert!(!PAGE.contains(external), "page refers to {external}");
        }
    }
}
