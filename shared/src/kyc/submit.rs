//! A customer's submission (`POST /v1/kyc`): a person's PAN, or a business's GSTIN and the PAN inside it,
//! with their consent; the PAN sealed in the vault; the checks asked of the provider at once (and again by
//! the jobs while it does not answer).

use chrono::NaiveDate;
use serde::Deserialize;

use super::consent::{CheckKind, ConsentRecord};
use super::documents::{Gstin, Pan};
use super::provider::{PanQuery, ProviderError};
use super::steps::{self, GstinStep, Holder, Judgement, PanStep, StepStatus, judge_gstin, judge_pan};
use super::store::{KycStore, RecordWrite, WriteConflict, claimed_elsewhere, held_claims};
use super::{
    DocumentKind, KycContext, KycRecord, MAX_NAME_CHARS, MAX_SUBMISSIONS, SUBMISSION_WINDOW_DAYS, VaultEntry,
    open_account, vault,
};
use crate::accounts::{Account, KycStatus};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::secrets::random_suffix;
use crate::store::schema::kyc_submissions_pk as submissions_pk;

/// The body of `POST /v1/kyc`: `{"pan", "name_on_pan", "consent": true}` for a person, with `"gstin"` for a
/// business.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub pan: String,
    pub name_on_pan: String,
    pub consent: Option<bool>,
    pub gstin: Option<String>,
}

impl SubmitRequest {
    /// Reads a body: one with `aadhaar` is refused before anything else (its value is never read or
    /// repeated), then the fields as the other bodies are read.
    pub fn read(body: &serde_json::Value) -> ApiResult<Self> {
        if body.get("aadhaar").is_some() {
            return Err(ApiError::invalid(
                ErrorCode::AadhaarNotAccepted,
                "aadhaar",
                "InferexAI does not accept Aadhaar numbers: submit your PAN here, then verify your Aadhaar through DigiLocker (POST /v1/kyc/digilocker), which shares only its last four digits",
            ));
        }
        let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.to_string()))?;
        crate::body::parse_json(&bytes)
    }
}

/// A submission whose fields passed their rules.
struct Checked {
    holder: Holder,
    pan: Pan,
    gstin: Option<Gstin>,
    name_on_pan: String,
}

fn check_name(raw: &str) -> ApiResult<String> {
    let name = crate::accounts::printable(raw, MAX_NAME_CHARS).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidNameOnPan,
            "name_on_pan",
            format!("name_on_pan must be the name printed on the PAN card (1 to {MAX_NAME_CHARS} characters)"),
        )
    })?;
    Ok(name.to_owned())
}

fn check(request: &SubmitRequest) -> ApiResult<Checked> {
    if request.consent != Some(true) {
        return Err(ApiError::invalid(
            ErrorCode::ConsentRequired,
            "consent",
            format!("consent must be true: {}", super::consent::PAN_PURPOSE),
        ));
    }
    let name_on_pan = check_name(&request.name_on_pan)?;
    let Some(raw_gstin) = &request.gstin else {
        return Ok(Checked { holder: Holder::Person, pan: Pan::parse(&request.pan)?, gstin: None, name_on_pan });
    };
    let gstin = Gstin::parse(raw_gstin)?;
    let pan = Pan::parse_any_holder(&request.pan)?;
    // The PAN is the business's own (then it must be the one inside the GSTIN) or that of the person
    // acting for it (a proprietor's is the one inside; a director's or a partner's is their own).
    if !pan.is_individual() && gstin.pan() != pan.as_str() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidGstin,
            "gstin",
            "a business's own PAN must be the one inside the gstin (its characters 3 to 12); a person acting for it gives their own PAN",
        ));
    }
    Ok(Checked { holder: Holder::Business, pan, gstin: Some(gstin), name_on_pan })
}

pub(super) fn already_verified() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::KycAlreadyVerified,
        message: "KYC is already verified and cannot be changed".into(),
        param: None,
    }
}

/// The answer of a failed verification, whatever failed: the reason names what to fix, and a PAN that
/// backs another account reads exactly like a name that does not match ([`steps::NOT_MATCHING`]).
pub(super) fn not_verifiable(reason: &str) -> ApiError {
    ApiError::Conflict { code: ErrorCode::KycNotVerifiable, message: reason.to_owned(), param: None }
}

