//! Identity number rules: PAN and GSTIN format checks (the GSTIN's check character), the Aadhaar
//! Verhoeff check digit (for the DigiLocker stand-in and for recognising a number that must not be
//! accepted), masking.

use crate::error::{ApiError, ApiResult, ErrorCode};

/// A PAN that passed the format rules for an individual's personal account.
#[derive(Clone, PartialEq, Eq)]
pub struct Pan(String);

/// A GSTIN that passed the format and check-character rules: 2-digit state code, the holder's PAN, the
/// entity number, `Z`, a check character (CGST Rules 2017, rule 10 and Form GST REG-06).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Gstin(String);

// Never print the numbers themselves, not even in debug output.
impl std::fmt::Debug for Pan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl Pan {
    /// `^[A-Z]{5}[0-9]{4}[A-Z]$`, serial not 0000, 4th letter `P` (individual). Surrounding spaces and
    /// lower case are accepted and normalised.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let pan = Self::parse_any_holder(raw)?;
        if pan.holder_type() != b'P' {
            return Err(ApiError::invalid(
                ErrorCode::InvalidPan,
                "pan",
                "pan must belong to an individual (its 4th letter must be P); a business verifies with its gstin",
            ));
        }
        Ok(pan)
    }

    /// As [`Pan::parse`], for any holder the Income Tax Department issues PANs to (4th letter P person,
    /// C company, F firm, H HUF, T trust, A AOP, B BOI, G government, L local authority, J artificial
    /// juridical person): the business path.
    pub fn parse_any_holder(raw: &str) -> ApiResult<Self> {
        let pan = raw.trim().to_ascii_uppercase();
        let b = pan.as_bytes();
        if !pan_shaped(&pan) {
            return Err(ApiError::invalid(
                ErrorCode::InvalidPan,
                "pan",
                "pan must be 10 characters: 5 letters, 4 digits, 1 letter",
            ));
        }
        if &pan[5..9] == "0000" {
            return Err(ApiError::invalid(ErrorCode::InvalidPan, "pan", "pan has an invalid serial number"));
        }
        if !HOLDER_TYPES.contains(&b[3]) {
            return Err(ApiError::invalid(ErrorCode::InvalidPan, "pan", "pan's 4th letter is not a holder type"));
        }
        Ok(Self(pan))
    }

    /// The 4th letter: who holds the PAN.
    pub fn holder_type(&self) -> u8 {
        self.0.as_bytes()[3]
    }

    /// An individual's PAN (the only kind with a date of birth).
    pub fn is_individual(&self) -> bool {
        self.holder_type() == b'P'
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// First five letters, `XXXX`, last letter: `ABCDEXXXXF`.
    pub fn masked(&self) -> String {
        format!("{}XXXX{}", &self.0[..5], &self.0[9..])
    }
}

/// The holder types of the 4th letter (P C F H T A B G L J).
const HOLDER_TYPES: [u8; 10] = *b"PCFHTABGLJ";

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

/// True for a string of 12 digits (spaces and hyphens between them ignored) that an Aadhaar number could
/// be: first digit 2-9, valid Verhoeff check digit.
pub fn looks_like_aadhaar(raw: &str) -> bool {
    let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    digits.len() == 12 && !digits.starts_with(['0', '1']) && verhoeff_valid(&digits)
}

/// Five capital letters, four digits, a capital letter: the shape of every PAN.
fn pan_shaped(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() == 10
        && b[..5].iter().all(u8::is_ascii_uppercase)
        && b[5..9].iter().all(u8::is_ascii_digit)
        && b[9].is_ascii_uppercase()
}

/// True when free text holds something shaped like a PAN (5 letters, 4 digits, a letter) or an Aadhaar
/// number (12 digits, spaces or hyphens between them allowed, valid check digit): text people write to us
/// (a grievance, an operator's note) must not become a plain-text copy of an identity number (Aadhaar Act
/// s.29, and our rule that full numbers live only in the vault).
pub fn holds_identity_number(text: &str) -> bool {
    if text.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| pan_shaped(&word.to_ascii_uppercase())) {
        return true;
    }
    // Twelve digits on their own, or as three groups of four split by a space or a hyphen (how the number
    // is printed); a phone number's groups are not shaped so.
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len()).any(|start| {
        let begins = start == 0 || !chars[start - 1].is_ascii_digit();
        begins && aadhaar_at(&chars[start..])
    })
}

/// Whether `rest` starts with an Aadhaar-shaped number that ends there.
fn aadhaar_at(rest: &[char]) -> bool {
    let ends = |at: usize| rest.get(at).is_none_or(|c| !c.is_ascii_digit());
    let digits = |from: usize, n: usize| rest.get(from..from + n).is_some_and(|s| s.iter().all(char::is_ascii_digit));
    let number = |positions: &[usize]| positions.iter().filter_map(|&i| rest.get(i)).collect::<String>();
    if digits(0, 12) && ends(12) {
        return looks_like_aadhaar(&number(&(0..12).collect::<Vec<_>>()));
    }
    let sep = |at: usize| rest.get(at).is_some_and(|c| matches!(c, ' ' | '-'));
    if digits(0, 4) && sep(4) && digits(5, 4) && sep(9) && digits(10, 4) && ends(14) {
        let positions: Vec<usize> = (0..4).chain(5..9).chain(10..14).collect();
        return looks_like_aadhaar(&number(&positions));
    }
    false
}

