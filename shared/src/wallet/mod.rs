//! The prepaid wallet: Razorpay top-ups, exactly-once credits, refunds, the ledger and reconciliation.
//!
//! Items (main table; all but the wallet expire after the payments window, 8 financial years):
//! - `USER#<id>` / `WALLET`: `balance`, `held` and `available` (= balance - held), in wallet units
//!   ([`crate::money`]). Created by the first credit.
//! - `USER#<id>` / `LEDGER#<millis>#<rand>`: one entry per balance change, written in the same transaction
//!   as the change, with the balance after it. The balance always equals the sum of the entries.
//! - `TOPUP#<id>` / `TOPUP`: a top-up and its state (`created` -> `failed` | `expired` | `paid`; `paid` is
//!   final and wins over everything: money received is always credited).
//! - `RZPORDER#<order id>` / `ORDER`: which top-up (and so which user and amount) a Razorpay order belongs to.
//! - `TOPUPS#OPEN` / `<millis>#<id>`: unpaid top-ups, for reconciliation.
//! - `USER#<id>` / `TOPUP#<millis>#<rand>`: the account's top-ups (their ids), for its data export.
//! - `RZPPAYMENT#<payment id>` / `CREDIT`: the exactly-once guard. Written with "must not exist" in the
//!   credit's transaction, so webhook, Checkout verification and reconciliation, in any order, any number of
//!   times, concurrently, credit a payment once.
//! - `RZPREFUND#<refund id>` / `DEBIT`: the same guard for refunds.
//! - `RZPDISPUTE#<dispute id>` / `DISPUTE`: a chargeback's state (`held` -> `released` | `debited`; either
//!   final state may also come first, when Razorpay's events arrive out of order): each event changes the
//!   wallet once, in the transaction that moves the state.
//! - `RZPPAYMENT#<payment id>` / `PENDING#<event>#<id>`: a refund or dispute event for a payment not credited
//!   yet; applied (and deleted) when the credit lands.
//! - `RZPEVENT#<event id>` / `EVENT`: processed webhook events (deduplication) with their archive key.
//! - `PAYMENTREVIEW` / `<millis>#<rand>`: payments that did not match our records, for a human to review.
//! - `REFUNDREQUEST` / `<user id>`: the unspent balance of a closed account, for an operator to refund;
//!   keyed on the account, so any number of concurrent or retried closures request one refund.
//!
//! This module is the only writer of these items (and of the holds on the wallet), one submodule per job:
//! `ledger` (entries and every balance change), `topups` (orders, top-ups, credits), `webhook`,
//! `adjustments` (refunds, disputes), `reconciliation`, `closure` (closed wallets and refund requests),
//! `closure_refunds` and `metering` (inference holds, settlement, budget leases, the stale-hold sweeper).

use crate::error::ErrorCode;
use crate::ports::Ports;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::accounts::{time_sort_key, user_pk};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::money::format_inr;
use crate::retention::Span;
use crate::store::schema;
use crate::store::{
    Condition, Conditional, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, Update, WriteOp,
};

mod adjustments;
mod closure;
pub mod closure_refunds;
mod disputes;
pub mod invoicing;
mod ledger;
pub mod metering;
mod payouts;
mod reconciliation;
mod settings;
mod topup_tax;
mod topups;
mod webhook;

pub use adjustments::{apply_deferred, debit_refund};
pub use closure::{
    RefundRequest, RefundRequestView, after_closure, closure_ops, expire_registry, refund_request, refund_requests,
    sync_closed_wallet,
};
pub use disputes::{
    DisputeState, DisputeView, apply_dispute, disputes, export_for as disputes_export, mark_dispute_handled,
};
pub use ledger::{LedgerEntry, LedgerEntryView, LedgerKind, export_for, page_cursor as ledger_page_cursor};
pub use payouts::{Payout, record_payout};
pub use reconciliation::{ABANDON_UNANSWERED_AFTER, ReconciliationReport, reconcile};
pub use settings::{WalletSettings, change_settings, wallet_view};
pub use topups::{
    CheckoutCallback, CreditOutcome, CreditSource, Topup, TopupStatus, TopupStore, TopupView, create_topup,
    credit_payment, mark_failed, verify_checkout,
};
pub use webhook::{WebhookOutcome, handle_webhook};

