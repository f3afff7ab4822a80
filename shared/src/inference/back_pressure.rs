//! A provider's back-pressure passed on. A route that answers 429 or 503 (or fails on its side otherwise) is
//! left for the next; when none is left, the caller gets the most useful of their failures: a 429 if any
//! route was rate limited, else a 503 if any was overloaded, each with the provider's `Retry-After` (or our
//! estimate), else a 502 or 503 that says to retry soon. No provider is named, and none of its words pass.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use crate::error::{ApiError, ErrorCode};

/// What the caller is told to wait when a busy provider gave no time of its own.
pub(super) const BUSY_RETRY_ESTIMATE_SECS: u64 = 2;
/// The longest wait passed on: SDKs retry on their own only within about a minute (openai-python: 60 s).
const LONGEST_RETRY_AFTER_SECS: u64 = 60;

/// The wait a provider asks for: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date, rounded
/// up to whole seconds, at least 1 and at most a minute.
pub(super) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<u64> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let seconds = if let Some(millis) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        seconds_from_millis(millis)?
    } else {
        let value = text("retry-after")?;
        match value.parse::<f64>() {
            Ok(seconds) => seconds_from_millis(seconds * 1000.0)?,
            Err(_) => {
                let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
                u64::try_from((at - now).num_seconds()).unwrap_or(0)
            }
        }
    };
    Some(seconds.clamp(1, LONGEST_RETRY_AFTER_SECS))
}

/// Whole seconds, rounded up, of a non-negative, finite number of milliseconds.
fn seconds_from_millis(millis: f64) -> Option<u64> {
    let seconds = (millis / 1000.0).ceil();
    // Bounded before the conversion: the cast then neither truncates nor saturates.
    (seconds.is_finite() && seconds >= 0.0).then(|| seconds.min(LONGEST_RETRY_AFTER_SECS as f64) as u64)
}

/// The caller's error for a route that failed on its side (its outage, our key, quota or billing there).
pub(super) fn provider_side_error(status: u16, retry_after: Option<u64>) -> ApiError {
    let wait = retry_after.unwrap_or(BUSY_RETRY_ESTIMATE_SECS);
    match status {
        429 => ApiError::TooManyRequests {
            code: ErrorCode::ProviderRateLimited,
            message: format!("the model is at its rate limit with every provider; retry in {wait} s"),
            retry_after_secs: wait,
        },
        503 => ApiError::Overloaded {
            message: format!("the model is overloaded with every provider; retry in {wait} s"),
            retry_after_secs: wait,
        },
        status if status >= 500 => ApiError::BadGateway {
            code: ErrorCode::UpstreamError,
            message: "the model provider failed to answer".into(),
        },
        _ => ApiError::Unavailable("the model is temporarily unavailable; try again shortly".into()),
    }
}

/// Of two routes' failures, the one that tells the caller more: a rate limit, then an overload (the shorter
/// wait of two alike), then the latest.
pub(super) fn more_telling(earlier: ApiError, latest: ApiError) -> ApiError {
    let rank = |e: &ApiError| match e.error_code() {
        ErrorCode::ProviderRateLimited => 2,
        ErrorCode::ModelOverloaded => 1,
        _ => 0,
    };
    let shorter = |a: &ApiError, b: &ApiError| a.retry_after_secs() <= b.retry_after_secs();
    match rank(&earlier).cmp(&rank(&latest)) {
        std::cmp::Ordering::Greater => earlier,
        std::cmp::Ordering::Equal if rank(&earlier) > 0 && shorter(&earlier, &latest) => earlier,
        _ => latest,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(*name, value);
            }
        }
        map
    }

    #[test]
    fn reads_every_way_a_provider_says_when() -> Result<(), chrono::ParseError> {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")?.with_timezone(&Utc);
        assert_eq!(retry_after(&headers(&[("retry-after", "7")]), now), Some(7));
        assert_eq!(retry_after(&headers(&[("retry-after", "0.2")]), now), Some(1), "rounded up, at least 1");
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]), now), Some(2));
        assert_eq!(retry_after(&headers(&[("retry-after", "Sun, 06 Dec 2026 10:00:12 GMT")]), now), Some(12));
        assert_eq!(retry_after(&headers(&[("retry-after", "Sun, 06 Dec 2026 09:00:00 GMT")]), now), Some(1));
        assert_eq!(retry_after(&headers(&[("retry-after", "86400")]), now), Some(60), "at most a minute");
        for unreadable in ["soon", "-5", "NaN", "inf", ""] {
            assert_eq!(retry_after(&headers(&[("retry-after", unreadable)]), now), None, "{unreadable}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        Ok(())
    }

    #[test]
    fn the_caller_hears_the_most_telling_failure() {
        let limited = |s| provider_side_error(429, Some(s));
        let overloaded = |s| provider_side_error(503, Some(s));
        let failed = provider_side_error(500, None);
        assert_eq!(more_telling(limited(7), overloaded(1)).retry_after_secs(), Some(7));
        assert_eq!(more_telling(overloaded(1), limited(7)).error_code(), ErrorCode::ProviderRateLimited);
        assert_eq!(more_telling(limited(7), limited(3)).retry_after_secs(), Some(3), "the shorter wait");
        assert_eq!(more_telling(overloaded(4), failed).error_code(), ErrorCode::ModelOverloaded);
        assert_eq!(provider_side_error(429, None).retry_after_secs(), Some(BUSY_RETRY_ESTIMATE_SECS));
        assert_eq!(provider_side_error(401, None).status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(provider_side_error(401, None).retry_after_secs(), Some(crate::error::RETRY_SOON_SECS));
    }
}
