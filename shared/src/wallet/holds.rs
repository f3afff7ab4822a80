//! Inference holds: hold the request's maximum cost before forwarding, settle the actual cost after, and
//! release holds whose request died. Concurrent requests can never take a balance below zero.
//!
//! - **Hold** (one write, before forwarding): on the wallet item, `available -= h`, `held += h` and an
//!   attribute `hold_<id> = h`, only if `available >= h`. The write returns the wallet, so the balance at
//!   hold time is known without a read.
//! - **Settle** (one transaction, after): remove the hold attribute, `held -= h`, `balance -= c`,
//!   `available += h - c`, plus the ledger entry and the usage log, only if the hold is still there and the
//!   balance is what it was at hold time (so `balance_after` is exact). `c` is what the provider reported,
//!   in full: the hold bounds it (see `shared::inference`), and should a report ever exceed the hold the
//!   excess is charged too, recorded on the usage entry and logged as an alert. The wallet then goes below
//!   zero by that excess only, and takes no new hold until a top-up covers it. If another balance change got
//!   in between, the wallet is read again and the settlement retried, with backoff, until a deadline.
//! - **Release** (failure paths before the provider answered): give the hold back, once (conditional on its
//!   attribute).
//! - **Sweep** (the scheduled jobs, for holds older than the inference function can run): the hold's write
//!   also recorded which call it is for (`holdcall_<id>`: request, key, model and the bound), and a
//!   settlement that could not commit in its invocation records what the call used (`holdusage_<id>`,
//!   written on the wallet before giving up). The sweeper charges the recorded usage, or, with none, the
//!   whole hold: a hold outlives its invocation only when the call reached the provider and its process
//!   died before settling, so the provider may have billed all of it. Holds without a call record (written
//!   directly, as tests do) are released.
//!
//! Both writes are safe to repeat after a lost response (a store client's retry): the hold is written only
//! where its attribute is absent, and the settlement's usage entry has a key derived from the request id,
//! so a repeated settlement finds it and charges nothing more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ledger::{LedgerEntry, LedgerKind, entry_put};
use super::{CLOSED, WALLET_SK};
use crate::accounts::user_pk;
use crate::clock::Clock;
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::secrets::random_suffix;
use crate::store::{Condition, Conditional, Item, ItemStore, StoreError, Table, Update, WriteOp};
use crate::usage::{self, UsageRecord};