use ledger::LEDGER_PREFIX;

pub(crate) const WALLET_SK: &str = schema::sk::WALLET;
/// The wallet attribute that marks a closed account's wallet: it takes no new holds.
const CLOSED: &str = "closed";
/// Registry of every wallet (one item each, sort key = user id), walked by the stale-hold sweeper.
const WALLETS_PK: &str = schema::WALLETS_PK;
const REVIEW_PK: &str = schema::PAYMENT_REVIEWS_PK;

/// The end of the payments retention window for something that happened at `at`.
pub fn payment_expiry(config: &Config, at: DateTime<Utc>) -> i64 {
    config.retention.until(Span::Payments, at)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    /// The low-balance alert threshold the account chose (units); absent: the default, ₹100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_balance_threshold: Option<i64>,
}

/// `GET /v1/wallet`.
#[derive(Debug, Clone, Serialize)]
pub struct WalletView {
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    pub balance_inr: String,
    pub held_inr: String,
    pub available_inr: String,
    pub currency: &'static str,
    /// An e-mail goes out once each time the balance drops below this (`PATCH /v1/wallet` sets it).
    pub low_balance_threshold_paise: i64,
    /// The account's monthly spend limit (IST months), `null` for none (`PATCH /v1/wallet` sets it).
    pub monthly_spend_limit_paise: Option<i64>,
    /// What the account spent this month under its limit (`null` without one: it is not counted).
    pub monthly_spend_paise: Option<i64>,
}

impl From<Wallet> for WalletView {
    fn from(w: Wallet) -> Self {
        Self {
            balance: w.balance,
            held: w.held,
            available: w.available,
            balance_inr: format_inr(w.balance),
            held_inr: format_inr(w.held),
            available_inr: format_inr(w.available),
            currency: "INR",
            low_balance_threshold_paise: w.low_balance_threshold.unwrap_or(metering::DEFAULT_LOW_BALANCE_THRESHOLD)
                / crate::money::UNITS_PER_PAISA,
            monthly_spend_limit_paise: None,
            monthly_spend_paise: None,
        }
    }
}

/// Reads of the wallet and its ledger (and whether an exactly-once guard exists).
#[async_trait]
pub trait WalletStore: Send + Sync {
    async fn wallet(&self, user_id: &str) -> StoreResult<Wallet>;
    async fn ledger(
        &self,
        user_id: &str,
        limit: u32,
        after: Option<String>,
    ) -> StoreResult<(Vec<LedgerEntry>, Option<String>)>;
    async fn is_recorded(&self, pk: &str, sk: &str) -> StoreResult<bool>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> WalletStore for T {
    async fn wallet(&self, user_id: &str) -> StoreResult<Wallet> {
        Ok(self
            .get(Table::Main, &user_pk(user_id), WALLET_SK)
            .await?
            .map(|i| i.record())
            .transpose()?
            .unwrap_or_default())
    }

    async fn ledger(
        &self,
        user_id: &str,
        limit: u32,
        after: Option<String>,
    ) -> StoreResult<(Vec<LedgerEntry>, Option<String>)> {
        let query = Query::new(Table::Main, user_pk(user_id))
            .range(SortKeyRange::Prefix(LEDGER_PREFIX.into()))
            .newest_first()
            .limit(limit)
            .after(after);
        let page = self.query(query).await?;
        let entries = page.items.iter().map(Item::record).collect::<StoreResult<Vec<_>>>()?;
        Ok((entries, page.next))
    }

    async fn is_recorded(&self, pk: &str, sk: &str) -> StoreResult<bool> {
        Ok(self.get(Table::Main, pk, sk).await?.is_some())
    }
}

/// Records a payment that does not match our records, for a human to look at.
async fn record_review(ports: &Ports, at: DateTime<Utc>, details: Value) -> ApiResult<()> {
    let store = ports.store();
    let config = ports.config();
    tracing::error!(alert = crate::alerts::PAYMENT_REVIEW, details = %details, "payment recorded for review");
    let mut record = Map::new();
    record.insert("details".into(), details);
    record.insert("recorded_at".into(), json!(at));
    store
        .put(Put {
            table: Table::Main,
            item: Item::from_record(REVIEW_PK, time_sort_key("", at), &record, Some(payment_expiry(config, at)))?,
            condition: Condition::NotExists,
        })
        .await?;
    Ok(())
}

/// A payment recorded for review (an amount or currency that did not match, more taken back than paid), as
/// operators see it. `id` names it in `POST /v1/admin/payment-reviews/{id}/handled`.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentReviewView {
    pub id: String,
    pub details: Value,
    pub recorded_at: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handled: Option<Value>,
}

