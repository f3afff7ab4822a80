//! A closed account's money goes back to the payments it came from, through Razorpay's refund API, while
//! Razorpay can still refund them; only what it cannot is paid out by bank, and only once no card network
//! can charge the payment back any more. So a chargeback that comes after the money went back finds nothing
//! left to take: refunds and lost disputes count down one `refundable_paise` per payment.
//!
//! The rules, from Razorpay's documentation:
//! - A payment more than six months old cannot be refunded ("Refund is not supported by the bank because
//!   the payment is more than 6 months old"): [`REFUND_WINDOW`], counted from the credit (never earlier than
//!   the capture, so at worst Razorpay refuses and the money goes to the bank payout).
//! - The card networks let a cardholder dispute a payment for 120 days (Visa, Mastercard): [`DISPUTE_WINDOW`].
//!   A bank payout takes what it pays off the payments' refundable count, and is allowed only once every
//!   payment with money left in it is past that window (`closure::record_payout`).
//! - A refund request carries `X-Refund-Idempotency`, so a request whose answer was lost is made again with
//!   the same key and gets the same refund; the smallest refund is ₹1.
//!
//! Items: `USER#<id>` / `CLOSUREREFUND#<id>`, one per refund we asked for (`initiated` before the call,
//! `pending` once Razorpay answered, then `processed` or `failed`); `USER#<id>` / `PAYMENT#<payment id>`,
//! every payment credited to the account; `REFUNDS#DUE` / `<user id>`, the accounts whose refund request
//! may still go back to its payments (written, with a fresh version, whenever money joins a request and
//! whenever a refund is recorded; deleted, at the version read, when nothing more can); and on the refund
//! request, `refunding`: what is asked for and not processed yet.
//!
//! Submodules: `job` (the scheduled job), `processed` (a processed refund applied, from the job or the
//! webhook).

use crate::ports::Ports;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::adjustments::{refundable, take_back};
use super::closure::{RefundRequest, refund_request};
use super::payment_expiry;
use super::topups::{CREDIT_SK, TopupStatus, TopupStore};
use crate::accounts::user_pk;
use crate::error::ApiResult;
use crate::money::UNITS_PER_PAISA;
use crate::store::schema::{self, payment_pk, prefix};
use crate::store::{Condition, Item, ItemStore, Put, StoreResult, Table, Update, WriteOp};

mod job;
mod processed;

pub use job::{ClosureRefundReport, refund_closed_accounts};
pub(super) use processed::processed_by_webhook;

/// Razorpay refunds a payment up to six months after it.
pub const REFUND_WINDOW: Duration = Duration::days(180);
/// Visa and Mastercard let a cardholder dispute a payment for 120 days.
pub const DISPUTE_WINDOW: Duration = Duration::days(120);
/// Razorpay's smallest refund: ₹1.
const MIN_REFUND_PAISE: i64 = 100;
/// A refund still not processed this long after we asked is recorded for a human (once).
const STALE_AFTER: Duration = Duration::days(10);

/// What happened to a refund we asked Razorpay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// Recorded, and the request sent (or about to be): its answer may have been lost.
    Initiated,
    /// Razorpay took it and is sending the money.
    Pending,
    Processed,
    /// Razorpay refused it or could not send it: the money is owed again, for the bank payout.
    Failed,
}

/// One refund of a closed account's money to one of its payments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosureRefund {
    pub id: String,
    pub user_id: String,
    pub payment_id: String,
    /// The credit this refund gives back, paise (what the refund request and the payment's refundable count
    /// move by).
    pub amount_paise: i64,
    /// The money asked of Razorpay: the credit with the GST it was charged with (`gst::tax::paid_share`).
    /// Absent on refunds of payments without GST, and on those recorded before: then `amount_paise`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub money_paise: Option<i64>,
    pub state: RefundState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// Why Razorpay refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Refused for a reason that will not change (the payment too old, fully refunded): the payment is not
    /// asked again. Any other refusal (Razorpay's balance low, say) is asked again by a new refund.
    #[serde(default)]
    pub final_refusal: bool,
    /// Recorded for a human once, when it stayed unprocessed past [`STALE_AFTER`].
    #[serde(default)]
    pub stale_reported: bool,
    pub created_at: DateTime<Utc>,
}

