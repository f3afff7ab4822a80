//! Settlement: charge a call what the provider reported, in one transaction with its ledger entry and usage
//! log, and take its hold off the wallet.
//!
//! - **Settle** (one transaction, after): remove the hold attribute, `held -= h`, `balance -= c`,
//!   `available += h - c`, plus the ledger entry and the usage log, only if the hold is still there and the
//!   balance is what it was at hold time (so `balance_after` is exact). `c` is what the provider reported,
//!   in full: the hold bounds it (see `shared::inference`), and should a report ever exceed the hold the
//!   excess is charged too, recorded on the usage entry and logged as an alert. The wallet then goes below
//!   zero by that excess only, and takes no new hold until a top-up covers it. If another balance change got
//!   in between, the wallet is read again and the settlement retried, with backoff, until a deadline.
//! - A settlement that could not commit in its invocation records what the call used (`holdusage_<id>`,
//!   written on the wallet before giving up), so the sweeper charges exactly that.
//!
//! Safe to repeat after a lost response: the usage entry has a key derived from the hold, so a repeated
//! settlement finds it and charges nothing more.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::accounts::user_pk;
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::{Condition, Item, ItemStore, StoreError, Table, Update, WriteOp};
use crate::usage::{self, UsageRecord};
use crate::wallet::CLOSED;
use crate::wallet::WALLET_SK;
use crate::wallet::ledger::{LedgerEntry, LedgerKind, entry_put};

use super::holds::{
    BalanceHints, DEFAULT_LOW_BALANCE_THRESHOLD, HeldCall, Hold, LOW_BALANCE_THRESHOLD, PendingUsage,
    low_balance_threshold,
};
use super::reservations::{LEASE_CALL_PREFIX, LeaseCall, lease_attr};

/// Backoff between settlement attempts on a busy wallet: doubling from the first to the last.
const SETTLE_BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
const SETTLE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(100);
/// After this many lost races on a busy wallet, a settlement records what its call used (for the sweeper).
const RECORD_AFTER_CONFLICTS: u32 = 3;
/// The longest a settlement waits for its wallet's turn before it goes ahead without it (the balance
/// condition keeps it exact; it only risks a retry): one stuck settlement never holds up the rest.
const TURN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// When the entries a settlement writes expire, for a settlement at `now`.
pub fn expiries(config: &crate::config::Config, now: DateTime<Utc>) -> Expiries {
    Expiries {
        usage: config.retention.until(crate::retention::Span::Usage, now),
        ledger: crate::wallet::payment_expiry(config, now),
    }
}

/// When the entries a settlement writes expire (epoch seconds): the usage log and the ledger entry.
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    pub usage: i64,
    pub ledger: i64,
}

/// What a settlement charges and records: the provider's cost (in full), the call's usage record, when
/// the entries it writes expire, and until when it may retry a busy wallet.
pub struct Settlement {
    pub cost: i64,
    pub usage: UsageRecord,
    pub expiries: Expiries,
    pub deadline: std::time::Instant,
}

