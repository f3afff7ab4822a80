//! The razorpay-webhook function: `POST /v1/webhooks/razorpay`. No gateway auth: the signature over the
//! raw body is the authentication. Bad or missing signatures change nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::error::ErrorCode;
use shared::error::{ApiError, ApiResult};
use shared::secrets::sha256_hex;
use shared::state::AppState;
use shared::wallet;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/razorpay", post(receive))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<Value>> {
    let razorpay = state.razorpay()?;
    let signature = header(&headers, "x-razorpay-signature").unwrap_or_default();
    if !razorpay.verify_webhook(&body, signature).await {
        tracing::error!(
            alert = shared::alerts::WEBHOOK_SIGNATURE_INVALID,
            "webhook with a bad or missing signature refused"
        );
        return Err(ApiError::invalid(
            ErrorCode::InvalidSignature,
            "X-Razorpay-Signature",
            "the webhook signature does not match the body",
        ));
    }
    // Razorpay sends a unique event id; without one, the body's digest identifies the delivery.
    let event_id = header(&headers, "x-razorpay-event-id")
        .filter(|id| id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sha256-{}", sha256_hex(&String::from_utf8_lossy(&body))));
    let outcome = wallet::handle_webhook(&state.ports, state.blobs()?, &event_id, &body).await?;
    tracing::info!(%event_id, ?outcome, "webhook handled");
    Ok(Json(json!({ "status": outcome })))
}
