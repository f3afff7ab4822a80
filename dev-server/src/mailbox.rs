//! `make run`'s mail: the outbox delivered to `.eml` files under `$INFEREX_DATA_DIR/mail/` by a task of the
//! server (what the mailer function and SES do in AWS), and a mailbox at `/_mail` listing them, so the whole
//! flow (verification links, receipts, alerts) can be followed offline. Loopback only: messages hold links
//! that sign in as their recipient would.

use shared::error::ErrorCode;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use shared::error::{ApiError, ApiResult};
use shared::notifications::delivery::{FileMailer, deliver_waiting};
use shared::notifications::mime;
use shared::state::AppState;

/// How often the local outbox is delivered.
pub const DELIVER_EVERY: Duration = Duration::from_millis(200);
/// Messages delivered per pass at most.
const PER_PASS: u32 = 100;

/// Delivers the outbox every [`DELIVER_EVERY`], for ever.
pub async fn deliver_forever(state: AppState, mailer: FileMailer) {
    let mut ticker = tokio::time::interval(DELIVER_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        deliver_now(&state, &mailer).await;
    }
}

/// One delivery pass (also what tests call to read their mail at once).
pub async fn deliver_now(state: &AppState, mailer: &FileMailer) {
    if let Err(e) = deliver_waiting(&state.ports, mailer, state.clock.now(), PER_PASS).await {
        tracing::warn!(error = %e, "local mail delivery failed; retrying");
    }
}

/// A message as `/_mail` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub file: String,
    pub to: String,
    pub subject: String,
    pub kind: String,
    pub date: String,
    /// Every link in the message's text (verification, reset, unsubscribe), to follow without a mail client.
    pub links: Vec<String>,
}

fn links(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(str::to_owned)
        .collect()
}

/// `/_mail` (JSON list, newest first) and `/_mail/{file}` (the message itself).
pub fn router(mailer: FileMailer) -> Router {
    Router::new().route("/", get(list)).route("/{file}", get(message)).with_state(mailer)
}

/// From this machine only, and by a loopback name: a page elsewhere cannot read the mailbox through a DNS
/// name it points at 127.0.0.1 (its requests carry its own host name).
fn loopback_only(peer: SocketAddr, headers: &HeaderMap) -> ApiResult<()> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let name =
        host.rsplit_once(':').filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit())).map_or(host, |(n, _)| n);
    let loopback_name =
        matches!(name, "localhost" | "[::1]") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if peer.ip().is_loopback() && loopback_name {
        return Ok(());
    }
    Err(ApiError::NotFound { code: ErrorCode::NotFound, message: "no such route".into() })
}

async fn list(
    State(mailer): State<FileMailer>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<serde_json::Value>> {
    loopback_only(peer, &headers)?;
    let messages = mailer.messages().await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let listed: Vec<Listed> = messages
        .iter()
        .map(|(file, raw)| Listed {
            file: file.clone(),
            to: mime::header(raw, "To").unwrap_or_default(),
            subject: mime::header(raw, "Subject").unwrap_or_default(),
            kind: mime::header(raw, "X-Inferex-Kind").unwrap_or_default(),
            date: mime::header(raw, "Date").unwrap_or_default(),
            links: links(&mime::part(raw, "text/plain").unwrap_or_default()),
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "object": "list", "data": listed })))
}

async fn message(
    State(mailer): State<FileMailer>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    loopback_only(peer, &headers)?;
    let not_found = || ApiError::NotFound { code: ErrorCode::MessageNotFound, message: format!("no message {file}") };
    // Only names the mailbox itself lists: no path can leave the folder.
    let messages = mailer.messages().await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let (_, raw) = messages.into_iter().find(|(name, _)| *name == file).ok_or_else(not_found)?;
    let mut response = raw.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("message/rfc822"));
    Ok(response)
}
