//! Correcting personal data (`PATCH /v1/account`): what may be changed, the password check, and the one
//! transaction that changes it.

use serde_json::{Map, Value, json};

use super::PrivacyContext;
use super::requests::{Recorded, RequestKind, RequestStatus};
use crate::accounts::{self, Account, AccountStatus, AccountStore, ClientInfo, check_full_name, normalize_email};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::residency::DataResidency;
use crate::store::{Conditional, ItemStore, WriteOp};

pub(super) fn active_account(account: Option<Account>) -> ApiResult<Account> {
    account
        .filter(|a| a.status == AccountStatus::Active)
        .ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the session's account is closed"))
}

/// The password re-check of account changes and closure, under the same throttle as logins (a stolen
/// session cannot be used to guess the password faster than the login form allows).
pub(super) async fn confirm_password(
    ctx: &PrivacyContext,
    account: &Account,
    password: Option<String>,
    field: &str,
) -> ApiResult<()> {
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(ApiError::invalid(
            ErrorCode::MissingField,
            field,
            format!("{field} is required to confirm this change"),
        ));
    };
    let hash = Some(account.password_hash.clone());
    if !crate::auth::check_password(&ctx.ports, &account.email, hash, password).await? {
        return Err(ApiError::Forbidden {
            code: ErrorCode::IncorrectPassword,
            message: format!("{field} is incorrect"),
        });
    }
    Ok(())
}

/// `PATCH /v1/account`: the account's `data_residency` setting (kept with its limits), then the correction
/// of the rest, if the body holds more. Returns the account and its residency.
pub async fn change_account(
    ctx: &PrivacyContext,
    user_id: &str,
    mut body: Map<String, Value>,
    client: &ClientInfo,
) -> ApiResult<(Account, DataResidency)> {
    let residency =
        body.remove("data_residency").map(|v| DataResidency::from_field(&v, "data_residency")).transpose()?;
    let store = ctx.ports.store.as_ref();
    // The correction first: a body it refuses changes nothing, the residency included.
    let account = if residency.is_some() && body.is_empty() {
        active_account(store.account(user_id).await?)?
    } else {
        correct(ctx, user_id, body, client).await?
    };
    let limits = match residency {
        Some(residency) => {
            let change = [crate::account_limits::LimitChange::DataResidency(residency)];
            crate::account_limits::change_account_limits(store, user_id, &change).await?
        }
        None => crate::account_limits::account_limits(store, user_id).await?,
    };
    Ok((account, limits.data_residency))
}

