//! Dashboard authentication: login with throttling, login records, sessions and logout.
//!
//! Items (main table):
//! - `SESSION#<sha256(token)>` / `SESSION`: a session; `expires_at` ends it. The token itself is never stored.
//! - `USER#<id>` / `SESSION#<sha256(token)>`: the user's index of sessions, so all can be listed and revoked
//!   at once. A session's public id is `ses_` and the first 16 hex digits of its digest; the session item
//!   records when it was last seen (at most every 5 minutes, so a busy dashboard is not a write per request).
//! - `USER#<id>` / `LOGIN#<millis>#<rand>`: every login attempt on an account's email (IP, user agent,
//!   outcome), kept for the login-record retention window. Kept with the account, not the email, so an
//!   email change keeps the history and a later account with a recycled email never sees it.
//! - `LOGIN#<email>` / `<millis>#<rand>`: attempts on an email no account has, for the same window.
//! - `LOGINFAIL#<email>` / `WINDOW`: the email's throttling window: `remaining` password checks and a
//!   `window` id; it starts at the first attempt and expires at the window's end. Every password check
//!   (login, and the re-checks of account changes and closure) reserves one with a conditional decrement
//!   *before* the password is verified, so parallel guesses can never exceed the limit; a correct password
//!   gives its reservation back, so only failures count.

use crate::error::ErrorCode;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accounts::{Account, AccountStatus, AccountStore, ClientInfo, time_sort_key, timestamp, user_pk};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::passwords;
use crate::retention::Span;
use crate::secrets::{random_token, sha256_hex};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult, Table, Update,
    WriteOp,
};

/// The dashboard session cookie.
pub const SESSION_COOKIE: &str = "inferex_session";
/// The readable cookie that carries the session's CSRF token, for the dashboard's script to send back.
pub const CSRF_COOKIE: &str = "inferex_csrf";
/// The header a state-changing request made with the session cookie must carry (see `csrf_token`).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session. It is derived from the session token, so nothing more is stored, and it
/// cannot be made without the HttpOnly cookie's value, which no page and no other site can read; it
/// differs from the stored digest, so a leaked session item does not yield it either.
pub fn csrf_token(session_token: &str) -> String {
    sha256_hex(&format!("inferex-csrf-v1:{session_token}"))
}

const INVALID_CREDENTIALS: &str = "incorrect email or password";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRecord {
    user_id: String,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen_at: Option<DateTime<Utc>>,
    /// The account's session epoch when it was opened (see `Account::session_epoch`).
    #[serde(default)]
    epoch: i64,
}

/// How often a session's `last_seen_at` is written at most.
const LAST_SEEN_EVERY: chrono::Duration = chrono::Duration::minutes(5);

/// The public id of a session (never its digest in full, never its token).
pub fn session_id(token_hash: &str) -> String {
    format!("ses_{}", token_hash.get(..16).unwrap_or(token_hash))
}

/// `GET /v1/auth/sessions`: one live session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub last_seen_at: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub expires_at: Option<String>,
    /// The session this request was made with.
    pub current: bool,
}

/// A live session, identified by the digest of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_hash: String,
    pub user_id: String,
    pub expires_at: i64,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The account's session epoch it was opened under; it lives only while the account keeps it.
    pub epoch: i64,
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

use crate::store::schema::{self, login_window_pk as failures_pk, logins_pk, session_pk};

fn session_index_sk(token_hash: &str) -> String {
    schema::prefixed(schema::prefix::SESSION, token_hash)
}

const SESSION_SK: &str = schema::sk::SESSION;

/// Deletes one session, given its entry in the user's index (`USER#<id>` / `SESSION#<hash>`).
pub fn session_deletes(index: &Item) -> [WriteOp; 2] {
    let hash = index.sk.trim_start_matches(schema::prefix::SESSION);
    [
        WriteOp::Delete(Delete {
            table: Table::Main,
            pk: index.pk.clone(),
            sk: index.sk.clone(),
            condition: Condition::Always,
        }),
        WriteOp::Delete(Delete {
            table: Table::Main,
            pk: session_pk(hash),
            sk: SESSION_SK.into(),
            condition: Condition::Always,
        }),
    ]
}

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
            last_seen_at: record.last_seen_at.or(Some(record.created_at)),
            epoch: record.epoch,
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
    /// The end of a throttling window that starts now.
    pub failure: i64,
}