fn review_id(sort_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sort_key)
}

fn review_sort_key(id: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id.as_bytes()).ok()?;
    String::from_utf8(bytes).ok().filter(|sk| sk.len() <= 64)
}

fn review_view(item: &Item) -> PaymentReviewView {
    PaymentReviewView {
        id: review_id(&item.sk),
        details: item.attrs.get("details").cloned().unwrap_or(Value::Null),
        recorded_at: item.attrs.get("recorded_at").cloned().unwrap_or(Value::Null),
        handled: item.attrs.get("handled").cloned(),
    }
}

/// `GET /v1/admin/payment-reviews`: payments recorded for review, oldest first, a page at a time.
pub async fn payment_reviews<S: ItemStore + ?Sized>(
    store: &S,
    limit: u32,
    after: Option<String>,
) -> ApiResult<(Vec<PaymentReviewView>, Option<String>)> {
    let page = store.query(Query::new(Table::Main, REVIEW_PK).limit(limit).after(after)).await?;
    Ok((page.items.iter().map(review_view).collect(), page.next))
}

/// What names an account's payments in a review: the account, its top-ups, its payments.
pub struct AccountMoney<'a> {
    pub user_id: &'a str,
    pub topup_ids: &'a [String],
    pub payment_ids: &'a [String],
}

/// The reviews of the account's payments for its data export: those naming the account, one of its top-ups
/// or one of its payments. The reviews are every account's, kept for years: walked whole, as rare exports are.
pub async fn payment_reviews_for(store: &dyn ItemStore, of: AccountMoney<'_>) -> ApiResult<Vec<PaymentReviewView>> {
    let listed = crate::store::all_pages(store, Query::new(Table::Main, REVIEW_PK).limit(100)).await?;
    let names_the_account = |item: &&Item| {
        let field = |name: &str| item.attrs.get("details").and_then(|d| d.get(name)).and_then(Value::as_str);
        field("user_id") == Some(of.user_id)
            || field("topup_id").is_some_and(|id| of.topup_ids.iter().any(|t| t == id))
            || field("payment_id").is_some_and(|id| of.payment_ids.iter().any(|p| p == id))
    };
    Ok(listed.iter().filter(names_the_account).map(review_view).collect())
}

/// `POST /v1/admin/payment-reviews/{id}/handled`: an operator records how a review was settled (once: a
/// second marking is a conflict, the first stands).
pub async fn mark_review_handled(ports: &Ports, id: &str, note: &str, operator: &str) -> ApiResult<PaymentReviewView> {
    let store = ports.store();
    let clock = ports.clock();
    let not_found =
        || ApiError::NotFound { code: ErrorCode::PaymentReviewNotFound, message: format!("no payment review {id}") };
    let sort_key = review_sort_key(id).ok_or_else(not_found)?;
    let already = || ApiError::Conflict {
        code: ErrorCode::PaymentReviewHandled,
        message: "this review was already marked handled".into(),
        param: None,
    };
    let handled = HandledBy { operator, note, at: clock.now() };
    let item = mark_handled(store, REVIEW_PK, &sort_key, handled).await?.or_refuse(not_found, already)?;
    Ok(review_view(&item))
}

/// Who handled an operator's item (a payment review, a dispute), how and when.
pub(crate) struct HandledBy<'a> {
    pub(crate) operator: &'a str,
    pub(crate) note: &'a str,
    pub(crate) at: DateTime<Utc>,
}

