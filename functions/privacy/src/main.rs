//! Lambda entrypoint: configuration, the DynamoDB, KMS and S3 clients are built once per cold start. The
//! export decrypts the owner's PAN (vault key) and stores the document (blob bucket); it refuses to start
//! without either.

use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[Capability::Vault, Capability::Blobs]).await?;
    shared::http::run_on_lambda(privacy::app(state)).await
}
