//! The mailer function: sends the outbox with Amazon SES (API v2) and keeps the suppression list.
//!
//! - `mailer` (the main binary) is started by the main table's stream for each new `OUTBOX` item (the event
//!   source mapping lets only those through) and delivers it through `shared::notifications::delivery`: a
//!   claimed idempotency record per message, so a redelivered batch sends nothing twice. A message SES does
//!   not take is reported in `batchItemFailures`; the mapping retries it (bounded), then sends its record to
//!   the dead-letter queue.
//! - `mail-feedback` receives SES's bounce and complaint notifications through SNS and puts the addresses on
//!   the suppression list, which the delivery checks before every send.

use async_trait::async_trait;
use aws_sdk_sesv2::error::SdkError;
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use serde_json::{Value, json};
use shared::notifications::delivery::{self, MailError, Mailer, Outgoing, SuppressionReason};
use shared::state::AppState;

/// Amazon SES as the mail service: each message sent raw (so marketing carries its one-click unsubscribe
/// headers), under the configuration set whose event destination reports bounces and complaints.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, configuration_set: Option<String>) -> Self {
        Self { client, configuration_set }
    }

    /// The client of the function's own region and role; the configuration set from
    /// `INFEREX_SES_CONFIGURATION_SET`.
    pub async fn from_env() -> Result<Self, shared::error::BoxError> {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let configuration_set = shared::config::var::<String>("INFEREX_SES_CONFIGURATION_SET")?;
        Ok(Self::new(aws_sdk_sesv2::Client::new(&config), configuration_set))
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, message: &Outgoing) -> Result<String, MailError> {
        let raw = RawMessage::builder()
            .data(Blob::new(message.raw.clone()))
            .build()
            .map_err(|e| MailError::Rejected(e.to_string()))?;
        let mut request = self
            .client
            .send_email()
            .from_email_address(&message.from)
            .destination(Destination::builder().to_addresses(&message.to).build())
            .content(EmailContent::builder().raw(raw).build());
        if let Some(set) = &self.configuration_set {
            request = request.configuration_set_name(set);
        }
        match request.send().await {
            Ok(sent) => Ok(sent.message_id().unwrap_or_default().to_owned()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// A malformed request never succeeds; everything else (throttling, a paused account, a network failure)
/// may on a retry.
fn classify(error: SdkError<SendEmailError>) -> MailError {
    let text = format!("{}", aws_sdk_sesv2::error::DisplayErrorContext(&error));
    match error.as_service_error() {
        Some(SendEmailError::BadRequestException(_)) => MailError::Rejected(text),
        _ => MailError::Failed(text),
    }
}

/// Delivers every outbox item of a stream batch; the answer lists the records to retry
/// (`ReportBatchItemFailures`).
pub async fn send_batch(state: &AppState, mailer: &dyn Mailer, event: &Value) -> Value {
    let mut failures = Vec::new();
    for (sequence, sort_key) in delivery::outbox_records(event) {
        match delivery::deliver(&state.ports, mailer, state.clock.now(), &sort_key).await {
            Ok(outcome) => tracing::info!(%sort_key, ?outcome, "outbox item delivered"),
            Err(e) => {
                tracing::warn!(error = %e, %sort_key, "outbox item not delivered; the stream retries it");
                failures.push(json!({ "itemIdentifier": sequence }));
            }
        }
    }
    json!({ "batchItemFailures": failures })
}

/// The addresses an SES notification (bounce or complaint, as the configuration set's event destination or
/// an identity's notification topic publishes it) says to stop sending to. Transient bounces say nothing.
pub fn suppressions(notification: &Value) -> Vec<(String, SuppressionReason)> {
    let kind = notification
        .get("eventType")
        .or_else(|| notification.get("notificationType"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let addresses = |list: Option<&Value>| -> Vec<String> {
        list.and_then(Value::as_array)
            .map(|all| all.iter().filter_map(|r| r.get("emailAddress")?.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    match kind {
        "Bounce" => {
            let bounce = notification.get("bounce");
            let permanent = bounce.and_then(|b| b.get("bounceType")).and_then(Value::as_str) == Some("Permanent");
            if !permanent {
                return Vec::new();
            }
            let list = addresses(bounce.and_then(|b| b.get("bouncedRecipients")));
            list.into_iter().map(|a| (a, SuppressionReason::Bounce)).collect()
        }
        "Complaint" => {
            let list = addresses(notification.get("complaint").and_then(|c| c.get("complainedRecipients")));
            list.into_iter().map(|a| (a, SuppressionReason::Complaint)).collect()
        }
        _ => Vec::new(),
    }
}

/// Handles an SNS event of SES notifications: every permanently bounced or complaining address is
/// suppressed. A store failure fails the invocation, so SNS delivers it again (suppressing is idempotent).
pub async fn record_feedback(state: &AppState, event: &Value) -> Result<usize, shared::store::StoreError> {
    let records = event.get("Records").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut suppressed = 0;
    for record in records {
        let Some(message) = record.pointer("/Sns/Message").and_then(Value::as_str) else { continue };
        let Ok(notification) = serde_json::from_str::<Value>(message) else {
            tracing::warn!("an SNS message that is not an SES notification was ignored");
            continue;
        };
        for (address, reason) in suppressions(&notification) {
            delivery::suppress(state.store(), &address, reason, state.clock.now()).await?;
            tracing::warn!(?reason, "an address was suppressed after SES feedback");
            suppressed += 1;
        }
    }
    Ok(suppressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_permanent_bounces_and_complaints_suppress() {
        let permanent = json!({ "notificationType": "Bounce", "bounce": { "bounceType": "Permanent", "bouncedRecipients": [{ "emailAddress": "gone@example.in" }] } });
        assert_eq!(suppressions(&permanent), vec![("gone@example.in".to_owned(), SuppressionReason::Bounce)]);
        let transient = json!({ "eventType": "Bounce", "bounce": { "bounceType": "Transient", "bouncedRecipients": [{ "emailAddress": "full@example.in" }] } });
        assert!(suppressions(&transient).is_empty());
        let complaint = json!({ "eventType": "Complaint", "complaint": { "complainedRecipients": [{ "emailAddress": "angry@example.in" }] } });
        assert_eq!(suppressions(&complaint), vec![("angry@example.in".to_owned(), SuppressionReason::Complaint)]);
        assert!(suppressions(&json!({ "eventType": "Delivery" })).is_empty());
    }

    #[test]
    fn only_inserted_outbox_items_are_delivered() {
        let record = |name: &str, pk: &str, seq: &str| json!({ "eventName": name, "dynamodb": { "Keys": { "pk": { "S": pk }, "sk": { "S": "0001#a" } }, "SequenceNumber": seq } });
        let event = json!({ "Records": [record("INSERT", "OUTBOX", "1"), record("REMOVE", "OUTBOX", "2"), record("INSERT", "USER#u", "3")] });
        assert_eq!(delivery::outbox_records(&event), vec![("1".to_owned(), "0001#a".to_owned())]);
    }
}
