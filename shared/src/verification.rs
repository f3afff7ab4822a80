//! Links sent by e-mail: proving an address (at signup, on request, and before an address change takes
//! effect) and resetting a forgotten password. Tokens are random, shown only in the e-mail, stored hashed,
//! and used once (the transaction that uses one deletes it).
//!
//! Items (main table):
//! - `EMAILTOKEN#<sha256(token)>` / `TOKEN`: `{user_id, email}`, 24 hours. `email` is the address the link
//!   proves: the account's own, or the new address of a change.
//! - `RESETTOKEN#<sha256(token)>` / `TOKEN`: `{user_id, password_hash}`, 30 minutes, and only while the
//!   password is still the one it was issued against: any password change voids every reset link.
//! - `RATE#verify-email#<user id>`, `RATE#password-reset#<email>`, `RATE#password-reset-ip#<ip>` / `WINDOW`:
//!   counted windows of an hour ([`crate::auth::reserve_in_window`]).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{
    self, Account, AccountStatus, AccountStore, ClientInfo, email_change_ops, profile_update, require_active,
    require_active_with_password,
};
use crate::auth::{Reservation, reserve_in_window, revoke_sessions};
use crate::clock::Clock;
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::passwords;
use crate::retention::{EMAIL_TOKEN_LIFETIME, RESET_TOKEN_LIFETIME};
use crate::secrets::{random_token, sha256_hex};
use crate::store::schema::{self, sk};
use crate::store::{Condition, Conditional, Delete, Item, ItemStore, Put, StoreResult, Table, WriteOp};

/// Verification e-mails an account may ask for per hour (the one sent at signup is not counted).
pub const RESENDS_PER_HOUR: u32 = 3;
/// Password-reset requests per address, and per client IP, per hour (whether or not the address has an
/// account, so the limit says nothing about that).
pub const RESETS_PER_ADDRESS_PER_HOUR: u32 = 3;
pub const RESETS_PER_IP_PER_HOUR: u32 = 20;
const RATE_WINDOW: Duration = Duration::hours(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailToken {
    user_id: String,
    email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResetToken {
    user_id: String,
    password_hash: String,
}

fn invalid_token() -> ApiError {
    ApiError::invalid("invalid_token", "token", "this link is invalid, already used or expired; ask for a new one")
}

fn missing_token(token: &str) -> ApiResult<()> {
    if token.trim().is_empty() {
        return Err(ApiError::invalid("missing_field", "token", "token is required"));
    }
    Ok(())
}

fn token_delete(pk: String) -> WriteOp {
    WriteOp::Delete(Delete { table: Table::Main, pk, sk: sk::TOKEN.into(), condition: Condition::Exists })
}

/// A verification link for `address` (the account's own, or the new address of a change) and its message,
/// to write in the transaction that creates the need for it.
pub fn verification_ops(account: &Account, address: &str, now: DateTime<Utc>) -> StoreResult<Vec<WriteOp>> {
    let token = random_token();
    let record = EmailToken { user_id: account.id.clone(), email: address.to_owned() };
    let expires_at = (now + EMAIL_TOKEN_LIFETIME).timestamp();
    let put = WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(schema::email_token_pk(&sha256_hex(&token)), sk::TOKEN, &record, Some(expires_at))?,
        condition: Condition::NotExists,
    });
    let kind = if address == account.email { MailKind::VerifyEmail } else { MailKind::ConfirmEmailChange };
    let mail = OutboxMail::new(kind, &account.id, now).to(address).param("token", token);
    Ok(vec![put, enqueue(&mail)?])
}

/// What a new account's transaction also writes: the link that verifies its address, and its message.
pub fn signup_ops(account: &Account) -> StoreResult<Vec<WriteOp>> {
    verification_ops(account, &account.email, account.created_at)
}

