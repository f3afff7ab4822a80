//! API keys: `sk-inferex-` + 256 random bits, shown once, stored only as SHA-256.
//!
//! Items (main table):
//! - `APIKEY#<sha256(key)>` / `KEY`: what inference looks up (owner, key id, slot), `expires_at` = the key's
//!   expiry, so an expired key is simply absent.
//! - `USER#<id>` / `APIKEYSLOT#<nn>`: the key's metadata in one of the account's 20 slots. Creating a key puts
//!   a free slot with "must not exist", so even concurrent creations cannot exceed 20 live keys; an expired
//!   key's slot expires with it and frees itself.

use crate::error::ErrorCode;
use crate::ports::Ports;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{timestamp, user_pk};
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::secrets::{random_suffix, random_token, sha256_hex};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, WriteOp,
};

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

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn keys(&self, user_id: &str) -> StoreResult<Vec<(String, ApiKeyRecord)>>;
    async fn key_owner(&self, key_hash: &str) -> StoreResult<Option<KeyOwner>>;
    async fn save_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord) -> StoreResult<()>;
    async fn delete_key(&self, user_id: &str, slot: &str, key_hash: &str) -> StoreResult<()>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> KeyStore for T {
    async fn keys(&self, user_id: &str) -> StoreResult<Vec<(String, ApiKeyRecord)>> {
        let query =
            Query::new(Table::Main, user_pk(user_id)).range(SortKeyRange::Prefix(SLOT_PREFIX.into())).limit(100);
        let page = self.query(query).await?;
        page.items.iter().map(|i| Ok((i.sk.clone(), i.record()?))).collect()
    }

    async fn key_owner(&self, key_hash: &str) -> StoreResult<Option<KeyOwner>> {
        self.get(Table::Main, &key_pk(key_hash), KEY_SK).await?.map(|i| i.record()).transpose()
    }

    async fn save_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord) -> StoreResult<()> {
        let expires_at = record.expires_at.map(|at| at.timestamp());
        let owner = KeyOwner { key_id: record.id.clone(), user_id: user_id.to_owned(), slot: slot.to_owned() };
        let told = OutboxMail::new(MailKind::ApiKeyCreated, user_id, record.created_at)
            .param("name", record.name.clone())
            .param("prefix", record.prefix.clone());
        self.transact(vec![
            enqueue(&told)?,
            // A key created while the account closes never outlives the closure.
            crate::accounts::require_active(user_id),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(user_pk(user_id), slot, record, expires_at)?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(key_pk(&record.key_hash), KEY_SK, &owner, expires_at)?,
                condition: Condition::NotExists,
            }),
        ])
        .await
    }

    async fn delete_key(&self, user_id: &str, slot: &str, key_hash: &str) -> StoreResult<()> {
        self.transact(vec![
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: user_pk(user_id),
                sk: slot.to_owned(),
                condition: Condition::AttrEquals("key_hash".into(), json!(key_hash)),
            }),
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: key_pk(key_hash),
                sk: KEY_SK.into(),
                condition: Condition::Always,
            }),
        ])
        .await
    }
}

/// The body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
pub struct NewKeyRequest {
    pub name: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Creates a key in a free slot. At most [`MAX_ACTIVE_KEYS`] live keys per account, even under concurrency.
pub async fn create_key(ports: &Ports, user_id: &str, request: NewKeyRequest) -> ApiResult<CreatedKey> {
    let store = ports.store();
    let clock = ports.clock();
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidName,
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
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

/// Revokes one of the user's keys.
pub async fn delete_key<S: KeyStore + ?Sized>(store: &S, user_id: &str, key_id: &str) -> ApiResult<()> {
    let keys = store.keys(user_id).await?;
    let Some((slot, record)) = keys.into_iter().find(|(_, r)| r.id == key_id) else {
        return Err(ApiError::NotFound { code: ErrorCode::KeyNotFound, message: format!("no API key {key_id}") });
    };
    Ok(store.delete_key(user_id, &slot, &record.key_hash).await.or_not_needed()?)
}

/// Records when a key was last used. Best effort and at most once a minute per key (the caller throttles),
/// so it never sits on the request path: a key revoked meanwhile is simply not updated.
pub async fn record_use<S: ItemStore + ?Sized>(store: &S, owner: &KeyOwner, at: DateTime<Utc>) -> StoreResult<()> {
    let update = crate::store::Update::new(Table::Main, user_pk(&owner.user_id), &owner.slot)
        .set("last_used_at", json!(at))
        .when(Condition::AttrEquals("id".into(), json!(owner.key_id)));
    store.update(update).await.or_not_needed()
}
