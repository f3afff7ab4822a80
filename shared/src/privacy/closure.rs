//! Closing an account: what is erased at once, what the law makes us keep and until when, and finishing a
//! closure that was interrupted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::correction::{active_account, confirm_password};
use super::requests::{PrivacyRequest, PrivacyRequestView, Recorded, RequestKind, RequestStatus};
use super::{CLOSE_ATTEMPTS, EXPORT_PREFIX, PENDING_CLOSURES_PK, PrivacyContext};
use crate::accounts::{self, Account, AccountStatus, AccountStore, timestamp, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::keys::KeyStore;
use crate::kyc;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::retention::{HOLDS, Hold, ItemClass, Span, holds};
use crate::store::{Condition, Conditional, Delete, Item, Put, Query, StoreError, StoreResult, Table, WriteOp};
use crate::wallet::{self, WALLET_SK};

/// What `DELETE /v1/account` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Closure {
    pub status: &'static str,
    pub request: PrivacyRequestView,
    /// What is kept, and until when (RFC 3339).
    pub retained: Vec<RetainedData>,
    /// The unspent balance recorded for refund, in wallet units (0 when there was none).
    pub refund_requested: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetainedData {
    pub data: &'static str,
    pub until: String,
    /// The rule that keeps it (`retention::HOLDS`).
    pub reason: &'static str,
}

/// The ends of the holds that depend on the account: its KYC record's, if it has one, and its address's
/// mail suppression, if it has one.
#[derive(Debug, Clone, Copy, Default)]
struct Holding {
    kyc_until: Option<i64>,
    suppressed_until: Option<i64>,
}

async fn suppressed_until(ctx: &PrivacyContext, email: &str) -> ApiResult<Option<i64>> {
    Ok(crate::notifications::delivery::suppressed_until(ctx.ports.store.as_ref(), email).await?)
}

/// The holds' ends as a committed closure left them.
async fn holding(ctx: &PrivacyContext, user_id: &str, email: &str) -> ApiResult<Holding> {
    let kyc_until = kyc::retained_until(ctx.ports.store.as_ref(), user_id).await?;
    Ok(Holding { kyc_until, suppressed_until: suppressed_until(ctx, email).await? })
}

/// `DELETE /v1/account {password}`: closes the account in one transaction of at most 10 writes (the commit
/// point): the profile flips to closed with its password hash and marketing consent erased and its email
/// released; the wallet closes (no new holds) and its available balance moves, through a ledger entry,
/// into the account's single refund request; the KYC record gets its retention expiry and the claims are
/// released; the erasure request and a follow-up marker are recorded. Nothing changes unless all of it
/// commits, and any number of concurrent or retried closures close once and request one refund: the ones
/// that lose answer what the winner did. No session or key works from the commit on (sessions, logins and
/// new keys check that the account is open; the closed wallet takes no holds). The follow-up (sessions,
/// keys, exports, consents, vault entries, KYC decisions, the wallet registry) runs right after,
/// idempotently, and the scheduled jobs finish it if this request cannot.
pub async fn close_account(ctx: &PrivacyContext, user_id: &str, password: Option<String>) -> ApiResult<Closure> {
    let store = ctx.ports.store.as_ref();
    let account = active_account(store.account(user_id).await?)?;
    confirm_password(ctx, &account, password, "password").await?;
    let retention = &ctx.ports.config.retention;
    let suppressed = suppressed_until(ctx, &account.email).await?;
    for _ in 0..CLOSE_ATTEMPTS {
        // The instances' purses stop first (no new call from them), their free money back on the wallet, so
        // the refund below counts it.
        wallet::metering::stop_purses(store, user_id).await?;
        let now = ctx.ports.clock.now();
        let account_until = retention.expiry(ItemClass::Account, now).unwrap_or(i64::MAX);
        let mut request = Recorded::new(ctx, user_id, RequestKind::Erasure);
        let wallet_item = store.get(Table::Main, &user_pk(user_id), WALLET_SK).await?;
        // A purse funded between the stop and this read is stopped on the next round (a funding after this
        // read changes what the closing transaction expects of the wallet).
        if let Some(wallet_item) = &wallet_item
            && !wallet::metering::purses_stopped(store, user_id, wallet_item).await?
        {
            continue;
        }
        let (wallet_ops, refund) = wallet::closure_ops(&ctx.ports.config, user_id, wallet_item.as_ref(), now)?;
        let (kyc_ops, kyc_until) = kyc::closure_ops(store, user_id, now, retention.kyc_years_after_closure).await?;
        let retained = retained_data(ctx, now, Holding { kyc_until, suppressed_until: suppressed });
        request.finish(RequestStatus::Completed, closure_outcome(&retained, refund), now);

        let mut ops = crate::accounts::closure_ops(&account, now, account_until, &request.sk);
        ops.extend(wallet_ops);
        ops.extend(kyc_ops);
        ops.push(request.put()?);
        ops.push(pending_closure_put(user_id, now, request.expires_at)?);
        match store.transact(ops).await {
            Ok(()) => {
                finish_closure(ctx, user_id).await?;
                return Ok(Closure {
                    status: "closed",
                    request: PrivacyRequestView::from(&request.request),
                    retained,
                    refund_requested: refund,
                });
            }
            Err(StoreError::ConditionFailed) => {
                if let Some(answer) = closure_lost(ctx, &account).await? {
                    return Ok(answer);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict {
        code: ErrorCode::AccountChanged,
        message: "the account is busy (calls are settling); retry the closure in a moment".into(),
        param: None,
    })
}

/// The marker that a closure's follow-up is not finished yet (the jobs walk them), in the closing transaction.
fn pending_closure_put(user_id: &str, closed_at: DateTime<Utc>, expires_at: i64) -> StoreResult<WriteOp> {
    let marker = json!({ "user_id": user_id, "closed_at": closed_at });
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(PENDING_CLOSURES_PK, user_id, &marker, Some(expires_at))?,
        condition: Condition::Always,
    }))
}

/// After a closing transaction's condition failed: the answer of a closure that won meanwhile, a conflict
/// if the account changed, or `None` to read the wallet again (a call settled) and retry.
async fn closure_lost(ctx: &PrivacyContext, account: &Account) -> ApiResult<Option<Closure>> {
    let current =
        ctx.ports.store.account(&account.id).await?.ok_or_else(|| ApiError::Internal("account vanished".into()))?;
    if current.status == AccountStatus::Closed {
        // A concurrent or earlier closure won: answer what it did.
        return recorded_closure(ctx, &account.id).await.map(Some);
    }
    if current.email != account.email || current.password_hash != account.password_hash {
        return Err(ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed meanwhile; retry".into(),
            param: None,
        });
    }
    Ok(None)
}

