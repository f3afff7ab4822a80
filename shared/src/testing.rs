//! Support for tests that run against both storage backends (the contract suite and the end-to-end
//! tests). Not used by the functions themselves.

use std::sync::Arc;

use crate::clock::Clock;
use crate::secrets::random_suffix;
use crate::store::dynamo::{self, DynamoStore, TableNames};
use crate::store::sqlite::SqliteStore;

/// The variable `make test` sets to the address of the DynamoDB Local it started.
pub const DYNAMODB_ENDPOINT_VAR: &str = "INFEREX_TEST_DYNAMODB_ENDPOINT";

/// A fresh in-memory embedded store.
pub fn sqlite_store(clock: Arc<dyn Clock>) -> Result<SqliteStore, String> {
    SqliteStore::in_memory(clock).map_err(|e| e.to_string())
}

/// A DynamoDB store on freshly created, uniquely named tables in the DynamoDB Local that `make test`
/// started. Without it this is an error, never a silent skip: a backend test must not pass unrun.
pub async fn dynamo_store(clock: Arc<dyn Clock>) -> Result<DynamoStore, String> {
    let endpoint = std::env::var(DYNAMODB_ENDPOINT_VAR).map_err(|_| {
        format!("{DYNAMODB_ENDPOINT_VAR} is not set: run the tests with `make test`, which starts DynamoDB Local")
    })?;
    let client = dynamo::local_client(&endpoint);
    let tables = TableNames::with_prefix(&format!("test-{}", random_suffix()));
    dynamo::create_tables(&client, &tables).await.map_err(|e| format!("creating tables at {endpoint}: {e}"))?;
    Ok(DynamoStore::new(client, tables, clock))
}

/// An S3 blob store on a fresh bucket in the moto server `make test` started.
pub async fn moto_s3_blobs() -> Result<crate::blobs::S3Blobs, String> {
    let endpoint = moto_endpoint()?;
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new("local", "local", None, None, "local"))
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let bucket = format!("inferex-test-{}", random_suffix());
    client.create_bucket().bucket(&bucket).send().await.map_err(|e| format!("creating bucket: {e:?}"))?;
    Ok(crate::blobs::S3Blobs::new(client, bucket))
}

/// What a Lambda invocation answered.
#[derive(Debug)]
pub struct LambdaAnswer {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

/// Feeds an API Gateway event (REST v1 or HTTP v2 JSON) through a function's Lambda service, exactly as
/// the Lambda runtime would, and decodes the JSON answer (`null` for an empty body).
pub async fn invoke_lambda(app: axum::Router, event_json: &str) -> Result<LambdaAnswer, String> {
    use tower::ServiceExt;
    let request = lambda_http::request::from_str(event_json).map_err(|e| format!("event fixture: {e}"))?;
    let response = crate::http::lambda_service(app).oneshot(request).await.map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(|e| e.to_string())?;
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))?
    };
    Ok(LambdaAnswer { status, headers, body })
}

/// An app state over a fresh in-memory embedded store and the real clock.
pub fn embedded_state(config: crate::config::Config) -> Result<crate::state::AppState, String> {
    let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
    let store = sqlite_store(Arc::clone(&clock))?;
    Ok(crate::state::AppState::new(Arc::new(store), config, clock).with_kyc_keys(crate::state::KycKeys::ephemeral()))
}

/// The variable `make test` sets to the address of the moto server (S3, KMS) it started.
pub const MOTO_ENDPOINT_VAR: &str = "INFEREX_TEST_MOTO_ENDPOINT";

/// The moto server's address; an error (never a skip) when `make test` did not start it.
pub fn moto_endpoint() -> Result<String, String> {
    std::env::var(MOTO_ENDPOINT_VAR)
        .map_err(|_| format!("{MOTO_ENDPOINT_VAR} is not set: run the tests with `make test`, which starts moto"))
}

/// A KMS client for the moto server `make test` started; an error (never a skip) without it.
pub fn moto_kms_client() -> Result<aws_sdk_kms::Client, String> {
    let endpoint = moto_endpoint()?;
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new("local", "local", None, None, "local"))
        .build();
    Ok(aws_sdk_kms::Client::from_conf(config))
}

/// `n` random letters and digits (the alphabet of Razorpay's ids and key secrets).
pub fn random_alphanumeric(n: usize) -> String {
    use rand::Rng;
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    (0..n).map(|_| alphabet[rand::rngs::OsRng.gen_range(0..alphabet.len())]).collect()
}

