//! An account's rate-limit ceiling (`support`) and product news to every consenting account (`admin`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use shared::account_limits::{self, AccountLimits};
use shared::error::ApiResult;
use shared::http::{JsonBody, Operator};
use shared::notifications::campaigns::{Campaign, NoticeReport, send_campaign as queue_campaign};
use shared::state::AppState;

/// Sets the ceiling over an account's keys' rate limits.
pub(crate) async fn set_ceiling(
    State(state): State<AppState>,
    operator: Operator,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<AccountLimits>> {
    let changes = account_limits::operator_changes(&body)?;
    let limits = account_limits::change_account_limits(state.store(), &user_id, &changes).await?;
    tracing::info!(operator = %operator.name, %user_id, "rate limit ceiling set");
    state.keys_changed(&user_id);
    Ok(Json(limits))
}

/// Queues product news for every account with marketing consent (once per campaign id).
pub(crate) async fn send_campaign(
    State(state): State<AppState>,
    operator: Operator,
    JsonBody(campaign): JsonBody<Campaign>,
) -> ApiResult<(StatusCode, Json<NoticeReport>)> {
    // Inside the function's timeout; a campaign that needs longer answers complete: false and is carried
    // on by sending the same id again.
    let budget = std::time::Duration::from_secs(6);
    let report = queue_campaign(state.store(), &campaign, state.clock.now(), budget).await?;
    tracing::info!(operator = %operator.name, campaign = %campaign.id, queued = report.queued, "campaign queued");
    Ok((StatusCode::ACCEPTED, Json(report)))
}
