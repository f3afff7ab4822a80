//! Purses: how a Lambda instance meters its account's calls without a hot item. Every call of a busy account
//! writing the wallet item (a hold before, a settlement after) would cap an account at a few hundred calls a
//! second in DynamoDB (about 1,000 writes a second per item) and make its calls race for that one item.
//!
//! Each instance keeps, per account it serves, a purse of that account's money: `USER#<id>` /
//! `PURSE#<instance>`, with `available`, `held` (its running call's hold), `spent` (charged, not yet on
//! the wallet's balance) and its call's `hold_<id>` / `holdcall_<id>` / `holdusage_<id>`. A call holds from
//! the purse and settles on it (with its usage entry, keyed on the hold, as every settlement): the purse is
//! written by one instance, one call at a time. The wallet item is written only to:
//!
//! - **fund** a purse (the money moves from the wallet's `available` into the purse, counted in the wallet's
//!   `held`, and `purse_<instance>` on the wallet names it): at least [`FUND_CALLS`] holds like the
//!   current one, doubling while fundings come closer than [`FUND_EVERY`], so an instance funds at most
//!   about once in that time whatever its pace;
//! - **post** what the purse spent (one ledger entry for the calls since the last posting, with the exact
//!   balance after it): at the end of a call, at most once every [`POST_EVERY`] per instance;
//! - **gather**: a call whose purse the wallet cannot refill takes back what other purses hold and no call
//!   of theirs has taken, before any 402; so the money frozen or dead instances keep never refuses a call
//!   the balance covers;
//! - **return** a purse idle for [`PURSE_IDLE`] (the sweeper: its dead calls charged, its spending posted,
//!   the rest back, the purse deleted), and **stop** the purses of an account closed or left owing.
//!
//! So the wallet takes at most a few writes a second per instance serving the account, and an instance's
//! purse at most two per call; the number of instances is bounded by the function's concurrency. The
//! balance always equals the ledger (every posting writes its entry in the same transaction), `available`
//! is exact at every read (the purses' money is counted in `held`), and nothing is spent twice: each
//! purse write is conditioned on what it takes, and each call's usage entry is written once.

use crate::error::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::accounts::user_pk;
use crate::clock::Clock;
use crate::error::{ApiError, ApiResult};
use crate::secrets::random_suffix;
use crate::store::schema::prefix::PURSE;
use crate::store::{Condition, Delete, Item, ItemStore, Put, StoreError, Table, Update, WriteOp};
use crate::usage::{self, UsageRecord};
use crate::wallet::ledger::{LedgerEntry, LedgerKind, entry_put};
use crate::wallet::{CLOSED, WALLET_SK};

use super::holds::{
    DEFAULT_LOW_BALANCE_THRESHOLD, HOLD_CALL_PREFIX, HOLD_PREFIX, HOLD_USAGE_PREFIX, HeldCall, Hold, PendingUsage,
    insufficient, low_balance_threshold, new_hold_id,
};
use super::settlement::{Expiries, charge_in_full, low_balance_alert, threshold_unchanged};

/// On the wallet, beside each purse's money: `purse_<instance>` (when it was last funded, in millis).
pub const PURSE_ON_WALLET: &str = "purse_";
/// A funding covers at least this many holds like the call's.
pub const FUND_CALLS: i64 = 16;
/// Fundings closer than this double the next one.
pub const FUND_EVERY: Duration = Duration::from_secs(2);
/// An instance posts its purse's spending at most this often.
pub const POST_EVERY: Duration = Duration::from_secs(2);
/// A purse nobody used for this long goes back to the wallet (the sweeper).
pub const PURSE_IDLE: chrono::Duration = chrono::Duration::seconds(30);
/// Tries of a posting against other wallet writes before it is left for the next call (or the sweeper).
pub const POST_ATTEMPTS: usize = 5;
/// Tries of stopping a purse its owner keeps using (each of its calls changes it).
const STOP_ATTEMPTS: usize = 20;

/// The purse item's sort key.
pub fn purse_sort_key(instance: &str) -> String {
    format!("{PURSE}{instance}")
}

