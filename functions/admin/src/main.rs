//! Lambda entrypoint: configuration, the DynamoDB and KMS clients and the operators' credentials are built
//! once per cold start. This function alone serves the operators: it opens the KYC vault for a reveal and
//! each operator's authenticator, so it refuses to start without the vault key or the credentials.

use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let needs = [Capability::Vault, Capability::OperatorToken, Capability::EdgeSecret, Capability::Supplier];
    let state = AppState::for_lambda_with(&needs).await?;
    shared::http::run_on_lambda(admin::app(state)).await
}
