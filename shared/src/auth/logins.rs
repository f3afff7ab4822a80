//! Logging in: the throttle that reserves each password check before it runs, the login records, new-place
//! alerts, and changing the password.

use crate::ports::Ports;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sessions::{SESSION_SK, clear_sessions, end_every_session, session_account, session_index_sk};
use super::{INVALID_CREDENTIALS, LoginAttempt, LoginOutcome, Session, SessionRecord};
use crate::accounts::{Account, AccountStatus, AccountStore, ClientInfo, time_sort_key, user_pk};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::passwords;
use crate::retention::Span;
use crate::secrets::{random_token, sha256_hex};
use crate::store::schema::{self, login_window_pk as failures_pk, logins_pk, session_pk};
use crate::store::{
    Condition, Conditional, Item, ItemStore, Put, Query, SortKeyRange, StoreError, StoreResult, Table, Update, WriteOp,
};

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
    let take = Take { counter: "remaining", limit: i64::from(limit), amount: 1 };
    Ok(match take_in_window(store, pk, &[take], window_end, now).await? {
        WindowTake::Taken { window, .. } => Reservation::Reserved { window },
        WindowTake::Refused { retry_after_secs, .. } => Reservation::Throttled { retry_after_secs },
    })
}

/// What one use takes from one counter of a window that allows `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Take<'a> {
    pub counter: &'a str,
    pub limit: i64,
    pub amount: i64,
}

/// A use taken from a counted window, or the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowTake {
    /// Taken in the window with this id; what is left of each counter, in the order asked.
    Taken { window: String, remaining: Vec<i64> },
    /// Some counter had less left than the use takes; `used_up` when one has nothing left at all.
    Refused { retry_after_secs: u64, used_up: bool },
}

