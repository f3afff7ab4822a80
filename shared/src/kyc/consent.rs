//! The consent record of every check sent to the KYC provider: what was checked, with which provider, when,
//! and the purpose the customer was shown when they consented (DPDP Act 2023 s.6(1): consent for a
//! specified purpose, limited to the data it needs; Aadhaar Act s.8A(2)-(3) and the provider's terms ask
//! the same for DigiLocker). Written in the transaction that starts the check; kept with the KYC record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::CONSENT_PREFIX;
use crate::store::{ItemStore, StoreResult};

/// What the customer consents to, word for word as `POST /v1/kyc` documents it and the dashboard shows it.
pub const PAN_PURPOSE: &str = "To verify your identity, InferexAI sends your PAN, the name on it and your date of birth to its KYC provider, which checks them against the Income Tax Department's records; the answer (valid or not, whether the name and date of birth match) is kept with your KYC record.";
pub const GSTIN_PURPOSE: &str = "To verify your business, InferexAI sends its GSTIN to its KYC provider, which checks it against GSTN's records; the legal name and the registration's status are kept with your KYC record and printed on your tax invoices.";
pub const DIGILOCKER_PURPOSE: &str = "To verify your Aadhaar without giving us its number, you share your Aadhaar from DigiLocker with InferexAI's KYC provider; InferexAI receives your name, date of birth and the last four digits only, and keeps the last four digits, the provider's reference and the outcome.";

/// What the privacy notice (`GET /v1/privacy`) says about KYC: who checks, what each check sends and why,
/// and what is kept.
pub fn notice() -> serde_json::Value {
    serde_json::json!({
        "provider": "Cashfree Payments India (Verification Suite), which asks the Income Tax Department, GSTN and DigiLocker",
        "checks": [
            { "check": CheckKind::Pan, "purpose": PAN_PURPOSE },
            { "check": CheckKind::Gstin, "purpose": GSTIN_PURPOSE },
            { "check": CheckKind::AadhaarDigilocker, "purpose": DIGILOCKER_PURPOSE },
        ],
        "kept": "the PAN (encrypted), the name on it, the provider's answers (valid or not, name and date-of-birth match, the registered name), a business's GSTIN and legal name, the last four digits of the Aadhaar and DigiLocker's reference, the consent record of each check",
        "never_kept": "the Aadhaar number (we receive only its last four digits), the Aadhaar's address and photograph",
    })
}

/// Which check a consent covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Pan,
    Gstin,
    AadhaarDigilocker,
}

impl CheckKind {
    pub fn purpose(self) -> &'static str {
        match self {
            CheckKind::Pan => PAN_PURPOSE,
            CheckKind::Gstin => GSTIN_PURPOSE,
            CheckKind::AadhaarDigilocker => DIGILOCKER_PURPOSE,
        }
    }
}

/// One consent record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub user_id: String,
    pub check: CheckKind,
    pub provider: String,
    pub purpose: String,
    pub verification_id: String,
    pub at: DateTime<Utc>,
}

impl ConsentRecord {
    pub fn new(user_id: &str, check: CheckKind, provider: &str, verification_id: &str, at: DateTime<Utc>) -> Self {
        Self {
            user_id: user_id.to_owned(),
            check,
            provider: provider.to_owned(),
            purpose: check.purpose().to_owned(),
            verification_id: verification_id.to_owned(),
            at,
        }
    }
}

/// The account's consent records, oldest first (for its export and the operators).
pub async fn consents(store: &dyn ItemStore, user_id: &str) -> StoreResult<Vec<ConsentRecord>> {
    let items = crate::store::user_items(store, user_id, CONSENT_PREFIX).await?;
    items.iter().map(crate::store::Item::record).collect()
}