/// What marking an item handled found.
pub(crate) enum Marked {
    /// Recorded now: the item as it is.
    Now(Item),
    /// Handled before: the first record stands.
    Already,
    Missing,
}

impl Marked {
    /// The item, or the caller's error for an item handled before or missing.
    pub(crate) fn or_refuse(self, not_found: impl Fn() -> ApiError, already: impl Fn() -> ApiError) -> ApiResult<Item> {
        match self {
            Marked::Now(item) => Ok(item),
            Marked::Already => Err(already()),
            Marked::Missing => Err(not_found()),
        }
    }
}

/// Records once, on the item `(pk, sk)`, how an operator handled it: the first record stands.
pub(crate) async fn mark_handled<S: ItemStore + ?Sized>(
    store: &S,
    pk: &str,
    sk: &str,
    handled: HandledBy<'_>,
) -> ApiResult<Marked> {
    let note = handled.note.trim();
    if note.is_empty() || note.chars().count() > 500 {
        return Err(ApiError::invalid(ErrorCode::InvalidNote, "note", "note (what was done) must be 1-500 characters"));
    }
    let record = json!({ "by": handled.operator, "at": handled.at, "note": note });
    let update = Update::new(Table::Main, pk, sk)
        .set("handled", record)
        // `handled` is an object once set, so this means "not handled yet".
        .when(Condition::AttrAbsentOrEquals("handled".into(), json!(false)));
    Ok(match store.update(update).await.applied()? {
        Some(item) => Marked::Now(item),
        None => match store.get(Table::Main, pk, sk).await? {
            None => Marked::Missing,
            Some(_) => Marked::Already,
        },
    })
}

/// The highest low-balance threshold an account may set: ₹10,00,000 (twice the largest top-up).
pub const MAX_LOW_BALANCE_THRESHOLD_PAISE: i64 = 100_000_000;

/// `PATCH /v1/wallet {low_balance_threshold_paise}`: sets the account's low-balance alert threshold (0 turns
/// the alert off). A wallet that does not exist yet is created empty to hold it.
pub async fn set_low_balance_threshold<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    paise: i64,
) -> ApiResult<Wallet> {
    if !(0..=MAX_LOW_BALANCE_THRESHOLD_PAISE).contains(&paise) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidThreshold,
            "low_balance_threshold_paise",
            format!("low_balance_threshold_paise must be an integer from 0 to {MAX_LOW_BALANCE_THRESHOLD_PAISE}"),
        ));
    }
    let units = paise * crate::money::UNITS_PER_PAISA;
    let update = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .set(metering::LOW_BALANCE_THRESHOLD, json!(units))
        .when(Condition::AttrAbsentOrEquals(CLOSED.into(), json!(false)));
    if store.update(update).await.applied()?.is_none() {
        let empty = Wallet { low_balance_threshold: Some(units), ..Wallet::default() };
        let ops = vec![
            crate::accounts::require_active(user_id),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(user_pk(user_id), WALLET_SK, &empty, None)?,
                condition: Condition::NotExists,
            }),
            // A new wallet joins the registry the stale-hold sweeper walks.
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(WALLETS_PK, user_id, &json!({ "user_id": user_id }), None)?,
                condition: Condition::Always,
            }),
        ];
        if store.transact(ops).await.applied()?.is_none() {
            return Err(ApiError::Conflict {
                code: ErrorCode::WalletChanged,
                message: "the wallet changed meanwhile (or the account is closed); try again".into(),
                param: None,
            });
        }
    }
    Ok(store.wallet(user_id).await?)
}

/// A page of the wallets' registry (every wallet ever opened, closed ones until their records expire): the
/// account ids after `after`, and whether more follow.
pub async fn registered_wallets(
    store: &dyn ItemStore,
    after: Option<String>,
    limit: u32,
) -> StoreResult<(Vec<String>, Option<String>)> {
    let page = store.query(Query::new(Table::Main, WALLETS_PK).limit(limit).after(after)).await?;
    Ok((page.items.into_iter().map(|i| i.sk).collect(), page.next))
}