/// Takes one use from every counter of the window `pk` / `WINDOW` at once, or none: one conditional update
/// (each counter must hold its amount), and the window opened by its first use (its counters at their limits
/// less the use) when it is absent or has ended. Callers racing on it try again; under that much contention
/// refusing is the safe answer.
pub async fn take_in_window<S: ItemStore + ?Sized>(
    store: &S,
    pk: &str,
    takes: &[Take<'_>],
    window_end: i64,
    now: i64,
) -> StoreResult<WindowTake> {
    for _ in 0..RESERVE_ATTEMPTS {
        let mut update = Update::new(Table::Main, pk, WINDOW_SK);
        for take in takes {
            update = update.add(take.counter, -take.amount);
        }
        let enough = takes.iter().map(|t| Condition::AttrAtLeast(t.counter.into(), t.amount)).collect();
        if let Some(item) = store.update(update.when(Condition::All(enough))).await.applied()? {
            return Ok(taken(&item, takes));
        }
        match store.get(Table::Main, pk, WINDOW_SK).await? {
            Some(item) if takes.iter().any(|t| left(&item, t.counter) < t.amount) => {
                let ends = item.expires_at.unwrap_or(window_end);
                let used_up = takes.iter().any(|t| left(&item, t.counter) < 1);
                return Ok(WindowTake::Refused { retry_after_secs: (ends - now).max(1) as u64, used_up });
            }
            // Another caller changed the window between our two reads: try again.
            Some(_) => continue,
            None => {
                let mut opened = serde_json::Map::new();
                opened.insert("window".into(), serde_json::json!(crate::secrets::random_suffix()));
                for take in takes {
                    opened.insert(take.counter.into(), serde_json::json!(take.limit - take.amount));
                }
                let item = Item::from_record(pk, WINDOW_SK, &opened, Some(window_end))?;
                let put = Put { table: Table::Main, item: item.clone(), condition: Condition::NotExists };
                if store.put(put).await.applied()?.is_some() {
                    return Ok(taken(&item, takes));
                }
            }
        }
    }
    Ok(WindowTake::Refused { retry_after_secs: 1, used_up: false })
}

/// What a counter of a window has left (nothing, if it is missing).
fn left(window: &Item, counter: &str) -> i64 {
    window.attrs.get(counter).and_then(serde_json::Value::as_i64).unwrap_or(0)
}

fn taken(window: &Item, takes: &[Take<'_>]) -> WindowTake {
    let id = window.attrs.get("window").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    WindowTake::Taken { window: id, remaining: takes.iter().map(|t| left(window, t.counter)).collect() }
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

/// A successful login as it is recorded: the attempt, its records' expiries, the session it opens, and the
/// password hash it was checked against (the write applies only while the account still has it).
pub struct SuccessfulLogin<'a> {
    pub attempt: &'a LoginAttempt,
    pub expiries: Expiries,
    pub session: &'a Session,
    pub verified_hash: &'a str,
}

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
    async fn record_login(&self, login: SuccessfulLogin<'_>, extra: Vec<WriteOp>) -> StoreResult<()>;
    /// The newest attempts on an account.
    async fn login_history(&self, user_id: &str, limit: u32) -> StoreResult<Vec<LoginAttempt>>;
}

const LOGIN_PREFIX: &str = schema::prefix::LOGIN;

/// Every login attempt on the account still kept (the retention window bounds them), newest first: the
/// data export's login history, never cut short.
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> StoreResult<Vec<LoginAttempt>> {
    let mut attempts: Vec<LoginAttempt> = crate::store::user_items(store, user_id, LOGIN_PREFIX)
        .await?
        .iter()
        .map(Item::record)
        .collect::<StoreResult<_>>()?;
    attempts.reverse();
    Ok(attempts)
}

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

    async fn record_login(&self, login: SuccessfulLogin<'_>, extra: Vec<WriteOp>) -> StoreResult<()> {
        let SuccessfulLogin { attempt, expiries, session, verified_hash } = login;
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

/// The "new sign-in" message, when the login comes from a place the account has not signed in from lately.
async fn new_place_alert(
    ports: &Ports,
    account: &Account,
    client: &ClientInfo,
    now: DateTime<Utc>,
) -> ApiResult<Vec<WriteOp>> {
    if !is_new_place(ports, account, client, now).await? {
        return Ok(Vec::new());
    }
    let mail = OutboxMail::new(MailKind::NewSignIn, &account.id, now)
        .param("ip", client.ip.clone().unwrap_or_else(|| "unknown".into()))
        .param("device", client.user_agent.clone().unwrap_or_else(|| "unknown".into()));
    Ok(vec![enqueue(&mail)?])
}

/// Checks credentials, applies throttling, records the attempt and opens a session.
pub async fn login(ports: &Ports, email: &str, password: String, client: &ClientInfo) -> ApiResult<IssuedSession> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
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
    let verified = match check_password_at(ports, &email, hash, password, client).await {
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
    let alert = new_place_alert(ports, &account, client, now).await?;
    let login =
        SuccessfulLogin { attempt: &attempt, expiries, session: &session, verified_hash: &account.password_hash };
    match store.record_login(login, alert).await {
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
async fn is_new_place(ports: &Ports, account: &Account, client: &ClientInfo, now: DateTime<Utc>) -> StoreResult<bool> {
    let store = ports.store();
    let config = ports.config();
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
pub async fn check_password(ports: &Ports, email: &str, hash: Option<String>, password: String) -> ApiResult<bool> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
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

/// The window of the password checks one client address (an IPv4 address, or an IPv6 /64) may make across
/// every e-mail address (`Config::login_checks_per_address`); a correct password gives its check back. The
/// per-address limit stops one client from trying a few passwords on each of many accounts, which the
/// per-e-mail window alone never notices.
const ADDRESS_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// [`check_password`] under the client address's window too: a check is taken from both, and a correct
/// password gives both back.
async fn check_password_at(
    ports: &Ports,
    email: &str,
    hash: Option<String>,
    password: String,
    client: &ClientInfo,
) -> ApiResult<bool> {
    let address = reserve_address(ports, client).await?;
    let verified = check_password(ports, email, hash, password).await?;
    if let (true, Some((pk, window))) = (verified, address) {
        release_in_window(ports.store(), &pk, &window).await?;
    }
    Ok(verified)
}

/// Takes one check from the client address's hourly window: its key and window id, to give it back after a
/// correct password; none for a request without an address.
async fn reserve_address(ports: &Ports, client: &ClientInfo) -> ApiResult<Option<(String, String)>> {
    let Some(ip) = &client.ip else { return Ok(None) };
    let now = ports.clock().now();
    let pk = schema::rate_pk("login-ip", &crate::accounts::ip_key(ip));
    let ends = (now + ADDRESS_WINDOW).timestamp();
    let limit = ports.config().login_checks_per_address;
    match reserve_in_window(ports.store(), &pk, limit, ends, now.timestamp()).await? {
        Reservation::Reserved { window } => Ok(Some((pk, window))),
        Reservation::Throttled { retry_after_secs } => Err(ApiError::TooManyRequests {
            code: ErrorCode::TooManyAttempts,
            message: format!(
                "too many failed password attempts from this address; try again in {retry_after_secs} seconds"
            ),
            retry_after_secs,
        }),
    }
}

/// `POST /v1/account/password`: changes the password after checking the current one (under the login
/// throttle), and ends every other session of the account; the session that changed it goes on.
pub async fn change_password(
    ports: &Ports,
    session: &Session,
    current_password: String,
    new_password: String,
) -> ApiResult<usize> {
    let store = ports.store();
    let clock = ports.clock();
    let account = session_account(store, session).await?;
    if current_password.is_empty() {
        return Err(ApiError::invalid(ErrorCode::MissingField, "current_password", "current_password is required"));
    }
    crate::accounts::check_new_password_in(&new_password, &account.email, "new_password")?;
    let hash = Some(account.password_hash.clone());
    if !check_password(ports, &account.email, hash, current_password).await? {
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