fn number(item: &Item, name: &str) -> i64 {
    item.attrs.get(name).and_then(Value::as_i64).unwrap_or(0)
}

/// The purse a hold was taken from: its instance, and (in the instance that owns it) its book.
#[derive(Debug, Clone)]
pub struct PurseBacking {
    pub instance: String,
    pub book: Option<Arc<Purses>>,
}

/// This instance's purses: one per account it serves, and what it has settled on each and not posted.
#[derive(Debug)]
pub struct Purses {
    instance: String,
    accounts: Mutex<HashMap<String, Local>>,
}

#[derive(Debug, Default)]
struct Local {
    /// The last funding: when, and how much.
    funded: Option<(Instant, i64)>,
    /// Settled on the purse and not posted, as far as this instance knows.
    unposted: i64,
    posted: Option<Instant>,
}

/// At most this many accounts' local figures are kept (each is a few numbers); past it they start over.
const ACCOUNTS_KEPT: usize = 100_000;

impl Default for Purses {
    fn default() -> Self {
        Self::new()
    }
}

impl Purses {
    /// A new instance's purses (its id is random: each process is an instance of its own).
    pub fn new() -> Self {
        Self { instance: random_suffix(), accounts: Mutex::new(HashMap::new()) }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn local<T>(&self, user_id: &str, f: impl FnOnce(&mut Local) -> T) -> T {
        let mut accounts = self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if accounts.len() >= ACCOUNTS_KEPT && !accounts.contains_key(user_id) {
            accounts.clear();
        }
        f(accounts.entry(user_id.to_owned()).or_default())
    }

    /// Holds `amount` for a call from this instance's purse of the account, funding the purse from the
    /// wallet when it is short (the funding places the hold in the same transaction, so no other instance's
    /// gather can take the money in between); 402 `insufficient_balance` only when the wallet, this purse and
    /// the other purses' free money together cannot cover it.
    pub async fn hold<S: ItemStore + ?Sized>(
        self: &Arc<Self>,
        store: &S,
        clock: &dyn Clock,
        user_id: &str,
        amount: i64,
        call: &HeldCall,
    ) -> ApiResult<Hold> {
        let hold = Hold {
            id: new_hold_id(clock),
            user_id: user_id.to_owned(),
            amount: amount.max(1),
            balance: 0,
            low_balance_threshold: DEFAULT_LOW_BALANCE_THRESHOLD,
            lease: None,
            purse: Some(PurseBacking { instance: self.instance.clone(), book: Some(Arc::clone(self)) }),
        };
        let call = serde_json::to_value(call).map_err(|e| ApiError::Internal(e.to_string()))?;
        let free = match self.take(store, clock, &hold, &call).await? {
            Taken::Held => return Ok(hold),
            Taken::Short { free } => free,
        };
        self.fund_and_hold(store, clock, &hold, &call, free).await?;
        Ok(hold)
    }

    /// The hold's write on the purse alone; `Short` (with the purse's free money) when the purse cannot cover
    /// it, or is new, stopped or returned.
    async fn take<S: ItemStore + ?Sized>(
        &self,
        store: &S,
        clock: &dyn Clock,
        hold: &Hold,
        call: &Value,
    ) -> ApiResult<Taken> {
        let key = purse_sort_key(&self.instance);
        let attr = hold.attr();
        let update = Update::new(Table::Main, user_pk(&hold.user_id), &key)
            .set(&attr, json!(hold.amount))
            .set(&hold.call_attr(), call.clone())
            .add("held", hold.amount)
            .add("available", -hold.amount)
            .set("beat", json!(clock.now().timestamp_millis()))
            .when(Condition::All(vec![
                Condition::AttrAtLeast("available".into(), hold.amount),
                Condition::AttrAbsentOrEquals("stopped".into(), json!(false)),
                // Hold attributes are numbers, so this means "absent": a repeated write applies nothing twice.
                Condition::AttrAbsentOrEquals(attr.clone(), json!(false)),
            ]));
        let failed = match store.update(update).await {
            Ok(_) => return Ok(Taken::Held),
            Err(e) => e,
        };
        // Our own write, applied though its answer was lost (or repeated after that)?
        let purse = store.get(Table::Main, &user_pk(&hold.user_id), &key).await?;
        if purse.as_ref().is_some_and(|p| p.attrs.get(&attr) == Some(&json!(hold.amount))) {
            return Ok(Taken::Held);
        }
        match failed {
            StoreError::ConditionFailed => {
                let stopped = purse.as_ref().is_some_and(|p| p.attrs.get("stopped") == Some(&json!(true)));
                let free = if stopped { 0 } else { purse.as_ref().map_or(0, |p| number(p, "available").max(0)) };
                Ok(Taken::Short { free })
            }
            e => Err(e.into()),
        }
    }

    /// Funds the purse for `hold` and places it, in one transaction: the wallet gives what the purse's `free`
    /// money lacks, or more (sixteen holds like this one, doubling while fundings come within
    /// [`FUND_EVERY`]); when the wallet cannot, what other purses do not hold comes back first, a few rounds.
    async fn fund_and_hold<S: ItemStore + ?Sized>(
        &self,
        store: &S,
        clock: &dyn Clock,
        hold: &Hold,
        call: &Value,
        free: i64,
    ) -> ApiResult<()> {
        let (user_id, amount) = (hold.user_id.as_str(), hold.amount);
        let need = (amount - free).max(1);
        let size = self.local(user_id, |local| match local.funded {
            Some((at, last)) if at.elapsed() < FUND_EVERY => last.saturating_mul(2).max(amount * FUND_CALLS),
            _ => amount.saturating_mul(FUND_CALLS),
        });
        for _ in 0..GATHER_ROUNDS {
            for size in [size.max(need), need] {
                match fund(store, clock, (hold, call), &self.instance, size).await? {
                    Funding::Done => {
                        self.local(user_id, |local| local.funded = Some((Instant::now(), size)));
                        return Ok(());
                    }
                    Funding::Closed => return Err(closed()),
                    Funding::Short => {}
                }
            }
            if gather(store, user_id, &self.instance, need).await? == 0 {
                break;
            }
        }
        Err(insufficient(amount))
    }

    /// A settlement on the purse committed: `charge` waits to be posted.
    fn settled(&self, user_id: &str, charge: i64) {
        self.local(user_id, |local| local.unposted += charge);
    }

    /// Posts what the purse spent to the wallet, if there is some and the last posting is [`POST_EVERY`] old.
    /// Tried twice at most within the call (another instance's wallet write may get in first): what is left
    /// is posted after a later call, or by the sweeper.
    pub async fn post_if_due<S: ItemStore + ?Sized>(
        &self,
        store: &S,
        clock: &dyn Clock,
        user_id: &str,
        expiries: Expiries,
    ) -> ApiResult<()> {
        let due = self
            .local(user_id, |local| local.unposted != 0 && local.posted.is_none_or(|at| at.elapsed() >= POST_EVERY));
        if !due {
            return Ok(());
        }
        let posted = commit_posting(store, clock, (user_id, &self.instance), false, (expiries, 2)).await;
        // Posted or not, the next try waits its turn: instances that lost to each other do not retry on every
        // call (what is left is posted later, or by the sweeper).
        self.local(user_id, |local| {
            if matches!(posted, Ok(true)) {
                local.unposted = 0;
            }
            local.posted = Some(Instant::now());
        });
        posted.map(|_| ())
    }
}

fn closed() -> ApiError {
    ApiError::unauthenticated(ErrorCode::InvalidApiKey, "the account this API key belongs to is closed")
}

/// What a hold's write on the purse alone found.
enum Taken {
    Held,
    /// The purse cannot cover it; what it has free (0 when stopped or missing).
    Short {
        free: i64,
    },
}

enum Funding {
    Done,
    /// The wallet's free balance does not cover it (or the account owes money).
    Short,
    Closed,
}

/// Rounds of gathering before a 402: each can be undone by other instances funding meanwhile.
const GATHER_ROUNDS: usize = 3;

/// One transaction: `size` of the wallet's available balance into the purse (created if new, no longer
/// stopped: the wallet, open and owing nothing, is the proof), and the hold placed on it.
async fn fund<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    (hold, call): (&Hold, &Value),
    instance: &str,
    size: i64,
) -> ApiResult<Funding> {
    let now = clock.now().timestamp_millis();
    let (user_id, key, attr) = (hold.user_id.as_str(), purse_sort_key(instance), hold.attr());
    // Twice at most: a purse the sweeper returned between the look and the write is made anew.
    for _ in 0..2 {
        let wallet = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
            .add("available", -size)
            .add("held", size)
            .set(&format!("{PURSE_ON_WALLET}{instance}"), json!(now))
            .when(Condition::All(vec![
                Condition::AttrAtLeast("available".into(), size),
                Condition::AttrAbsentOrEquals(CLOSED.into(), json!(false)),
            ]));
        let current = store.get(Table::Main, &user_pk(user_id), &key).await?;
        if current.as_ref().is_some_and(|p| p.attrs.get(&attr) == Some(&json!(hold.amount))) {
            // Placed already: this funding's answer was lost after it applied.
            return Ok(Funding::Done);
        }
        let purse = match current {
            Some(_) => WriteOp::Update(
                Update::new(Table::Main, user_pk(user_id), &key)
                    .add("available", size - hold.amount)
                    .add("held", hold.amount)
                    .set(&attr, json!(hold.amount))
                    .set(&hold.call_attr(), call.clone())
                    .remove("stopped")
                    .set("beat", json!(now))
                    .when(Condition::All(vec![
                        Condition::AttrAtLeast("available".into(), hold.amount - size),
                        Condition::AttrAbsentOrEquals(attr.clone(), json!(false)),
                    ])),
            ),
            None => {
                let mut fresh = json!({ "available": size - hold.amount, "held": hold.amount, "spent": 0, "calls": 0, "beat": now });
                fresh[attr.as_str()] = json!(hold.amount);
                fresh[hold.call_attr().as_str()] = call.clone();
                WriteOp::Put(Put {
                    table: Table::Main,
                    item: Item::from_record(user_pk(user_id), &key, &fresh, None)?,
                    condition: Condition::NotExists,
                })
            }
        };
        match store.transact(vec![WriteOp::Update(wallet), purse]).await {
            Ok(()) => return Ok(Funding::Done),
            Err(StoreError::ConditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
        let wallet = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?;
        match wallet {
            Some(w) if w.attrs.get(CLOSED) == Some(&json!(true)) => return Ok(Funding::Closed),
            Some(w) if number(&w, "available") >= size => continue,
            _ => return Ok(Funding::Short),
        }
    }
    Ok(Funding::Short)
}

/// The purses named on a wallet item.
fn purses_of(wallet: &Item) -> Vec<String> {
    wallet.attrs.keys().filter_map(|k| k.strip_prefix(PURSE_ON_WALLET)).map(str::to_owned).collect()
}

/// Takes back into the wallet what other purses hold and no call of theirs has taken, until the wallet's
/// available balance reaches `need` (or there is nothing more); returns what came back.
async fn gather<S: ItemStore + ?Sized>(store: &S, user_id: &str, instance: &str, need: i64) -> ApiResult<i64> {
    let Some(wallet) = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await? else { return Ok(0) };
    let mut available = number(&wallet, "available");
    let mut gathered = 0;
    for other in purses_of(&wallet).iter().filter(|other| *other != instance) {
        if available >= need {
            break;
        }
        let back = reclaim(store, user_id, other, false).await?.unwrap_or(0);
        available += back;
        gathered += back;
    }
    Ok(gathered)
}

/// Moves a purse's free money back to the wallet (and marks it stopped if asked); returns what it moved, or
/// `None` when its owner used the purse meanwhile (nothing changed).
async fn reclaim<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    instance: &str,
    stop: bool,
) -> ApiResult<Option<i64>> {
    let key = purse_sort_key(instance);
    let Some(purse) = store.get(Table::Main, &user_pk(user_id), &key).await? else { return Ok(Some(0)) };
    let free = number(&purse, "available").max(0);
    let already_stopped = purse.attrs.get("stopped") == Some(&json!(true));
    if free == 0 && (!stop || already_stopped) {
        return Ok(Some(0));
    }
    let mut update = Update::new(Table::Main, user_pk(user_id), &key)
        .add("available", -free)
        .when(Condition::AttrEquals("available".into(), json!(number(&purse, "available"))));
    if stop {
        update = update.set("stopped", json!(true));
    }
    let result = if free == 0 {
        store.update(update).await.map(|_| ())
    } else {
        let wallet = Update::new(Table::Main, user_pk(user_id), WALLET_SK).add("available", free).add("held", -free);
        store.transact(vec![WriteOp::Update(update), WriteOp::Update(wallet)]).await
    };
    match result {
        Ok(()) => Ok(Some(free)),
        Err(StoreError::ConditionFailed) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether every purse a wallet names is stopped with nothing free (a closure commits only then).
pub async fn purses_stopped<S: ItemStore + ?Sized>(store: &S, user_id: &str, wallet: &Item) -> ApiResult<bool> {
    for instance in purses_of(wallet) {
        let purse = store.get(Table::Main, &user_pk(user_id), &purse_sort_key(&instance)).await?;
        if purse.is_some_and(|p| p.attrs.get("stopped") != Some(&json!(true)) || number(&p, "available") > 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Stops every purse of the account (a closure, or a balance left owing by a dispute or a refund): they take
/// no new hold until a funding (which needs an open wallet owing nothing) restarts them, and their free
/// money goes back to the wallet.
pub async fn stop_purses<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> ApiResult<()> {
    let Some(wallet) = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await? else { return Ok(()) };
    for instance in purses_of(&wallet) {
        let mut stopped = false;
        for _ in 0..STOP_ATTEMPTS {
            if reclaim(store, user_id, &instance, true).await?.is_some() {
                stopped = true;
                break;
            }
        }
        if !stopped {
            return Err(ApiError::Unavailable("an instance's purse is too busy to stop; try again".into()));
        }
    }
    Ok(())
}

/// After a refund or a dispute: if the account now owes money (its available balance below zero), its purses
/// stop, so no call starts until a top-up covers it (their free money first goes back towards the debt).
pub async fn stop_purses_if_owing<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> ApiResult<()> {
    let wallet = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?;
    if wallet.is_some_and(|w| number(&w, "available") < 0) {
        stop_purses(store, user_id).await?;
    }
    Ok(())
}

/// Settles a hold taken from a purse: the charge (in full, as every settlement) goes to the purse's `spent`
/// with the usage entry, in one transaction; the wallet is not written (its posting comes later).
pub async fn settle_in_purse<S: ItemStore + ?Sized>(
    store: &S,
    hold: &Hold,
    cost: i64,
    mut usage: UsageRecord,
    expiries: Expiries,
    deadline: Instant,
) -> ApiResult<UsageRecord> {
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
    (user_id, instance): (&str, &str),
    retire: bool,
    expiries: Expiries,
) -> ApiResult<Option<Vec<WriteOp>>> {
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
        ops.extend(low_balance_alert(user_id, (balance, after), threshold, now)?);
    }
    Ok(Some(ops))
}

/// Retires a purse: its spending posted and its free money back on the wallet, the purse deleted; only if no
/// call holds anything in it. Returns whether it went.
pub async fn retire<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    user_id: &str,
    instance: &str,
    expiries: Expiries,
) -> ApiResult<bool> {
    commit_posting(store, clock, (user_id, instance), true, (expiries, POST_ATTEMPTS)).await
}

async fn commit_posting<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    who: (&str, &str),
    retire: bool,
    (expiries, attempts): (Expiries, usize),
) -> ApiResult<bool> {
    for _ in 0..attempts {
        let Some(ops) = post_ops(store, clock.now(), who, retire, expiries).await? else { return Ok(false) };
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
