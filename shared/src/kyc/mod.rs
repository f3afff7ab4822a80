//! KYC: a person verifies with their PAN (checked with the KYC provider against the Income Tax
//! Department's record: number, name, date of birth) and their Aadhaar through DigiLocker (of which we keep
//! the last four digits, the provider's reference and the outcome, never the number: Aadhaar Act s.29 and
//! the UIDAI vault circular leave full numbers to licensed entities); a business with its GSTIN (checked
//! with GSTN through the provider) and the PAN inside it. Also the operators' review, the gate other
//! functions call, and the retention rule applied when an account closes.
//!
//! Items:
//! - main `USER#<id>` / `KYC`: status, each step's state and the provider's evidence, the masked PAN and
//!   its vault reference and fingerprint, the GSTIN, the last four digits of the Aadhaar.
//! - main `USER#<id>` / `KYCDECISION#<millis>#<rand>`: each operator decision (who, when, why), and each
//!   time an operator revealed a PAN (who, when, why).
//! - main `USER#<id>` / `KYCCONSENT#<millis>#<rand>`: each check's consent record: what was checked, with
//!   which provider, when, and the purpose shown to the customer (DPDP Act s.6); kept with the KYC record.
//! - main `KYCQUEUE` / `<submitted millis>#<user id>`: a submission an operator decides.
//! - main `KYCRETRY` / `<millis>#<user id>`: a PAN check the provider has not answered yet, for the jobs.
//! - main `KYCDIGILOCKER#<verification id>` / `ATTEMPT`: an open DigiLocker session (whose it is), for the
//!   customer's return and for the jobs.
//! - main `KYCSUBMIT#<id>` / `WINDOW` (submissions) and `KYCDLSTART#<id>` / `WINDOW` (DigiLocker sessions):
//!   what is left in the account's 30-day window.
//! - main `KYCDOC#<fingerprint>` / `CLAIM`: "this PAN (a person's) or GSTIN (a business's) backs this
//!   account", written when the account is verified, with an "absent or mine" condition.
//! - main `MIGRATION#aadhaar-erasure` / `CURSOR`: how far the erasure of legacy Aadhaar numbers got.
//! - vault `VAULT#<reference>` / `SECRET`: the full PAN, envelope-encrypted, bound to owner and kind.

pub mod cashfree;
pub mod documents;
pub mod provider;
pub mod vault;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use vault::Sealed;

use crate::accounts::{AccountStore, KycStatus, timestamp};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::schema;

pub mod consent;
mod correction;
mod digilocker;
pub mod erasure;
pub use correction::{KycCorrection, recheck_after_correction, touches as correction_touches};
mod operators;
pub mod retry;
pub mod steps;
mod store;
mod submit;
pub use consent::{ConsentRecord, consents};
pub use digilocker::{DIGILOCKER_RETURN_PATH, complete_digilocker, origin_unproven, start_digilocker};
pub use operators::{
    MIN_LEGAL_REASON_CHARS, QueuedSubmission, REVEALS_PER_DAY, Reveal, decide, queue, reveal, reveal_for_operator,
};
pub use provider::KycProvider;
pub use retry::{RetryReport, retry_pending_checks};
pub use steps::{AadhaarStep, GstinStep, Holder, PanStep, StepStatus};
pub use store::{
    KycStore, after_closure, closure_ops, decisions, expire_after_closure, retain_after_closure, retained_until,
};
pub use submit::{SubmitRequest, submit};

const KYC_SK: &str = schema::sk::KYC;
const MAX_NAME_CHARS: usize = 100;
/// Submissions one account may make in any [`SUBMISSION_WINDOW_DAYS`]: enough to fix typos and answer a
/// rejection, too few to test other people's numbers against the uniqueness rule.
pub const MAX_SUBMISSIONS: usize = 5;
/// DigiLocker sessions one account may open in the same window (each is a paid call to the provider).
pub const MAX_DIGILOCKER_SESSIONS: usize = 10;
pub const SUBMISSION_WINDOW_DAYS: i64 = 30;
const MAX_REASON_CHARS: usize = 500;

/// What the KYC workflow works with: the ports, the vault and fingerprint keys, the provider.
pub struct KycContext<'a> {
    pub ports: &'a crate::ports::Ports,
    pub keys: &'a KycKeys,
    pub provider: &'a dyn KycProvider,
}