/// `POST /v1/auth/verify-email`: uses a verification link. For the account's own address it marks the
/// address verified; for the new address of a change, the change takes effect (the address claim moves, and
/// both addresses are told).
pub async fn verify_email<S: ItemStore + ?Sized>(store: &S, clock: &dyn Clock, token: &str) -> ApiResult<Account> {
    missing_token(token)?;
    let pk = schema::email_token_pk(&sha256_hex(token));
    let record: EmailToken = store.get(Table::Main, &pk, sk::TOKEN).await?.ok_or_else(invalid_token)?.record()?;
    let account = store
        .account(&record.user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active)
        .ok_or_else(invalid_token)?;
    let now = clock.now();
    let mut ops = vec![token_delete(pk)];
    if record.email == account.email {
        ops.push(WriteOp::Update(profile_update(&account).set("email_verified", json!(true))));
    } else if account.pending_email.as_deref() == Some(record.email.as_str()) {
        let new_email = record.email.as_str();
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
        if record.email != account.email && store.email_claimed(&record.email).await? {
            return Err(accounts::email_taken());
        }
        return Err(invalid_token());
    }
    store.account(&account.id).await?.ok_or_else(invalid_token)
}

fn throttled(what: &str, retry_after_secs: u64) -> ApiError {
    ApiError::TooManyRequests {
        code: "too_many_requests",
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
pub async fn resend<S: ItemStore + ?Sized>(store: &S, clock: &dyn Clock, user_id: &str) -> ApiResult<String> {
    let account = store
        .account(user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active)
        .ok_or_else(|| ApiError::unauthenticated("invalid_session", "the account is closed"))?;
    let address = match (&account.pending_email, account.email_verified) {
        (Some(pending), _) => pending.clone(),
        (None, false) => account.email.clone(),
        (None, true) => {
            return Err(ApiError::Conflict {
                code: "email_already_verified",
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
pub async fn request_reset<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    email: &str,
    client: &ClientInfo,
) -> ApiResult<()> {
    let email = accounts::normalize_email(email)?;
    let now = clock.now();
    if let Some(ip) = &client.ip {
        let pk = schema::rate_pk("password-reset-ip", ip);
        take_rate(store, &pk, RESETS_PER_IP_PER_HOUR, now, "password reset").await?;
    }
    let pk = schema::rate_pk("password-reset", &email);
    take_rate(store, &pk, RESETS_PER_ADDRESS_PER_HOUR, now, "password reset").await?;
    let Some(account) = store.account_by_email(&email).await?.filter(|a| a.status == AccountStatus::Active) else {
        return Ok(());
    };
    let token = random_token();
    let record = ResetToken { user_id: account.id.clone(), password_hash: account.password_hash.clone() };
    let expires_at = (now + RESET_TOKEN_LIFETIME).timestamp();
    let put = WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(schema::reset_token_pk(&sha256_hex(&token)), sk::TOKEN, &record, Some(expires_at))?,
        condition: Condition::NotExists,
    });
    let mail = OutboxMail::new(MailKind::PasswordReset, &account.id, now).param("token", token);
    let ops = vec![put, enqueue(&mail)?, require_active_with_password(&account.id, &account.password_hash)];
    // Not applied: the account closed or its password changed in between; the answer stays the same.
    store.transact(ops).await.or_not_needed()?;
    Ok(())
}

/// `POST /v1/auth/password-reset/confirm`: sets the new password with a reset link, ends every session of
/// the account, and (the link reached its inbox) marks the address verified. Returns the sessions ended.
pub async fn confirm_reset<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    token: &str,
    password: String,
) -> ApiResult<usize> {
    missing_token(token)?;
    let pk = schema::reset_token_pk(&sha256_hex(token));
    let record: ResetToken = store.get(Table::Main, &pk, sk::TOKEN).await?.ok_or_else(invalid_token)?.record()?;
    let account = store
        .account(&record.user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active && a.password_hash == record.password_hash)
        .ok_or_else(invalid_token)?;
    accounts::check_new_password_in(&password, &account.email, "password")?;
    let new_hash = passwords::hash_async(password).await?;
    let now = clock.now();
    let changed =
        OutboxMail::new(MailKind::PasswordChanged, &account.id, now).param("how", "with a password-reset link");
    let ops = vec![
        token_delete(pk),
        WriteOp::Update(
            profile_update(&account).set("password_hash", json!(new_hash)).set("email_verified", json!(true)),
        ),
        enqueue(&changed)?,
    ];
    if store.transact(ops).await.applied()?.is_none() {
        return Err(invalid_token());
    }
    revoke_sessions(store, &account.id, None).await
}

/// The gate of top-ups and API keys beside KYC: 403 `email_not_verified` until the address is proven.
pub fn require_verified_email(account: &Account) -> ApiResult<()> {
    if account.email_verified {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: "email_not_verified",
        message: "verify your e-mail address first (POST /v1/auth/verify-email/resend sends a new link)".into(),
    })
}
