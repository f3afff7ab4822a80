//! The two items of a key, written together: the owner lookup (`APIKEY#<hash>` / `KEY`) and the metadata in
//! the account's slot (`USER#<id>` / `APIKEYSLOT#<nn>`).

use async_trait::async_trait;
use serde_json::json;

use super::{ApiKeyRecord, KEY_SK, KeyOwner, SLOT_PREFIX, key_pk};
use crate::accounts::user_pk;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::{Condition, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, WriteOp};

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn keys(&self, user_id: &str) -> StoreResult<Vec<(String, ApiKeyRecord)>>;
    async fn key_owner(&self, key_hash: &str) -> StoreResult<Option<KeyOwner>>;
    async fn save_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord) -> StoreResult<()>;
    async fn delete_key(&self, user_id: &str, slot: &str, key_hash: &str) -> StoreResult<()>;
    /// Rewrites a live key's two items (its name, its limits), only while the slot still holds this key.
    async fn update_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord) -> StoreResult<()>;
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

    async fn update_key(&self, user_id: &str, slot: &str, record: &ApiKeyRecord) -> StoreResult<()> {
        let expires_at = record.expires_at.map(|at| at.timestamp());
        let owner = KeyOwner::of(record, user_id, slot);
        self.transact(vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(user_pk(user_id), slot, record, expires_at)?,
                condition: Condition::AttrEquals("key_hash".into(), json!(record.key_hash)),
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(key_pk(&record.key_hash), KEY_SK, &owner, expires_at)?,
                condition: Condition::Exists,
            }),
        ])
        .await
    }
}
