//! One lease of this process: what it reserves, the calls it holds for, and how each call takes from it
//! and gives back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{LIFE_MARGIN, MAX_CALLS_PER_LEASE, REFUSED_BACKOFF};
use crate::clock::Clock;
use crate::store::ItemStore;
use crate::wallet::metering::{self as metering, HeldCall, Hold, LeaseBacking, LeaseCall, LeaseRefused, LeaseReserve};

/// One lease of this process.
pub struct Lease {
    pub(super) id: String,
    pub(super) user_id: String,
    /// When it was opened (epoch millis, as its id says): the sweeper counts its life from there.
    pub(super) opened_at: i64,
    pub(super) clock: Arc<dyn Clock>,
    /// The wallet's low-balance threshold, as last seen (each settlement checks it).
    pub(super) low_balance_threshold: AtomicI64,
    pub(super) store: Arc<dyn ItemStore>,
    /// The account's count of calls running on its leases.
    pub(super) running: Arc<AtomicUsize>,
    pub(super) state: Mutex<LeaseState>,
    /// Wakes a keeper that is waiting: a call that starts while it sleeps is recorded [`RECORD_AFTER`]
    /// later, not when the sleep ends (up to [`CHECK_EVERY`] later, too late for a process killed meanwhile).
    pub(super) wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(super) struct LeaseState {
    /// What the wallet's `lease_<id>` says (as far as this process's writes go).
    pub(super) reserved: i64,
    /// The holds of the calls running on it.
    pub(super) outstanding: i64,
    /// The calls running on it, with when they started.
    pub(super) running: HashMap<String, (LeaseCall, Instant)>,
    /// The calls recorded on the wallet.
    pub(super) recorded: HashSet<String>,
    pub(super) keeper: bool,
    pub(super) extending: bool,
    /// Extensions written so far (the wallet counts them too).
    pub(super) extensions: u32,
    pub(super) extend_refused_until: Option<Instant>,
    /// Serves no new call (its life is over, the wallet closed, or it is being returned).
    pub(super) retired: bool,
    pub(super) returned: bool,
    pub(super) last_start: Instant,
    /// When the keeper last looked at the wallet.
    pub(super) last_check: Instant,
    /// The wallet's available balance at the last lease write.
    pub(super) available: i64,
}

impl Default for LeaseState {
    fn default() -> Self {
        Self {
            reserved: 0,
            outstanding: 0,
            running: HashMap::new(),
            recorded: HashSet::new(),
            keeper: false,
            extending: false,
            extensions: 0,
            extend_refused_until: None,
            retired: false,
            returned: false,
            last_start: Instant::now(),
            last_check: Instant::now(),
            available: 0,
        }
    }
}

pub(super) enum Taken {
    Yes,
    NoRoom,
    Retired,
}

/// The keeper's next job.
pub(super) enum Step {
    Record { running: Vec<(String, LeaseCall)>, ended: Vec<String> },
    Check,
    Return { reserved: i64 },
    Wait(Duration),
    Stop,
}

impl Lease {
    pub(super) fn state(&self) -> Option<MutexGuard<'_, LeaseState>> {
        self.state.lock().ok()
    }

    /// Past the time it may serve new calls, by the same clock the sweeper judges it with.
    pub(super) fn expired(&self) -> bool {
        let life = metering::LEASE_LIFE.num_milliseconds() - i64::try_from(LIFE_MARGIN.as_millis()).unwrap_or(0);
        self.clock.now().timestamp_millis() >= self.opened_at.saturating_add(life)
    }

    pub(super) fn is_returned(&self) -> bool {
        self.state().is_none_or(|state| state.returned)
    }

    pub(super) fn take(&self, hold_id: &str, amount: i64, call: &HeldCall) -> Taken {
        let Some(mut state) = self.state() else { return Taken::NoRoom };
        if state.retired || self.expired() {
            state.retired = true;
            return Taken::Retired;
        }
        if state.running.len() >= MAX_CALLS_PER_LEASE || state.reserved - state.outstanding < amount {
            return Taken::NoRoom;
        }
        state.outstanding += amount;
        state.last_start = Instant::now();
        let record = LeaseCall { lease: self.id.clone(), amount, call: call.clone() };
        state.running.insert(hold_id.to_owned(), (record, Instant::now()));
        self.running.fetch_add(1, Ordering::SeqCst);
        Taken::Yes
    }

