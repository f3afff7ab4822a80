//! Spend windows in the store. Each window a call counts in is one item (a key's `TOTAL`, `DAY#<date>` and
//! `MONTH#<month>` in `SPEND#api-key#<key id>`, the account's `MONTH#<month>` in `SPEND#account#<user id>`)
//! with `spent` (wallet units: the holds of running calls and the costs of settled ones), the `limit` it is
//! counted against (units, or `none`) and, under a limit, `left` (= limit − spent).
//!
//! A call takes its hold from every window at once (one conditional write each, in one transaction): each
//! needs `left` ≥ the hold, so concurrent calls on any number of instances can never together hold more
//! than a limit leaves. Settling adds `cost − hold` (the unused part back, a provider's excess kept); a
//! call that never reached a provider gives its hold back; a call that died keeps its hold counted, as the
//! sweeper charges it. So a window's spend exceeds its limit by at most what providers billed beyond the
//! holds of the calls running when it filled, the rule the wallet follows.
//!
//! A window is opened by the first call that finds it missing, and takes a changed limit (the caller's is
//! the key's current one) when a call finds it counted against another: `left` is then recomputed from
//! `spent`, so lowering a limit below what was spent refuses the next call at once.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::alerts;
use super::limits::{Cap, Period};
use crate::error::{ApiError, ApiResult};
use crate::money::{UNITS_PER_PAISA, format_inr};
use crate::retention::SPEND_WINDOW_GRACE;
use crate::store::schema::{account_spend_pk, key_spend_pk, prefix, prefixed, sk};
use crate::store::{Check, Condition, Conditional, Item, ItemStore, Put, StoreError, Table, Update, WriteOp};

const SPENT: &str = "spent";
const LIMIT: &str = "limit";
const LEFT: &str = "left";
/// The `limit` of a window counted without one.
const NO_LIMIT: &str = "none";
/// Rounds of opening, re-limiting and retrying before a call is refused as busy.
const TAKE_ATTEMPTS: usize = 6;
/// Tries of a settlement's or a release's correction.
const ADJUST_ATTEMPTS: u32 = 4;

/// One window a call counts in: its item and the limit (units) the caller knows for it.
#[derive(Debug, Clone)]
pub struct Window {
    pub cap: Cap,
    pub period: Period,
    pk: String,
    sk: String,
    limit: Option<i64>,
    /// When the item expires (`None`: the key's total, which lives as long as the key).
    expires_at: Option<i64>,
    /// What must hold for the window to be opened: a key's total opens only while the key exists (a key
    /// revoked but still in a gateway's cache must not start its total again from zero).
    opens_only_if: Option<Check>,
}

impl Window {
    /// A key's window of `cap` at `now`, against `limit_paise`.
    pub fn of_key(
        key_id: &str,
        cap: Cap,
        limit_paise: Option<i64>,
        now: DateTime<Utc>,
        key_expiry: Option<i64>,
    ) -> Self {
        let period = Period::of(cap, now);
        let sk = match cap {
            Cap::Total => sk::TOTAL.to_owned(),
            Cap::Daily => prefixed(prefix::DAY, &period.id),
            Cap::Monthly | Cap::AccountMonthly => prefixed(prefix::MONTH, &period.id),
        };
        let expires_at = match period.ends_at {
            Some(end) => Some((end + SPEND_WINDOW_GRACE).timestamp()),
            None => key_expiry,
        };
        let limit = limit_paise.map(|p| p.saturating_mul(UNITS_PER_PAISA));
        Self { cap, period, pk: key_spend_pk(key_id), sk, limit, expires_at, opens_only_if: None }
    }

    /// The window opens only while `check` holds.
    pub fn opens_only_if(mut self, check: Check) -> Self {
        self.opens_only_if = Some(check);
        self
    }

    /// The account's month at `now`, against `limit_paise`.
    pub fn of_account(user_id: &str, limit_paise: i64, now: DateTime<Utc>) -> Self {
        let period = Period::month(now);
        let expires_at = period.ends_at.map(|end| (end + SPEND_WINDOW_GRACE).timestamp());
        let sk = prefixed(prefix::MONTH, &period.id);
        let limit = Some(limit_paise.saturating_mul(UNITS_PER_PAISA));
        let pk = account_spend_pk(user_id);
        Self { cap: Cap::AccountMonthly, period, pk, sk, limit, expires_at, opens_only_if: None }
    }

