//! Spend alerts: when a window's spend reaches 50%, 80% and 100% of its limit (100% also when a call is
//! refused by it), the account gets an e-mail and an entry the dashboard lists (`USER#<id>` /
//! `SPENDALERT#<time>`, kept [`SPEND_ALERT_LIFETIME`]). Once per window, limit and threshold: the window
//! item remembers the highest threshold alerted under each limit it was counted against (`alerted_<limit>`,
//! so processes whose cached limits differ for a minute after a change never alert twice), and the alert is
//! written only by the write that raises it, in one transaction with the e-mail. A refused call raises 100%
//! once 80% is spent (the limit is reached for calls like it); a large call refused early raises nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::limits::Cap;
use super::windows::{SpendHold, Window, spent_and_limit};
use crate::accounts::user_pk;
use crate::money::UNITS_PER_PAISA;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::retention::SPEND_ALERT_LIFETIME;
use crate::store::schema::{prefix, time_sort_key};
use crate::store::{Condition, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, Update, WriteOp};

/// The thresholds, in percent of a limit.
const THRESHOLDS: [u8; 3] = [50, NEARLY_FULL, FULL];
/// The threshold past which a refused call means the limit is reached.
const NEARLY_FULL: u8 = 80;
/// The threshold of a limit reached.
const FULL: u8 = 100;

/// The window item's attribute: the highest threshold alerted under `limit`.
fn alerted_attr(limit: i64) -> String {
    format!("alerted_{limit}")
}
/// How many alerts `GET /v1/spend-alerts` lists.
const LISTED: u32 = 50;

/// One alert, as stored and as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendAlert {
    /// `total`, `daily`, `monthly` (a key's) or `account_monthly`.
    pub cap: String,
    /// 50, 80 or 100.
    pub percent: u8,
    pub limit_paise: i64,
    pub spent_paise: i64,
    /// The key whose limit it is (none for the account's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The window: its day or month in IST (`2026-12-06`, `2026-12`), or `total`.
    pub window: String,
    pub created_at: DateTime<Utc>,
}

/// After a settlement wrote `item`: raises the highest threshold its spend has reached, if not yet raised.
pub(super) async fn check(store: &dyn ItemStore, hold: &SpendHold, window: &Window, item: &Item, now: DateTime<Utc>) {
    let (spent, limit) = spent_and_limit(item);
    let Some(limit) = limit else { return };
    let reached = THRESHOLDS.iter().rev().copied().find(|t| share_reached(spent, limit, *t));
    if let Some(percent) = reached {
        raise(store, hold, Reached { window, item, percent }, now).await;
    }
}

/// After `window` (as read: `item`) refused a call: 100% once 80% is spent, else what spend has reached.
pub(super) async fn refused(store: &dyn ItemStore, hold: &SpendHold, window: &Window, item: &Item, now: DateTime<Utc>) {
    let (spent, limit) = spent_and_limit(item);
    match limit {
        Some(limit) if share_reached(spent, limit, NEARLY_FULL) => {
            raise(store, hold, Reached { window, item, percent: FULL }, now).await;
        }
        _ => check(store, hold, window, item, now).await,
    }
}

/// Whether `spent` is at least `percent` of `limit`.
fn share_reached(spent: i64, limit: i64, percent: u8) -> bool {
    spent.saturating_mul(100) >= limit.saturating_mul(i64::from(percent))
}

/// A threshold a window (as read: `item`) has reached.
struct Reached<'a> {
    window: &'a Window,
    item: &'a Item,
    percent: u8,
}

/// Raises the alert of `percent` for the window (read as `item`) unless it, or a higher one, was raised.
/// Best effort: a write that loses a race leaves the alert to the next settlement in the window.
async fn raise(store: &dyn ItemStore, hold: &SpendHold, reached: Reached<'_>, now: DateTime<Utc>) {
    let Reached { window, item, percent } = reached;
    let (spent, limit) = spent_and_limit(item);
    let Some(limit) = limit else { return };
    let before = item.attrs.get(&alerted_attr(limit)).and_then(Value::as_u64).unwrap_or(0);
    if before >= u64::from(percent) {
        return;
    }
    let alert = SpendAlert {
        cap: window.cap.param().into(),
        percent,
        limit_paise: limit / UNITS_PER_PAISA,
        spent_paise: spent.max(0) / UNITS_PER_PAISA,
        key_id: (window.cap != Cap::AccountMonthly).then(|| hold.key_id.clone()),
        window: if window.period.id.is_empty() { "total".into() } else { window.period.id.clone() },
        created_at: now,
    };
    let written = alert_ops(hold, window, (item, limit), &alert, before);
    let result = match written {
        Ok(ops) => store.transact(ops).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::info!(error = %e, cap = window.cap.param(), percent, "a spend alert was left to a later call");
    }
}

fn alert_ops(
    hold: &SpendHold,
    window: &Window,
    (item, limit): (&Item, i64),
    alert: &SpendAlert,
    before: u64,
) -> StoreResult<Vec<WriteOp>> {
    let alerted = alerted_attr(limit);
    let mark = Update::new(Table::Main, &item.pk, &item.sk)
        .set(&alerted, json!(alert.percent))
        .when(Condition::AttrAbsentOrEquals(alerted.clone(), json!(before)));
    let mail = OutboxMail::new(MailKind::SpendLimitAlert, &hold.user_id, alert.created_at)
        .param("what", window.cap.described())
        .param("percent", alert.percent)
        .param("limit", alert.limit_paise.saturating_mul(UNITS_PER_PAISA))
        .param("spent", alert.spent_paise.saturating_mul(UNITS_PER_PAISA))
        .param("resets", window.period.resets())
        .param("key_id", alert.key_id.clone().unwrap_or_default());
    let expires_at = (alert.created_at + SPEND_ALERT_LIFETIME).timestamp();
    let listed = Item::from_record(
        user_pk(&hold.user_id),
        time_sort_key(prefix::SPEND_ALERT, alert.created_at),
        alert,
        Some(expires_at),
    )?;
    Ok(vec![
        WriteOp::Update(mark),
        enqueue(&mail)?,
        WriteOp::Put(Put { table: Table::Main, item: listed, condition: Condition::NotExists }),
    ])
}

/// At closure: the account's spend alerts go (no rule keeps a closed account's alerts; its usage and ledger
/// keep the spending itself).
pub async fn erase_alerts(store: &dyn ItemStore, user_id: &str) -> StoreResult<()> {
    for item in crate::store::user_items(store, user_id, prefix::SPEND_ALERT).await? {
        let erase = crate::store::Delete { table: Table::Main, pk: item.pk, sk: item.sk, condition: Condition::Always };
        store.delete(erase).await?;
    }
    Ok(())
}

/// The account's latest spend alerts, newest first.
pub async fn list_alerts<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Vec<SpendAlert>> {
    let query = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(prefix::SPEND_ALERT.into()))
        .newest_first()
        .limit(LISTED);
    let page = store.query(query).await?;
    page.items.iter().map(Item::record).collect()
}
