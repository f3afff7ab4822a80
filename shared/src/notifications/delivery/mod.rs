//! Delivery of outbox items, exactly once per message as far as a mail service allows.
//!
//! For each outbox item: the delivery record `MAILSENT#<id>` is claimed with a "must not exist" write, the
//! message's links are minted, the message is handed to the [`Mailer`], the record is marked sent (retried
//! on its own: it is what stops a second send) and the outbox item is removed. A redelivered stream record,
//! or a second sender racing the first, finds the claim and sends nothing. Any failure before the mail
//! service took the message gives the claim back, so a retry sends it. A claim left by a sender that died,
//! or that could not record its send, is taken over after [`CLAIM_TIMEOUT`]; only then can a message go out
//! twice. Items waiting over [`REDRIVE_AFTER`] are handed to the mailer again by the jobs
//! ([`redrive_stale`]).

use crate::ports::Ports;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::messages::{self, Recipient};
use super::mime::{self, Envelope};
use super::{MailKind, OutboxMail};
use crate::accounts::{Account, AccountStatus, AccountStore};
use crate::links::{self, EmailLink, ResetLink};
use crate::retention::DELIVERY_RECORD_LIFETIME;
use crate::secrets::random_suffix;
use crate::store::schema::{self, sk};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult, Table, Update,
    WriteOp,
};

mod file_mailer;
mod unsubscribe;

pub use file_mailer::FileMailer;
use unsubscribe::unsubscribe_link;
pub use unsubscribe::{SuppressionReason, suppress, suppressed_until, suppression_of, unsubscribe_account};

/// A claim older than this belongs to a sender that died: it may be taken over.
pub const CLAIM_TIMEOUT: Duration = Duration::minutes(5);

/// A message ready to hand to a mail service.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The outbox message id: the idempotency key.
    pub id: String,
    pub from: String,
    pub to: String,
    pub kind: MailKind,
    /// The whole RFC 5322 message.
    pub raw: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The service will not take this message, ever (a malformed address): retrying cannot help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The service failed or throttled: the message is retried.
    #[error("mail service failed: {0}")]
    Failed(String),
}

/// A mail service: Amazon SES in AWS, `.eml` files under `make run`.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends one message and returns the service's id for it.
    async fn send(&self, message: &Outgoing) -> Result<String, MailError>;
}

/// What became of one outbox item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    /// Sent (or being sent) by an earlier delivery: nothing done now.
    AlreadyDelivered,
    /// The address is on the suppression list.
    Suppressed,
    /// Not sent and never will be: no recipient any more (a closed account), or marketing without consent.
    Dropped,
    /// A concurrent sender holds the claim: its outcome stands.
    InProgress,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeliveryRecord {
    status: String,
    claim: String,
    at: DateTime<Utc>,
    kind: MailKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] MailError),
}

/// Delivers the outbox item with sort key `outbox_sk` (a stream record's key).
pub async fn deliver(
    ports: &Ports,
    mailer: &dyn Mailer,
    now: DateTime<Utc>,
    outbox_sk: &str,
) -> Result<Outcome, DeliveryError> {
    let store = ports.store();
    let Some(item) = store.get(Table::Main, schema::OUTBOX_PK, outbox_sk).await? else {
        // Delivered and deleted already (a redelivered record), or expired.
        return Ok(Outcome::AlreadyDelivered);
    };
    let mail: OutboxMail = item.record()?;
    let claim = random_suffix();
    match claim_delivery(store, &mail, &claim, now).await? {
        Claimed::Ours => {}
        Claimed::Done => {
            forget(store, outbox_sk).await?;
            return Ok(Outcome::AlreadyDelivered);
        }
        Claimed::Busy => return Ok(Outcome::InProgress),
    }
    match attempt(ports, mailer, &mail, now).await {
        Ok((outcome, provider_id)) => {
            let status = match outcome {
                Outcome::Sent => "sent",
                Outcome::Suppressed => "suppressed",
                _ => "dropped",
            };
            let claimed = Claim { mail: &mail, claim: &claim, outbox_sk };
            finish(store, &claimed, status, provider_id).await?;
            Ok(outcome)
        }
        Err(e) => {
            // Give the claim back, so the stream's retry (or the local loop's next pass, or the jobs'
            // redrive) sends it; if even that fails, the claim is taken over once it is stale.
            let release = Delete {
                table: Table::Main,
                pk: schema::mail_sent_pk(&mail.id),
                sk: sk::SENT.into(),
                condition: Condition::AttrEquals("claim".into(), json!(claim)),
            };
            if let Err(release_error) = store.delete(release).await.or_not_needed() {
                tracing::warn!(error = %release_error, message_id = %mail.id, "a delivery claim could not be given back");
            }
            Err(e)
        }
    }
}

