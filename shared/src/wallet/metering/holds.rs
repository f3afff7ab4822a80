//! Inference holds: hold the request's maximum cost before forwarding, so that concurrent requests can never
//! take a balance below zero; give back the hold of a call that never reached a provider. Settlement is in
//! `settlement`, leases' reserves in `reservations`, dead calls' holds in `sweeper`.
//!
//! - **Hold** (one write, before forwarding): on the wallet item, `available -= h`, `held += h` and an
//!   attribute `hold_<id> = h`, only if `available >= h`. The write returns the wallet, so the balance at
//!   hold time is known without a read. It also records which call it is for (`holdcall_<id>`: request,
//!   key, model and the bound), so the sweeper can charge a call whose process died.
//! - **Release** (failure paths before the provider answered): give the hold back, once (conditional on its
//!   attribute).
//!
//! The hold is safe to repeat after a lost response (a store client's retry): it is written only where its
//! attribute is absent.

use crate::error::ErrorCode;
use crate::ports::Ports;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::accounts::user_pk;
use crate::clock::Clock;
use crate::error::{ApiError, ApiResult};
use crate::secrets::random_suffix;
use crate::store::{Condition, Conditional, Item, ItemStore, StoreError, Table, Update};
use crate::usage::UsageRecord;
use crate::wallet::{CLOSED, WALLET_SK};

use super::reservations::lease_attr;

pub(super) const HOLD_PREFIX: &str = "hold_";
/// Beside each hold: the call it is for (`HeldCall`), and, once known but not yet settled, its usage.
pub(super) const HOLD_CALL_PREFIX: &str = "holdcall_";
pub(super) const HOLD_USAGE_PREFIX: &str = "holdusage_";
/// A budget lease's reserve (`super::leases`), counted in `held` like a hold.
pub const LEASE_PREFIX: &str = "lease_";
/// A lease serves new calls for this long after it was opened (its id starts with that time); the sweeper
/// reconciles it once its last call can no longer be running.
pub const LEASE_LIFE: Duration = Duration::seconds(60);

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
    /// How long a settlement waits for its turn (`None`: `settlement::TURN_WAIT_MAX`).
    turn_wait: Option<std::time::Duration>,
}

impl BalanceHints {
    const CAPACITY: usize = 100_000;

    /// Hints whose settlements wait up to `wait` for their turn (a test that counts round trips on a busy
    /// machine, where a turn may take longer than the usual wait).
    pub fn with_turn_wait(mut self, wait: std::time::Duration) -> Self {
        self.turn_wait = Some(wait);
        self
    }

    /// How long a settlement waits for its turn: these hints' own wait, else `default`.
    pub(super) fn turn_wait(&self, default: std::time::Duration) -> std::time::Duration {
        self.turn_wait.unwrap_or(default)
    }

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
    /// Taken from an instance's purse (see `super::purses`) instead of the wallet.
    pub purse: Option<super::purses::PurseBacking>,
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

/// The wallet attribute with the account's low-balance alert threshold (units); absent: the default.
pub const LOW_BALANCE_THRESHOLD: &str = "low_balance_threshold";
/// The default low-balance alert threshold: ₹100.
pub const DEFAULT_LOW_BALANCE_THRESHOLD: i64 = 100 * crate::money::UNITS_PER_RUPEE;

/// The threshold a wallet item records, or the default.
pub fn low_balance_threshold(wallet: &Item) -> i64 {
    wallet.attrs.get(LOW_BALANCE_THRESHOLD).and_then(Value::as_i64).unwrap_or(DEFAULT_LOW_BALANCE_THRESHOLD)
}

impl Hold {
    pub(super) fn attr(&self) -> String {
        format!("{HOLD_PREFIX}{}", self.id)
    }

    pub(super) fn call_attr(&self) -> String {
        format!("{HOLD_CALL_PREFIX}{}", self.id)
    }

    pub(super) fn usage_attr(&self) -> String {
        format!("{HOLD_USAGE_PREFIX}{}", self.id)
    }

    /// The attribute whose presence says this hold is still unsettled: its own, or its lease's.
    pub(super) fn reserve_attr(&self) -> String {
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

/// What a call asks to hold: on whose wallet, how much, and for which call.
#[derive(Debug, Clone, Copy)]
pub struct CallHold<'a> {
    pub user_id: &'a str,
    pub amount: i64,
    pub call: &'a HeldCall,
}

impl HeldCall {
    /// A call of which nothing is on record (a hold written without one): charged as unknown.
    pub fn unknown() -> Self {
        Self {
            request_id: "unknown".into(),
            key_id: "unknown".into(),
            model: "unknown".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
        }
    }
}

/// What a call used, recorded when its settlement could not commit in its own invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUsage {
    pub cost: i64,
    pub usage: UsageRecord,
}

pub(super) fn insufficient(amount: i64) -> ApiError {
    ApiError::PaymentRequired {
        code: ErrorCode::InsufficientBalance,
        message: format!(
            "your wallet balance cannot cover this request (up to ₹{} may be charged); top up to continue",
            crate::money::format_inr(amount)
        ),
    }
}

/// Holds `amount` units of the user's available balance, or answers 402 `insufficient_balance`.
pub async fn place_hold(ports: &Ports, hints: &BalanceHints, user_id: &str, amount: i64) -> ApiResult<Hold> {
    hold_for(ports, hints, user_id, amount, None).await
}

/// Holds `amount` for a call, recording the call in the same write (for the sweeper).
pub async fn place_call_hold(
    ports: &Ports,
    hints: &BalanceHints,
    user_id: &str,
    amount: i64,
    call: &HeldCall,
) -> ApiResult<Hold> {
    hold_for(ports, hints, user_id, amount, Some(call)).await
}

async fn hold_for(
    ports: &Ports,
    hints: &BalanceHints,
    user_id: &str,
    amount: i64,
    call: Option<&HeldCall>,
) -> ApiResult<Hold> {
    let store = ports.store();
    let clock = ports.clock();
    let amount = amount.max(1);
    let mut hold = Hold {
        id: new_hold_id(clock),
        user_id: user_id.to_owned(),
        amount,
        balance: 0,
        low_balance_threshold: DEFAULT_LOW_BALANCE_THRESHOLD,
        lease: None,
        purse: None,
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
                    ErrorCode::InvalidApiKey,
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