pub(super) const HOLD_PREFIX: &str = "hold_";
/// Beside each hold: the call it is for (`HeldCall`), and, once known but not yet settled, its usage.
const HOLD_CALL_PREFIX: &str = "holdcall_";
const HOLD_USAGE_PREFIX: &str = "holdusage_";
/// A budget lease's reserve (`super::leases`), counted in `held` like a hold.
pub const LEASE_PREFIX: &str = "lease_";
/// A lease serves new calls for this long after it was opened (its id starts with that time); the sweeper
/// reconciles it once its last call can no longer be running.
pub const LEASE_LIFE: Duration = Duration::seconds(60);
/// Backoff between settlement attempts on a busy wallet: doubling from the first to the last.
const SETTLE_BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
const SETTLE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(100);
/// After this many lost races on a busy wallet, a settlement records what its call used (for the sweeper).
const RECORD_AFTER_CONFLICTS: u32 = 3;
/// The longest a settlement waits for its wallet's turn before it goes ahead without it (the balance
/// condition keeps it exact; it only risks a retry): one stuck settlement never holds up the rest.
const TURN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// The latest wallet balance this process has seen per user, used as a settlement's expected balance.
///
/// With several requests in flight on one wallet, the balance seen at hold time is usually stale by the
/// time the request settles (others settled in between), and every settlement would cost a failed
/// transaction and a read before succeeding. A stale hint costs only that retry: the balance condition
/// keeps every settlement exact whatever the hint says.
///
/// Settlements of one wallet in this process also take turns ([`BalanceHints::settle_turn`]): each starts
/// from the balance the previous one left, so its hint is exact and it commits at the first try. Racing
/// instead, fifty calls of one account each found the balance changed under them, read it again and
/// retried, and the account's throughput fell as its concurrency rose.
#[derive(Debug, Default)]
pub struct BalanceHints {
    latest: Mutex<HashMap<String, i64>>,
    /// The available balance each user's wallet reported at its last hold (sizes budget leases).
    available: Mutex<HashMap<String, i64>>,
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl BalanceHints {
    const CAPACITY: usize = 100_000;

    /// Waits for this wallet's turn to settle; the turn ends when the guard is dropped. Wallets nobody is
    /// settling are forgotten once the map is full, so it stays bounded.
    pub async fn settle_turn(&self, user_id: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lane = {
            let mut lanes = self.lanes.lock().ok()?;
            if lanes.len() >= Self::CAPACITY && !lanes.contains_key(user_id) {
                lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
            }
            Arc::clone(lanes.entry(user_id.to_owned()).or_default())
        };
        Some(lane.lock_owned().await)
    }

    /// Remembers a user's figure in one of the maps; a full map starts over, so it stays bounded.
    fn remember(map: &Mutex<HashMap<String, i64>>, user_id: &str, value: i64) {
        if let Ok(mut known) = map.lock() {
            if known.len() >= Self::CAPACITY && !known.contains_key(user_id) {
                known.clear();
            }
            known.insert(user_id.to_owned(), value);
        }
    }

    pub fn note(&self, user_id: &str, balance: i64) {
        Self::remember(&self.latest, user_id, balance);
    }

    /// Notes a balance only where none is known: a hold's answer may arrive after a later settlement noted
    /// a newer balance, and holds do not change the balance anyway.
    pub fn note_if_unknown(&self, user_id: &str, balance: i64) {
        if self.get(user_id).is_none() {
            self.note(user_id, balance);
        }
    }

    pub fn get(&self, user_id: &str) -> Option<i64> {
        self.latest.lock().ok().and_then(|latest| latest.get(user_id).copied())
    }

    pub fn note_available(&self, user_id: &str, available: i64) {
        Self::remember(&self.available, user_id, available);
    }

    pub fn available(&self, user_id: &str) -> Option<i64> {
        self.available.lock().ok().and_then(|known| known.get(user_id).copied())
    }
}

/// A placed hold.
#[derive(Debug, Clone)]
pub struct Hold {
    /// `<millis>_<rand>`: the time lets the sweeper find stale holds without another index.
    pub id: String,
    pub user_id: String,
    pub amount: i64,
    /// The wallet balance right after the hold was placed (holds do not change the balance).
    pub balance: i64,
    /// The account's low-balance alert threshold, as the wallet said when the hold was placed.
    pub low_balance_threshold: i64,
    /// Served from a budget lease (see `super::leases`) instead of its own attribute on the wallet.
    pub lease: Option<LeaseBacking>,
}

/// The lease a hold was served from: its id, and what the lease still reserves on the wallet.
#[derive(Debug, Clone)]
pub struct LeaseBacking {
    pub id: String,
    pub reserve: Arc<dyn LeaseReserve>,
}

/// What a settlement needs to know about (and tell) the lease its hold came from.
pub trait LeaseReserve: std::fmt::Debug + Send + Sync {
    /// What the lease reserves on the wallet now (its `lease_<id>` attribute).
    fn reserved(&self) -> i64;
    /// A settlement committed, taking `from_lease` out of the lease's reserve.
    fn settled(&self, from_lease: i64);
    /// A settlement found the wallet's low-balance threshold changed: later holds carry this one.
    fn threshold_seen(&self, _threshold: i64) {}
    /// The wallet was found closed, or without this lease: the lease serves no new call.
    fn retire(&self);
    /// The call `hold_id` ended (settled, or never reached a provider): its hold goes back to the lease.
    fn finished(self: Arc<Self>, hold_id: &str);
    /// The call `hold_id` could not be settled: its hold stays taken and on record for the sweeper, and the
    /// lease serves no new call (it can no longer be given back whole).
    fn abandoned(self: Arc<Self>, hold_id: &str);
}

/// The wallet attribute holding a lease's reserve.
pub fn lease_attr(lease_id: &str) -> String {
    format!("{LEASE_PREFIX}{lease_id}")
}

/// The wallet attribute with the account's low-balance alert threshold (units); absent: the default.
pub const LOW_BALANCE_THRESHOLD: &str = "low_balance_threshold";
/// The default low-balance alert threshold: ₹100.
pub const DEFAULT_LOW_BALANCE_THRESHOLD: i64 = 100 * crate::money::UNITS_PER_RUPEE;

/// The threshold a wallet item records, or the default.
pub fn low_balance_threshold(wallet: &Item) -> i64 {
    wallet.attrs.get(LOW_BALANCE_THRESHOLD).and_then(Value::as_i64).unwrap_or(DEFAULT_LOW_BALANCE_THRESHOLD)
}

impl Hold {
    fn attr(&self) -> String {
        format!("{HOLD_PREFIX}{}", self.id)
    }