/// Reserves one use of the counted window `pk` / `WINDOW` (`limit` uses; a window starts at its first use and
/// ends at `window_end`): a conditional decrement, so parallel callers can never take more than the limit.
/// Used for password checks and KYC submissions.
pub async fn reserve_in_window<S: ItemStore + ?Sized>(
    store: &S,
    pk: &str,
    limit: u32,
    window_end: i64,
    now: i64,
) -> StoreResult<Reservation> {
    for _ in 0..RESERVE_ATTEMPTS {
        let take = Update::new(Table::Main, pk, WINDOW_SK)
            .add("remaining", -1)
            .when(Condition::AttrAtLeast("remaining".into(), 1));
        if let Some(item) = store.update(take).await.applied()? {
            let window = item.attrs.get("window").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            return Ok(Reservation::Reserved { window });
        }
        match store.get(Table::Main, pk, WINDOW_SK).await? {
            Some(item) if item.attrs.get("remaining").and_then(|v| v.as_i64()).unwrap_or(0) < 1 => {
                let ends = item.expires_at.unwrap_or(window_end);
                return Ok(Reservation::Throttled { retry_after_secs: (ends - now).max(1) as u64 });
            }
            // Another caller changed the window between our two reads: try again.
            Some(_) => continue,
            None => {
                let window = crate::secrets::random_suffix();
                let opened = serde_json::json!({ "remaining": i64::from(limit) - 1, "window": window });
                let put = Put {
                    table: Table::Main,
                    item: Item::from_record(pk, WINDOW_SK, &opened, Some(window_end))?,
                    condition: Condition::NotExists,
                };
                if store.put(put).await.applied()?.is_some() {
                    return Ok(Reservation::Reserved { window });
                }
            }
        }
    }
    // Under this much contention on one window, refusing is the safe answer.
    Ok(Reservation::Throttled { retry_after_secs: 1 })
}

/// Gives one use back to the window it was reserved in; a window that has ended meanwhile is left alone.
pub async fn release_in_window<S: ItemStore + ?Sized>(store: &S, pk: &str, window: &str) -> StoreResult<()> {
    let give_back = Update::new(Table::Main, pk, WINDOW_SK)
        .add("remaining", 1)
        .when(Condition::AttrEquals("window".into(), serde_json::json!(window)));
    store.update(give_back).await.or_not_needed()
}

/// A password check reserved in an email's throttling window, or the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved in the window with this id (to give it back after a correct password).
    Reserved { window: String },
    /// The window's checks are used up; it ends in this many seconds.
    Throttled { retry_after_secs: u64 },
}

const WINDOW_SK: &str = schema::sk::WINDOW;
/// Reservations retried when concurrent ones keep changing the window (then the check is refused).
const RESERVE_ATTEMPTS: usize = 8;

#[async_trait]
pub trait LoginStore: Send + Sync {
    /// Reserves one password check in the email's throttling window (`limit` per window), starting a new
    /// window ending at `window_end` when none is live.
    async fn reserve_check(&self, email: &str, limit: u32, window_end: i64, now: i64) -> StoreResult<Reservation>;
    /// Gives a reservation back (the password was right); a window that has ended meanwhile is left alone.
    async fn release_check(&self, email: &str, window: &str) -> StoreResult<()>;
    /// Records an attempt that did not create a session.
    async fn record_attempt(&self, attempt: &LoginAttempt, expiries: Expiries) -> StoreResult<()>;
    /// Records a successful login and opens its session, atomically, only while the account is active and
    /// its password hash is still `verified_hash`.
    async fn record_login(
        &self,
        attempt: &LoginAttempt,
        expiries: Expiries,
        session: &Session,
        verified_hash: &str,
        extra: Vec<WriteOp>,
    ) -> StoreResult<()>;
    /// The newest attempts on an account.
    async fn login_history(&self, user_id: &str, limit: u32) -> StoreResult<Vec<LoginAttempt>>;
}

