//! Lambda entrypoint: configuration, the DynamoDB and KMS clients and the fingerprint key are built once
//! per cold start. This function handles KYC numbers, so it refuses to start without its keys.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::state::AppState::for_lambda().await?;
    if state.kyc_keys.is_none() {
        return Err("the kyc function needs INFEREX_KMS_KEY_ID and INFEREX_KYC_FINGERPRINT_SECRET".into());
    }
    shared::http::run_on_lambda(kyc::app(state)).await
}
