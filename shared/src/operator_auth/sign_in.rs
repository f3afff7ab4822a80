//! An operator's sign-in: their token and a code from their authenticator open a session. Throttled like
//! customers' logins, before the code is checked: per operator (a success gives its attempt back) and per
//! client address (an IPv6 /64 counts as one); every attempt is recorded in the operator's partition with
//! the address and user agent, kept as long as customers' login records.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::sessions::{self, IDLE_TIMEOUT, OpenedSession};
use super::totp::{self, CodeRefusal};
use crate::accounts::ClientInfo;
use crate::auth::{Reservation, release_in_window, reserve_in_window};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kyc::vault::DataKeys;
use crate::operators::Credential;
use crate::ports::Ports;
use crate::retention::Span;
use crate::store::schema::{self, operator_pk, prefix, rate_pk};
use crate::store::{Condition, Item, Put, Table};

/// Attempts an operator may make in a window; a success gives its attempt back.
pub const ATTEMPTS_PER_OPERATOR: u32 = 5;
/// Attempts one client address may make in a window, whoever it claims to be.
pub const ATTEMPTS_PER_ADDRESS: u32 = 20;
const WINDOW: Duration = Duration::hours(1);

/// One sign-in attempt: the operator the token named, the code, who is asking.
pub struct Attempt<'a> {
    pub operator: &'a Credential,
    pub code: &'a str,
    pub client: &'a ClientInfo,
}

/// Checks the code and opens a session, or answers why not (recording the attempt either way).
pub async fn sign_in(ports: &Ports, keys: &dyn DataKeys, attempt: Attempt<'_>) -> ApiResult<OpenedSession> {
    let store = ports.store();
    let now = ports.clock().now();
    let name = attempt.operator.name.as_str();
    let window = reserve(ports, name, attempt.client, now).await?;
    match totp::use_code(store, keys, attempt.operator, attempt.code.trim(), now).await? {
        Ok(()) => {
            release_in_window(store, &rate_pk("operator-sign-in", name), &window).await?;
            record(ports, name, attempt.client, None, now).await?;
            let (session, expires) = sessions::open(store, attempt.operator, now).await?;
            tracing::warn!(operator = name, ip = attempt.client.ip.as_deref().unwrap_or("-"), "operator signed in");
            Ok(OpenedSession {
                session,
                operator: name.to_owned(),
                roles: attempt.operator.roles.clone(),
                expires_at: DateTime::from_timestamp(expires, 0).unwrap_or(now),
                idle_timeout_seconds: IDLE_TIMEOUT.num_seconds(),
            })
        }
        Err(refusal) => {
            let reason = match refusal {
                CodeRefusal::NotEnrolled => "not_enrolled",
                CodeRefusal::Wrong => "wrong_code",
            };
            record(ports, name, attempt.client, Some(reason), now).await?;
            tracing::warn!(operator = name, reason, "operator sign-in refused");
            Err(refused(refusal))
        }
    }
}

fn refused(refusal: CodeRefusal) -> ApiError {
    match refusal {
        CodeRefusal::NotEnrolled => ApiError::Conflict {
            code: ErrorCode::TotpNotEnrolled,
            message: "no authenticator is enrolled with this token: POST /v1/admin/totp/enrol first".into(),
            param: None,
        },
        CodeRefusal::Wrong => ApiError::unauthenticated(
            ErrorCode::InvalidTotpCode,
            "code is not the current code of your authenticator (each code works once)",
        ),
    }
}

/// Takes one attempt from the address's window, then the operator's; returns the operator's window id.
async fn reserve(ports: &Ports, name: &str, client: &ClientInfo, now: DateTime<Utc>) -> ApiResult<String> {
    let store = ports.store();
    let ends = (now + WINDOW).timestamp();
    if let Some(ip) = &client.ip {
        let pk = rate_pk("operator-sign-in-ip", &crate::accounts::ip_key(ip));
        if let Reservation::Throttled { retry_after_secs } =
            reserve_in_window(store, &pk, ATTEMPTS_PER_ADDRESS, ends, now.timestamp()).await?
        {
            return Err(throttled(retry_after_secs));
        }
    }
    let pk = rate_pk("operator-sign-in", name);
    match reserve_in_window(store, &pk, ATTEMPTS_PER_OPERATOR, ends, now.timestamp()).await? {
        Reservation::Reserved { window } => Ok(window),
        Reservation::Throttled { retry_after_secs } => {
            tracing::error!(
                alert = crate::alerts::OPERATOR_SIGN_IN_THROTTLED,
                operator = name,
                "operator sign-ins throttled"
            );
            Err(throttled(retry_after_secs))
        }
    }
}

fn throttled(retry_after_secs: u64) -> ApiError {
    ApiError::TooManyRequests {
        code: ErrorCode::TooManyAttempts,
        message: format!("too many sign-in attempts; try again in {retry_after_secs} seconds"),
        retry_after_secs,
    }
}

/// Records one attempt (`failure`: why it was refused) in the operator's partition.
async fn record(
    ports: &Ports,
    name: &str,
    client: &ClientInfo,
    failure: Option<&str>,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let record = json!({
        "ip": client.ip,
        "user_agent": client.user_agent,
        "success": failure.is_none(),
        "failure": failure,
        "at": now.to_rfc3339(),
    });
    let expires = ports.config().retention.until(Span::LoginRecords, now);
    let sk = schema::time_sort_key(prefix::OPERATOR_SIGN_IN, now);
    let item = Item::from_record(operator_pk(name), sk, &record, Some(expires))?;
    ports.store().put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
    Ok(())
}
