//! The KYC provider port: what we ask an authority's gateway (a PAN checked against the Income Tax
//! Department's records, a GSTIN against GSTN's, an Aadhaar proof through DigiLocker) and what it
//! answers. One adapter speaks Cashfree's Verification Suite ([`super::cashfree`]); the local stand-in
//! speaks the same wire format.

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The provider's name, as consent records and evidence carry it.
pub type ProviderName = &'static str;

/// A PAN check: the number, the name the customer says is on it and, for an individual, the date of
/// birth to match.
#[derive(Debug, Clone)]
pub struct PanQuery<'a> {
    /// Our id for this check (at most 50 characters: letters, digits, `-`, `.`, `_`).
    pub verification_id: &'a str,
    pub pan: &'a str,
    pub name: &'a str,
    pub date_of_birth: Option<NaiveDate>,
}

/// What the Income Tax Department's record says about the PAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanRecord {
    /// An existing, valid PAN.
    Valid,
    /// No such PAN, or a fake one.
    Invalid,
    /// Deleted or deactivated by the department.
    Deleted,
}

/// How the name given matched the registered one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameMatch {
    Match,
    Partial,
    Mismatch,
}

/// The provider's answer to a PAN check: the evidence an operator sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanAnswer {
    pub record: PanRecord,
    pub name_match: NameMatch,
    /// The provider's name-match score (0-100), when it gives one.
    pub name_match_score: Option<u32>,
    /// The name on the department's record, when it gives one.
    pub registered_name: Option<String>,
    /// Whether the date of birth matched (`None`: not asked, as for a business PAN).
    pub date_of_birth_match: Option<bool>,
    /// The provider's reference for this check.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference_id: String,
}

/// The provider's answer to a GSTIN check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GstinAnswer {
    pub valid: bool,
    pub legal_name: Option<String>,
    /// GSTN's status of the registration (`Active`, `Cancelled`, `Suspended`, ...).
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference_id: String,
}

impl GstinAnswer {
    pub fn active(&self) -> bool {
        self.valid && self.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("active"))
    }
}

/// A DigiLocker consent session: where to send the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigilockerLink {
    pub url: String,
    pub reference_id: String,
}

/// The Aadhaar details DigiLocker shares: never the full number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AadhaarDetails {
    pub name: String,
    pub date_of_birth: Option<NaiveDate>,
    /// The number's last four digits (the provider hands over a masked number).
    pub last_four: String,
}

/// Where a DigiLocker session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigilockerOutcome {
    /// The customer has not finished yet.
    Pending,
    /// The customer declined to share, or the session expired.
    NotShared {
        expired: bool,
    },
    Shared(AadhaarDetails),
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer in time, a connection failure or the provider's own failure: ask again later.
    #[error("the KYC provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request itself (our credentials, a malformed request): a person must look.
    #[error("the KYC provider refused the request: {0}")]
    Refused(String),
}

impl From<ProviderError> for crate::error::ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            // 503 (the status follows the code), with a Retry-After.
            ProviderError::Unavailable(_) => crate::error::ApiError::BadGateway {
                code: crate::error::ErrorCode::KycProviderUnavailable,
                message: "the identity verification service is unavailable; try again in a few minutes".into(),
            },
            ProviderError::Refused(why) => crate::error::ApiError::Internal(format!("KYC provider refused: {why}")),
        }
    }
}

/// A KYC provider (Cashfree's Verification Suite, or its local stand-in).
#[async_trait]
pub trait KycProvider: Send + Sync {
    fn name(&self) -> ProviderName;
    async fn check_pan(&self, query: PanQuery<'_>) -> Result<PanAnswer, ProviderError>;
    async fn check_gstin(&self, verification_id: &str, gstin: &str) -> Result<GstinAnswer, ProviderError>;
    /// Opens a DigiLocker session for the Aadhaar document; the customer comes back to `redirect_url`.
    async fn start_digilocker(
        &self,
        verification_id: &str,
        redirect_url: &str,
    ) -> Result<DigilockerLink, ProviderError>;
    async fn digilocker_outcome(&self, verification_id: &str) -> Result<DigilockerOutcome, ProviderError>;
}