const LOGIN_PREFIX: &str = schema::prefix::LOGIN;

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
    async fn reserve_check(&self, email: &str, limit: u32, window_end: i64, now: i64) -> StoreResult<Reservation> {
        reserve_in_window(self, &failures_pk(email), limit, window_end, now).await
    }

    async fn release_check(&self, email: &str, window: &str) -> StoreResult<()> {
        release_in_window(self, &failures_pk(email), window).await
    }

    async fn record_attempt(&self, attempt: &LoginAttempt, expiries: Expiries) -> StoreResult<()> {
        self.transact(vec![attempt_put(attempt, expiries.record)?]).await
    }

    async fn record_login(
        &self,
        attempt: &LoginAttempt,
        expiries: Expiries,
        session: &Session,
        verified_hash: &str,
        extra: Vec<WriteOp>,
    ) -> StoreResult<()> {
        let record = SessionRecord {
            user_id: session.user_id.clone(),
            created_at: attempt.at,
            ip: attempt.ip.clone(),
            user_agent: attempt.user_agent.clone(),
            last_seen_at: None,
            epoch: session.epoch,
        };
        let mut ops = vec![
            // A login racing the account's closure, or a password change, gets no session once that commits
            // (the change then ends every session that committed before it).
            crate::accounts::require_active_with_password(&session.user_id, verified_hash),
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
        ];
        ops.extend(extra);
        self.transact(ops).await
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

    let hash = account.as_ref().map(|a| a.password_hash.clone());
    let verified = match check_password(store, clock, config, &email, hash, password).await {
        Ok(verified) => verified,
        Err(throttled @ ApiError::TooManyRequests { .. }) => {
            attempt.outcome = LoginOutcome::Throttled;
            store.record_attempt(&attempt, expiries).await?;
            return Err(throttled);
        }
        Err(e) => return Err(e),
    };
    let Some(account) = account.filter(|_| verified) else {
        store.record_attempt(&attempt, expiries).await?;
        return Err(ApiError::unauthenticated(ErrorCode::InvalidCredentials, INVALID_CREDENTIALS));
    };

    let token = random_token();
    let expires_at = now + config.session_ttl;
    let session = Session {
        token_hash: sha256_hex(&token),
        user_id: account.id.clone(),
        expires_at: expires_at.timestamp(),
        last_seen_at: Some(now),
        epoch: account.session_epoch,
    };
    attempt.success = true;
    attempt.outcome = LoginOutcome::Success;
    let alert = match is_new_place(store, &account, client, config, now).await? {
        true => {
            let mail = OutboxMail::new(MailKind::NewSignIn, &account.id, now)
                .param("ip", client.ip.clone().unwrap_or_else(|| "unknown".into()))
                .param("device", client.user_agent.clone().unwrap_or_else(|| "unknown".into()));
            vec![enqueue(&mail)?]
        }
        false => Vec::new(),
    };
    match store.record_login(&attempt, expiries, &session, &account.password_hash, alert).await {
        Ok(()) => {}
        Err(StoreError::ConditionFailed) => {
            return Err(ApiError::unauthenticated(ErrorCode::InvalidCredentials, INVALID_CREDENTIALS));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(IssuedSession { token, expires_at, max_age_secs: config.session_ttl.num_seconds() })
}

/// How far back a sign-in's device and IP are compared: the account's latest attempts.
const KNOWN_PLACES_LOOKBACK: u32 = 100;

/// Whether a sign-in comes from a device (user agent) or an IP that no earlier successful sign-in among the
/// latest attempts used. Only an account's very first sign-in is not new (nothing to compare with): one
/// whose earlier sign-ins are out of sight (pushed out by failed attempts, or past the login records'
/// retention) is.
async fn is_new_place<S: LoginStore + ?Sized>(
    store: &S,
    account: &Account,
    client: &ClientInfo,
    config: &Config,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let history = store.login_history(&account.id, KNOWN_PLACES_LOOKBACK).await?;
    let earlier: Vec<&LoginAttempt> = history.iter().filter(|a| a.success).collect();
    if earlier.is_empty() {
        let records_kept = chrono::Duration::days(i64::from(config.retention.login_record_days));
        return Ok(!history.is_empty() || now - account.created_at > records_kept);
    }
    let ip_known = earlier.iter().any(|a| a.ip == client.ip);
    let device_known = earlier.iter().any(|a| a.user_agent == client.user_agent);
    Ok(!(ip_known && device_known))
}

/// Checks a password under the throttle of `email` (login, and the re-checks of account changes and
/// closure): the check is reserved before the slow hash is computed, so any number of parallel guesses
/// verifies at most the limit; a correct password gives its reservation back. `hash` is `None` for an
/// email no account has: the same work is done and the answer is `false`. A 429 when the window is used up.
pub async fn check_password<S: LoginStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    email: &str,
    hash: Option<String>,
    password: String,
) -> ApiResult<bool> {
    let now = clock.now();
    let window_end = (now + config.login_window).timestamp();
    let window = match store.reserve_check(email, config.login_max_failures, window_end, now.timestamp()).await? {
        Reservation::Reserved { window } => window,
        Reservation::Throttled { retry_after_secs } => {
            return Err(ApiError::TooManyRequests {
                code: ErrorCode::TooManyAttempts,
                message: format!("too many failed password attempts; try again in {retry_after_secs} seconds"),
                retry_after_secs,
            });
        }
    };
    let verified =
        password.chars().count() <= passwords::MAX_PASSWORD_CHARS && passwords::verify_async(password, hash).await?;
    if verified {
        store.release_check(email, &window).await?;
    }
    Ok(verified)
}

/// The account behind a session; a session whose account is gone, or that was ended with all the account's
/// sessions (its epoch is past), no longer authenticates anyone.
pub async fn session_account<S: AccountStore + ?Sized>(store: &S, session: &Session) -> ApiResult<Account> {
    store
        .account(&session.user_id)
        .await?
        .filter(|a| a.status == AccountStatus::Active && a.session_epoch == session.epoch)
        .ok_or_else(|| ApiError::unauthenticated(ErrorCode::InvalidSession, "the session has ended; log in again"))
}

/// Ends every session of the account at once: the epoch they were opened under is left behind, in the
/// write of the change that calls for it (add it to the account's profile update).
pub fn end_every_session(update: crate::store::Update) -> crate::store::Update {
    update.add("session_epoch", 1)
}

/// Deletes the account's session items but `keep` (a digest): clean-up after [`end_every_session`], whose
/// write already ended them, so a failure here is only logged. Returns how many were deleted.
pub async fn clear_sessions<S: ItemStore + ?Sized>(store: &S, user_id: &str, keep: Option<&str>) -> usize {
    match revoke_sessions(store, user_id, keep).await {
        Ok(ended) => ended,
        Err(e) => {
            tracing::warn!(error = %e, %user_id, "ended sessions not all deleted; they expire on their own");
            0
        }
    }
}

/// `DELETE /v1/auth/sessions`: ends every session of the account, this one included, in one write.
/// Returns how many sessions were live.
pub async fn sign_out_everywhere<S: ItemStore + ?Sized>(store: &S, session: &Session) -> ApiResult<usize> {
    let account = session_account(store, session).await?;
    let live = session_index(store, &account.id).await?.len();
    let end = end_every_session(crate::accounts::profile_update(&account));
    if store.transact(vec![WriteOp::Update(end)]).await.applied()?.is_none() {
        return Err(ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed meanwhile; try again".into(),
            param: None,
        });
    }
    clear_sessions(store, &account.id, None).await;
    Ok(live)
}

