//! Per-key rate limits: requests and tokens per minute, counted in the store so that the limit holds across
//! every instance (never limit × instances).
//!
//! Fixed one-minute windows, one counted window per key (`RATE#api-key#<key id>` / `WINDOW`, a partition
//! per key apart from the account's wallet, ending with its minute), taken from as password checks are
//! ([`crate::auth::take_in_window`]): a call takes one request and its tokens with one conditional update
//! that fails when either is short, and the minute's first call opens the next window. Fixed rather than
//! sliding windows because a window is then one item and one write per admitted call; the price is that a
//! burst across a minute's edge may pass up to twice the limit within a few seconds, as with OpenAI's
//! per-minute limits. Writes per item are bounded by the limit, not by the traffic: admitted calls are at
//! most the limit (capped at 30,000 a minute, half of what one DynamoDB item takes), and an instance that
//! found a window used up refuses locally until the minute ends, writing nothing (a window refused only
//! because one call's tokens did not fit is asked again next time). Tokens are counted when the call is
//! admitted, at its upper bound (the prompt's bound plus the output cap), as OpenAI counts `max_tokens`.
//! Only keys with a limit pay the write; the others make no round trip.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::KeyOwner;
use crate::auth::{Take, WindowTake, take_in_window};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::ItemStore;
use crate::store::schema::rate_window_pk;

/// The most requests a minute a key may be given.
pub const MAX_REQUESTS_PER_MINUTE: u64 = 30_000;
/// The most tokens a minute a key may be given.
pub const MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000;
/// How many keys' full windows an instance remembers (beyond it, it forgets them all and asks the store).
const FULL_WINDOWS_KEPT: usize = 10_000;

/// A key's limits: `null` (or absent) is no limit. Read only from a JSON object (serde would also take
/// `[1, 2]` for a struct), with no field but these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct RateLimits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for RateLimits {
    type Error = serde_json::Error;

    fn try_from(object: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            requests_per_minute: Option<u64>,
            #[serde(default)]
            tokens_per_minute: Option<u64>,
        }
        let fields: Fields = serde_json::from_value(serde_json::Value::Object(object))?;
        Ok(Self { requests_per_minute: fields.requests_per_minute, tokens_per_minute: fields.tokens_per_minute })
    }
}

impl RateLimits {
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none() && self.tokens_per_minute.is_none()
    }

    /// A request's field of rate limits (`rate_limits`, `default_rate_limits`, `rate_limit_ceiling`): an
    /// object of the two (integers or null), or null for none; 400 `invalid_rate_limits` naming it otherwise.
    pub fn read(field: &str, value: &serde_json::Value) -> ApiResult<Self> {
        let limits = serde_json::from_value::<Option<Self>>(value.clone()).map_err(|_| {
            ApiError::invalid(
                ErrorCode::InvalidRateLimits,
                field,
                format!(
                    "{field} must be an object of requests_per_minute and tokens_per_minute (integers or null), or null"
                ),
            )
        })?;
        limits.unwrap_or_default().checked(field)
    }

    /// Each limit, if set, from 1 to its maximum (`field` names them in the error).
    pub fn checked(self, field: &str) -> ApiResult<Self> {
        let within = |value: Option<u64>, max: u64, limit: &str| match value {
            Some(n) if !(1..=max).contains(&n) => Err(ApiError::invalid(
                ErrorCode::InvalidRateLimits,
                field,
                format!("{field}.{limit} must be an integer from 1 to {max}, or null"),
            )),
            _ => Ok(()),
        };
        within(self.requests_per_minute, MAX_REQUESTS_PER_MINUTE, "requests_per_minute")?;
        within(self.tokens_per_minute, MAX_TOKENS_PER_MINUTE, "tokens_per_minute")?;
        Ok(self)
    }
}

/// Where a call left its key's window: OpenAI's `x-ratelimit-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateWindow {
    limits: RateLimits,
    requests: u64,
    tokens: u64,
    reset_secs: i64,
}

