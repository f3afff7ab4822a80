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

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::accounts::{time_sort_key, timestamp, user_pk};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::money::{format_inr, paise_to_units};
use crate::razorpay::{NewOrder, Payment, RazorpayClient};
use crate::retention::Span;
use crate::secrets::random_suffix;
use crate::store::schema::{self, dispute_pk, event_pk, order_pk, payment_pk, refund_pk, topup_pk};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult, Table, Update,
    WriteOp,
};

pub(crate) const WALLET_SK: &str = schema::sk::WALLET;
/// The wallet attribute that marks a closed account's wallet: it takes no new holds.
pub(crate) const CLOSED: &str = "closed";
/// Registry of every wallet (one item each, sort key = user id), walked by the stale-hold sweeper.
pub(crate) const WALLETS_PK: &str = schema::WALLETS_PK;
const TOPUP_SK: &str = schema::sk::TOPUP;
const OPEN_TOPUPS_PK: &str = schema::OPEN_TOPUPS_PK;
const REVIEW_PK: &str = schema::PAYMENT_REVIEWS_PK;
const REFUND_REQUESTS_PK: &str = schema::REFUND_REQUESTS_PK;
const ORDER_SK: &str = schema::sk::ORDER;
const CREDIT_SK: &str = schema::sk::CREDIT;
const DEBIT_SK: &str = schema::sk::DEBIT;
const EVENT_SK: &str = schema::sk::EVENT;
const LEDGER_PREFIX: &str = schema::prefix::LEDGER;
/// A top-up whose order Razorpay has not answered for this long is expired without an answer.
pub const ABANDON_UNANSWERED_AFTER: Duration = Duration::days(7);
/// How often a credit is retried when a concurrent balance change got in first.
const CREDIT_ATTEMPTS: usize = 20;

fn open_sk(topup: &Topup) -> String {
    format!("{:013}#{}", topup.created_at.timestamp_millis().max(0), topup.id)
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Topup,
    Refund,
    Usage,
    /// The unspent balance of a closing account moved to its refund request.
    ClosureRefund,
    /// A chargeback the customer's bank won: the disputed money left through Razorpay.
    Dispute,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: String,
    pub kind: LedgerKind,
    /// Signed, in wallet units.
    pub amount: i64,
    pub balance_after: i64,
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

/// How `GET /v1/wallet/transactions` shows an entry.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntryView {
    pub id: String,
    pub kind: LedgerKind,
    pub amount: i64,
    pub amount_inr: String,
    pub balance_after: i64,
    pub reference: String,
    pub created_at: String,
}

impl From<&LedgerEntry> for LedgerEntryView {
    fn from(e: &LedgerEntry) -> Self {
        Self {
            id: e.id.clone(),
            kind: e.kind,
            amount: e.amount,
            amount_inr: format_inr(e.amount),
            balance_after: e.balance_after,
            reference: e.reference.clone(),
            created_at: timestamp(e.created_at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopupStatus {
    Created,
    Failed,
    Expired,
    Paid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Topup {
    pub id: String,
    pub user_id: String,
    pub razorpay_order_id: String,
    pub amount_paise: i64,
    pub currency: String,
    pub status: TopupStatus,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
}

/// How the API shows a top-up.
#[derive(Debug, Clone, Serialize)]
pub struct TopupView {
    pub id: String,
    pub razorpay_order_id: String,
    pub amount_paise: i64,
    pub currency: String,
    pub razorpay_key_id: String,
    pub status: TopupStatus,
    pub created_at: String,
    pub payment_id: Option<String>,
}

impl TopupView {
    pub fn new(topup: &Topup, key_id: &str) -> Self {
        Self {
            id: topup.id.clone(),
            razorpay_order_id: topup.razorpay_order_id.clone(),
            amount_paise: topup.amount_paise,
            currency: topup.currency.clone(),
            razorpay_key_id: key_id.to_owned(),
            status: topup.status,
            created_at: timestamp(topup.created_at),
            payment_id: topup.payment_id.clone(),
        }
    }
}

/// Who may have seen a payment first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditSource {
    Webhook,
    Verify,
    Reconciliation,
}

/// What happened to a credit attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOutcome {
    Credited,
    AlreadyCredited,
    /// The payment does not match the stored order (amount, currency or order); recorded for review.
    Mismatch,
    /// A refund or dispute of a payment not credited yet: kept, and applied when the credit lands.
    Deferred,
}

#[async_trait]
pub trait WalletStore: Send + Sync {
    async fn wallet(&self, user_id: &str) -> StoreResult<Wallet>;
    async fn ledger(
        &self,
        user_id: &str,
        limit: u32,
        after: Option<String>,
    ) -> StoreResult<(Vec<LedgerEntry>, Option<String>)>;
    async fn topup(&self, topup_id: &str) -> StoreResult<Option<Topup>>;
    async fn topup_for_order(&self, order_id: &str) -> StoreResult<Option<Topup>>;
    async fn save_new_topup(&self, topup: &Topup, expires_at: i64) -> StoreResult<()>;
    async fn open_topups(&self, created_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Topup>>;
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

    async fn topup(&self, topup_id: &str) -> StoreResult<Option<Topup>> {
        self.get(Table::Main, &topup_pk(topup_id), TOPUP_SK).await?.map(|i| i.record()).transpose()
    }

    async fn topup_for_order(&self, order_id: &str) -> StoreResult<Option<Topup>> {
        let Some(index) = self.get(Table::Main, &order_pk(order_id), ORDER_SK).await? else { return Ok(None) };
        match index.attrs.get("topup_id").and_then(Value::as_str) {
            Some(topup_id) => self.topup(topup_id).await,
            None => Err(StoreError::Malformed(format!("order index {order_id} has no topup_id"))),
        }
    }

    async fn save_new_topup(&self, topup: &Topup, expires_at: i64) -> StoreResult<()> {
        let index = json!({ "topup_id": topup.id, "user_id": topup.user_id });
        self.transact(vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(topup_pk(&topup.id), TOPUP_SK, topup, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(order_pk(&topup.razorpay_order_id), ORDER_SK, &index, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    OPEN_TOPUPS_PK,
                    open_sk(topup),
                    &json!({ "topup_id": topup.id }),
                    Some(expires_at),
                )?,
                condition: Condition::NotExists,
            }),
            // The account's own list of its top-ups (its data export reads it).
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    user_pk(&topup.user_id),
                    time_sort_key(schema::prefix::TOPUP, topup.created_at),
                    &json!({ "topup_id": topup.id }),
                    Some(expires_at),
                )?,
                condition: Condition::NotExists,
            }),
        ])
        .await
    }

    async fn open_topups(&self, created_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Topup>> {
        // Sort keys are `<millis>#<id>`; `~` sorts after every id character, so the bound is inclusive.
        let upper = format!("{:013}#~", created_before.timestamp_millis().max(0));
        let range = SortKeyRange::Between("0".into(), upper);
        let page = self.query(Query::new(Table::Main, OPEN_TOPUPS_PK).range(range).limit(limit)).await?;
        let mut topups = Vec::new();
        for item in page.items {
            if let Some(id) = item.attrs.get("topup_id").and_then(Value::as_str)
                && let Some(topup) = self.topup(id).await?
            {
                topups.push(topup);
            }
        }
        Ok(topups)
    }

    async fn is_recorded(&self, pk: &str, sk: &str) -> StoreResult<bool> {
        Ok(self.get(Table::Main, pk, sk).await?.is_some())
    }
}

