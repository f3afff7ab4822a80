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

/// A name as people type it: `raw` trimmed, if that is 1 to `max` characters with no control character and no
/// invisible formatting character ([`hides_text`]), which could make a name read differently to an operator
/// than what is stored (a right-to-left override shows `PAN` reversed).
pub fn printable(raw: &str, max: usize) -> Option<&str> {
    let text = raw.trim();
    let chars: Vec<char> = text.chars().collect();
    let hidden = chars.iter().enumerate().any(|(i, &c)| hides_text(c, i.checked_sub(1).map(|p| chars[p])));
    (!text.is_empty() && chars.len() <= max && !chars.iter().any(|c| c.is_control()) && !hidden).then_some(text)
}

/// Invisible characters that change how the text around them shows (Unicode's format characters, fillers,
/// line and paragraph separators and tags): bidirectional embeddings, overrides, isolates and marks,
/// zero-width spaces, the soft hyphen, word joiners, the byte-order mark. The zero-width joiner and
/// non-joiner are refused too, except right after a character of the Indian scripts' blocks (U+0900 to
/// U+0DFF) or of Arabic (Urdu): those scripts need them inside words (Devanagari and Malayalam conjuncts).
pub fn hides_text(c: char, before: Option<char>) -> bool {
    match c {
        '\u{200C}' | '\u{200D}' => {
            !before.is_some_and(|b| matches!(b, '\u{0900}'..='\u{0DFF}' | '\u{0620}'..='\u{06FF}'))
        }
        '\u{00AD}'
        | '\u{034F}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{08E2}'
        | '\u{115F}'
        | '\u{1160}'
        | '\u{17B4}'
        | '\u{17B5}'
        | '\u{180E}'
        | '\u{200B}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}' => true,
        _ => false,
    }
}

pub fn check_full_name(raw: &str) -> ApiResult<String> {
    let name = printable(raw, MAX_NAME_CHARS).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidFullName,
            "full_name",
            format!("full_name must be 1 to {MAX_NAME_CHARS} printable characters, with no invisible formatting"),
        )
    })?;
    Ok(name.to_owned())
}

/// Text a person writes (a note, a grievance): trimmed, 1 to `max` characters, none of them control or
/// invisible characters (lines may break); otherwise `code`, naming the field.
pub fn written_text(
    raw: &str,
    field: &str,
    max: usize,
    code: crate::error::ErrorCode,
) -> Result<String, crate::error::ApiError> {
    let trimmed = raw.trim();
    let chars: Vec<char> = trimmed.chars().collect();
    let visible = chars
        .iter()
        .enumerate()
        .all(|(i, &c)| c == '\n' || (!c.is_control() && !hides_text(c, i.checked_sub(1).map(|p| chars[p]))));
    if trimmed.is_empty() || chars.len() > max || !visible {
        let message = format!("{field} must be 1 to {max} printable characters (lines may break)");
        return Err(crate::error::ApiError::invalid(code, field, message));
    }
    Ok(trimmed.to_owned())
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
    fn names_with_invisible_formatting_are_refused_but_indian_scripts_keep_their_joiners() {
        for spoof in [
            "Asha\u{202E}ovaR",
            "Asha\u{200B}Rao",
            "\u{2066}Asha\u{2069}",
            "Asha\u{00AD}Rao",
            "\u{FEFF}Asha",
            "Asha\u{200D}Rao",
            "Jos\u{00E9}\u{200D}",
            "Asha\u{2028}Rao",
            "\u{0600}Asha",
        ] {
            assert_eq!(printable(spoof, 100), None, "{spoof:?}");
        }
        // Malayalam "ന്‍" (chillu with ZWJ after the virama) and Hindi with ZWNJ after a consonant.
        for name in ["\u{0D28}\u{0D4D}\u{200D}", "\u{0915}\u{094D}\u{200C}\u{0937}", "Asha Rao", "José Müller"] {
            assert_eq!(printable(name, 100), Some(name), "{name:?}");
        }
    }

    #[test]
    fn clients_are_limited_by_ipv4_address_or_ipv6_slash_64() {
        use crate::accounts::ip_key;
        assert_eq!(ip_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1"), ip_key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(ip_key("2001:db8:1:2::1"), ip_key("2001:db8:1:3::1"));
        assert_eq!(ip_key("::ffff:203.0.113.7"), "203.0.113.7");
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