/// Validates and stores a submission, then asks the provider. At most [`MAX_SUBMISSIONS`] per account in
/// [`SUBMISSION_WINDOW_DAYS`], refusals included; a failed verification answers 409 `kyc_not_verifiable`
/// (and stays readable with `GET /v1/kyc`); a provider that does not answer leaves it `pending`.
pub async fn submit(ctx: &KycContext<'_>, user_id: &str, request: SubmitRequest) -> ApiResult<KycRecord> {
    let checked = check(&request)?;
    let store = ctx.ports.store();
    let account = open_account(store, user_id).await?;
    let previous = store.kyc_record(user_id).await?;
    if previous.as_ref().is_some_and(|p| p.status == KycStatus::Verified) {
        return Err(already_verified());
    }
    // Counted before anything is checked against the provider or other accounts: neither is an oracle
    // one can ask more than the limit.
    let now = ctx.ports.now();
    let window_end = (now + chrono::Duration::days(SUBMISSION_WINDOW_DAYS)).timestamp();
    let window = submissions_pk(user_id);
    let counted =
        crate::auth::reserve_in_window(store, &window, MAX_SUBMISSIONS as u32, window_end, now.timestamp()).await?;
    let crate::auth::Reservation::Reserved { window: slot } = counted else {
        return Err(ApiError::Conflict {
            code: ErrorCode::KycSubmissionLimit,
            message: format!(
                "at most {MAX_SUBMISSIONS} KYC submissions are accepted per account in {SUBMISSION_WINDOW_DAYS} days; write to the grievance officer (GET /v1/privacy)"
            ),
            param: None,
        });
    };
    let result = store_and_check(ctx, &account, checked, previous).await;
    // Only answers about the details count; our own failure, or the conflict of a double click, gives it back.
    let counts = match &result {
        Ok(_) => true,
        Err(e) => e.error_code() == ErrorCode::KycNotVerifiable,
    };
    if !counts && let Err(e) = crate::auth::release_in_window(store, &window, &slot).await {
        tracing::warn!(%user_id, error = %e, "a KYC submission slot was not given back");
    }
    let record = result?;
    match record.status {
        KycStatus::Rejected => Err(not_verifiable(record.rejection_reason.as_deref().unwrap_or(steps::NOT_MATCHING))),
        _ => Ok(record),
    }
}

async fn store_and_check(
    ctx: &KycContext<'_>,
    account: &Account,
    checked: Checked,
    previous: Option<KycRecord>,
) -> ApiResult<KycRecord> {
    let store = ctx.ports.store();
    let now = ctx.ports.now();
    let fingerprinter = ctx.keys.fingerprinter()?;
    let pan_fingerprint = fingerprinter.fingerprint("pan", checked.pan.as_str()).await?;
    let gstin = gstin_step(fingerprinter, checked.gstin.as_ref(), &checked.pan).await?;
    let (pan_ref, sealed) = seal_pan(ctx, &account.id, &checked.pan, now).await?;
    let record = KycRecord {
        user_id: account.id.clone(),
        status: KycStatus::Pending,
        holder: checked.holder,
        name_on_pan: checked.name_on_pan,
        pan_masked: checked.pan.masked(),
        pan_ref: pan_ref.clone(),
        pan_fingerprint,
        subject: format!("ifx{}", &random_suffix()[..16]),
        pan: PanStep { status: StepStatus::Pending, ..PanStep::default() },
        aadhaar: super::AadhaarStep::default(),
        gstin,
        aadhaar_masked: None,
        aadhaar_ref: None,
        aadhaar_fingerprint: None,
        legacy_aadhaar_erased_at: None,
        operator_approved: false,
        submitted_at: now,
        verified_at: None,
        rejection_reason: None,
        decided_by: None,
        decided_at: None,
        revision: previous.as_ref().map_or(1, |p| p.revision + 1),
    };
    let mut write = RecordWrite::new(&record, previous.as_ref());
    write.vault.push((pan_ref, sealed));
    if let Some(previous) = &previous {
        write.drop_vault.push(previous.pan_ref.clone());
        write.drop_vault.extend(previous.aadhaar_ref.clone());
        write.releases = held_claims(store, &account.id, previous).await?;
        write.close_session = previous.aadhaar.verification_id.clone();
    }
    write.consents = consents_for(&record, ctx.provider.name());
    match store.save_kyc(&write).await {
        Ok(()) => {}
        Err(WriteConflict::Store(e)) => return Err(e.into()),
        Err(WriteConflict::Conflict) => return Err(submission_conflict(store, &account.id).await?),
    }
    ask_provider(ctx, record, checked.pan.as_str(), account.date_of_birth).await
}

