//! A user's submission (`POST /v1/kyc`): the numbers checked, sealed in the vault, and verified at once or
//! queued for an operator.

use crate::ports::Ports;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::documents::{Aadhaar, Pan};
use super::store::{KycStore, Submission, WriteConflict};
use super::{
    DocumentKind, KycKeys, KycRecord, MAX_NAME_CHARS, MAX_SUBMISSIONS, SUBMISSION_WINDOW_DAYS, VaultEntry, vault,
};
use crate::accounts::{AccountStore, KycStatus};
use crate::config::KycMode;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::secrets::random_suffix;
use crate::store::schema::kyc_submissions_pk as submissions_pk;
use crate::store::{ItemStore, StoreResult};

/// The body of `POST /v1/kyc`.
#[derive(Debug, Deserialize)]
pub struct SubmitRequest {
    pub pan: String,
    pub aadhaar: String,
    pub name_on_pan: String,
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

pub(super) fn already_verified() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::KycAlreadyVerified,
        message: "KYC is already verified and cannot be changed".into(),
        param: None,
    }
}

/// The answer when a number already backs another account. It names neither the document nor whether it
/// is registered: the same words whatever the reason verification failed.
fn not_verifiable() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::KycNotVerifiable,
        message: "these KYC details cannot be verified for this account; check them, or write to the grievance officer (GET /v1/privacy)".into(),
        param: None,
    }
}

/// Claims the account holds on the numbers of `record` (to release when they stop backing it).
pub(super) async fn held_claims<S: KycStore + ?Sized>(
    store: &S,
    user_id: &str,
    record: &KycRecord,
) -> StoreResult<Vec<String>> {
    let mut held = Vec::new();
    for kind in [DocumentKind::Pan, DocumentKind::Aadhaar] {
        let fingerprint = record.fingerprint(kind);
        if store.claim_holder(fingerprint).await?.as_deref() == Some(user_id) {
            held.push(fingerprint.to_owned());
        }
    }
    Ok(held)
}

