//! Lambda entrypoint: configuration and the DynamoDB and KMS clients are built once per cold start. This function handles KYC numbers and the provider's checks, so it refuses to start
//! without its keys.

use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let needs = [Capability::Vault, Capability::Fingerprints, Capability::KycProvider, Capability::EdgeSecret];
    let state = AppState::for_lambda_with(&needs).await?;
    shared::http::run_on_lambda(kyc::app(state)).await
}