/// One balance change: what, how much (signed units), why, when, until when it is kept, and the item
/// whose existence means it was already applied.
struct BalanceChange<'a> {
    user_id: &'a str,
    kind: LedgerKind,
    amount: i64,
    reference: &'a str,
    at: DateTime<Utc>,
    expires_at: i64,
    guard: (&'a str, &'a str),
}

/// Applies `amount` (signed units) to the wallet and writes its ledger entry, together with `extra`
/// operations (the exactly-once guard, the top-up's state), in one transaction. Retries when another
/// balance change got in between the read and the write. Returns false when a guard in `extra` failed
/// because the change was already made.
async fn apply_balance_change<S: ItemStore + ?Sized>(
    store: &S,
    change: BalanceChange<'_>,
    extra: impl Fn() -> StoreResult<Vec<WriteOp>>,
) -> ApiResult<bool> {
    let BalanceChange { user_id, kind, amount, reference, at, expires_at, guard } = change;
    for _ in 0..CREDIT_ATTEMPTS {
        if store.is_recorded(guard.0, guard.1).await? {
            return Ok(false);
        }
        let current = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?;
        let wallet: Wallet = current.as_ref().map(Item::record).transpose()?.unwrap_or_default();
        let balance_after = wallet
            .balance
            .checked_add(amount)
            .ok_or_else(|| ApiError::Internal("wallet balance would overflow".into()))?;
        let wallet_op = match current {
            None => WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    user_pk(user_id),
                    WALLET_SK,
                    &Wallet { balance: balance_after, held: 0, available: balance_after },
                    None,
                )?,
                condition: Condition::NotExists,
            }),
            Some(_) => WriteOp::Update(
                Update::new(Table::Main, user_pk(user_id), WALLET_SK)
                    .add("balance", amount)
                    .add("available", amount)
                    .when(Condition::AttrEquals("balance".into(), json!(wallet.balance))),
            ),
        };
        let entry = LedgerEntry {
            id: format!("txn_{}", random_suffix()),
            kind,
            amount,
            balance_after,
            reference: reference.to_owned(),
            created_at: at,
        };
        let mut ops = extra()?;
        if matches!(wallet_op, WriteOp::Put(_)) {
            // A new wallet joins the registry the stale-hold sweeper walks.
            ops.push(WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(WALLETS_PK, user_id, &json!({ "user_id": user_id }), None)?,
                condition: Condition::Always,
            }));
        }
        ops.push(wallet_op);
        ops.push(WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(user_pk(user_id), time_sort_key(LEDGER_PREFIX, at), &entry, Some(expires_at))?,
            condition: Condition::NotExists,
        }));
        // Not applied: the guard now exists (someone else credited) or the balance moved; look again.
        if store.transact(ops).await.applied()?.is_some() {
            return Ok(true);
        }
    }
    Err(ApiError::Unavailable("the wallet is too busy to apply the change; it will be retried".into()))
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

/// Credits a captured payment to the owner of the top-up it paid, exactly once per payment id.
/// The amount credited is the stored order's; a payment whose amount, currency or order differ is not
/// credited but recorded for review.
pub async fn credit_payment<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    topup: &Topup,
    payment: &Payment,
    source: CreditSource,
) -> ApiResult<CreditOutcome> {
    let now = clock.now();
    let matches = payment.amount == topup.amount_paise
        && payment.currency == topup.currency
        && payment.order_id.as_deref() == Some(topup.razorpay_order_id.as_str());
    if !matches {
        let details = json!({
            "reason": "payment does not match the stored order",
            "source": source,
            "topup_id": topup.id,
            "order_id": topup.razorpay_order_id,
            "expected_amount_paise": topup.amount_paise,
            "expected_currency": topup.currency,
            "payment_id": payment.id,
            "payment_order_id": payment.order_id,
            "payment_amount_paise": payment.amount,
            "payment_currency": payment.currency,
        });
        record_review(store, config, now, details).await?;
        return Ok(CreditOutcome::Mismatch);
    }
    let units = paise_to_units(topup.amount_paise).ok_or_else(|| ApiError::Internal("amount overflows".into()))?;
    let expires_at = payment_expiry(config, now);
    let guard_pk = payment_pk(&payment.id);
    let extra = || credit_ops(topup, payment, source, now, expires_at);
    let change = BalanceChange {
        user_id: &topup.user_id,
        kind: LedgerKind::Topup,
        amount: units,
        reference: &payment.id,
        at: now,
        expires_at,
        guard: (&guard_pk, CREDIT_SK),
    };
    let credited = apply_balance_change(store, change, extra).await?;
    if credited {
        tracing::info!(user_id = %topup.user_id, topup_id = %topup.id, payment_id = %payment.id, ?source, "payment credited");
    }
    // Refunds and disputes that arrived before the credit apply now (also on a repeated credit, in case the
    // process that credited stopped before it got here); money paid to a closed account goes to its refund.
    apply_deferred(store, clock, config, &payment.id).await?;
    sync_closed_wallet(store, config, clock, &topup.user_id).await?;
    Ok(if credited { CreditOutcome::Credited } else { CreditOutcome::AlreadyCredited })
}