/// Settles a hold: charges the cost in full, writes the ledger entry and the usage log in the same
/// transaction, and returns the usage record as written (with the charged cost). Retries on a busy wallet
/// until the deadline.
pub async fn settle<S: ItemStore + ?Sized>(
    store: &S,
    hints: &BalanceHints,
    hold: &Hold,
    settlement: Settlement,
) -> ApiResult<UsageRecord> {
    if hold.purse.is_some() {
        // A purse's hold settles on the purse; the wallet learns of it when the purse posts.
        return super::purses::settle_in_purse(store, hold, settlement).await;
    }
    let Settlement { cost, mut usage, expiries, deadline } = settlement;
    let charge = charge_in_full(hold, cost, &mut usage);
    // Until this settlement commits or gives up, no other settlement of this wallet in this process starts;
    // a turn that does not come within TURN_WAIT_MAX (or the deadline) is not waited for.
    let wait_until = deadline.min(std::time::Instant::now() + hints.turn_wait(TURN_WAIT_MAX));
    let _turn = tokio::time::timeout_at(wait_until.into(), hints.settle_turn(&hold.user_id)).await.ok().flatten();
    // The wallet as the settlement expects it besides the balance: its alert threshold, and (for a lease,
    // which learns nothing else from the wallet while it serves) that it is open.
    let leased = hold.lease.is_some();
    let expected = Expected {
        balance: hints.get(&hold.user_id).unwrap_or(hold.balance),
        threshold: hold.low_balance_threshold,
        open: leased,
        solvent: leased,
    };
    let mut settling = Settling {
        store,
        hints,
        hold,
        charge,
        usage,
        expiries,
        deadline,
        expected,
        // What the hold's lease reserves, as this process knows it (exact while settlements take turns);
        // after a lost race, as the wallet says.
        lease_reserve: hold.lease.as_ref().map(|lease| lease.reserve.reserved()),
        backoff: None,
        recorded: false,
        conflicts: 0,
    };
    loop {
        if let Some(done) = settling.attempt().await? {
            return Ok(done);
        }
    }
}

/// One settlement in progress on a hold of the wallet's own or of a lease.
struct Settling<'a, S: ?Sized> {
    store: &'a S,
    hints: &'a BalanceHints,
    hold: &'a Hold,
    charge: i64,
    usage: UsageRecord,
    expiries: Expiries,
    deadline: std::time::Instant,
    expected: Expected,
    lease_reserve: Option<i64>,
    backoff: Option<std::time::Duration>,
    /// What the call used is on record on the wallet, for the sweeper.
    recorded: bool,
    conflicts: u32,
}

