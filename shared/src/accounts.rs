//! Accounts: signup rules (email, password, age, consent) and the account store.
//!
//! Items (main table):
//! - `USER#<id>` / `PROFILE`: the account.
//! - `USER#<id>` / `CONSENT#<millis>#<rand>`: each consent given (policy version, marketing choice, time, IP).
//! - `EMAIL#<email>` / `EMAIL`: the claim that makes an email unique, written in the same transaction as the
//!   account with a "must not exist" condition.

use crate::error::ErrorCode;
use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::passwords;
use crate::secrets::random_suffix;
use crate::store::{Condition, Item, ItemStore, Put, StoreError, StoreResult, Table, Update, WriteOp, schema};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MIN_AGE_YEARS: i32 = 18;
const MAX_NAME_CHARS: usize = 200;
const MAX_EMAIL_CHARS: usize = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    NotSubmitted,
    Pending,
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
}

impl AccountView {
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
        }
    }
}

/// The API's timestamp format: RFC 3339, UTC, millisecond precision.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) use crate::store::schema::sk::PROFILE as PROFILE_SK;
pub use crate::store::schema::{email_pk, time_sort_key, user_pk};

/// A consent record (DPDP Act evidence: which policy, which choices, when, from where), to write with the
/// change it records.
pub fn consent_put(
    account: &Account,
    policy_version: &str,
    marketing: bool,
    context: &str,
    client: &ClientInfo,
    at: DateTime<Utc>,
) -> StoreResult<WriteOp> {
    let consent = Consent {
        user_id: account.id.clone(),
        policy_version: policy_version.to_owned(),
        marketing_consent: marketing,
        context: context.into(),
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
        at,
    };
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(user_pk(&account.id), time_sort_key(schema::prefix::CONSENT, at), &consent, None)?,
        condition: Condition::NotExists,
    }))
}

/// The account's profile, changed only if it is still open and still has the email and the password we
/// read: a change checked against a password that was changed meanwhile (by the owner, locking a thief
/// out) does not commit.
pub fn profile_update(account: &Account) -> Update {
    Update::new(Table::Main, user_pk(&account.id), PROFILE_SK).when(Condition::All(vec![
        Condition::AttrEquals("status".into(), serde_json::json!(AccountStatus::Active)),
        Condition::AttrEquals("email".into(), serde_json::json!(account.email)),
        Condition::AttrEquals("password_hash".into(), serde_json::json!(account.password_hash)),
    ]))
}

/// Moves the account's email claim to `new_email` (which must be free), with the change of the profile.
pub fn email_change_ops(account: &Account, new_email: &str) -> StoreResult<Vec<WriteOp>> {
    Ok(vec![email_claim(new_email, &account.id)?, email_release(&account.email, &account.id)])
}

/// Claims `email` for the account: "one email, one account" holds because the claim must not exist yet.
fn email_claim(email: &str, user_id: &str) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(email_pk(email), schema::sk::EMAIL, &EmailClaim { user_id: user_id.to_owned() }, None)?,
        condition: Condition::NotExists,
    }))
}

/// Releases the account's claim on `email` (only its own).
fn email_release(email: &str, user_id: &str) -> WriteOp {
    WriteOp::Delete(crate::store::Delete {
        table: Table::Main,
        pk: email_pk(email),
        sk: schema::sk::EMAIL.into(),
        condition: Condition::AttrEquals("user_id".into(), serde_json::json!(user_id)),
    })
}

/// After a closure: the account's consent records expire with the account.
pub async fn expire_consents<S: ItemStore + ?Sized>(store: &S, consents: &[Item], until: i64) -> StoreResult<()> {
    for consent in consents {
        let expire = Update::new(Table::Main, consent.pk.clone(), consent.sk.clone())
            .expiry(crate::store::ExpiryChange::Set(until))
            .when(Condition::Exists);
        store.update(expire).await?;
    }
    Ok(())
}

/// The check that the account is still active and its password still the one just verified: a login that
/// verified a password changed meanwhile opens no session.
pub fn require_active_with_password(user_id: &str, password_hash: &str) -> crate::store::WriteOp {
    crate::store::WriteOp::Check(crate::store::Check {
        table: Table::Main,
        pk: user_pk(user_id),
        sk: PROFILE_SK.into(),
        condition: Condition::All(vec![
            Condition::AttrEquals("status".into(), serde_json::json!(AccountStatus::Active)),
            Condition::AttrEquals("password_hash".into(), serde_json::json!(password_hash)),
        ]),
    })
}

/// A transaction step that holds only while the account is open: writes that must not outlive a closure
/// (sessions, keys, KYC changes) carry it, so a closure that commits first makes them fail.
pub fn require_active(user_id: &str) -> crate::store::WriteOp {
    crate::store::WriteOp::Check(crate::store::Check {
        table: Table::Main,
        pk: user_pk(user_id),
        sk: PROFILE_SK.into(),
        condition: Condition::AttrEquals("status".into(), serde_json::json!(AccountStatus::Active)),
    })
}

