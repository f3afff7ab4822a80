//! An account's limits (`SPEND#account#<user id>` / `LIMIT`): the monthly spend limit the customer sets
//! (`PATCH /v1/wallet` or `PATCH /v1/limits`), the rate limits its keys get when they set none
//! (`default_rate_limits`), and the ceiling operators set over every key's rate limits
//! (`PUT /v1/admin/accounts/{user_id}/limits`). Inference reads the item beside the key when it looks a key
//! up, so a change reaches every instance within the key cache's lifetime; a key's effective rate limits
//! are its own, else the account's defaults, each capped at the ceiling. The account's data residency
//! (`PATCH /v1/account`) lives here too, for the same read.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::accounts::{AccountStatus, AccountStore};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::keys::RateLimits;
use crate::residency::DataResidency;
use crate::store::schema::{account_spend_pk, sk};
use crate::store::{Condition, Conditional, Delete, Item, ItemStore, Put, StoreResult, Table, Update, WriteOp};

/// The most calls operators may let an account run at once.
pub const MAX_CALLS_IN_FLIGHT: u64 = 1_000;
/// Tries of a change that meets another.
const CHANGE_ATTEMPTS: usize = 5;

/// The account's limits as stored and as `GET /v1/limits` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimits {
    /// The monthly spend limit, paise (`null`: none).
    #[serde(default, rename = "monthly_spend_limit_paise")]
    pub monthly_spend: Option<i64>,
    /// What a key without rate limits of its own gets (each `null`: no limit).
    #[serde(default)]
    pub default_rate_limits: RateLimits,
    /// The most any key's rate limits may be, set by operators (each `null`: no ceiling).
    #[serde(default)]
    pub rate_limit_ceiling: RateLimits,
    /// How many calls the account may run at once, set by operators (`null`: the platform's default).
    #[serde(default)]
    pub calls_in_flight: Option<u64>,
    /// Where the account's calls may run unless a key narrows it (`PATCH /v1/account`; `crate::residency`).
    #[serde(default)]
    pub data_residency: DataResidency,
}

impl AccountLimits {
    /// A key's effective rate limits: its own, else the account's defaults, each capped at the ceiling.
    pub fn rate_limits_of(&self, own: RateLimits) -> RateLimits {
        let pick = |own: Option<u64>, default: Option<u64>, ceiling: Option<u64>| match (own.or(default), ceiling) {
            (Some(limit), Some(ceiling)) => Some(limit.min(ceiling)),
            (limit, ceiling) => limit.or(ceiling),
        };
        RateLimits {
            requests_per_minute: pick(
                own.requests_per_minute,
                self.default_rate_limits.requests_per_minute,
                self.rate_limit_ceiling.requests_per_minute,
            ),
            tokens_per_minute: pick(
                own.tokens_per_minute,
                self.default_rate_limits.tokens_per_minute,
                self.rate_limit_ceiling.tokens_per_minute,
            ),
        }
    }
}

/// The account's limits (all unset when it set none).
pub async fn account_limits<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<AccountLimits> {
    let item = store.get(Table::Main, &account_spend_pk(user_id), sk::LIMIT).await?;
    Ok(item.map(|i| i.record()).transpose()?.unwrap_or_default())
}

/// The account's data residency (`any` when it set none).
pub async fn residency_of<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<DataResidency> {
    Ok(account_limits(store, user_id).await?.data_residency)
}

/// One change of an account's limits: the attribute and its new value (`None` removes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitChange {
    MonthlySpend(Option<i64>),
    DefaultRateLimits(RateLimits),
    RateLimitCeiling(RateLimits),
    CallsInFlight(Option<u64>),
    DataResidency(DataResidency),
}

impl LimitChange {
    fn attribute(&self) -> (&'static str, Option<Value>) {
        let limits = |l: &RateLimits| (!l.is_unlimited()).then(|| rate_limits_value(l));
        match self {
            LimitChange::MonthlySpend(paise) => ("monthly_spend_limit_paise", paise.map(|p| json!(p))),
            LimitChange::DefaultRateLimits(l) => ("default_rate_limits", limits(l)),
            LimitChange::RateLimitCeiling(l) => ("rate_limit_ceiling", limits(l)),
            LimitChange::CallsInFlight(n) => ("calls_in_flight", n.map(|n| json!(n))),
            LimitChange::DataResidency(r) => ("data_residency", Some(json!(r.as_str()))),
        }
    }
}

