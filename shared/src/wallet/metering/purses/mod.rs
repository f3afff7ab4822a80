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

use crate::ports::Ports;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::holds::{DEFAULT_LOW_BALANCE_THRESHOLD, HeldCall, Hold, insufficient, new_hold_id};
use super::settlement::Expiries;
use crate::accounts::user_pk;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::secrets::random_suffix;
use crate::store::schema::prefix::PURSE;
use crate::store::{Condition, Item, StoreError, Table, Update};

mod funding;
mod posting;
use funding::{GATHER_ROUNDS, fund, gather};
pub use funding::{purses_stopped, stop_purses, stop_purses_if_owing};
use posting::Posting;
use posting::commit_posting;
pub use posting::{PurseSeen, purses_on, release_in_purse, retire, settle_in_purse};

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
    pub async fn hold(self: &Arc<Self>, ports: &Ports, user_id: &str, amount: i64, call: &HeldCall) -> ApiResult<Hold> {
        let clock = ports.clock();
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
        let free = match self.take(ports, &hold, &call).await? {
            Taken::Held => return Ok(hold),
            Taken::Short { free } => free,
        };
        self.fund_and_hold(ports, &hold, &call, free).await?;
        Ok(hold)
    }

    /// The hold's write on the purse alone; `Short` (with the purse's free money) when the purse cannot cover
    /// it, or is new, stopped or returned.
    async fn take(&self, ports: &Ports, hold: &Hold, call: &Value) -> ApiResult<Taken> {
        let store = ports.store();
        let clock = ports.clock();
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
    async fn fund_and_hold(&self, ports: &Ports, hold: &Hold, call: &Value, free: i64) -> ApiResult<()> {
        let store = ports.store();
        let (user_id, amount) = (hold.user_id.as_str(), hold.amount);
        let need = (amount - free).max(1);
        let size = self.local(user_id, |local| match local.funded {
            Some((at, last)) if at.elapsed() < FUND_EVERY => last.saturating_mul(2).max(amount * FUND_CALLS),
            _ => amount.saturating_mul(FUND_CALLS),
        });
        for _ in 0..GATHER_ROUNDS {
            for size in [size.max(need), need] {
                match fund(ports, hold, call, &self.instance, size).await? {
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
    pub async fn post_if_due(&self, ports: &Ports, user_id: &str, expiries: Expiries) -> ApiResult<()> {
        let due = self
            .local(user_id, |local| local.unposted != 0 && local.posted.is_none_or(|at| at.elapsed() >= POST_EVERY));
        if !due {
            return Ok(());
        }
        let posting = Posting { user_id, instance: &self.instance, retire: false, expiries };
        let posted = commit_posting(ports, posting, 2).await;
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