/// What a credit writes besides the balance: the payment's exactly-once guard (with what refunds and
/// disputes may still take back), the top-up marked paid, and its entry in the open list removed.
fn credit_ops(
    topup: &Topup,
    payment: &Payment,
    source: CreditSource,
    now: DateTime<Utc>,
    expires_at: i64,
) -> StoreResult<Vec<WriteOp>> {
    let guard = json!({
        "user_id": topup.user_id,
        "topup_id": topup.id,
        "order_id": topup.razorpay_order_id,
        "amount_paise": topup.amount_paise,
        REFUNDABLE: topup.amount_paise,
        "source": source,
        "credited_at": now,
    });
    Ok(vec![
        WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(payment_pk(&payment.id), CREDIT_SK, &guard, Some(expires_at))?,
            condition: Condition::NotExists,
        }),
        WriteOp::Update(
            Update::new(Table::Main, topup_pk(&topup.id), TOPUP_SK)
                .set("status", json!(TopupStatus::Paid))
                .set("payment_id", json!(payment.id))
                .set("paid_at", json!(now))
                .when(Condition::Exists),
        ),
        WriteOp::Delete(Delete {
            table: Table::Main,
            pk: OPEN_TOPUPS_PK.into(),
            sk: open_sk(topup),
            condition: Condition::Always,
        }),
    ])
}

/// Marks a top-up failed, unless it already moved on (paid, expired): state only moves forward.
pub async fn mark_failed<S: ItemStore + ?Sized>(store: &S, topup: &Topup) -> ApiResult<()> {
    if topup.status != TopupStatus::Created {
        return Ok(());
    }
    let update = Update::new(Table::Main, topup_pk(&topup.id), TOPUP_SK)
        .set("status", json!(TopupStatus::Failed))
        .when(Condition::AttrEquals("status".into(), json!(TopupStatus::Created)));
    Ok(store.update(update).await.or_not_needed()?)
}

/// Debits a processed refund once per refund id. The refund's money has already left through Razorpay,
/// so the debit applies even if it takes the balance below zero (the ledger shows the debt).
pub async fn debit_refund<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    refund: &crate::razorpay::Refund,
) -> ApiResult<CreditOutcome> {
    let now = clock.now();
    let Some(credit) =
        credit_or_defer(store, config, now, (&refund.payment_id, "refund.processed", &refund.id), refund).await?
    else {
        return Ok(CreditOutcome::Deferred);
    };
    let (user_id, credited_paise) = credited(&credit);
    if refund.currency != "INR" || refund.amount <= 0 || refund.amount > credited_paise || user_id.is_empty() {
        record_review(
            store,
            config,
            now,
            json!({ "reason": "refund does not match the credited payment", "refund_id": refund.id, "payment_id": refund.payment_id, "amount_paise": refund.amount, "currency": refund.currency }),
        )
        .await?;
        return Ok(CreditOutcome::Mismatch);
    }
    let units = paise_to_units(refund.amount).ok_or_else(|| ApiError::Internal("amount overflows".into()))?;
    let expires_at = payment_expiry(config, now);
    let guard_pk = refund_pk(&refund.id);
    if !store.is_recorded(&guard_pk, DEBIT_SK).await? && refundable(&credit) < refund.amount {
        record_review(
            store,
            config,
            now,
            json!({ "reason": "refunds and disputes would take back more than the payment", "refund_id": refund.id, "payment_id": refund.payment_id, "amount_paise": refund.amount }),
        )
        .await?;
        return Ok(CreditOutcome::Mismatch);
    }
    let extra = || -> StoreResult<Vec<WriteOp>> {
        let marker = json!({ "user_id": user_id, "payment_id": refund.payment_id, "amount_paise": refund.amount, "debited_at": now });
        Ok(vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(&guard_pk, DEBIT_SK, &marker, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            take_refundable(&credit, refund.amount),
        ])
    };
    let change = BalanceChange {
        user_id: &user_id,
        kind: LedgerKind::Refund,
        amount: -units,
        reference: &refund.id,
        at: now,
        expires_at,
        guard: (&guard_pk, DEBIT_SK),
    };
    let debited = apply_balance_change(store, change, extra).await?;
    sync_closed_wallet(store, config, clock, &user_id).await?;
    Ok(if debited { CreditOutcome::Credited } else { CreditOutcome::AlreadyCredited })
}

/// The guard of the credited payment an adjustment (refund, dispute) applies to; `None` when the payment is not
/// credited yet and the event was kept for when it is ([`defer`]).
async fn credit_or_defer<S: ItemStore + ?Sized>(
    store: &S,
    config: &Config,
    now: DateTime<Utc>,
    (payment_id, event, entity_id): (&str, &str, &str),
    entity: &impl Serialize,
) -> ApiResult<Option<Item>> {
    if let Some(credit) = store.get(Table::Main, &payment_pk(payment_id), CREDIT_SK).await? {
        return Ok(Some(credit));
    }
    let entity = serde_json::to_value(entity).map_err(|e| ApiError::Internal(e.to_string()))?;
    defer(store, config, now, (payment_id, event, entity_id), entity).await
}