/// The closing transaction's part for the account: the profile flips to closed (only from active, and only
/// with the email it had when read), the password hash and marketing consent go, the profile expires with
/// the account window and remembers the erasure request; the email claim is released.
pub fn closure_ops(account: &Account, closed_at: DateTime<Utc>, expires_at: i64, request_sk: &str) -> Vec<WriteOp> {
    vec![
        WriteOp::Update(
            profile_update(account)
                .set("status", serde_json::json!(AccountStatus::Closed))
                .set("closed_at", serde_json::json!(closed_at))
                .set("closure_request", serde_json::json!(request_sk))
                .remove("password_hash")
                .set("marketing_consent", serde_json::json!(false))
                .expiry(crate::store::ExpiryChange::Set(expires_at)),
        ),
        email_release(&account.email, &account.id),
    ]
}

/// Takes a closed account out of the registry of open accounts (the closure's follow-up).
pub fn registry_delete(user_id: &str) -> crate::store::Delete {
    crate::store::Delete {
        table: Table::Main,
        pk: schema::ACCOUNTS_PK.into(),
        sk: user_id.to_owned(),
        condition: Condition::Always,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Account persistence.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates the account, its email claim, its first consent record and `extra` (the verification
    /// link and its message) atomically.
    async fn create_account(
        &self,
        account: &Account,
        consent: &Consent,
        extra: Vec<WriteOp>,
    ) -> Result<(), CreateAccountError>;
    async fn account(&self, user_id: &str) -> StoreResult<Option<Account>>;
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>>;
    /// Whether an account holds the email's claim.
    async fn email_claimed(&self, email: &str) -> StoreResult<bool>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> AccountStore for T {
    async fn create_account(
        &self,
        account: &Account,
        consent: &Consent,
        extra: Vec<WriteOp>,
    ) -> Result<(), CreateAccountError> {
        let pk = user_pk(&account.id);
        let mut ops = vec![
            email_claim(&account.email, &account.id)?,
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(&pk, PROFILE_SK, account, None)?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(&pk, time_sort_key(schema::prefix::CONSENT, consent.at), consent, None)?,
                condition: Condition::NotExists,
            }),
            // The registry of open accounts, walked by notices that go to everyone.
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(schema::ACCOUNTS_PK, &account.id, &serde_json::json!({}), None)?,
                condition: Condition::NotExists,
            }),
        ];
        ops.extend(extra);
        match self.transact(ops).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(CreateAccountError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn account(&self, user_id: &str) -> StoreResult<Option<Account>> {
        self.get(Table::Main, &user_pk(user_id), PROFILE_SK).await?.map(|item| item.record()).transpose()
    }

    async fn email_claimed(&self, email: &str) -> StoreResult<bool> {
        Ok(self.get(Table::Main, &email_pk(email), schema::sk::EMAIL).await?.is_some())
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let Some(claim) = self.get(Table::Main, &email_pk(email), schema::sk::EMAIL).await? else {
            return Ok(None);
        };
        let claim: EmailClaim = claim.record()?;
        self.account(&claim.user_id).await
    }
}

/// The answer when another account has the email (signup, email change).
pub(crate) fn email_taken() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::EmailTaken,
        message: "an account with this email already exists".into(),
        param: Some("email".into()),
    }
}

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

/// Trims and lower-cases an email, then checks its shape (one `@`, a dotted domain, no spaces).
pub fn normalize_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let invalid = || ApiError::invalid(ErrorCode::InvalidEmail, "email", "email must be a valid email address");
    if email.is_empty() || email.chars().count() > MAX_EMAIL_CHARS {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let well_formed = !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'));
    if well_formed { Ok(email) } else { Err(invalid()) }
}

/// The rules a new password must meet (length, not the email). `auth::check_password` is the other one:
/// it verifies a presented password against a stored hash.
pub fn check_new_password(password: &str, email: &str) -> ApiResult<()> {
    check_new_password_in(password, email, "password")
}

/// [`check_new_password`] for a password given in the request field `field`.
pub fn check_new_password_in(password: &str, email: &str, field: &str) -> ApiResult<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::WeakPassword,
            field,
            format!("{field} must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if chars > passwords::MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::WeakPassword,
            field,
            format!("{field} must be at most {} characters", passwords::MAX_PASSWORD_CHARS),
        ));
    }
    if password.trim().to_lowercase() == email {
        return Err(ApiError::invalid(
            ErrorCode::WeakPassword,
            field,
            format!("{field} must not be the email address"),
        ));
    }
    Ok(())
}

/// Today's date in India (IST, UTC+05:30), the calendar the 18+ rule is judged by.
pub fn today_in_india(now: DateTime<Utc>) -> NaiveDate {
    (now + Duration::minutes(5 * 60 + 30)).date_naive()
}

/// The day someone born on `dob` turns `years` old; a 29 February birthday falls on 1 March in common years.
fn anniversary(dob: NaiveDate, years: i32) -> Option<NaiveDate> {
    let year = dob.year().checked_add(years)?;
    NaiveDate::from_ymd_opt(year, dob.month(), dob.day()).or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
}

