//! What operators do: list the queue, reveal a full number with a recorded reason, and decide.

use crate::ports::Ports;
use serde::Serialize;

use super::store::{DECISION_PREFIX, KycStore, WriteConflict, queue_sk};
use super::submit::{already_verified, claimed_elsewhere, held_claims};
use super::{Decision, DecisionRecord, DocumentKind, KycKeys, KycRecord, MAX_REASON_CHARS, status_name, vault};
use crate::accounts::{AccountStore, KycStatus, time_sort_key, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{Condition, Delete, Item, ItemStore, Put, Query, Table, schema};

/// The account's submission, if it waits for a decision and the account is open.
async fn pending_submission(store: &dyn ItemStore, user_id: &str) -> ApiResult<KycRecord> {
    let Some(record) = store.kyc_record(user_id).await? else {
        return Err(ApiError::NotFound {
            code: ErrorCode::KycNotFound,
            message: "no KYC submission for this user".into(),
        });
    };
    if store.account(user_id).await?.is_none_or(|a| a.status != crate::accounts::AccountStatus::Active) {
        return Err(account_closed());
    }
    match record.status {
        KycStatus::Pending => Ok(record),
        KycStatus::Verified => Err(already_verified()),
        other => Err(ApiError::Conflict {
            code: ErrorCode::KycNotPending,
            message: format!("only pending submissions can be decided (this one is {})", status_name(other)),
            param: None,
        }),
    }
}

/// Records an operator's decision on a pending submission.
pub async fn decide(
    ports: &Ports,
    user_id: &str,
    decision: Decision,
    reason: Option<String>,
    operator: &str,
) -> ApiResult<KycRecord> {
    let store = ports.store();
    let clock = ports.clock();
    if decision == Decision::Reveal {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDecision,
            "decision",
            "decision must be approve or reject (numbers are revealed with POST /v1/admin/kyc/{user_id}/reveal)",
        ));
    }
    let reason = check_reason(decision, reason)?;
    let mut record = pending_submission(store, user_id).await?;
    let now = clock.now();
    let previous_revision = record.revision;
    record.revision += 1;
    record.decided_at = Some(now);
    record.decided_by = Some(operator.to_owned());
    match decision {
        Decision::Approve => {
            record.status = KycStatus::Verified;
            record.verified_at = Some(now);
            record.rejection_reason = None;
        }
        Decision::Reject | Decision::Reveal => {
            record.status = KycStatus::Rejected;
            record.rejection_reason = reason.clone();
        }
    }
    let audit = DecisionRecord {
        user_id: user_id.to_owned(),
        decision,
        document: None,
        reason,
        decided_by: operator.to_owned(),
        at: now,
    };
    // A rejected submission must not keep numbers from their rightful owner (older data may hold claims).
    let releases = match decision {
        Decision::Reject | Decision::Reveal => held_claims(store, user_id, &record).await?,
        Decision::Approve => Vec::new(),
    };
    match store.save_decision(&record, previous_revision, &audit, &releases).await {
        Ok(()) => Ok(record),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) => Err(decision_conflict(store, &record, decision).await?),
    }
}

/// The operator's reason: trimmed, at most [`MAX_REASON_CHARS`], and required to reject.
fn check_reason(decision: Decision, reason: Option<String>) -> ApiResult<Option<String>> {
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        let message = format!("reason must be at most {MAX_REASON_CHARS} characters");
        return Err(ApiError::invalid(ErrorCode::InvalidReason, "reason", message));
    }
    if decision == Decision::Reject && reason.is_none() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidReason,
            "reason",
            "a rejection needs a reason the user will see",
        ));
    }
    Ok(reason)
}

/// Why a decision's transaction lost: a number another account verified meanwhile (said to the operator
/// only, and without the number), the account's closure, or another change of the submission.
async fn decision_conflict<S: KycStore + AccountStore + ?Sized>(
    store: &S,
    record: &KycRecord,
    decision: Decision,
) -> ApiResult<ApiError> {
    let user_id = record.user_id.as_str();
    let fingerprints = [record.pan_fingerprint.as_str(), record.aadhaar_fingerprint.as_str()];
    if decision == Decision::Approve && claimed_elsewhere(store, user_id, &fingerprints).await? {
        return Ok(ApiError::Conflict {
            code: ErrorCode::KycDocumentInUse,
            message: "a number of this submission already backs another verified account; reject it with a reason"
                .into(),
            param: None,
        });
    }
    if store.account(user_id).await?.is_none_or(|a| a.status != crate::accounts::AccountStatus::Active) {
        return Ok(account_closed());
    }
    Ok(ApiError::Conflict {
        code: ErrorCode::KycSubmissionConflict,
        message: "the submission changed while it was being decided; reload it".into(),
        param: None,
    })
}

