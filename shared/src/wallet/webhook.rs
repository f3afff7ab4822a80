//! Razorpay's webhook events, once each: payments credited or failed, refunds and disputes applied.

use crate::ports::Ports;
use serde::Serialize;
use serde_json::json;

use super::adjustments::debit_refund;
use super::disputes::apply_dispute;
use super::topups::{CreditOutcome, CreditSource, TopupStore, credit_payment, mark_failed};
use super::{WalletStore, payment_expiry, record_review};
use crate::error::ApiResult;
use crate::razorpay::Payment;
use crate::store::schema::{self, event_pk};
use crate::store::{Condition, Item, Put, Table};

const EVENT_SK: &str = schema::sk::EVENT;

/// What a webhook delivery led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    Processed,
    Duplicate,
    Ignored,
    Review,
    /// Kept until the payment it adjusts is credited.
    Deferred,
}

/// Handles a Razorpay webhook whose signature has already been verified: deduplicates on the event id,
/// archives the raw payload, then credits, fails or refunds.
pub async fn handle_webhook(
    ports: &Ports,
    blobs: &dyn crate::blobs::BlobStore,
    event_id: &str,
    raw_body: &[u8],
) -> ApiResult<WebhookOutcome> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    if store.is_recorded(&event_pk(event_id), EVENT_SK).await? {
        return Ok(WebhookOutcome::Duplicate);
    }
    let event: crate::razorpay::WebhookEvent = crate::body::parse_json(raw_body)?;
    let now = clock.now();
    let archive_key = format!("razorpay/webhooks/{}/{event_id}.json", now.format("%Y/%m/%d"));
    blobs.put(&archive_key, raw_body.to_vec(), "application/json").await?;

    let outcome = match event.event.as_str() {
        "payment.captured" | "order.paid" => match event.payment() {
            Some(payment) if payment.status == "captured" => credit_from_event(ports, &payment).await?,
            _ => WebhookOutcome::Ignored,
        },
        "payment.failed" => match event.payment() {
            Some(payment) => match payment.order_id.as_deref() {
                Some(order_id) => match store.topup_for_order(order_id).await? {
                    Some(topup) => {
                        mark_failed(store, &topup).await?;
                        WebhookOutcome::Processed
                    }
                    None => WebhookOutcome::Ignored,
                },
                None => WebhookOutcome::Ignored,
            },
            None => WebhookOutcome::Ignored,
        },
        "refund.processed" => match event.refund() {
            Some(refund) => adjustment_outcome(debit_refund(ports, &refund).await?),
            None => WebhookOutcome::Ignored,
        },
        name if name.starts_with("payment.dispute.") => match event.dispute() {
            Some(dispute) => adjustment_outcome(apply_dispute(ports, name, &dispute).await?),
            None => WebhookOutcome::Ignored,
        },
        _ => WebhookOutcome::Ignored,
    };
    let record = json!({ "event": event.event, "outcome": outcome, "archive_key": archive_key, "received_at": now });
    store
        .put(Put {
            table: Table::Main,
            item: Item::from_record(event_pk(event_id), EVENT_SK, &record, Some(payment_expiry(config, now)))?,
            condition: Condition::Always,
        })
        .await?;
    Ok(outcome)
}

fn adjustment_outcome(outcome: CreditOutcome) -> WebhookOutcome {
    match outcome {
        CreditOutcome::Mismatch => WebhookOutcome::Review,
        CreditOutcome::Deferred => WebhookOutcome::Deferred,
        CreditOutcome::Credited | CreditOutcome::AlreadyCredited => WebhookOutcome::Processed,
    }
}

async fn credit_from_event(ports: &Ports, payment: &Payment) -> ApiResult<WebhookOutcome> {
    let store = ports.store();
    let clock = ports.clock();
    let topup = match payment.order_id.as_deref() {
        Some(order_id) => store.topup_for_order(order_id).await?,
        None => None,
    };
    let Some(topup) = topup else {
        record_review(
            ports,
            clock.now(),
            json!({ "reason": "captured payment for an order we do not know", "payment_id": payment.id, "order_id": payment.order_id, "amount_paise": payment.amount }),)
        .await?;
        return Ok(WebhookOutcome::Review);
    };
    Ok(match credit_payment(ports, &topup, payment, CreditSource::Webhook).await? {
        CreditOutcome::Mismatch => WebhookOutcome::Review,
        _ => WebhookOutcome::Processed,
    })
}
