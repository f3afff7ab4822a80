//! Budget leases: a gateway process reserves a slice of a busy account's available balance with one
//! conditional write, and serves its calls' holds from that slice in memory, so in steady state no store
//! round trip comes before a call is forwarded.
//!
//! - **Reserve.** `lease_<id>` on the wallet holds what the lease reserves; it counts in `held` like a hold,
//!   so the available balance never covers a lease and a hold twice and overspending stays impossible. The
//!   id starts with the time it was opened: a lease serves new calls for [`metering::LEASE_LIFE`], less a margin.
//! - **Serve.** A call whose hold fits in what the lease has free takes it there; one that does not fit
//!   gets its own hold (the exact path, with its exact 402), and the lease is extended in the background.
//!   An account gets a lease only once it is busy here ([`BUSY_CALLS_PER_SECOND`]); a quiet account's calls
//!   keep their own holds.
//! - **Size.** About a second of the account's holds (at least eight of the current one), never more than
//!   half of what the wallet has available, so other processes and the account's own large calls still
//!   find room; a hold that finds no room gets the lease's free part back before it is refused.
//! - **Settle.** Each call settles on its own, with its ledger entry and usage log, taking its cost out of the
//!   lease's reserve (see `metering::settle`): the balance always equals the ledger.
//! - **Record.** A keeper task per lease records the calls it serves that run longer than [`RECORD_AFTER`]
//!   on the wallet (`leasecall_<hold id>`, one write for all that came due together) and forgets them once
//!   they ended; it returns the reserve once the lease has been idle for [`IDLE_RETURN`] or its life is over.
//! - **Crash.** A process that dies leaves its lease behind; the sweeper, once no call can still be running
//!   on it, charges every recorded call (what it recorded as used, else its whole hold, never twice) and
//!   gives the rest back. A call not yet recorded (started less than `RECORD_AFTER` plus one write before
//!   the process died) is the one thing a crash can leave uncharged; per-call holds had no such window, at
//!   the price of a store round trip before every call.

use crate::ports::Ports;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{self as metering, BalanceHints, CallHold, HeldCall, Hold, LeaseRefused};
use crate::error::{ApiError, ApiResult};
use crate::store::ItemStore;

mod keeper;
mod lease;
pub use lease::Lease;
use lease::{LeaseState, Taken};

/// Calls an account starts in this process within a second that make it busy enough for a lease.
pub const BUSY_CALLS_PER_SECOND: u32 = 4;
/// A lease nobody has used for this long is given back.
pub const IDLE_RETURN: Duration = Duration::from_secs(2);
/// How long before the sweeper's notion of a lease's life this process stops serving from it.
const LIFE_MARGIN: Duration = Duration::from_secs(5);
/// A lease serves at most this many calls at once (their records stay small on the wallet item).
const MAX_CALLS_PER_LEASE: usize = 64;
/// Calls recorded in one write (DynamoDB bounds an update expression's size).
const RECORDS_PER_WRITE: usize = 16;
/// While a lease serves, the keeper looks at the wallet this often: a closure (or a lease the sweeper took
/// back) stops it within this long even when no settlement meets the change.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After the wallet refused a lease or its extension, how long before asking again.
const REFUSED_BACKOFF: Duration = Duration::from_secs(1);
/// The most accounts this process keeps call rates for.
const ACCOUNTS_TRACKED: usize = 10_000;
/// A call still running this long after it started is recorded on the wallet for the sweeper; calls that
/// end sooner (most, at a gateway's pace) never cost a write of their own.
pub const RECORD_AFTER: Duration = Duration::from_millis(20);
/// A keeper's store failures before it leaves the lease to the sweeper.
const KEEPER_ATTEMPTS: u32 = 50;

/// This process's leases, per account. One per gateway.
#[derive(Default)]
pub struct Leases {
    accounts: Mutex<HashMap<String, Account>>,
    opened: AtomicUsize,
}

/// What this process knows about one account's calls.
#[derive(Default)]
struct Account {
    /// The start of the current one-second window.
    window: Option<Instant>,
    started: u32,
    held_this_window: i64,
    held_last_window: i64,
    lease: Option<Arc<Lease>>,
    /// Calls running on this account's leases (the current one and any retired one still serving).
    running: Arc<AtomicUsize>,
    opening: bool,
    refused_until: Option<Instant>,
}

