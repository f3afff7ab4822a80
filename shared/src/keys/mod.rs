//! API keys: `sk-inferex-` + 256 random bits, shown once, stored only as SHA-256.
//!
//! Items (main table):
//! - `APIKEY#<sha256(key)>` / `KEY`: what inference looks up (owner, key id, slot), `expires_at` = the key's
//!   expiry, so an expired key is simply absent.
//! - `USER#<id>` / `APIKEYSLOT#<nn>`: the key's metadata in one of the account's 20 slots. Creating a key puts
//!   a free slot with "must not exist", so even concurrent creations cannot exceed 20 live keys; an expired
//!   key's slot expires with it and frees itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{timestamp, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ports::Ports;
use crate::residency::DataResidency;
use crate::secrets::{random_suffix, random_token, sha256_hex};
use crate::spend::{Limited, SpendLimits, SpendPaise};
use crate::store::{Condition, Conditional, ItemStore, StoreResult, Table};

mod changes;
mod rates;
mod store;
pub use changes::{KeyChanges, change_key};
pub use rates::{MAX_REQUESTS_PER_MINUTE, MAX_TOKENS_PER_MINUTE, RateCounter, RateLimits, RateWindow};
pub use store::KeyStore;

pub const KEY_PREFIX: &str = "sk-inferex-";
pub const MAX_ACTIVE_KEYS: usize = 20;
const MAX_NAME_CHARS: usize = 100;
const KEY_SK: &str = crate::store::schema::sk::KEY;
const SLOT_PREFIX: &str = crate::store::schema::prefix::API_KEY_SLOT;

fn key_pk(hash: &str) -> String {
    crate::store::schema::api_key_pk(hash)
}

fn slot_sk(slot: usize) -> String {
    format!("{SLOT_PREFIX}{slot:02}")
}

/// What inference needs to know about a presented key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOwner {
    pub key_id: String,
    pub user_id: String,
    pub slot: String,
    /// The models the key may call; absent: every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "RateLimits::is_unlimited")]
    pub rate_limits: RateLimits,
    #[serde(default, skip_serializing_if = "SpendLimits::is_unlimited")]
    pub spend_limits: SpendLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The key's own data residency; absent: the account's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_residency: Option<DataResidency>,
    /// The account's data residency (read beside the key at lookup).
    #[serde(skip)]
    pub account_residency: DataResidency,
    /// The account's monthly spend limit (paise): not stored with the key, read beside it at lookup.
    #[serde(skip)]
    pub account_monthly_limit: Option<i64>,
    /// How many calls the account may run at once, if operators set it (read beside the key at lookup).
    #[serde(skip)]
    pub calls_in_flight: Option<u64>,
}

impl KeyOwner {
    fn of(record: &ApiKeyRecord, user_id: &str, slot: &str) -> Self {
        Self {
            key_id: record.id.clone(),
            user_id: user_id.to_owned(),
            slot: slot.to_owned(),
            allowed_models: record.allowed_models.clone(),
            rate_limits: record.rate_limits,
            spend_limits: record.spend_limits,
            expires_at: record.expires_at,
            data_residency: record.data_residency,
            account_residency: DataResidency::Any,
            account_monthly_limit: None,
            calls_in_flight: None,
        }
    }

