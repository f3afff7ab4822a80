//! Lambda entrypoint: configuration and the DynamoDB client are built once per cold start.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::state::AppState::for_lambda_with(&[]).await?;
    shared::http::run_on_lambda(usage::app(state)).await
}