/// Keeps a refund or dispute event of a payment that is not credited yet, then looks again: the credit
/// applies the events it finds kept, and this one may have been kept just after it looked. If the credit is
/// there now, the kept copy is dropped and its guard record returned, for the caller to apply the event
/// itself; applying twice is harmless (every adjustment has its own exactly-once guard).
async fn defer<S: ItemStore + ?Sized>(
    store: &S,
    config: &Config,
    now: DateTime<Utc>,
    (payment_id, event, entity_id): (&str, &str, &str),
    entity: Value,
) -> ApiResult<Option<Item>> {
    let kept = json!({ "event": event, "entity": entity, "received_at": now });
    let (pk, sk) = (payment_pk(payment_id), format!("{PENDING_PREFIX}{event}#{entity_id}"));
    let item = Item::from_record(&pk, &sk, &kept, Some(payment_expiry(config, now)))?;
    store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
    let Some(credit) = store.get(Table::Main, &pk, CREDIT_SK).await? else {
        // A human sees it too: it may be for a payment that never reaches us.
        let details = json!({ "reason": "refund or dispute of a payment not credited (yet): kept, applied if its credit lands", "payment_id": payment_id, "event": event, "id": entity_id });
        record_review(store, config, now, details).await?;
        return Ok(None);
    };
    store.delete(Delete { table: Table::Main, pk, sk, condition: Condition::Always }).await?;
    Ok(Some(credit))
}

const PENDING_PREFIX: &str = schema::prefix::PENDING;
/// The payment guard's attribute counting down what refunds and lost disputes may still take back.
const REFUNDABLE: &str = "refundable_paise";

/// The owner of a credited payment and the paise credited, from its guard.
fn credited(credit: &Item) -> (String, i64) {
    let user_id = credit.attrs.get("user_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    (user_id, credit.attrs.get("amount_paise").and_then(Value::as_i64).unwrap_or(0))
}

fn refundable(credit: &Item) -> i64 {
    // A guard written before this count existed starts from the whole payment.
    credit
        .attrs
        .get(REFUNDABLE)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| credit.attrs.get("amount_paise").and_then(Value::as_i64).unwrap_or(0))
}

/// Takes `paise` off what the payment may still give back, in the transaction that gives it back: refunds
/// and lost disputes together never take back more than was paid.
fn take_refundable(credit: &Item, paise: i64) -> WriteOp {
    let update = Update::new(Table::Main, credit.pk.clone(), credit.sk.clone());
    WriteOp::Update(if credit.attrs.contains_key(REFUNDABLE) {
        update.add(REFUNDABLE, -paise).when(Condition::AttrAtLeast(REFUNDABLE.into(), paise))
    } else {
        update
            .set(REFUNDABLE, json!(refundable(credit) - paise))
            .when(Condition::AttrAbsentOrEquals(REFUNDABLE.into(), Value::Null))
    })
}

/// Applies (and then deletes) the refund and dispute events kept for a payment that is now credited. Order
/// does not matter: each event's effect is decided by the state its own item records.
pub async fn apply_deferred<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    payment_id: &str,
) -> ApiResult<()> {
    let kept =
        Query::new(Table::Main, payment_pk(payment_id)).range(SortKeyRange::Prefix(PENDING_PREFIX.into())).limit(100);
    for item in store.query(kept).await?.items {
        let event = item.attrs.get("event").and_then(Value::as_str).unwrap_or_default().to_owned();
        let entity = item.attrs.get("entity").cloned().unwrap_or(Value::Null);
        let outcome = if event == "refund.processed" {
            let refund: crate::razorpay::Refund =
                serde_json::from_value(entity).map_err(|e| ApiError::Internal(e.to_string()))?;
            debit_refund(store, clock, config, &refund).await?
        } else {
            let dispute: crate::razorpay::Dispute =
                serde_json::from_value(entity).map_err(|e| ApiError::Internal(e.to_string()))?;
            apply_dispute(store, clock, config, &event, &dispute).await?
        };
        if outcome != CreditOutcome::Deferred {
            store.delete(Delete { table: Table::Main, pk: item.pk, sk: item.sk, condition: Condition::Always }).await?;
        }
    }
    Ok(())
}

const DISPUTE_SK: &str = schema::sk::DISPUTE;

/// A chargeback's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeState {
    /// The disputed amount is held on the wallet.
    Held,
    /// Won (or closed in our favour): nothing is held any more.
    Released,
    /// Lost: the deducted amount left the balance through the ledger.
    Debited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DisputeRecord {
    user_id: String,
    payment_id: String,
    state: DisputeState,
    /// Wallet units held while `held`.
    held: i64,
    updated_at: DateTime<Utc>,
}

