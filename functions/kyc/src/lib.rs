//! The kyc function: PAN and Aadhaar submission (`/v1/kyc`) and the operators' endpoints: the queue of
//! pending submissions, the audited reveal of a full number, and the decision (`/v1/admin/kyc/*`). Validation, the vault and the workflow live in `shared::kyc`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::auth::Session;
use shared::error::ApiResult;
use shared::http::{JsonBody, ListPage, Operator, QueryParams, decode_cursor, page_limit};
use shared::kyc::{self, Decision, KycStore, KycView, SubmitRequest};
use shared::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/kyc", get(status).post(submit))
        .route("/v1/admin/kyc/queue", get(queue))
        .route("/v1/admin/kyc/{user_id}/decision", post(decide))
        .route("/v1/admin/kyc/{user_id}/reveal", post(reveal))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

async fn submit(
    State(state): State<AppState>,
    session: Session,
    JsonBody(request): JsonBody<SubmitRequest>,
) -> ApiResult<Json<KycView>> {
    let record = kyc::submit(&state.ports, state.kyc_keys()?, &session.user_id, request).await?;
    tracing::info!(user_id = %session.user_id, status = kyc::status_name(record.status), "KYC submitted");
    Ok(Json(KycView::from(&record)))
}

async fn status(State(state): State<AppState>, session: Session) -> ApiResult<Json<KycView>> {
    let record = state.store.kyc_record(&session.user_id).await?;
    Ok(Json(record.as_ref().map_or_else(KycView::not_submitted, KycView::from)))
}

#[derive(Debug, Deserialize)]
struct DecisionRequest {
    decision: Decision,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct DecisionResponse {
    user_id: String,
    decided_by: String,
    #[serde(flatten)]
    kyc: KycView,
}

async fn decide(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Path(user_id): Path<String>,
    JsonBody(request): JsonBody<DecisionRequest>,
) -> ApiResult<Json<DecisionResponse>> {
    let record = kyc::decide(&state.ports, &user_id, request.decision, request.reason, &operator).await?;
    tracing::info!(%user_id, %operator, status = kyc::status_name(record.status), "KYC decided");
    Ok(Json(DecisionResponse { user_id, decided_by: operator, kyc: KycView::from(&record) }))
}

#[derive(Debug, Deserialize)]
struct QueueQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Pending submissions, oldest first, with masked numbers and the account's details.
async fn queue(
    State(state): State<AppState>,
    Operator(operator): Operator,
    QueryParams(query): QueryParams<QueueQuery>,
) -> ApiResult<Json<ListPage<kyc::QueuedSubmission>>> {
    let limit = page_limit(query.limit, 20, 100)?;
    let after = decode_cursor(query.cursor.as_deref(), "")?;
    let (listed, next) = kyc::queue(state.store(), limit, after).await?;
    tracing::info!(%operator, listed = listed.len(), "KYC queue read");
    Ok(Json(ListPage::page(listed, next.as_deref())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealRequest {
    document: kyc::DocumentKind,
    reason: Option<String>,
}

/// One full number, shown to a named operator after the reveal is recorded; never cached.
async fn reveal(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Path(user_id): Path<String>,
    JsonBody(request): JsonBody<RevealRequest>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let keys = state.kyc_keys()?;
    let reveal = kyc::Reveal { user_id: &user_id, document: request.document, reason: request.reason };
    let number = kyc::reveal_for_operator(&state.ports, keys, reveal, &operator).await?;
    tracing::warn!(%user_id, %operator, document = request.document.as_str(), "a full KYC number was revealed");
    let body = serde_json::json!({ "user_id": user_id, "document": request.document, "number": number, "revealed_to": operator });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}