    pub(super) fn call_attr(&self) -> String {
        format!("{HOLD_CALL_PREFIX}{}", self.id)
    }

    pub(super) fn usage_attr(&self) -> String {
        format!("{HOLD_USAGE_PREFIX}{}", self.id)
    }

    /// The attribute whose presence says this hold is still unsettled: its own, or its lease's.
    fn reserve_attr(&self) -> String {
        self.lease.as_ref().map_or_else(|| self.attr(), |lease| lease_attr(&lease.id))
    }
}

/// The call a hold is for, written with it, so the sweeper can charge a call whose process died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCall {
    pub request_id: String,
    pub key_id: String,
    pub model: String,
    /// The bound the hold was computed from.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What a call used, recorded when its settlement could not commit in its own invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUsage {
    pub cost: i64,
    pub usage: UsageRecord,
}

/// When the entries a settlement writes expire, for a settlement at `now`.
pub fn expiries(config: &crate::config::Config, now: DateTime<Utc>) -> Expiries {
    Expiries {
        usage: config.retention.until(crate::retention::Span::Usage, now),
        ledger: super::payment_expiry(config, now),
    }
}

fn insufficient(amount: i64) -> ApiError {
    ApiError::PaymentRequired {
        code: "insufficient_balance",
        message: format!(
            "your wallet balance cannot cover this request (up to ₹{} may be charged); top up to continue",
            crate::money::format_inr(amount)
        ),
    }
}

/// Holds `amount` units of the user's available balance, or answers 402 `insufficient_balance`.
pub async fn place_hold<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    hints: &BalanceHints,
    user_id: &str,
    amount: i64,
) -> ApiResult<Hold> {
    hold_for(store, clock, hints, user_id, amount, None).await
}

/// Holds `amount` for a call, recording the call in the same write (for the sweeper).
pub async fn place_call_hold<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    hints: &BalanceHints,
    user_id: &str,
    amount: i64,
    call: &HeldCall,
) -> ApiResult<Hold> {
    hold_for(store, clock, hints, user_id, amount, Some(call)).await
}

async fn hold_for<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    hints: &BalanceHints,
    user_id: &str,
    amount: i64,
    call: Option<&HeldCall>,
) -> ApiResult<Hold> {
    let amount = amount.max(1);
    let mut hold = Hold {
        id: new_hold_id(clock),
        user_id: user_id.to_owned(),
        amount,
        balance: 0,
        low_balance_threshold: DEFAULT_LOW_BALANCE_THRESHOLD,
        lease: None,
    };
    let mut update = Update::new(Table::Main, user_pk(user_id), WALLET_SK);
    if let Some(call) = call {
        update =
            update.set(&hold.call_attr(), serde_json::to_value(call).map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    let update = update
        .set(&hold.attr(), json!(amount))
        .add("held", amount)
        .add("available", -amount)
        // A closed account's wallet takes no new holds: its keys stop at once, whatever caches still say.
        .when(Condition::All(vec![
            Condition::AttrAtLeast("available".into(), amount),
            Condition::AttrAbsentOrEquals(CLOSED.into(), json!(false)),
            // Hold attributes are numbers, so this means "absent": a repeated write applies nothing twice.
            Condition::AttrAbsentOrEquals(hold.attr(), json!(false)),
        ]));
    match store.update(update).await {
        Ok(wallet) => {
            hold.balance = wallet.attrs.get("balance").and_then(Value::as_i64).unwrap_or(0);
            hold.low_balance_threshold = low_balance_threshold(&wallet);
            hints.note_if_unknown(user_id, hold.balance);
            hints.note_available(user_id, wallet.attrs.get("available").and_then(Value::as_i64).unwrap_or(0));
            Ok(hold)
        }
        Err(StoreError::ConditionFailed) => {
            // Only on refusal: our own write, repeated after its answer was lost; a closed account; or an
            // empty wallet.
            let wallet = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?;
            if let Some(placed) = wallet.as_ref().filter(|w| w.attrs.get(&hold.attr()) == Some(&json!(amount))) {
                hold.balance = placed.attrs.get("balance").and_then(Value::as_i64).unwrap_or(0);
                hold.low_balance_threshold = low_balance_threshold(placed);
                hints.note_available(user_id, placed.attrs.get("available").and_then(Value::as_i64).unwrap_or(0));
                return Ok(hold);
            }
            if wallet.is_some_and(|w| w.attrs.get(CLOSED) == Some(&json!(true))) {
                return Err(ApiError::unauthenticated(
                    "invalid_api_key",
                    "the account this API key belongs to is closed",
                ));
            }
            Err(insufficient(amount))
        }
        Err(e) => Err(e.into()),
    }
}

/// A new hold's id, `<millis>_<rand>`: the time lets the sweeper find stale holds without another index.
pub fn new_hold_id(clock: &dyn Clock) -> String {
    timed_id(clock.now().timestamp_millis().max(0))
}

/// `<millis>_<rand>`, the id of a hold or a lease made at `millis`.
pub fn timed_id(millis: i64) -> String {
    format!("{millis:013}_{}", random_suffix())
}

/// Gives `amount` of a lease's reserve back to the available balance, the lease reserving `reserved` before
/// (the lease goes on with the rest). Conditioned on that figure, so a repeated write applies once.
pub async fn shrink_lease<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    lease_id: &str,
    (reserved, amount): (i64, i64),
) -> ApiResult<bool> {
    let attr = lease_attr(lease_id);
    let update = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .set(&attr, json!(reserved - amount))
        .add("held", -amount)
        .add("available", amount)
        .when(Condition::AttrEquals(attr.clone(), json!(reserved)));
    Ok(store.update(update).await.applied()?.is_some())
}

/// When the entries a settlement writes expire (epoch seconds): the usage log and the ledger entry.
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    pub usage: i64,
    pub ledger: i64,
}

