//! The stale-hold sweeper: holds and leases left by processes that died before settling are charged what
//! their calls recorded (or the whole hold) and the rest given back; a closed account's wallet is brought in
//! step with its refund request.
//!
//! It reaches every wallet, however many there are: the wallets' registry is walked a page at a time, the
//! wallets of a page in groups of [`SWEEP_CONCURRENCY`] at once, and its place is saved after every page
//! (`SWEEPER` / `CURSOR`), so the run after one that met its budget (or was stopped) goes on from there and,
//! at the end of the registry, from its beginning up to where it started. Its time grows with the number of
//! wallets divided by the concurrency (plus one settlement for each stale hold): see the figures in
//! docs/architecture.md.

use crate::ports::Ports;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::{Value, json};

use super::settlement::Settlement;
use super::{
    BalanceHints, HOLD_CALL_PREFIX, HOLD_PREFIX, HeldCall, Hold, LEASE_CALL_PREFIX, LEASE_LIFE, LEASE_PREFIX,
    LeaseBacking, LeaseCall, LeaseReserve, PURSE_IDLE, PURSE_ON_WALLET, PendingUsage, PurseBacking, PurseSeen,
    ReserveAsRead, expiries, low_balance_threshold, purses_on, release, retire, return_lease, settle, stop_purses,
    stops_leases,
};
use crate::accounts::user_pk;
use crate::error::ApiResult;
use crate::store::schema;
use crate::store::{Condition, Item, ItemStore, Put, Query, Table};
use crate::usage::UsageRecord;
use crate::wallet::{CLOSED, WALLET_SK, WALLETS_PK};

/// Wallets swept at once.
pub const SWEEP_CONCURRENCY: usize = 16;
/// Registry entries read a page at a time; the budget is checked between pages.
const PAGE: u32 = 200;

/// Reconciles the stale leases on one wallet (created before `cutoff` less a lease's life, so no process
/// serves a call from them any more): each call on record is charged (with the usage it recorded, or its
/// whole hold; a call that settled already is charged nothing more), then the rest is given back.
async fn sweep_leases(ports: &Ports, user_id: &str, item: &Item, cutoff: &str, report: &mut SweepReport) {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    for (attr, value) in &item.attrs {
        let Some(lease_id) = attr.strip_prefix(LEASE_PREFIX) else { continue };
        let (Some(reserved), true) = (value.as_i64(), lease_id.get(..13).is_some_and(|m| m < cutoff)) else {
            continue;
        };
        let reserve = Arc::new(ReserveAsRead::new(reserved));
        let mut ended = Vec::new();
        for (call_attr, call_value) in &item.attrs {
            let Some(hold_id) = call_attr.strip_prefix(LEASE_CALL_PREFIX) else { continue };
            let Some(recorded) = serde_json::from_value::<LeaseCall>(call_value.clone()).ok() else { continue };
            if recorded.lease != lease_id {
                continue;
            }
            ended.push(hold_id.to_owned());
            let hold = Hold {
                id: hold_id.to_owned(),
                user_id: user_id.to_owned(),
                amount: recorded.amount,
                balance: item.attrs.get("balance").and_then(Value::as_i64).unwrap_or(0),
                low_balance_threshold: low_balance_threshold(item),
                lease: Some(LeaseBacking { id: lease_id.to_owned(), reserve: reserve.clone() }),
                purse: None,
            };
            let pending: Option<PendingUsage> = self::recorded(item, &hold.usage_attr());
            let (cost, usage) = match pending {
                Some(pending) => (pending.cost, pending.usage),
                None => (recorded.amount, swept_usage(&recorded.call, recorded.amount, clock.now())),
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let expiry = expiries(config, clock.now());
            match settle(store, &BalanceHints::default(), &hold, Settlement { cost, usage, expiries: expiry, deadline })
                .await
            {
                Ok(_) => report.charged += 1,
                Err(e) => {
                    tracing::error!(%user_id, hold_id, error = %e, "stale lease call not charged yet");
                    return;
                }
            }
        }
        let mut returned = return_lease(store, user_id, lease_id, reserve.reserved(), &ended).await;
        if let Ok(Some(on_wallet)) = returned {
            // The wallet's figure wins (a settlement counted here may have been another's): the lease is stale,
            // and a late settlement of one of its calls takes from the available balance.
            returned = return_lease(store, user_id, lease_id, on_wallet, &ended).await;
        }
        match returned {
            Ok(None) => {
                tracing::error!(alert = crate::alerts::SETTLED_BY_SWEEPER, %user_id, lease_id, calls = ended.len(), "stale lease reconciled");
                report.leases += 1;
            }
            Ok(Some(other)) => tracing::error!(%user_id, lease_id, other, "stale lease reserves more than its record"),
            Err(e) => tracing::error!(%user_id, lease_id, error = %e, "stale lease not returned yet"),
        }
    }
}

/// What the sweeper did with stale holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Wallets looked at this run.
    #[serde(default)]
    pub wallets: usize,
    /// Charged: with the usage their call recorded, or with the whole hold (or found charged already by a
    /// run racing this one: one usage entry per hold decides).
    pub charged: usize,
    /// Given back: holds with no call on record.
    pub released: usize,
    /// Leases whose process stopped using them: their calls charged, the rest given back.
    pub leases: usize,
    /// Purses idle for `purses::PURSE_IDLE`: their dead calls charged, their spending posted, the rest back.
    #[serde(default)]
    pub purses: usize,
    /// The sweep stopped at its time budget; the next run goes on.
    pub out_of_time: bool,
}