    /// Whose spend limits the key's calls count against.
    pub fn limited(&self) -> Limited<'_> {
        Limited {
            key_id: &self.key_id,
            key_slot: &self.slot,
            key_limits: self.spend_limits,
            key_expiry: self.expires_at.map(|at| at.timestamp()),
            user_id: &self.user_id,
            account_monthly: self.account_monthly_limit,
        }
    }

    /// Where a call may run: the narrowest of the account's residency, the key's and the request's
    /// (`crate::residency`): each may narrow, none widen.
    pub fn residency(&self, requested: Option<DataResidency>) -> DataResidency {
        let key = self.data_residency.unwrap_or_default();
        self.account_residency.narrowest(key).narrowest(requested.unwrap_or_default())
    }

    /// Whether the key may call the model.
    pub fn allows(&self, model_id: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|models| models.iter().any(|m| m == model_id))
    }

    /// 403 `model_not_allowed` for a model outside the key's list, naming the models it may call.
    pub fn check_model(&self, model_id: &str) -> ApiResult<()> {
        match &self.allowed_models {
            Some(models) if !self.allows(model_id) => Err(ApiError::Forbidden {
                code: ErrorCode::ModelNotAllowed,
                message: format!("this API key may not call {model_id}; it may call {}", models.join(", ")),
            }),
            _ => Ok(()),
        }
    }
}

/// A key's metadata (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "RateLimits::is_unlimited")]
    pub rate_limits: RateLimits,
    #[serde(default, skip_serializing_if = "SpendLimits::is_unlimited")]
    pub spend_limits: SpendLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_residency: Option<DataResidency>,
    /// Counts the key's changes: a change applies only to the revision it read.
    #[serde(default)]
    pub revision: u64,
}

/// How `GET /v1/keys` shows a key.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    /// `null`: every model.
    pub allowed_models: Option<Vec<String>>,
    /// Each `null` when not limited.
    pub rate_limits: RateLimits,
    /// Each `null` when not limited.
    pub spend_limits_paise: SpendLimits,
    /// What the key spent in the current windows (IST); `null` while it has no spend limit.
    pub spend_paise: SpendPaise,
    /// `in`: its calls run in India only; `null`: as the account says.
    pub data_residency: Option<DataResidency>,
}

impl ApiKeyView {
    /// The key as listed, with its spend in the current windows.
    pub async fn of(store: &dyn ItemStore, record: &ApiKeyRecord, now: DateTime<Utc>) -> ApiResult<Self> {
        let mut view = Self::from(record);
        view.spend_paise = crate::spend::key_spend(store, &record.id, record.spend_limits, now).await?;
        Ok(view)
    }

    /// Keys as listed, their spend read side by side.
    pub async fn all(store: &dyn ItemStore, records: &[ApiKeyRecord], now: DateTime<Utc>) -> ApiResult<Vec<Self>> {
        futures_util::future::try_join_all(records.iter().map(|record| Self::of(store, record, now))).await
    }
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(r: &ApiKeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            created_at: timestamp(r.created_at),
            expires_at: r.expires_at.map(timestamp),
            last_used_at: r.last_used_at.map(timestamp),
            allowed_models: r.allowed_models.clone(),
            rate_limits: r.rate_limits,
            spend_limits_paise: r.spend_limits,
            // Counted from zero when its first limit is set (`ApiKeyView::of` reads what it spent since).
            spend_paise: SpendPaise::zero_if_counted(r.spend_limits),
            data_residency: r.data_residency,
        }
    }
}

/// The answer to key creation: the only time the key is shown.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    pub key: String,
}

/// The body of `POST /v1/keys`. A field we do not know is refused, never ignored: a limit a client believes
/// it set must not silently be absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    pub name: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub rate_limits: Option<RateLimits>,
    #[serde(default)]
    pub spend_limits_paise: Option<SpendLimits>,
    /// `"in"` or `"any"`; absent or null: the account's.
    #[serde(default)]
    pub data_residency: Option<serde_json::Value>,
}

