//! The dashboard under `make run`: the static site in `dashboard/site/` (the customer dashboard at `/`,
//! the operator console at `/ops`), read from disk on every request so an edit shows on reload, with the
//! headers CloudFront adds in AWS. `/config.json` tells the page which checkout to open: the local
//! Razorpay stand-in's page when it is mounted, else Razorpay's own.

use shared::error::ErrorCode;
use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::error::ApiError;

/// The dashboard's Content-Security-Policy, the same text template.yaml's CloudFront policy sends.
pub const CONTENT_SECURITY_POLICY: &str = include_str!("../../dashboard/content-security-policy.txt");
/// The operator console's: no third party at all (it never opens Razorpay's checkout).
pub const OPS_CONTENT_SECURITY_POLICY: &str = include_str!("../../dashboard/ops-content-security-policy.txt");

#[derive(Clone)]
struct Site {
    dir: PathBuf,
    config: &'static str,
}

/// The site's routes; `standin_checkout` when the Razorpay stand-in is mounted at `/_razorpay`.
pub fn router(dir: PathBuf, standin_checkout: bool) -> Router {
    let config = if standin_checkout {
        r#"{"checkout": "standin", "standin_checkout_url": "/_razorpay/checkout"}"#
    } else {
        r#"{"checkout": "razorpay"}"#
    };
    Router::new()
        .route("/", get(|State(site): State<Site>| async move { serve(&site, "index.html").await }))
        .route("/ops", get(|State(site): State<Site>| async move { serve(&site, "ops.html").await }))
        .route("/config.json", get(|State(site): State<Site>| async move { page(site.config.into(), "config.json", CONTENT_SECURITY_POLICY) }))
        // The public models page reads the catalog the API routes by, as make deploy publishes it.
        .route("/catalog.json", get(|| async { page(shared::catalog::CATALOG_JSON.into(), "catalog.json", CONTENT_SECURITY_POLICY) }))
        .route("/static/{file}", get(static_file))
        .with_state(Site { dir, config })
}

async fn static_file(State(site): State<Site>, Path(file): Path<String>) -> Response {
    // Only plain file names: nothing outside the folder can be named.
    let plain =
        !file.starts_with('.') && file.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return not_found(&file);
    }
    serve(&site, &format!("static/{file}")).await
}

/// Serves a file of the site; the operator console with its own, stricter policy.
async fn serve(site: &Site, relative: &str) -> Response {
    let policy = if relative == "ops.html" { OPS_CONTENT_SECURITY_POLICY } else { CONTENT_SECURITY_POLICY };
    match tokio::fs::read(site.dir.join(relative)).await {
        Ok(bytes) => page(bytes, relative, policy),
        Err(_) => not_found(relative),
    }
}

fn not_found(path: &str) -> Response {
    ApiError::NotFound { code: ErrorCode::NotFound, message: format!("no dashboard file {path}") }.into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn page(bytes: Vec<u8>, path: &str, policy: &str) -> Response {
    // The policy is kept in a text file template.yaml's check reads too; an editor's final newline is no
    // part of it. A page is never served without it.
    let Ok(policy) = HeaderValue::from_str(policy.trim()) else {
        return ApiError::Internal("the dashboard's Content-Security-Policy is not a valid header".into())
            .into_response();
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_our_own_code_and_razorpay_checkout() {
        let policy = CONTENT_SECURITY_POLICY.trim();
        assert!(HeaderValue::from_str(policy).is_ok());
        for directive in [
            "default-src 'none'",
            "script-src 'self' https://checkout.razorpay.com",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(policy.split("; ").any(|d| d == directive), "{directive} missing from {policy}");
        }
        assert!(!policy.contains("unsafe"), "{policy}");
    }

    #[test]
    fn the_console_allows_no_third_party_at_all() {
        let policy = OPS_CONTENT_SECURITY_POLICY.trim();
        assert!(HeaderValue::from_str(policy).is_ok());
        for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
            assert!(policy.split("; ").any(|d| d == directive), "{directive} missing from {policy}");
        }
        assert!(!policy.contains("razorpay") && !policy.contains("unsafe"), "{policy}");
    }
}
