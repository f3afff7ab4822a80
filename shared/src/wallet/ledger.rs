//! The ledger: one entry per balance change, written in the same transaction as the change, with the
//! balance after it, so the balance always equals the sum of the entries. Every balance change of the
//! wallet module goes through [`apply_balance_change`] or writes its entry with [`entry_put`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::topups::Topup;
use super::{WALLET_SK, WALLETS_PK, Wallet, WalletStore};
use crate::accounts::{time_sort_key, timestamp, user_pk};
use crate::error::{ApiError, ApiResult};
use crate::money::format_inr;
use crate::secrets::random_suffix;
use crate::store::schema::{self};
use crate::store::{Condition, Conditional, Item, ItemStore, Put, StoreResult, Table, Update, WriteOp};

/// How often a balance change is retried when a concurrent one got in first.
pub(super) const CREDIT_ATTEMPTS: usize = 20;
pub(super) const LEDGER_PREFIX: &str = schema::prefix::LEDGER;

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

impl LedgerEntry {
    /// A new entry with a fresh id.
    pub(super) fn new(kind: LedgerKind, amount: i64, balance_after: i64, reference: &str, at: DateTime<Utc>) -> Self {
        Self {
            id: format!("txn_{}", random_suffix()),
            kind,
            amount,
            balance_after,
            reference: reference.to_owned(),
            created_at: at,
        }
    }
}

/// Writes `entry` to the account's ledger, in the transaction of the balance change it records.
pub(super) fn entry_put(user_id: &str, entry: &LedgerEntry, expires_at: i64) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(
            user_pk(user_id),
            time_sort_key(LEDGER_PREFIX, entry.created_at),
            entry,
            Some(expires_at),
        )?,
        condition: Condition::NotExists,
    }))
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

/// One balance change: what, how much (signed units), why, when, until when it is kept, and the item
/// whose existence means it was already applied.
pub(super) struct BalanceChange<'a> {
    pub(super) user_id: &'a str,
    pub(super) kind: LedgerKind,
    pub(super) amount: i64,
    pub(super) reference: &'a str,
    pub(super) at: DateTime<Utc>,
    pub(super) expires_at: i64,
    pub(super) guard: (&'a str, &'a str),
}

/// Applies `amount` (signed units) to the wallet and writes its ledger entry, together with `extra`
/// operations (the exactly-once guard, the top-up's state, its message; given the balance after), in one
/// transaction. Retries when another
/// balance change got in between the read and the write. Returns false when a guard in `extra` failed
/// because the change was already made.
pub(super) async fn apply_balance_change<S: ItemStore + ?Sized>(
    store: &S,
    change: BalanceChange<'_>,
    extra: impl Fn(i64) -> StoreResult<Vec<WriteOp>>,
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
                    &Wallet { balance: balance_after, held: 0, available: balance_after, low_balance_threshold: None },
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
        let entry = LedgerEntry::new(kind, amount, balance_after, reference, at);
        let mut ops = extra(balance_after)?;
        if matches!(wallet_op, WriteOp::Put(_)) {
            // A new wallet joins the registry the stale-hold sweeper walks.
            ops.push(WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(WALLETS_PK, user_id, &json!({ "user_id": user_id }), None)?,
                condition: Condition::Always,
            }));
        }
        ops.push(wallet_op);
        ops.push(entry_put(user_id, &entry, expires_at)?);
        // Not applied: the guard now exists (someone else credited) or the balance moved; look again.
        if store.transact(ops).await.applied()?.is_some() {
            return Ok(true);
        }
    }
    Err(ApiError::Unavailable("the wallet is too busy to apply the change; it will be retried".into()))
}

/// The account's top-ups and its ledger, as the API shows them (for its export).
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> ApiResult<(Vec<Topup>, Vec<LedgerEntryView>)> {
    let mut topups = Vec::new();
    for index in crate::store::user_items(store, user_id, schema::prefix::TOPUP).await? {
        if let Some(id) = index.attrs.get("topup_id").and_then(serde_json::Value::as_str)
            && let Some(topup) = super::TopupStore::topup(store, id).await?
        {
            topups.push(topup);
        }
    }
    let ledger: Vec<LedgerEntryView> = crate::store::user_items(store, user_id, schema::prefix::LEDGER)
        .await?
        .iter()
        .map(|i| i.record::<LedgerEntry>().map(|e| LedgerEntryView::from(&e)))
        .collect::<StoreResult<_>>()?;
    Ok((topups, ledger))
}

/// A page cursor of `GET /v1/wallet/transactions`, checked: it must name one of the account's ledger entries.
pub fn page_cursor(cursor: Option<&str>) -> crate::error::ApiResult<Option<String>> {
    crate::pages::decode_cursor(cursor, LEDGER_PREFIX)
}