/// The GSTIN step of a business's submission, waiting for the provider.
async fn gstin_step(
    fingerprinter: &vault::Fingerprinter,
    gstin: Option<&Gstin>,
    pan: &Pan,
) -> ApiResult<Option<GstinStep>> {
    let Some(gstin) = gstin else { return Ok(None) };
    Ok(Some(GstinStep {
        gstin: gstin.as_str().to_owned(),
        fingerprint: fingerprinter.fingerprint("gstin", gstin.as_str()).await?,
        status: StepStatus::Pending,
        answer: None,
        proprietor: pan.is_individual() && gstin.pan() == pan.as_str(),
    }))
}

/// The consent records of a submission's checks (a millisecond apart, so each has its own key).
fn consents_for(record: &KycRecord, provider: &str) -> Vec<ConsentRecord> {
    let checks = if record.gstin.is_some() { vec![CheckKind::Gstin, CheckKind::Pan] } else { vec![CheckKind::Pan] };
    let at = |i: usize| record.submitted_at + chrono::Duration::milliseconds(i as i64);
    checks
        .into_iter()
        .enumerate()
        .map(|(i, kind)| ConsentRecord::new(&record.user_id, kind, provider, &record.subject, at(i)))
        .collect()
}

/// Seals the PAN under a fresh data key: its vault reference and entry.
async fn seal_pan(
    ctx: &KycContext<'_>,
    user_id: &str,
    pan: &Pan,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<(String, VaultEntry)> {
    let data_key = ctx.keys.data_keys.generate().await?;
    let aad = format!("{user_id}:{}", DocumentKind::Pan.as_str());
    let sealed = vault::seal(&data_key, ctx.keys.data_keys.provider(), pan.as_str().as_bytes(), aad.as_bytes())?;
    let entry = VaultEntry { user_id: user_id.to_owned(), kind: DocumentKind::Pan, sealed, created_at: now };
    Ok((format!("vref_{}", random_suffix()), entry))
}

/// Asks the provider the checks still pending and writes what they decided. An unanswered check stays
/// pending (never passed without an answer); the jobs ask again ([`super::retry_pending_checks`]).
pub(super) async fn ask_provider(
    ctx: &KycContext<'_>,
    mut record: KycRecord,
    pan: &str,
    born: NaiveDate,
) -> ApiResult<KycRecord> {
    let previous = record.clone();
    record.pan.tries += 1;
    record.pan.checked_at = Some(ctx.ports.now());
    // Unique per attempt (the provider refuses an id twice), even when an attempt's write was lost.
    let verification_id = format!("{}-p{}{}", record.subject, record.pan.tries, &random_suffix()[..6]);
    match answers(ctx, &mut record, &verification_id, pan, born).await {
        Ok(()) => {}
        Err(ProviderError::Unavailable(why)) => {
            tracing::warn!(user_id = %record.user_id, error = %why, "KYC provider unavailable; the check stays pending");
        }
        Err(ProviderError::Refused(why)) => {
            tracing::error!(alert = crate::alerts::KYC_PROVIDER_REFUSED, user_id = %record.user_id, error = %why, "the KYC provider refused a check; it stays pending until the configuration is fixed");
        }
    }
    // Asked whatever the answers were, so that a PAN another account verified costs the same time.
    let elsewhere = claimed_elsewhere(ctx.ports.store(), &record).await?;
    if elsewhere && record.pan.status != StepStatus::Pending {
        record.pan.status = StepStatus::Failed;
        record.rejection_reason.get_or_insert_with(|| steps::NOT_MATCHING.to_owned());
    }
    // A failed check keeps no evidence: the registered name of a PAN that is not the customer's, or of
    // one another account verified, is nobody's business here.
    if record.pan.status == StepStatus::Failed {
        record.pan.answer = None;
    }
    settle(ctx, &mut record);
    save_after_answer(ctx, &record, &previous).await
}

/// The GSTIN (first, for a business) and PAN answers, applied to the record.
async fn answers(
    ctx: &KycContext<'_>,
    record: &mut KycRecord,
    verification_id: &str,
    pan: &str,
    born: NaiveDate,
) -> Result<(), ProviderError> {
    if let Some(gstin) = record.gstin.as_mut().filter(|g| g.status == StepStatus::Pending) {
        let answer = ctx.provider.check_gstin(verification_id, &gstin.gstin).await?;
        let judged = judge_gstin(&answer);
        gstin.status = judged.status;
        gstin.answer = Some(answer);
        note_failure(record, &judged);
    }
    if record.pan.status != StepStatus::Pending {
        return Ok(());
    }
    let individual = pan.as_bytes().get(3) == Some(&b'P');
    let query = PanQuery { verification_id, pan, name: &record.name_on_pan, date_of_birth: individual.then_some(born) };
    let answer = ctx.provider.check_pan(query).await?;
    let judged = judge_pan(&answer);
    record.pan = PanStep { status: judged.status, answer: Some(answer), ..record.pan.clone() };
    note_failure(record, &judged);
    Ok(())
}

fn note_failure(record: &mut KycRecord, judged: &Judgement) {
    if let Some(reason) = &judged.reason {
        record.rejection_reason.get_or_insert_with(|| reason.clone());
    }
}

/// The overall status the steps now add up to, and the time of a verification.
pub(super) fn settle(ctx: &KycContext<'_>, record: &mut KycRecord) {
    record.status = steps::overall(record, ctx.ports.config().kyc_mode);
    if record.status == KycStatus::Verified && record.verified_at.is_none() {
        record.verified_at = Some(ctx.ports.now());
    }
    if record.status != KycStatus::Rejected {
        record.rejection_reason = None;
    }
    record.revision += 1;
}

/// Writes a record after an answer and returns what was stored. Losing to a verification of the same PAN
/// elsewhere (the claim's condition) turns it into the same failure as any other mismatch.
pub(super) async fn save_after_answer(
    ctx: &KycContext<'_>,
    record: &KycRecord,
    previous: &KycRecord,
) -> ApiResult<KycRecord> {
    let store = ctx.ports.store();
    let mut write = RecordWrite::new(record, Some(previous));
    write.close_session =
        record.aadhaar.verification_id.clone().filter(|_| record.aadhaar.status != StepStatus::Pending);
    // A record that fails keeps no claim: a re-check after a correction may fail on a PAN it had verified.
    if record.status == KycStatus::Rejected {
        write.releases = super::store::held_claims(store, &record.user_id, record).await?;
    }
    match store.save_kyc(&write).await {
        Ok(()) => Ok(record.clone()),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) if claimed_elsewhere(store, record).await? => {
            let mut failed = record.clone();
            failed.pan.status = StepStatus::Failed;
            failed.pan.answer = None;
            failed.rejection_reason = Some(steps::NOT_MATCHING.to_owned());
            failed.status = KycStatus::Rejected;
            failed.verified_at = None;
            let mut write = RecordWrite::new(&failed, Some(previous));
            write.close_session = failed.aadhaar.verification_id.clone();
            store.save_kyc(&write).await.map_err(|_| conflict_error())?;
            Ok(failed)
        }
        Err(WriteConflict::Conflict) => Err(submission_conflict(store, &record.user_id).await?),
    }
}

fn conflict_error() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::KycSubmissionConflict,
        message: "another KYC change for this account happened at the same time; retry".into(),
        param: None,
    }
}

/// Why a write lost: a verification of this account, or any other concurrent change.
async fn submission_conflict(store: &dyn crate::store::ItemStore, user_id: &str) -> ApiResult<ApiError> {
    if store.kyc_record(user_id).await?.is_some_and(|r| r.status == KycStatus::Verified) {
        return Ok(already_verified());
    }
    Ok(conflict_error())
}
