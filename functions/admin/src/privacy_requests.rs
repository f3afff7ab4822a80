//! Data-rights requests that arrive outside the dashboard (`admin`): an operator records one received by
//! e-mail, letter or call, lists the register by due date, notes each step and records the answer. The
//! rules live in `shared::privacy::register`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use shared::error::ApiResult;
use shared::http::{JsonBody, ListPage, Operator, QueryParams};
use shared::privacy::{self, Answer, DueFilter, OutsideRequest, PrivacyContext, RegisterEntry, RequestKind};
use shared::state::AppState;

pub(crate) async fn record(
    State(state): State<AppState>,
    operator: Operator,
    JsonBody(request): JsonBody<OutsideRequest>,
) -> ApiResult<(StatusCode, Json<RegisterEntry>)> {
    let entry = privacy::record_outside(&PrivacyContext::from(&state), &operator.name, request).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterQuery {
    due: Option<DueFilter>,
    kind: Option<RequestKind>,
}

/// The open requests, soonest due first: `due=soon|overdue`, `kind=grievance` (the grievances' register).
pub(crate) async fn list(
    State(state): State<AppState>,
    _: Operator,
    QueryParams(query): QueryParams<RegisterQuery>,
) -> ApiResult<Json<ListPage<RegisterEntry>>> {
    let ctx = PrivacyContext::from(&state);
    Ok(Json(ListPage::all(privacy::register::open_requests(&ctx, query.due, query.kind).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Note {
    note: String,
}

pub(crate) async fn add_note(
    State(state): State<AppState>,
    operator: Operator,
    Path(request_id): Path<String>,
    JsonBody(body): JsonBody<Note>,
) -> ApiResult<Json<RegisterEntry>> {
    let ctx = PrivacyContext::from(&state);
    Ok(Json(privacy::register::add_note(&ctx, &operator.name, &request_id, &body.note).await?))
}

/// A correction of the date of birth or the name on the PAN on the person's evidence, answering their open
/// correction request; the PAN is checked again where KYC answered for the old details.
pub(crate) async fn correct(
    State(state): State<AppState>,
    operator: Operator,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<privacy::EvidenceCorrection>,
) -> ApiResult<Json<privacy::Corrected>> {
    let corrected = privacy::correct_on_evidence(&PrivacyContext::from(&state), &operator.name, &user_id, body).await?;
    Ok(Json(corrected))
}

pub(crate) async fn answer(
    State(state): State<AppState>,
    operator: Operator,
    Path(request_id): Path<String>,
    JsonBody(answer): JsonBody<Answer>,
) -> ApiResult<Json<RegisterEntry>> {
    let ctx = PrivacyContext::from(&state);
    let entry = privacy::register::answer(&ctx, &operator.name, &request_id, answer).await?;
    tracing::info!(operator = %operator.name, %request_id, status = ?entry.status, "privacy request answered");
    Ok(Json(entry))
}
