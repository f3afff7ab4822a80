//! Links sent by e-mail: proving an address (at signup, on request, and before an address change takes
//! effect) and resetting a forgotten password. A change that needs a link queues its message here; the
//! mailer mints the link's token when it sends it (`crate::links`), so no raw token is ever stored.
//!
//! Items (main table): `RATE#verify-email#<user id>`, `RATE#password-reset#<email>`,
//! `RATE#password-reset-ip#<ip or IPv6 /64>` / `WINDOW`: counted windows of an hour
//! ([`crate::auth::reserve_in_window`]).

use crate::error::ErrorCode;
use crate::ports::Ports;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;

use crate::accounts::{
    self, Account, AccountStatus, AccountStore, ClientInfo, email_change_ops, profile_update, require_active,
    require_active_with_password,
};
use crate::auth::{Reservation, clear_sessions, end_every_session, reserve_in_window};
use crate::error::{ApiError, ApiResult};
use crate::links;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::passwords;
use crate::store::schema;
use crate::store::{Conditional, ItemStore, StoreResult, WriteOp};

/// Verification e-mails an account may ask for per hour (the one sent at signup is not counted).
pub const RESENDS_PER_HOUR: u32 = 3;
/// Password-reset requests per address, and per client IP, per hour (whether or not the address has an
/// account, so the limit says nothing about that).
pub const RESETS_PER_ADDRESS_PER_HOUR: u32 = 3;
pub const RESETS_PER_IP_PER_HOUR: u32 = 20;
const RATE_WINDOW: Duration = Duration::hours(1);

fn invalid_token() -> ApiError {
    ApiError::invalid(
        ErrorCode::InvalidToken,
        "token",
        "this link is invalid, already used or expired; ask for a new one",
    )
}

fn missing_token(token: &str) -> ApiResult<()> {
    if token.trim().is_empty() {
        return Err(ApiError::invalid(ErrorCode::MissingField, "token", "token is required"));
    }
    Ok(())
}

/// The message with a verification link for `address` (the account's own, or the new address of a change),
/// to write in the transaction that creates the need for it; the mailer mints the link.
pub fn verification_ops(account: &Account, address: &str, now: DateTime<Utc>) -> StoreResult<Vec<WriteOp>> {
    let kind = if address == account.email { MailKind::VerifyEmail } else { MailKind::ConfirmEmailChange };
    Ok(vec![enqueue(&OutboxMail::new(kind, &account.id, now).to(address))?])
}

/// What a new account's transaction also writes: the link that verifies its address, and its message.
pub fn signup_ops(account: &Account) -> StoreResult<Vec<WriteOp>> {
    verification_ops(account, &account.email, account.created_at)
}

/// Owners told of signups with their address, at most this often each.
const SIGNUP_ATTEMPT_NOTICES_PER_HOUR: u32 = 1;

/// `POST /v1/auth/signup`: creates the account and mails its verification link. An address that already
/// has an account gets the same answer (the account that would have been, not stored), and its owner an
/// e-mail saying someone tried (at most one an hour), so signup tells nobody which addresses have accounts,
/// as the password-reset form tells nobody.
pub async fn signup(ports: &Ports, request: accounts::SignupRequest, client: &ClientInfo) -> ApiResult<Account> {
    match accounts::signup(ports, request, client, signup_ops).await? {
        accounts::SignedUp::Created(account) => Ok(account),
        accounts::SignedUp::AddressTaken(unsaved) => {
            tell_owner_of_signup(ports, &unsaved.email).await?;
            Ok(unsaved)
        }
    }
}

async fn tell_owner_of_signup(ports: &Ports, email: &str) -> ApiResult<()> {
    let store = ports.store();
    let now = ports.clock().now();
    let Some(owner) = store.account_by_email(email).await?.filter(|a| a.status == AccountStatus::Active) else {
        return Ok(());
    };
    let pk = schema::rate_pk("signup-attempt", &owner.id);
    let window_end = (now + RATE_WINDOW).timestamp();
    if let Reservation::Throttled { .. } =
        reserve_in_window(store, &pk, SIGNUP_ATTEMPT_NOTICES_PER_HOUR, window_end, now.timestamp()).await?
    {
        return Ok(());
    }
    let told = OutboxMail::new(MailKind::SignupAttempt, &owner.id, now);
    store.transact(vec![enqueue(&told)?, require_active(&owner.id)]).await.or_not_needed()?;
    Ok(())
}