impl<S: ItemStore + ?Sized> Settling<'_, S> {
    /// One try: the usage record as written once settled, `None` to try again.
    async fn attempt(&mut self) -> ApiResult<Option<UsageRecord>> {
        // Never more than the call's own hold (what it took from the lease); a report above it comes from the
        // available balance, as for a hold of its own.
        let from_lease = self.lease_reserve.map(|reserve| self.charge.min(self.hold.amount).min(reserve.max(0)));
        match self.store.transact(self.ops(from_lease)?).await {
            Ok(()) => {
                self.committed(from_lease);
                Ok(Some(self.usage.clone()))
            }
            Err(StoreError::ConditionFailed) => {
                // This settlement already committed (its answer was lost and the write repeated)?
                if let Some(done) = self.already_committed(from_lease).await? {
                    return Ok(Some(done));
                }
                // Another balance change got in first, or the hold was swept. Back off first, then look at
                // the wallet again and retry at once: the balance read right before the retry is the one
                // with a chance to win.
                self.conflicts += 1;
                match wait_before_retry(self.backoff, self.deadline).await {
                    Ok(next) => self.backoff = next,
                    Err(out_of_time) => {
                        // Giving up: what the call used goes on record first, so the sweeper charges exactly
                        // that, never the whole hold.
                        if !self.recorded {
                            let _ = record_pending(self.store, self.hold, self.charge, &self.usage).await;
                        }
                        return Err(out_of_time);
                    }
                }
                self.look_at_the_wallet().await
            }
            // The store failed (throttled, unreachable): what the call used goes on record if it can, and
            // the settlement is tried again until the deadline.
            Err(e) => {
                tracing::warn!(error = %e, request_id = %self.usage.id, "settlement failed; retrying");
                if !self.recorded {
                    self.recorded = record_pending(self.store, self.hold, self.charge, &self.usage).await.is_ok();
                }
                match wait_before_retry(self.backoff, self.deadline).await {
                    Ok(next) => self.backoff = next,
                    Err(_) => return Err(e.into()),
                }
                Ok(None)
            }
        }
    }

    /// What this process learns from a committed settlement.
    fn committed(&self, from_lease: Option<i64>) {
        let (hold, expected) = (self.hold, self.expected);
        self.hints.note(&hold.user_id, expected.balance.saturating_sub(self.charge));
        if let (Some(lease), Some(taken)) = (&hold.lease, from_lease) {
            lease.reserve.settled(taken);
            if expected.threshold != hold.low_balance_threshold {
                lease.reserve.threshold_seen(expected.threshold);
            }
        }
    }

    /// The usage entry of this hold, if a settlement of it already committed.
    async fn already_committed(&self, from_lease: Option<i64>) -> ApiResult<Option<UsageRecord>> {
        let (store, hold) = (self.store, self.hold);
        let Some(done) = usage::entry(store, &hold.user_id, &hold.id).await? else { return Ok(None) };
        // Ours (the same record, to the millisecond) or another settlement's of the same hold (the live one's,
        // found by the sweeper, or the sweeper's, found late).
        let ours = done == self.usage;
        if let (Some(lease), Some(taken), true) = (&hold.lease, from_lease, ours) {
            // Every attempt since the last look at the wallet sent this same share, and only one of them can
            // have committed.
            lease.reserve.settled(taken);
            // A usage record written after the commit (its answer lost too) is not for the sweeper (a lease
            // outlives its calls, so nothing else removes it).
            let forget = Update::new(Table::Main, user_pk(&hold.user_id), WALLET_SK)
                .remove(&hold.usage_attr())
                .remove(&format!("{LEASE_CALL_PREFIX}{}", hold.id));
            let _ = store.update(forget).await;
        }
        Ok(Some(done))
    }

    /// Reads the wallet after a lost race: what the next attempt expects of it. `Some` (charging nothing) when
    /// the hold is gone: settled by the sweeper or released, a decision that stands.
    async fn look_at_the_wallet(&mut self) -> ApiResult<Option<UsageRecord>> {
        let hold = self.hold;
        let current = self.store.get(Table::Main, &user_pk(&hold.user_id), WALLET_SK).await?;
        let Some(current) = current else { return Err(ApiError::Internal("wallet vanished".into())) };
        self.expected.balance = current.attrs.get("balance").and_then(Value::as_i64).unwrap_or(0);
        self.hints.note(&hold.user_id, self.expected.balance);
        self.expected.threshold = low_balance_threshold(&current);
        if let Some(lease) = &hold.lease {
            // A lease the sweeper already returned reserves nothing: the charge comes from the balance (never
            // forgiven), and the lease serves no other call.
            let on_wallet = current.attrs.get(&lease_attr(&lease.id)).and_then(Value::as_i64);
            self.lease_reserve = Some(on_wallet.unwrap_or(0));
            if on_wallet.is_none() {
                lease.reserve.retire();
            }
            if stops_leases(&current) {
                // The call is charged all the same; the lease serves no other (a closed account, or a dispute
                // that took the available balance below zero: no new call starts).
                lease.reserve.retire();
                self.expected.open = current.attrs.get(CLOSED) != Some(&json!(true));
            }
            self.expected.solvent = false;
        } else if !current.attrs.contains_key(&hold.attr()) {
            // Settled already, by the sweeper (a call with a record) or released (one without): either way
            // that decision stands, and charging again would charge twice.
            tracing::warn!(request_id = %self.usage.id, hold_id = %hold.id, "the hold was already swept");
            return Ok(Some(UsageRecord { cost: 0, ..self.usage.clone() }));
        }
        // A wallet this busy: from now on what the call used is on record, so that even if this invocation
        // ends before the settlement commits, the sweeper charges it.
        if self.conflicts >= RECORD_AFTER_CONFLICTS && !self.recorded && !current.attrs.contains_key(&hold.usage_attr())
        {
            self.recorded = record_pending(self.store, hold, self.charge, &self.usage).await.is_ok();
        }
        Ok(None)
    }

    /// The settlement's transaction, expecting the wallet as `expected` says: the hold removed and the
    /// charge taken, the usage entry, and (for a charge) the ledger entry. A hold served from a lease takes
    /// `from_lease` of the charge out of the lease's reserve and the rest (a report above the hold) from the
    /// available balance.
    fn ops(&self, from_lease: Option<i64>) -> ApiResult<Vec<WriteOp>> {
        let (hold, charge, expected, usage) = (self.hold, self.charge, self.expected, &self.usage);
        let (wallet, conditions) = wallet_settlement(hold, charge, expected, from_lease);
        let mut ops = vec![
            WriteOp::Update(wallet.when(Condition::All(conditions))),
            // Keyed on the hold: the live settlement, a repeat of it and the sweeper all write this one
            // entry, so at most one of them commits.
            usage::entry_put(&hold.user_id, &hold.id, usage, self.expiries.usage)?,
        ];
        if charge > 0 {
            let balance_after = expected.balance.saturating_sub(charge);
            let entry = LedgerEntry::new(LedgerKind::Usage, -charge, balance_after, &usage.id, usage.created_at);
            ops.push(entry_put(&hold.user_id, &entry, self.expiries.ledger)?);
            // Exactly one settlement takes the balance from at or above the threshold to below it (each
            // commits only on the balance it expects), so the alert goes once per crossing, with that
            // settlement. A threshold of 0 turns the alert off.
            let (before, threshold) = (expected.balance, expected.threshold);
            ops.extend(low_balance_alert(&hold.user_id, before, balance_after, threshold, usage.created_at)?);
        }
        Ok(ops)
    }
}

