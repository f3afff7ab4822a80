//! Lambda entrypoint with response streaming: configuration, the DynamoDB client, the model catalog and the
//! upstream HTTP client (its connection pool) are built once per cold start.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let catalog = shared::catalog::Catalog::builtin()?;
    let providers = shared::inference::Providers::from_env()?;
    let gateway = shared::inference::Gateway::new(catalog, providers)?;
    let state = shared::state::AppState::for_lambda().await?.with_gateway(gateway);
    lambda_http::run_with_streaming_response(shared::http::lambda_service(inference::app(state))).await
}
