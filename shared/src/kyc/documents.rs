//! PAN and Aadhaar number rules: format checks, the Aadhaar Verhoeff check digit, masking.

use crate::error::{ApiError, ApiResult, ErrorCode};

/// A PAN that passed the format rules for an individual's personal account.
#[derive(Clone, PartialEq, Eq)]
pub struct Pan(String);

/// An Aadhaar number that passed the format and check-digit rules (12 digits, no separators).
#[derive(Clone, PartialEq, Eq)]
pub struct Aadhaar(String);

// Never print the numbers themselves, not even in debug output.
impl std::fmt::Debug for Pan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl std::fmt::Debug for Aadhaar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aadhaar({})", self.masked())
    }
}

impl Pan {
    /// `^[A-Z]{5}[0-9]{4}[A-Z]$`, serial not 0000, 4th letter `P` (individual). Surrounding spaces and
    /// lower case are accepted and normalised.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let pan = raw.trim().to_ascii_uppercase();
        let b = pan.as_bytes();
        let shaped = b.len() == 10
            && b[..5].iter().all(u8::is_ascii_uppercase)
            && b[5..9].iter().all(u8::is_ascii_digit)
            && b[9].is_ascii_uppercase();
        if !shaped {
            return Err(ApiError::invalid(
                ErrorCode::InvalidPan,
                "pan",
                "pan must be 10 characters: 5 letters, 4 digits, 1 letter",
            ));
        }
        if &pan[5..9] == "0000" {
            return Err(ApiError::invalid(ErrorCode::InvalidPan, "pan", "pan has an invalid serial number"));
        }
        if b[3] != b'P' {
            return Err(ApiError::invalid(
                ErrorCode::InvalidPan,
                "pan",
                "pan must belong to an individual (its 4th letter must be P)",
            ));
        }
        Ok(Self(pan))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// First five letters, `XXXX`, last letter: `ABCDEXXXXF`.
    pub fn masked(&self) -> String {
        format!("{}XXXX{}", &self.0[..5], &self.0[9..])
    }
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// True when the digit string (check digit last) passes Verhoeff's check.
pub fn verhoeff_valid(digits: &str) -> bool {
    let mut c = 0usize;
    for (i, ch) in digits.bytes().rev().enumerate() {
        if !ch.is_ascii_digit() {
            return false;
        }
        let n = usize::from(ch - b'0');
        c = usize::from(VERHOEFF_D[c][usize::from(VERHOEFF_P[i % 8][n])]);
    }
    c == 0
}

impl Aadhaar {
    /// 12 digits, the first 2-9, a valid Verhoeff check digit. Spaces and hyphens between digits are
    /// tolerated on input.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let invalid = |why: &str| ApiError::invalid(ErrorCode::InvalidAadhaar, "aadhaar", why);
        if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("aadhaar must be 12 digits"));
        }
        if digits.starts_with(['0', '1']) {
            return Err(invalid("aadhaar cannot start with 0 or 1"));
        }
        if !verhoeff_valid(&digits) {
            return Err(invalid("aadhaar check digit does not match; check the number"));
        }
        Ok(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Only the last four digits: `XXXX XXXX 1234`.
    pub fn masked(&self) -> String {
        format!("XXXX XXXX {}", &self.0[8..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pan_code(raw: &str) -> &'static str {
        Pan::parse(raw).err().map(|e| e.code()).unwrap_or("ok")
    }

    fn aadhaar_code(raw: &str) -> &'static str {
        Aadhaar::parse(raw).err().map(|e| e.code()).unwrap_or("ok")
    }

    #[test]
    fn pan_table() {
        for (raw, expected) in [
            ("ABCPE1234F", "ok"),
            (" abcpe1234f ", "ok"),
            ("AAAPZ9999Z", "ok"),
            ("ABCCE1234F", "invalid_pan"), // company
            ("ABCFE1234F", "invalid_pan"), // firm
            ("ABCHE1234F", "invalid_pan"), // HUF
            ("ABCTE1234F", "invalid_pan"), // trust
            ("ABCPE0000F", "invalid_pan"), // serial 0000
            ("ABCPE1234", "invalid_pan"),
            ("ABCPE12345", "invalid_pan"),
            ("ABCP11234F", "invalid_pan"),
            ("ABCPE1234FF", "invalid_pan"),
            ("ABCPE12 4F", "invalid_pan"),
            ("ÄBCPE1234F", "invalid_pan"),
            ("", "invalid_pan"),
        ] {
            assert_eq!(pan_code(raw), expected, "{raw:?}");
        }
        assert_eq!(Pan::parse("abcpe1234f").map(|p| p.as_str().to_owned()).ok().as_deref(), Some("ABCPE1234F"));
    }

    #[test]
    fn aadhaar_table() {
        for (raw, expected) in [
            ("234123412346", "ok"),
            ("234567890124", "ok"),
            ("987654321012", "ok"),
            ("999999990019", "ok"),
            ("999999990026", "ok"),
            ("2341 2341 2346", "ok"),
            ("2341-2341-2346", "ok"),
            ("234123412347", "invalid_aadhaar"), // check digit
            ("123412341234", "invalid_aadhaar"), // starts with 1
            ("034123412346", "invalid_aadhaar"),
            ("23412341234", "invalid_aadhaar"),
            ("2341234123466", "invalid_aadhaar"),
            ("23412341234a", "invalid_aadhaar"),
            ("2341_2341_2346", "invalid_aadhaar"),
            ("", "invalid_aadhaar"),
        ] {
            assert_eq!(aadhaar_code(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn masks_show_only_what_the_rules_allow() -> ApiResult<()> {
        assert_eq!(Pan::parse("ABCPE1234F")?.masked(), "ABCPEXXXXF");
        assert_eq!(Aadhaar::parse("2341 2341 2346")?.masked(), "XXXX XXXX 2346");
        assert_eq!(format!("{:?}", Aadhaar::parse("234123412346")?), "Aadhaar(XXXX XXXX 2346)");
        assert_eq!(format!("{:?}", Pan::parse("ABCPE1234F")?), "Pan(ABCPEXXXXF)");
        Ok(())
    }
}
