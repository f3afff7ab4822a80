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

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accounts::timestamp;
use crate::secrets::sha256_hex;

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

mod logins;
mod sessions;

pub use logins::export_for as login_export;
pub use logins::{
    Expiries, IssuedSession, LoginStore, Reservation, SuccessfulLogin, Take, WindowTake, change_password,
    check_password, login, release_in_window, reserve_in_window, take_in_window,
};
pub use sessions::export_for as sessions_export;
pub use sessions::{
    SessionStore, after_closure, authenticate, clear_sessions, end_every_session, note_seen, revoke_session_by_id,
    revoke_sessions, session_account, session_deletes, sessions, sign_out_everywhere,
};
