//! One-click unsubscribe links and the suppression list (bounces and complaints stop mail to an address).

use crate::ports::Ports;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::retention::{SUPPRESSION_LIFETIME, UNSUBSCRIBE_LIFETIME};
use crate::secrets::{random_token, sha256_hex};
use crate::store::schema::{self, sk};
use crate::store::{Condition, Item, ItemStore, Put, StoreResult, Table};

#[derive(Debug, Serialize, Deserialize)]
struct UnsubscribeToken {
    user_id: String,
    message_id: String,
}

/// A one-click unsubscribe link for one marketing message (the token stored hashed, a year long).
pub(super) async fn unsubscribe_link(
    ports: &Ports,
    user_id: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<String> {
    let store = ports.store();
    let config = ports.config();
    let token = random_token();
    let record = UnsubscribeToken { user_id: user_id.into(), message_id: message_id.into() };
    store
        .put(Put {
            table: Table::Main,
            item: Item::from_record(
                schema::unsubscribe_pk(&sha256_hex(&token)),
                sk::TOKEN,
                &record,
                Some((now + UNSUBSCRIBE_LIFETIME).timestamp()),
            )?,
            condition: Condition::NotExists,
        })
        .await?;
    Ok(format!("{}/v1/unsubscribe?token={token}", config.public_url.trim_end_matches('/')))
}

/// The account an unsubscribe token is for, if the token is genuine and in date.
pub async fn unsubscribe_account<S: ItemStore + ?Sized>(store: &S, token: &str) -> StoreResult<Option<String>> {
    let item = store.get(Table::Main, &schema::unsubscribe_pk(&sha256_hex(token)), sk::TOKEN).await?;
    Ok(item.map(|i| i.record::<UnsubscribeToken>()).transpose()?.map(|t| t.user_id))
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    Bounce,
    Complaint,
}

/// The address's suppression entry (why and since when nothing is mailed to it), for its owner's export.
pub async fn suppression_of(store: &dyn ItemStore, email: &str) -> StoreResult<Option<serde_json::Value>> {
    Ok(suppression(store, email).await?.map(|i| serde_json::Value::Object(i.attrs)))
}

/// When the address's suppression ends (epoch seconds), if it has one.
pub async fn suppressed_until(store: &dyn ItemStore, email: &str) -> StoreResult<Option<i64>> {
    Ok(suppression(store, email).await?.map(|i| i.expires_at.unwrap_or(i64::MAX)))
}

async fn suppression(store: &dyn ItemStore, email: &str) -> StoreResult<Option<Item>> {
    store.get(Table::Main, &schema::suppressed_pk(&email.trim().to_lowercase()), sk::SUPPRESSED).await
}

/// Puts an address on the suppression list (a permanent bounce or a complaint reported by SES).
pub async fn suppress<S: ItemStore + ?Sized>(
    store: &S,
    email: &str,
    reason: SuppressionReason,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let record = json!({ "reason": reason, "at": now });
    let put = Put {
        table: Table::Main,
        item: Item::from_record(
            schema::suppressed_pk(&email.trim().to_lowercase()),
            sk::SUPPRESSED,
            &record,
            Some((now + SUPPRESSION_LIFETIME).timestamp()),
        )?,
        condition: Condition::Always,
    };
    store.put(put).await
}
