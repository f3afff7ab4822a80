//! The steps of a KYC submission, what each provider answer makes of them, and the overall status the
//! steps add up to.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::KycRecord;
use super::provider::{GstinAnswer, NameMatch, PanAnswer, PanRecord};
use crate::accounts::KycStatus;
use crate::config::KycMode;

/// Who verifies: a person (PAN and DigiLocker) or a business (GSTIN and the PAN inside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    #[default]
    Person,
    Business,
}

/// Where one check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    #[default]
    NotStarted,
    /// Waiting for the provider (or, for DigiLocker, for the customer to finish).
    Pending,
    Passed,
    /// An operator decides.
    InReview,
    Failed,
}

/// The PAN check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanStep {
    pub status: StepStatus,
    /// The provider's answer: the evidence an operator sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<PanAnswer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<DateTime<Utc>>,
    /// How many times the provider was asked.
    #[serde(default)]
    pub tries: u32,
    /// When a correction asked for the check again: the jobs keep asking for three days from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
}

/// The DigiLocker step (a person's Aadhaar).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AadhaarStep {
    pub status: StepStatus,
    /// The open (or last) DigiLocker session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// The name DigiLocker gave, kept only while an operator compares it with the PAN's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_for_review: Option<String>,
    /// Why the step has to be done again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// The GSTIN check (a business).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GstinStep {
    pub gstin: String,
    pub fingerprint: String,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<GstinAnswer>,
    /// The PAN checked is an individual's and the one inside the GSTIN: a proprietor, tied to the business
    /// by their own PAN (name and date of birth matched).
    #[serde(default)]
    pub proprietor: bool,
}

impl GstinStep {
    /// The legal name GSTN registered (what tax invoices carry).
    pub fn legal_name(&self) -> Option<&str> {
        self.answer.as_ref().and_then(|a| a.legal_name.as_deref())
    }
}

/// What a step's answer decided: its status and, for a failure, the reason the customer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub status: StepStatus,
    pub reason: Option<String>,
}

impl Judgement {
    fn passed() -> Self {
        Self { status: StepStatus::Passed, reason: None }
    }

    fn failed(reason: &str) -> Self {
        Self { status: StepStatus::Failed, reason: Some(reason.to_owned()) }
    }
}

/// The words of a name mismatch, and of a PAN another account verified: the two answers must not differ
/// (no registration oracle), and the customer can act on them either way.
pub const NOT_MATCHING: &str = "these details do not match the Income Tax Department's record of this PAN for this account; enter the name exactly as printed on your PAN card, or write to the grievance officer (GET /v1/privacy)";
const INVALID_PAN: &str =
    "the Income Tax Department has no record of this PAN; check the number as printed on your PAN card";
const DELETED_PAN: &str =
    "the Income Tax Department lists this PAN as deleted or deactivated; submit the PAN you hold now";
const DOB_MISMATCH: &str = "the date of birth on your account does not match the Income Tax Department's record of this PAN; correct your date of birth (write to the grievance officer, GET /v1/privacy) or check the PAN";
const UNDERAGE: &str = "the records give a date of birth under 18 years: InferexAI serves adults only, so this account cannot pay or call the API";

/// A PAN answer judged: a clean match passes, a partial name match goes to an operator, the rest fail
/// with a reason naming what to fix.
pub fn judge_pan(answer: &PanAnswer) -> Judgement {
    match answer.record {
        PanRecord::Invalid => return Judgement::failed(INVALID_PAN),
        PanRecord::Deleted => return Judgement::failed(DELETED_PAN),
        PanRecord::Valid => {}
    }
    if answer.date_of_birth_match == Some(false) {
        return Judgement::failed(DOB_MISMATCH);
    }
    match answer.name_match {
        NameMatch::Match => Judgement::passed(),
        NameMatch::Partial => Judgement { status: StepStatus::InReview, reason: None },
        NameMatch::Mismatch => Judgement::failed(NOT_MATCHING),
    }
}

/// A GSTIN answer judged: only an active registration passes.
pub fn judge_gstin(answer: &GstinAnswer) -> Judgement {
    if !answer.valid {
        return Judgement::failed("GSTN has no registration with this GSTIN; check the number");
    }
    if !answer.active() {
        return Judgement::failed(
            "this GSTIN's registration is not active (cancelled or suspended); a business verifies with an active GSTIN",
        );
    }
    Judgement::passed()
}

/// Names compared as people write them: letters only, case and spacing ignored.
pub fn same_name(a: &str, b: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).map(str::to_uppercase).collect()
    };
    let (a, b) = (words(a), words(b));
    !a.is_empty() && a == b
}