/// Creates a key in a free slot. At most [`MAX_ACTIVE_KEYS`] live keys per account, even under concurrency.
pub async fn create_key(ports: &Ports, user_id: &str, request: NewKeyRequest) -> ApiResult<CreatedKey> {
    let store = ports.store();
    let clock = ports.clock();
    let name = checked_name(&request.name)?;
    let allowed_models = changes::checked_models(request.allowed_models)?;
    let rate_limits = request.rate_limits.unwrap_or_default().checked("rate_limits")?;
    let spend_limits = request.spend_limits_paise.unwrap_or_default().checked()?;
    let data_residency = changes::residency_of(request.data_residency.as_ref())?;
    let now = clock.now();
    let expires_at = match request.expires_at {
        None => None,
        Some(raw) => {
            let at = DateTime::parse_from_rfc3339(raw.trim()).map(|d| d.to_utc()).map_err(|_| {
                ApiError::invalid(ErrorCode::InvalidExpiresAt, "expires_at", "expires_at must be an RFC 3339 timestamp")
            })?;
            if at <= now {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidExpiresAt,
                    "expires_at",
                    "expires_at must be in the future",
                ));
            }
            Some(at)
        }
    };
    let secret = random_token();
    let key = format!("{KEY_PREFIX}{secret}");
    let record = ApiKeyRecord {
        id: format!("key_{}", random_suffix()),
        name,
        prefix: format!("{KEY_PREFIX}{}", &secret[..6]),
        key_hash: sha256_hex(&key),
        created_at: now,
        expires_at,
        last_used_at: None,
        allowed_models,
        rate_limits,
        spend_limits,
        data_residency,
        revision: 0,
    };
    // Concurrent creations may pick the same free slot; the loser looks again.
    for _ in 0..MAX_ACTIVE_KEYS {
        let taken: Vec<String> = store.keys(user_id).await?.into_iter().map(|(slot, _)| slot).collect();
        let Some(slot) = (0..MAX_ACTIVE_KEYS).map(slot_sk).find(|s| !taken.contains(s)) else {
            return Err(ApiError::Conflict {
                code: ErrorCode::TooManyKeys,
                message: format!("an account can have at most {MAX_ACTIVE_KEYS} active keys; delete one first"),
                param: None,
            });
        };
        if store.save_key(user_id, &slot, &record).await.applied()?.is_some() {
            return Ok(CreatedKey { view: ApiKeyView::from(&record), key });
        }
    }
    Err(ApiError::Unavailable("too many concurrent key creations; retry".into()))
}

/// A key's name, trimmed: 1 to [`MAX_NAME_CHARS`] printable characters.
fn checked_name(raw: &str) -> ApiResult<String> {
    let name = crate::accounts::printable(raw, MAX_NAME_CHARS).ok_or_else(|| {
        ApiError::invalid(ErrorCode::InvalidName, "name", format!("name must be 1 to {MAX_NAME_CHARS} characters"))
    })?;
    Ok(name.to_owned())
}

/// One of the user's keys, by id: (slot, record); 404 `key_not_found` otherwise.
async fn find_key<S: KeyStore + ?Sized>(store: &S, user_id: &str, key_id: &str) -> ApiResult<(String, ApiKeyRecord)> {
    let keys = store.keys(user_id).await?;
    keys.into_iter()
        .find(|(_, r)| r.id == key_id)
        .ok_or_else(|| ApiError::NotFound { code: ErrorCode::KeyNotFound, message: format!("no API key {key_id}") })
}

/// Revokes one of the user's keys.
pub async fn delete_key<S: KeyStore + ?Sized>(store: &S, user_id: &str, key_id: &str) -> ApiResult<()> {
    let (slot, record) = find_key(store, user_id, key_id).await?;
    Ok(store.delete_key(user_id, &slot, &record.key_hash, &record.id).await.or_not_needed()?)
}

/// Records when a key was last used. Best effort and at most once a minute per key (the caller throttles),
/// so it never sits on the request path: a key revoked meanwhile is simply not updated.
pub async fn record_use<S: ItemStore + ?Sized>(store: &S, owner: &KeyOwner, at: DateTime<Utc>) -> StoreResult<()> {
    let update = crate::store::Update::new(Table::Main, user_pk(&owner.user_id), &owner.slot)
        .set("last_used_at", json!(at))
        .when(Condition::AttrEquals("id".into(), json!(owner.key_id)));
    store.update(update).await.or_not_needed()
}
