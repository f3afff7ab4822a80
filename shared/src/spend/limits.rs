//! What a spend limit is: its amounts (whole paise, as the API takes them) and its windows, which follow the
//! Indian calendar (a day ends at 00:00 IST, a month on the 1st at 00:00 IST).

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// The highest spend limit a key or an account may set: ₹1 crore.
pub const MAX_SPEND_LIMIT_PAISE: i64 = 1_000_000_000;

/// India's offset from UTC: IST, no daylight saving.
use crate::clock::{IST_OFFSET, ist_midnight};

/// A key's spend limits in paise: `null` (or absent) is no limit. Read only from a JSON object (serde would
/// also take `[1, 2, 3]` for a struct), with no field but these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct SpendLimits {
    pub total: Option<i64>,
    pub daily: Option<i64>,
    pub monthly: Option<i64>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for SpendLimits {
    type Error = serde_json::Error;

    fn try_from(object: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            total: Option<i64>,
            #[serde(default)]
            daily: Option<i64>,
            #[serde(default)]
            monthly: Option<i64>,
        }
        let fields: Fields = serde_json::from_value(serde_json::Value::Object(object))?;
        Ok(Self { total: fields.total, daily: fields.daily, monthly: fields.monthly })
    }
}

impl SpendLimits {
    pub fn is_unlimited(&self) -> bool {
        self.total.is_none() && self.daily.is_none() && self.monthly.is_none()
    }

    /// Each limit, if set, from 0 (the key spends nothing) to [`MAX_SPEND_LIMIT_PAISE`].
    pub fn checked(self) -> ApiResult<Self> {
        for (name, value) in [("total", self.total), ("daily", self.daily), ("monthly", self.monthly)] {
            checked_paise(value, "spend_limits_paise", &format!("spend_limits_paise.{name}"))?;
        }
        Ok(self)
    }

    /// The limit of a key's window.
    pub fn of(&self, cap: Cap) -> Option<i64> {
        match cap {
            Cap::Total => self.total,
            Cap::Daily => self.daily,
            Cap::Monthly => self.monthly,
            Cap::AccountMonthly => None,
        }
    }
}

/// A limit in paise, if set, within 0 ..= [`MAX_SPEND_LIMIT_PAISE`]; 400 `invalid_spend_limits` otherwise.
pub fn checked_paise(value: Option<i64>, param: &str, field: &str) -> ApiResult<Option<i64>> {
    match value {
        Some(n) if !(0..=MAX_SPEND_LIMIT_PAISE).contains(&n) => Err(ApiError::invalid(
            ErrorCode::InvalidSpendLimits,
            param,
            format!("{field} must be an integer number of paise from 0 to {MAX_SPEND_LIMIT_PAISE}, or null"),
        )),
        _ => Ok(value),
    }
}

/// A request's field of one limit in paise: an integer within range, or null for none.
pub fn read_paise(field: &str, value: &serde_json::Value) -> ApiResult<Option<i64>> {
    match value {
        serde_json::Value::Null => Ok(None),
        other => {
            let paise = other.as_i64().ok_or_else(|| {
                ApiError::invalid(ErrorCode::InvalidSpendLimits, field, format!("{field} must be an integer or null"))
            })?;
            checked_paise(Some(paise), field, field)
        }
    }
}

/// A spend window a call is counted in: a key's total, day and month, and its account's month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    Total,
    Daily,
    Monthly,
    AccountMonthly,
}

impl Cap {
    /// The name an error's `param` gives the cap.
    pub fn param(self) -> &'static str {
        match self {
            Cap::Total => "total",
            Cap::Daily => "daily",
            Cap::Monthly => "monthly",
            Cap::AccountMonthly => "account_monthly",
        }
    }

    /// What the cap is, in words.
    pub fn described(self) -> &'static str {
        match self {
            Cap::Total => "this API key's total spend limit",
            Cap::Daily => "this API key's daily spend limit",
            Cap::Monthly => "this API key's monthly spend limit",
            Cap::AccountMonthly => "the account's monthly spend limit",
        }
    }
}

/// One window of the calendar: its id (in the item's sort key) and when it ends; the total never ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub id: String,
    pub ends_at: Option<DateTime<Utc>>,
}

impl Period {
    pub fn total() -> Self {
        Self { id: String::new(), ends_at: None }
    }

    /// The day in India that `now` falls in.
    pub fn day(now: DateTime<Utc>) -> Self {
        let today = (now + IST_OFFSET).date_naive();
        let ends_at = today.succ_opt().map(ist_midnight);
        Self { id: today.format("%Y-%m-%d").to_string(), ends_at }
    }

    /// The month in India that `now` falls in.
    pub fn month(now: DateTime<Utc>) -> Self {
        let today = (now + IST_OFFSET).date_naive();
        let next = match today.month() {
            12 => NaiveDate::from_ymd_opt(today.year() + 1, 1, 1),
            m => NaiveDate::from_ymd_opt(today.year(), m + 1, 1),
        };
        Self { id: today.format("%Y-%m").to_string(), ends_at: next.map(ist_midnight) }
    }

    /// The period of a cap at `now`.
    pub fn of(cap: Cap, now: DateTime<Utc>) -> Self {
        match cap {
            Cap::Total => Self::total(),
            Cap::Daily => Self::day(now),
            Cap::Monthly | Cap::AccountMonthly => Self::month(now),
        }
    }

    /// When the window resets, as India reads it (`2026-12-07T00:00:00+05:30`), or `never`.
    pub fn resets(&self) -> String {
        match self.ends_at {
            Some(at) => (at + IST_OFFSET).naive_utc().format("%Y-%m-%dT%H:%M:%S+05:30").to_string(),
            None => "never (raise or remove the limit)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|d| d.to_utc()).unwrap_or_default()
    }

    #[test]
    fn windows_follow_the_indian_calendar() {
        // 18:29 UTC is 23:59 IST; a minute later the Indian day (and here the month) has turned.
        let before = at("2026-12-31T18:29:00Z");
        assert_eq!(Period::day(before).id, "2026-12-31");
        assert_eq!(Period::month(before).id, "2026-12");
        assert_eq!(Period::day(before).ends_at, Some(at("2026-12-31T18:30:00Z")));
        assert_eq!(Period::month(before).ends_at, Some(at("2026-12-31T18:30:00Z")));
        let after = at("2026-12-31T18:30:00Z");
        assert_eq!(Period::day(after).id, "2027-01-01");
        assert_eq!(Period::month(after).id, "2027-01");
        assert_eq!(Period::month(after).ends_at, Some(at("2027-01-31T18:30:00Z")));
        assert_eq!(Period::day(before).resets(), "2027-01-01T00:00:00+05:30");
    }

    #[test]
    fn limits_are_whole_paise_within_range() {
        assert!(SpendLimits { daily: Some(0), ..SpendLimits::default() }.checked().is_ok());
        let over = SpendLimits { monthly: Some(MAX_SPEND_LIMIT_PAISE + 1), ..SpendLimits::default() };
        assert!(over.checked().is_err());
        assert!(SpendLimits { total: Some(-1), ..SpendLimits::default() }.checked().is_err());
        assert!(serde_json::from_str::<SpendLimits>(r#"{"daily": 1.5}"#).is_err());
        assert!(serde_json::from_str::<SpendLimits>(r#"{"weekly": 1}"#).is_err());
        assert!(serde_json::from_str::<SpendLimits>("[1, 2, 3]").is_err(), "an object, not a list");
        assert_eq!(serde_json::from_str::<SpendLimits>(r#"{"daily": 5}"#).ok().and_then(|l| l.daily), Some(5));
    }
}
