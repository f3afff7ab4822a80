//! Security incidents (`admin`): their record and timeline with the deadlines the law sets, and the
//! security notices to the people they touched. The rules live in `shared::incidents`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use shared::error::ApiResult;
use shared::http::{JsonBody, ListPage, Operator};
use shared::incidents::{self, IncidentView, NewEvent, NewIncident, SecurityNotice};
use shared::state::AppState;

/// Incidents listed at most, newest first.
const LISTED: u32 = 50;

pub(crate) async fn list(State(state): State<AppState>, _: Operator) -> ApiResult<Json<ListPage<IncidentView>>> {
    Ok(Json(ListPage::all(incidents::list(state.store(), LISTED).await?)))
}

pub(crate) async fn open(
    State(state): State<AppState>,
    operator: Operator,
    JsonBody(new): JsonBody<NewIncident>,
) -> ApiResult<(StatusCode, Json<IncidentView>)> {
    Ok((StatusCode::CREATED, Json(incidents::open(&state.ports, new, &operator.name).await?)))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    _: Operator,
    Path(incident_id): Path<String>,
) -> ApiResult<Json<IncidentView>> {
    Ok(Json(IncidentView::of(incidents::get(state.store(), &incident_id).await?)))
}

pub(crate) async fn add_event(
    State(state): State<AppState>,
    operator: Operator,
    Path(incident_id): Path<String>,
    JsonBody(new): JsonBody<NewEvent>,
) -> ApiResult<Json<IncidentView>> {
    let event = incidents::event_from(new, &operator.name, state.clock.now())?;
    tracing::warn!(incident = %incident_id, operator = %operator.name, kind = ?event.kind, "incident event recorded");
    Ok(Json(incidents::add_event(&state.ports, &incident_id, event).await?))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeAccount {
    reason: String,
}

/// Ends every session and revokes every API key of one account.
pub(crate) async fn revoke_account(
    State(state): State<AppState>,
    operator: Operator,
    Path(user_id): Path<String>,
    JsonBody(request): JsonBody<RevokeAccount>,
) -> ApiResult<Json<incidents::Revoked>> {
    let reason = shared::incidents::text(&request.reason, "reason")?;
    let mut revoked = incidents::Revoked { complete: true, ..Default::default() };
    incidents::revoke_account(&state.ports, &user_id, &mut revoked).await?;
    state.keys_changed(&user_id);
    tracing::warn!(operator = %operator.name, %user_id, %reason, "account access revoked");
    Ok(Json(revoked))
}

/// Ends every session and revokes every API key of every open account (a breach of the running service).
pub(crate) async fn revoke_everyone(
    State(state): State<AppState>,
    operator: Operator,
    JsonBody(run): JsonBody<incidents::RevokeEveryone>,
) -> ApiResult<Json<incidents::Revoked>> {
    let budget = std::time::Duration::from_secs(6);
    let revoked = incidents::revoke_everyone(&state.ports, &run, &operator.name, budget).await?;
    tracing::warn!(operator = %operator.name, run = %run.run_id, reason = %run.reason, accounts = revoked.accounts, "access revoked for everyone");
    Ok(Json(revoked))
}

/// Previews (`dry_run`) or sends a security notice; a send that meets the time budget answers
/// `complete: false`, and sending the same notice again carries on, reaching nobody twice.
pub(crate) async fn notice(
    State(state): State<AppState>,
    operator: Operator,
    Path(incident_id): Path<String>,
    JsonBody(notice): JsonBody<SecurityNotice>,
) -> ApiResult<Json<incidents::NoticeOutcome>> {
    let dry_run = notice.dry_run;
    let budget = std::time::Duration::from_secs(6);
    let outcome = incidents::send_notice(&state.ports, &incident_id, notice, &operator.name, budget).await?;
    tracing::warn!(incident = %incident_id, operator = %operator.name, dry_run, recipients = outcome.recipients, "security notice");
    Ok(Json(outcome))
}