/// A Razorpay secret as an operator fills it (`{"key_id", "key_secret", "webhook_secret"}`), made at random:
/// a fixed value in the repository would be a well-known one, which the start-up check refuses.
pub fn random_razorpay_secret(mode: &str) -> String {
    serde_json::json!({
        "key_id": format!("rzp_{mode}_{}", random_alphanumeric(14)),
        "key_secret": random_alphanumeric(24),
        "webhook_secret": crate::secrets::random_token(),
    })
    .to_string()
}

/// A Secrets Manager client for the moto server `make test` started; an error (never a skip) without it.
pub fn moto_secrets_client() -> Result<aws_sdk_secretsmanager::Client, String> {
    let endpoint = moto_endpoint()?;
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("ap-south-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new("local", "local", None, None, "local"))
        .build();
    Ok(aws_sdk_secretsmanager::Client::from_conf(config))
}

/// A new secret in moto's Secrets Manager holding `value`; returns its ARN.
pub async fn moto_secret(value: &str) -> Result<String, Box<dyn std::error::Error>> {
    let created = moto_secrets_client()?
        .create_secret()
        .name(format!("inferex-test-{}", crate::secrets::random_suffix()))
        .secret_string(value)
        .send()
        .await?;
    Ok(created.arn.ok_or("moto returned no ARN")?)
}

/// `make run`'s supplier as a deployed function's environment names it (`INFEREX_SUPPLIER_*`).
pub const SUPPLIER_ENV: [(&str, &str); 4] = [
    ("INFEREX_SUPPLIER_LEGAL_NAME", "InferexAI Technologies Private Limited"),
    ("INFEREX_SUPPLIER_GSTIN", "29AAICI1234F1ZQ"),
    ("INFEREX_SUPPLIER_ADDRESS", "4th Floor, 100 Feet Road, Indiranagar, Bengaluru, Karnataka 560038"),
    ("INFEREX_SUPPLIER_SIGNATORY", "Authorised Signatory"),
];

/// Starts a function's Lambda binary as a cold start would, with only `vars` (plus fake AWS credentials
/// pointed at moto) in its environment, and returns whether it exited successfully and what it printed.
/// Without a Lambda runtime API it can never serve: this is for what happens before that.
pub fn cold_start(binary: &str, vars: &[(&str, &str)]) -> Result<(bool, String), String> {
    let moto = moto_endpoint()?;
    let out = std::process::Command::new(binary)
        .env_clear()
        .envs([
            ("AWS_REGION", "ap-south-1"),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", moto.as_str()),
            ("INFEREX_LOG", "info"),
        ])
        .envs(vars.iter().copied())
        .output()
        .map_err(|e| format!("{binary}: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// The password of accounts made by [`create_account`].
pub const TEST_PASSWORD: &str = "correct horse battery";

/// Creates an adult account with [`TEST_PASSWORD`] through the real signup rules; returns its id.
pub async fn create_account(state: &crate::state::AppState, email: &str) -> Result<String, crate::error::ApiError> {
    let request = crate::accounts::SignupRequest {
        email: email.into(),
        password: TEST_PASSWORD.into(),
        full_name: "Fixture User".into(),
        date_of_birth: "1990-04-12".into(),
        accepted_terms_version: state.config.policy_version.clone(),
        marketing_consent: false,
    };
    let client = crate::accounts::ClientInfo::default();
    let account = crate::verification::signup(&state.ports, request, &client).await?;
    Ok(account.id)
}

/// Creates an account whose owner proved the address (as its verification link does), and logs it in;
/// returns (user id, session token). The end-to-end tests verify through the e-mailed link itself.
pub async fn signed_in_account(
    state: &crate::state::AppState,
    email: &str,
) -> Result<(String, String), crate::error::ApiError> {
    let id = create_account(state, email).await?;
    let verified = crate::store::Update::new(
        crate::store::Table::Main,
        crate::accounts::user_pk(&id),
        crate::store::schema::sk::PROFILE,
    )
    .set("email_verified", serde_json::json!(true));
    state.store.update(verified).await?;
    let client = crate::accounts::ClientInfo::default();
    let session = crate::auth::login(&state.ports, email, TEST_PASSWORD.into(), &client).await?;
    Ok((id, session.token))
}
