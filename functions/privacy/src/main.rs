//! Lambda entrypoint: configuration, the DynamoDB, S3 and KMS clients are built once per cold start.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::state::AppState::for_lambda().await?;
    shared::http::run_on_lambda(privacy::app(state)).await
}
