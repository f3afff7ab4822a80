//! Funding a purse from the wallet (the only writes of the wallet on the hot path), gathering what other
//! instances' purses hold before a 402, and stopping every purse when the account closes or owes.

use crate::ports::Ports;
use serde_json::{Value, json};

use super::{Funding, PURSE_ON_WALLET, STOP_ATTEMPTS, number, purse_sort_key};
use crate::accounts::user_pk;
use crate::error::{ApiError, ApiResult};
use crate::store::{Condition, Item, ItemStore, Put, StoreError, Table, Update, WriteOp};
use crate::wallet::metering::holds::Hold;
use crate::wallet::{CLOSED, WALLET_SK};

/// Rounds of gathering before a 402: each can be undone by other instances funding meanwhile.
pub(super) const GATHER_ROUNDS: usize = 3;

/// One transaction: `size` of the wallet's available balance into the purse (created if new, no longer
/// stopped: the wallet, open and owing nothing, is the proof), and the hold placed on it.
pub(super) async fn fund(ports: &Ports, hold: &Hold, call: &Value, instance: &str, size: i64) -> ApiResult<Funding> {
    let store = ports.store();
    let clock = ports.clock();
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
pub(super) fn purses_of(wallet: &Item) -> Vec<String> {
    wallet.attrs.keys().filter_map(|k| k.strip_prefix(PURSE_ON_WALLET)).map(str::to_owned).collect()
}

/// Takes back into the wallet what other purses hold and no call of theirs has taken, until the wallet's
/// available balance reaches `need` (or there is nothing more); returns what came back.
pub(super) async fn gather<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    instance: &str,
    need: i64,
) -> ApiResult<i64> {
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
