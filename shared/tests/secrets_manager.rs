//! Secrets read at run time from Secrets Manager (moto's, started by `make test`): a placeholder or
//! malformed secret stops the start, a rotation is picked up without a restart, and a webhook signed with a
//! just-rotated secret is accepted after one early re-read.

use std::sync::Arc;

use chrono::Duration;
use shared::clock::ManualClock;
use shared::razorpay::{RazorpayClient, RazorpayConfig, webhook_signature};
use shared::runtime_secrets::{EARLY_REREAD_GAP, REFRESH_AFTER, Rotating, SecretError, SecretsManagerSource};
use shared::secrets::random_suffix;
use shared::testing::moto_secrets_client;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BASE: &str = "http://127.0.0.1:9";

/// Random keys (as `shared::testing::random_razorpay_secret` makes them) with this webhook secret.
fn keys(webhook_secret: &str) -> String {
    let mut keys: serde_json::Value =
        serde_json::from_str(&shared::testing::random_razorpay_secret("test")).unwrap_or_default();
    keys["webhook_secret"] = serde_json::json!(webhook_secret);
    keys.to_string()
}

async fn secret_with(value: &str) -> Result<(aws_sdk_secretsmanager::Client, String), Box<dyn std::error::Error>> {
    let client = moto_secrets_client()?;
    let created =
        client.create_secret().name(format!("inferex-test-{}", random_suffix())).secret_string(value).send().await?;
    Ok((client, created.arn.ok_or("moto returned no ARN")?))
}

async fn load(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    clock: &ManualClock,
) -> Result<Rotating<RazorpayConfig>, SecretError> {
    let source = Arc::new(SecretsManagerSource::new(client.clone(), arn));
    Rotating::load(source, |raw: &str| RazorpayConfig::from_secret_json("razorpay", raw, BASE), Arc::new(clock.clone()))
        .await
}

#[tokio::test]
async fn the_shipped_placeholder_and_malformed_secrets_stop_the_start() -> TestResult {
    let clock = ManualClock::starting_now();
    let placeholder = r#"{"key_id":"rzp_live_REPLACE","key_secret":"REPLACE","webhook_secret":"REPLACE"}"#;
    for (value, expected) in [
        (placeholder, "placeholder"),
        (&shared::secrets::random_token() as &str, "malformed"),
        (&keys("short") as &str, "too short"),
        (&keys("") as &str, "missing"),
    ] {
        let (client, arn) = secret_with(value).await?;
        let error = load(&client, &arn, &clock).await.err().ok_or("a bad secret was accepted")?;
        assert!(error.to_string().contains(expected), "{value}: {error}");
        assert!(!error.to_string().contains("REPLACE") && !error.to_string().contains("short\""), "{error}");
    }
    // An ARN that does not exist is a start failure too, not an empty secret.
    let client = moto_secrets_client()?;
    let missing = load(&client, "arn:aws:secretsmanager:ap-south-1:123456789012:secret:nope", &clock).await;
    assert!(matches!(missing, Err(SecretError::Unreadable { .. })));
    Ok(())
}

#[tokio::test]
async fn a_rotated_webhook_secret_verifies_without_a_restart_and_the_old_one_stops() -> TestResult {
    let clock = ManualClock::starting_now();
    let [first, second, third] = [(); 3].map(|()| shared::secrets::random_token());
    let (first, second, third) = (first.as_str(), second.as_str(), third.as_str());
    let (client, arn) = secret_with(&keys(first)).await?;
    let razorpay = RazorpayClient::with_keys(load(&client, &arn, &clock).await?)?;
    let body = br#"{"event":"payment.captured"}"#;
    assert!(razorpay.verify_webhook(body, &webhook_signature(first, body)).await);

    // Rotation: Razorpay signs with the new secret at once; one early re-read picks it up.
    client.put_secret_value().secret_id(&arn).secret_string(keys(second)).send().await?;
    assert!(razorpay.verify_webhook(body, &webhook_signature(second, body)).await);
    assert!(!razorpay.verify_webhook(body, &webhook_signature(first, body)).await);

    // Forged signatures cannot force a re-read more than once per gap: a rotation in between is only seen
    // by the periodic refresh or after the gap.
    client.put_secret_value().secret_id(&arn).secret_string(keys(third)).send().await?;
    assert!(!razorpay.verify_webhook(body, &webhook_signature(third, body)).await);
    clock.advance(EARLY_REREAD_GAP);
    assert!(razorpay.verify_webhook(body, &webhook_signature(third, body)).await);

    // A rotation to a placeholder is not taken: the last good secret stays.
    client.put_secret_value().secret_id(&arn).secret_string(keys("REPLACE")).send().await?;
    clock.advance(REFRESH_AFTER + Duration::seconds(1));
    assert_eq!(razorpay.config().await.webhook_secret.expose(), third);
    Ok(())
}
