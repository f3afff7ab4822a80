//! Corrections an operator makes on the person's evidence (DPDP Act s.12): the date of birth, which the
//! dashboard cannot change (it decides who may hold an account and what the KYC checks compare), and the name
//! on the PAN, which a verification answered for. Each answers an open correction request (made in the
//! dashboard or recorded from an e-mail), so the register holds who asked, the evidence and the answer; where
//! the change touches KYC, the PAN is checked again with the provider (`kyc::recheck_after_correction`).

use serde::{Deserialize, Serialize};

use super::PrivacyContext;
use super::register::{self, RegisterEntry};
use super::requests::{Recorded, RequestKind, RequestStatus};
use crate::accounts::{AccountStatus, AccountStore, KycStatus, check_date_of_birth, printable, today_in_india};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kyc::KycStore;
use crate::notifications::enqueue;
use crate::store::WriteOp;

/// The name on a PAN card, as submissions take it.
const MAX_NAME_ON_PAN_CHARS: usize = 100;

/// What `POST /v1/admin/accounts/{user_id}/corrections` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceCorrection {
    /// The open correction request this answers (`prq_…`).
    pub request_id: String,
    #[serde(default)]
    pub date_of_birth: Option<String>,
    #[serde(default)]
    pub name_on_pan: Option<String>,
    /// What the person showed (a birth certificate, the PAN card), as the operator describes it.
    pub evidence: String,
}

/// What a correction did.
#[derive(Debug, Clone, Serialize)]
pub struct Corrected {
    pub request: RegisterEntry,
    /// The account's KYC status now (`pending` while the PAN is checked again); `None` without KYC.
    pub kyc_status: Option<KycStatus>,
    pub kyc_recheck: bool,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidPrivacyRequest, field, message)
}

/// A correction's fields, checked: the account (open), the evidence and what changes.
struct Checked {
    account: crate::accounts::Account,
    evidence: String,
    date_of_birth: Option<chrono::NaiveDate>,
    name_on_pan: Option<String>,
    kyc: Option<crate::kyc::KycRecord>,
}

async fn check(ctx: &PrivacyContext, user_id: &str, body: &EvidenceCorrection) -> ApiResult<Checked> {
    let evidence = register::text(&body.evidence, "evidence", register::MAX_NOTE_CHARS)?;
    if body.date_of_birth.is_none() && body.name_on_pan.is_none() {
        return Err(invalid("date_of_birth", "date_of_birth or name_on_pan is required: what is corrected"));
    }
    let store = ctx.ports.store.as_ref();
    let account = store.account(user_id).await?.filter(|a| a.status == AccountStatus::Active).ok_or_else(|| {
        ApiError::NotFound { code: ErrorCode::AccountNotFound, message: format!("no open account {user_id}") }
    })?;
    let today = today_in_india(ctx.ports.clock.now());
    let date_of_birth = body.date_of_birth.as_deref().map(|raw| check_date_of_birth(raw, today)).transpose()?;
    let name_on_pan = match body.name_on_pan.as_deref() {
        Some(raw) => Some(printable(raw, MAX_NAME_ON_PAN_CHARS).map(str::to_owned).ok_or_else(|| {
            let message = "name_on_pan must be 1 to 100 printable characters";
            ApiError::invalid(ErrorCode::InvalidNameOnPan, "name_on_pan", message)
        })?),
        None => None,
    };
    let kyc = store.kyc_record(user_id).await?;
    if name_on_pan.is_some() && kyc.is_none() {
        return Err(ApiError::NotFound {
            code: ErrorCode::KycNotFound,
            message: "the account has no KYC record".into(),
        });
    }
    Ok(Checked { account, evidence, date_of_birth, name_on_pan, kyc })
}