/// Settles a hold: charges `cost` in full, writes the ledger entry and the usage log in the same
/// transaction, and returns the usage record as written (with the charged cost). Retries on a busy wallet
/// until `deadline`.
pub async fn settle<S: ItemStore + ?Sized>(
    store: &S,
    hints: &BalanceHints,
    hold: &Hold,
    cost: i64,
    mut usage: UsageRecord,
    expiries: Expiries,
    deadline: std::time::Instant,
) -> ApiResult<UsageRecord> {
    let charge = charge_in_full(hold, cost, &mut usage);
    // Until this settlement commits or gives up, no other settlement of this wallet in this process starts;
    // a turn that does not come within TURN_WAIT_MAX (or the deadline) is not waited for.
    let wait_until = deadline.min(std::time::Instant::now() + TURN_WAIT_MAX);
    let _turn = tokio::time::timeout_at(wait_until.into(), hints.settle_turn(&hold.user_id)).await.ok().flatten();
    let mut expected_balance = hints.get(&hold.user_id).unwrap_or(hold.balance);
    // What the hold's lease reserves, as this process knows it (exact while settlements take turns); after a
    // lost race, as the wallet says.
    let mut lease_reserve = hold.lease.as_ref().map(|lease| lease.reserve.reserved());
    // The wallet as the settlement expects it besides the balance: its alert threshold, and (for a lease,
    // which learns nothing else from the wallet while it serves) that it is open.
    let leased = hold.lease.is_some();
    let mut expected = Expected { threshold: hold.low_balance_threshold, open: leased, solvent: leased };
    let mut backoff: Option<std::time::Duration> = None;
    let mut recorded = false;
    let mut conflicts = 0u32;
    loop {
        // Never more than the call's own hold (what it took from the lease); a report above it comes from the
        // available balance, as for a hold of its own.
        let from_lease = lease_reserve.map(|reserve| charge.min(hold.amount).min(reserve.max(0)));
        let ops = settlement_ops(hold, charge, (expected_balance, expected), from_lease, &usage, expiries)?;
        match store.transact(ops).await {
            Ok(()) => {
                hints.note(&hold.user_id, expected_balance.saturating_sub(charge));
                if let (Some(lease), Some(taken)) = (&hold.lease, from_lease) {
                    lease.reserve.settled(taken);
                    if expected.threshold != hold.low_balance_threshold {
                        lease.reserve.threshold_seen(expected.threshold);
                    }
                }
                return Ok(usage);
            }
            Err(StoreError::ConditionFailed) => {
                // This settlement already committed (its answer was lost and the write repeated)?
                if let Some(done) = usage::entry(store, &hold.user_id, &hold.id).await? {
                    // Ours (the same record, to the millisecond) or another settlement's of the same hold (the
                    // live one's, found by the sweeper, or the sweeper's, found late).
                    let ours = done == usage;
                    if let (Some(lease), Some(taken), true) = (&hold.lease, from_lease, ours) {
                        // Every attempt since the last look at the wallet sent this same share, and only one of
                        // them can have committed.
                        lease.reserve.settled(taken);
                        // A usage record written after the commit (its answer lost too) is not for the sweeper
                        // (a lease outlives its calls, so nothing else removes it).
                        let forget = Update::new(Table::Main, user_pk(&hold.user_id), WALLET_SK)
                            .remove(&hold.usage_attr())
                            .remove(&format!("{LEASE_CALL_PREFIX}{}", hold.id));
                        let _ = store.update(forget).await;
                    }
                    return Ok(done);
                }
                // Another balance change got in first, or the hold was swept. Back off first, then look at
                // the wallet again and retry at once: the balance read right before the retry is the one
                // with a chance to win.
                conflicts += 1;
                backoff = match wait_before_retry(backoff, deadline).await {
                    Ok(next) => next,
                    Err(out_of_time) => {
                        // Giving up: what the call used goes on record first, so the sweeper charges exactly
                        // that, never the whole hold.
                        if !recorded {
                            let _ = record_pending(store, hold, charge, &usage).await;
                        }
                        return Err(out_of_time);
                    }
                };
                let current = store.get(Table::Main, &user_pk(&hold.user_id), WALLET_SK).await?;
                let Some(current) = current else { return Err(ApiError::Internal("wallet vanished".into())) };
                expected_balance = current.attrs.get("balance").and_then(Value::as_i64).unwrap_or(0);
                hints.note(&hold.user_id, expected_balance);
                expected.threshold = low_balance_threshold(&current);
                if let Some(lease) = &hold.lease {
                    // A lease the sweeper already returned reserves nothing: the charge comes from the balance
                    // (never forgiven), and the lease serves no other call.
                    let on_wallet = current.attrs.get(&lease_attr(&lease.id)).and_then(Value::as_i64);
                    lease_reserve = Some(on_wallet.unwrap_or(0));
                    if on_wallet.is_none() {
                        lease.reserve.retire();
                    }
                    if stops_leases(&current) {
                        // The call is charged all the same; the lease serves no other (a closed account, or
                        // a dispute that took the available balance below zero: no new call starts).
                        lease.reserve.retire();
                        expected.open = current.attrs.get(CLOSED) != Some(&json!(true));
                    }
                    expected.solvent = false;
                } else if !current.attrs.contains_key(&hold.attr()) {
                    // Settled already, by the sweeper (a call with a record) or released (one without):
                    // either way that decision stands, and charging again would charge twice.
                    tracing::warn!(request_id = %usage.id, hold_id = %hold.id, "the hold was already swept");
                    return Ok(UsageRecord { cost: 0, ..usage });
                }
                // A wallet this busy: from now on what the call used is on record, so that even if this
                // invocation ends before the settlement commits, the sweeper charges it.
                if conflicts >= RECORD_AFTER_CONFLICTS && !recorded && !current.attrs.contains_key(&hold.usage_attr()) {
                    recorded = record_pending(store, hold, charge, &usage).await.is_ok();
                }
            }
            // The store failed (throttled, unreachable): what the call used goes on record if it can, and
            // the settlement is tried again until the deadline.
            Err(e) => {
                tracing::warn!(error = %e, request_id = %usage.id, "settlement failed; retrying");
                if !recorded {
                    recorded = record_pending(store, hold, charge, &usage).await.is_ok();
                }
                backoff = match wait_before_retry(backoff, deadline).await {
                    Ok(next) => next,
                    Err(_) => return Err(e.into()),
                };
            }
        }
    }
}

