//! Spend limits: a key's total, daily and monthly limits and the account's monthly limit, in INR, with
//! windows in IST. A limit is a hold that cannot be placed, never a check after the fact: before a call
//! is forwarded its hold (the most it can cost) is taken from every window it counts in, in the store, so
//! the limit holds across every instance (`windows`). Alerts at 50%, 80% and 100% (`alerts`); what a limit
//! is and its calendar (`limits`). The account's limit is stored with its other limits
//! (the `account_limits` module).
//!
//! A key is counted in its three windows while it has any spend limit (so its spend shows in each), and an
//! account in its month while it has a monthly limit; calls of keys and accounts without limits write
//! nothing here.
//!
//! The price, and its bound: a counted call writes each of its windows twice (the take, one transaction,
//! before it is forwarded; the correction after), so a window item takes writes in proportion to its key's
//! (or, for the account's month, its account's) calls. DynamoDB takes about 1,000 writes a second on one
//! item, 500 in transactions: a spend-limited key or account is good for a few hundred calls a second, and
//! beyond that its calls are refused as busy (503, `Retry-After`), never let through uncounted. Busier keys
//! need what the wallet has (purses: an instance takes a slice of the limit and counts its calls on its
//! own item), not built yet.

mod alerts;
mod limits;
mod windows;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use alerts::{SpendAlert, erase_alerts, list_alerts};
pub use limits::{Cap, MAX_SPEND_LIMIT_PAISE, Period, SpendLimits, checked_paise, read_paise};
pub use windows::{SpendHold, Window, release, settle, spent_paise, take};

use crate::error::ApiResult;
use crate::store::schema::{key_spend_pk, sk};
use crate::store::{Check, Condition, Delete, ItemStore, Table, WriteOp};

/// A key's windows.
const KEY_CAPS: [Cap; 3] = [Cap::Total, Cap::Daily, Cap::Monthly];

/// Whose limits a call counts against.
#[derive(Debug, Clone, Copy)]
pub struct Limited<'a> {
    pub key_id: &'a str,
    /// The key's slot in its account's partition (`APIKEYSLOT#<nn>`, holding `id` = the key's id while the
    /// key lives).
    pub key_slot: &'a str,
    pub key_limits: SpendLimits,
    /// When the key expires (its total window lives as long), epoch seconds.
    pub key_expiry: Option<i64>,
    pub user_id: &'a str,
    pub account_monthly: Option<i64>,
}

impl Limited<'_> {
    /// The windows a call at `now` counts in: none for a key and account without spend limits.
    pub fn windows(&self, now: DateTime<Utc>) -> Vec<Window> {
        let mut windows = Vec::new();
        if !self.key_limits.is_unlimited() {
            for cap in KEY_CAPS {
                let window = Window::of_key(self.key_id, cap, self.key_limits.of(cap), now, self.key_expiry);
                windows.push(if cap == Cap::Total { window.opens_only_if(self.key_lives()) } else { window });
            }
        }
        if let Some(limit) = self.account_monthly {
            windows.push(Window::of_account(self.user_id, limit, now));
        }
        windows
    }
}

impl Limited<'_> {
    /// The condition that the key still exists: its slot holds it.
    fn key_lives(&self) -> Check {
        Check {
            table: Table::Main,
            pk: crate::accounts::user_pk(self.user_id),
            sk: self.key_slot.to_owned(),
            condition: Condition::AttrEquals("id".into(), serde_json::json!(self.key_id)),
        }
    }
}

/// A key's spend in its current windows (`null` for a key without spend limits: it is not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpendPaise {
    pub total: Option<i64>,
    pub daily: Option<i64>,
    pub monthly: Option<i64>,
}

impl SpendPaise {
    /// A key that has not spent: zeros in its windows if it is counted, `null` if not.
    pub fn zero_if_counted(limits: SpendLimits) -> Self {
        let zero = (!limits.is_unlimited()).then_some(0);
        Self { total: zero, daily: zero, monthly: zero }
    }
}

/// What a key has spent in its current windows.
pub async fn key_spend(
    store: &dyn ItemStore,
    key_id: &str,
    limits: SpendLimits,
    now: DateTime<Utc>,
) -> ApiResult<SpendPaise> {
    if limits.is_unlimited() {
        return Ok(SpendPaise::default());
    }
    let spent = |cap| {
        let window = Window::of_key(key_id, cap, limits.of(cap), now, None);
        async move { spent_paise(store, &window).await }
    };
    let (total, daily, monthly) = futures_util::try_join!(spent(Cap::Total), spent(Cap::Daily), spent(Cap::Monthly))?;
    Ok(SpendPaise { total: Some(total), daily: Some(daily), monthly: Some(monthly) })
}

/// What the account spent this month, if it has a monthly limit (it is not counted otherwise).
pub async fn account_spend(
    store: &dyn ItemStore,
    user_id: &str,
    limit: Option<i64>,
    now: DateTime<Utc>,
) -> ApiResult<Option<i64>> {
    match limit {
        Some(limit) => Ok(Some(spent_paise(store, &Window::of_account(user_id, limit, now)).await?)),
        None => Ok(None),
    }
}

/// The revocation's write: a key's total window goes with it (its days and months expire).
pub fn erase_key_total(key_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: key_spend_pk(key_id),
        sk: sk::TOTAL.into(),
        condition: Condition::Always,
    })
}
