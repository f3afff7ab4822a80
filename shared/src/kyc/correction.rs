//! A correction that touches KYC (DPDP Act s.12: personal data corrected on request): when an operator
//! corrects the name on the PAN or the account's date of birth on the person's evidence, the PAN is checked
//! again with the provider under the consent given at submission, since the verification answered for the
//! old details. The record waits for the provider meanwhile (its status pending) and the jobs ask
//! ([`super::retry_pending_checks`]), reading the account's date of birth as it now is.

use super::steps::{self, StepStatus};
use super::store::{KycStore, RecordWrite, WriteConflict};
use super::{Decision, DecisionRecord, KycRecord};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ports::Ports;

/// Sets the record's PAN check to be asked again (with `name_on_pan` when the name is what was corrected)
/// and records the operator's correction and its evidence with the decisions. `None` when the account has
/// no KYC record: nothing to check again.
pub async fn recheck_after_correction(
    ports: &Ports,
    user_id: &str,
    name_on_pan: Option<&str>,
    evidence: &str,
    operator: &str,
) -> ApiResult<Option<KycRecord>> {
    let store = ports.store();
    let Some(previous) = store.kyc_record(user_id).await? else { return Ok(None) };
    let now = ports.now();
    let mut record = previous.clone();
    if let Some(name) = name_on_pan {
        record.name_on_pan = name.to_owned();
    }
    // An Aadhaar step that failed (its date of birth did not match) starts over: the customer shares from
    // DigiLocker again, compared with the corrected details.
    if record.aadhaar.status == StepStatus::Failed {
        record.aadhaar.status = StepStatus::NotStarted;
    }
    record.pan.status = StepStatus::Pending;
    record.pan.answer = None;
    record.pan.requested_at = Some(now);
    record.rejection_reason = None;
    record.verified_at = None;
    record.status = steps::overall(&record, ports.config().kyc_mode);
    record.revision += 1;
    let audit = DecisionRecord {
        user_id: user_id.to_owned(),
        decision: Decision::Correct,
        document: None,
        reason: Some(evidence.to_owned()),
        decided_by: operator.to_owned(),
        at: now,
    };
    let mut write = RecordWrite::new(&record, Some(&previous));
    write.audit = Some(audit);
    match store.save_kyc(&write).await {
        Ok(()) => Ok(Some(record)),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) => Err(ApiError::Conflict {
            code: ErrorCode::KycSubmissionConflict,
            message: "the KYC record changed meanwhile; read it and correct again".into(),
            param: None,
        }),
    }
}
