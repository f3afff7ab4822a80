//! The DigiLocker step of a person's KYC: the customer is sent to the provider's consent page, shares their
//! Aadhaar from DigiLocker, comes back to [`DIGILOCKER_RETURN_PATH`], and we fetch the provider's result:
//! name, date of birth and the masked number. We keep the last four digits, the provider's reference and
//! the outcome (Aadhaar (Sharing of Information) Regulations 2016, reg. 6: only the last four digits are
//! ever shown); the name is kept only while an operator compares it with the PAN's.

use chrono::Duration;

use super::consent::{CheckKind, ConsentRecord};
use super::documents::masked_aadhaar;
use super::provider::{AadhaarDetails, DigilockerOutcome};
use super::steps::{StepStatus, judge_aadhaar, same_name};
use super::store::{DigilockerSession, KycStore, RecordWrite, WriteConflict};
use super::submit::{already_verified, save_after_answer, settle};
use super::{KycContext, KycRecord, MAX_DIGILOCKER_SESSIONS, SUBMISSION_WINDOW_DAYS, open_account};
use crate::accounts::{AccountStore, KycStatus};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::secrets::random_suffix;

/// Where the provider sends the customer back (our verification id in its query).
pub const DIGILOCKER_RETURN_PATH: &str = "/v1/kyc/digilocker/return";
/// How long an unfinished session is waited for: the consent link lives 10 minutes, a consent one hour.
const SESSION_PATIENCE: Duration = Duration::hours(2);
/// The provider is asked about one session at most this often.
pub const POLL_GAP: Duration = Duration::seconds(5);
const SHARE_AGAIN: &str =
    "DigiLocker did not share your Aadhaar (declined, or the link expired); start the DigiLocker step again";

fn not_ready(message: &str) -> ApiError {
    ApiError::Conflict { code: ErrorCode::KycStepNotReady, message: message.to_owned(), param: None }
}

/// The answer to a DigiLocker start whose origin (where the customer comes back to) is not proven.
pub fn origin_unproven() -> ApiError {
    not_ready("start DigiLocker from the dashboard, which it sends you back to")
}

/// `POST /v1/kyc/digilocker`: opens a DigiLocker session for the account's submission and returns the
/// provider's consent URL; DigiLocker sends the customer back to `return_origin` (the dashboard's origin as
/// the customer reached it). Only after the PAN was submitted, for a person, until the step has passed; at
/// most [`MAX_DIGILOCKER_SESSIONS`] in the window (a session that could not be opened gives its slot back).
pub async fn start_digilocker(ctx: &KycContext<'_>, user_id: &str, return_origin: &str) -> ApiResult<String> {
    let store = ctx.ports.store();
    open_account(store, user_id).await?;
    let record = store
        .kyc_record(user_id)
        .await?
        .ok_or_else(|| not_ready("submit your PAN first (POST /v1/kyc); DigiLocker comes next"))?;
    check_can_start(&record)?;
    let window = crate::store::schema::kyc_digilocker_starts_pk(user_id);
    let slot = reserve_session(store, &window, ctx.ports.now()).await?;
    let opened = open_session(ctx, &record, return_origin).await;
    if opened.is_err()
        && let Err(e) = crate::auth::release_in_window(store, &window, &slot).await
    {
        tracing::warn!(%user_id, error = %e, "a DigiLocker session slot was not given back");
    }
    opened
}

/// One of the account's DigiLocker sessions in its window: the slot, or 409 once they are used up.
async fn reserve_session(
    store: &dyn crate::store::ItemStore,
    window: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<String> {
    let window_end = (now + Duration::days(SUBMISSION_WINDOW_DAYS)).timestamp();
    let limit = MAX_DIGILOCKER_SESSIONS as u32;
    match crate::auth::reserve_in_window(store, window, limit, window_end, now.timestamp()).await? {
        crate::auth::Reservation::Reserved { window: slot } => Ok(slot),
        _ => Err(ApiError::Conflict {
            code: ErrorCode::KycSubmissionLimit,
            message: format!(
                "at most {MAX_DIGILOCKER_SESSIONS} DigiLocker sessions per account in {SUBMISSION_WINDOW_DAYS} days; write to the grievance officer (GET /v1/privacy)"
            ),
            param: None,
        }),
    }
}

/// Asks the provider for a session and records it with the customer's consent; returns the consent URL.
async fn open_session(ctx: &KycContext<'_>, record: &KycRecord, return_origin: &str) -> ApiResult<String> {
    let (store, now, user_id) = (ctx.ports.store(), ctx.ports.now(), record.user_id.as_str());
    let verification_id = format!("{}-d{}", record.subject, &random_suffix()[..8]);
    let redirect = format!("{return_origin}{DIGILOCKER_RETURN_PATH}?verification_id={verification_id}");
    let link = ctx.provider.start_digilocker(&verification_id, &redirect).await?;
    let mut started = record.clone();
    started.aadhaar.status = StepStatus::Pending;
    started.aadhaar.reason = None;
    started.aadhaar.verification_id = Some(verification_id.clone());
    started.aadhaar.reference_id = Some(link.reference_id).filter(|r| !r.is_empty());
    settle(ctx, &mut started);
    let mut write = RecordWrite::new(&started, Some(record));
    write.close_session = record.aadhaar.verification_id.clone();
    let session = DigilockerSession {
        user_id: user_id.to_owned(),
        verification_id: verification_id.clone(),
        started_at: now,
        polled_at: None,
    };
    write.open_session = Some(session);
    let consent = ConsentRecord::new(user_id, CheckKind::AadhaarDigilocker, ctx.provider.name(), &verification_id, now);
    write.consents.push(consent);
    match store.save_kyc(&write).await {
        Ok(()) => Ok(link.url),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) => Err(ApiError::Conflict {
            code: ErrorCode::KycSubmissionConflict,
            message: "another KYC change for this account happened at the same time; retry".into(),
            param: None,
        }),
    }
}

