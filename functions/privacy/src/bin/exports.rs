//! Lambda entrypoint of the exports function: the main table's stream delivers each inserted export item
//! (filtered by the event source mapping) and the export is built here, with a timeout and memory no API
//! request has. Configuration and clients are built once per cold start; it refuses to start without the
//! vault key (the owner's PAN) and the export bucket.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use shared::privacy::PrivacyContext;
use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[Capability::Vault, Capability::Blobs]).await?;
    let context = PrivacyContext::from(&state);
    let context = &context;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(privacy::build_requested_exports(context, &event.payload).await)
    }))
    .await
}
