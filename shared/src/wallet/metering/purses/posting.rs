//! Settling in a purse, and posting what a purse spent to the wallet and the ledger; retiring an idle
//! purse; reading the purses on a wallet for the sweeper.

use crate::ports::Ports;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::funding::purses_of;
use super::{POST_ATTEMPTS, PURSE_ON_WALLET, number, purse_sort_key};
use crate::accounts::user_pk;
use crate::error::{ApiError, ApiResult};
use crate::store::{Condition, Delete, Item, ItemStore, StoreError, Table, Update, WriteOp};
use crate::usage::{self, UsageRecord};
use crate::wallet::WALLET_SK;
use crate::wallet::ledger::{LedgerEntry, LedgerKind, entry_put};
use crate::wallet::metering::holds::{
    HOLD_CALL_PREFIX, HOLD_PREFIX, HOLD_USAGE_PREFIX, HeldCall, Hold, PendingUsage, low_balance_threshold,
};
use crate::wallet::metering::settlement::{
    Expiries, Settlement, charge_in_full, low_balance_alert, threshold_unchanged,
};

/// Settles a hold taken from a purse: the charge (in full, as every settlement) goes to the purse's `spent`
/// with the usage entry, in one transaction; the wallet is not written (its posting comes later).
pub async fn settle_in_purse<S: ItemStore + ?Sized>(
    store: &S,
    hold: &Hold,
    settlement: Settlement,
) -> ApiResult<UsageRecord> {
    let Settlement { cost, mut usage, expiries, deadline } = settlement;
    let Some(purse) = &hold.purse else { return Err(ApiError::Internal("not a purse's hold".into())) };
    let charge = charge_in_full(hold, cost, &mut usage);
    let key = purse_sort_key(&purse.instance);
    let mut recorded = false;
    let mut wait = Duration::from_millis(5);
    loop {
        let update = Update::new(Table::Main, user_pk(&hold.user_id), &key)
            .remove(&hold.attr())
            .remove(&hold.call_attr())
            .remove(&hold.usage_attr())
            .add("held", -hold.amount)
            .add("available", hold.amount - charge)
            .add("spent", charge)
            .add("calls", 1)
            .set("beat", json!(usage.created_at.timestamp_millis()))
            .when(Condition::AttrAtLeast(hold.attr(), 0));
        let ops = vec![WriteOp::Update(update), usage::entry_put(&hold.user_id, &hold.id, &usage, expiries.usage)?];
        match store.transact(ops).await {
            Ok(()) => {
                if let Some(book) = &purse.book {
                    book.settled(&hold.user_id, charge);
                }
                return Ok(usage);
            }
            Err(StoreError::ConditionFailed) => {
                // Committed already (its answer lost, or the sweeper got there first): that one stands.
                if let Some(done) = usage::entry(store, &hold.user_id, &hold.id).await? {
                    return Ok(done);
                }
                tracing::warn!(request_id = %usage.id, hold_id = %hold.id, "the purse's hold was already given back");
                return Ok(UsageRecord { cost: 0, ..usage });
            }
            Err(e) => {
                tracing::warn!(error = %e, request_id = %usage.id, "settlement failed; retrying");
                if !recorded {
                    recorded = record_pending_in_purse(store, hold, &key, charge, &usage).await.is_ok();
                }
                if Instant::now() + wait > deadline {
                    return Err(e.into());
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// Records what a call used beside its hold in the purse, for the sweeper (while the hold is there).
async fn record_pending_in_purse<S: ItemStore + ?Sized>(
    store: &S,
    hold: &Hold,
    key: &str,
    cost: i64,
    usage: &UsageRecord,
) -> ApiResult<()> {
    let pending = serde_json::to_value(PendingUsage { cost, usage: usage.clone() })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let update = Update::new(Table::Main, user_pk(&hold.user_id), key)
        .set(&hold.usage_attr(), pending)
        .when(Condition::AttrAtLeast(hold.attr(), 0));
    store.update(update).await?;
    Ok(())
}

/// Gives a purse's hold back to the purse (a call that never reached a provider), once.
pub async fn release_in_purse<S: ItemStore + ?Sized>(store: &S, hold: &Hold) -> ApiResult<bool> {
    let Some(purse) = &hold.purse else { return Ok(false) };
    let update = Update::new(Table::Main, user_pk(&hold.user_id), purse_sort_key(&purse.instance))
        .remove(&hold.attr())
        .remove(&hold.call_attr())
        .remove(&hold.usage_attr())
        .add("held", -hold.amount)
        .add("available", hold.amount)
        .when(Condition::AttrEquals(hold.attr(), json!(hold.amount)));
    match store.update(update).await {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The transaction that posts a purse's spending to the wallet: `balance` and `held` down by it, one ledger
/// entry with the exact balance after it (and the low-balance alert if it crosses the threshold), the
/// purse's `spent` down by it. With `retire`, the purse also goes (its free money back to the wallet), only
/// if no call holds anything in it. `None`: nothing to do.
async fn post_ops<S: ItemStore + ?Sized>(
    store: &S,
    now: DateTime<Utc>,
    posting: &Posting<'_>,
) -> ApiResult<Option<Vec<WriteOp>>> {
    let Posting { user_id, instance, retire, expiries } = *posting;
    let key = purse_sort_key(instance);
    let (Some(purse), Some(wallet)) = (
        store.get(Table::Main, &user_pk(user_id), &key).await?,
        store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?,
    ) else {
        return Ok(None);
    };
    let (spent, free, held, calls) =
        (number(&purse, "spent"), number(&purse, "available"), number(&purse, "held"), number(&purse, "calls"));
    if (retire && held != 0) || (!retire && spent == 0) {
        return Ok(None);
    }
    let balance = number(&wallet, "balance");
    let threshold = low_balance_threshold(&wallet);
    // One change per attribute (DynamoDB refuses two on one path in an update).
    let returned = if retire { free } else { 0 };
    let mut wallet_update =
        Update::new(Table::Main, user_pk(user_id), WALLET_SK).add("balance", -spent).add("held", -spent - returned);
    if retire {
        wallet_update = wallet_update.add("available", returned).remove(&format!("{PURSE_ON_WALLET}{instance}"));
    }
    let mut ops = vec![WriteOp::Update(wallet_update.when(Condition::All(vec![
        Condition::AttrEquals("balance".into(), json!(balance)),
        threshold_unchanged(threshold),
    ])))];
    let unchanged = Condition::All(vec![
        Condition::AttrEquals("calls".into(), json!(calls)),
        Condition::AttrEquals("spent".into(), json!(spent)),
        Condition::AttrEquals("available".into(), json!(free)),
        Condition::AttrEquals("held".into(), json!(held)),
    ]);
    ops.push(if retire {
        WriteOp::Delete(Delete { table: Table::Main, pk: user_pk(user_id), sk: key, condition: unchanged })
    } else {
        WriteOp::Update(
            Update::new(Table::Main, user_pk(user_id), key)
                .add("spent", -spent)
                .add("calls", -calls)
                .set("posted_at", json!(now.timestamp_millis()))
                .when(unchanged),
        )
    });
    if spent != 0 {
        let after = balance.saturating_sub(spent);
        let reference = format!("{calls} call{} (purse {instance})", if calls == 1 { "" } else { "s" });
        let entry = LedgerEntry::new(LedgerKind::Usage, -spent, after, &reference, now);
        ops.push(entry_put(user_id, &entry, expiries.ledger)?);
        ops.extend(low_balance_alert(user_id, balance, after, threshold, now)?);
    }
    Ok(Some(ops))
}

/// Retires a purse: its spending posted and its free money back on the wallet, the purse deleted; only if no
/// call holds anything in it. Returns whether it went.
pub async fn retire(ports: &Ports, user_id: &str, instance: &str, expiries: Expiries) -> ApiResult<bool> {
    commit_posting(ports, Posting { user_id, instance, retire: true, expiries }, POST_ATTEMPTS).await
}

/// One purse's posting: whose, which instance's purse, whether the purse retires with it, and the expiries
/// of what it writes.
#[derive(Clone, Copy)]
pub(super) struct Posting<'a> {
    pub(super) user_id: &'a str,
    pub(super) instance: &'a str,
    pub(super) retire: bool,
    pub(super) expiries: Expiries,
}

pub(super) async fn commit_posting(ports: &Ports, posting: Posting<'_>, attempts: usize) -> ApiResult<bool> {
    let store = ports.store();
    let clock = ports.clock();
    for _ in 0..attempts {
        let Some(ops) = post_ops(store, clock.now(), &posting).await? else { return Ok(false) };
        match store.transact(ops).await {
            Ok(()) => return Ok(true),
            Err(StoreError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// A purse as the sweeper sees it: its holds (id, amount), its last sign of life.
#[derive(Debug)]
pub struct PurseSeen {
    pub instance: String,
    pub item: Item,
    pub beat: Option<DateTime<Utc>>,
}

impl PurseSeen {
    pub fn holds(&self) -> Vec<(String, i64)> {
        self.item
            .attrs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(HOLD_PREFIX)?.to_owned(), v.as_i64()?)))
            .collect()
    }

    /// The call a hold in this purse is for, and what it recorded as used, if anything.
    pub fn call(&self, hold_id: &str) -> (Option<HeldCall>, Option<PendingUsage>) {
        let read = |prefix: &str| self.item.attrs.get(&format!("{prefix}{hold_id}")).cloned();
        (
            read(HOLD_CALL_PREFIX).and_then(|v| serde_json::from_value(v).ok()),
            read(HOLD_USAGE_PREFIX).and_then(|v| serde_json::from_value(v).ok()),
        )
    }
}

/// The purses a wallet names, as stored now.
pub async fn purses_on<S: ItemStore + ?Sized>(store: &S, user_id: &str, wallet: &Item) -> ApiResult<Vec<PurseSeen>> {
    let mut seen = Vec::new();
    for instance in purses_of(wallet) {
        if let Some(item) = store.get(Table::Main, &user_pk(user_id), &purse_sort_key(&instance)).await? {
            let beat = item.attrs.get("beat").and_then(Value::as_i64).and_then(DateTime::<Utc>::from_timestamp_millis);
            seen.push(PurseSeen { instance, item, beat });
        }
    }
    Ok(seen)
}
