//! Dashboard authentication: login with throttling, login records, sessions and logout.
//!
//! Items (main table):
//! - `SESSION#<sha256(token)>` / `SESSION`: a session; `expires_at` ends it. The token itself is never stored.
//! - `USER#<id>` / `SESSION#<sha256(token)>`: the user's index of sessions, so all can be revoked at once.
//! - `USER#<id>` / `LOGIN#<millis>#<rand>`: every login attempt on an account's email (IP, user agent,
//!   outcome), kept for the login-record retention window. Kept with the account, not the email, so an
//!   email change keeps the history and a later account with a recycled email never sees it.
//! - `LOGIN#<email>` / `<millis>#<rand>`: attempts on an email no account has, for the same window.
//! - `LOGINFAIL#<email>` / `<millis>#<rand>`: one marker per failed attempt that expires when it leaves the
//!   throttling window, so "failures in the window" is simply "live markers".

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accounts::{Account, AccountStatus, AccountStore, ClientInfo, time_sort_key, timestamp, user_pk};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::passwords;
use crate::retention::Span;
use crate::secrets::{random_token, sha256_hex};
use crate::store::{Condition, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, WriteOp};

/// The dashboard session cookie.
pub const SESSION_COOKIE: &str = "inferex_session";

const INVALID_CREDENTIALS: &str = "incorrect email or password";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRecord {
    user_id: String,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
}

/// A live session, identified by the digest of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_hash: String,
    pub user_id: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginOutcome {
    Success,
    InvalidCredentials,
    Throttled,
}

/// One login attempt as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginAttempt {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub success: bool,
    pub outcome: LoginOutcome,
    pub at: DateTime<Utc>,
}

/// What `GET /v1/account/logins` shows of an attempt.
#[derive(Debug, Clone, Serialize)]
pub struct LoginAttemptView {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub success: bool,
    pub outcome: LoginOutcome,
    pub at: String,
}

impl From<&LoginAttempt> for LoginAttemptView {
    fn from(a: &LoginAttempt) -> Self {
        Self {
            ip: a.ip.clone(),
            user_agent: a.user_agent.clone(),
            success: a.success,
            outcome: a.outcome,
            at: timestamp(a.at),
        }
    }
}

fn session_pk(token_hash: &str) -> String {
    format!("SESSION#{token_hash}")
}

fn session_index_sk(token_hash: &str) -> String {
    format!("SESSION#{token_hash}")
}

fn logins_pk(email: &str) -> String {
    format!("LOGIN#{email}")
}

fn failures_pk(email: &str) -> String {
    format!("LOGINFAIL#{email}")
}

const SESSION_SK: &str = "SESSION";

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn session(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    async fn revoke_session(&self, session: &Session) -> StoreResult<()>;
}

#[async_trait]
impl<T: ItemStore + ?Sized> SessionStore for T {
    async fn session(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let Some(item) = self.get(Table::Main, &session_pk(token_hash), SESSION_SK).await? else {
            return Ok(None);
        };
        let record: SessionRecord = item.record()?;
        Ok(Some(Session {
            token_hash: token_hash.to_owned(),
            user_id: record.user_id,
            expires_at: item.expires_at.unwrap_or(i64::MAX),
        }))
    }

    async fn revoke_session(&self, session: &Session) -> StoreResult<()> {
        self.transact(vec![
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: session_pk(&session.token_hash),
                sk: SESSION_SK.into(),
                condition: Condition::Always,
            }),
            WriteOp::Delete(Delete {
                table: Table::Main,
                pk: user_pk(&session.user_id),
                sk: session_index_sk(&session.token_hash),
                condition: Condition::Always,
            }),
        ])
        .await
    }
}

/// Where login records go and how long they stay.
#[derive(Debug, Clone, Copy)]
pub struct Expiries {
    /// `expires_at` of the attempt record (the login-record retention window).
    pub record: i64,
    /// `expires_at` of a failure marker (the end of the throttling window).
    pub failure: i64,
}

#[async_trait]
pub trait LoginStore: Send + Sync {
    /// The expiry times of the live failure markers for an email, newest first, at most `limit`.
    async fn recent_failures(&self, email: &str, limit: u32) -> StoreResult<Vec<i64>>;
    /// Records an attempt that did not create a session (with a failure marker when it was a failure).
    async fn record_attempt(&self, attempt: &LoginAttempt, expiries: Expiries) -> StoreResult<()>;
    /// Records a successful attempt and creates its session, atomically.
    async fn record_login(&self, attempt: &LoginAttempt, expiries: Expiries, session: &Session) -> StoreResult<()>;
    /// The newest attempts on an account.
    async fn login_history(&self, user_id: &str, limit: u32) -> StoreResult<Vec<LoginAttempt>>;
}

const LOGIN_PREFIX: &str = "LOGIN#";

fn attempt_put(attempt: &LoginAttempt, expires_at: i64) -> StoreResult<WriteOp> {
    let (pk, sk) = match &attempt.user_id {
        Some(user_id) => (user_pk(user_id), time_sort_key(LOGIN_PREFIX, attempt.at)),
        None => (logins_pk(&attempt.email), time_sort_key("", attempt.at)),
    };
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(pk, sk, attempt, Some(expires_at))?,
        condition: Condition::NotExists,
    }))
}