/// A Razorpay dispute event: `payment.dispute.created` holds the disputed amount on the payer's wallet,
/// `.won` and `.closed` release it, `.lost` debits what Razorpay deducted (through the ledger; the balance may
/// go below zero, as for refunds: the money has left). Each changes the wallet once whatever the order of
/// arrival: a `.lost` before the `.created` debits and the late `.created` then does nothing. Other dispute
/// events (`under_review`, `action_required`) move no money.
pub async fn apply_dispute<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    event: &str,
    dispute: &crate::razorpay::Dispute,
) -> ApiResult<CreditOutcome> {
    let Some(step) = DisputeStep::of(event) else { return Ok(CreditOutcome::AlreadyCredited) };
    let now = clock.now();
    let Some(credit) = credit_or_defer(store, config, now, (&dispute.payment_id, event, &dispute.id), dispute).await?
    else {
        return Ok(CreditOutcome::Deferred);
    };
    let (user_id, credited_paise) = credited(&credit);
    let Some(amounts) = DisputeAmounts::of(dispute, credited_paise).filter(|_| !user_id.is_empty()) else {
        let details = json!({ "reason": "dispute does not match the credited payment", "dispute_id": dispute.id, "payment_id": dispute.payment_id, "amount_paise": dispute.amount, "currency": dispute.currency });
        record_review(store, config, now, details).await?;
        return Ok(CreditOutcome::Mismatch);
    };
    for _ in 0..CREDIT_ATTEMPTS {
        let current = store.get(Table::Main, &dispute_pk(&dispute.id), DISPUTE_SK).await?;
        let state = current.as_ref().map(Item::record::<DisputeRecord>).transpose()?;
        let Some(mut next) = step.next(state.as_ref().map(|s| s.state)) else {
            // Already held, or already final: this event changes nothing.
            return Ok(CreditOutcome::AlreadyCredited);
        };
        let guard = store.get(Table::Main, &payment_pk(&dispute.payment_id), CREDIT_SK).await?;
        let over = next == DisputeState::Debited && guard.as_ref().map_or(0, refundable) < amounts.deducted_paise;
        if over {
            // More than the payment would be taken back: a human looks, and nothing stays held meanwhile.
            let details = json!({ "reason": "refunds and disputes would take back more than the payment", "dispute_id": dispute.id, "payment_id": dispute.payment_id, "amount_paise": amounts.deducted_paise });
            record_review(store, config, now, details).await?;
            next = DisputeState::Released;
        }
        let wallet = store.wallet(&user_id).await?;
        let change = DisputeChange { dispute, user_id: &user_id, previous: state.as_ref(), next, amounts, wallet, now };
        let ops = change.ops(guard.as_ref(), payment_expiry(config, now))?;
        if store.transact(ops).await.applied()?.is_some() {
            tracing::warn!(%user_id, dispute_id = %dispute.id, payment_id = %dispute.payment_id, state = ?next, "dispute applied");
            sync_closed_wallet(store, config, clock, &user_id).await?;
            return Ok(if over { CreditOutcome::Mismatch } else { CreditOutcome::Credited });
        }
    }
    Err(ApiError::Unavailable("the wallet is too busy to apply the dispute; it will be retried".into()))
}

/// What a dispute event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DisputeStep {
    Hold,
    Release,
    Debit,
}

impl DisputeStep {
    fn of(event: &str) -> Option<Self> {
        match event {
            "payment.dispute.created" => Some(Self::Hold),
            "payment.dispute.won" | "payment.dispute.closed" => Some(Self::Release),
            "payment.dispute.lost" => Some(Self::Debit),
            _ => None,
        }
    }

    /// The state this step moves a dispute to from `current`, or `None` when it changes nothing.
    fn next(self, current: Option<DisputeState>) -> Option<DisputeState> {
        match (self, current) {
            (Self::Hold, None) => Some(DisputeState::Held),
            (Self::Release, None | Some(DisputeState::Held)) => Some(DisputeState::Released),
            (Self::Debit, None | Some(DisputeState::Held)) => Some(DisputeState::Debited),
            _ => None,
        }
    }
}

/// A dispute's amounts, checked against the payment it disputes.
#[derive(Debug, Clone, Copy)]
struct DisputeAmounts {
    /// What a held dispute holds, wallet units.
    held: i64,
    /// What a lost dispute takes: what Razorpay deducted (or the disputed amount), paise and units.
    deducted_paise: i64,
    deducted: i64,
}

impl DisputeAmounts {
    fn of(dispute: &crate::razorpay::Dispute, credited_paise: i64) -> Option<Self> {
        let deducted_paise = if dispute.amount_deducted > 0 { dispute.amount_deducted } else { dispute.amount };
        let fits = |paise: i64| paise > 0 && paise <= credited_paise;
        if dispute.currency != "INR" || !fits(dispute.amount) || !fits(deducted_paise) {
            return None;
        }
        Some(Self { held: paise_to_units(dispute.amount)?, deducted_paise, deducted: paise_to_units(deducted_paise)? })
    }
}

/// One move of a dispute's state, with what it does to the wallet.
struct DisputeChange<'a> {
    dispute: &'a crate::razorpay::Dispute,
    user_id: &'a str,
    previous: Option<&'a DisputeRecord>,
    next: DisputeState,
    amounts: DisputeAmounts,
    wallet: Wallet,
    now: DateTime<Utc>,
}

impl DisputeChange<'_> {
    /// The transaction: the dispute's new state (conditioned on the one read), the wallet (conditioned on its
    /// balance) and, for a loss, the ledger entry and the payment's refundable count.
    fn ops(&self, guard: Option<&Item>, expires_at: i64) -> ApiResult<Vec<WriteOp>> {
        let (wallet_pk, amounts) = (user_pk(self.user_id), self.amounts);
        let held = self.previous.filter(|s| s.state == DisputeState::Held).map_or(0, |s| s.held);
        let record = DisputeRecord {
            user_id: self.user_id.to_owned(),
            payment_id: self.dispute.payment_id.clone(),
            state: self.next,
            held: if self.next == DisputeState::Held { amounts.held } else { 0 },
            updated_at: self.now,
        };
        let mut ops = vec![WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(dispute_pk(&self.dispute.id), DISPUTE_SK, &record, Some(expires_at))?,
            condition: match self.previous {
                None => Condition::NotExists,
                Some(_) => Condition::AttrEquals("state".into(), json!(DisputeState::Held)),
            },
        })];
        let wallet_update = Update::new(Table::Main, &wallet_pk, WALLET_SK)
            .when(Condition::AttrEquals("balance".into(), json!(self.wallet.balance)));
        let wallet_update = match self.next {
            DisputeState::Held => wallet_update.add("held", amounts.held).add("available", -amounts.held),
            DisputeState::Released if held == 0 => return Ok(ops),
            DisputeState::Released => wallet_update.add("held", -held).add("available", held),
            DisputeState::Debited => {
                let guard = guard.ok_or_else(|| ApiError::Internal("the payment's guard vanished".into()))?;
                ops.push(take_refundable(guard, amounts.deducted_paise));
                let entry = LedgerEntry {
                    id: format!("txn_{}", random_suffix()),
                    kind: LedgerKind::Dispute,
                    amount: -amounts.deducted,
                    balance_after: self.wallet.balance - amounts.deducted,
                    reference: self.dispute.id.clone(),
                    created_at: self.now,
                };
                ops.push(WriteOp::Put(Put {
                    table: Table::Main,
                    item: Item::from_record(
                        &wallet_pk,
                        time_sort_key(LEDGER_PREFIX, self.now),
                        &entry,
                        Some(expires_at),
                    )?,
                    condition: Condition::NotExists,
                }));
                wallet_update
                    .add("balance", -amounts.deducted)
                    .add("held", -held)
                    .add("available", held - amounts.deducted)
            }
        };
        ops.push(WriteOp::Update(wallet_update));
        Ok(ops)
    }
}