/// Only the limits set (a null would be stored differently by the two backends).
fn rate_limits_value(limits: &RateLimits) -> Value {
    let mut set = serde_json::Map::new();
    if let Some(n) = limits.requests_per_minute {
        set.insert("requests_per_minute".into(), json!(n));
    }
    if let Some(n) = limits.tokens_per_minute {
        set.insert("tokens_per_minute".into(), json!(n));
    }
    Value::Object(set)
}

/// Applies changes to the account's limits (each to its own attribute, so a customer's change and an
/// operator's never undo each other); only while the account is open.
pub async fn change_account_limits<S: ItemStore + AccountStore + ?Sized>(
    store: &S,
    user_id: &str,
    changes: &[LimitChange],
) -> ApiResult<AccountLimits> {
    let pk = account_spend_pk(user_id);
    for _ in 0..CHANGE_ATTEMPTS {
        let mut update = Update::new(Table::Main, &pk, sk::LIMIT).when(Condition::Exists);
        let mut fresh = serde_json::Map::new();
        for change in changes {
            match change.attribute() {
                (name, Some(value)) => {
                    update = update.set(name, value.clone());
                    fresh.insert(name.into(), value);
                }
                (name, None) => update = update.remove(name),
            }
        }
        let active = crate::accounts::require_active(user_id);
        if store.transact(vec![active.clone(), WriteOp::Update(update)]).await.applied()?.is_some() {
            return Ok(account_limits(store, user_id).await?);
        }
        // No item yet (or the account is closed): create it, unless another change did first.
        let item = Item::from_record(&pk, sk::LIMIT, &Value::Object(fresh), None)?;
        let put = WriteOp::Put(Put { table: Table::Main, item, condition: Condition::NotExists });
        if store.transact(vec![active, put]).await.applied()?.is_some() {
            return Ok(account_limits(store, user_id).await?);
        }
        match store.account(user_id).await? {
            None => {
                return Err(ApiError::NotFound {
                    code: ErrorCode::AccountNotFound,
                    message: format!("no account {user_id}"),
                });
            }
            Some(account) if account.status != AccountStatus::Active => {
                return Err(ApiError::Conflict {
                    code: ErrorCode::AccountClosed,
                    message: "the account is closed".into(),
                    param: None,
                });
            }
            Some(_) => {}
        }
    }
    Err(ApiError::Unavailable("the account's limits kept changing".into()))
}

/// Reads `PATCH /v1/limits`: the customer's own limits (`default_rate_limits`, `monthly_spend_limit_paise`),
/// at least one; the operators' ceiling is not the customer's to change.
pub fn customer_changes(body: &Value) -> ApiResult<Vec<LimitChange>> {
    changes_of(body, &["default_rate_limits", "monthly_spend_limit_paise"])
}

/// Reads `PUT /v1/admin/accounts/{user_id}/limits`: the ceiling over the account's keys' rate limits and
/// how many calls it may run at once.
pub fn operator_changes(body: &Value) -> ApiResult<Vec<LimitChange>> {
    changes_of(body, &["rate_limit_ceiling", "calls_in_flight"])
}

fn changes_of(body: &Value, editable: &[&str]) -> ApiResult<Vec<LimitChange>> {
    let fields = crate::body::editable_fields(body, editable, "a limit set here")?;
    fields.iter().map(|(name, value)| change_of(name, value)).collect()
}

fn change_of(name: &str, value: &Value) -> ApiResult<LimitChange> {
    if name == "calls_in_flight" {
        let max = MAX_CALLS_IN_FLIGHT;
        let calls = match value {
            Value::Null => None,
            other => Some(other.as_u64().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidRateLimits,
                    name,
                    format!("{name} must be an integer from 1 to {max}, or null"),
                )
            })?),
        };
        return Ok(LimitChange::CallsInFlight(calls));
    }
    if name == "monthly_spend_limit_paise" {
        return Ok(LimitChange::MonthlySpend(crate::spend::read_paise(name, value)?));
    }
    let limits = RateLimits::read(name, value)?;
    Ok(if name == "rate_limit_ceiling" {
        LimitChange::RateLimitCeiling(limits)
    } else {
        LimitChange::DefaultRateLimits(limits)
    })
}

/// The closure's write: the account's limits go.
pub fn erase_account_limits(user_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: account_spend_pk(user_id),
        sk: sk::LIMIT.into(),
        condition: Condition::Always,
    })
}