/// One claimed delivery: the recipient, the suppression list, then the mail service.
async fn attempt(
    ports: &Ports,
    mailer: &dyn Mailer,
    mail: &OutboxMail,
    now: DateTime<Utc>,
) -> Result<(Outcome, Option<String>), DeliveryError> {
    let store = ports.store();
    let Some(addressee) = recipient(store, mail).await? else { return Ok((Outcome::Dropped, None)) };
    if is_suppressed(store, &addressee.to.email).await? {
        return Ok((Outcome::Suppressed, None));
    }
    match send(ports, mailer, mail, &addressee, now).await {
        Ok(provider_id) => Ok((Outcome::Sent, Some(provider_id))),
        Err(DeliveryError::Mail(MailError::Rejected(reason))) => {
            tracing::warn!(message_id = %mail.id, %reason, "the mail service rejected a message");
            Ok((Outcome::Dropped, None))
        }
        Err(e) => Err(e),
    }
}

enum Claimed {
    Ours,
    Done,
    Busy,
}

async fn claim_delivery<S: ItemStore + ?Sized>(
    store: &S,
    mail: &OutboxMail,
    claim: &str,
    now: DateTime<Utc>,
) -> StoreResult<Claimed> {
    let pk = schema::mail_sent_pk(&mail.id);
    let record =
        DeliveryRecord { status: "sending".into(), claim: claim.into(), at: now, kind: mail.kind, provider_id: None };
    let expires_at = (now + DELIVERY_RECORD_LIFETIME).timestamp();
    let put = Put {
        table: Table::Main,
        item: Item::from_record(&pk, sk::SENT, &record, Some(expires_at))?,
        condition: Condition::NotExists,
    };
    if store.put(put).await.applied()?.is_some() {
        return Ok(Claimed::Ours);
    }
    let Some(existing) = store.get(Table::Main, &pk, sk::SENT).await? else { return Ok(Claimed::Busy) };
    let existing: DeliveryRecord = existing.record()?;
    if existing.status != "sending" {
        return Ok(Claimed::Done);
    }
    if now - existing.at < CLAIM_TIMEOUT {
        return Ok(Claimed::Busy);
    }
    // The sender that claimed it died: take the claim over (compare-and-swap on the old claim).
    let take = Update::new(Table::Main, &pk, sk::SENT)
        .set("claim", json!(claim))
        .set("at", json!(now))
        .when(Condition::AttrEquals("claim".into(), json!(existing.claim)));
    Ok(if store.update(take).await.applied()?.is_some() { Claimed::Ours } else { Claimed::Busy })
}

/// A delivery this sender claimed: the message, the claim's token, and the outbox item it came from.
struct Claim<'a> {
    mail: &'a OutboxMail,
    claim: &'a str,
    outbox_sk: &'a str,
}

/// Records the delivery's outcome, then removes the outbox item. The record is what stops a second send,
/// so it is written on its own and retried; the item's removal may fail harmlessly (a later delivery finds
/// the record and only removes the item).
async fn finish<S: ItemStore + ?Sized>(
    store: &S,
    claimed: &Claim<'_>,
    status: &str,
    provider_id: Option<String>,
) -> StoreResult<()> {
    let Claim { mail, claim, outbox_sk } = *claimed;
    let mut mark = Update::new(Table::Main, schema::mail_sent_pk(&mail.id), sk::SENT)
        .set("status", json!(status))
        .when(Condition::AttrEquals("claim".into(), json!(claim)));
    if let Some(id) = provider_id {
        mark = mark.set("provider_id", json!(id));
    }
    let mut recorded = store.update(mark.clone()).await.or_not_needed();
    for wait_ms in [50, 200, 1000] {
        if recorded.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        recorded = store.update(mark.clone()).await.or_not_needed();
    }
    if let Err(e) = recorded {
        // The claim stays: nobody takes it over for CLAIM_TIMEOUT; only then could the message go again.
        tracing::error!(error = %e, message_id = %mail.id, "a sent message's delivery record could not be written");
        return Err(e);
    }
    if let Err(e) = forget(store, outbox_sk).await {
        tracing::warn!(error = %e, message_id = %mail.id, "a delivered outbox item stays until its next delivery");
    }
    Ok(())
}