fn check_can_start(record: &KycRecord) -> ApiResult<()> {
    match record.status {
        KycStatus::Verified => return Err(already_verified()),
        KycStatus::Rejected => return Err(not_ready("this KYC submission was rejected; submit your PAN again first")),
        _ => {}
    }
    if record.holder == super::Holder::Business {
        return Err(not_ready("a business verifies with its GSTIN and PAN; DigiLocker is for a person"));
    }
    if record.subject.is_empty() {
        return Err(not_ready("submit your PAN again (POST /v1/kyc) to start DigiLocker"));
    }
    if matches!(record.aadhaar.status, StepStatus::Passed | StepStatus::InReview) {
        return Err(not_ready("your Aadhaar has already been received from DigiLocker"));
    }
    Ok(())
}

/// The customer's return (and the jobs' poll): fetches the provider's result for an open session and
/// applies it. `None` when no such session is open. Nothing changes for a submission already decided (an
/// operator's rejection stands), and the provider is asked at most once per [`POLL_GAP`] a session,
/// whoever asks (the return route needs no login).
pub async fn complete_digilocker(ctx: &KycContext<'_>, verification_id: &str) -> ApiResult<Option<KycRecord>> {
    let store = ctx.ports.store();
    let Some(session) = store.digilocker_session(verification_id).await? else { return Ok(None) };
    let Some(record) = store.kyc_record(&session.user_id).await? else { return Ok(None) };
    let open = record.aadhaar.verification_id.as_deref() == Some(verification_id)
        && record.aadhaar.status == StepStatus::Pending
        && !matches!(record.status, KycStatus::Rejected | KycStatus::Verified);
    if !open || !store.take_poll(&session, ctx.ports.now(), POLL_GAP).await? {
        return Ok(Some(record));
    }
    let outcome = ctx.provider.digilocker_outcome(verification_id).await?;
    let gave_up = ctx.ports.now() - session.started_at > SESSION_PATIENCE;
    let mut done = record.clone();
    match outcome {
        DigilockerOutcome::Pending if !gave_up => return Ok(Some(record)),
        DigilockerOutcome::Pending | DigilockerOutcome::NotShared { .. } => {
            done.aadhaar.status = StepStatus::NotStarted;
            done.aadhaar.reason = Some(SHARE_AGAIN.to_owned());
        }
        DigilockerOutcome::Shared(details) => apply_details(ctx, &mut done, &details).await?,
    }
    settle(ctx, &mut done);
    save_after_answer(ctx, &done, &record).await.map(Some)
}

/// Judges DigiLocker's details against the account and the PAN, and keeps only what may be kept.
async fn apply_details(ctx: &KycContext<'_>, record: &mut KycRecord, details: &AadhaarDetails) -> ApiResult<()> {
    let account = ctx.ports.store().account(&record.user_id).await?;
    let account = account.ok_or_else(|| ApiError::Internal("the account vanished".into()))?;
    let registered = record.pan.answer.as_ref().and_then(|a| a.registered_name.clone());
    let names_agree =
        same_name(&details.name, &record.name_on_pan) || registered.is_some_and(|r| same_name(&details.name, &r));
    let today = ctx.ports.now().date_naive();
    let judged = judge_aadhaar(account.date_of_birth, details.date_of_birth, names_agree, today);
    record.aadhaar_masked = masked_aadhaar(&details.last_four);
    record.aadhaar.status = judged.status;
    record.aadhaar.completed_at = Some(ctx.ports.now());
    record.aadhaar.name_for_review = (judged.status == StepStatus::InReview).then(|| details.name.clone());
    // A step that changed after an operator's approval is seen by a person again where one must decide.
    record.operator_approved = false;
    if let Some(reason) = judged.reason {
        record.rejection_reason = Some(reason);
    }
    Ok(())
}
