//! KYC review (`kyc_reviewer`): the queue of submissions in review, the decision, the audited reveal of a
//! PAN (limited per operator per day; a closed account's only to `admin` with a legal reason), and the
//! legacy Aadhaar erasure's progress. The workflow lives in `shared::kyc`.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::error::ApiResult;
use shared::http::{JsonBody, ListPage, Operator, QueryParams, decode_cursor, page_limit};
use shared::kyc::{self, Decision, KycView};
use shared::operators::Role;
use shared::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct DecisionRequest {
    decision: Decision,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DecisionResponse {
    user_id: String,
    decided_by: String,
    #[serde(flatten)]
    kyc: KycView,
}

pub(crate) async fn decide(
    State(state): State<AppState>,
    operator: Operator,
    Path(user_id): Path<String>,
    JsonBody(request): JsonBody<DecisionRequest>,
) -> ApiResult<Json<DecisionResponse>> {
    let name = operator.name;
    let record = kyc::decide(&state.ports, &user_id, request.decision, request.reason, &name).await?;
    tracing::info!(%user_id, operator = %name, status = kyc::status_name(record.status), "KYC decided");
    Ok(Json(DecisionResponse { user_id, decided_by: name, kyc: KycView::from(&record) }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueueQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Pending submissions, oldest first, with masked numbers and the account's details.
pub(crate) async fn queue(
    State(state): State<AppState>,
    operator: Operator,
    QueryParams(query): QueryParams<QueueQuery>,
) -> ApiResult<Json<ListPage<kyc::QueuedSubmission>>> {
    let limit = page_limit(query.limit, 20, 100)?;
    let after = decode_cursor(query.cursor.as_deref(), "")?;
    let (listed, next) = kyc::queue(state.store(), limit, after).await?;
    tracing::info!(operator = %operator.name, listed = listed.len(), "KYC queue read");
    Ok(Json(ListPage::page(listed, next.as_deref())))
}

/// Where the erasure of legacy Aadhaar numbers stands (run by the jobs).
pub(crate) async fn erasure(State(state): State<AppState>, _: Operator) -> ApiResult<Json<kyc::erasure::ErasureState>> {
    Ok(Json(kyc::erasure::state(state.store()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevealRequest {
    document: kyc::DocumentKind,
    reason: Option<String>,
}

/// One full number, shown to a named operator after the reveal is recorded; never cached.
pub(crate) async fn reveal(
    State(state): State<AppState>,
    operator: Operator,
    Path(user_id): Path<String>,
    JsonBody(request): JsonBody<RevealRequest>,
) -> ApiResult<Response> {
    let keys = state.kyc_keys()?;
    let admin = operator.roles.contains(&Role::Admin);
    let reveal = kyc::Reveal {
        user_id: &user_id,
        document: request.document,
        reason: request.reason,
        operator: &operator.name,
        reviewer: operator.roles.contains(&Role::KycReviewer),
        admin,
    };
    let number = kyc::reveal_for_operator(&state.ports, keys, reveal).await?;
    tracing::warn!(%user_id, operator = %operator.name, document = request.document.as_str(), "a PAN was revealed");
    let body = serde_json::json!({ "user_id": user_id, "document": request.document, "number": number, "revealed_to": operator.name });
    let mut response = Json(body).into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}