fn account_closed() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::AccountClosed,
        message: "the account is closed; its KYC submission can no longer be decided".into(),
        param: None,
    }
}
/// Decrypts one of the user's numbers from the vault (for the owner's data export).
pub async fn reveal<S: KycStore + ?Sized>(
    store: &S,
    keys: &KycKeys,
    record: &KycRecord,
    kind: DocumentKind,
) -> ApiResult<Option<String>> {
    let Some(entry) = store.vault_entry(record.reference(kind)).await? else { return Ok(None) };
    let aad = format!("{}:{}", record.user_id, kind.as_str());
    let plaintext = vault::open(keys.data_keys.as_ref(), &entry.sealed, aad.as_bytes()).await?;
    String::from_utf8(plaintext).map(Some).map_err(|_| ApiError::Internal("vault entry is not text".into()))
}

/// A pending submission as the operators' queue shows it: masked numbers and the account's details.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedSubmission {
    pub user_id: String,
    pub email: String,
    pub full_name: String,
    pub date_of_birth: chrono::NaiveDate,
    pub account_created_at: String,
    pub name_on_pan: String,
    pub pan_masked: String,
    pub aadhaar_masked: String,
    pub submitted_at: String,
}

/// `GET /v1/admin/kyc/queue`: pending submissions, oldest first, a page at a time (`after` is the previous
/// page's cursor). Entries whose submission was decided or replaced meanwhile are skipped and removed.
pub async fn queue<S: ItemStore + ?Sized>(
    store: &S,
    limit: u32,
    after: Option<String>,
) -> ApiResult<(Vec<QueuedSubmission>, Option<String>)> {
    let page = store.query(Query::new(Table::Main, schema::KYC_QUEUE_PK).limit(limit).after(after)).await?;
    let mut listed = Vec::new();
    for entry in &page.items {
        let user_id = entry.attrs.get("user_id").and_then(serde_json::Value::as_str).unwrap_or_default();
        let record = store.kyc_record(user_id).await?.filter(|r| r.status == KycStatus::Pending);
        let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
        let (Some(record), Some(account)) = (record, account) else {
            stale_entry(store, entry).await;
            continue;
        };
        if queue_sk(&record) != entry.sk {
            stale_entry(store, entry).await;
            continue;
        }
        listed.push(QueuedSubmission {
            user_id: record.user_id.clone(),
            email: account.email,
            full_name: account.full_name,
            date_of_birth: account.date_of_birth,
            account_created_at: crate::accounts::timestamp(account.created_at),
            name_on_pan: record.name_on_pan,
            pan_masked: record.pan_masked,
            aadhaar_masked: record.aadhaar_masked,
            submitted_at: crate::accounts::timestamp(record.submitted_at),
        });
    }
    Ok((listed, page.next))
}

async fn stale_entry<S: ItemStore + ?Sized>(store: &S, entry: &Item) {
    let delete =
        Delete { table: Table::Main, pk: entry.pk.clone(), sk: entry.sk.clone(), condition: Condition::Always };
    if let Err(e) = store.delete(delete).await {
        tracing::warn!(error = %e, "a stale KYC queue entry stays until the next listing");
    }
}

/// `POST /v1/admin/kyc/{user_id}/reveal`: shows an operator one full number of a submission, after
/// recording who asked, when, for which number and why (the record is kept like a decision). Nothing is
/// shown if the record cannot be written.
/// An operator's request to see one full number: whose, which, and why (recorded before it is shown).
pub struct Reveal<'a> {
    pub user_id: &'a str,
    pub document: DocumentKind,
    pub reason: Option<String>,
}

pub async fn reveal_for_operator(
    ports: &Ports,
    keys: &KycKeys,
    request: Reveal<'_>,
    operator: &str,
) -> ApiResult<String> {
    let Reveal { user_id, document, reason } = request;
    let store = ports.store();
    let clock = ports.clock();
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    let Some(reason) = reason.filter(|r| r.chars().count() <= MAX_REASON_CHARS) else {
        let message = format!("a reveal needs a reason of at most {MAX_REASON_CHARS} characters, kept in the audit");
        return Err(ApiError::invalid(ErrorCode::InvalidReason, "reason", message));
    };
    let not_found =
        || ApiError::NotFound { code: ErrorCode::KycNotFound, message: "no KYC submission for this user".into() };
    let record = store.kyc_record(user_id).await?.ok_or_else(not_found)?;
    let now = clock.now();
    let audit = DecisionRecord {
        user_id: user_id.to_owned(),
        decision: Decision::Reveal,
        document: Some(document),
        reason: Some(reason),
        decided_by: operator.to_owned(),
        at: now,
    };
    let put = Put {
        table: Table::Main,
        item: Item::from_record(user_pk(user_id), time_sort_key(DECISION_PREFIX, now), &audit, None)?,
        condition: Condition::NotExists,
    };
    store.put(put).await?;
    reveal(store, keys, &record, document).await?.ok_or_else(not_found)
}