/// Whether a wallet stops its leases from serving new calls: closed, or owing (a dispute or a refund took
/// its available balance below zero, and no new call may start until a top-up covers it).
pub fn stops_leases(wallet: &Item) -> bool {
    wallet.attrs.get(CLOSED) == Some(&json!(true))
        || wallet.attrs.get("available").and_then(Value::as_i64).is_some_and(|available| available < 0)
}

/// What a settlement expects of the wallet besides its balance.
#[derive(Debug, Clone, Copy)]
struct Expected {
    threshold: i64,
    /// Not closed (checked for leases only).
    open: bool,
    /// Nothing owed: the available balance is not below zero (checked for leases only, until the wallet
    /// was read: a settlement that finds it owing stops the lease, then commits regardless).
    solvent: bool,
}

/// What a settlement charges: the provider's cost in full (never below zero), noted on the usage record with
/// what exceeded the hold.
fn charge_in_full(hold: &Hold, cost: i64, usage: &mut UsageRecord) -> i64 {
    let charge = cost.max(0);
    usage.cost = charge;
    usage.over_hold = (charge - hold.amount).max(0);
    if usage.over_hold > 0 {
        // Nothing the provider bills is forgiven, but a report above the bound means the bound is wrong.
        tracing::error!(
            alert = crate::alerts::USAGE_OVER_HOLD,
            user_id = %hold.user_id,
            request_id = %usage.id,
            hold = hold.amount,
            cost = charge,
            "the provider reported more than the hold; charged in full"
        );
    }
    charge
}