/// The DigiLocker details judged against the account: the date of birth must be the account's (and an
/// adult's), the name the PAN's (else an operator compares them).
pub fn judge_aadhaar(
    born_declared: NaiveDate,
    born_in_aadhaar: Option<NaiveDate>,
    names_agree: bool,
    today: NaiveDate,
) -> Judgement {
    let Some(born) = born_in_aadhaar else {
        return Judgement { status: StepStatus::InReview, reason: None };
    };
    if !super::adult_on(born, today) {
        return Judgement::failed(UNDERAGE);
    }
    if born != born_declared {
        return Judgement::failed(
            "the date of birth in your Aadhaar (from DigiLocker) does not match your account's; write to the grievance officer (GET /v1/privacy)",
        );
    }
    if names_agree { Judgement::passed() } else { Judgement { status: StepStatus::InReview, reason: None } }
}

/// A business the customer is not shown to be: its GSTIN, legal name and own PAN are public, and a person's
/// PAN proves who they are, not that they act for it; so a person decides, unless the customer is its
/// proprietor (their own PAN, name and date of birth matched, is the one inside the GSTIN).
fn acts_for_an_entity(record: &KycRecord) -> bool {
    record.holder == Holder::Business && !record.gstin.as_ref().is_some_and(|g| g.proprietor)
}

/// The overall status the steps add up to. A failed step rejects; a step waiting for the provider keeps it
/// pending; a step an operator decides (or, in manual mode, a complete submission no operator approved
/// yet, or a business acting for an entity) puts it in review; a person is verified when the PAN and
/// DigiLocker have passed, a business when the GSTIN and the PAN have.
pub fn overall(record: &KycRecord, mode: KycMode) -> KycStatus {
    let mut steps = vec![record.pan.status];
    match (&record.holder, &record.gstin) {
        (super::Holder::Business, Some(gstin)) => steps.push(gstin.status),
        _ => steps.push(record.aadhaar.status),
    }
    if steps.contains(&StepStatus::Failed) {
        return KycStatus::Rejected;
    }
    if steps.contains(&StepStatus::InReview) {
        return KycStatus::InReview;
    }
    if steps.iter().all(|s| *s == StepStatus::Passed) {
        if !record.operator_approved && (mode == KycMode::Manual || acts_for_an_entity(record)) {
            return KycStatus::InReview;
        }
        return KycStatus::Verified;
    }
    KycStatus::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(record: PanRecord, name_match: NameMatch, dob: Option<bool>) -> PanAnswer {
        PanAnswer {
            record,
            name_match,
            name_match_score: None,
            registered_name: None,
            date_of_birth_match: dob,
            reference_id: "1".into(),
        }
    }

    #[test]
    fn pan_answers_are_judged() {
        use NameMatch::*;
        use PanRecord::*;
        let cases = [
            (answer(Valid, Match, Some(true)), StepStatus::Passed),
            (answer(Valid, Match, None), StepStatus::Passed),
            (answer(Valid, Partial, Some(true)), StepStatus::InReview),
            (answer(Valid, Mismatch, Some(true)), StepStatus::Failed),
            (answer(Valid, Match, Some(false)), StepStatus::Failed),
            (answer(Invalid, Match, Some(true)), StepStatus::Failed),
            (answer(Deleted, Match, Some(true)), StepStatus::Failed),
        ];
        for (answer, expected) in cases {
            assert_eq!(judge_pan(&answer).status, expected, "{answer:?}");
        }
        assert_eq!(judge_pan(&answer(Valid, Mismatch, None)).reason.as_deref(), Some(NOT_MATCHING));
    }

    #[test]
    fn names_compare_as_written() {
        assert!(same_name("Asha  Rao", "ASHA RAO"));
        assert!(same_name("A. K. Rao", "A K RAO"));
        assert!(!same_name("Asha Rao", "Asha R"));
        assert!(!same_name("", ""));
    }

    #[test]
    fn aadhaar_details_are_judged() -> Result<(), String> {
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| e.to_string());
        let today = date("2026-12-06")?;
        let born = date("1990-01-15")?;
        assert_eq!(judge_aadhaar(born, Some(born), true, today).status, StepStatus::Passed);
        assert_eq!(judge_aadhaar(born, Some(born), false, today).status, StepStatus::InReview);
        assert_eq!(judge_aadhaar(born, None, true, today).status, StepStatus::InReview);
        assert_eq!(judge_aadhaar(born, Some(date("1990-01-16")?), true, today).status, StepStatus::Failed);
        let minor = judge_aadhaar(born, Some(date("2010-01-15")?), true, today);
        assert_eq!(minor.reason.as_deref(), Some(UNDERAGE));
        Ok(())
    }
}
