//! Calls in flight per account, counted across every instance, so that no one customer can hold more than
//! a set share of the inference function's concurrency (each call is an instance for up to 300 s).
//!
//! A semaphore of slots in the store: an account that may run `n` calls at once has slots `SLOT#0000` to
//! `SLOT#<n-1>` in its partition `INFLIGHT#<user id>`; a call is admitted by creating a free one ("must not
//! exist") and leaves by deleting it before its answer ends. A slot expires
//! [`IN_FLIGHT_SLOT_LIFETIME`] after it was taken, longer than any call can run, so the slot of a call
//! whose instance died frees itself. A call tries a few slots at random (one write when the account is
//! far from its limit), then reads which are taken and tries the free ones; none free is a 429
//! `rate_limit_exceeded` with `Retry-After`.

use chrono::{DateTime, Utc};
use rand::Rng as _;
use rand::seq::SliceRandom as _;
use serde_json::json;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::retention::IN_FLIGHT_SLOT_LIFETIME;
use crate::store::schema::{in_flight_pk, prefix, prefixed};
use crate::store::{Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, Table};

/// Random slots tried before the taken ones are read.
const BLIND_TRIES: usize = 3;
/// Free slots tried after the read, in random order (others may take them meanwhile).
const INFORMED_TRIES: usize = 8;
/// When a refused call should retry (a call ends within seconds, usually).
const RETRY_AFTER_SECS: u64 = 1;

/// A running call's slot: deleted when the call ends.
#[derive(Debug, Clone)]
pub struct InFlight {
    pk: String,
    sk: String,
    call: String,
}

/// Takes a free slot of the account's `limit` for the call `call`.
pub async fn enter(
    store: &dyn ItemStore,
    user_id: &str,
    limit: u64,
    call: &str,
    now: DateTime<Utc>,
) -> ApiResult<InFlight> {
    let pk = in_flight_pk(user_id);
    let expires_at = (now + IN_FLIGHT_SLOT_LIFETIME).timestamp();
    let slot =
        |n: u64| InFlight { pk: pk.clone(), sk: prefixed(prefix::SLOT, &format!("{n:04}")), call: call.to_owned() };
    for _ in 0..BLIND_TRIES {
        let candidate = slot(rand::thread_rng().gen_range(0..limit));
        if take(store, &candidate, expires_at).await? {
            return Ok(candidate);
        }
    }
    let query = Query::new(Table::Main, &pk).range(SortKeyRange::Prefix(prefix::SLOT.into())).limit(1000);
    let taken: Vec<String> = store.query(query).await?.items.into_iter().map(|item| item.sk).collect();
    let mut free: Vec<InFlight> = (0..limit).map(slot).filter(|candidate| !taken.contains(&candidate.sk)).collect();
    // Callers that read the same free slots each try them in their own order, not all the lowest first.
    free.shuffle(&mut rand::thread_rng());
    for candidate in free.into_iter().take(INFORMED_TRIES) {
        if take(store, &candidate, expires_at).await? {
            return Ok(candidate);
        }
    }
    Err(ApiError::TooManyRequests {
        code: ErrorCode::RateLimitExceeded,
        message: format!("this account is running {limit} calls at once, its limit; retry when one ends"),
        retry_after_secs: RETRY_AFTER_SECS,
    })
}

/// Takes a slot if it is free, or already this call's (a write retried after its answer was lost); a write
/// that failed may have landed, so it is undone before the error goes on.
async fn take(store: &dyn ItemStore, slot: &InFlight, expires_at: i64) -> ApiResult<bool> {
    let item = Item::from_record(&slot.pk, &slot.sk, &json!({ "call": slot.call }), Some(expires_at))?;
    let mine = Condition::AbsentOrEquals("call".into(), json!(slot.call));
    match store.put(Put { table: Table::Main, item, condition: mine }).await.applied() {
        Ok(taken) => Ok(taken.is_some()),
        Err(e) => {
            leave(store, Some(slot)).await;
            Err(e.into())
        }
    }
}

/// Frees the call's slot (if it took one), trying a failing store a few times; a slot left behind frees
/// itself when it expires.
pub async fn leave(store: &dyn ItemStore, slot: Option<&InFlight>) {
    let Some(slot) = slot else { return };
    for attempt in 0..3u32 {
        let delete = Delete {
            table: Table::Main,
            pk: slot.pk.clone(),
            sk: slot.sk.clone(),
            condition: Condition::AttrEquals("call".into(), json!(slot.call)),
        };
        match store.delete(delete).await.or_not_needed() {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "freeing a call's slot failed");
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
}
