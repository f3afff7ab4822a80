//! The two items of a key, written together: the owner lookup (`APIKEY#<hash>` / `KEY`) and the metadata in
//! the account's slot (`USER#<id>` / `APIKEYSLOT#<nn>`).

use async_trait::async_trait;
use serde_json::json;

use super::{ApiKeyRecord, KEY_SK, KeyOwner, SLOT_PREFIX, key_pk};
use crate::accounts::user_pk;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::{Condition, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, Update, WriteOp};

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn keys(&self, user_id: &str) -> StoreResult<Vec<(String, ApiKeyRecord)>>;
    async fn key_owner(&self, key_hash: &str) -> StoreResult<Option<KeyOwner>>;
    async fn save_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord) -> StoreResult<()>;
    /// Revokes a key: its two items and its spend total go.
    async fn delete_key(&self, user_id: &str, slot: &str, key_hash: &str, key_id: &str) -> StoreResult<()>;
    /// Writes a live key's changes (its name, its limits) to its two items, only while the slot still holds
    /// this key at the revision the change read; `record` carries the next revision.
    async fn update_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord, read: u64) -> StoreResult<()>;
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
        let owner = KeyOwner::of(record, user_id, slot);
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

    async fn delete_key(&self, user_id: &str, slot: &str, key_hash: &str, key_id: &str) -> StoreResult<()> {
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
            crate::spend::erase_key_total(key_id),
        ])
        .await
    }

    async fn update_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord, read: u64) -> StoreResult<()> {
        let expires_at = record.expires_at.map(|at| at.timestamp());
        let owner = KeyOwner::of(record, user_id, slot);
        // Only what a change may touch: `last_used_at`, written meanwhile, stays.
        let mut slot_update = Update::new(Table::Main, user_pk(user_id), slot)
            .set("name", json!(record.name))
            .set("revision", json!(record.revision))
            .when(Condition::All(vec![
                Condition::AttrEquals("key_hash".into(), json!(record.key_hash)),
                Condition::AttrAbsentOrEquals("revision".into(), json!(read)),
            ]));
        slot_update = match &record.allowed_models {
            Some(models) => slot_update.set("allowed_models", json!(models)),
            None => slot_update.remove("allowed_models"),
        };
        slot_update = if record.rate_limits.is_unlimited() {
            slot_update.remove("rate_limits")
        } else {
            // Only the limits set (a null would be stored differently by the two backends).
            let limits = [
                ("requests_per_minute", record.rate_limits.requests_per_minute),
                ("tokens_per_minute", record.rate_limits.tokens_per_minute),
            ];
            let set: serde_json::Map<String, serde_json::Value> =
                limits.iter().filter_map(|(name, n)| n.map(|n| ((*name).to_owned(), json!(n)))).collect();
            slot_update.set("rate_limits", serde_json::Value::Object(set))
        };
        slot_update = match record.data_residency {
            Some(residency) => slot_update.set("data_residency", json!(residency.as_str())),
            None => slot_update.remove("data_residency"),
        };
        slot_update = if record.spend_limits.is_unlimited() {
            slot_update.remove("spend_limits")
        } else {
            let limits = [
                ("total", record.spend_limits.total),
                ("daily", record.spend_limits.daily),
                ("monthly", record.spend_limits.monthly),
            ];
            let set: serde_json::Map<String, serde_json::Value> =
                limits.iter().filter_map(|(name, n)| n.map(|n| ((*name).to_owned(), json!(n)))).collect();
            slot_update.set("spend_limits", serde_json::Value::Object(set))
        };
        self.transact(vec![
            WriteOp::Update(slot_update),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(key_pk(&record.key_hash), KEY_SK, &owner, expires_at)?,
                condition: Condition::Exists,
            }),
        ])
        .await
    }
}
