//! What operators do: list the queue, reveal a full number with a recorded reason, and decide.

use crate::ports::Ports;
use serde::Serialize;

use super::provider::{GstinAnswer, PanAnswer};
use super::steps::{Holder, StepStatus};
use super::store::{
    DECISION_PREFIX, KycStore, RecordWrite, WriteConflict, claimed_elsewhere, drop_index_entry, held_claims,
    index_page, index_sk,
};
use super::submit::already_verified;
use super::{Decision, DecisionRecord, DocumentKind, KycKeys, KycRecord, MAX_REASON_CHARS, status_name, vault};
use crate::accounts::{AccountStore, KycStatus, time_sort_key, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{Condition, Item, ItemStore, Put, Table, schema};

/// The account's submission, if an operator may decide it and the account is open.
async fn submission_in_review(store: &dyn ItemStore, user_id: &str) -> ApiResult<KycRecord> {
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
        KycStatus::InReview => Ok(record),
        // Submitted before the provider checks, waiting for an operator as it did then.
        KycStatus::Pending if record.subject.is_empty() => Ok(record),
        KycStatus::Verified => Err(already_verified()),
        other => Err(ApiError::Conflict {
            code: ErrorCode::KycNotPending,
            message: format!("only submissions in review can be decided (this one is {})", status_name(other)),
            param: None,
        }),
    }
}

/// An approval: what the checks left to a person passes (a legacy submission, made before the provider
/// checks, passes whole), and the steps decide the status again: a person who has not done DigiLocker yet
/// stays pending.
fn approve(record: &mut KycRecord) {
    let legacy = record.subject.is_empty();
    let pass = |status: &mut StepStatus| {
        if *status == StepStatus::InReview || (legacy && *status == StepStatus::NotStarted) {
            *status = StepStatus::Passed;
        }
    };
    pass(&mut record.pan.status);
    pass(&mut record.aadhaar.status);
    if let Some(gstin) = record.gstin.as_mut() {
        pass(&mut gstin.status);
    }
    record.aadhaar.name_for_review = None;
    record.operator_approved = true;
}

