//! Containment: ending every session and revoking every API key of an account, or of every open account
//! (a run walks the registry within its budget, saves where it stopped under the run's id, and the same
//! id carries on). The customer signs in again with their password; their integrations need new keys.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{AccountStatus, AccountStore, profile_update};
use crate::auth::{end_every_session, revoke_sessions};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::keys::KeyStore;
use crate::ports::Ports;
use crate::retention::NOTICE_LIFETIME;
use crate::store::schema;
use crate::store::{Conditional, Item, Put, Table, WriteOp};

/// What was revoked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Revoked {
    pub accounts: usize,
    pub sessions_ended: usize,
    pub keys_revoked: usize,
    /// Every account was reached; `false`: send the same run again to carry on.
    pub complete: bool,
}

/// A revocation of every open account's access, under an id its repeats share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeEveryone {
    pub run_id: String,
    pub reason: String,
}

/// Ends the account's sessions and revokes its keys; the account's own count added to `revoked`.
pub async fn revoke_account(ports: &Ports, user_id: &str, revoked: &mut Revoked) -> ApiResult<()> {
    let store = ports.store();
    let not_found =
        || ApiError::NotFound { code: ErrorCode::AccountNotFound, message: format!("no open account {user_id}") };
    // One write ends every session (the epoch), over the account as read: if it changed meanwhile (a password
    // change racing), it is read again; the session items are then deleted.
    let mut ended = false;
    for _ in 0..3 {
        let account =
            store.account(user_id).await?.filter(|a| a.status == AccountStatus::Active).ok_or_else(not_found)?;
        let end = WriteOp::Update(end_every_session(profile_update(&account)));
        if store.transact(vec![end]).await.applied()?.is_some() {
            ended = true;
            break;
        }
    }
    if !ended {
        return Err(ApiError::Unavailable(format!("account {user_id} kept changing; revoke its access again")));
    }
    revoked.sessions_ended += revoke_sessions(store, user_id, None).await?;
    for (_, key) in store.keys(user_id).await? {
        crate::keys::delete_key(store, user_id, &key.id).await?;
        revoked.keys_revoked += 1;
    }
    revoked.accounts += 1;
    Ok(())
}

/// Revokes every open account's access, from where an earlier run of the same id stopped.
pub async fn revoke_everyone(
    ports: &Ports,
    run: &RevokeEveryone,
    by: &str,
    budget: std::time::Duration,
) -> ApiResult<Revoked> {
    let valid = !run.run_id.is_empty()
        && run.run_id.len() <= 64
        && run.run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::invalid(
            ErrorCode::InvalidIncident,
            "run_id",
            "run_id must be 1-64 letters, digits, - or _",
        ));
    }
    super::text(&run.reason, "reason")?;
    let store = ports.store();
    let now = ports.clock().now();
    let progress_pk = schema::notice_pk(&format!("revoke-{}", run.run_id));
    let progress = store.get(Table::Main, &progress_pk, schema::sk::COMPLETE).await?;
    let mut revoked = Revoked { complete: true, ..Revoked::default() };
    if progress.as_ref().and_then(|p| p.attrs.get("complete")) == Some(&json!(true)) {
        // A second breach must not reuse a finished run's id and revoke nothing.
        let message = format!("run {} has finished; a new revocation needs a new run_id", run.run_id);
        return Err(ApiError::Conflict { code: ErrorCode::RunFinished, message, param: Some("run_id".into()) });
    }
    let mut after = progress.and_then(|p| p.attrs.get("after").and_then(|a| a.as_str()).map(str::to_owned));
    let started = Instant::now();
    loop {
        let page = crate::accounts::registry_page(store, after.clone()).await?;
        for entry in &page.items {
            if started.elapsed() > budget {
                save(ports, &progress_pk, after, false, now).await?;
                revoked.complete = false;
                return Ok(revoked);
            }
            after = Some(entry.sk.clone());
            match revoke_account(ports, &entry.sk, &mut revoked).await {
                Ok(()) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if page.next.is_none() {
            save(ports, &progress_pk, None, true, now).await?;
            tracing::warn!(operator = by, run = %run.run_id, accounts = revoked.accounts, "every account's access revoked");
            return Ok(revoked);
        }
    }
}

async fn save(ports: &Ports, pk: &str, after: Option<String>, complete: bool, now: DateTime<Utc>) -> ApiResult<()> {
    let record = json!({ "complete": complete, "after": after, "at": now });
    let item = Item::from_record(pk, schema::sk::COMPLETE, &record, Some((now + NOTICE_LIFETIME).timestamp()))?;
    ports.store().put(Put { table: Table::Main, item, condition: crate::store::Condition::Always }).await?;
    Ok(())
}