/// Resolves a presented session token to its live session, whose account is still open.
pub async fn authenticate<S: SessionStore + AccountStore + ?Sized>(store: &S, token: &str) -> ApiResult<Session> {
    let unauthenticated =
        || ApiError::unauthenticated(ErrorCode::InvalidSession, "session is missing, expired or revoked; log in again");
    if token.is_empty() || token.len() > 256 {
        return Err(unauthenticated());
    }
    let session = store.session(&sha256_hex(token)).await?.ok_or_else(unauthenticated)?;
    session_account(store, &session).await?;
    Ok(session)
}

/// Records that a session was used now, at most every 5 minutes; best effort (a failed write only delays
/// what the session list shows).
pub async fn note_seen<S: ItemStore + ?Sized>(store: &S, session: &Session, now: DateTime<Utc>) {
    if session.last_seen_at.is_some_and(|seen| now - seen < LAST_SEEN_EVERY) {
        return;
    }
    let update = Update::new(Table::Main, session_pk(&session.token_hash), SESSION_SK)
        .set("last_seen_at", serde_json::json!(now))
        .when(Condition::Exists);
    if let Err(e) = store.update(update).await.or_not_needed() {
        tracing::debug!(error = %e, "session last-seen time not recorded");
    }
}

/// The account's index of sessions (`USER#<id>` / `SESSION#<digest>`), every page.
async fn session_index<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Vec<Item>> {
    let query = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(schema::prefix::SESSION.into()))
        .limit(100);
    crate::store::all_pages(store, query).await
}