impl Account {
    fn count(&mut self, now: Instant, amount: i64) {
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            Some(start) if now.duration_since(start) < Duration::from_secs(2) => {
                self.window = Some(now);
                self.held_last_window = self.held_this_window;
                (self.started, self.held_this_window) = (0, 0);
            }
            _ => {
                self.window = Some(now);
                (self.started, self.held_this_window, self.held_last_window) = (0, 0, 0);
            }
        }
        self.started = self.started.saturating_add(1);
        self.held_this_window = self.held_this_window.saturating_add(amount);
    }

    fn busy(&self) -> bool {
        self.started >= BUSY_CALLS_PER_SECOND
    }

    /// What a lease should reserve: about a second of this account's holds, at least eight of this one.
    fn target(&self, amount: i64) -> i64 {
        self.held_this_window.max(self.held_last_window).max(amount.saturating_mul(8))
    }

    fn may_ask(&self, now: Instant) -> bool {
        self.refused_until.is_none_or(|until| now >= until)
    }
}

enum Plan {
    Served(Hold),
    Open { target: i64 },
    Own,
}

/// A call's ask for a hold, as the lease logic weighs it.
#[derive(Clone, Copy)]
struct Ask<'a> {
    user_id: &'a str,
    hold_id: &'a str,
    amount: i64,
    call: &'a HeldCall,
    now: Instant,
}

impl Leases {
    /// Holds `amount` for a call: from the account's lease when it has room, else with the call's own hold.
    pub async fn hold(&self, ports: &Ports, hints: &BalanceHints, wanted: CallHold<'_>) -> ApiResult<Hold> {
        let CallHold { user_id, amount, call } = wanted;
        let store = &ports.store;
        let amount = amount.max(1);
        let hold_id = metering::new_hold_id(ports.clock());
        let ask = Ask { user_id, hold_id: &hold_id, amount, call, now: Instant::now() };
        let mut plan = self.plan(&ask, hints, true);
        if let Plan::Open { target } = plan
            && self.open(ports, hints, &ask, target).await
        {
            // Served from the lease just opened (it has room for this call by its size).
            plan = self.plan(&ask, hints, false);
        }
        if let Plan::Served(hold) = plan {
            return Ok(hold);
        }
        match metering::place_call_hold(ports, hints, user_id, amount, call).await {
            Err(ApiError::PaymentRequired { .. }) if self.give_back_free(store.as_ref(), user_id).await => {
                metering::place_call_hold(ports, hints, user_id, amount, call).await
            }
            placed => placed,
        }
    }

    /// How many of the account's calls are running on a lease of this process (their holds are not on the
    /// wallet one by one).
    pub fn running(&self, user_id: &str) -> usize {
        self.accounts()
            .and_then(|accounts| accounts.get(user_id).map(|account| account.running.load(Ordering::SeqCst)))
            .unwrap_or(0)
    }

