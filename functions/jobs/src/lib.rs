//! The jobs function, run on a schedule (every 15 minutes): payment reconciliation. Unpaid top-ups older
//! than 10 minutes are checked with Razorpay and credited through the same exactly-once path as webhooks;
//! those unpaid after 24 hours expire.

use chrono::Duration;
use serde::Serialize;
use shared::error::ApiResult;
use shared::state::AppState;
use shared::wallet::{self, ReconciliationReport};

/// Top-ups younger than this are left to the webhook and the Checkout callback.
pub const RECONCILE_AFTER: Duration = Duration::minutes(10);
/// Top-ups unpaid this long are expired.
pub const EXPIRE_AFTER: Duration = Duration::hours(24);

#[derive(Debug, Clone, Serialize)]
pub struct JobsReport {
    pub reconciliation: ReconciliationReport,
}

/// One scheduled run.
pub async fn run(state: &AppState) -> ApiResult<JobsReport> {
    let reconciliation = wallet::reconcile(
        state.store.as_ref(),
        state.razorpay()?,
        state.clock.as_ref(),
        &state.config,
        RECONCILE_AFTER,
        EXPIRE_AFTER,
    )
    .await?;
    tracing::info!(?reconciliation, "scheduled jobs finished");
    Ok(JobsReport { reconciliation })
}