impl SweepReport {
    fn add(&mut self, other: SweepReport) {
        self.wallets += other.wallets;
        self.charged += other.charged;
        self.released += other.released;
        self.leases += other.leases;
        self.purses += other.purses;
    }
}

/// Settles every hold older than `older_than` (more than the inference function can run), and every younger
/// one whose call stopped beating (`heartbeats`): their calls reached the provider and their processes died
/// before settling (see the module notes).
pub async fn sweep_stale_holds(
    ports: &Ports,
    older_than: Duration,
    budget: std::time::Duration,
) -> ApiResult<SweepReport> {
    let store = ports.store();
    let clock = ports.clock();
    let started = std::time::Instant::now();
    let cutoffs = Cutoffs {
        holds: format!("{:013}", (clock.now() - older_than).timestamp_millis().max(0)),
        leases: format!("{:013}", (clock.now() - older_than - LEASE_LIFE).timestamp_millis().max(0)),
    };
    let mut report = SweepReport::default();
    let resumed_at = load_cursor(store).await?;
    // From where the last run stopped to the end, then from the beginning up to there.
    let mut after = resumed_at.clone();
    let mut wrapped = resumed_at.is_none();
    loop {
        let page = store.query(Query::new(Table::Main, WALLETS_PK).limit(PAGE).after(after.clone())).await?;
        let wallets: Vec<&str> = page
            .items
            .iter()
            .map(|w| w.sk.as_str())
            .take_while(|sk| !wrapped || resumed_at.as_deref().is_none_or(|stop| *sk <= stop))
            .collect();
        let reached_start = wallets.len() < page.items.len();
        for group in wallets.chunks(SWEEP_CONCURRENCY) {
            let swept = join_all(group.iter().map(|user_id| sweep_one(ports, user_id, &cutoffs))).await;
            swept.into_iter().for_each(|one| report.add(one));
        }
        // The store's own next key (a page of expired entries comes back empty but still has one).
        after = page.next.clone();
        if reached_start || (page.next.is_none() && wrapped) {
            save_cursor(ports, None).await?;
            return Ok(report);
        }
        if page.next.is_none() {
            wrapped = true;
        }
        // Saved after every page: a run stopped before its end (a timeout) loses one page at most.
        save_cursor(ports, after.clone()).await?;
        if started.elapsed() >= budget {
            tracing::warn!(wallets = report.wallets, "the stale-hold sweep ran out of time; the next run goes on");
            report.out_of_time = true;
            return Ok(report);
        }
    }
}

/// The hold and lease cutoffs (creation millis, zero-padded: ids start so).
struct Cutoffs {
    holds: String,
    leases: String,
}

/// Sweeps one wallet: its stale holds and leases, and a closed wallet's refund request.
async fn sweep_one(ports: &Ports, user_id: &str, cutoffs: &Cutoffs) -> SweepReport {
    let store = ports.store();
    let mut report = SweepReport { wallets: 1, ..SweepReport::default() };
    let item = match store.get(Table::Main, &user_pk(user_id), WALLET_SK).await {
        Ok(Some(item)) => item,
        Ok(None) => return report,
        Err(e) => {
            tracing::error!(%user_id, error = %e, "wallet not swept this run");
            return report;
        }
    };
    sweep_wallet(ports, user_id, &item, &cutoffs.holds, &mut report).await;
    sweep_leases(ports, user_id, &item, &cutoffs.leases, &mut report).await;
    if item.attrs.keys().any(|k| k.starts_with(PURSE_ON_WALLET)) {
        sweep_purses(ports, user_id, &item, &mut report).await;
    }
    // A closed account's wallet: what its calls left unused goes to its refund request.
    if item.attrs.get(CLOSED) == Some(&json!(true))
        && let Err(e) = crate::wallet::sync_closed_wallet(ports, user_id).await
    {
        tracing::error!(%user_id, error = %e, "closed wallet not synced with its refund request this run");
    }
    report
}