/// Creates a Razorpay order and the top-up that tracks it. Nothing is stored when Razorpay fails, so no
/// top-up ever looks payable without an order behind it.
pub async fn create_topup<S: ItemStore + ?Sized>(
    store: &S,
    razorpay: &RazorpayClient,
    clock: &dyn Clock,
    config: &Config,
    user_id: &str,
    amount_paise: i64,
) -> ApiResult<Topup> {
    if amount_paise < config.topup_min_paise || amount_paise > config.topup_max_paise {
        return Err(ApiError::invalid(
            "amount_out_of_range",
            "amount_paise",
            format!(
                "amount_paise must be between {} and {} (₹{} to ₹{})",
                config.topup_min_paise,
                config.topup_max_paise,
                config.topup_min_paise / 100,
                config.topup_max_paise / 100
            ),
        ));
    }
    let id = format!("tup_{}", random_suffix());
    let mut notes = Map::new();
    notes.insert("user_id".into(), json!(user_id));
    notes.insert("topup_id".into(), json!(id));
    let order = razorpay
        .create_order(&NewOrder { amount: amount_paise, currency: "INR".into(), receipt: id.clone(), notes })
        .await?;
    if order.amount != amount_paise || order.currency != "INR" {
        return Err(ApiError::BadGateway {
            code: "payment_gateway_error",
            message: "the payment gateway created an order that does not match the request".into(),
        });
    }
    let now = clock.now();
    let topup = Topup {
        id,
        user_id: user_id.to_owned(),
        razorpay_order_id: order.id,
        amount_paise,
        currency: "INR".into(),
        status: TopupStatus::Created,
        created_at: now,
        payment_id: None,
        paid_at: None,
    };
    store.save_new_topup(&topup, payment_expiry(config, now)).await?;
    tracing::info!(%user_id, topup_id = %topup.id, order_id = %topup.razorpay_order_id, amount_paise, "top-up created");
    Ok(topup)
}

/// The Checkout handler's callback for one of the user's top-ups.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutCallback {
    pub razorpay_payment_id: String,
    pub razorpay_signature: String,
}

