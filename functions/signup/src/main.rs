//! Lambda entrypoint: configuration and clients are built once per cold start, then reused by every
//! invocation.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::state::AppState::for_lambda_with(&[shared::state::Capability::EdgeSecret]).await?;
    shared::http::run_on_lambda(signup::app(state)).await
}