async fn forget<S: ItemStore + ?Sized>(store: &S, outbox_sk: &str) -> StoreResult<()> {
    let remove =
        Delete { table: Table::Main, pk: schema::OUTBOX_PK.into(), sk: outbox_sk.into(), condition: Condition::Always };
    store.delete(remove).await
}

/// Who gets the message now, and their account: `None` when nobody should (the account is gone or closed
/// and the message is not one that outlives it; marketing without consent).
/// Who a message goes to: the address and name it is written for, and their account.
struct Addressee {
    to: Recipient,
    account: Account,
}

async fn recipient<S: ItemStore + ?Sized>(store: &S, mail: &OutboxMail) -> StoreResult<Option<Addressee>> {
    let Some(account) = store.account(&mail.user_id).await? else { return Ok(None) };
    let open = account.status == AccountStatus::Active;
    if !open && !mail.kind.outlives_the_account() {
        return Ok(None);
    }
    if mail.kind.is_marketing() && !(open && account.marketing_consent) {
        return Ok(None);
    }
    let email = mail.to.clone().unwrap_or_else(|| account.email.clone());
    Ok(Some(Addressee { to: Recipient { email, full_name: account.full_name.clone() }, account }))
}

async fn is_suppressed<S: ItemStore + ?Sized>(store: &S, email: &str) -> StoreResult<bool> {
    Ok(store.get(Table::Main, &schema::suppressed_pk(&email.to_lowercase()), sk::SUPPRESSED).await?.is_some())
}

async fn send(
    ports: &Ports,
    mailer: &dyn Mailer,
    mail: &OutboxMail,
    addressee: &Addressee,
    now: DateTime<Utc>,
) -> Result<String, DeliveryError> {
    let (to, account) = (&addressee.to, &addressee.account);
    let store = ports.store();
    let config = ports.config();
    let mut mail = mail.clone();
    // Links are minted now, for the address and password the account has now: no raw token is stored.
    let token = match mail.kind {
        MailKind::VerifyEmail | MailKind::ConfirmEmailChange => {
            let link = EmailLink { user_id: account.id.clone(), email: to.email.clone() };
            Some(links::mint_email_link(store, &link, now).await?)
        }
        MailKind::PasswordReset => {
            let link = ResetLink {
                user_id: account.id.clone(),
                email: account.email.clone(),
                password_hash: account.password_hash.clone(),
            };
            Some(links::mint_reset_link(store, &link, now).await?)
        }
        // An export asked for outside the dashboard: its link goes to the account's own address only.
        MailKind::PrivacyRequestCompleted if mail.params.contains_key("export_id") && mail.to.is_none() => {
            let link = links::ExportLink { user_id: account.id.clone(), export_id: mail.text("export_id") };
            Some(links::mint_export_link(store, &link, mail.number("link_expires_at")).await?)
        }
        _ => None,
    };
    if let Some(token) = token {
        mail.params.insert("token".into(), json!(token));
    }
    let unsubscribe_url = match mail.kind.is_marketing() {
        true => Some(unsubscribe_link(ports, &mail.user_id, &mail.id, now).await?),
        false => None,
    };
    let content = messages::render(&mail, to, config, unsubscribe_url.as_deref());
    let envelope = Envelope {
        message_id: &mail.id,
        from: &config.mail_from,
        to: &to.email,
        date: now,
        unsubscribe_url: unsubscribe_url.as_deref(),
        kind: kind_name(mail.kind),
    };
    let outgoing = Outgoing {
        id: mail.id.clone(),
        from: config.mail_from.clone(),
        to: to.email.clone(),
        kind: mail.kind,
        raw: mime::build(&envelope, &content),
    };
    Ok(mailer.send(&outgoing).await?)
}

