//! Lambda entrypoint: configuration, the DynamoDB client and the Razorpay client are built once per cold
//! start, then reused by every invocation.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = shared::state::AppState::for_lambda().await?;
    if state.razorpay.is_none() {
        return Err("this function needs Razorpay credentials (RAZORPAY_SECRET_ARN or RAZORPAY_KEY_ID/…)".into());
    }
    shared::http::run_on_lambda(wallet::app(state)).await
}