/// The settlement's transaction, expecting the wallet at `expected_balance`: the hold removed and the charge
/// taken, the usage entry, and (for a charge) the ledger entry. A hold served from a lease takes `from_lease`
/// of the charge out of the lease's reserve and the rest (a report above the hold) from the available balance.
fn settlement_ops(
    hold: &Hold,
    charge: i64,
    (expected_balance, expected): (i64, Expected),
    from_lease: Option<i64>,
    usage: &UsageRecord,
    expiries: Expiries,
) -> ApiResult<Vec<WriteOp>> {
    let threshold = expected.threshold;
    let mut conditions = vec![
        Condition::AttrEquals("balance".into(), json!(expected_balance)),
        // The alert below is decided on this threshold: a changed one makes the settlement read it again.
        if threshold == DEFAULT_LOW_BALANCE_THRESHOLD {
            Condition::AttrAbsentOrEquals(LOW_BALANCE_THRESHOLD.into(), json!(threshold))
        } else {
            Condition::AttrEquals(LOW_BALANCE_THRESHOLD.into(), json!(threshold))
        },
    ];
    if expected.open {
        conditions.push(Condition::AttrAbsentOrEquals(CLOSED.into(), json!(false)));
    }
    if expected.solvent {
        conditions.push(Condition::AttrAtLeast("available".into(), 0));
    }
    let wallet =
        Update::new(Table::Main, user_pk(&hold.user_id), WALLET_SK).add("balance", -charge).remove(&hold.usage_attr());
    let wallet = match (&hold.lease, from_lease) {
        (Some(lease), Some(taken)) => {
            let attr = lease_attr(&lease.id);
            // Its record goes too, whoever wrote it (its lease's keeper, or a settlement in trouble).
            let wallet = wallet
                .remove(&format!("{LEASE_CALL_PREFIX}{}", hold.id))
                .add("held", -taken)
                .add("available", taken - charge);
            if taken > 0 {
                conditions.push(Condition::AttrAtLeast(attr.clone(), taken));
                wallet.add(&attr, -taken)
            } else {
                wallet
            }
        }
        _ => {
            conditions.push(Condition::AttrAtLeast(hold.attr(), 0));
            wallet
                .remove(&hold.attr())
                .remove(&hold.call_attr())
                .add("held", -hold.amount)
                .add("available", hold.amount - charge)
        }
    };
    let mut ops = vec![
        WriteOp::Update(wallet.when(Condition::All(conditions))),
        // Keyed on the hold: the live settlement, a repeat of it and the sweeper all write this one
        // entry, so at most one of them commits.
        usage::entry_put(&hold.user_id, &hold.id, usage, expiries.usage)?,
    ];
    if charge > 0 {
        let balance_after = expected_balance.saturating_sub(charge);
        let entry = LedgerEntry::new(LedgerKind::Usage, -charge, balance_after, &usage.id, usage.created_at);
        ops.push(entry_put(&hold.user_id, &entry, expiries.ledger)?);
        // Exactly one settlement takes the balance from at or above the threshold to below it (each commits
        // only on the balance it expects), so the alert goes once per crossing, with that settlement.
        // A threshold of 0 turns the alert off.
        if threshold > 0 && expected_balance >= threshold && balance_after < threshold {
            let alert = OutboxMail::new(MailKind::LowBalance, &hold.user_id, usage.created_at)
                .param("balance", balance_after)
                .param("threshold", threshold);
            ops.push(enqueue(&alert)?);
        }
    }
    Ok(ops)
}

