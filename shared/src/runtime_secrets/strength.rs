//! How hard a secret is to guess. The rule (docs/operations.md, "Secrets"):
//! - a value that appears anywhere in this project (code, tests, documentation, the stand-ins' own keys:
//!   `well_known.txt`) is refused outright, and so is one that adds fewer than [`ADDED_CHARS`] characters to
//!   such a value;
//! - otherwise its entropy is estimated with zxcvbn's pattern matching (dictionary words, common passwords,
//!   names, keyboard walks, repeats, sequences such as `abcdef…` or `1234…`, dates), pricing each part it
//!   recognises at zxcvbn's guesses for it and every other character at the size of the alphabet the value
//!   draws on (lower case, upper case, digits, symbols);
//! - secrets we choose ourselves (the webhook secret, operators' tokens, CloudFront's edge secret) need at
//!   least 128 bits; credentials a provider issues (Razorpay's key secret, model providers' API keys) at
//!   least 96, because their length is the issuer's: a random 24-character Razorpay key secret of letters
//!   and digits estimates 110 to 143 bits (3,000 random keys), so 128 would refuse about one real key in 25.

use zxcvbn::matching::patterns::MatchPattern;

/// Every secret value that appears in this repository, one a line; `well_known_secrets_are_listed`
/// (shared/tests) fails when a literal that would pass as a secret is missing here.
const WELL_KNOWN_LIST: &str = include_str!("well_known.txt");

/// The listed values, without blank lines and `#` comments.
pub fn well_known() -> impl Iterator<Item = &'static str> {
    WELL_KNOWN_LIST.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// A well-known value with fewer characters than this added around it is still well known.
pub const ADDED_CHARS: usize = 16;

/// Whether `value` is one of the well-known values (letter case aside), or one with little added.
pub fn is_well_known(value: &str) -> bool {
    let value = value.to_ascii_lowercase();
    well_known().any(|known| value.contains(&known.to_ascii_lowercase()) && value.len() < known.len() + ADDED_CHARS)
}

/// zxcvbn counts guesses in 64 bits, which saturate past about 19 characters (every reading of a longer value
/// then costs the same, and it falls back to brute force): so words are read in pieces of at most this many
/// characters.
const PIECE_CHARS: usize = 16;

/// The estimated entropy of `value`, in bits: the value is read word by word (a word ends at any character
/// that is not a letter or digit, which counts like any character of its alphabet), each word in pieces of
/// [`PIECE_CHARS`]; a piece seen before costs one bit.
pub fn estimated_bits(value: &str) -> f64 {
    let per_char = alphabet_size(value).log2();
    let mut seen: Vec<String> = Vec::new();
    let mut bits = 0.0;
    for word in value.split_inclusive(|c: char| !c.is_ascii_alphanumeric()) {
        let letters: Vec<char> = word.chars().filter(char::is_ascii_alphanumeric).collect();
        bits += (word.chars().count() - letters.len()) as f64 * per_char;
        for piece in letters.chunks(PIECE_CHARS).map(String::from_iter) {
            if seen.contains(&piece) {
                bits += 1.0;
                continue;
            }
            bits += piece_bits(&piece, per_char);
            seen.push(piece);
        }
    }
    bits
}

/// One piece: each part zxcvbn recognises costs its guesses; the rest, `per_char` bits a character.
fn piece_bits(piece: &str, per_char: f64) -> f64 {
    let estimate = zxcvbn::zxcvbn(piece, &[]);
    estimate
        .sequence()
        .iter()
        .map(|part| match part.pattern {
            MatchPattern::BruteForce => part.token.chars().count() as f64 * per_char,
            _ => (part.guesses.unwrap_or(1).max(1) as f64).log2(),
        })
        .sum()
}

/// How many characters the value's kinds of character offer: lower case, upper case, digits, and the 33
/// printable ASCII symbols (any other character counts as a symbol).
fn alphabet_size(value: &str) -> f64 {
    let has = |kind: fn(&char) -> bool| value.chars().any(|c| kind(&c));
    let mut size = 0.0;
    for (present, kind_size) in [
        (has(char::is_ascii_lowercase), 26.0),
        (has(char::is_ascii_uppercase), 26.0),
        (has(char::is_ascii_digit), 10.0),
        (value.chars().any(|c| !c.is_ascii_alphanumeric()), 33.0),
    ] {
        if present {
            size += kind_size;
        }
    }
    f64::max(size, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_repeats_words_and_well_known_values_estimate_low() {
        for guessable in [
            "abcdefghijklmnopqrstuvwxyz",
            "12345678901234567890",
            "test_webhook_secret_1234",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "qwertyuiopasdfghjklzxcvbnm1234567890",
            "Password1234567890Password123",
        ] {
            assert!(estimated_bits(guessable) < 96.0, "{guessable}: {}", estimated_bits(guessable));
        }
    }

    #[test]
    fn random_values_estimate_at_their_alphabet() {
        use rand::RngCore;
        for _ in 0..50 {
            // 32 random bytes in hex, as docs/operations.md tells operators to make them, and our own tokens.
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let hex = hex::encode(bytes);
            assert!(estimated_bits(&hex) > 200.0, "{hex}: {}", estimated_bits(&hex));
            let token = crate::secrets::random_token();
            assert!(estimated_bits(&token) > 200.0, "{token}: {}", estimated_bits(&token));
        }
        assert_eq!(alphabet_size("ab12"), 36.0);
        assert_eq!(alphabet_size("aB1-"), 95.0);
    }

    #[test]
    fn the_list_holds_the_stand_ins_keys_and_is_matched_whatever_the_case() {
        assert!(is_well_known("local_standin_webhook_secret"));
        assert!(is_well_known("LOCAL_STANDIN_KEY_SECRET"));
        // A listed value with a little added is no better than the value; with a secret's worth, it is new.
        let digest = "8778ecbdf6fa3a024d48720de19e120646a129c6186dd122e9b7a059052e986b";
        assert!(is_well_known(&format!("{digest}-2")) && is_well_known(&format!("x{digest}x")));
        assert!(!is_well_known(&format!("{digest}{}", crate::secrets::random_token())));
        assert!(!is_well_known(&crate::secrets::random_token()));
    }
}