/// The Checkout callback: checks the signature against the order we stored, confirms the payment with
/// Razorpay and credits it when captured.
pub async fn verify_checkout<S: ItemStore + ?Sized>(
    store: &S,
    razorpay: &RazorpayClient,
    clock: &dyn Clock,
    config: &Config,
    (user_id, topup_id): (&str, &str),
    callback: &CheckoutCallback,
) -> ApiResult<Topup> {
    let (payment_id, signature) = (callback.razorpay_payment_id.as_str(), callback.razorpay_signature.as_str());
    let not_found = || ApiError::NotFound { code: "topup_not_found", message: format!("no top-up {topup_id}") };
    let topup = store.topup(topup_id).await?.filter(|t| t.user_id == user_id).ok_or_else(not_found)?;
    if !razorpay.verify_checkout(&topup.razorpay_order_id, payment_id, signature).await {
        return Err(ApiError::invalid(
            "invalid_signature",
            "razorpay_signature",
            "razorpay_signature does not match this top-up's order and payment",
        ));
    }
    let payment = razorpay.payment(payment_id).await?;
    match payment.status.as_str() {
        "captured" => {
            let outcome = credit_payment(store, clock, config, &topup, &payment, CreditSource::Verify).await?;
            if outcome == CreditOutcome::Mismatch {
                return Err(ApiError::invalid(
                    "payment_mismatch",
                    "razorpay_payment_id",
                    "the payment does not match this top-up; it has been sent for review",
                ));
            }
        }
        "failed" => mark_failed(store, &topup).await?,
        // authorized/created: not captured yet; the webhook or reconciliation will credit it.
        _ => {}
    }
    store.topup(topup_id).await?.ok_or_else(not_found)
}

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
pub async fn handle_webhook<S: ItemStore + ?Sized>(
    store: &S,
    blobs: &dyn crate::blobs::BlobStore,
    clock: &dyn Clock,
    config: &Config,
    event_id: &str,
    raw_body: &[u8],
) -> ApiResult<WebhookOutcome> {
    if store.is_recorded(&event_pk(event_id), EVENT_SK).await? {
        return Ok(WebhookOutcome::Duplicate);
    }
    let event: crate::razorpay::WebhookEvent = crate::body::parse_json(raw_body)?;
    let now = clock.now();
    let archive_key = format!("razorpay/webhooks/{}/{event_id}.json", now.format("%Y/%m/%d"));
    blobs.put(&archive_key, raw_body.to_vec(), "application/json").await?;

    let outcome = match event.event.as_str() {
        "payment.captured" | "order.paid" => match event.payment() {
            Some(payment) if payment.status == "captured" => credit_from_event(store, clock, config, &payment).await?,
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
            Some(refund) => adjustment_outcome(debit_refund(store, clock, config, &refund).await?),
            None => WebhookOutcome::Ignored,
        },
        name if name.starts_with("payment.dispute.") => match event.dispute() {
            Some(dispute) => adjustment_outcome(apply_dispute(store, clock, config, name, &dispute).await?),
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

async fn credit_from_event<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    payment: &Payment,
) -> ApiResult<WebhookOutcome> {
    let topup = match payment.order_id.as_deref() {
        Some(order_id) => store.topup_for_order(order_id).await?,
        None => None,
    };
    let Some(topup) = topup else {
        record_review(
            store,
            config,
            clock.now(),
            json!({ "reason": "captured payment for an order we do not know", "payment_id": payment.id, "order_id": payment.order_id, "amount_paise": payment.amount }),
        )
        .await?;
        return Ok(WebhookOutcome::Review);
    };
    Ok(match credit_payment(store, clock, config, &topup, payment, CreditSource::Webhook).await? {
        CreditOutcome::Mismatch => WebhookOutcome::Review,
        _ => WebhookOutcome::Processed,
    })
}

/// What one reconciliation run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconciliationReport {
    pub examined: usize,
    pub credited: usize,
    pub expired: usize,
    pub failed: usize,
    /// Top-ups that could not be checked this run (logged with the reason, tried again next run).
    pub errors: usize,
    /// The run stopped at its time budget; the rest waits for the next run.
    pub out_of_time: bool,
}

/// For top-ups unpaid after `min_age` (10 minutes), asks Razorpay for the order's payments and credits
/// captured ones through the same exactly-once path; expires top-ups unpaid after `expire_after` (24 hours).
/// One top-up that fails (Razorpay error, store error) is logged and skipped; the run stops at `budget`.
pub async fn reconcile<S: ItemStore + ?Sized>(
    store: &S,
    razorpay: &RazorpayClient,
    clock: &dyn Clock,
    config: &Config,
    (min_age, expire_after): (Duration, Duration),
    budget: std::time::Duration,
) -> ApiResult<ReconciliationReport> {
    let started = std::time::Instant::now();
    let now = clock.now();
    let mut report = ReconciliationReport::default();
    for topup in store.open_topups(now - min_age, 200).await? {
        if started.elapsed() >= budget {
            report.out_of_time = true;
            break;
        }
        report.examined += 1;
        if topup.status == TopupStatus::Paid {
            continue;
        }
        let stale = topup.created_at <= now - expire_after;
        if let Err(e) = reconcile_one(store, razorpay, clock, config, &topup, stale, &mut report).await {
            tracing::error!(topup_id = %topup.id, order_id = %topup.razorpay_order_id, error = %e, "top-up not reconciled this run");
            report.errors += 1;
            // An order Razorpay cannot answer for must not stay first in line for ever; but an outage must
            // not end the checks of a payment whose webhook was missed either. After a week of failures it
            // expires (a payment that does arrive is still credited: paid wins over expired).
            let abandoned = topup.created_at <= now - ABANDON_UNANSWERED_AFTER;
            if abandoned && expire_topup(store, &topup).await.is_ok() {
                report.expired += 1;
            }
        }
    }
    Ok(report)
}

async fn reconcile_one<S: ItemStore + ?Sized>(
    store: &S,
    razorpay: &RazorpayClient,
    clock: &dyn Clock,
    config: &Config,
    topup: &Topup,
    stale: bool,
    report: &mut ReconciliationReport,
) -> ApiResult<()> {
    let payments = razorpay.order_payments(&topup.razorpay_order_id).await?;
    let mut paid = false;
    for payment in payments.iter().filter(|p| p.status == "captured") {
        if credit_payment(store, clock, config, topup, payment, CreditSource::Reconciliation).await?
            != CreditOutcome::Mismatch
        {
            paid = true;
            report.credited += 1;
        }
    }
    if paid {
        return Ok(());
    }
    if payments.iter().any(|p| p.status == "failed") && topup.status == TopupStatus::Created {
        mark_failed(store, topup).await?;
        report.failed += 1;
    }
    if stale {
        expire_topup(store, topup).await?;
        report.expired += 1;
    }
    Ok(())
}

async fn expire_topup<S: ItemStore + ?Sized>(store: &S, topup: &Topup) -> ApiResult<()> {
    let result = store
        .transact(vec![
            WriteOp::Update(
                Update::new(Table::Main, topup_pk(&topup.id), TOPUP_SK)
                    .set("status", json!(TopupStatus::Expired))
                    .when(Condition::AttrEquals("status".into(), json!(topup.status))),
            ),
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: OPEN_TOPUPS_PK.into(),
                sk: open_sk(topup),
                condition: Condition::Always,
            }),
        ])
        .await;
    // A payment that got in first keeps the top-up paid.
    Ok(result.or_not_needed()?)
}

/// The unspent balance of a closed account, waiting for an operator to refund it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundRequest {
    pub user_id: String,
    /// Wallet units.
    pub amount: i64,
    pub amount_inr: String,
    pub status: String,
    pub requested_at: DateTime<Utc>,
    /// The ledger entry that moved the balance here.
    pub ledger_entry: String,
}

/// The closing transaction's part for the wallet, if there is one: it is closed (no new holds) and expires
/// with the payments window from now; its available balance (what no running call holds) leaves through a
/// ledger entry into the account's single refund request. Holds still running settle as usual. The write
/// holds only if the wallet has not moved since `wallet` was read. Returns the ops and the refund.
pub fn closure_ops(
    config: &Config,
    user_id: &str,
    wallet: Option<&Item>,
    at: DateTime<Utc>,
) -> StoreResult<(Vec<WriteOp>, i64)> {
    let wallet_until =
        config.retention.expiry(crate::retention::ItemClass::Wallet, at).unwrap_or_else(|| payment_expiry(config, at));
    let Some(item) = wallet else {
        // No money yet: the wallet is created closed, so a payment arriving later lands on a closed wallet
        // (and in the refund request), never on a fresh open one.
        let closed = json!({ "balance": 0, "held": 0, "available": 0, CLOSED: true });
        return Ok((
            vec![
                WriteOp::Put(Put {
                    table: Table::Main,
                    item: Item::from_record(user_pk(user_id), WALLET_SK, &closed, Some(wallet_until))?,
                    condition: Condition::NotExists,
                }),
                WriteOp::Put(Put {
                    table: Table::Main,
                    item: Item::from_record(WALLETS_PK, user_id, &json!({ "user_id": user_id }), Some(wallet_until))?,
                    condition: Condition::Always,
                }),
            ],
            0,
        ));
    };
    let read: Wallet = item.record()?;
    let refund = read.available.max(0);
    let closing = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .set(CLOSED, json!(true))
        .expiry(crate::store::ExpiryChange::Set(wallet_until));
    let ops = refund_move(user_id, &read, None, refund, closing, (at, payment_expiry(config, at)))?;
    Ok((ops, refund))
}