/// `PATCH /v1/account`: corrects `full_name`, `marketing_consent` and (with `current_password`) `email`.
pub async fn correct(
    ctx: &PrivacyContext,
    user_id: &str,
    body: Map<String, Value>,
    client: &ClientInfo,
) -> ApiResult<Account> {
    let Correction { full_name, marketing, email, password } = Correction::parse(&body)?;
    let store = ctx.ports.store.as_ref();
    let account = active_account(store.account(user_id).await?)?;
    let now = ctx.ports.clock.now();
    let mut update = accounts::profile_update(&account);
    let mut ops = Vec::new();
    let mut changed = Vec::new();
    if let Some(name) = full_name.filter(|n| *n != account.full_name) {
        update = update.set("full_name", json!(name));
        changed.push("full_name");
    }
    if let Some(marketing) = marketing.filter(|m| *m != account.marketing_consent) {
        update = update.set("marketing_consent", json!(marketing));
        let choice = accounts::ConsentChoice {
            policy_version: &account.accepted_policy_version,
            marketing,
            context: "marketing_update",
        };
        ops.push(accounts::consent_put(&account, choice, client, now)?);
        changed.push("marketing_consent");
    }
    let new_email = email.filter(|e| *e != account.email);
    if let Some(new_email) = &new_email {
        confirm_password(ctx, &account, password, "current_password").await?;
        if store.email_claimed(new_email).await? {
            return Err(accounts::email_taken());
        }
        // The change takes effect when the link sent to the new address is used
        // (`crate::verification::verify_email`), which moves the claim and tells both addresses.
        update = update.set("pending_email", json!(new_email));
        ops.extend(crate::verification::change_request_ops(store, &account, new_email, now).await?);
        changed.push("email (pending confirmation of the new address)");
    }
    if changed.is_empty() {
        return Ok(account);
    }
    let mut request = Recorded::new(ctx, user_id, RequestKind::Correction);
    request.finish(RequestStatus::Completed, format!("corrected: {}", changed.join(", ")), now);
    // Received and completed at once: one message says both.
    let completed = OutboxMail::new(MailKind::PrivacyRequestCompleted, user_id, now)
        .param("request_kind", "correction")
        .param("request_id", request.request.id.clone())
        .param("outcome", request.request.outcome.clone());
    ops.push(WriteOp::Update(update));
    ops.push(request.put()?);
    ops.push(enqueue(&completed)?);
    if store.transact(ops).await.applied()?.is_none() {
        return Err(correction_conflict(store, new_email.as_deref()).await?);
    }
    active_account(store.account(user_id).await?)
}
/// Why a correction's transaction did not apply: the new email is taken, or the account changed meanwhile.
async fn correction_conflict(store: &dyn ItemStore, new_email: Option<&str>) -> ApiResult<ApiError> {
    let taken = match new_email {
        Some(email) => store.email_claimed(email).await?,
        None => false,
    };
    Ok(if taken {
        accounts::email_taken()
    } else {
        ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed while this correction was applied; read it again and retry".into(),
            param: None,
        }
    })
}

/// The fields of `PATCH /v1/account`, checked: anything else is named in a 400 that says where it is
/// corrected instead (KYC details, the date of birth) or that it is not a field of the account.
struct Correction {
    full_name: Option<String>,
    marketing: Option<bool>,
    email: Option<String>,
    password: Option<String>,
}

impl Correction {
    fn parse(body: &Map<String, Value>) -> ApiResult<Self> {
        let mut correction = Self { full_name: None, marketing: None, email: None, password: None };
        for (field, value) in body {
            let text = || {
                value.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::invalid(ErrorCode::InvalidType, field, format!("{field} must be a string"))
                })
            };
            match field.as_str() {
                "full_name" => correction.full_name = Some(check_full_name(&text()?)?),
                "marketing_consent" => {
                    let flag = value.as_bool().ok_or_else(|| {
                        ApiError::invalid(ErrorCode::InvalidType, field, "marketing_consent must be true or false")
                    })?;
                    correction.marketing = Some(flag);
                }
                "email" => correction.email = Some(normalize_email(&text()?)?),
                "current_password" => correction.password = Some(text()?),
                other => return Err(not_correctable(other)),
            }
        }
        if correction.full_name.is_none() && correction.marketing.is_none() && correction.email.is_none() {
            return Err(ApiError::invalid(
                ErrorCode::NothingToChange,
                "full_name",
                "send at least one of full_name, marketing_consent, email, data_residency",
            ));
        }
        Ok(correction)
    }
}

fn not_correctable(field: &str) -> ApiError {
    match field {
        "aadhaar" => ApiError::invalid(
            ErrorCode::KycField,
            field,
            "the Aadhaar is verified again through DigiLocker (POST /v1/kyc/digilocker), not here; we keep only its last four digits",
        ),
        "pan" | "gstin" | "name_on_pan" => ApiError::invalid(
            ErrorCode::KycField,
            field,
            format!("{field} is corrected by resubmitting KYC (POST /v1/kyc), not here"),
        ),
        "date_of_birth" => ApiError::invalid(
            ErrorCode::NotEditable,
            field,
            "date_of_birth cannot be changed here: write to the grievance officer (GET /v1/privacy) with proof",
        ),
        other => ApiError::invalid(
            ErrorCode::UnknownField,
            other,
            format!(
                "{other} is not a field of the account; editable: full_name, marketing_consent, email (with current_password), data_residency"
            ),
        ),
    }
}