/// The keys KYC needs: the envelope-encryption provider for the vault and, where numbers are submitted
/// (the kyc function, the local server), the fingerprint key.
pub struct KycKeys {
    pub data_keys: Arc<dyn vault::DataKeys>,
    pub fingerprinter: Option<vault::Fingerprinter>,
}

impl KycKeys {
    /// Keys that live only as long as the process: for tests.
    pub fn ephemeral() -> Self {
        let mut master = [0u8; 32];
        let mut fingerprint = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut master);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fingerprint);
        Self {
            data_keys: Arc::new(vault::LocalDataKeys::new(master)),
            fingerprinter: Some(vault::Fingerprinter::new(fingerprint.to_vec())),
        }
    }

    /// The fingerprint key, or a 500 where this function was deployed without it.
    pub fn fingerprinter(&self) -> Result<&vault::Fingerprinter, ApiError> {
        self.fingerprinter
            .as_ref()
            .ok_or_else(|| ApiError::Internal("the fingerprint key is not configured for this function".into()))
    }

    /// The embedded default: key files under `dir`, created on first run.
    pub fn from_key_files(dir: &Path) -> Result<Self, vault::VaultError> {
        let master = vault::LocalDataKeys::from_key_file(&dir.join("vault-master.key"))?;
        let fingerprint = vault::load_or_create_key_file(&dir.join("kyc-fingerprint.key"))?;
        Ok(Self { data_keys: Arc::new(master), fingerprinter: Some(vault::Fingerprinter::new(fingerprint.to_vec())) })
    }
}

/// The documents, as named in fingerprints, vault entries and consent records. Aadhaar names only the
/// legacy vault entries the erasure removes and the DigiLocker check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Pan,
    Aadhaar,
    Gstin,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Pan => "pan",
            DocumentKind::Aadhaar => "aadhaar",
            DocumentKind::Gstin => "gstin",
        }
    }
}

/// The stored KYC state of one account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KycRecord {
    pub user_id: String,
    pub status: KycStatus,
    #[serde(default)]
    pub holder: Holder,
    pub name_on_pan: String,
    pub pan_masked: String,
    pub pan_ref: String,
    pub pan_fingerprint: String,
    /// The prefix of every verification id sent to the provider for this submission (empty for a
    /// submission made before the provider checks).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(default)]
    pub pan: PanStep,
    #[serde(default)]
    pub aadhaar: AadhaarStep,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gstin: Option<GstinStep>,
    /// The last four digits of the Aadhaar, masked (`XXXX XXXX 1234`): from DigiLocker (or, for a
    /// submission made before DigiLocker, from the number then typed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aadhaar_masked: Option<String>,
    /// Legacy (submissions made before DigiLocker): the vault entry and fingerprint of a full Aadhaar
    /// number, both removed by [`erasure`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aadhaar_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aadhaar_fingerprint: Option<String>,
    /// When the erasure removed the legacy number (the record of having done it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_aadhaar_erased_at: Option<DateTime<Utc>>,
    /// An operator approved what the checks left to a person (or, in manual mode, the whole submission).
    #[serde(default)]
    pub operator_approved: bool,
    pub submitted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// Bumped by every write, for optimistic concurrency.
    pub revision: i64,
}

impl KycRecord {
    /// The fingerprint of the number that backs the account once verified: a person's PAN, a business's
    /// GSTIN.
    fn claimed_fingerprint(&self) -> &str {
        match (&self.holder, &self.gstin) {
            (Holder::Business, Some(gstin)) => &gstin.fingerprint,
            _ => &self.pan_fingerprint,
        }
    }

    /// Every fingerprint this record may hold a claim on (a legacy Aadhaar one included).
    fn fingerprints(&self) -> Vec<&str> {
        let mut all = vec![self.pan_fingerprint.as_str()];
        all.extend(self.gstin.as_ref().map(|g| g.fingerprint.as_str()));
        all.extend(self.aadhaar_fingerprint.as_deref());
        all
    }
}

