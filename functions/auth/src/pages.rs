//! The pages that e-mailed links open (`/verify-email?token=…`, `/reset-password?token=…`), served by this
//! function on the API's own origin (API Gateway in AWS, `make run` locally), so they call the API with the
//! session cookie. Static files from `dashboard/`, compiled in; no third-party script, a strict
//! Content-Security-Policy, and no Referer (the token is in the URL). They address the API and their assets
//! relatively, so a stage prefix (`/prod`) is kept.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::state::AppState;

const VERIFY_EMAIL: &str = include_str!("../../../dashboard/verify-email.html");
const RESET_PASSWORD: &str = include_str!("../../../dashboard/reset-password.html");
const SCRIPT: &str = include_str!("../../../dashboard/account-links.js");
const STYLE: &str = include_str!("../../../dashboard/account.css");

/// Only our own script, style and API; nothing may frame the pages or receive their forms elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/verify-email", get(|| async { page(VERIFY_EMAIL, "text/html; charset=utf-8") }))
        .route("/reset-password", get(|| async { page(RESET_PASSWORD, "text/html; charset=utf-8") }))
        .route("/assets/account-links.js", get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/assets/account.css", get(|| async { page(STYLE, "text/css; charset=utf-8") }))
}
