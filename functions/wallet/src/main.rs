//! Lambda entrypoint: configuration, the DynamoDB client and the Razorpay client are built once per cold
//! start, then reused by every invocation. Without valid Razorpay keys it refuses to start.

use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[Capability::Razorpay, Capability::Supplier]).await?;
    shared::http::run_on_lambda(wallet::app(state)).await
}
