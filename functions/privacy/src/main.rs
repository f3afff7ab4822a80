//! Lambda entrypoint: configuration, the DynamoDB and S3 clients are built once per cold start. Exports are
//! built by the `exports` binary (the only one of the two that may open the KYC vault); this one hands out
//! their links and erases them at closure (blob bucket), so it refuses to start without the bucket.

use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[Capability::Blobs, Capability::EdgeSecret]).await?;
    shared::http::run_on_lambda(privacy::app(state)).await
}
