//! Operator sessions: opened by a sign-in with a code (`super::sign_in`), at most 12 hours long and ended
//! after 8 idle, stored by their token's digest only. The console keeps the session for its tab alone
//! (sessionStorage). A session names its operator and the digest of the operator token that opened it;
//! their roles are read from the credentials at each request, so a role taken away, an operator removed or
//! their token replaced (a suspected theft) ends or narrows their sessions at once.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::operators::Credential;
use crate::retention::OPERATOR_SESSION_LIFETIME;
use crate::secrets::{random_token, sha256_hex};
use crate::store::schema::{operator_session_pk, sk};
use crate::store::{Condition, Conditional, Delete, Item, ItemStore, Put, Table, Update, is_live};

/// A session ends this long after its last request.
pub const IDLE_TIMEOUT: Duration = Duration::hours(8);
/// How stale the recorded last request may get before a request records it again: one write per session
/// every few minutes, not one per request.
const SEEN_EVERY: Duration = Duration::minutes(5);
/// Operator session tokens start with this (customers' sessions and API keys have their own).
pub const TOKEN_PREFIX: &str = "ops_";

/// An open session, as its sign-in answers it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpenedSession {
    pub session: String,
    pub operator: String,
    pub roles: Vec<crate::operators::Role>,
    pub expires_at: DateTime<Utc>,
    pub idle_timeout_seconds: i64,
}

/// Opens a session for `operator`; the caller has checked the credential and the code.
pub async fn open<S: ItemStore + ?Sized>(
    store: &S,
    operator: &Credential,
    now: DateTime<Utc>,
) -> ApiResult<(String, i64)> {
    let token = format!("{TOKEN_PREFIX}{}", random_token());
    let expires = (now + OPERATOR_SESSION_LIFETIME).timestamp();
    let record = json!({
        "operator": operator.name,
        "token_digest": operator.token_digest,
        "created_at": now.timestamp(),
        "last_seen": now.timestamp(),
    });
    let item = Item::from_record(operator_session_pk(&sha256_hex(&token)), sk::SESSION, &record, Some(expires))?;
    store.put(Put { table: Table::Main, item, condition: Condition::NotExists }).await?;
    Ok((token, expires))
}

/// Who a session belongs to: the operator's name and the digest of the token that signed them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    pub operator: String,
    pub token_digest: String,
}

/// The owner of a session token, if the session is open and has not been idle too long.
pub async fn operator_of<S: ItemStore + ?Sized>(
    store: &S,
    token: &str,
    now: DateTime<Utc>,
) -> ApiResult<Option<SessionOwner>> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let pk = operator_session_pk(&sha256_hex(token));
    let Some(item) = store.get(Table::Main, &pk, sk::SESSION).await?.filter(|i| i.is_live(now.timestamp())) else {
        return Ok(None);
    };
    let last_seen = item.attrs.get("last_seen").and_then(Value::as_i64).unwrap_or(0);
    let idle_ends = last_seen + IDLE_TIMEOUT.num_seconds();
    if !is_live(Some(idle_ends), now.timestamp()) {
        let ended = Delete { table: Table::Main, pk, sk: sk::SESSION.into(), condition: Condition::Always };
        store.delete(ended).await?;
        return Ok(None);
    }
    if now.timestamp() - last_seen >= SEEN_EVERY.num_seconds() {
        let seen = Update::new(Table::Main, pk, sk::SESSION).set("last_seen", now.timestamp()).when(Condition::Exists);
        store.update(seen).await.or_not_needed()?;
    }
    let text = |k: &str| item.attrs.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(text("operator")
        .zip(text("token_digest"))
        .map(|(operator, token_digest)| SessionOwner { operator, token_digest }))
}

/// Ends a session (sign out); ending one already gone is not an error.
pub async fn close<S: ItemStore + ?Sized>(store: &S, token: &str) -> ApiResult<()> {
    let pk = operator_session_pk(&sha256_hex(token));
    store.delete(Delete { table: Table::Main, pk, sk: sk::SESSION.into(), condition: Condition::Always }).await?;
    Ok(())
}
