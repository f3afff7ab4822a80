//! Budget leases' reserves on the wallet item (`lease_<id>`, counted in `held` like a hold), and the calls
//! each lease serves recorded beside it for the sweeper: opening and extending a lease, shrinking it,
//! recording its calls and returning it. The lease keeper that decides when is `leases`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::accounts::user_pk;
use crate::error::ApiResult;
use crate::store::{Condition, Conditional, Item, ItemStore, StoreError, Table, Update};
use crate::wallet::{CLOSED, WALLET_SK};

use super::holds::{HOLD_USAGE_PREFIX, HeldCall, LEASE_PREFIX, LeaseReserve, low_balance_threshold};

/// The wallet attribute holding a lease's reserve.
pub fn lease_attr(lease_id: &str) -> String {
    format!("{LEASE_PREFIX}{lease_id}")
}

/// Gives `amount` of a lease's reserve back to the available balance, the lease reserving `reserved` before
/// (the lease goes on with the rest). Conditioned on that figure, so a repeated write applies once.
pub async fn shrink_lease<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    lease_id: &str,
    reserved: i64,
    amount: i64,
) -> ApiResult<bool> {
    let attr = lease_attr(lease_id);
    let update = Update::new(Table::Main, user_pk(user_id), WALLET_SK)
        .set(&attr, json!(reserved - amount))
        .add("held", -amount)
        .add("available", amount)
        .when(Condition::AttrEquals(attr.clone(), json!(reserved)));
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