    pub(super) fn hold_for(self: &Arc<Self>, hold_id: &str, amount: i64, balance: i64) -> Hold {
        Hold {
            id: hold_id.to_owned(),
            user_id: self.user_id.clone(),
            amount,
            balance,
            low_balance_threshold: self.low_balance_threshold.load(Ordering::SeqCst),
            lease: Some(LeaseBacking { id: self.id.clone(), reserve: self.clone() }),
            purse: None,
        }
    }

    /// After serving a call: the keeper records it, and the lease is topped up when it runs low.
    pub(super) fn after_take(self: &Arc<Self>, target: i64) {
        self.wake();
        let add = self.state().and_then(|mut state| {
            let free = state.reserved - state.outstanding;
            let may = state.extend_refused_until.is_none_or(|until| Instant::now() >= until);
            if state.extending || !may || free >= target / 2 {
                return None;
            }
            let add = (target - free).min(state.available / 2);
            (add > 0).then(|| {
                state.extending = true;
                (add, state.extensions + 1)
            })
        });
        if let Some((add, step)) = add {
            crate::tasks::spawn("lease extension", self.clone().extend(add, step));
        }
    }

    async fn extend(self: Arc<Self>, add: i64, step: u32) {
        let extended = metering::reserve_for_lease(self.store.as_ref(), &self.user_id, &self.id, add, step).await;
        let Some(mut state) = self.state() else { return };
        state.extending = false;
        match extended {
            Ok(wallet) => {
                state.extensions = step;
                state.reserved += add;
                state.available = wallet.available;
            }
            Err(LeaseRefused::Closed | LeaseRefused::Gone) => state.retired = true,
            Err(LeaseRefused::Store(e)) => {
                // Applied or not, nobody knows: the lease serves no new call, and its keeper gives back what the
                // wallet says it reserves.
                tracing::warn!(error = %e, lease_id = %self.id, "extending a lease failed");
                state.retired = true;
            }
            Err(LeaseRefused::Insufficient) => state.extend_refused_until = Some(Instant::now() + REFUSED_BACKOFF),
        }
    }

    pub(super) fn retire_and_kick(self: &Arc<Self>) {
        if let Some(mut state) = self.state() {
            state.retired = true;
        }
        self.wake();
    }

    /// Takes the lease's free part out of service (to give it back); returns what it reserved before, and
    /// the free part.
    pub(super) fn take_free(&self) -> (i64, i64) {
        self.state().map_or((0, 0), |mut state| {
            let reserved = state.reserved;
            let free = (reserved - state.outstanding).max(0);
            state.reserved -= free;
            (reserved, free)
        })
    }

    pub(super) fn untake_free(&self, free: i64) {
        if let Some(mut state) = self.state() {
            state.reserved += free;
        }
    }
}

impl LeaseReserve for Lease {
    fn reserved(&self) -> i64 {
        self.state().map_or(0, |state| state.reserved)
    }

    fn threshold_seen(&self, threshold: i64) {
        self.low_balance_threshold.store(threshold, Ordering::SeqCst);
    }

    fn settled(&self, from_lease: i64) {
        if let Some(mut state) = self.state() {
            state.reserved -= from_lease;
        }
    }

    fn retire(&self) {
        self.retire_only();
    }

    fn finished(self: Arc<Self>, hold_id: &str) {
        let ended = self.state().is_some_and(|mut state| {
            let ended = state.running.remove(hold_id);
            if let Some((call, _)) = &ended {
                state.outstanding -= call.amount;
                self.running.fetch_sub(1, Ordering::SeqCst);
            }
            ended.is_some()
        });
        if ended {
            self.kick();
        }
    }

    fn abandoned(self: Arc<Self>, hold_id: &str) {
        let known = self.state().is_some_and(|mut state| {
            state.retired = true;
            state.running.contains_key(hold_id)
        });
        if known {
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
        self.kick();
    }
}