    /// How many leases this process has opened.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// A graceful shutdown: every lease stops serving and goes back (its keeper returns it once its running
    /// calls have ended), waited for up to `patience`. Returns how many are left for the sweeper (a store
    /// that did not answer in time).
    pub async fn return_all(&self, patience: Duration) -> usize {
        let leases: Vec<Arc<Lease>> = self
            .accounts()
            .map(|accounts| accounts.values().filter_map(|account| account.lease.clone()).collect())
            .unwrap_or_default();
        for lease in &leases {
            lease.retire_and_kick();
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline && leases.iter().any(|lease| !lease.returned()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        leases.iter().filter(|lease| !lease.returned()).count()
    }

    fn accounts(&self) -> Option<MutexGuard<'_, HashMap<String, Account>>> {
        self.accounts.lock().ok()
    }

    /// Serves the hold from the lease if it can; else says whether to open one (only on a `first` look, and
    /// only to one caller at a time: the account is marked as opening).
    fn plan(&self, ask: &Ask<'_>, hints: &BalanceHints, first: bool) -> Plan {
        let Ask { user_id, hold_id, amount, call, now } = *ask;
        let Some(mut accounts) = self.accounts() else { return Plan::Own };
        if accounts.len() >= ACCOUNTS_TRACKED && !accounts.contains_key(user_id) {
            accounts.retain(|_, account| {
                account.lease.as_ref().is_some_and(|lease| !lease.is_returned())
                    || account.opening
                    || account.running.load(Ordering::SeqCst) > 0
            });
            if accounts.len() >= ACCOUNTS_TRACKED {
                // Every tracked account is busy: this one holds on its own.
                return Plan::Own;
            }
        }
        let account = accounts.entry(user_id.to_owned()).or_default();
        if first {
            account.count(now, amount);
        }
        let target = account.target(amount);
        if let Some(lease) = account.lease.clone() {
            match lease.take(hold_id, amount, call) {
                Taken::Yes => {
                    lease.after_take(target);
                    let balance = hints.get(user_id).unwrap_or(0);
                    return Plan::Served(lease.hold_for(hold_id, amount, balance));
                }
                Taken::NoRoom => return Plan::Own,
                Taken::Retired => account.lease = None,
            }
        }
        // A wallet worth leasing from: room for the lease and for this call beside it, in what it has available.
        let room = hints.available(user_id).map_or(0, |available| available / 2);
        if first && account.busy() && !account.opening && account.may_ask(now) && room >= amount.saturating_mul(2) {
            account.opening = true;
            return Plan::Open { target: target.min(room) };
        }
        Plan::Own
    }

    /// Opens a lease of `size` for the account (one conditional write) and installs it; false when the wallet
    /// refused it.
    async fn open(&self, ports: &Ports, hints: &BalanceHints, ask: &Ask<'_>, size: i64) -> bool {
        let (user_id, now) = (ask.user_id, ask.now);
        let store = &ports.store;
        let clock = &ports.clock;
        let opened_at = clock.now().timestamp_millis().max(0);
        let id = metering::timed_id(opened_at);
        let opened = metering::reserve_for_lease(store.as_ref(), user_id, &id, size, 0).await;
        let Some(mut accounts) = self.accounts() else { return false };
        let account = accounts.entry(user_id.to_owned()).or_default();
        account.opening = false;
        match opened {
            Ok(wallet) => {
                hints.note_if_unknown(user_id, wallet.balance);
                hints.note_available(user_id, wallet.available);
                self.opened.fetch_add(1, Ordering::SeqCst);
                let lease = Arc::new(Lease {
                    id,
                    user_id: user_id.to_owned(),
                    opened_at,
                    clock: clock.clone(),
                    low_balance_threshold: AtomicI64::new(wallet.low_balance_threshold),
                    store: store.clone(),
                    running: account.running.clone(),
                    state: Mutex::new(LeaseState {
                        reserved: size,
                        available: wallet.available,
                        last_start: now,
                        last_check: now,
                        ..LeaseState::default()
                    }),
                    wake: tokio::sync::Notify::new(),
                });
                if let Some(previous) = account.lease.replace(lease.clone()) {
                    previous.retire_and_kick();
                }
                true
            }
            Err(refused) => {
                if let LeaseRefused::Store(e) = &refused {
                    tracing::warn!(error = %e, %user_id, "opening a lease failed; calls hold on their own");
                }
                account.refused_until = Some(now + REFUSED_BACKOFF);
                false
            }
        }
    }

    /// Gives the free part of the account's lease back to the available balance (a hold found no room
    /// beside it); true when something was given back.
    async fn give_back_free<S: ItemStore + ?Sized>(&self, store: &S, user_id: &str) -> bool {
        let lease = self.accounts().and_then(|mut accounts| {
            let account = accounts.get_mut(user_id)?;
            account.refused_until = Some(Instant::now() + REFUSED_BACKOFF);
            account.lease.clone()
        });
        let Some(lease) = lease else { return false };
        let (reserved, free) = lease.take_free();
        if free <= 0 {
            return false;
        }
        let given_back = metering::shrink_lease(store, user_id, &lease.id, reserved, free).await;
        if let Ok(false) = given_back {
            // The wallet reserves another figure than this process thinks: nothing was given back.
            lease.untake_free(free);
        }
        // Either way the lease serves no new call (after an unknown outcome its figure is not to be trusted);
        // its keeper gives back the rest, as the wallet says, once its calls ended.
        lease.retire_and_kick();
        matches!(given_back, Ok(true))
    }
}
