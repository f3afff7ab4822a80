//! The tokens of links sent by e-mail: random, minted by the mailer when it sends the message (so no raw
//! token is ever stored, not even in the outbox), stored only as their SHA-256, single use (the transaction
//! that uses one deletes it) and short-lived.
//!
//! Items (main table):
//! - `EMAILTOKEN#<sha256(token)>` / `TOKEN`: `{user_id, email}`, 24 hours: proves `email` (the account's own
//!   address, or the new address of a change).
//! - `EXPORTTOKEN#<sha256(token)>` / `TOKEN`: `{user_id, export_id}`, as long as the export is kept: a data
//!   export's download link sent to the account's address (a request by e-mail, a closed account's among
//!   them); it may be opened again until then, each time for a fresh short-lived file link.
//! - `RESETTOKEN#<sha256(token)>` / `TOKEN`: `{user_id, email, password_hash}`, 30 minutes: sets a new password
//!   while the account still has this address and this password (any change of either voids the link).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::retention::{EMAIL_TOKEN_LIFETIME, RESET_TOKEN_LIFETIME};
use crate::secrets::{random_token, sha256_hex};
use crate::store::schema::{self, sk};
use crate::store::{Condition, Delete, Item, ItemStore, Put, StoreResult, Table, WriteOp};

/// What an e-mail verification link proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailLink {
    pub user_id: String,
    pub email: String,
}

/// What a password-reset link allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetLink {
    pub user_id: String,
    pub email: String,
    pub password_hash: String,
}

/// What an export's mailed download link opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportLink {
    pub user_id: String,
    pub export_id: String,
}

/// A new download link's token for an export, working until `expires_at` (the export's own expiry).
pub async fn mint_export_link<S: ItemStore + ?Sized>(
    store: &S,
    link: &ExportLink,
    expires_at: i64,
) -> StoreResult<String> {
    mint(store, schema::export_token_pk, link, expires_at).await
}

/// The export a download link opens, if the token is genuine and in date.
pub async fn export_link<S: ItemStore + ?Sized>(store: &S, token: &str) -> StoreResult<Option<ExportLink>> {
    find(store, schema::export_token_pk(&sha256_hex(token))).await
}

async fn mint<S: ItemStore + ?Sized>(
    store: &S,
    pk_of: fn(&str) -> String,
    record: &impl Serialize,
    expires_at: i64,
) -> StoreResult<String> {
    let token = random_token();
    let put = Put {
        table: Table::Main,
        item: Item::from_record(pk_of(&sha256_hex(&token)), sk::TOKEN, record, Some(expires_at))?,
        condition: Condition::NotExists,
    };
    store.put(put).await?;
    Ok(token)
}

/// A new verification link's token for `link`.
pub async fn mint_email_link<S: ItemStore + ?Sized>(
    store: &S,
    link: &EmailLink,
    now: DateTime<Utc>,
) -> StoreResult<String> {
    mint(store, schema::email_token_pk, link, (now + EMAIL_TOKEN_LIFETIME).timestamp()).await
}

/// A new password-reset link's token for `link`.
pub async fn mint_reset_link<S: ItemStore + ?Sized>(
    store: &S,
    link: &ResetLink,
    now: DateTime<Utc>,
) -> StoreResult<String> {
    mint(store, schema::reset_token_pk, link, (now + RESET_TOKEN_LIFETIME).timestamp()).await
}

async fn find<S: ItemStore + ?Sized, T: serde::de::DeserializeOwned>(store: &S, pk: String) -> StoreResult<Option<T>> {
    store.get(Table::Main, &pk, sk::TOKEN).await?.map(|item| item.record()).transpose()
}

/// The verification link a token opens, if it is genuine, unused and in date.
pub async fn email_link<S: ItemStore + ?Sized>(store: &S, token: &str) -> StoreResult<Option<EmailLink>> {
    find(store, schema::email_token_pk(&sha256_hex(token))).await
}

/// The reset link a token opens, if it is genuine, unused and in date.
pub async fn reset_link<S: ItemStore + ?Sized>(store: &S, token: &str) -> StoreResult<Option<ResetLink>> {
    find(store, schema::reset_token_pk(&sha256_hex(token))).await
}

fn used(pk: String) -> WriteOp {
    WriteOp::Delete(Delete { table: Table::Main, pk, sk: sk::TOKEN.into(), condition: Condition::Exists })
}

/// Uses a verification link up, in the transaction of what it does (fails if it was used meanwhile).
pub fn email_link_used(token: &str) -> WriteOp {
    used(schema::email_token_pk(&sha256_hex(token)))
}

/// Uses a reset link up, in the transaction of what it does (fails if it was used meanwhile).
pub fn reset_link_used(token: &str) -> WriteOp {
    used(schema::reset_token_pk(&sha256_hex(token)))
}
