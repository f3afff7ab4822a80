//! A lease's keeper: the one task per lease that records its calls, extends it while busy and gives it
//! back when idle or refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lease::{Lease, Step};
use super::{CHECK_EVERY, IDLE_RETURN, KEEPER_ATTEMPTS, RECORD_AFTER, RECORDS_PER_WRITE};
use crate::accounts::user_pk;
use crate::store::{StoreError, Table, schema};
use crate::wallet::metering::{self as metering, LeaseCall};

impl Lease {
    /// Starts the keeper unless it runs (a call that ended is forgotten at its next write, with others).
    pub(super) fn kick(self: &Arc<Self>) {
        let start = self.state().is_some_and(|mut state| !std::mem::replace(&mut state.keeper, true));
        if start {
            crate::tasks::spawn("lease keeper", self.clone().keep());
        }
    }

    /// Starts the keeper, or wakes it if it waits: what changed (a call started, the lease retired) is looked
    /// at now, not when its wait ends.
    pub(super) fn wake(self: &Arc<Self>) {
        self.kick();
        self.wake.notify_one();
    }

    fn next_step(&self) -> Step {
        let Some(mut state) = self.state() else { return Step::Stop };
        if state.returned {
            state.keeper = false;
            return Step::Stop;
        }
        let unrecorded = || state.running.iter().filter(|(id, _)| !state.recorded.contains(*id));
        let running: Vec<(String, LeaseCall)> = unrecorded()
            .filter(|(_, (_, started))| started.elapsed() >= RECORD_AFTER)
            .take(RECORDS_PER_WRITE)
            .map(|(id, (call, _))| (id.clone(), call.clone()))
            .collect();
        let next_due = unrecorded().map(|(_, (_, started))| RECORD_AFTER.saturating_sub(started.elapsed())).min();
        let ended: Vec<String> = state
            .recorded
            .iter()
            .filter(|id| !state.running.contains_key(*id))
            .take(RECORDS_PER_WRITE)
            .cloned()
            .collect();
        if !running.is_empty() || !ended.is_empty() {
            return Step::Record { running, ended };
        }
        if !state.retired && state.last_check.elapsed() >= CHECK_EVERY {
            state.last_check = Instant::now();
            return Step::Check;
        }
        if let Some(due) = next_due {
            return Step::Wait(due);
        }
        if !state.running.is_empty() {
            if state.retired {
                // Calls are running and on record: the next one to end starts the keeper again.
                state.keeper = false;
                return Step::Stop;
            }
            // Serving: the next look at the wallet is due then.
            return Step::Wait(CHECK_EVERY.saturating_sub(state.last_check.elapsed()));
        }
        let idle = state.last_start.elapsed();
        if state.extending {
            return Step::Wait(Duration::from_millis(20));
        }
        if state.retired || idle >= IDLE_RETURN || self.expired() {
            state.retired = true;
            return Step::Return { reserved: state.reserved };
        }
        Step::Wait(IDLE_RETURN.saturating_sub(idle).min(CHECK_EVERY.saturating_sub(state.last_check.elapsed())))
    }

    /// Records the calls on the wallet and returns the lease when it is done; leaves it to the sweeper after
    /// repeated store failures.
    async fn keep(self: Arc<Self>) {
        let mut failures = 0u32;
        while failures < KEEPER_ATTEMPTS {
            let kept = match self.next_step() {
                Step::Stop => return,
                Step::Wait(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.wake.notified() => {}
                    }
                    continue;
                }
                Step::Check => self.check().await,
                Step::Record { running, ended } => self.record(running, ended).await,
                Step::Return { reserved } => self.give_back(reserved).await,
            };
            match kept {
                Kept::Done => return,
                Kept::Ok => failures = 0,
                Kept::Failed => failures += 1,
            }
        }
        tracing::error!(lease_id = %self.id, "lease left to the sweeper after repeated store failures");
        self.give_up();
    }

    /// Looks at the wallet: a lease it no longer has is gone; one it stops (closed, owing) serves no more.
    async fn check(&self) -> Kept {
        match self.store.get(Table::Main, &user_pk(&self.user_id), schema::sk::WALLET).await {
            Ok(Some(wallet)) if wallet.attrs.contains_key(&metering::lease_attr(&self.id)) => {
                if metering::stops_leases(&wallet) {
                    self.retire_only();
                }
                Kept::Ok
            }
            Ok(_) => {
                self.found_gone();
                Kept::Done
            }
            Err(e) => {
                tracing::warn!(error = %e, lease_id = %self.id, "looking at a lease's wallet failed");
                Kept::Failed
            }
        }
    }

    /// Records the running calls (and forgets the ended ones) on the wallet, beside the lease.
    async fn record(&self, running: Vec<(String, LeaseCall)>, ended: Vec<String>) -> Kept {
        let store = self.store.as_ref();
        match metering::record_lease_calls(store, &self.user_id, &self.id, &running, &ended).await {
            Ok(()) => {
                if let Some(mut state) = self.state() {
                    state.recorded.extend(running.into_iter().map(|(id, _)| id));
                    for id in &ended {
                        state.recorded.remove(id);
                    }
                }
                Kept::Ok
            }
            Err(StoreError::ConditionFailed) => {
                self.found_gone();
                Kept::Done
            }
            Err(e) => {
                tracing::warn!(error = %e, lease_id = %self.id, "recording a lease's calls failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                Kept::Failed
            }
        }
    }

    /// Gives the lease back to the wallet with what it still reserves.
    async fn give_back(&self, reserved: i64) -> Kept {
        match metering::return_lease(self.store.as_ref(), &self.user_id, &self.id, reserved, &[]).await {
            Ok(None) => {
                self.give_up();
                Kept::Done
            }
            Ok(Some(on_wallet)) => {
                tracing::error!(lease_id = %self.id, reserved, on_wallet, "a lease's reserve differed");
                if let Some(mut state) = self.state() {
                    state.reserved = on_wallet;
                }
                Kept::Failed
            }
            Err(e) => {
                tracing::warn!(error = %e, lease_id = %self.id, "returning a lease failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                Kept::Failed
            }
        }
    }

    /// The lease is returned or gone: it serves nothing more and its keeper stops.
    fn give_up(&self) {
        if let Some(mut state) = self.state() {
            (state.retired, state.returned, state.keeper) = (true, true, false);
            state.reserved = 0;
        }
    }

    /// The lease is no longer on the wallet: the sweeper reconciled it (this process was frozen past its
    /// life). Nothing is left to keep.
    fn found_gone(&self) {
        tracing::error!(lease_id = %self.id, "a lease in use was found gone");
        self.give_up();
    }

    pub(super) fn retire_only(&self) {
        if let Some(mut state) = self.state() {
            state.retired = true;
        }
    }

    /// Given back (or found gone): it reserves nothing any more.
    pub(super) fn returned(&self) -> bool {
        self.state().is_none_or(|state| state.returned)
    }
}

/// What one step of a lease's keeper came to.
enum Kept {
    /// The lease is back, gone or given up: the keeper ends.
    Done,
    Ok,
    /// The store failed; enough of these in a row and the lease is left to the sweeper.
    Failed,
}