/// What `POST /v1/auth/verify-email` answers: the address and that it is verified, nothing else of the
/// account (whoever holds a link learns no more than the mailbox already told them).
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub email: String,
    pub email_verified: bool,
}

/// `POST /v1/auth/verify-email`: uses a verification link. For the account's own address it marks the
/// address verified. For the new address of a change, the change takes effect (the address claim moves, and
/// both addresses are told), and only from a session of the account: a link that reached a mistyped address
/// cannot move someone else's account to it. `session_user` is the id of the caller's session, if any.
pub async fn verify_email(ports: &Ports, token: &str, session_user: Option<&str>) -> ApiResult<Verified> {
    let store = ports.store();
    let clock = ports.clock();
    missing_token(token)?;
    let link = links::email_link(store, token).await?.ok_or_else(invalid_token)?;
    let account =
        store.account(&link.user_id).await?.filter(|a| a.status == AccountStatus::Active).ok_or_else(invalid_token)?;
    let now = clock.now();
    let mut ops = vec![links::email_link_used(token)];
    if link.email == account.email {
        ops.push(WriteOp::Update(profile_update(&account).set("email_verified", json!(true))));
    } else if account.pending_email.as_deref() == Some(link.email.as_str()) {
        if session_user != Some(account.id.as_str()) {
            return Err(ApiError::unauthenticated(
                ErrorCode::SessionRequired,
                "sign in to the account whose address changes, then open the link again",
            ));
        }
        let new_email = link.email.as_str();
        let change = profile_update(&account)
            .set("email", json!(new_email))
            .set("email_verified", json!(true))
            .remove("pending_email");
        ops.push(WriteOp::Update(change));
        ops.extend(email_change_ops(&account, new_email)?);
        for to in [account.email.as_str(), new_email] {
            let told = OutboxMail::new(MailKind::EmailChanged, &account.id, now)
                .to(to)
                .param("old_email", account.email.clone())
                .param("new_email", new_email);
            ops.push(enqueue(&told)?);
        }
    } else {
        // A link for an address the account no longer has or wants (superseded by a later change).
        return Err(invalid_token());
    }
    if store.transact(ops).await.applied()?.is_none() {
        if link.email != account.email && store.email_claimed(&link.email).await? {
            return Err(accounts::email_taken());
        }
        return Err(invalid_token());
    }
    Ok(Verified { email: link.email, email_verified: true })
}

fn throttled(what: &str, retry_after_secs: u64) -> ApiError {
    ApiError::TooManyRequests {
        code: ErrorCode::TooManyRequests,
        message: format!("too many {what} requests; try again in {retry_after_secs} seconds"),
        retry_after_secs,
    }
}

async fn take_rate<S: ItemStore + ?Sized>(
    store: &S,
    pk: &str,
    limit: u32,
    now: DateTime<Utc>,
    what: &str,
) -> ApiResult<()> {
    match reserve_in_window(store, pk, limit, (now + RATE_WINDOW).timestamp(), now.timestamp()).await? {
        Reservation::Reserved { .. } => Ok(()),
        Reservation::Throttled { retry_after_secs } => Err(throttled(what, retry_after_secs)),
    }
}

/// `POST /v1/auth/verify-email/resend`: a new link for the address waiting to be verified (the pending
/// new address of a change, else the account's own). Returns that address.
pub async fn resend(ports: &Ports, user_id: &str) -> ApiResult<String> {
    let store = ports.store();
    let clock = ports.clock();
    let account = store
        .account(user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active)
        .ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the account is closed"))?;
    let address = match (&account.pending_email, account.email_verified) {
        (Some(pending), _) => pending.clone(),
        (None, false) => account.email.clone(),
        (None, true) => {
            return Err(ApiError::Conflict {
                code: ErrorCode::EmailAlreadyVerified,
                message: "this account's e-mail address is already verified".into(),
                param: None,
            });
        }
    };
    let now = clock.now();
    take_rate(store, &schema::rate_pk("verify-email", user_id), RESENDS_PER_HOUR, now, "verification e-mail").await?;
    let mut ops = verification_ops(&account, &address, now)?;
    ops.push(require_active(user_id));
    store.transact(ops).await?;
    Ok(address)
}

