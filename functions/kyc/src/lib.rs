//! The kyc function: PAN and Aadhaar submission (`/v1/kyc`) and the operator decision endpoint
//! (`/v1/admin/kyc/{user_id}/decision`). Validation, the vault and the workflow live in `shared::kyc`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::auth::Session;
use shared::error::ApiResult;
use shared::http::{JsonBody, Operator};
use shared::kyc::{self, Decision, KycStore, KycView, SubmitRequest};
use shared::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/kyc", get(status).post(submit)).route("/v1/admin/kyc/{user_id}/decision", post(decide))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

async fn submit(
    State(state): State<AppState>,
    session: Session,
    JsonBody(request): JsonBody<SubmitRequest>,
) -> ApiResult<Json<KycView>> {
    let record = kyc::submit(
        state.store.as_ref(),
        state.kyc_keys()?,
        state.clock.as_ref(),
        &state.config,
        &session.user_id,
        request,
    )
    .await?;
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
    let record =
        kyc::decide(state.store.as_ref(), state.clock.as_ref(), &user_id, request.decision, request.reason, &operator)
            .await?;
    tracing::info!(%user_id, %operator, status = kyc::status_name(record.status), "KYC decided");
    Ok(Json(DecisionResponse { user_id, decided_by: operator, kyc: KycView::from(&record) }))
}
