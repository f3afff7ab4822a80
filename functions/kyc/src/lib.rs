//! The kyc function: the PAN (or GSTIN) submission (`/v1/kyc`) and the DigiLocker step
//! (`/v1/kyc/digilocker`, and the customer's return from it). The operators' review is the admin
//! function's. Validation, the provider checks, the vault and the workflow live in `shared::kyc`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::auth::Session;
use shared::error::ApiResult;
use shared::http::{JsonBody, QueryParams};
use shared::kyc::{self, KycStore, KycView, SubmitRequest};
use shared::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/kyc", get(status).post(submit))
        .route("/v1/kyc/digilocker", post(digilocker))
        .route(kyc::DIGILOCKER_RETURN_PATH, get(digilocker_return))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

async fn submit(
    State(state): State<AppState>,
    session: Session,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<KycView>> {
    let request = SubmitRequest::read(&body)?;
    let record = kyc::submit(&state.kyc()?, &session.user_id, request).await;
    let status = record.as_ref().map_or("rejected", |r| kyc::status_name(r.status));
    tracing::info!(user_id = %session.user_id, status, "KYC submitted");
    Ok(Json(KycView::from(&record?)))
}

#[derive(Debug, Serialize)]
struct DigilockerStart {
    url: String,
}

/// Opens a DigiLocker session: the customer goes to `url`, shares their Aadhaar, and comes back to the
/// origin they came from. Behind CloudFront that is the host the browser addressed, as our distribution
/// proves it (a request without the proof is refused: the API is also reachable directly, where anyone can
/// write the header); locally, the configured public address.
async fn digilocker(
    State(state): State<AppState>,
    session: Session,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<DigilockerStart>> {
    let origin = match &state.edge_secret {
        Some(secret) => {
            shared::http::viewer_origin(&headers, secret.current().await.expose()).ok_or_else(kyc::origin_unproven)?
        }
        None => state.config.public_url.clone(),
    };
    let url = kyc::start_digilocker(&state.kyc()?, &session.user_id, &origin).await?;
    tracing::info!(user_id = %session.user_id, "DigiLocker session opened");
    Ok(Json(DigilockerStart { url }))
}

#[derive(Debug, Deserialize)]
struct ReturnQuery {
    verification_id: Option<String>,
}

/// The customer's return from DigiLocker (a browser redirect, no session): the result is fetched from the
/// provider for the open session this id names, then the browser goes to the dashboard's KYC page on the
/// origin it came back to (`/#/kyc`). The id only triggers a fetch (at most one per session every few
/// seconds); the result comes from the provider, never from the query. A failure to fetch still sends the
/// browser on: the KYC page shows where the step stands, and the jobs fetch it later.
async fn digilocker_return(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ReturnQuery>,
) -> ApiResult<axum::response::Redirect> {
    // The provider's rule for ids (we make every one): 1 to 50 letters, digits, `.`, `_` or `-`.
    let shaped =
        |v: &String| (1..=50).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
    let verification_id = query.verification_id.filter(shaped).ok_or_else(|| {
        shared::error::ApiError::invalid(
            shared::error::ErrorCode::InvalidParameter,
            "verification_id",
            "verification_id must name a DigiLocker session (this is the address DigiLocker sends you back to)",
        )
    })?;
    match kyc::complete_digilocker(&state.kyc()?, &verification_id).await {
        Ok(outcome) => {
            let status = outcome.as_ref().map_or("unknown", |r| kyc::status_name(r.status));
            tracing::info!(status, "returned from DigiLocker");
        }
        Err(e) => {
            tracing::warn!(error = %e, "a DigiLocker result could not be fetched on the return; the jobs fetch it")
        }
    }
    Ok(axum::response::Redirect::to("/#/kyc"))
}

async fn status(State(state): State<AppState>, session: Session) -> ApiResult<Json<KycView>> {
    let record = state.store.kyc_record(&session.user_id).await?;
    Ok(Json(record.as_ref().map_or_else(KycView::not_submitted, KycView::from)))
}
