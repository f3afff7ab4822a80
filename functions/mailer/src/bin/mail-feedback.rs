//! Lambda entrypoint of SES's bounce and complaint feedback (through SNS): the addresses go on the
//! suppression list the mailer checks before every send.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::{Value, json};
use shared::state::AppState;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[]).await?;
    let state = &state;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let suppressed = mailer::record_feedback(state, &event.payload).await?;
        Ok::<Value, lambda_runtime::Error>(json!({ "suppressed": suppressed }))
    }))
    .await
}