/// Where the last run stopped, if it ran out of time.
async fn load_cursor<S: ItemStore + ?Sized>(store: &S) -> ApiResult<Option<String>> {
    let item = store.get(Table::Main, schema::SWEEPER_PK, schema::sk::CURSOR).await?;
    Ok(item.and_then(|i| i.attrs.get("after").and_then(Value::as_str).map(str::to_owned)))
}

async fn save_cursor(ports: &Ports, after: Option<String>) -> ApiResult<()> {
    let store = ports.store();
    let clock = ports.clock();
    let cursor = json!({ "after": after, "saved_at": clock.now() });
    let expires_at = (clock.now() + crate::retention::SWEEP_CURSOR_LIFETIME).timestamp();
    let item = Item::from_record(schema::SWEEPER_PK, schema::sk::CURSOR, &cursor, Some(expires_at))?;
    Ok(store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?)
}

/// Settles the stale holds (placed before `cutoff`, in millis) on one account's wallet item.
async fn sweep_wallet(ports: &Ports, user_id: &str, item: &Item, cutoff: &str, report: &mut SweepReport) {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    let balance = item.attrs.get("balance").and_then(Value::as_i64).unwrap_or(0);
    for (attr, value) in &item.attrs {
        let Some(id) = attr.strip_prefix(HOLD_PREFIX) else { continue };
        let Some(amount) = value.as_i64() else { continue };
        let young = id.get(..13).is_none_or(|m| m >= cutoff);
        if young && !call_is_dead(ports, user_id, item, id).await {
            continue;
        }
        let threshold = low_balance_threshold(item);
        let hold = Hold {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            amount,
            balance,
            low_balance_threshold: threshold,
            lease: None,
            purse: None,
        };
        let pending: Option<PendingUsage> = recorded(item, &hold.usage_attr());
        let call: Option<HeldCall> = recorded(item, &hold.call_attr());
        let (cost, usage) = match (pending, call) {
            (Some(pending), _) => (pending.cost, pending.usage),
            (None, Some(call)) => (amount, swept_usage(&call, amount, clock.now())),
            (None, None) => {
                if release(store, user_id, id, amount).await.unwrap_or(false) {
                    tracing::warn!(%user_id, hold_id = %id, amount, "stale hold with no call released");
                    report.released += 1;
                }
                continue;
            }
        };
        let hints = BalanceHints::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let expiry = expiries(config, clock.now());
        // One wallet that cannot be settled now is tried again next run; the others go on.
        match settle(store, &hints, &hold, Settlement { cost, usage, expiries: expiry, deadline }).await {
            // Found charged already (another run got there first), or nothing to charge: no alert.
            Ok(charged) if charged.cost == 0 => report.charged += 1,
            Ok(charged) => {
                tracing::error!(alert = crate::alerts::SETTLED_BY_SWEEPER, %user_id, hold_id = %id, cost = charged.cost, estimated = charged.estimated, "stale hold charged");
                report.charged += 1;
            }
            Err(e) => tracing::error!(%user_id, hold_id = %id, error = %e, "stale hold not charged yet"),
        }
    }
}

/// Returns the purses nobody used for `PURSE_IDLE` (an instance frozen or killed since): each of their calls
/// that stopped beating is charged (what it recorded as used, or its whole hold), then, with no call left
/// running in it, the purse's spending is posted and the rest goes back to the wallet.
async fn sweep_purses(ports: &Ports, user_id: &str, wallet: &Item, report: &mut SweepReport) {
    let store = ports.store();
    let purses = match purses_on(store, user_id, wallet).await {
        Ok(purses) => purses,
        Err(e) => return tracing::error!(%user_id, error = %e, "purses not swept this run"),
    };
    // An account closed or owing starts no call: purses a lost stop left running are stopped here.
    if stops_leases(wallet)
        && purses.iter().any(|p| p.item.attrs.get("stopped") != Some(&json!(true)))
        && let Err(e) = stop_purses(store, user_id).await
    {
        tracing::error!(%user_id, error = %e, "a closed or owing account's purses not stopped yet");
    }
    // Dead calls are charged in every purse (a busy instance's too); only idle purses go back.
    for purse in &purses {
        sweep_purse(ports, user_id, wallet, purse, report).await;
    }
}