    fn limit_value(&self) -> Value {
        self.limit.map_or_else(|| json!(NO_LIMIT), |units| json!(units))
    }

    /// Takes `amount` from the window: only while it is counted against the caller's limit and has enough left.
    fn take(&self, amount: i64) -> Update {
        let mut update = Update::new(Table::Main, &self.pk, &self.sk).add(SPENT, amount);
        let mut conditions = vec![Condition::AttrEquals(LIMIT.into(), self.limit_value())];
        if self.limit.is_some() {
            update = update.add(LEFT, -amount);
            conditions.push(Condition::AttrAtLeast(LEFT.into(), amount));
        }
        update.when(Condition::All(conditions))
    }

    /// Adds `delta` to what the window spent (a settlement's correction, or a hold given back). `left`
    /// moves too even in a window counted without a limit: a limit set while the call ran recomputed `left`
    /// from a `spent` that held this call's hold.
    fn adjust(&self, delta: i64) -> Update {
        Update::new(Table::Main, &self.pk, &self.sk).add(SPENT, delta).add(LEFT, -delta).when(Condition::Exists)
    }
}

/// What a call took from its spend windows, to settle or give back when it ends.
#[derive(Debug, Clone, Default)]
pub struct SpendHold {
    pub user_id: String,
    pub key_id: String,
    pub amount: i64,
    windows: Vec<Window>,
}

