//! The prepaid wallet: Razorpay top-ups, exactly-once credits, refunds, the ledger and reconciliation.
//!
//! Items (main table; all but the wallet expire after the payments window, 7 years):
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
//! `adjustments` (refunds, disputes), `reconciliation`, `closure` (closed wallets and refund requests) and
//! `holds` (inference holds and their settlement).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::accounts::{time_sort_key, user_pk};
use crate::config::Config;
use crate::error::ApiResult;
use crate::money::format_inr;
use crate::retention::Span;
use crate::store::schema;
use crate::store::{Condition, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table};

mod adjustments;
mod closure;
pub mod holds;
mod ledger;
mod reconciliation;
mod topups;
mod webhook;

pub use adjustments::{DisputeState, apply_deferred, apply_dispute, debit_refund};
pub use closure::{RefundRequest, closure_ops, expire_registry, refund_request, sync_closed_wallet};
pub use ledger::{LedgerEntry, LedgerEntryView, LedgerKind};
pub use reconciliation::{ABANDON_UNANSWERED_AFTER, ReconciliationReport, reconcile};
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
async fn record_review<S: ItemStore + ?Sized>(
    store: &S,
    config: &Config,
    at: DateTime<Utc>,
    details: Value,
) -> ApiResult<()> {
    tracing::warn!(details = %details, "payment recorded for review");
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
