//! The mailer as deployed: DynamoDB stream events in AWS's format, sent through moto's SESv2, on both
//! stores. A redelivered batch sends nothing twice, two senders racing on one batch send once, a failure
//! hands the record back and its retry sends it, and a permanently bounced address gets nothing more.

use std::sync::Arc;

use serde_json::{Value, json};
use shared::clock::{Clock, SystemClock};
use shared::config::Config;
use shared::state::AppState;
use shared::store::{ItemStore, Query, Table, schema};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn ses_client() -> Result<aws_sdk_sesv2::Client, String> {
    let endpoint = shared::testing::moto_endpoint()?;
    let config = aws_sdk_sesv2::Config::builder()
        .behavior_version(aws_sdk_sesv2::config::BehaviorVersion::latest())
        .region(aws_sdk_sesv2::config::Region::new("ap-south-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sesv2::config::Credentials::new("local", "local", None, None, "local"))
        .build();
    Ok(aws_sdk_sesv2::Client::from_conf(config))
}

async fn state(dynamodb: bool, config: Config) -> Result<AppState, String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn ItemStore> = match dynamodb {
        true => Arc::new(shared::testing::dynamo_store(clock.clone()).await?),
        false => Arc::new(shared::testing::sqlite_store(clock.clone())?),
    };
    Ok(AppState::new(store, config, clock))
}

/// The outbox items waiting: (sort key, message id).
async fn outbox(state: &AppState) -> Result<Vec<(String, String)>, Box<dyn std::error::Error + Send + Sync>> {
    let page = state.store.query(Query::new(Table::Main, schema::OUTBOX_PK)).await?;
    Ok(page.items.iter().map(|i| (i.sk.clone(), i.attrs["id"].as_str().unwrap_or_default().to_owned())).collect())
}

fn stream_event(outbox_sk: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&include_str!("fixtures/dynamodb-stream-outbox-insert.json").replace("OUTBOX_SK", outbox_sk))
}

/// How many messages moto's SES holds with this Message-ID.
async fn sent_copies(message_id: &str) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let data: Value =
        reqwest::get(format!("{}/moto-api/data.json", shared::testing::moto_endpoint()?)).await?.json().await?;
    let raw = data.pointer("/ses/RawMessage").and_then(Value::as_array).cloned().unwrap_or_default();
    let marker = format!("Message-ID: <{message_id}@inferexai.in>");
    Ok(raw.iter().filter(|m| m["raw_data"].as_str().is_some_and(|d| d.contains(&marker))).count())
}

async fn signup(state: &AppState, email: &str) -> Result<String, shared::error::ApiError> {
    shared::testing::create_account(state, email).await
}

async fn redelivered_batches_send_once(dynamodb: bool) -> TestResult {
    let client = ses_client()?;
    client.create_email_identity().email_identity("inferexai.in").send().await?;
    let ses = mailer::SesMailer::new(client, None);
    let state = state(dynamodb, Config::default()).await?;
    let email = format!("sender-{}@example.in", shared::secrets::random_suffix());
    signup(&state, &email).await?;
    let waiting = outbox(&state).await?;
    assert_eq!(waiting.len(), 1, "signup queued one message: {waiting:?}");
    let (sort_key, message_id) = waiting[0].clone();
    let event = stream_event(&sort_key)?;

    // Two senders race on the same batch (a retry overlapping a slow first try): one message.
    let (first, second) =
        tokio::join!(mailer::send_batch(&state, &ses, &event), mailer::send_batch(&state, &ses, &event));
    assert_eq!(first["batchItemFailures"], json!([]));
    assert_eq!(second["batchItemFailures"], json!([]));
    assert_eq!(sent_copies(&message_id).await?, 1);
    assert!(outbox(&state).await?.is_empty(), "a sent message leaves the outbox");

    // The same batch delivered again, later: nothing is sent again.
    let again = mailer::send_batch(&state, &ses, &event).await;
    assert_eq!(again["batchItemFailures"], json!([]));
    assert_eq!(sent_copies(&message_id).await?, 1);
    Ok(())
}

async fn a_failed_send_is_retried_and_then_sent_once(dynamodb: bool) -> TestResult {
    let client = ses_client()?;
    let domain = format!("late-{}.example.in", shared::secrets::random_suffix());
    let config = Config { mail_from: format!("InferexAI <no-reply@{domain}>"), ..Config::default() };
    let state = state(dynamodb, config).await?;
    signup(&state, &format!("retry-{}@example.in", shared::secrets::random_suffix())).await?;
    let (sort_key, message_id) = outbox(&state).await?.first().cloned().ok_or("nothing queued")?;
    let event = stream_event(&sort_key)?;
    let ses = mailer::SesMailer::new(client.clone(), None);

    // SES refuses the sender (its identity is not verified yet): the record goes back to the stream.
    let refused = mailer::send_batch(&state, &ses, &event).await;
    assert_eq!(refused["batchItemFailures"], json!([{ "itemIdentifier": "222200000000012345678901" }]));
    assert_eq!(sent_copies(&message_id).await?, 0);
    assert_eq!(outbox(&state).await?.len(), 1, "the message waits for its retry");

    client.create_email_identity().email_identity(&domain).send().await?;
    let retried = mailer::send_batch(&state, &ses, &event).await;
    assert_eq!(retried["batchItemFailures"], json!([]));
    assert_eq!(sent_copies(&message_id).await?, 1);
    Ok(())
}

async fn bounced_addresses_get_nothing_more(dynamodb: bool) -> TestResult {
    let client = ses_client()?;
    client.create_email_identity().email_identity("inferexai.in").send().await?;
    let ses = mailer::SesMailer::new(client, None);
    let state = state(dynamodb, Config::default()).await?;
    let email = format!("bounced-{}@example.in", shared::secrets::random_suffix());
    let feedback: Value =
        serde_json::from_str(&include_str!("fixtures/sns-ses-bounce.json").replace("BOUNCED_ADDRESS", &email))?;
    // The permanent bounce suppresses; the transient one (a full mailbox) does not.
    assert_eq!(mailer::record_feedback(&state, &feedback).await?, 1);

    signup(&state, &email).await?;
    let (sort_key, message_id) = outbox(&state).await?.first().cloned().ok_or("nothing queued")?;
    let answer = mailer::send_batch(&state, &ses, &stream_event(&sort_key)?).await;
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert_eq!(sent_copies(&message_id).await?, 0, "nothing goes to a suppressed address");
    assert!(outbox(&state).await?.is_empty(), "a suppressed message is settled, not retried");
    Ok(())
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $name() -> super::TestResult { super::$name(false).await })*
        }
        mod dynamodb {
            $(#[tokio::test] async fn $name() -> super::TestResult { super::$name(true).await })*
        }
    };
}

on_both_stores!(
    redelivered_batches_send_once,
    a_failed_send_is_retried_and_then_sent_once,
    bounced_addresses_get_nothing_more
);

#[test]
fn the_mailer_refuses_to_start_with_a_secret_in_its_environment() -> Result<(), Box<dyn std::error::Error>> {
    for binary in [env!("CARGO_BIN_EXE_mailer"), env!("CARGO_BIN_EXE_mail-feedback")] {
        let (ok, out) = shared::testing::cold_start(binary, &[("INFEREX_ADMIN_TOKEN", "a-token-in-the-environment")])?;
        assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_ADMIN_TOKEN"), "{out}");
    }
    Ok(())
}
