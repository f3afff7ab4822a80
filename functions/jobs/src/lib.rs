//! The jobs function, run on a schedule (every 15 minutes):
//! - payment reconciliation: unpaid top-ups older than 10 minutes are checked with Razorpay and credited
//!   through the same exactly-once path as webhooks; those unpaid after 24 hours expire;
//! - the stale-hold sweeper: inference holds older than the inference function's timeout belong to calls
//!   whose process died before settling; they are charged what the call recorded, or the whole hold
//!   (`shared::billing::sweep_stale_holds`).

use chrono::Duration;
use serde::Serialize;
use shared::error::ApiResult;
use shared::state::AppState;
use shared::wallet::{self, ReconciliationReport};

/// Top-ups younger than this are left to the webhook and the Checkout callback.
pub const RECONCILE_AFTER: Duration = Duration::minutes(10);
/// Top-ups unpaid this long are expired.
pub const EXPIRE_AFTER: Duration = Duration::hours(24);
/// Holds older than this are swept: the inference function's 5-minute timeout
/// (`shared::inference::FUNCTION_TIMEOUT`) plus a margin.
pub const STALE_HOLD_AFTER: Duration = Duration::minutes(6);

#[derive(Debug, Clone, Serialize)]
pub struct JobsReport {
    pub reconciliation: ReconciliationReport,
    pub stale_holds: shared::billing::SweepReport,
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
    let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
    let stale_holds = shared::billing::sweep_stale_holds(store, clock, &state.config, STALE_HOLD_AFTER).await?;
    tracing::info!(?reconciliation, ?stale_holds, "scheduled jobs finished");
    Ok(JobsReport { reconciliation, stale_holds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hold_is_swept_while_its_call_may_still_run() {
        let timeout = Duration::from_std(shared::inference::FUNCTION_TIMEOUT).unwrap_or(Duration::MAX);
        assert!(STALE_HOLD_AFTER > timeout);
    }
}
