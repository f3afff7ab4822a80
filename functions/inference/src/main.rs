//! Lambda entrypoint with response streaming: configuration, the DynamoDB client, the model catalog, the
//! provider keys and the upstream HTTP client (its connection pool) are built once per cold start.

use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[Capability::Gateway]).await?;
    lambda_http::run_with_streaming_response(shared::http::lambda_service(inference::app(state))).await
}