/// Records an operator's decision on a submission in review.
pub async fn decide(
    ports: &Ports,
    user_id: &str,
    decision: Decision,
    reason: Option<String>,
    operator: &str,
) -> ApiResult<KycRecord> {
    let store = ports.store();
    if matches!(decision, Decision::Reveal | Decision::Correct) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidDecision,
            "decision",
            "decision must be approve or reject (a PAN is revealed with POST /v1/admin/kyc/{user_id}/reveal)",
        ));
    }
    let reason = check_reason(decision, reason)?;
    let previous = submission_in_review(store, user_id).await?;
    let mut record = previous.clone();
    let now = ports.now();
    record.decided_at = Some(now);
    record.decided_by = Some(operator.to_owned());
    match decision {
        Decision::Approve => {
            approve(&mut record);
            record.status = super::steps::overall(&record, ports.config().kyc_mode);
            record.verified_at = (record.status == KycStatus::Verified).then_some(now);
            record.rejection_reason = None;
        }
        Decision::Reject | Decision::Reveal | Decision::Correct => {
            record.status = KycStatus::Rejected;
            record.rejection_reason = reason.clone();
            record.aadhaar.name_for_review = None;
        }
    }
    record.revision += 1;
    let audit = DecisionRecord {
        user_id: user_id.to_owned(),
        decision,
        document: None,
        reason,
        decided_by: operator.to_owned(),
        at: now,
    };
    let mut write = RecordWrite::new(&record, Some(&previous));
    write.audit = Some(audit);
    // A rejected submission must not keep numbers from their rightful owner (older data may hold claims).
    if record.status == KycStatus::Rejected {
        write.releases = held_claims(store, user_id, &record).await?;
        // A DigiLocker session still open cannot bring a rejected submission back.
        write.close_session = record.aadhaar.verification_id.clone();
    }
    match store.save_kyc(&write).await {
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
    if decision == Decision::Approve && claimed_elsewhere(store, record).await? {
        return Ok(ApiError::Conflict {
            code: ErrorCode::KycDocumentInUse,
            message: "this PAN (or GSTIN) already backs another verified account; reject the submission with a reason"
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
/// Decrypts the user's PAN (or, until the erasure has run, a legacy Aadhaar number, for the erasure's own
/// test only) from the vault: for the owner's data export and the jobs' retries.
pub async fn reveal<S: KycStore + ?Sized>(
    store: &S,
    keys: &KycKeys,
    record: &KycRecord,
    kind: DocumentKind,
) -> ApiResult<Option<String>> {
    let reference = match kind {
        DocumentKind::Pan => Some(record.pan_ref.as_str()),
        DocumentKind::Aadhaar => record.aadhaar_ref.as_deref(),
        DocumentKind::Gstin => None,
    };
    let Some(reference) = reference else { return Ok(None) };
    let Some(entry) = store.vault_entry(reference).await? else { return Ok(None) };
    let aad = format!("{}:{}", record.user_id, kind.as_str());
    let plaintext = vault::open(keys.data_keys.as_ref(), &entry.sealed, aad.as_bytes()).await?;
    String::from_utf8(plaintext).map(Some).map_err(|_| ApiError::Internal("vault entry is not text".into()))
}

/// Why a submission waits for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// The provider found the name only partly matching the PAN's record.
    PartialNameMatch,
    /// DigiLocker's name differs from the PAN's (or DigiLocker gave no date of birth).
    AadhaarDetailsDiffer,
    /// Manual mode: every complete submission is approved by a person.
    ManualMode,
    /// Submitted before the provider checks; decided as before.
    Legacy,
}

fn review_reason(record: &KycRecord) -> ReviewReason {
    if record.subject.is_empty() {
        ReviewReason::Legacy
    } else if record.pan.status == StepStatus::InReview {
        ReviewReason::PartialNameMatch
    } else if record.aadhaar.status == StepStatus::InReview {
        ReviewReason::AadhaarDetailsDiffer
    } else {
        ReviewReason::ManualMode
    }
}

/// A submission as the operators' queue shows it: the provider's evidence, masked numbers and the
/// account's details; never a full number.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedSubmission {
    pub user_id: String,
    pub email: String,
    pub full_name: String,
    pub date_of_birth: chrono::NaiveDate,
    pub account_created_at: String,
    pub holder: Holder,
    pub review_reason: ReviewReason,
    pub name_on_pan: String,
    pub pan_masked: String,
    /// The provider's PAN answer: registered name, name-match score, date-of-birth match.
    pub pan_check: Option<PanAnswer>,
    pub aadhaar_masked: Option<String>,
    /// The name DigiLocker gave, when it differs from the PAN's.
    pub aadhaar_name: Option<String>,
    pub gstin: Option<String>,
    pub gstin_check: Option<GstinAnswer>,
    pub submitted_at: String,
}

impl QueuedSubmission {
    fn new(record: KycRecord, account: crate::accounts::Account) -> Self {
        Self {
            review_reason: review_reason(&record),
            user_id: record.user_id,
            email: account.email,
            full_name: account.full_name,
            date_of_birth: account.date_of_birth,
            account_created_at: crate::accounts::timestamp(account.created_at),
            holder: record.holder,
            name_on_pan: record.name_on_pan,
            pan_masked: record.pan_masked,
            pan_check: record.pan.answer,
            aadhaar_masked: record.aadhaar_masked,
            aadhaar_name: record.aadhaar.name_for_review,
            gstin: record.gstin.as_ref().map(|g| g.gstin.clone()),
            gstin_check: record.gstin.and_then(|g| g.answer),
            submitted_at: crate::accounts::timestamp(record.submitted_at),
        }
    }
}

/// `GET /v1/admin/kyc/queue`: submissions in review, oldest first, a page at a time (`after` is the previous
/// page's cursor). Entries whose submission was decided or replaced meanwhile are skipped and removed.
pub async fn queue<S: ItemStore + ?Sized>(
    store: &S,
    limit: u32,
    after: Option<String>,
) -> ApiResult<(Vec<QueuedSubmission>, Option<String>)> {
    let (entries, next) = index_page(store, schema::KYC_QUEUE_PK, limit, after).await?;
    let mut listed = Vec::new();
    for (user_id, entry) in &entries {
        let record = store
            .kyc_record(user_id)
            .await?
            .filter(|r| r.status == KycStatus::InReview || (r.status == KycStatus::Pending && r.subject.is_empty()));
        let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
        match (record, account) {
            (Some(record), Some(account)) if index_sk(&record) == entry.sk => {
                listed.push(QueuedSubmission::new(record, account));
            }
            _ => drop_index_entry(store, entry).await,
        }
    }
    Ok((listed, next))
}

/// An operator's request to see the PAN: whose and why (recorded before it is shown). The PAN is the only
/// number we hold: Aadhaar numbers are not kept at all.
pub struct Reveal<'a> {
    pub user_id: &'a str,
    pub document: DocumentKind,
    pub reason: Option<String>,
    /// Who asks, and whether they hold `kyc_reviewer` (an open account's number needs it) and `admin` (a
    /// closed account's number needs it).
    pub operator: &'a str,
    pub reviewer: bool,
    pub admin: bool,
}

/// Numbers one operator may reveal in 24 hours; asking for more is refused and raises an alert.
pub const REVEALS_PER_DAY: u32 = 20;
/// A closed account's number is shown only to an admin stating the legal basis, at least this long.
pub const MIN_LEGAL_REASON_CHARS: usize = 20;

/// `POST /v1/admin/kyc/{user_id}/reveal`: shows an operator a submission's full PAN, after recording who
/// asked, when and why (the record is kept like a decision). Nothing is shown if the record cannot be
/// written. An operator reveals at most [`REVEALS_PER_DAY`]; a closed account's number (kept only for the
/// law's retention, DPDP Act s.8(7)) only to an admin who states the legal reason.
pub async fn reveal_for_operator(ports: &Ports, keys: &KycKeys, request: Reveal<'_>) -> ApiResult<String> {
    let Reveal { user_id, document, reason, operator, reviewer, admin } = request;
    if document != DocumentKind::Pan {
        return Err(ApiError::invalid(
            ErrorCode::InvalidParameter,
            "document",
            "only the PAN can be revealed: InferexAI keeps no Aadhaar number (only its last four digits) and shows the GSTIN in the queue",
        ));
    }
    let store = ports.store();
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    let Some(reason) = reason.filter(|r| r.chars().count() <= MAX_REASON_CHARS) else {
        let message = format!("a reveal needs a reason of at most {MAX_REASON_CHARS} characters, kept in the audit");
        return Err(ApiError::invalid(ErrorCode::InvalidReason, "reason", message));
    };
    let not_found =
        || ApiError::NotFound { code: ErrorCode::KycNotFound, message: "no KYC submission for this user".into() };
    let record = store.kyc_record(user_id).await?.ok_or_else(not_found)?;
    let closed = store.account(user_id).await?.is_none_or(|a| a.status == crate::accounts::AccountStatus::Closed);
    if closed {
        closed_account_reveal_allowed(admin, &reason)?;
    } else if !reviewer {
        let message = "an open account's number is shown only to the kyc_reviewer role";
        return Err(ApiError::Forbidden { code: ErrorCode::RoleRequired, message: message.into() });
    }
    take_reveal(ports, operator).await?;
    let now = ports.now();
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

/// A closed account's number: an admin only, with the legal reason stated.
fn closed_account_reveal_allowed(admin: bool, reason: &str) -> ApiResult<()> {
    if !admin {
        return Err(ApiError::Forbidden {
            code: ErrorCode::RoleRequired,
            message: "this account is closed: its number is shown only to the admin role, for a stated legal reason"
                .into(),
        });
    }
    if reason.chars().count() < MIN_LEGAL_REASON_CHARS {
        let message = format!(
            "this account is closed: state the legal reason (the law or order and its reference), at least {MIN_LEGAL_REASON_CHARS} characters"
        );
        return Err(ApiError::invalid(ErrorCode::InvalidReason, "reason", message));
    }
    Ok(())
}

/// Takes one of the operator's reveals for the day, or refuses (and alerts) when they are used up.
async fn take_reveal(ports: &Ports, operator: &str) -> ApiResult<()> {
    use crate::auth::{Reservation, reserve_in_window};
    let now = ports.now();
    let ends = (now + chrono::Duration::days(1)).timestamp();
    let pk = schema::rate_pk("kyc-reveal", operator);
    match reserve_in_window(ports.store(), &pk, REVEALS_PER_DAY, ends, now.timestamp()).await? {
        Reservation::Reserved { .. } => Ok(()),
        Reservation::Throttled { retry_after_secs } => {
            tracing::error!(
                alert = crate::alerts::KYC_REVEAL_LIMIT,
                operator,
                "an operator asked for more reveals than a day allows"
            );
            Err(ApiError::TooManyRequests {
                code: ErrorCode::RevealLimitReached,
                message: format!(
                    "you have revealed {REVEALS_PER_DAY} numbers in the last day, the most allowed; try again in {retry_after_secs} seconds"
                ),
                retry_after_secs,
            })
        }
    }
}