/// `POST /v1/auth/password-reset`: e-mails a reset link if an open account has the address. The answer is
/// the same either way (the caller learns nothing about who has an account); the rate limits apply to the
/// address and the client IP whether or not an account exists.
pub async fn request_reset(ports: &Ports, email: &str, client: &ClientInfo) -> ApiResult<()> {
    let store = ports.store();
    let clock = ports.clock();
    let email = accounts::normalize_email(email)?;
    let now = clock.now();
    if let Some(ip) = &client.ip {
        let pk = schema::rate_pk("password-reset-ip", &crate::accounts::ip_key(ip));
        take_rate(store, &pk, RESETS_PER_IP_PER_HOUR, now, "password reset").await?;
    }
    let pk = schema::rate_pk("password-reset", &email);
    take_rate(store, &pk, RESETS_PER_ADDRESS_PER_HOUR, now, "password reset").await?;
    let Some(account) = store.account_by_email(&email).await?.filter(|a| a.status == AccountStatus::Active) else {
        return Ok(());
    };
    // The mailer mints the link, bound to the address and password the account has then.
    let mail = OutboxMail::new(MailKind::PasswordReset, &account.id, now);
    let ops = vec![enqueue(&mail)?, require_active_with_password(&account.id, &account.password_hash)];
    // Not applied: the account closed or its password changed in between; the answer stays the same.
    store.transact(ops).await.or_not_needed()?;
    Ok(())
}

/// `POST /v1/auth/password-reset/confirm`: sets the new password with a reset link, ends every session of
/// the account, and (the link reached its inbox) marks the address verified. Returns the sessions ended.
pub async fn confirm_reset(ports: &Ports, token: &str, password: String) -> ApiResult<usize> {
    let store = ports.store();
    let clock = ports.clock();
    missing_token(token)?;
    let link = links::reset_link(store, token).await?.ok_or_else(invalid_token)?;
    let account = store
        .account(&link.user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active)
        .filter(|a| a.password_hash == link.password_hash && a.email == link.email)
        .ok_or_else(invalid_token)?;
    accounts::check_new_password_in(&password, &account.email, "password")?;
    let new_hash = passwords::hash_async(password).await?;
    let now = clock.now();
    let changed =
        OutboxMail::new(MailKind::PasswordChanged, &account.id, now).param("how", "with a password-reset link");
    let ops = vec![
        links::reset_link_used(token),
        // Every session ends in this write; their items are cleared after.
        WriteOp::Update(
            end_every_session(profile_update(&account))
                .set("password_hash", json!(new_hash))
                .set("email_verified", json!(true)),
        ),
        enqueue(&changed)?,
    ];
    if store.transact(ops).await.applied()?.is_none() {
        return Err(invalid_token());
    }
    Ok(clear_sessions(store, &account.id, None).await)
}

/// The confirmation message of an address change (`PATCH /v1/account`), under the same hourly limit as
/// resends: changes cannot be used to mail any address at will.
pub async fn change_request_ops<S: ItemStore + ?Sized>(
    store: &S,
    account: &Account,
    new_email: &str,
    now: DateTime<Utc>,
) -> ApiResult<Vec<WriteOp>> {
    let pk = schema::rate_pk("verify-email", &account.id);
    take_rate(store, &pk, RESENDS_PER_HOUR, now, "verification e-mail").await?;
    Ok(verification_ops(account, new_email, now)?)
}

/// The gate of top-ups and API keys beside KYC: 403 `email_not_verified` until the address is proven.
pub fn require_verified_email(account: &Account) -> ApiResult<()> {
    if account.email_verified {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: ErrorCode::EmailNotVerified,
        message: "verify your e-mail address first (POST /v1/auth/verify-email/resend sends a new link)".into(),
    })
}