/// What is kept after a closure at `closed_at`, until when and why: each hold of the retention table that
/// applies to the account, nothing else.
fn retained_data(ctx: &PrivacyContext, closed_at: DateTime<Utc>, holding: Holding) -> Vec<RetainedData> {
    let retention = &ctx.ports.config.retention;
    let until = |at: i64| DateTime::from_timestamp(at, 0).map(timestamp).unwrap_or_default();
    let end = |hold: Hold| match hold {
        holds::ACCOUNT => retention.expiry(ItemClass::Account, closed_at),
        holds::KYC => holding.kyc_until,
        holds::PAYMENTS => retention.expiry(ItemClass::Wallet, closed_at),
        holds::USAGE_LOGS => Some(retention.until(Span::Usage, closed_at)),
        holds::LOGIN_RECORDS => Some(retention.until(Span::LoginRecords, closed_at)),
        holds::PRIVACY_REQUESTS => Some(retention.until(Span::PrivacyRequests, closed_at)),
        holds::MAIL_SUPPRESSION => holding.suppressed_until,
        _ => None,
    };
    HOLDS
        .into_iter()
        .filter_map(|hold| Some(RetainedData { data: hold.data, until: until(end(hold)?), reason: hold.reason }))
        .collect()
}

fn closure_outcome(retained: &[RetainedData], refund: i64) -> String {
    let summary = retained.iter().map(|r| format!("{} until {}", r.data, r.until)).collect::<Vec<_>>().join("; ");
    let refund_note = if refund > 0 {
        format!("; refund of ₹{} requested", crate::money::format_inr(refund))
    } else {
        String::new()
    };
    format!(
        "account closed; erased: password, API keys, sessions, exports, email and KYC claims; kept: {summary}{refund_note}"
    )
}

/// The answer of a closure that already committed, rebuilt from what it stored.
async fn recorded_closure(ctx: &PrivacyContext, user_id: &str) -> ApiResult<Closure> {
    let store = ctx.ports.store.as_ref();
    let account = store.account(user_id).await?.ok_or_else(|| ApiError::Internal("account vanished".into()))?;
    let request_sk = account.closure_request.unwrap_or_default();
    let request: PrivacyRequest = store
        .get(Table::Main, &user_pk(user_id), &request_sk)
        .await?
        .ok_or_else(|| ApiError::Internal("the closure's erasure request is missing".into()))?
        .record()?;
    let closed_at = request.completed_at.unwrap_or(request.received_at);
    let holding = holding(ctx, user_id, &account.email).await?;
    let refund = wallet::refund_request(store, user_id).await?.map_or(0, |r| r.amount);
    finish_closure(ctx, user_id).await?;
    Ok(Closure {
        status: "closed",
        request: PrivacyRequestView::from(&request),
        retained: retained_data(ctx, closed_at, holding),
        refund_requested: refund,
    })
}