impl ClosureRefund {
    fn units(&self) -> i64 {
        self.amount_paise.saturating_mul(UNITS_PER_PAISA)
    }

    /// What Razorpay is asked to send back, paise.
    pub fn money(&self) -> i64 {
        self.money_paise.unwrap_or(self.amount_paise)
    }

    fn key(&self) -> (String, String) {
        (user_pk(&self.user_id), schema::prefixed(prefix::CLOSURE_REFUND, &self.id))
    }

    /// An update of this record, still in the state it was read in.
    fn update(&self) -> Update {
        let (pk, sk) = self.key();
        Update::new(Table::Main, pk, sk).when(Condition::AttrEquals("state".into(), json!(self.state)))
    }

    fn under_way(&self) -> bool {
        matches!(self.state, RefundState::Initiated | RefundState::Pending)
    }
}

/// A payment of the account, as its credit guard records it.
#[derive(Debug, Clone)]
pub struct AccountPayment {
    pub payment_id: String,
    /// What refunds and lost disputes may still take back, paise.
    pub refundable_paise: i64,
    pub credited_at: DateTime<Utc>,
    guard: Item,
}

impl AccountPayment {
    /// The money that gives back `credit` paise of this payment's credit.
    pub fn money_for(&self, credit: i64) -> i64 {
        crate::wallet::adjustments::money_for(&self.guard, credit)
    }
}

impl AccountPayment {
    /// Whether Razorpay may still refund it at `now`.
    pub fn refundable_by_razorpay(&self, now: DateTime<Utc>) -> bool {
        now - self.credited_at < REFUND_WINDOW
    }

    /// Until when a card network may still charge it back.
    pub fn disputable_until(&self) -> DateTime<Utc> {
        self.credited_at + DISPUTE_WINDOW
    }

    /// Takes `paise` off what it may still give back, in the transaction that gives it back elsewhere.
    pub(super) fn take(&self, paise: i64) -> WriteOp {
        take_back(&self.guard, paise, self.money_for(paise))
    }
}

/// Every credited payment of the account, newest first: the account's payment index (`PAYMENT#`), and the
/// top-ups' last payments for credits made before the index existed.
pub async fn account_payments<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> ApiResult<Vec<AccountPayment>> {
    let mut ids: Vec<String> = Vec::new();
    for index in crate::store::user_items(store, user_id, prefix::PAYMENT_INDEX).await? {
        if let Some(id) = index.attrs.get("payment_id").and_then(Value::as_str) {
            ids.push(id.to_owned());
        }
    }
    for index in crate::store::user_items(store, user_id, prefix::TOPUP).await? {
        let Some(topup_id) = index.attrs.get("topup_id").and_then(Value::as_str) else { continue };
        let Some(topup) = store.topup(topup_id).await? else { continue };
        if let Some(id) = topup.payment_id.filter(|_| topup.status == TopupStatus::Paid) {
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    let mut payments = Vec::new();
    for payment_id in ids {
        let Some(guard) = store.get(Table::Main, &payment_pk(&payment_id), CREDIT_SK).await? else { continue };
        if guard.attrs.get("user_id").and_then(Value::as_str) != Some(user_id) {
            continue;
        }
        let credited_at = guard.attrs.get("credited_at").cloned().map(serde_json::from_value::<DateTime<Utc>>);
        let Some(Ok(credited_at)) = credited_at else { continue };
        payments.push(AccountPayment { payment_id, refundable_paise: refundable(&guard), credited_at, guard });
    }
    payments.sort_by_key(|p| std::cmp::Reverse(p.credited_at));
    Ok(payments)
}

/// The account's payments as its data export shows them, newest first: Razorpay's ids, the amounts, when
/// each was credited, and the payer's details Razorpay reported (method, phone, e-mail, VPA).
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> ApiResult<Vec<Value>> {
    let payments = account_payments(store, user_id).await?;
    let field = |guard: &Item, name: &str| guard.attrs.get(name).cloned().unwrap_or(Value::Null);
    Ok(payments
        .iter()
        .map(|p| {
            json!({
                "payment_id": p.payment_id,
                "topup_id": field(&p.guard, "topup_id"),
                "order_id": field(&p.guard, "order_id"),
                "paid_paise": field(&p.guard, super::adjustments::PAID),
                "credited_at": crate::accounts::timestamp(p.credited_at),
                "payer": field(&p.guard, "payer"),
            })
        })
        .collect())
}

/// The index entry a credit writes for its payment (`USER#<id>` / `PAYMENT#<payment id>`).
pub(super) fn payment_index_put(user_id: &str, payment_id: &str, expires_at: i64) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(
            user_pk(user_id),
            schema::prefixed(prefix::PAYMENT_INDEX, payment_id),
            &json!({ "payment_id": payment_id }),
            Some(expires_at),
        )?,
        condition: Condition::Always,
    }))
}