/// Waits before a settlement's next attempt: not at all the first time (a fresh balance usually wins), then
/// doubling; `Unavailable` once the deadline would pass. Returns the next wait.
async fn wait_before_retry(
    backoff: Option<std::time::Duration>,
    deadline: std::time::Instant,
) -> ApiResult<Option<std::time::Duration>> {
    if let Some(wait) = backoff {
        if std::time::Instant::now() + wait > deadline {
            return Err(ApiError::Unavailable("the wallet is too busy to settle this request".into()));
        }
        tokio::time::sleep(wait).await;
    }
    Ok(Some(backoff.map_or(SETTLE_BACKOFF_FIRST, |wait| (wait * 2).min(SETTLE_BACKOFF_MAX))))
}

/// Records what a call used beside its hold, for the sweeper; only while the hold is still there.
pub async fn record_pending<S: ItemStore + ?Sized>(
    store: &S,
    hold: &Hold,
    cost: i64,
    usage: &UsageRecord,
) -> ApiResult<()> {
    let pending = PendingUsage { cost, usage: usage.clone() };
    let value = serde_json::to_value(&pending).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut update = Update::new(Table::Main, user_pk(&hold.user_id), WALLET_SK).set(&hold.usage_attr(), value);
    if let Some(lease) = &hold.lease {
        // The call's record beside its lease too (its keeper may not have written it): the sweeper walks those.
        let call = HeldCall {
            request_id: usage.id.clone(),
            key_id: usage.key_id.clone(),
            model: usage.model.clone(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        };
        let record = LeaseCall { lease: lease.id.clone(), amount: hold.amount, call };
        let record = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        update = update.set(&format!("{LEASE_CALL_PREFIX}{}", hold.id), record);
    }
    let update = update.when(Condition::AttrAtLeast(hold.reserve_attr(), 0));
    store.update(update).await?;
    Ok(())
}

/// Gives a hold back (failure paths). Releasing twice, or after settlement, changes nothing.
pub async fn release<S: ItemStore + ?Sized>(store: &S, user_id: &str, hold_id: &str, amount: i64) -> ApiResult<bool> {
    let attr = format!("{HOLD_PREFIX}{hold_id}");
    let update = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .remove(&attr)
        .remove(&format!("{HOLD_CALL_PREFIX}{hold_id}"))
        .remove(&format!("{HOLD_USAGE_PREFIX}{hold_id}"))
        .add("held", -amount)
        .add("available", amount)
        .when(Condition::AttrEquals(attr.clone(), json!(amount)));
    Ok(store.update(update).await.applied()?.is_some())
}

/// Beside a lease: a call it is serving, recorded for the sweeper (`leasecall_<hold id>`).
pub(super) const LEASE_CALL_PREFIX: &str = "leasecall_";
/// Beside a lease: how many times it was extended (each extension is written once).
const LEASE_STEP_PREFIX: &str = "leasestep_";

/// A call served from a lease, as recorded on the wallet while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCall {
    pub lease: String,
    /// The call's hold: what it may cost.
    pub amount: i64,
    pub call: HeldCall,
}

/// What a lease write learned about the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletNow {
    pub balance: i64,
    pub available: i64,
    pub low_balance_threshold: i64,
}

impl WalletNow {
    fn of(wallet: &Item) -> Self {
        let number = |name: &str| wallet.attrs.get(name).and_then(Value::as_i64).unwrap_or(0);
        Self {
            balance: number("balance"),
            available: number("available"),
            low_balance_threshold: low_balance_threshold(wallet),
        }
    }
}

/// Why a lease could not be opened or extended.
#[derive(Debug)]
pub enum LeaseRefused {
    /// The available balance does not cover it (or the lease is gone).
    Insufficient,
    /// The account is closed.
    Closed,
    /// The lease to extend is no longer on the wallet (the sweeper reconciled it).
    Gone,
    Store(StoreError),
}

