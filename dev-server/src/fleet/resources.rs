//! The AWS resources template.yaml creates, made in the emulators `make test` uses (DynamoDB Local; moto for
//! KMS, Secrets Manager, S3 and SES), named by the template's logical ids so every `!Ref` in a function's
//! environment resolves as it would in the stack.

use std::collections::BTreeMap;

use shared::state::BoxError;
use shared::store::dynamo::{self, TableNames};

/// Where the emulators listen.
#[derive(Debug, Clone)]
pub struct Emulators {
    pub dynamodb: String,
    pub moto: String,
}

/// The region the fleet's functions run in (DynamoDB Local keeps tables per region and access key).
pub const REGION: &str = "ap-south-1";
const ACCESS_KEY: &str = "fleet";

/// The secrets an operator fills after a deploy, as the fleet fills them.
#[derive(Debug, Clone)]
pub struct SecretValues {
    pub razorpay: String,
    pub kyc_provider: String,
    pub provider_keys: String,
    pub operator_token: String,
    pub edge: String,
}

/// Logical id (`MainTable`, `RazorpaySecret`, ...) to what `!Ref` gives for it.
pub type Refs = BTreeMap<String, String>;

macro_rules! client {
    ($sdk:ident, $endpoint:expr) => {{
        let config = $sdk::Config::builder()
            .behavior_version($sdk::config::BehaviorVersion::latest())
            .region($sdk::config::Region::new(REGION))
            .endpoint_url($endpoint)
            .credentials_provider($sdk::config::Credentials::new(ACCESS_KEY, ACCESS_KEY, None, None, "fleet"))
            .build();
        $sdk::Client::from_conf(config)
    }};
}

/// The DynamoDB client the functions' own configuration amounts to (same region and access key).
pub fn dynamodb_client(emulators: &Emulators) -> aws_sdk_dynamodb::Client {
    client!(aws_sdk_dynamodb, &emulators.dynamodb)
}

/// A client of the table's stream, as the event source mappings read it.
pub fn streams_client(emulators: &Emulators) -> aws_sdk_dynamodbstreams::Client {
    client!(aws_sdk_dynamodbstreams, &emulators.dynamodb)
}

/// What the functions' environment needs to find credentials, region and endpoints.
pub fn aws_environment(emulators: &Emulators) -> Vec<(String, String)> {
    [
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", ACCESS_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", emulators.moto.as_str()),
        ("AWS_ENDPOINT_URL_DYNAMODB", emulators.dynamodb.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// template.yaml's KMS keys: the vault's envelope key and the fingerprints' HMAC key.
async fn create_keys(emulators: &Emulators, refs: &mut Refs) -> Result<(), BoxError> {
    let kms = client!(aws_sdk_kms, &emulators.moto);
    let vault = kms.create_key().description("fleet vault key").send().await?;
    refs.insert("VaultKey".into(), key_id(vault.key_metadata)?);
    let fingerprint = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::Hmac256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::GenerateVerifyMac)
        .send()
        .await?;
    refs.insert("FingerprintKey".into(), key_id(fingerprint.key_metadata)?);
    Ok(())
}

/// template.yaml's buckets (exports, archived payloads), in the region it deploys to.
async fn create_buckets(emulators: &Emulators, refs: &mut Refs) -> Result<(), BoxError> {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(&emulators.moto)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(ACCESS_KEY, ACCESS_KEY, None, None, "fleet"))
            .build(),
    );
    for logical in ["ExportBucket", "BlobBucket"] {
        let bucket = format!("fleet-{}-{}", logical.to_ascii_lowercase(), shared::secrets::random_suffix());
        let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::ApSouth1)
            .build();
        s3.create_bucket().bucket(&bucket).create_bucket_configuration(location).send().await?;
        refs.insert(logical.into(), bucket);
    }
    Ok(())
}

/// Creates the tables, keys, secrets, buckets and mail identity; returns every logical id's `!Ref` value.
pub async fn provision(
    emulators: &Emulators,
    tables: &TableNames,
    secrets: &SecretValues,
    mail_domain: &str,
) -> Result<Refs, BoxError> {
    let mut refs = Refs::new();
    let dynamodb = dynamodb_client(emulators);
    dynamo::create_tables(&dynamodb, tables).await?;
    // template.yaml's stream on the main table, which the mailer and the exports function read.
    let stream = aws_sdk_dynamodb::types::StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::KeysOnly)
        .build()?;
    dynamodb.update_table().table_name(&tables.main).stream_specification(stream).send().await?;
    refs.insert("MainTable".into(), tables.main.clone());
    refs.insert("VaultTable".into(), tables.vault.clone());

    create_keys(emulators, &mut refs).await?;

    let manager = client!(aws_sdk_secretsmanager, &emulators.moto);
    for (logical, value) in [
        ("RazorpaySecret", &secrets.razorpay),
        ("ProviderKeysSecret", &secrets.provider_keys),
        ("AdminTokenSecret", &secrets.operator_token),
        ("EdgeOriginSecret", &secrets.edge),
        ("KycProviderSecret", &secrets.kyc_provider),
    ] {
        let name = format!("fleet-{}-{}", logical.to_ascii_lowercase(), shared::secrets::random_suffix());
        let created = manager.create_secret().name(name).secret_string(value).send().await?;
        refs.insert(logical.into(), created.arn.ok_or("moto returned no secret ARN")?);
    }

    create_buckets(emulators, &mut refs).await?;

    let ses = client!(aws_sdk_sesv2, &emulators.moto);
    // One identity for every fleet on the same moto (tests start several): made once.
    if let Err(e) = ses.create_email_identity().email_identity(mail_domain).send().await {
        let exists = e.as_service_error().is_some_and(|e| e.is_already_exists_exception());
        if !exists {
            return Err(e.into());
        }
    }
    let configuration_set = format!("fleet-mail-{}", shared::secrets::random_suffix());
    ses.create_configuration_set().configuration_set_name(&configuration_set).send().await?;
    refs.insert("MailConfigurationSet".into(), configuration_set);
    Ok(refs)
}

fn key_id(metadata: Option<aws_sdk_kms::types::KeyMetadata>) -> Result<String, BoxError> {
    Ok(metadata.map(|m| m.key_id).ok_or("moto returned no key")?)
}