#[async_trait]
impl<T: ItemStore + ?Sized> LoginStore for T {
    async fn recent_failures(&self, email: &str, limit: u32) -> StoreResult<Vec<i64>> {
        let page = self.query(Query::new(Table::Main, failures_pk(email)).newest_first().limit(limit)).await?;
        Ok(page.items.iter().filter_map(|item| item.expires_at).collect())
    }

    async fn record_attempt(&self, attempt: &LoginAttempt, expiries: Expiries) -> StoreResult<()> {
        let mut ops = vec![attempt_put(attempt, expiries.record)?];
        if attempt.outcome == LoginOutcome::InvalidCredentials {
            ops.push(WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    failures_pk(&attempt.email),
                    time_sort_key("", attempt.at),
                    &serde_json::json!({}),
                    Some(expiries.failure),
                )?,
                condition: Condition::NotExists,
            }));
        }
        self.transact(ops).await
    }

    async fn record_login(&self, attempt: &LoginAttempt, expiries: Expiries, session: &Session) -> StoreResult<()> {
        let record = SessionRecord {
            user_id: session.user_id.clone(),
            created_at: attempt.at,
            ip: attempt.ip.clone(),
            user_agent: attempt.user_agent.clone(),
        };
        self.transact(vec![
            attempt_put(attempt, expiries.record)?,
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    session_pk(&session.token_hash),
                    SESSION_SK,
                    &record,
                    Some(session.expires_at),
                )?,
                condition: Condition::NotExists,
            }),
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(
                    user_pk(&session.user_id),
                    session_index_sk(&session.token_hash),
                    &serde_json::json!({ "created_at": attempt.at }),
                    Some(session.expires_at),
                )?,
                condition: Condition::NotExists,
            }),
        ])
        .await
    }

    async fn login_history(&self, user_id: &str, limit: u32) -> StoreResult<Vec<LoginAttempt>> {
        let query = Query::new(Table::Main, user_pk(user_id))
            .range(SortKeyRange::Prefix(LOGIN_PREFIX.into()))
            .newest_first()
            .limit(limit);
        let page = self.query(query).await?;
        page.items.iter().map(Item::record).collect()
    }
}

/// A session handed to the client: the token is shown once and only its digest is stored.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub max_age_secs: i64,
}

/// Checks credentials, applies throttling, records the attempt and opens a session.
pub async fn login<S: AccountStore + LoginStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    email: &str,
    password: String,
    client: &ClientInfo,
) -> ApiResult<IssuedSession> {
    // Throttling is keyed on the normalised email whether or not an account has it.
    let email: String = email.trim().to_lowercase().chars().take(254).collect();
    let now = clock.now();
    let expiries = Expiries {
        record: config.retention.until(Span::LoginRecords, now),
        failure: (now + config.login_window).timestamp(),
    };
    let mut attempt = LoginAttempt {
        email: email.clone(),
        user_id: None,
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
        success: false,
        outcome: LoginOutcome::InvalidCredentials,
        at: now,
    };

    let account = if email.is_empty() { None } else { store.account_by_email(&email).await? }
        .filter(|a| a.status == AccountStatus::Active);
    attempt.user_id = account.as_ref().map(|a| a.id.clone());

    let failures = store.recent_failures(&email, config.login_max_failures).await?;
    if failures.len() >= config.login_max_failures as usize {
        // The window frees up when the oldest of the counted failures expires.
        let frees_at = failures.iter().copied().min().unwrap_or(expiries.failure);
        attempt.outcome = LoginOutcome::Throttled;
        store.record_attempt(&attempt, expiries).await?;
        let retry_after_secs = (frees_at - now.timestamp()).max(1) as u64;
        return Err(ApiError::TooManyRequests {
            code: "too_many_attempts",
            message: format!("too many failed login attempts; try again in {retry_after_secs} seconds"),
            retry_after_secs,
        });
    }

    let verified = if password.chars().count() > passwords::MAX_PASSWORD_CHARS {
        false
    } else {
        passwords::verify_async(password, account.as_ref().map(|a| a.password_hash.clone())).await?
    };
    let Some(account) = account.filter(|_| verified) else {
        store.record_attempt(&attempt, expiries).await?;
        return Err(ApiError::unauthenticated("invalid_credentials", INVALID_CREDENTIALS));
    };

    let token = random_token();
    let expires_at = now + config.session_ttl;
    let session =
        Session { token_hash: sha256_hex(&token), user_id: account.id.clone(), expires_at: expires_at.timestamp() };
    attempt.success = true;
    attempt.outcome = LoginOutcome::Success;
    store.record_login(&attempt, expiries, &session).await?;
    Ok(IssuedSession { token, expires_at, max_age_secs: config.session_ttl.num_seconds() })
}

/// The account behind a session; a session whose account is gone no longer authenticates anyone.
pub async fn session_account<S: AccountStore + ?Sized>(store: &S, session: &Session) -> ApiResult<Account> {
    store
        .account(&session.user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active)
        .ok_or_else(|| ApiError::unauthenticated("invalid_session", "the session's account is closed or gone"))
}

/// Resolves a presented session token to its live session.
pub async fn authenticate<S: SessionStore + ?Sized>(store: &S, token: &str) -> ApiResult<Session> {
    let unauthenticated =
        || ApiError::unauthenticated("invalid_session", "session is missing, expired or revoked; log in again");
    if token.is_empty() || token.len() > 256 {
        return Err(unauthenticated());
    }
    store.session(&sha256_hex(token)).await?.ok_or_else(unauthenticated)
}