/// The snake_case name of a kind (the `X-Inferex-Kind` header).
pub fn kind_name(kind: MailKind) -> &'static str {
    match kind {
        MailKind::VerifyEmail => "verify_email",
        MailKind::ConfirmEmailChange => "confirm_email_change",
        MailKind::EmailChanged => "email_changed",
        MailKind::PasswordReset => "password_reset",
        MailKind::PasswordChanged => "password_changed",
        MailKind::SignupAttempt => "signup_attempt",
        MailKind::NewSignIn => "new_sign_in",
        MailKind::PaymentReceipt => "payment_receipt",
        MailKind::RefundNotice => "refund_notice",
        MailKind::DisputeNotice => "dispute_notice",
        MailKind::LowBalance => "low_balance",
        MailKind::SpendLimitAlert => "spend_limit_alert",
        MailKind::KycApproved => "kyc_approved",
        MailKind::KycRejected => "kyc_rejected",
        MailKind::ApiKeyCreated => "api_key_created",
        MailKind::PolicyUpdate => "policy_update",
        MailKind::AccountClosed => "account_closed",
        MailKind::PrivacyRequestReceived => "privacy_request_received",
        MailKind::PrivacyRequestCompleted => "privacy_request_completed",
        MailKind::SecurityNotice => "security_notice",
        MailKind::NomineeChanged => "nominee_changed",
        MailKind::ProductNews => "product_news",
    }
}

/// The outbox items a DynamoDB stream event names: (sequence number, sort key) of each `INSERT` of an
/// `OUTBOX` item (the mapping's filter lets only those through; anything else is ignored here too).
pub fn outbox_records(event: &serde_json::Value) -> Vec<(String, String)> {
    crate::store::stream_inserts(event)
        .into_iter()
        .filter(|key| key.pk == schema::OUTBOX_PK)
        .map(|key| (key.sequence, key.sk))
        .collect()
}

/// Delivers every outbox item waiting, oldest first, at most `limit` (the local server's loop; in AWS the
/// stream does this). Returns how many were handled; a failed one stays for the next pass.
pub async fn deliver_waiting(ports: &Ports, mailer: &dyn Mailer, now: DateTime<Utc>, limit: u32) -> StoreResult<usize> {
    let store = ports.store();
    let page = store.query(Query::new(Table::Main, schema::OUTBOX_PK).limit(limit)).await?;
    let mut handled = 0;
    for item in page.items {
        match deliver(ports, mailer, now, &item.sk).await {
            Ok(_) => handled += 1,
            Err(DeliveryError::Store(e)) => return Err(e),
            Err(DeliveryError::Mail(e)) => tracing::warn!(error = %e, sk = %item.sk, "delivery failed; will retry"),
        }
    }
    Ok(handled)
}

/// Messages waiting this long are handed to the mailer again by the jobs: a sender died mid-send, every
/// retry of a stream record failed, or the item was written before the stream's mapping existed.
pub const REDRIVE_AFTER: Duration = Duration::minutes(10);

/// Re-inserts outbox items older than [`REDRIVE_AFTER`] under a new sort key (same message id, same
/// expiry), so the stream delivers them again; the delivery record keeps anything already sent from going
/// twice. Returns how many were redriven.
pub async fn redrive_stale<S: ItemStore + ?Sized>(
    store: &S,
    now: DateTime<Utc>,
    budget: std::time::Duration,
) -> StoreResult<usize> {
    let started = std::time::Instant::now();
    let cutoff = format!("{:013}", (now - REDRIVE_AFTER).timestamp_millis().max(0));
    // Sort keys start with the zero-padded time; DynamoDB takes no empty bound.
    let range = SortKeyRange::Between("0".into(), cutoff);
    let stale = Query::new(Table::Main, schema::OUTBOX_PK).range(range).limit(100);
    let mut redriven = 0;
    for (n, item) in store.query(stale).await?.items.into_iter().enumerate() {
        // Every run hands back at least one message, however slow the store was to list them.
        if n > 0 && started.elapsed() > budget {
            break;
        }
        let again = Item { sk: schema::time_sort_key("", now), ..item.clone() };
        let ops = vec![
            WriteOp::Delete(Delete { table: Table::Main, pk: item.pk, sk: item.sk, condition: Condition::Exists }),
            WriteOp::Put(Put { table: Table::Main, item: again, condition: Condition::NotExists }),
        ];
        // Not applied: delivered (and deleted) meanwhile.
        if store.transact(ops).await.applied()?.is_some() {
            redriven += 1;
        }
    }
    Ok(redriven)
}