impl RateWindow {
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for each limit the key has.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let reset = format!("{}s", self.reset_secs);
        let mut headers = Vec::new();
        if let Some(limit) = self.limits.requests_per_minute {
            headers.push(("x-ratelimit-limit-requests", limit.to_string()));
            headers.push(("x-ratelimit-remaining-requests", limit.saturating_sub(self.requests).to_string()));
            headers.push(("x-ratelimit-reset-requests", reset.clone()));
        }
        if let Some(limit) = self.limits.tokens_per_minute {
            headers.push(("x-ratelimit-limit-tokens", limit.to_string()));
            headers.push(("x-ratelimit-remaining-tokens", limit.saturating_sub(self.tokens).to_string()));
            headers.push(("x-ratelimit-reset-tokens", reset));
        }
        headers
    }
}

/// The windows this instance found used up, by key, with the limits they were used up under: it refuses
/// their calls until the minute ends without a store write (unless the key's limits changed).
#[derive(Default)]
pub struct RateCounter {
    full_until: Mutex<HashMap<String, (i64, RateLimits)>>,
}

impl RateCounter {
    /// Counts a call of `tokens` (its upper bound) in its key's current window; `None` for a key without
    /// limits. 429 `rate_limit_exceeded` with `Retry-After` (the rest of the minute) when the window is full;
    /// 400 when the call alone needs more tokens than a minute allows.
    pub async fn count(
        &self,
        store: &dyn ItemStore,
        owner: &KeyOwner,
        tokens: u64,
        now: DateTime<Utc>,
    ) -> ApiResult<Option<RateWindow>> {
        let limits = owner.rate_limits;
        if limits.is_unlimited() {
            return Ok(None);
        }
        if let Some(limit) = limits.tokens_per_minute.filter(|limit| tokens > *limit) {
            return Err(ApiError::invalid(
                ErrorCode::RequestExceedsRateLimit,
                "max_tokens",
                format!("the request may use {tokens} tokens, more than this key's {limit} a minute; lower max_tokens"),
            ));
        }
        let ends_at = (now.timestamp().div_euclid(60) + 1) * 60;
        let full = || full_window(ends_at - now.timestamp());
        if self.is_full(&owner.key_id, limits, now.timestamp()) {
            return Err(full());
        }
        let takes = takes(limits, tokens);
        let pk = rate_window_pk(&owner.key_id);
        match take_in_window(store, &pk, &takes, ends_at, now.timestamp()).await? {
            WindowTake::Taken { remaining, .. } => {
                let used = |counter: &str, limit: Option<u64>| {
                    let left = takes.iter().zip(&remaining).find(|(t, _)| t.counter == counter).map(|(_, r)| *r);
                    limit.unwrap_or(0).saturating_sub(left.and_then(|r| u64::try_from(r).ok()).unwrap_or(0))
                };
                let (requests, tokens) =
                    (used("requests", limits.requests_per_minute), used("tokens", limits.tokens_per_minute));
                Ok(Some(RateWindow { limits, requests, tokens, reset_secs: ends_at - now.timestamp() }))
            }
            WindowTake::Refused { used_up, .. } => {
                if used_up {
                    self.remember_full(&owner.key_id, limits, ends_at);
                }
                Err(full())
            }
        }
    }

    fn is_full(&self, key_id: &str, limits: RateLimits, now: i64) -> bool {
        let full = self.full_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        full.get(key_id).is_some_and(|(until, under)| now < *until && *under == limits)
    }

    fn remember_full(&self, key_id: &str, limits: RateLimits, until: i64) {
        let mut full = self.full_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if full.len() >= FULL_WINDOWS_KEPT {
            full.clear();
        }
        full.insert(key_id.to_owned(), (until, limits));
    }
}

/// What a call takes from its key's window: a request and its tokens, for the limits the key has.
fn takes(limits: RateLimits, tokens: u64) -> Vec<Take<'static>> {
    let whole = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut takes = Vec::new();
    if let Some(limit) = limits.requests_per_minute {
        takes.push(Take { counter: "requests", limit: whole(limit), amount: 1 });
    }
    if let Some(limit) = limits.tokens_per_minute {
        takes.push(Take { counter: "tokens", limit: whole(limit), amount: whole(tokens) });
    }
    takes
}

/// The 429 of a full window: retry when the minute ends.
fn full_window(seconds_left: i64) -> ApiError {
    let wait = u64::try_from(seconds_left).unwrap_or(1).clamp(1, 60);
    ApiError::TooManyRequests {
        code: ErrorCode::RateLimitExceeded,
        message: format!("this API key is at its per-minute limit; retry in {wait} s"),
        retry_after_secs: wait,
    }
}