/// The follow-up of a committed closure, safe to run any number of times: API keys and exports (with their
/// files) are deleted, remaining sessions too; consents, KYC decisions and the wallet's registry entry get
/// their retention expiry; a refund owed is marked for the refunds job. Done, it removes the pending marker.
pub async fn finish_closure(ctx: &PrivacyContext, user_id: &str) -> ApiResult<()> {
    let store = ctx.ports.store.as_ref();
    let Some(account) = store.account(user_id).await? else { return Ok(()) };
    let Some(closed_at) = account.closed_at.filter(|_| account.status == AccountStatus::Closed) else {
        return Ok(());
    };
    let retention = &ctx.ports.config.retention;
    for (slot, key) in store.keys(user_id).await? {
        store.delete_key(user_id, &slot, &key.key_hash, &key.id).await?;
    }
    for item in crate::store::user_items(store, user_id, EXPORT_PREFIX).await? {
        if let Some(export_id) = item.sk.strip_prefix(EXPORT_PREFIX) {
            super::export::abandon_pending(ctx, user_id, export_id).await?;
        }
        if let Some(key) = item.attrs.get("blob_key").and_then(Value::as_str) {
            ctx.blobs()?.delete(key).await?;
        }
        store.delete(Delete { table: Table::Main, pk: item.pk, sk: item.sk, condition: Condition::Always }).await?;
    }
    // Each owner puts its own items in order (the closing transaction is at DynamoDB Local's size limit).
    crate::auth::after_closure(store, user_id).await?;
    kyc::after_closure(store, user_id).await?;
    store
        .transact(vec![
            crate::account_limits::erase_account_limits(user_id),
            crate::billing::erase_at_closure(user_id),
            super::nominee::erase_at_closure(user_id),
        ])
        .await?;
    crate::spend::erase_alerts(store, user_id).await?;
    let wallet_until = retention.expiry(ItemClass::Wallet, closed_at).unwrap_or(i64::MAX);
    wallet::after_closure(&ctx.ports, user_id, wallet_until).await?;
    let account_until = retention.expiry(ItemClass::Account, closed_at).unwrap_or(i64::MAX);
    accounts::after_closure(store, user_id, account_until).await?;
    // The follow-up ends with the confirmation, once: only the run that removes the marker sends it (the
    // closing transaction is at its size limit). It goes to the address the account had.
    let holding = holding(ctx, user_id, &account.email).await?;
    let confirmation = OutboxMail::new(MailKind::AccountClosed, user_id, ctx.ports.clock.now())
        .to(&account.email)
        .param("closed_on", crate::notifications::messages::in_ist(closed_at))
        .param("retained", retained_lines(&retained_data(ctx, closed_at, holding)));
    let done = Delete {
        table: Table::Main,
        pk: PENDING_CLOSURES_PK.into(),
        sk: user_id.to_owned(),
        condition: Condition::Exists,
    };
    store.transact(vec![WriteOp::Delete(done), enqueue(&confirmation)?]).await.or_not_needed()?;
    Ok(())
}

/// The closure e-mail's list of what is kept: "<data> until <date, IST>: <reason>", one line per hold.
fn retained_lines(retained: &[RetainedData]) -> Vec<String> {
    let date = |until: &str| {
        DateTime::parse_from_rfc3339(until)
            .map(|at| crate::notifications::messages::in_ist(at.to_utc()))
            .unwrap_or_else(|_| "the end of its retention".into())
    };
    retained.iter().map(|r| format!("{} until {}: {}", r.data.replace('_', " "), date(&r.until), r.reason)).collect()
}

/// For the scheduled jobs: finishes the follow-up of closures whose request could not (a store or blob
/// error after the commit). Returns how many were finished; one that fails again is logged and skipped.
pub async fn finish_pending_closures(ctx: &PrivacyContext, budget: std::time::Duration) -> ApiResult<usize> {
    let started = std::time::Instant::now();
    let mut finished = 0;
    let mut after = None;
    loop {
        // Paged, so closures that keep failing never hide the ones behind them.
        let page = ctx.ports.store.query(Query::new(Table::Main, PENDING_CLOSURES_PK).limit(100).after(after)).await?;
        for item in page.items {
            if started.elapsed() >= budget {
                return Ok(finished);
            }
            match finish_closure(ctx, &item.sk).await {
                Ok(()) => finished += 1,
                Err(e) => tracing::error!(user_id = %item.sk, error = %e, "closure follow-up not finished this run"),
            }
        }
        after = page.next;
        if after.is_none() {
            return Ok(finished);
        }
    }
}