/// Moves `moved` wallet units (negative: back) between the wallet and the account's refund request, in one
/// transaction's ops: `wallet_update` (plus the move, conditioned on the balance and held read), the ledger
/// entry, and the request (created, or changed conditioned on the amount read). Nothing but the wallet
/// update when nothing moves.
fn refund_move(
    user_id: &str,
    wallet: &Wallet,
    request: Option<&RefundRequest>,
    moved: i64,
    wallet_update: Update,
    (at, expires_at): (DateTime<Utc>, i64),
) -> StoreResult<Vec<WriteOp>> {
    let unchanged = Condition::All(vec![
        Condition::AttrEquals("balance".into(), json!(wallet.balance)),
        Condition::AttrEquals("held".into(), json!(wallet.held)),
    ]);
    let mut ops = vec![WriteOp::Update(wallet_update.add("balance", -moved).add("available", -moved).when(unchanged))];
    if moved == 0 {
        return Ok(ops);
    }
    let entry = LedgerEntry {
        id: format!("txn_{}", random_suffix()),
        kind: LedgerKind::ClosureRefund,
        amount: -moved,
        balance_after: wallet.balance - moved,
        reference: "refund request of the closed account".into(),
        created_at: at,
    };
    let request_op = match request {
        Some(existing) => WriteOp::Update(
            Update::new(Table::Main, REFUND_REQUESTS_PK, user_id)
                .add("amount", moved)
                .set("amount_inr", json!(format_inr(existing.amount + moved)))
                .when(Condition::AttrEquals("amount".into(), json!(existing.amount))),
        ),
        None => {
            let created = RefundRequest {
                user_id: user_id.to_owned(),
                amount: moved,
                amount_inr: format_inr(moved),
                status: "requested".into(),
                requested_at: at,
                ledger_entry: entry.id.clone(),
            };
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(REFUND_REQUESTS_PK, user_id, &created, Some(expires_at))?,
                condition: Condition::NotExists,
            })
        }
    };
    ops.push(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(user_pk(user_id), time_sort_key(LEDGER_PREFIX, at), &entry, Some(expires_at))?,
        condition: Condition::NotExists,
    }));
    ops.push(request_op);
    Ok(ops)
}

/// Keeps a closed account's refund request in step with its wallet. Money that reaches the wallet after the
/// closure (a late payment, a call's unused hold, a dispute won) joins the request; money that leaves it (a
/// refund, a dispute opened or lost) comes out of it, so an operator never pays out what the bank or
/// Razorpay already returned. The request's `amount` is what is still owed: paying it out must lower it, in
/// a write conditioned on the amount read, like this one. What an unpaid request cannot cover stays as a debt on
/// the wallet (the ledger shows it). Each move is a ledger entry in one transaction with the wallet and the
/// request, conditioned on both, so running it any number of times, concurrently, moves money once.
pub async fn sync_closed_wallet<S: ItemStore + ?Sized>(
    store: &S,
    config: &Config,
    clock: &dyn Clock,
    user_id: &str,
) -> ApiResult<()> {
    for _ in 0..CREDIT_ATTEMPTS {
        let Some(item) = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await? else { return Ok(()) };
        if item.attrs.get(CLOSED) != Some(&json!(true)) {
            return Ok(());
        }
        let wallet: Wallet = item.record()?;
        let request = refund_request(store, user_id).await?;
        let unpaid = request.as_ref().map_or(0, |r| r.amount);
        // Positive: into the request; negative: back out of it, as far as it is unpaid.
        let moved = if wallet.available > 0 { wallet.available } else { -unpaid.min(-wallet.available) };
        if moved == 0 {
            if wallet.available < 0 {
                tracing::warn!(%user_id, available = wallet.available, "a closed account owes money its refund request cannot cover");
            }
            return Ok(());
        }
        let now = clock.now();
        let plain = Update::new(Table::Main, user_pk(user_id), WALLET_SK);
        let ops = refund_move(user_id, &wallet, request.as_ref(), moved, plain, (now, payment_expiry(config, now)))?;
        if store.transact(ops).await.applied()?.is_some() {
            tracing::warn!(%user_id, moved, "closed account's refund request adjusted");
            return Ok(());
        }
    }
    Err(ApiError::Unavailable("the closed wallet is busy; its refund request is adjusted on the next run".into()))
}

/// The refund request of a closed account, if it had a balance to refund.
pub async fn refund_request<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Option<RefundRequest>> {
    store.get(Table::Main, REFUND_REQUESTS_PK, user_id).await?.map(|i| i.record()).transpose()
}

/// After a closure commits: the wallet's registry entry (walked by the stale-hold sweeper) expires with it.
pub async fn expire_registry<S: ItemStore + ?Sized>(store: &S, user_id: &str, until: i64) -> StoreResult<()> {
    let registry = Update::new(Table::Main, WALLETS_PK, user_id)
        .expiry(crate::store::ExpiryChange::Set(until))
        .when(Condition::Exists);
    store.update(registry).await.or_not_needed()
}
