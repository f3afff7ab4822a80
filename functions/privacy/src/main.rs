//! Lambda entrypoint: configuration, the DynamoDB, KMS and S3 clients are built once per cold start. The
//! export decrypts the owner's PAN (vault key) and stores the document (blob bucket), and operators send
//! campaigns (operator token); it refuses to start without any of them.

use shared::state::{AppState, Capability};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = AppState::for_lambda_with(&[
        Capability::Vault,
        Capability::Blobs,
        Capability::OperatorToken,
        Capability::EdgeSecret,
    ])
    .await?;
    shared::http::run_on_lambda(privacy::app(state)).await
}