fn index_digest(index: &Item) -> &str {
    index.sk.trim_start_matches(schema::prefix::SESSION)
}

/// `GET /v1/auth/sessions`: the account's live sessions, newest first.
pub async fn sessions<S: ItemStore + ?Sized>(store: &S, current: &Session) -> ApiResult<Vec<SessionView>> {
    let mut views = Vec::new();
    for index in session_index(store, &current.user_id).await? {
        let digest = index_digest(&index);
        // An index entry outlives its session only until the same expiry; expired sessions are not shown.
        let Some(item) = store.get(Table::Main, &session_pk(digest), SESSION_SK).await? else { continue };
        let record: SessionRecord = item.record()?;
        if record.epoch != current.epoch {
            // Ended with all the account's sessions; its item is only waiting to be deleted.
            continue;
        }
        views.push(SessionView {
            id: session_id(digest),
            created_at: timestamp(record.created_at),
            last_seen_at: record.last_seen_at.or(Some(record.created_at)).map(timestamp),
            ip: record.ip,
            user_agent: record.user_agent,
            expires_at: item.expires_at.and_then(|at| DateTime::from_timestamp(at, 0)).map(timestamp),
            current: digest == current.token_hash,
        });
    }
    views.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(views)
}

/// `DELETE /v1/auth/sessions/{id}`: ends one of the account's sessions (any other id is not found).
pub async fn revoke_session_by_id<S: ItemStore + ?Sized>(store: &S, user_id: &str, id: &str) -> ApiResult<()> {
    for index in session_index(store, user_id).await? {
        if session_id(index_digest(&index)) == id {
            store.transact(session_deletes(&index).to_vec()).await?;
            return Ok(());
        }
    }
    Err(ApiError::NotFound { code: ErrorCode::SessionNotFound, message: format!("no session {id} on this account") })
}

/// Ends every session of the account but `keep` (a digest), if given; returns how many ended.
pub async fn revoke_sessions<S: ItemStore + ?Sized>(store: &S, user_id: &str, keep: Option<&str>) -> ApiResult<usize> {
    let mut ended = 0;
    for index in session_index(store, user_id).await? {
        if keep == Some(index_digest(&index)) {
            continue;
        }
        store.transact(session_deletes(&index).to_vec()).await?;
        ended += 1;
    }
    Ok(ended)
}

/// `POST /v1/account/password`: changes the password after checking the current one (under the login
/// throttle), and ends every other session of the account; the session that changed it goes on.
pub async fn change_password<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    session: &Session,
    (current_password, new_password): (String, String),
) -> ApiResult<usize> {
    let account = session_account(store, session).await?;
    if current_password.is_empty() {
        return Err(ApiError::invalid(ErrorCode::MissingField, "current_password", "current_password is required"));
    }
    crate::accounts::check_new_password_in(&new_password, &account.email, "new_password")?;
    let hash = Some(account.password_hash.clone());
    if !check_password(store, clock, config, &account.email, hash, current_password).await? {
        return Err(ApiError::Forbidden {
            code: ErrorCode::IncorrectPassword,
            message: "current_password is incorrect".into(),
        });
    }
    let new_hash = passwords::hash_async(new_password).await?;
    // Every session ends with the change, in its write; this one moves on to the new epoch with it.
    let update =
        end_every_session(crate::accounts::profile_update(&account)).set("password_hash", serde_json::json!(new_hash));
    let this_session = Update::new(Table::Main, session_pk(&session.token_hash), SESSION_SK)
        .add("epoch", 1)
        .when(Condition::AttrAbsentOrEquals("epoch".into(), serde_json::json!(session.epoch)));
    let told = OutboxMail::new(MailKind::PasswordChanged, &account.id, clock.now())
        .param("how", "from a signed-in session, with the current password");
    let ops = vec![WriteOp::Update(update), WriteOp::Update(this_session), enqueue(&told)?];
    if store.transact(ops).await.applied()?.is_none() {
        return Err(ApiError::Conflict {
            code: ErrorCode::AccountChanged,
            message: "the account changed while the password was changed; try again".into(),
            param: None,
        });
    }
    Ok(clear_sessions(store, &session.user_id, Some(&session.token_hash)).await)
}
