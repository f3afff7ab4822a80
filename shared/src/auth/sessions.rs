//! Sessions: the session items and their per-account index, authenticating a token, listing and ending
//! sessions.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{LAST_SEEN_EVERY, Session, SessionRecord, SessionView, session_id};
use crate::accounts::{Account, AccountStatus, AccountStore, timestamp, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::secrets::sha256_hex;
use crate::store::schema::{self, session_pk};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Query, SortKeyRange, StoreResult, Table, Update, WriteOp,
};

pub(super) fn session_index_sk(token_hash: &str) -> String {
    schema::prefixed(schema::prefix::SESSION, token_hash)
}

pub(super) const SESSION_SK: &str = schema::sk::SESSION;

/// Deletes one session, given its entry in the user's index (`USER#<id>` / `SESSION#<hash>`).
pub fn session_deletes(index: &Item) -> [WriteOp; 2] {
    let hash = index.sk.trim_start_matches(schema::prefix::SESSION);
    [
        WriteOp::Delete(Delete {
            table: Table::Main,
            pk: index.pk.clone(),
            sk: index.sk.clone(),
            condition: Condition::Always,
        }),
        WriteOp::Delete(Delete {
            table: Table::Main,
            pk: session_pk(hash),
            sk: SESSION_SK.into(),
            condition: Condition::Always,
        }),
    ]
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn session(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    async fn revoke_session(&self, session: &Session) -> StoreResult<()>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> SessionStore for T {
    async fn session(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let Some(item) = self.get(Table::Main, &session_pk(token_hash), SESSION_SK).await? else {
            return Ok(None);
        };
        let record: SessionRecord = item.record()?;
        Ok(Some(Session {
            token_hash: token_hash.to_owned(),
            user_id: record.user_id,
            expires_at: item.expires_at.unwrap_or(i64::MAX),
            last_seen_at: record.last_seen_at.or(Some(record.created_at)),
            epoch: record.epoch,
        }))
    }

    async fn revoke_session(&self, session: &Session) -> StoreResult<()> {
        self.transact(vec![
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: session_pk(&session.token_hash),
                sk: SESSION_SK.into(),
                condition: Condition::Always,
            }),
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: user_pk(&session.user_id),
                sk: session_index_sk(&session.token_hash),
                condition: Condition::Always,
            }),
        ])
        .await
    }
}

/// The account behind a session; a session whose account is gone, or that was ended with all the account's
/// sessions (its epoch is past), no longer authenticates anyone.
pub async fn session_account<S: AccountStore + ?Sized>(store: &S, session: &Session) -> ApiResult<Account> {
    store
        .account(&session.user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active && a.session_epoch == session.epoch)
        .ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the session has ended; log in again"))
}

/// Ends every session of the account at once: the epoch they were opened under is left behind, in the
/// write of the change that calls for it (add it to the account's profile update).
pub fn end_every_session(update: crate::store::Update) -> crate::store::Update {
    update.add("session_epoch", 1)
}

/// Deletes the account's session items but `keep` (a digest): clean-up after [`end_every_session`], whose
/// write already ended them, so a failure here is only logged. Returns how many were deleted.
pub async fn clear_sessions<S: ItemStore + ?Sized>(store: &S, user_id: &str, keep: Option<&str>) -> usize {
    match revoke_sessions(store, user_id, keep).await {
        Ok(ended) => ended,
        Err(e) => {
            tracing::warn!(error = %e, %user_id, "ended sessions not all deleted; they expire on their own");
            0
        }
    }
}

/// After a closure: the sessions left (the closing transaction ended them all by the epoch) are deleted.
pub async fn after_closure(store: &dyn ItemStore, user_id: &str) -> StoreResult<()> {
    for index in crate::store::user_items(store, user_id, schema::prefix::SESSION).await? {
        store.transact(session_deletes(&index).to_vec()).await?;
    }
    Ok(())
}

/// `DELETE /v1/auth/sessions`: ends every session of the account, this one included, in one write.
/// Returns how many sessions were live.
pub async fn sign_out_everywhere<S: ItemStore + ?Sized>(store: &S, session: &Session) -> ApiResult<usize> {
    let account = session_account(store, session).await?;
    let live = session_index(store, &account.id).await?.len();
    let end = end_every_session(crate::accounts::profile_update(&account));
    if store.transact(vec![WriteOp::Update(end)]).await.applied()?.is_none() {
        return Err(ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed meanwhile; try again".into(),
            param: None,
        });
    }
    clear_sessions(store, &account.id, None).await;
    Ok(live)
}