/// Every refund we asked for on the account's behalf.
pub async fn closure_refunds<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Vec<ClosureRefund>> {
    crate::store::user_items(store, user_id, prefix::CLOSURE_REFUND).await?.iter().map(Item::record).collect()
}

/// The payments Razorpay can still refund at `now`: at least ₹1 left in them, within the refund window, and
/// no refund of ours finally refused on them.
pub fn refundable_by_razorpay(
    payments: &[AccountPayment],
    refunds: &[ClosureRefund],
    now: DateTime<Utc>,
) -> Vec<AccountPayment> {
    let refused = |p: &AccountPayment| {
        refunds.iter().any(|r| r.payment_id == p.payment_id && r.state == RefundState::Failed && r.final_refusal)
    };
    payments
        .iter()
        .filter(|p| p.refundable_paise >= MIN_REFUND_PAISE && p.refundable_by_razorpay(now) && !refused(p))
        .cloned()
        .collect()
}

/// Whether the refunds job can still send anything of `request` back through Razorpay.
pub fn razorpay_can_refund(request: &RefundRequest, refundable: &[AccountPayment]) -> bool {
    owed_paise(request) >= MIN_REFUND_PAISE && !refundable.is_empty()
}

/// What the request owes that is not on its way already, whole paise.
fn owed_paise(request: &RefundRequest) -> i64 {
    (request.amount - request.refunding).max(0) / UNITS_PER_PAISA
}

/// The `REFUNDS#DUE` marker, written whenever money joins a refund request or a refund is recorded, each
/// time with a fresh version: the job deletes it only at the version it read, so nothing that happened
/// since it looked is dropped.
pub(super) fn due_put(user_id: &str, expires_at: i64) -> StoreResult<Put> {
    let due = json!({ "user_id": user_id, "version": crate::secrets::random_suffix() });
    Ok(Put {
        table: Table::Main,
        item: Item::from_record(schema::REFUNDS_DUE_PK, user_id, &due, Some(expires_at))?,
        condition: Condition::Always,
    })
}

/// Marks a closed account's refund request due for the refunds job (the closure's follow-up; an operator's
/// payout refused because Razorpay can still refund; safe to repeat).
pub async fn mark_due(ports: &Ports, now: DateTime<Utc>, user_id: &str) -> ApiResult<()> {
    let store = ports.store();
    let config = ports.config();
    let Some(request) = refund_request(store, user_id).await? else { return Ok(()) };
    if request.amount <= 0 {
        return Ok(());
    }
    Ok(store.put(due_put(user_id, payment_expiry(config, now))?).await?)
}

/// The refund request's attribute counting what is asked of Razorpay and not processed yet, units.
pub const REFUNDING: &str = "refunding";

/// The request's amount and what is under way, as read.
pub(super) fn unchanged(request: &RefundRequest) -> Condition {
    let refunding = if request.refunding == 0 {
        Condition::AttrAbsentOrEquals(REFUNDING.into(), json!(0))
    } else {
        Condition::AttrEquals(REFUNDING.into(), json!(request.refunding))
    };
    Condition::All(vec![Condition::AttrEquals("amount".into(), json!(request.amount)), refunding])
}
