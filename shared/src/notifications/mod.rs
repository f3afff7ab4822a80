//! Notifications: every e-mail the product sends, through a transactional outbox.
//!
//! The change that causes a message writes the message's outbox item in its own transaction ([`enqueue`]),
//! so nothing is sent for a change that did not commit and nothing committed is lost. Delivery happens
//! later, once per message ([`delivery`]): in AWS the mailer function reads new outbox items from the main
//! table's stream and sends them with Amazon SES; under `make run` a task of the local server delivers them
//! to `.eml` files. The message is rendered at delivery ([`messages`]), from the item's parameters and the
//! account as it is then (a marketing message whose consent was withdrawn meanwhile is not sent).
//!
//! Items (main table):
//! - `OUTBOX` / `<millis>#<rand>`: a message waiting to be sent; deleted once sent (it expires after
//!   [`crate::retention::OUTBOX_LIFETIME`] if it never is).
//! - `MAILSENT#<message id>` / `SENT`: the delivery's idempotency record: claimed before the message is
//!   handed to the mail service, marked sent after, so a redelivered stream batch never sends twice.
//! - `SUPPRESS#<email>` / `SUPPRESSED`: an address that bounced permanently or complained (fed by SES's
//!   notifications); nothing is sent to it.
//! - `UNSUB#<sha256(token)>` / `TOKEN`: a marketing message's one-click unsubscribe link (RFC 8058).
//! - `NOTICE#<what>` / `<user id>`: the record that an account got a policy notice or a campaign.

pub mod campaigns;
pub mod delivery;
pub mod messages;
pub mod mime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::retention::OUTBOX_LIFETIME;
use crate::secrets::random_suffix;
use crate::store::schema::{self, time_sort_key};
use crate::store::{Condition, Item, Put, StoreResult, Table, WriteOp};

/// Every message the product sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    VerifyEmail,
    ConfirmEmailChange,
    EmailChanged,
    PasswordReset,
    PasswordChanged,
    /// Someone tried to sign up with an address that already has an account.
    SignupAttempt,
    NewSignIn,
    PaymentReceipt,
    RefundNotice,
    DisputeNotice,
    LowBalance,
    SpendLimitAlert,
    KycApproved,
    KycRejected,
    ApiKeyCreated,
    PolicyUpdate,
    AccountClosed,
    PrivacyRequestReceived,
    PrivacyRequestCompleted,
    /// The account's nominee was named, changed or removed.
    NomineeChanged,
    /// A breach that touched the account (DPDP Rules, rule 7(1)): account mail, whatever the marketing choice.
    SecurityNotice,
    /// Product news: the one kind of marketing, sent only with `marketing_consent`.
    ProductNews,
}

impl MailKind {
    /// Marketing needs consent at delivery and carries a one-click unsubscribe; everything else is an
    /// account or billing notice.
    pub fn is_marketing(self) -> bool {
        matches!(self, MailKind::ProductNews)
    }

    /// Notices that still go out after the account is closed (to the address it had).
    pub fn outlives_the_account(self) -> bool {
        matches!(
            self,
            MailKind::AccountClosed
                | MailKind::RefundNotice
                | MailKind::PrivacyRequestReceived
                | MailKind::PrivacyRequestCompleted
                | MailKind::DisputeNotice
                | MailKind::SecurityNotice
        )
    }
}

/// A message waiting in the outbox: what to say (kind and parameters) and to whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxMail {
    /// `msg_<random>`: the delivery's idempotency key (SES sees it as the Message-ID).
    pub id: String,
    pub kind: MailKind,
    pub user_id: String,
    /// Another address than the account's current one: an address being confirmed, the old address told of a
    /// change. Absent: the account's address at delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default)]
    pub params: Map<String, Value>,
    pub created_at: DateTime<Utc>,
}

impl OutboxMail {
    pub fn new(kind: MailKind, user_id: &str, at: DateTime<Utc>) -> Self {
        Self {
            id: format!("msg_{}", random_suffix()),
            kind,
            user_id: user_id.to_owned(),
            to: None,
            params: Map::new(),
            created_at: at,
        }
    }

    pub fn to(mut self, address: &str) -> Self {
        self.to = Some(address.to_owned());
        self
    }

    pub fn param(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    pub(crate) fn text(&self, name: &str) -> String {
        match self.params.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    /// A list parameter's lines (a single string is one line).
    pub(crate) fn lines(&self, name: &str) -> Vec<String> {
        match self.params.get(name) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    pub(crate) fn number(&self, name: &str) -> i64 {
        self.params.get(name).and_then(Value::as_i64).unwrap_or(0)
    }
}

/// The outbox item of `mail`, to write in the transaction of the change it tells of.
pub fn enqueue(mail: &OutboxMail) -> StoreResult<WriteOp> {
    let expires_at = (mail.created_at + OUTBOX_LIFETIME).timestamp();
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(schema::OUTBOX_PK, time_sort_key("", mail.created_at), mail, Some(expires_at))?,
        condition: Condition::NotExists,
    }))
}