impl SpendHold {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// Takes `amount` from every window (all or none). 429 `spend_limit_reached` naming the cap that refuses
/// it (the one that resets last, when several do), after raising its 100% alert.
pub async fn take(
    store: &dyn ItemStore,
    owner: (&str, &str),
    windows: Vec<Window>,
    amount: i64,
    now: DateTime<Utc>,
) -> ApiResult<SpendHold> {
    let (user_id, key_id) = owner;
    let hold = SpendHold { user_id: user_id.to_owned(), key_id: key_id.to_owned(), amount, windows };
    if hold.windows.is_empty() {
        return Ok(hold);
    }
    for _ in 0..TAKE_ATTEMPTS {
        let ops = hold.windows.iter().map(|w| WriteOp::Update(w.take(amount))).collect();
        if store.transact(ops).await.applied()?.is_some() {
            return Ok(hold);
        }
        if let Some((full, item)) = prepare_windows(store, &hold.windows, amount).await? {
            let refused = &hold.windows[full];
            alerts::refused(store, &hold, refused, &item, now).await;
            return Err(limit_reached(refused));
        }
    }
    Err(ApiError::Unavailable("spend windows kept changing".into()))
}

/// After a refused take: opens missing windows and re-limits those counted against another limit; returns
/// the window that has too little left, if one has (the one that resets last), as read.
async fn prepare_windows(store: &dyn ItemStore, windows: &[Window], amount: i64) -> ApiResult<Option<(usize, Item)>> {
    let mut full: Option<(usize, Item)> = None;
    for (index, window) in windows.iter().enumerate() {
        match store.get(Table::Main, &window.pk, &window.sk).await? {
            None => open(store, window).await?,
            Some(item) if item.attrs.get(LIMIT) != Some(&window.limit_value()) => relimit(store, window, &item).await?,
            Some(item) if window.limit.is_some() && number(&item, LEFT) < amount => {
                if full.as_ref().is_none_or(|(other, _)| resets_later(window, &windows[*other])) {
                    full = Some((index, item));
                }
            }
            Some(_) => {}
        }
    }
    Ok(full)
}

/// Whether `window` resets after `other` (never resetting is the latest).
fn resets_later(window: &Window, other: &Window) -> bool {
    match (window.period.ends_at, other.period.ends_at) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

async fn open(store: &dyn ItemStore, window: &Window) -> ApiResult<()> {
    let mut attrs = serde_json::Map::new();
    attrs.insert(SPENT.into(), json!(0));
    attrs.insert(LIMIT.into(), window.limit_value());
    if let Some(limit) = window.limit {
        attrs.insert(LEFT.into(), json!(limit));
    }
    let item = Item::from_record(&window.pk, &window.sk, &Value::Object(attrs), window.expires_at)?;
    let put = Put { table: Table::Main, item, condition: Condition::NotExists };
    // Another call may have opened it first: either way it is open. A window whose condition fails stays
    // closed, and its calls are refused as busy.
    match &window.opens_only_if {
        Some(check) => store.transact(vec![WriteOp::Check(check.clone()), WriteOp::Put(put)]).await.or_not_needed()?,
        None => store.put(put).await.or_not_needed()?,
    }
    Ok(())
}

/// Counts the window against the caller's limit from now on (alerts count per limit), if nobody changed
/// it since it was read.
async fn relimit(store: &dyn ItemStore, window: &Window, read: &Item) -> ApiResult<()> {
    let spent = number(read, SPENT);
    let mut update = Update::new(Table::Main, &window.pk, &window.sk).set(LIMIT, window.limit_value());
    update = match window.limit {
        Some(limit) => update.set(LEFT, json!(limit.saturating_sub(spent))),
        None => update.remove(LEFT),
    };
    let unchanged = Condition::All(vec![
        Condition::AttrEquals(SPENT.into(), json!(spent)),
        Condition::AttrEquals(LIMIT.into(), read.attrs.get(LIMIT).cloned().unwrap_or(Value::Null)),
    ]);
    store.update(update.when(unchanged)).await.or_not_needed()?;
    Ok(())
}

fn number(item: &Item, name: &str) -> i64 {
    item.attrs.get(name).and_then(Value::as_i64).unwrap_or(0)
}

/// 429 `spend_limit_reached` (type `insufficient_quota`), naming the cap and when it resets.
fn limit_reached(window: &Window) -> ApiError {
    let limit = window.limit.unwrap_or(0);
    ApiError::SpendLimitReached {
        param: window.cap.param(),
        message: format!(
            "This request would exceed {} of {}; it resets {}.",
            window.cap.described(),
            format_inr(limit),
            match window.period.ends_at {
                Some(_) => format!("at {}", window.period.resets()),
                None => window.period.resets(),
            }
        ),
    }
}

/// Settles a call in its windows: what it cost replaces its hold, and the alerts its spend crossed go out.
/// A window that cannot be written keeps the hold counted (the safe side).
pub async fn settle(store: &dyn ItemStore, hold: &SpendHold, cost: i64, now: DateTime<Utc>) {
    let delta = cost.saturating_sub(hold.amount);
    let writes = hold.windows.iter().map(|window| async move {
        if let Some(item) = adjust_patiently(store, window, delta).await {
            alerts::check(store, hold, window, &item, now).await;
        }
    });
    futures_util::future::join_all(writes).await;
}

/// Gives a call's hold back to its windows (the call never reached a provider).
pub async fn release(store: &dyn ItemStore, hold: &SpendHold) {
    let writes = hold.windows.iter().map(|window| adjust_patiently(store, window, -hold.amount));
    futures_util::future::join_all(writes).await;
}

/// Applies a correction, trying a failing store a few times (a busy account's month takes every key's
/// calls); a correction that never lands leaves the hold counted, the side that never lets spend pass a limit.
async fn adjust_patiently(store: &dyn ItemStore, window: &Window, delta: i64) -> Option<Item> {
    for attempt in 0..ADJUST_ATTEMPTS {
        match store.update(window.adjust(delta)).await {
            Ok(item) => return Some(item),
            // The window expired (its period ended days ago): nothing left to correct.
            Err(StoreError::ConditionFailed) => return None,
            Err(e) => {
                tracing::warn!(error = %e, cap = window.cap.param(), attempt, "a spend window's correction failed");
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    None
}

/// What a window has spent, in whole paise (rounded down); 0 for a window nobody opened.
pub async fn spent_paise(store: &dyn ItemStore, window: &Window) -> ApiResult<i64> {
    let item = store.get(Table::Main, &window.pk, &window.sk).await?;
    Ok(item.map_or(0, |item| number(&item, SPENT).max(0) / UNITS_PER_PAISA))
}

/// What an item's `spent` and `limit` are, for its alerts.
pub(super) fn spent_and_limit(item: &Item) -> (i64, Option<i64>) {
    (number(item, SPENT), item.attrs.get(LIMIT).and_then(Value::as_i64))
}