/// The wallet's part of a settlement and the conditions it commits on.
fn wallet_settlement(
    hold: &Hold,
    charge: i64,
    expected: Expected,
    from_lease: Option<i64>,
) -> (Update, Vec<Condition>) {
    let mut conditions = vec![
        Condition::AttrEquals("balance".into(), json!(expected.balance)),
        // The alert is decided on this threshold: a changed one makes the settlement read it again.
        threshold_unchanged(expected.threshold),
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
    (wallet, conditions)
}

/// Whether a wallet stops its leases from serving new calls: closed, or owing (a dispute or a refund took
/// its available balance below zero, and no new call may start until a top-up covers it).
pub fn stops_leases(wallet: &Item) -> bool {
    wallet.attrs.get(CLOSED) == Some(&json!(true))
        || wallet.attrs.get("available").and_then(Value::as_i64).is_some_and(|available| available < 0)
}

/// What a settlement expects of the wallet.
#[derive(Debug, Clone, Copy)]
struct Expected {
    balance: i64,
    threshold: i64,
    /// Not closed (checked for leases only).
    open: bool,
    /// Nothing owed: the available balance is not below zero (checked for leases only, until the wallet
    /// was read: a settlement that finds it owing stops the lease, then commits regardless).
    solvent: bool,
}

/// What a settlement charges: the provider's cost in full (never below zero), noted on the usage record with
/// what exceeded the hold.
pub(super) fn charge_in_full(hold: &Hold, cost: i64, usage: &mut UsageRecord) -> i64 {
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

/// The condition that the wallet's low-balance threshold is still `threshold` (absent means the default).
pub(super) fn threshold_unchanged(threshold: i64) -> Condition {
    if threshold == DEFAULT_LOW_BALANCE_THRESHOLD {
        Condition::AttrAbsentOrEquals(LOW_BALANCE_THRESHOLD.into(), json!(threshold))
    } else {
        Condition::AttrEquals(LOW_BALANCE_THRESHOLD.into(), json!(threshold))
    }
}

/// The low-balance alert, when a charge takes the balance from at or above the threshold to below it (a
/// threshold of 0 turns it off).
pub(super) fn low_balance_alert(
    user_id: &str,
    before: i64,
    after: i64,
    threshold: i64,
    at: DateTime<Utc>,
) -> ApiResult<Option<WriteOp>> {
    if threshold > 0 && before >= threshold && after < threshold {
        let alert =
            OutboxMail::new(MailKind::LowBalance, user_id, at).param("balance", after).param("threshold", threshold);
        return Ok(Some(enqueue(&alert)?));
    }
    Ok(None)
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
