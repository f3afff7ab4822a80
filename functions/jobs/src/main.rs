//! Lambda entrypoint for the scheduled jobs (an EventBridge schedule invokes it; the event is ignored).
//! Clients are built once per cold start. Razorpay's keys are needed by reconciliation and the closed
//! accounts' refunds only, the KYC provider's by the KYC retries only: while either is missing or refused,
//! the function still starts, the other jobs run, those fail (and the invocation with them), and each run
//! tries the keys again.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use shared::state::{AppState, Capability};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let started = AppState::for_lambda_with_optional(
        &[Capability::Blobs, Capability::Supplier],
        &[Capability::Razorpay, Capability::KycProvider],
    )
    .await?;
    let completed: OnceCell<AppState> = OnceCell::new();
    let (started, completed) = (&started, &completed);
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| async move {
        let state = current_state(started, completed).await;
        let report = jobs::run(state).await.map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
        if !report.failed_jobs.is_empty() {
            // A failed run goes to the jobs' failure queue (template.yaml), where its alarm sees it.
            return Err(lambda_runtime::Error::from(format!("jobs failed: {}", report.failed_jobs.join(", "))));
        }
        serde_json::to_value(report).map_err(lambda_runtime::Error::from)
    }))
    .await
}

/// The state to run with: the one built at the start, or (once the keys that were unusable then, Razorpay's
/// or the KYC provider's, have been fixed) the same with them. Until every missing key loads, each run tries
/// again and the jobs that need them fail.
async fn current_state<'a>(started: &'a AppState, completed: &'a OnceCell<AppState>) -> &'a AppState {
    if started.razorpay.is_some() && started.kyc_provider.is_some() {
        return started;
    }
    if let Some(state) = completed.get() {
        return state;
    }
    match missing_keys(started).await {
        Ok(state) => completed.get_or_init(|| async { state }).await,
        Err(e) => {
            tracing::error!(error = %e, "keys are still unusable; the jobs that need them fail this run");
            started
        }
    }
}

/// `started` with the keys it lacked, each read again from its secret.
async fn missing_keys(started: &AppState) -> Result<AppState, shared::state::BoxError> {
    let clock = std::sync::Arc::clone(&started.clock);
    let mut state = started.clone();
    if state.razorpay.is_none() {
        let client = shared::state::razorpay_from_environment(std::sync::Arc::clone(&clock)).await?;
        state = state.with_razorpay(client.ok_or("no Razorpay secret is configured")?);
    }
    if state.kyc_provider.is_none() {
        let provider = shared::state::kyc_provider_from_environment(clock).await?;
        state = state.with_kyc_provider(provider.ok_or("no KYC provider secret is configured")?);
    }
    Ok(state)
}
