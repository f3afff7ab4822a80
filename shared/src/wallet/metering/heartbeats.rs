//! Signs of life of the calls in flight, so that the sweeper can tell a call whose instance died from one
//! that is still running, and charge the first within a minute instead of waiting out the inference
//! function's whole timeout.
//!
//! A call with a hold of its own beats every [`BEAT_EVERY`] while it runs, in an item of its own
//! (`USER#<id>` / `CALLBEAT#<hold id>`: one write per call per beat, never the wallet item). A hold placed
//! more than [`SILENT_FOR`] ago whose call has not beaten for that long is dead: its instance was killed,
//! or frozen for good (a Lambda instance is never frozen mid-invocation). The hold's id carries its
//! placement time, which stands for the first beat.

use crate::ports::Ports;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::accounts::user_pk;
use crate::store::schema::prefix::CALL_BEAT;
use crate::store::{Condition, Item, ItemStore, Put, StoreResult, Table};

/// How often a running call says it is alive.
pub const BEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// A call silent this long (three beats missed) is dead.
pub const SILENT_FOR: Duration = Duration::seconds(30);

fn sort_key(hold_id: &str) -> String {
    format!("{CALL_BEAT}{hold_id}")
}

/// Records that the call of `hold_id` is alive now.
pub async fn beat(ports: &Ports, user_id: &str, hold_id: &str) -> StoreResult<()> {
    let store = ports.store();
    let clock = ports.clock();
    let now = clock.now();
    let expires_at = (now + crate::retention::CALL_BEAT_LIFETIME).timestamp();
    let record = json!({ "beat": now.timestamp_millis() });
    let item = Item::from_record(user_pk(user_id), sort_key(hold_id), &record, Some(expires_at))
        .map_err(|e| crate::store::StoreError::Malformed(e.to_string()))?;
    store.put(Put { table: Table::Main, item, condition: Condition::Always }).await
}

/// When the call of `hold_id` last said it was alive, if it ever did.
pub async fn last_beat<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    hold_id: &str,
) -> StoreResult<Option<DateTime<Utc>>> {
    let item = store.get(Table::Main, &user_pk(user_id), &sort_key(hold_id)).await?;
    Ok(item.and_then(|i| i.attrs.get("beat").and_then(Value::as_i64)).and_then(DateTime::<Utc>::from_timestamp_millis))
}

/// Whether a hold placed at `placed` (its call's first sign of life) has been silent past [`SILENT_FOR`].
pub async fn is_silent<S: ItemStore + ?Sized>(
    store: &S,
    now: DateTime<Utc>,
    user_id: &str,
    hold_id: &str,
    placed: DateTime<Utc>,
) -> StoreResult<bool> {
    if now - placed < SILENT_FOR {
        return Ok(false);
    }
    let last = last_beat(store, user_id, hold_id).await?.map_or(placed, |beat| beat.max(placed));
    Ok(now - last >= SILENT_FOR)
}

/// Beats for a call until dropped (when its settlement is over, or the call is).
#[derive(Debug)]
pub struct Beating(tokio::task::JoinHandle<()>);

impl Drop for Beating {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts beating for the call of `hold_id`; a beat that fails is logged and the next one tried.
pub fn keep_beating(ports: &Ports, user_id: &str, hold_id: &str) -> Beating {
    let (ports, user_id, hold_id) = (ports.clone(), user_id.to_owned(), hold_id.to_owned());
    Beating(crate::tasks::spawn("call heartbeat", async move {
        loop {
            tokio::time::sleep(BEAT_EVERY).await;
            if let Err(e) = beat(&ports, &user_id, &hold_id).await {
                tracing::warn!(error = %e, %hold_id, "a running call's heartbeat was not recorded");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::clock::{Clock, ManualClock};

    fn store() -> crate::store::sqlite::SqliteStore {
        match crate::store::sqlite::SqliteStore::in_memory(Arc::new(crate::clock::SystemClock)) {
            Ok(store) => store,
            Err(e) => unreachable!("in-memory store: {e}"),
        }
    }

    #[tokio::test]
    async fn a_call_is_dead_once_silent_past_the_limit_from_its_last_beat() -> Result<(), Box<dyn std::error::Error>> {
        let store = store();
        let clock = Arc::new(ManualClock::starting_now());
        let ports = Ports::new(Arc::new(store.clone()), clock.clone(), crate::config::Config::default());
        let placed = clock.now();
        let at = |seconds: i64| placed + Duration::seconds(seconds);
        let hold = ("usr_1", "0000000000001_abc");
        // Young holds are alive whatever their beats say.
        assert!(!is_silent(&store, at(29), hold.0, hold.1, placed).await?);
        // No beat at all: silent from the placement on.
        assert!(is_silent(&store, at(30), hold.0, hold.1, placed).await?);
        // A beat at 25 s keeps it alive until 55 s.
        clock.set(at(25));
        beat(&ports, hold.0, hold.1).await?;
        assert!(!is_silent(&store, at(54), hold.0, hold.1, placed).await?);
        assert!(is_silent(&store, at(55), hold.0, hold.1, placed).await?);
        // Another call's beat says nothing of this one.
        clock.set(at(100));
        beat(&ports, hold.0, "0000000000002_def").await?;
        assert!(is_silent(&store, at(100), hold.0, hold.1, placed).await?);
        Ok(())
    }
}
