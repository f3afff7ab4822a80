//! KYC: PAN and Aadhaar submission, the encrypted vault, operator decisions, the gate other functions
//! call, and the retention rule applied when an account closes.
//!
//! Items:
//! - main `USER#<id>` / `KYC`: status, masked numbers, vault references, fingerprints, decision.
//! - main `USER#<id>` / `KYCDECISION#<millis>#<rand>`: each operator decision (who, when, why), and each
//!   time an operator revealed a full number (who, when, which, why).
//! - main `KYCQUEUE` / `<submitted millis>#<user id>`: a pending submission waiting for an operator, oldest
//!   first; written with the submission, removed with the decision (an entry whose submission changed
//!   since is skipped, and removed, when the queue is listed).
//! - main `KYCSUBMIT#<id>` / `WINDOW`: submissions left in the account's 30-day window (every submission
//!   counts, refused ones included).
//! - main `KYCDOC#<fingerprint>` / `CLAIM`: "this PAN/Aadhaar backs this account", written when a submission
//!   is *verified* (automatically, or by an operator's approval; a pending submission blocks nobody) with
//!   an "absent or mine" condition in the verifying transaction, so one number can never back two accounts,
//!   even under concurrency.
//! - vault `VAULT#<reference>` / `SECRET`: the full number, envelope-encrypted, bound to owner and kind.
//!
//! The full numbers exist in clear only in memory during a request; logs, errors and every other item
//! carry the masked form or the keyed fingerprint.

pub mod documents;
pub mod vault;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vault::Sealed;

use crate::accounts::{AccountStore, KycStatus, timestamp};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::schema;

mod store;
pub use store::{
    KycStore, Submission, WriteConflict, after_closure, closure_ops, decisions, expire_after_closure,
    retain_after_closure, retained_until,
};
mod submit;
pub use submit::{SubmitRequest, submit};
mod operators;
pub use operators::{QueuedSubmission, Reveal, decide, queue, reveal, reveal_for_operator};

const KYC_SK: &str = schema::sk::KYC;
const MAX_NAME_CHARS: usize = 100;
/// Submissions one account may make in any [`SUBMISSION_WINDOW_DAYS`]: enough to fix typos and answer a
/// rejection, too few to test other people's numbers against the uniqueness rule.
pub const MAX_SUBMISSIONS: usize = 5;
pub const SUBMISSION_WINDOW_DAYS: i64 = 30;
const MAX_REASON_CHARS: usize = 500;

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

/// The two documents, as named in fingerprints, vault entries and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Pan,
    Aadhaar,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Pan => "pan",
            DocumentKind::Aadhaar => "aadhaar",
        }
    }
}

/// The stored KYC state of one account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KycRecord {
    pub user_id: String,
    pub status: KycStatus,
    pub name_on_pan: String,
    pub pan_masked: String,
    pub aadhaar_masked: String,
    pub pan_ref: String,
    pub aadhaar_ref: String,
    pub pan_fingerprint: String,
    pub aadhaar_fingerprint: String,
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
    fn reference(&self, kind: DocumentKind) -> &str {
        match kind {
            DocumentKind::Pan => &self.pan_ref,
            DocumentKind::Aadhaar => &self.aadhaar_ref,
        }
    }

    fn fingerprint(&self, kind: DocumentKind) -> &str {
        match kind {
            DocumentKind::Pan => &self.pan_fingerprint,
            DocumentKind::Aadhaar => &self.aadhaar_fingerprint,
        }
    }
}

/// What `GET /v1/kyc` and `POST /v1/kyc` show: status and masked numbers only.
#[derive(Debug, Clone, Serialize)]
pub struct KycView {
    pub status: KycStatus,
    pub name_on_pan: Option<String>,
    pub pan_masked: Option<String>,
    pub aadhaar_masked: Option<String>,
    pub submitted_at: Option<String>,
    pub verified_at: Option<String>,
    pub rejection_reason: Option<String>,
}

impl KycView {
    pub fn not_submitted() -> Self {
        Self {
            status: KycStatus::NotSubmitted,
            name_on_pan: None,
            pan_masked: None,
            aadhaar_masked: None,
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
            name_on_pan: Some(r.name_on_pan.clone()),
            pan_masked: Some(r.pan_masked.clone()),
            aadhaar_masked: Some(r.aadhaar_masked.clone()),
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
    /// Not a decision: an operator was shown a full number (audited like one, kept as long).
    Reveal,
}

pub fn status_name(status: KycStatus) -> &'static str {
    match status {
        KycStatus::NotSubmitted => "not_submitted",
        KycStatus::Pending => "pending",
        KycStatus::Verified => "verified",
        KycStatus::Rejected => "rejected",
    }
}

/// The gate of top-ups and API keys: passes only for accounts whose e-mail address is verified (else 403
/// `email_not_verified`, the first step) and whose KYC is verified (else 403 `kyc_required` naming the status).
pub async fn require_verified<S: AccountStore + ?Sized>(store: &S, user_id: &str) -> ApiResult<()> {
    let account = store.account(user_id).await?.filter(|a| a.status == crate::accounts::AccountStatus::Active);
    let Some(account) = account else {
        return Err(ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"));
    };
    crate::verification::require_verified_email(&account)?;
    let status = account.kyc_status;
    if status == KycStatus::Verified {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: ErrorCode::KycRequired,
        message: format!("complete KYC verification first (current KYC status: {})", status_name(status)),
    })
}