/// Moves `amount` of the available balance into a lease (one conditional write): step 0 opens it, step `n`
/// is its `n`th extension. Only while the available balance covers it and the account is open. Each step
/// is written once: a repeated write (its answer lost) finds its step done and applies nothing twice.
pub async fn reserve_for_lease<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    lease_id: &str,
    amount: i64,
    step: u32,
) -> Result<WalletNow, LeaseRefused> {
    let attr = lease_attr(lease_id);
    let step_attr = format!("{LEASE_STEP_PREFIX}{lease_id}");
    let open = step == 0;
    let present = if open {
        // Lease attributes are numbers, so this means "absent".
        Condition::AttrAbsentOrEquals(attr.clone(), json!(false))
    } else {
        Condition::All(vec![
            Condition::AttrAtLeast(attr.clone(), 0),
            Condition::AttrEquals(step_attr.clone(), json!(step - 1)),
        ])
    };
    let update = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .add(&attr, amount)
        .set(&step_attr, json!(step))
        .add("held", amount)
        .add("available", -amount)
        .when(Condition::All(vec![
            Condition::AttrAtLeast("available".into(), amount),
            Condition::AttrAbsentOrEquals(CLOSED.into(), json!(false)),
            present,
        ]));
    let refused = match store.update(update).await {
        Ok(wallet) => return Ok(WalletNow::of(&wallet)),
        Err(StoreError::ConditionFailed) => None,
        // The answer may have been lost after the write applied: the wallet says.
        Err(e) => Some(e),
    };
    let wallet = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await.map_err(LeaseRefused::Store)?;
    match (wallet, refused) {
        // Our own step, applied (its answer lost, or repeated after that).
        (Some(w), _) if w.attrs.contains_key(&attr) && w.attrs.get(&step_attr) == Some(&json!(step)) => {
            Ok(WalletNow::of(&w))
        }
        (_, Some(e)) => Err(LeaseRefused::Store(e)),
        (Some(w), None) if w.attrs.get(CLOSED) == Some(&json!(true)) => Err(LeaseRefused::Closed),
        (Some(w), None) if !open && !w.attrs.contains_key(&attr) => Err(LeaseRefused::Gone),
        _ => Err(LeaseRefused::Insufficient),
    }
}

/// Records the calls a lease is serving and forgets those that ended, in one write (while the lease is there).
pub async fn record_lease_calls<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    lease_id: &str,
    running: &[(String, LeaseCall)],
    ended: &[String],
) -> crate::store::StoreResult<()> {
    let mut update = Update::new(Table::Main, user_pk(user_id), WALLET_SK);
    for (hold_id, call) in running {
        let value = serde_json::to_value(call).map_err(|e| StoreError::Malformed(e.to_string()))?;
        update = update.set(&format!("{LEASE_CALL_PREFIX}{hold_id}"), value);
    }
    for hold_id in ended {
        update = update.remove(&format!("{LEASE_CALL_PREFIX}{hold_id}"));
    }
    store.update(update.when(Condition::AttrAtLeast(lease_attr(lease_id), 0))).await?;
    Ok(())
}

/// Gives a lease's reserve back to the available balance and removes it with the call records named
/// (ended calls): only if it still reserves exactly `reserved` (nothing is running on it). Returns what the
/// wallet says it reserves when that differs (`None`: returned, or gone already).
pub async fn return_lease<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    lease_id: &str,
    reserved: i64,
    ended: &[String],
) -> ApiResult<Option<i64>> {
    let attr = lease_attr(lease_id);
    let mut update = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .remove(&attr)
        .remove(&format!("{LEASE_STEP_PREFIX}{lease_id}"))
        .add("held", -reserved)
        .add("available", reserved);
    for hold_id in ended {
        update =
            update.remove(&format!("{LEASE_CALL_PREFIX}{hold_id}")).remove(&format!("{HOLD_USAGE_PREFIX}{hold_id}"));
    }
    if store.update(update.when(Condition::AttrEquals(attr.clone(), json!(reserved)))).await.applied()?.is_some() {
        return Ok(None);
    }
    let wallet = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?;
    Ok(wallet.and_then(|w| w.attrs.get(&attr).and_then(Value::as_i64)))
}

/// A lease's reserve as read from the wallet, for settlements outside the process that owns the lease (the
/// sweeper's): what they take out is counted down here.
#[derive(Debug)]
pub struct ReserveAsRead(std::sync::atomic::AtomicI64);

impl ReserveAsRead {
    pub fn new(reserved: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(reserved))
    }
}

impl LeaseReserve for ReserveAsRead {
    fn reserved(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn settled(&self, from_lease: i64) {
        self.0.fetch_sub(from_lease, std::sync::atomic::Ordering::SeqCst);
    }
    fn retire(&self) {}
    fn finished(self: Arc<Self>, _hold_id: &str) {}
    fn abandoned(self: Arc<Self>, _hold_id: &str) {}
}

pub use super::sweeper::{SweepReport, sweep_stale_holds};
