//! Lambda entrypoint of the mailer: the main table's stream delivers each new outbox item (filtered by the
//! event source mapping) and it is sent with Amazon SES. Configuration and clients are built once per cold
//! start.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use mailer::SesMailer;
use serde_json::Value;
use shared::state::AppState;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[]).await?;
    let ses = SesMailer::from_env().await?;
    let (state, ses) = (&state, &ses);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(mailer::send_batch(state, ses, &event.payload).await)
    }))
    .await
}
