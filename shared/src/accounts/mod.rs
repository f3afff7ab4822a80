//! Accounts: signup rules (email, password, age, consent) and the account store.
//!
//! Items (main table):
//! - `USER#<id>` / `PROFILE`: the account.
//! - `USER#<id>` / `CONSENT#<millis>#<rand>`: each consent given (policy version, marketing choice, time, IP).
//! - `EMAIL#<email>` / `EMAIL`: the claim that makes an email unique, written in the same transaction as the
//!   account with a "must not exist" condition.

use crate::ports::Ports;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::passwords;
use crate::secrets::random_suffix;
use crate::store::{StoreResult, WriteOp};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MIN_AGE_YEARS: i32 = 18;
const MAX_NAME_CHARS: usize = 200;
const MAX_EMAIL_CHARS: usize = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    NotSubmitted,
    /// Waiting for the KYC provider or for the customer's next step (DigiLocker).
    Pending,
    /// An operator decides (a partial name match, or every submission in manual mode).
    InReview,
    Verified,
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Closed,
}

/// The stored account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub email: String,
    /// Erased (absent) once the account is closed.
    #[serde(default)]
    pub password_hash: String,
    pub full_name: String,
    pub date_of_birth: NaiveDate,
    pub kyc_status: KycStatus,
    pub marketing_consent: bool,
    pub accepted_policy_version: String,
    pub status: AccountStatus,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// The owner proved the address is theirs (a verification link, or a password reset sent to it).
    #[serde(default)]
    pub email_verified: bool,
    /// An address the owner asked to change to, waiting for its confirmation link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_email: Option<String>,
    /// Sessions opened under another epoch are dead: raising it ends every session at once, in the same
    /// write as the change that calls for it (sign out everywhere, a password change or reset).
    #[serde(default)]
    pub session_epoch: i64,
    /// The sort key of the erasure request that closed the account (its closing transaction sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closure_request: Option<String>,
}

/// A consent given by the user, kept as evidence (DPDP Act): which policy, which choices, when, from where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consent {
    pub user_id: String,
    pub policy_version: String,
    pub marketing_consent: bool,
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EmailClaim {
    pub(crate) user_id: String,
}

/// What the API shows of an account (never the password hash).
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    /// The address a change waits to confirm (the change takes effect with the link sent to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_email: Option<String>,
    pub full_name: String,
    pub date_of_birth: NaiveDate,
    pub kyc_status: KycStatus,
    pub marketing_consent: bool,
    pub accepted_policy_version: String,
    /// The policy in force has moved past the version this account accepted
    /// (`POST /v1/account/accept-policy` records the acceptance).
    pub policy_update_pending: bool,
    pub created_at: String,
    /// Where the account's calls may run (`in`: India only), unless a key or a request narrows it.
    pub data_residency: crate::residency::DataResidency,
}

impl AccountView {
    /// The view with the account's data residency (read from its limits by the caller).
    pub fn residing(mut self, residency: crate::residency::DataResidency) -> Self {
        self.data_residency = residency;
        self
    }

    pub fn new(a: &Account, current_policy_version: &str) -> Self {
        Self {
            id: a.id.clone(),
            email: a.email.clone(),
            email_verified: a.email_verified,
            pending_email: a.pending_email.clone(),
            full_name: a.full_name.clone(),
            date_of_birth: a.date_of_birth,
            kyc_status: a.kyc_status,
            marketing_consent: a.marketing_consent,
            accepted_policy_version: a.accepted_policy_version.clone(),
            policy_update_pending: a.accepted_policy_version != current_policy_version,
            created_at: timestamp(a.created_at),
            data_residency: crate::residency::DataResidency::Any,
        }
    }
}

/// The API's timestamp format: RFC 3339, UTC, millisecond precision.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub use crate::store::schema::{time_sort_key, user_pk};

mod checks;
mod store;

pub use checks::{
    check_date_of_birth, check_full_name, check_new_password, check_new_password_in, hides_text, normalize_email,
    printable, today_in_india, written_text,
};
pub(crate) use store::email_taken;
pub use store::{
    AccountStore, ConsentChoice, CreateAccountError, after_closure, closed_accounts_with_email, closure_ops,
    consent_put, consents, email_change_ops, expire_consents, kyc_status_update, kyc_status_update_with,
    profile_update, registry_delete, registry_page, require_active, require_active_with_password,
};

/// The signup request body.
#[derive(Debug, Deserialize)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub full_name: String,
    pub date_of_birth: String,
    pub accepted_terms_version: String,
    #[serde(default)]
    pub marketing_consent: bool,
}

/// Where a request came from, recorded with consents and logins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The key a client is limited under: its IPv4 address, or the /64 of its IPv6 address (one subscriber's
/// usual allocation: rotating addresses within it gains nothing).
pub fn ip_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(v4) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

pub fn new_user_id() -> String {
    format!("usr_{}", random_suffix())
}

/// What a valid signup came to: the account created, or (the address already has one) the account it would
/// have been, not stored, whose answer looks the same (the verification module tells the owner).
#[derive(Debug, Clone)]
pub enum SignedUp {
    Created(Account),
    AddressTaken(Account),
}

/// Validates a signup, hashes the password and creates the account, in one transaction with what
/// `also_write` returns for it (the verification link and its message; see the verification module). The
/// password is hashed whether or not the address is free, so the answer takes as long either way.
pub async fn signup(
    ports: &Ports,
    request: SignupRequest,
    client: &ClientInfo,
    also_write: impl FnOnce(&Account) -> StoreResult<Vec<WriteOp>>,
) -> ApiResult<SignedUp> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    let email = normalize_email(&request.email)?;
    check_new_password(&request.password, &email)?;
    let full_name = check_full_name(&request.full_name)?;
    let now = clock.now();
    let date_of_birth = check_date_of_birth(&request.date_of_birth, today_in_india(now))?;
    if request.accepted_terms_version.trim() != config.policy_version {
        return Err(ApiError::invalid(
            ErrorCode::TermsNotAccepted,
            "accepted_terms_version",
            format!("you must accept the current terms and privacy policy (version {})", config.policy_version),
        ));
    }
    let password_hash = passwords::hash_async(request.password).await?;
    let account = Account {
        id: new_user_id(),
        email,
        password_hash,
        full_name,
        date_of_birth,
        kyc_status: KycStatus::NotSubmitted,
        marketing_consent: request.marketing_consent,
        accepted_policy_version: config.policy_version.clone(),
        status: AccountStatus::Active,
        created_at: now,
        closed_at: None,
        email_verified: false,
        pending_email: None,
        session_epoch: 0,
        closure_request: None,
    };
    let consent = Consent {
        user_id: account.id.clone(),
        policy_version: config.policy_version.clone(),
        marketing_consent: request.marketing_consent,
        context: "signup".into(),
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
        at: now,
    };
    let extra = also_write(&account)?;
    match store.create_account(&account, &consent, extra).await {
        Ok(()) => Ok(SignedUp::Created(account)),
        Err(CreateAccountError::EmailTaken) => Ok(SignedUp::AddressTaken(account)),
        Err(CreateAccountError::Store(e)) => Err(e.into()),
    }
}