/// Parses `YYYY-MM-DD` and checks the person is at least 18 on `today`.
pub fn check_date_of_birth(raw: &str, today: NaiveDate) -> ApiResult<NaiveDate> {
    let invalid = || {
        ApiError::invalid(
            ErrorCode::InvalidDateOfBirth,
            "date_of_birth",
            "date_of_birth must be a past date in the form YYYY-MM-DD",
        )
    };
    let raw = raw.trim();
    if raw.len() != 10 {
        return Err(invalid());
    }
    let dob = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| invalid())?;
    if dob >= today || dob.year() < 1900 {
        return Err(invalid());
    }
    match anniversary(dob, MIN_AGE_YEARS) {
        Some(adult_on) if adult_on <= today => Ok(dob),
        _ => Err(ApiError::invalid(
            ErrorCode::Underage,
            "date_of_birth",
            format!("you must be at least {MIN_AGE_YEARS} years old to open an account"),
        )),
    }
}

pub fn check_full_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidFullName,
            "full_name",
            format!("full_name must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

/// Where a request came from, recorded with consents and logins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub fn new_user_id() -> String {
    format!("usr_{}", random_suffix())
}

/// Validates a signup, hashes the password and creates the account, in one transaction with what
/// `also_write` returns for it (the verification link and its message; see the verification module).
pub async fn signup<S: AccountStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    (request, client): (SignupRequest, &ClientInfo),
    also_write: impl FnOnce(&Account) -> StoreResult<Vec<WriteOp>>,
) -> ApiResult<Account> {
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
        Ok(()) => Ok(account),
        Err(CreateAccountError::EmailTaken) => Err(email_taken()),
        Err(CreateAccountError::Store(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    fn code(r: ApiResult<impl std::fmt::Debug>) -> &'static str {
        r.err().map(|e| e.code()).unwrap_or("ok")
    }

    #[test]
    fn emails_are_normalised_and_validated() {
        assert_eq!(normalize_email("  Asha.Rao@Example.IN ").ok().as_deref(), Some("asha.rao@example.in"));
        for bad in ["", "plain", "a@b", "a@@b.in", "@b.in", "a b@c.in", "a@.in", "a@b..in", "a@-b.in"] {
            assert_eq!(code(normalize_email(bad)), "invalid_email", "{bad:?}");
        }
    }

    #[test]
    fn passwords_need_ten_characters_and_differ_from_email() {
        assert_eq!(code(check_new_password("short", "a@b.in")), "weak_password");
        assert_eq!(code(check_new_password("asha@example.in", "asha@example.in")), "weak_password");
        assert_eq!(code(check_new_password(&"x".repeat(257), "a@b.in")), "weak_password");
        assert_eq!(code(check_new_password("ten chars!", "a@b.in")), "ok");
    }

    #[test]
    fn age_is_judged_on_the_day_of_signup() {
        let today = date("2026-11-27");
        assert_eq!(code(check_date_of_birth("2008-11-27", today)), "ok", "18 today");
        assert_eq!(code(check_date_of_birth("2008-11-28", today)), "underage", "18 tomorrow");
        assert_eq!(code(check_date_of_birth("2026-11-27", today)), "invalid_date_of_birth");
        assert_eq!(code(check_date_of_birth("27-11-2000", today)), "invalid_date_of_birth");
        assert_eq!(code(check_date_of_birth("2000-02-30", today)), "invalid_date_of_birth");
        // Born on 29 February 2008: 18 on 1 March 2026, not on 28 February.
        assert_eq!(code(check_date_of_birth("2008-02-29", date("2026-02-28"))), "underage");
        assert_eq!(code(check_date_of_birth("2008-02-29", date("2026-03-01"))), "ok");
    }

    #[test]
    fn a_newer_policy_shows_as_pending_until_accepted() {
        let account = Account {
            id: "usr_1".into(),
            email: "a@b.in".into(),
            password_hash: String::new(),
            full_name: "A".into(),
            date_of_birth: date("1990-01-01"),
            kyc_status: KycStatus::NotSubmitted,
            marketing_consent: false,
            accepted_policy_version: "2026-05-21".into(),
            status: AccountStatus::Active,
            created_at: DateTime::<Utc>::default(),
            closed_at: None,
            email_verified: false,
            pending_email: None,
            session_epoch: 0,
        };
        assert!(!AccountView::new(&account, "2026-05-21").policy_update_pending);
        let view = AccountView::new(&account, "2027-01-01");
        assert!(view.policy_update_pending);
        assert_eq!(view.accepted_policy_version, "2026-05-21");
    }

    #[test]
    fn india_date_rolls_over_at_1830_utc() {
        let before = DateTime::parse_from_rfc3339("2026-11-26T18:29:59Z").map(|d| d.to_utc()).unwrap_or_default();
        let after = DateTime::parse_from_rfc3339("2026-11-26T18:30:00Z").map(|d| d.to_utc()).unwrap_or_default();
        assert_eq!(today_in_india(before), date("2026-11-26"));
        assert_eq!(today_in_india(after), date("2026-11-27"));
    }
}