/// What `GET /v1/kyc` and `POST /v1/kyc` show: each step's state and masked numbers only.
#[derive(Debug, Clone, Serialize)]
pub struct KycView {
    pub status: KycStatus,
    pub holder: Option<Holder>,
    pub name_on_pan: Option<String>,
    pub pan_masked: Option<String>,
    pub pan_status: StepStatus,
    pub aadhaar_status: StepStatus,
    pub aadhaar_masked: Option<String>,
    /// Why the DigiLocker step has to be done again, if it does.
    pub aadhaar_reason: Option<String>,
    pub gstin: Option<String>,
    pub gstin_status: Option<StepStatus>,
    pub legal_name: Option<String>,
    pub submitted_at: Option<String>,
    pub verified_at: Option<String>,
    pub rejection_reason: Option<String>,
}

impl KycView {
    pub fn not_submitted() -> Self {
        Self {
            status: KycStatus::NotSubmitted,
            holder: None,
            name_on_pan: None,
            pan_masked: None,
            pan_status: StepStatus::NotStarted,
            aadhaar_status: StepStatus::NotStarted,
            aadhaar_masked: None,
            aadhaar_reason: None,
            gstin: None,
            gstin_status: None,
            legal_name: None,
            submitted_at: None,
            verified_at: None,
            rejection_reason: None,
        }
    }
}

impl From<&KycRecord> for KycView {
    fn from(r: &KycRecord) -> Self {
        Self {
            status: r.status,
            holder: Some(r.holder),
            name_on_pan: Some(r.name_on_pan.clone()),
            pan_masked: Some(r.pan_masked.clone()),
            pan_status: r.pan.status,
            aadhaar_status: r.aadhaar.status,
            aadhaar_masked: r.aadhaar_masked.clone(),
            aadhaar_reason: r.aadhaar.reason.clone(),
            gstin: r.gstin.as_ref().map(|g| g.gstin.clone()),
            gstin_status: r.gstin.as_ref().map(|g| g.status),
            legal_name: r.gstin.as_ref().and_then(|g| g.legal_name().map(str::to_owned)),
            submitted_at: Some(timestamp(r.submitted_at)),
            verified_at: r.verified_at.map(timestamp),
            rejection_reason: r.rejection_reason.clone(),
        }
    }
}

/// A vault entry: one sealed number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultEntry {
    pub user_id: String,
    pub kind: DocumentKind,
    #[serde(flatten)]
    pub sealed: Sealed,
    pub created_at: DateTime<Utc>,
}

/// An operator's decision, kept as an audit record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub user_id: String,
    pub decision: Decision,
    /// For a reveal: the number shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub decided_by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
    /// Not a decision: an operator was shown a PAN (audited like one, kept as long).
    Reveal,
    /// An operator corrected the name on the PAN or the date of birth on evidence; the PAN is checked again.
    Correct,
}

pub fn status_name(status: KycStatus) -> &'static str {
    match status {
        KycStatus::NotSubmitted => "not_submitted",
        KycStatus::Pending => "pending",
        KycStatus::InReview => "in_review",
        KycStatus::Verified => "verified",
        KycStatus::Rejected => "rejected",
    }
}

/// Whether someone born on `born` is 18 on `on`.
pub fn adult_on(born: NaiveDate, on: NaiveDate) -> bool {
    born.checked_add_months(chrono::Months::new(18 * 12)).is_some_and(|eighteen| eighteen <= on)
}

/// The account, if it is open and its e-mail address is verified (else 401 `invalid_session` for a closed one,
/// 403 `email_not_verified`): identity goes only on a proven address (an account squatting someone's address
/// cannot attach its KYC for the address's owner to inherit), and so do payments and keys.
pub(crate) async fn open_account<S: AccountStore + ?Sized>(
    store: &S,
    user_id: &str,
) -> ApiResult<crate::accounts::Account> {
    let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
    let account =
        account.ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"))?;
    crate::verification::require_verified_email(&account)?;
    Ok(account)
}

/// The gate of top-ups and API keys: passes only for accounts whose e-mail address is verified (else 403
/// `email_not_verified`, the first step) and whose KYC is verified (else 403 `kyc_required` naming the status).
pub async fn require_verified<S: AccountStore + ?Sized>(store: &S, user_id: &str) -> ApiResult<()> {
    let status = open_account(store, user_id).await?.kyc_status;
    if status == KycStatus::Verified {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: ErrorCode::KycRequired,
        message: format!("complete KYC verification first (current KYC status: {})", status_name(status)),
    })
}