/// Resolves a presented session token to its live session, whose account is still open.
pub async fn authenticate<S: SessionStore + AccountStore + ?Sized>(store: &S, token: &str) -> ApiResult<Session> {
    let unauthenticated =
        || ApiError::unauthenticated(ErrorCode::InvalidSession, "session is missing, expired or revoked; log in again");
    if token.is_empty() || token.len() > 256 {
        return Err(unauthenticated());
    }
    let session = store.session(&sha256_hex(token)).await?.ok_or_else(unauthenticated)?;
    session_account(store, &session).await?;
    Ok(session)
}

/// Records that a session was used now, at most every 5 minutes; best effort (a failed write only delays
/// what the session list shows).
pub async fn note_seen<S: ItemStore + ?Sized>(store: &S, session: &Session, now: DateTime<Utc>) {
    if session.last_seen_at.is_some_and(|seen| now - seen < LAST_SEEN_EVERY) {
        return;
    }
    let update = Update::new(Table::Main, session_pk(&session.token_hash), SESSION_SK)
        .set("last_seen_at", serde_json::json!(now))
        .when(Condition::Exists);
    if let Err(e) = store.update(update).await.or_not_needed() {
        tracing::debug!(error = %e, "session last-seen time not recorded");
    }
}

/// The account's index of sessions (`USER#<id>` / `SESSION#<digest>`), every page.
async fn session_index<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Vec<Item>> {
    let query = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(schema::prefix::SESSION.into()))
        .limit(100);
    crate::store::all_pages(store, query).await
}

fn index_digest(index: &Item) -> &str {
    index.sk.trim_start_matches(schema::prefix::SESSION)
}

/// `GET /v1/auth/sessions`: the account's live sessions, newest first.
pub async fn sessions<S: ItemStore + ?Sized>(store: &S, current: &Session) -> ApiResult<Vec<SessionView>> {
    let mut views = Vec::new();
    for index in session_index(store, &current.user_id).await? {
        let digest = index_digest(&index);
        // An index entry outlives its session only until the same expiry; expired sessions are not shown.
        let Some(item) = store.get(Table::Main, &session_pk(digest), SESSION_SK).await? else { continue };
        let record: SessionRecord = item.record()?;
        if record.epoch != current.epoch {
            // Ended with all the account's sessions; its item is only waiting to be deleted.
            continue;
        }
        views.push(session_view(digest, &item, record, digest == current.token_hash));
    }
    views.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(views)
}

fn session_view(digest: &str, item: &Item, record: SessionRecord, current: bool) -> SessionView {
    SessionView {
        id: session_id(digest),
        created_at: timestamp(record.created_at),
        last_seen_at: record.last_seen_at.or(Some(record.created_at)).map(timestamp),
        ip: record.ip,
        user_agent: record.user_agent,
        expires_at: item.expires_at.and_then(|at| DateTime::from_timestamp(at, 0)).map(timestamp),
        current,
    }
}

/// The account's sessions as its data export shows them: every one still stored, newest first.
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> ApiResult<Vec<SessionView>> {
    let mut views = Vec::new();
    for index in session_index(store, user_id).await? {
        let digest = index_digest(&index);
        let Some(item) = store.get(Table::Main, &session_pk(digest), SESSION_SK).await? else { continue };
        views.push(session_view(digest, &item, item.record()?, false));
    }
    views.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(views)
}

/// `DELETE /v1/auth/sessions/{id}`: ends one of the account's sessions (any other id is not found).
pub async fn revoke_session_by_id<S: ItemStore + ?Sized>(store: &S, user_id: &str, id: &str) -> ApiResult<()> {
    for index in session_index(store, user_id).await? {
        if session_id(index_digest(&index)) == id {
            store.transact(session_deletes(&index).to_vec()).await?;
            return Ok(());
        }
    }
    Err(ApiError::NotFound { code: ErrorCode::SessionNotFound, message: format!("no session {id} on this account") })
}

/// Ends every session of the account but `keep` (a digest), if given; returns how many ended.
pub async fn revoke_sessions<S: ItemStore + ?Sized>(store: &S, user_id: &str, keep: Option<&str>) -> ApiResult<usize> {
    let mut ended = 0;
    for index in session_index(store, user_id).await? {
        if keep == Some(index_digest(&index)) {
            continue;
        }
        store.transact(session_deletes(&index).to_vec()).await?;
        ended += 1;
    }
    Ok(ended)
}
