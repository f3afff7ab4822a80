//! Lambda entrypoint for the scheduled jobs (an EventBridge schedule invokes it; the event is ignored).
//! Clients are built once per cold start. Razorpay's keys are needed by reconciliation and the closed
//! accounts' refunds only: while they are missing or refused, the function still starts, the other jobs run,
//! those two fail (and the invocation with them), and each run tries the keys again.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use shared::state::{AppState, Capability};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let started = AppState::for_lambda_with_optional(&[Capability::Blobs], &[Capability::Razorpay]).await?;
    let with_razorpay: OnceCell<AppState> = OnceCell::new();
    let (started, with_razorpay) = (&started, &with_razorpay);
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| async move {
        let state = current_state(started, with_razorpay).await;
        let report = jobs::run(state).await.map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
        if !report.failed_jobs.is_empty() {
            // A failed run goes to the jobs' failure queue (template.yaml), where its alarm sees it.
            return Err(lambda_runtime::Error::from(format!("jobs failed: {}", report.failed_jobs.join(", "))));
        }
        serde_json::to_value(report).map_err(lambda_runtime::Error::from)
    }))
    .await
}

/// The state to run with: the one built at the start, or (once Razorpay's keys become usable) the same with
/// Razorpay.
async fn current_state<'a>(started: &'a AppState, with_razorpay: &'a OnceCell<AppState>) -> &'a AppState {
    if started.razorpay.is_some() {
        return started;
    }
    if let Some(state) = with_razorpay.get() {
        return state;
    }
    match shared::state::razorpay_from_environment(std::sync::Arc::clone(&started.clock)).await {
        Ok(Some(client)) => with_razorpay.get_or_init(|| async { started.clone().with_razorpay(client) }).await,
        Ok(None) => started,
        Err(e) => {
            tracing::error!(error = %e, "Razorpay's keys are still unusable; reconciliation fails this run");
            started
        }
    }
}