/// The only form of an Aadhaar number we keep or show: its last four digits, `XXXX XXXX 1234` (Aadhaar
/// (Sharing of Information) Regulations 2016, reg. 6). `None` unless `last_four` is four digits.
pub fn masked_aadhaar(last_four: &str) -> Option<String> {
    (last_four.len() == 4 && last_four.bytes().all(|b| b.is_ascii_digit())).then(|| format!("XXXX XXXX {last_four}"))
}

const GSTIN_CHARS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The GSTIN check character of its first 14 characters (GSTN's published base-36 Luhn variant).
fn gstin_check_char(first14: &[u8]) -> Option<u8> {
    let mut sum = 0usize;
    for (i, c) in first14.iter().enumerate() {
        let value = GSTIN_CHARS.iter().position(|x| x == c)?;
        let product = value * if i % 2 == 0 { 1 } else { 2 };
        sum += product / 36 + product % 36;
    }
    GSTIN_CHARS.get((36 - sum % 36) % 36).copied()
}

impl Gstin {
    /// 15 characters: state code 01-38 or 97/99, a PAN, an entity number (1-9 or A-Z), `Z`, the check
    /// character. Surrounding spaces and lower case are accepted and normalised.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let gstin = raw.trim().to_ascii_uppercase();
        let invalid = |why: &str| ApiError::invalid(ErrorCode::InvalidGstin, "gstin", why);
        let b = gstin.as_bytes();
        if b.len() != 15 || !b.iter().all(|c| GSTIN_CHARS.contains(c)) {
            return Err(invalid("gstin must be 15 letters and digits"));
        }
        let state: u8 = gstin[..2].parse().map_err(|_| invalid("gstin must start with a 2-digit state code"))?;
        if !matches!(state, 1..=38 | 97 | 99) {
            return Err(invalid("gstin's state code is not one GSTN issues"));
        }
        Pan::parse_any_holder(&gstin[2..12]).map_err(|_| invalid("gstin's characters 3 to 12 must be a PAN"))?;
        if b[12] == b'0' || b[13] != b'Z' {
            return Err(invalid("gstin's 13th character must be 1-9 or A-Z and its 14th Z"));
        }
        if gstin_check_char(&b[..14]) != Some(b[14]) {
            return Err(invalid("gstin's check character does not match; check the number"));
        }
        Ok(Self(gstin))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PAN inside the GSTIN (characters 3 to 12).
    pub fn pan(&self) -> &str {
        &self.0[2..12]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pan_code(raw: &str) -> &'static str {
        Pan::parse(raw).err().map(|e| e.code()).unwrap_or("ok")
    }

    #[test]
    fn pan_table() {
        for (raw, expected) in [
            ("ABCPE1234F", "ok"),
            (" abcpe1234f ", "ok"),
            ("AAAPZ9999Z", "ok"),
            ("ABCCE1234F", "invalid_pan"), // company (accepted only on the business path)
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
    fn business_pans_pass_only_the_business_path() {
        for raw in ["ABCCE1234F", "ABCFE1234F", "ABCHE1234F", "ABCTE1234F", "ABCPE1234F"] {
            assert!(Pan::parse_any_holder(raw).is_ok(), "{raw}");
        }
        for raw in ["ABCXE1234F", "ABCCE0000F", "ABCCE1234"] {
            assert!(Pan::parse_any_holder(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn aadhaar_numbers_are_recognised() {
        for raw in ["234123412346", "2341 2341 2346", "2341-2341-2346", "999999990019"] {
            assert!(looks_like_aadhaar(raw), "{raw}");
        }
        for raw in ["234123412347", "123412341234", "23412341234", "2341234123466", "ABCPE1234F"] {
            assert!(!looks_like_aadhaar(raw), "{raw}");
        }
        assert_eq!(masked_aadhaar("2346").as_deref(), Some("XXXX XXXX 2346"));
        assert_eq!(masked_aadhaar("23467"), None);
        assert_eq!(masked_aadhaar("xx46"), None);
    }

    #[test]
    fn gstin_table() {
        // Two GSTINs published as examples, with their check characters.
        for raw in ["27AAPFU0939F1ZV", "29AAGCB7383J1Z4", " 27aapfu0939f1zv "] {
            assert!(Gstin::parse(raw).is_ok(), "{raw}");
        }
        assert_eq!(Gstin::parse("27AAPFU0939F1ZV").map(|g| g.pan().to_owned()).ok().as_deref(), Some("AAPFU0939F"));
        for raw in [
            "27AAPFU0939F1ZW", // check character
            "27AAPFU0939F1YV", // 14th not Z
            "40AAPFU0939F1ZV", // state code
            "27AAPXU0939F1ZV", // not a PAN inside
            "27AAPFU0939F0ZV", // entity 0
            "27AAPFU0939F1Z",
            "",
        ] {
            assert_eq!(Gstin::parse(raw).err().map(|e| e.code()), Some("invalid_gstin"), "{raw}");
        }
    }

    #[test]
    fn masks_show_only_what_the_rules_allow() -> ApiResult<()> {
        assert_eq!(Pan::parse("ABCPE1234F")?.masked(), "ABCPEXXXXF");
        // Free text: a PAN or an Aadhaar number in any usual form is caught; a phone number is not.
        for text in ["my pan is abcpe1234f.", "Aadhaar 2341 2341 2346", "no. 2341-2341-2346!", "234123412346"] {
            assert!(holds_identity_number(text), "{text}");
        }
        for text in ["call +91 98765 43210", "ref prq_2341234123", "2341 2341 2347", "1234 5678 9012 3456"] {
            assert!(!holds_identity_number(text), "{text}");
        }
        assert_eq!(format!("{:?}", Pan::parse("ABCPE1234F")?), "Pan(ABCPEXXXXF)");
        Ok(())
    }
}
