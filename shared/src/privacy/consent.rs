//! Notice and consent: the published notice, accepting the policy in force, and withdrawing marketing consent
//! with one click.

use serde_json::{Value, json};

use super::correction::active_account;
use super::{CLOSE_ATTEMPTS, PrivacyContext, RESPONSE_DAYS};
use crate::accounts::{self, Account, AccountStatus, AccountStore, ClientInfo};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{Conditional, StoreError, WriteOp};

/// What `GET /v1/privacy` publishes.
pub fn notice(ctx: &PrivacyContext) -> Value {
    let config = &ctx.ports.config;
    json!({
        "policy_version": config.policy_version,
        "retention": config.retention.published(config.session_ttl, config.login_window),
        "grievance_officer": { "name": config.grievance_name, "email": config.grievance_email },
        // DPDP Rules, rule 14(1): how to make a request, and what identifies the person (the account's e-mail).
        "how_to_ask": format!(
            "In the dashboard (the routes under rights), or by e-mail to {} or the grievance officer from the account's address (the identifier we need; a closed account's address works too). A nominee writes with the account's address and proof of the death or incapacity. Every request is acknowledged by e-mail and answered within {RESPONSE_DAYS} days.",
            config.privacy_email
        ),
        "grievances": {
            "how": "POST /v1/privacy/requests with kind grievance, or write to the grievance officer",
            "answered_within_days": RESPONSE_DAYS,
            "board": super::BOARD_COMPLAINT,
        },
        "contacts": { "privacy": config.privacy_email, "security": config.security_email },
        "response_days": RESPONSE_DAYS,
        "kyc": crate::kyc::consent::notice(),
        "model_providers": model_providers(),
        "data_residency": "Calls are processed within India where possible. To keep every call in India, set data_residency \"in\" on the account (PATCH /v1/account) or on an API key, or send the header x-inferex-data-residency: in; such a call goes only to a provider in India, and one that cannot be served there is refused, never sent abroad. A change of the account's or a key's setting applies within a minute; the header applies at once.",
        "rights": {
            "access": "POST /v1/privacy/exports, then GET /v1/privacy/exports/{id} for a download link",
            "correction": "PATCH /v1/account (KYC details: submit again with POST /v1/kyc, and POST /v1/kyc/digilocker)",
            "erasure": "DELETE /v1/account",
            "requests": "GET /v1/privacy/requests",
            "correction_by_a_person": "POST /v1/privacy/requests with kind correction (date of birth, KYC details), with what shows the right value",
            "nomination": "PUT /v1/account/nominee (name and e-mail of who may exercise these rights on your death or incapacity)",
        },
    })
}

/// The model providers a call's prompt may go to, where each processes it, and whether that is a transfer
/// outside India (DPDP Act, 2023, s.16; the notice names it): from the catalog the gateway routes by.
pub(super) fn model_providers() -> Vec<Value> {
    let Ok(catalog) = crate::catalog::Catalog::builtin() else { return Vec::new() };
    catalog
        .providers
        .iter()
        .map(|(name, site)| {
            json!({
                "name": name,
                "legal_name": site.legal_name,
                "country": site.country,
                "region": site.region,
                "receives": "the prompt and parameters of each API call routed to it; it returns the completion. InferexAI stores neither: its usage log holds the model, provider, country, tokens, latency, cost and time of each call.",
                "transfer_outside_india": site.country != crate::catalog::INDIA,
            })
        })
        .collect()
}

/// `POST /v1/unsubscribe?token=…`: a marketing message's one-click unsubscribe (RFC 8058). Withdraws the
/// account's marketing consent and records the withdrawal as a consent record; a second use, or a closed
/// account, changes nothing and answers the same.
pub async fn unsubscribe(ctx: &PrivacyContext, token: &str, client: &ClientInfo) -> ApiResult<()> {
    let invalid = || {
        ApiError::invalid(
            ErrorCode::InvalidToken,
            "token",
            "this unsubscribe link is invalid or has expired; marketing e-mails can be turned off in the dashboard",
        )
    };
    if token.is_empty() {
        return Err(invalid());
    }
    let store = ctx.ports.store.as_ref();
    let user_id = crate::notifications::delivery::unsubscribe_account(store, token).await?.ok_or_else(invalid)?;
    for _ in 0..CLOSE_ATTEMPTS {
        let Some(account) = store.account(&user_id).await?.filter(|a| a.status == AccountStatus::Active) else {
            return Ok(());
        };
        if !account.marketing_consent {
            return Ok(());
        }
        let now = ctx.ports.clock.now();
        let version = account.accepted_policy_version.clone();
        let ops = vec![
            WriteOp::Update(accounts::profile_update(&account).set("marketing_consent", json!(false))),
            accounts::consent_put(&account, unsubscribed(&version), client, now)?,
        ];
        if store.transact(ops).await.applied()?.is_some() {
            tracing::info!(%user_id, "marketing consent withdrawn through an unsubscribe link");
            return Ok(());
        }
    }
    Err(ApiError::Conflict {
        code: ErrorCode::AccountChanged,
        message: "the account changed meanwhile; use the link again".into(),
        param: None,
    })
}

/// `POST /v1/account/accept-policy {version}`: records the acceptance of the policy in force.
pub async fn accept_policy(
    ctx: &PrivacyContext,
    user_id: &str,
    version: &str,
    client: &ClientInfo,
) -> ApiResult<Account> {
    let current = &ctx.ports.config.policy_version;
    if version.trim() != current {
        return Err(ApiError::invalid(
            ErrorCode::TermsNotAccepted,
            "version",
            format!("the policy in force is version {current}; accept exactly that version"),
        ));
    }
    let store = ctx.ports.store.as_ref();
    let account = active_account(store.account(user_id).await?)?;
    if account.accepted_policy_version == *current {
        return Ok(account);
    }
    let now = ctx.ports.clock.now();
    let ops = vec![
        WriteOp::Update(accounts::profile_update(&account).set("accepted_policy_version", json!(current))),
        accounts::consent_put(
            &account,
            accounts::ConsentChoice {
                policy_version: current,
                marketing: account.marketing_consent,
                context: "policy_update",
            },
            client,
            now,
        )?,
    ];
    match store.transact(ops).await {
        Ok(()) => active_account(store.account(user_id).await?),
        Err(StoreError::ConditionFailed) => Err(ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed meanwhile; retry".into(),
            param: None,
        }),
        Err(e) => Err(e.into()),
    }
}

/// The consent a one-click unsubscribe records: the policy stays accepted, marketing is withdrawn.
fn unsubscribed(version: &str) -> accounts::ConsentChoice<'_> {
    accounts::ConsentChoice { policy_version: version, marketing: false, context: "unsubscribe_link" }
}