/// The account's open correction request `request_id`; any other is not found.
async fn correction_request(ctx: &PrivacyContext, user_id: &str, request_id: &str) -> ApiResult<Recorded> {
    let (_, recorded, _) = register::open_request(ctx.ports.store.as_ref(), request_id).await?;
    if recorded.user_id != user_id || recorded.request.kind != RequestKind::Correction {
        return Err(ApiError::NotFound {
            code: ErrorCode::PrivacyRequestNotFound,
            message: format!("no open correction request {request_id} of this account"),
        });
    }
    Ok(recorded)
}

/// `POST /v1/admin/accounts/{user_id}/corrections`: corrects on evidence, checks the PAN again where KYC
/// answered for the old details, and answers the request (its owner told by e-mail).
pub async fn correct_on_evidence(
    ctx: &PrivacyContext,
    operator: &str,
    user_id: &str,
    body: EvidenceCorrection,
) -> ApiResult<Corrected> {
    let checked = check(ctx, user_id, &body).await?;
    let mut recorded = correction_request(ctx, user_id, &body.request_id).await?;
    let steps = recorded.request.timeline.len();
    let now = ctx.ports.clock.now();
    register::push_step(&mut recorded, operator, audit_note(&checked), now)?;
    let changed = match (checked.date_of_birth, &checked.name_on_pan) {
        (Some(_), Some(_)) => "the date of birth and the name on the PAN",
        (Some(_), None) => "the date of birth",
        _ => "the name on the PAN",
    };
    let correction = crate::kyc::KycCorrection {
        user_id,
        date_of_birth: checked.date_of_birth,
        name_on_pan: checked.name_on_pan.as_deref(),
        evidence: &checked.evidence,
        operator,
        with: Vec::new(),
    };
    let rechecks = checked.kyc.as_ref().filter(|record| crate::kyc::correction_touches(record, &correction));
    let recheck =
        if rechecks.is_some() { "; your PAN is being checked again with the Income Tax Department" } else { "" };
    recorded.finish(RequestStatus::Completed, format!("{changed} corrected on the evidence you gave{recheck}"), now);
    // The answer commits with the correction, or nothing does.
    let answer = vec![
        recorded.put_if_unchanged(steps)?,
        register::open_delete(&body.request_id),
        enqueue(&register::answer_mail(&recorded, now))?,
    ];
    let kyc_status = match rechecks {
        Some(previous) => {
            let correction = crate::kyc::KycCorrection { with: answer, ..correction };
            Some(crate::kyc::recheck_after_correction(&ctx.ports, previous, correction).await?.status)
        }
        None => {
            let mut ops = answer;
            if let Some(born) = checked.date_of_birth {
                let profile = crate::accounts::profile_update(&checked.account).set("date_of_birth", born.to_string());
                ops.push(WriteOp::Update(profile));
            }
            ctx.ports.store.transact(ops).await.map_err(answered_meanwhile)?;
            checked.kyc.as_ref().map(|record| record.status)
        }
    };
    tracing::info!(%operator, %user_id, request_id = %body.request_id, kyc_recheck = rechecks.is_some(), "correction made on evidence");
    Ok(Corrected {
        request: RegisterEntry::of(user_id, recorded.request, now),
        kyc_status,
        kyc_recheck: rechecks.is_some(),
    })
}

/// The step a correction records: the evidence, and each value as it was and as it is now.
fn audit_note(checked: &Checked) -> String {
    let mut note = format!("evidence: {}", checked.evidence);
    if let Some(born) = checked.date_of_birth {
        note.push_str(&format!("; date of birth {} -> {born}", checked.account.date_of_birth));
    }
    if let (Some(name), Some(record)) = (&checked.name_on_pan, &checked.kyc) {
        note.push_str(&format!("; name on the PAN {} -> {name}", record.name_on_pan));
    }
    note
}

fn answered_meanwhile(error: crate::store::StoreError) -> ApiError {
    match error {
        crate::store::StoreError::ConditionFailed => ApiError::Conflict {
            code: ErrorCode::PrivacyRequestAnswered,
            message: "the request was answered, or the account changed, meanwhile; read them again".into(),
            param: None,
        },
        other => other.into(),
    }
}
