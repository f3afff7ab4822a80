//! What signup and corrections check: the email's shape, the password's strength, the age (18+, in India's
//! time zone) and the name.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use super::{MAX_EMAIL_CHARS, MAX_NAME_CHARS, MIN_AGE_YEARS, MIN_PASSWORD_CHARS};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::passwords;

/// Trims and lower-cases an email, then checks its shape (one `@`, a dotted domain, no spaces).
pub fn normalize_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let invalid = || ApiError::invalid(ErrorCode::InvalidEmail, "email", "email must be a valid email address");
    if email.is_empty() || email.chars().count() > MAX_EMAIL_CHARS {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let well_formed = !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'));
    if well_formed { Ok(email) } else { Err(invalid()) }
}

/// The rules a new password must meet (length, not the email). `auth::check_password` is the other one:
/// it verifies a presented password against a stored hash.
pub fn check_new_password(password: &str, email: &str) -> ApiResult<()> {
    check_new_password_in(password, email, "password")
}

/// [`check_new_password`] for a password given in the request field `field`.
pub fn check_new_password_in(password: &str, email: &str, field: &str) -> ApiResult<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::WeakPassword,
            field,
            format!("{field} must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if chars > passwords::MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::WeakPassword,
            field,
            format!("{field} must be at most {} characters", passwords::MAX_PASSWORD_CHARS),
        ));
    }
    if password.trim().to_lowercase() == email {
        return Err(ApiError::invalid(
            ErrorCode::WeakPassword,
            field,
            format!("{field} must not be the email address"),
        ));
    }
    Ok(())
}

/// Today's date in India (IST, UTC+05:30), the calendar the 18+ rule is judged by.
pub fn today_in_india(now: DateTime<Utc>) -> NaiveDate {
    (now + Duration::minutes(5 * 60 + 30)).date_naive()
}

/// The day someone born on `dob` turns `years` old; a 29 February birthday falls on 1 March in common years.
fn anniversary(dob: NaiveDate, years: i32) -> Option<NaiveDate> {
    let year = dob.year().checked_add(years)?;
    NaiveDate::from_ymd_opt(year, dob.month(), dob.day()).or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
}

/// Parses `YYYY-MM-DD` and checks the person is at least 18 on `today`.
pub fn check_date_of_birth(raw: &str, today: NaiveDate) -> ApiResult<NaiveDate> {
    let invalid = || {
        ApiError::invalid(
            ErrorCode::InvalidDateOfBirth,
            "date_of_birth",
            "date_of_birth must be a past date in the form YYYY-MM-DD",
        )
    };
    let raw = raw.trim();
    if raw.len() != 10 {
        return Err(invalid());
    }
    let dob = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| invalid())?;
    if dob >= today || dob.year() < 1900 {
        return Err(invalid());
    }
    match anniversary(dob, MIN_AGE_YEARS) {
        Some(adult_on) if adult_on <= today => Ok(dob),
        _ => Err(ApiError::invalid(
            ErrorCode::Underage,
            "date_of_birth",
            format!("you must be at least {MIN_AGE_YEARS} years old to open an account"),
        )),
    }
}

/// A name as people type it: `raw` trimmed, if that is 1 to `max` characters with no control character.
pub fn printable(raw: &str, max: usize) -> Option<&str> {
    let text = raw.trim();
    (!text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)).then_some(text)
}

pub fn check_full_name(raw: &str) -> ApiResult<String> {
    let name = printable(raw, MAX_NAME_CHARS).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidFullName,
            "full_name",
            format!("full_name must be 1 to {MAX_NAME_CHARS} printable characters"),
        )
    })?;
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Account, AccountStatus, AccountView, KycStatus};

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    fn code(r: ApiResult<impl std::fmt::Debug>) -> &'static str {
        r.err().map(|e| e.code()).unwrap_or("ok")
    }

    #[test]
    fn emails_are_normalised_and_validated() {
        assert_eq!(normalize_email("  Asha.Rao@Example.IN ").ok().as_deref(), Some("asha.rao@example.in"));
        for bad in ["", "plain", "a@b", "a@@b.in", "@b.in", "a b@c.in", "a@.in", "a@b..in", "a@-b.in"] {
            assert_eq!(code(normalize_email(bad)), "invalid_email", "{bad:?}");
        }
    }

    #[test]
    fn passwords_need_ten_characters_and_differ_from_email() {
        assert_eq!(code(check_new_password("short", "a@b.in")), "weak_password");
        assert_eq!(code(check_new_password("asha@example.in", "asha@example.in")), "weak_password");
        assert_eq!(code(check_new_password(&"x".repeat(257), "a@b.in")), "weak_password");
        assert_eq!(code(check_new_password("ten chars!", "a@b.in")), "ok");
    }

    #[test]
    fn age_is_judged_on_the_day_of_signup() {
        let today = date("2026-11-27");
        assert_eq!(code(check_date_of_birth("2008-11-27", today)), "ok", "18 today");
        assert_eq!(code(check_date_of_birth("2008-11-28", today)), "underage", "18 tomorrow");
        assert_eq!(code(check_date_of_birth("2026-11-27", today)), "invalid_date_of_birth");
        assert_eq!(code(check_date_of_birth("27-11-2000", today)), "invalid_date_of_birth");
        assert_eq!(code(check_date_of_birth("2000-02-30", today)), "invalid_date_of_birth");
        // Born on 29 February 2008: 18 on 1 March 2026, not on 28 February.
        assert_eq!(code(check_date_of_birth("2008-02-29", date("2026-02-28"))), "underage");
        assert_eq!(code(check_date_of_birth("2008-02-29", date("2026-03-01"))), "ok");
    }

    #[test]
    fn a_newer_policy_shows_as_pending_until_accepted() {
        let account = Account {
            id: "usr_1".into(),
            email: "a@b.in".into(),
            password_hash: String::new(),
            full_name: "A".into(),
            date_of_birth: date("1990-01-01"),
            kyc_status: KycStatus::NotSubmitted,
            marketing_consent: false,
            accepted_policy_version: "2026-05-21".into(),
            status: AccountStatus::Active,
            created_at: DateTime::<Utc>::default(),
            closed_at: None,
            email_verified: false,
            pending_email: None,
            session_epoch: 0,
            closure_request: None,
        };
        assert!(!AccountView::new(&account, "2026-05-21").policy_update_pending);
        let view = AccountView::new(&account, "2027-01-01");
        assert!(view.policy_update_pending);
        assert_eq!(view.accepted_policy_version, "2026-05-21");
    }

    #[test]
    fn india_date_rolls_over_at_1830_utc() {
        let before = DateTime::parse_from_rfc3339("2026-11-26T18:29:59Z").map(|d| d.to_utc()).unwrap_or_default();
        let after = DateTime::parse_from_rfc3339("2026-11-26T18:30:00Z").map(|d| d.to_utc()).unwrap_or_default();
        assert_eq!(today_in_india(before), date("2026-11-26"));
        assert_eq!(today_in_india(after), date("2026-11-27"));
    }
}