/// Whether another account holds a claim on any of these fingerprints.
pub(super) async fn claimed_elsewhere<S: KycStore + ?Sized>(
    store: &S,
    user_id: &str,
    fingerprints: &[&str],
) -> StoreResult<bool> {
    for fingerprint in fingerprints {
        if store.claim_holder(fingerprint).await?.is_some_and(|holder| holder != user_id) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Validates and stores a KYC submission. In `auto` mode a valid submission whose numbers back no other
/// account is verified at once (its claims written in the same transaction); in `manual` mode it waits
/// (`pending`, blocking nobody) for an operator, whose approval decides uniqueness. At most
/// [`MAX_SUBMISSIONS`] per account in [`SUBMISSION_WINDOW_DAYS`]. Only with a verified e-mail address.
pub async fn submit(ports: &Ports, keys: &KycKeys, user_id: &str, request: SubmitRequest) -> ApiResult<KycRecord> {
    let store = ports.store();
    let clock = ports.clock();
    let pan = Pan::parse(&request.pan)?;
    let aadhaar = Aadhaar::parse(&request.aadhaar)?;
    let name_on_pan = check_name(&request.name_on_pan)?;

    // Identity goes only on a proven address: an unverified account (maybe someone else's address,
    // squatted) cannot attach its KYC to it for the address's owner to inherit.
    let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
    let account =
        account.ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"))?;
    crate::verification::require_verified_email(&account)?;
    let now = clock.now();
    let previous = store.kyc_record(user_id).await?;
    if previous.as_ref().is_some_and(|p| p.status == KycStatus::Verified) {
        return Err(already_verified());
    }
    // Counted before anything is checked against other accounts, refusals included: the uniqueness rule
    // is not an oracle one can ask more than the limit (and each question costs two KMS calls).
    let window_end = (now + chrono::Duration::days(SUBMISSION_WINDOW_DAYS)).timestamp();
    let limit = MAX_SUBMISSIONS as u32;
    let window = submissions_pk(user_id);
    let counted = crate::auth::reserve_in_window(store, &window, limit, window_end, now.timestamp()).await?;
    let crate::auth::Reservation::Reserved { window: slot } = counted else {
        return Err(ApiError::Conflict {
            code: ErrorCode::KycSubmissionLimit,
            message: format!(
                "at most {MAX_SUBMISSIONS} KYC submissions are accepted per account in {SUBMISSION_WINDOW_DAYS} days; write to the grievance officer (GET /v1/privacy)"
            ),
            param: None,
        });
    };
    let validated = Validated { pan, aadhaar, name_on_pan, previous, now };
    let result = store_submission(ports, keys, user_id, validated).await;
    // Only answers about the numbers count; an outage, or the conflict of a double click, gives it back.
    let counts = match &result {
        Ok(_) => true,
        Err(e) => e.error_code() == ErrorCode::KycNotVerifiable,
    };
    if !counts && let Err(e) = crate::auth::release_in_window(store, &window, &slot).await {
        tracing::warn!(%user_id, error = %e, "a KYC submission slot was not given back");
    }
    result
}

/// A submission that passed validation and was counted.
struct Validated {
    pan: Pan,
    aadhaar: Aadhaar,
    name_on_pan: String,
    previous: Option<KycRecord>,
    now: DateTime<Utc>,
}

async fn store_submission(ports: &Ports, keys: &KycKeys, user_id: &str, validated: Validated) -> ApiResult<KycRecord> {
    let store = ports.store();
    let config = ports.config();
    let Validated { pan, aadhaar, name_on_pan, previous, now } = validated;
    let fingerprinter = keys.fingerprinter()?;
    let fingerprints = [
        fingerprinter.fingerprint("pan", pan.as_str()).await?,
        fingerprinter.fingerprint("aadhaar", aadhaar.as_str()).await?,
    ];
    let auto = config.kyc_mode == KycMode::Auto;
    // Answer before spending a data key; the transaction below enforces it race-free anyway.
    if auto && claimed_elsewhere(store, user_id, &[&fingerprints[0], &fingerprints[1]]).await? {
        return Err(not_verifiable());
    }

    let vault_entries = seal_numbers(keys, user_id, &pan, &aadhaar, now).await?;
    let (status, verified_at) = if auto { (KycStatus::Verified, Some(now)) } else { (KycStatus::Pending, None) };
    let [pan_fingerprint, aadhaar_fingerprint] = fingerprints;
    let record = KycRecord {
        user_id: user_id.to_owned(),
        status,
        name_on_pan,
        pan_masked: pan.masked(),
        aadhaar_masked: aadhaar.masked(),
        pan_ref: vault_entries[0].0.clone(),
        aadhaar_ref: vault_entries[1].0.clone(),
        pan_fingerprint,
        aadhaar_fingerprint,
        submitted_at: now,
        verified_at,
        rejection_reason: None,
        decided_by: None,
        decided_at: None,
        revision: previous.as_ref().map_or(1, |p| p.revision + 1),
    };
    // Claims an earlier submission left (older data) go unless this one, verified, claims them again.
    let mut releases = match &previous {
        Some(previous) => held_claims(store, user_id, previous).await?,
        None => Vec::new(),
    };
    if status == KycStatus::Verified {
        releases.retain(|f| *f != record.pan_fingerprint && *f != record.aadhaar_fingerprint);
    }
    let submission = Submission { record, vault: vault_entries, releases };
    match store.save_submission(&submission, previous.as_ref()).await {
        Ok(()) => Ok(submission.record),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) => Err(submission_conflict(store, &submission.record, auto).await?),
    }
}

/// Seals both numbers under one fresh data key: the PAN's vault entry first, then the Aadhaar's.
async fn seal_numbers(
    keys: &KycKeys,
    user_id: &str,
    pan: &Pan,
    aadhaar: &Aadhaar,
    now: DateTime<Utc>,
) -> ApiResult<Vec<(String, VaultEntry)>> {
    let data_key = keys.data_keys.generate().await?;
    let mut entries = Vec::new();
    for (kind, number) in [(DocumentKind::Pan, pan.as_str()), (DocumentKind::Aadhaar, aadhaar.as_str())] {
        let aad = format!("{user_id}:{}", kind.as_str());
        let sealed = vault::seal(&data_key, keys.data_keys.provider(), number.as_bytes(), aad.as_bytes())?;
        let entry = VaultEntry { user_id: user_id.to_owned(), kind, sealed, created_at: now };
        entries.push((format!("vref_{}", random_suffix()), entry));
    }
    Ok(entries)
}

/// Why a submission's transaction lost: a number another account verified meanwhile, a verification of
/// this account, or any other concurrent change.
async fn submission_conflict<S: ItemStore + ?Sized>(store: &S, record: &KycRecord, auto: bool) -> ApiResult<ApiError> {
    let user_id = record.user_id.as_str();
    if auto && claimed_elsewhere(store, user_id, &[&record.pan_fingerprint, &record.aadhaar_fingerprint]).await? {
        return Ok(not_verifiable());
    }
    if store.kyc_record(user_id).await?.is_some_and(|r| r.status == KycStatus::Verified) {
        return Ok(already_verified());
    }
    Ok(ApiError::Conflict {
        code: ErrorCode::KycSubmissionConflict,
        message: "another KYC change for this account happened at the same time; retry".into(),
        param: None,
    })
}