/// One purse: its silent calls charged, and the purse retired if it is idle and no call runs in it.
async fn sweep_purse(ports: &Ports, user_id: &str, wallet: &Item, purse: &PurseSeen, report: &mut SweepReport) {
    let now = ports.now();
    let idle = purse.beat.is_none_or(|beat| now - beat >= PURSE_IDLE);
    let mut running = false;
    for (hold_id, amount) in purse.holds() {
        let placed =
            hold_id.get(..13).and_then(|m| m.parse::<i64>().ok()).and_then(DateTime::<Utc>::from_timestamp_millis);
        let silent = match placed {
            Some(placed) => {
                super::heartbeats::is_silent(ports.store(), now, user_id, &hold_id, placed).await.unwrap_or(false)
            }
            None => true,
        };
        if !silent {
            running = true;
            continue;
        }
        let hold = Hold {
            id: hold_id.clone(),
            user_id: user_id.to_owned(),
            amount,
            balance: 0,
            low_balance_threshold: low_balance_threshold(wallet),
            lease: None,
            purse: Some(PurseBacking { instance: purse.instance.clone(), book: None }),
        };
        if charge_dead_call(ports, purse, &hold).await {
            report.charged += 1;
        } else {
            running = true;
        }
    }
    if running || !idle {
        return;
    }
    match retire(ports, user_id, &purse.instance, expiries(ports.config(), now)).await {
        Ok(true) => report.purses += 1,
        Ok(false) => {
            tracing::warn!(%user_id, instance = %purse.instance, "an idle purse changed while swept; next run")
        }
        Err(e) => {
            tracing::error!(%user_id, instance = %purse.instance, error = %e, "an idle purse not returned yet")
        }
    }
}

/// Charges a dead instance's call in its purse: what it recorded as used, or its whole hold. False when it
/// could not be charged yet (the next run tries again).
async fn charge_dead_call(ports: &Ports, purse: &PurseSeen, hold: &Hold) -> bool {
    let (now, user_id, amount) = (ports.now(), &hold.user_id, hold.amount);
    let (cost, usage) = match purse.call(&hold.id) {
        (_, Some(pending)) => (pending.cost, pending.usage),
        (Some(call), None) => (amount, swept_usage(&call, amount, now)),
        (None, None) => (amount, swept_usage(&HeldCall::unknown(), amount, now)),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let settlement = Settlement { cost, usage, expiries: expiries(ports.config(), now), deadline };
    match settle(ports.store(), &BalanceHints::default(), hold, settlement).await {
        Ok(charged) => {
            if charged.cost > 0 {
                tracing::error!(alert = crate::alerts::SETTLED_BY_SWEEPER, %user_id, hold_id = %hold.id, cost = charged.cost, "a dead instance's call charged");
            }
            true
        }
        Err(e) => {
            tracing::error!(%user_id, hold_id = %hold.id, error = %e, "a dead instance's call not charged yet");
            false
        }
    }
}

/// Whether a hold younger than the inference function's timeout belongs to a call that died: it has a call
/// record (a call that beats while it runs) and its call has been silent too long (see `heartbeats`).
async fn call_is_dead(ports: &Ports, user_id: &str, item: &Item, id: &str) -> bool {
    let store = ports.store();
    let clock = ports.clock();
    let placed = id.get(..13).and_then(|m| m.parse::<i64>().ok()).and_then(DateTime::<Utc>::from_timestamp_millis);
    let (Some(placed), true) = (placed, item.attrs.contains_key(&format!("{HOLD_CALL_PREFIX}{id}"))) else {
        return false;
    };
    match super::heartbeats::is_silent(store, clock.now(), user_id, id, placed).await {
        Ok(silent) => silent,
        Err(e) => {
            tracing::warn!(%user_id, hold_id = %id, error = %e, "a call's heartbeat could not be read; swept later");
            false
        }
    }
}

/// A record kept on the wallet beside a hold, if present and readable.
fn recorded<T: serde::de::DeserializeOwned>(wallet: &Item, attr: &str) -> Option<T> {
    wallet.attrs.get(attr).and_then(|value| serde_json::from_value(value.clone()).ok())
}

/// The usage entry of a call whose process died before it learned its usage: everything it was allowed.
fn swept_usage(call: &HeldCall, amount: i64, now: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        id: call.request_id.clone(),
        key_id: call.key_id.clone(),
        model: call.model.clone(),
        // Not known at hold time (and DynamoDB Local refuses empty strings).
        provider: "unknown".into(),
        country: String::new(),
        prompt_tokens: call.prompt_tokens,
        completion_tokens: call.completion_tokens,
        total_tokens: call.prompt_tokens + call.completion_tokens,
        cost: amount,
        latency_ms: 0,
        ttft_ms: None,
        status: "settled_by_sweeper".into(),
        estimated: true,
        over_hold: 0,
        created_at: now,
    }
}
