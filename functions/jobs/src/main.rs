//! Lambda entrypoint for the scheduled jobs (an EventBridge schedule invokes it; the event is ignored).
//! Clients are built once per cold start.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = shared::state::AppState::for_lambda_with(&[
        shared::state::Capability::Razorpay,
        shared::state::Capability::Blobs,
    ])
    .await?;
    let state = &state;
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| async move {
        let report = jobs::run(state).await.map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
        serde_json::to_value(report).map_err(lambda_runtime::Error::from)
    }))
    .await
}
