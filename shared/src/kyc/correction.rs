//! A correction that touches KYC (DPDP Act s.12: personal data corrected on request): when an operator
//! corrects the name on the PAN or the account's date of birth on the person's evidence, the PAN is checked
//! again with the provider under the consent given at submission, since the verification answered for the
//! old details; the customer shares from DigiLocker again, for the same reason. The record waits for the
//! provider meanwhile (its status pending) and the jobs ask ([`super::retry_pending_checks`]), reading the
//! account's date of birth as it now is. The record, the profile and the correction's answer commit together,
//! only while the account is open.

use chrono::NaiveDate;
use serde_json::json;

use super::steps::{self, StepStatus};
use super::store::{KycStore, RecordWrite, WriteConflict};
use super::{Decision, DecisionRecord, Holder, KycRecord};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ports::Ports;
use crate::store::WriteOp;

/// What an operator corrects, on what evidence, and the writes that answer the request for it.
pub struct KycCorrection<'a> {
    pub user_id: &'a str,
    pub date_of_birth: Option<NaiveDate>,
    pub name_on_pan: Option<&'a str>,
    pub evidence: &'a str,
    pub operator: &'a str,
    /// Committed with the record, or not at all.
    pub with: Vec<WriteOp>,
}

/// Whether a correction changes what the KYC checks compared: the name always; the date of birth for a
/// person (a business's PAN has no date of birth to match, and no Aadhaar step).
pub fn touches(record: &KycRecord, correction: &KycCorrection<'_>) -> bool {
    correction.name_on_pan.is_some() || (correction.date_of_birth.is_some() && record.holder == Holder::Person)
}

/// Writes the correction with the record set to be checked again, its decision (the evidence as its
/// reason) among the operators' decisions. The record's earlier approval no longer stands: what is checked
/// again is decided again.
pub async fn recheck_after_correction(
    ports: &Ports,
    previous: &KycRecord,
    correction: KycCorrection<'_>,
) -> ApiResult<KycRecord> {
    let now = ports.now();
    let mut record = previous.clone();
    if let Some(name) = correction.name_on_pan {
        record.name_on_pan = name.to_owned();
    }
    if record.holder == Holder::Person && record.aadhaar.status != StepStatus::NotStarted {
        record.aadhaar.status = StepStatus::NotStarted;
        record.aadhaar.name_for_review = None;
    }
    record.pan.status = StepStatus::Pending;
    record.pan.answer = None;
    record.pan.requested_at = Some(now);
    record.operator_approved = false;
    record.rejection_reason = None;
    record.verified_at = None;
    record.status = steps::overall(&record, ports.config().kyc_mode);
    record.revision += 1;
    let audit = DecisionRecord {
        user_id: correction.user_id.to_owned(),
        decision: Decision::Correct,
        document: None,
        reason: Some(correction.evidence.to_owned()),
        decided_by: correction.operator.to_owned(),
        at: now,
    };
    let mut write = RecordWrite::new(&record, Some(previous));
    write.audit = Some(audit);
    write.close_session = previous.aadhaar.verification_id.clone();
    if let Some(born) = correction.date_of_birth {
        write.profile_changes.push(("date_of_birth", json!(born.to_string())));
    }
    write.with = correction.with;
    match ports.store().save_kyc(&write).await {
        Ok(()) => Ok(record),
        Err(WriteConflict::Store(e)) => Err(e.into()),
        Err(WriteConflict::Conflict) => Err(ApiError::Conflict {
            code: ErrorCode::KycSubmissionConflict,
            message: "the KYC record, the request or the account changed meanwhile; read them and correct again".into(),
            param: None,
        }),
    }
}
