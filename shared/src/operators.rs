//! Operator credentials: one named credential per operator, so every operator action is recorded under the
//! name of whoever took it (not a name the caller asserts).
//!
//! The credentials are one secret (`INFEREX_ADMIN_TOKEN` locally, the operator-token secret in AWS): a JSON
//! object from each operator's name to their own token, `{"ravi@inferexai.in": "<token>", ...}`. A plain
//! token is still accepted as a single credential named `admin`, for a one-person deployment. Each token
//! is checked like every secret (at least 32 characters, no placeholder); only their SHA-256 digests are
//! kept in memory.

use crate::runtime_secrets::{OPERATOR_TOKEN, SecretError, SecretRule, checked};
use crate::secrets::{constant_time_eq, sha256_hex};

/// The name a plain (unnamed) token acts under.
pub const SHARED_NAME: &str = "admin";
const MAX_NAME_CHARS: usize = 64;

/// The operators and the digests of their tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorCredentials {
    named: Vec<(String, String)>,
}

impl std::fmt::Debug for OperatorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.named.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OperatorCredentials").field("operators", &names).finish()
    }
}

impl OperatorCredentials {
    /// Parses and checks the secret's value (`what` names it in errors; no value is ever echoed).
    pub fn parse(what: &str, raw: &str) -> Result<Self, SecretError> {
        Self::parse_with(what, raw, OPERATOR_TOKEN)
    }

    /// As [`OperatorCredentials::parse`], with another rule for the tokens (tests use short tokens).
    pub fn parse_with(what: &str, raw: &str, rule: SecretRule) -> Result<Self, SecretError> {
        let malformed = |reason: &str| SecretError::Malformed { name: what.to_owned(), reason: reason.to_owned() };
        let raw = raw.trim();
        if !raw.starts_with('{') {
            let token = checked(what, raw, rule)?;
            return Ok(Self { named: vec![(SHARED_NAME.to_owned(), sha256_hex(token.expose()))] });
        }
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(raw).map_err(|_| malformed("not a JSON object of operator names to tokens"))?;
        if map.is_empty() {
            return Err(malformed("names no operator"));
        }
        let mut named = Vec::with_capacity(map.len());
        for (name, token) in &map {
            let valid_name = !name.is_empty()
                && name.chars().count() <= MAX_NAME_CHARS
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "@._-+".contains(c));
            if !valid_name {
                return Err(malformed("an operator name must be 1-64 letters, digits or @._-+"));
            }
            let token = token.as_str().ok_or_else(|| malformed("every operator's token must be a string"))?;
            let token = checked(&format!("{what} ({name})"), token, rule)?;
            let digest = sha256_hex(token.expose());
            if named.iter().any(|(_, other)| *other == digest) {
                return Err(malformed("two operators share a token"));
            }
            named.push((name.clone(), digest));
        }
        Ok(Self { named })
    }

    /// The operator a presented token belongs to. Every credential is compared, in constant time.
    pub fn who(&self, presented: &str) -> Option<&str> {
        if presented.is_empty() {
            return None;
        }
        let digest = sha256_hex(presented);
        let mut found = None;
        for (name, expected) in &self.named {
            if constant_time_eq(digest.as_bytes(), expected.as_bytes()) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens made now: a fixed one would be a well-known value, which the check refuses.
    fn tokens() -> (String, String) {
        (crate::secrets::random_token(), crate::secrets::random_token())
    }

    #[test]
    fn each_operator_acts_under_their_own_name() -> Result<(), SecretError> {
        let (ravi, meera) = tokens();
        let (ravi_token, meera_token) = (ravi.as_str(), meera.as_str());
        let raw = format!(r#"{{"ravi@inferexai.in": "{ravi_token}", "meera@inferexai.in": "{meera_token}"}}"#);
        let operators = OperatorCredentials::parse("the operator tokens", &raw)?;
        assert_eq!(operators.who(ravi_token), Some("ravi@inferexai.in"));
        assert_eq!(operators.who(meera_token), Some("meera@inferexai.in"));
        assert_eq!(operators.who(&format!("{ravi_token}X")), None);
        assert_eq!(operators.who(""), None);
        assert!(!format!("{operators:?}").contains(ravi_token), "no token in debug output");
        Ok(())
    }

    #[test]
    fn a_plain_token_is_the_shared_admin_and_weak_ones_stop_the_start() {
        let (ravi, meera) = tokens();
        let (ravi_token, meera_token) = (ravi.as_str(), meera.as_str());
        let shared = OperatorCredentials::parse("t", ravi_token).ok();
        assert_eq!(shared.as_ref().and_then(|s| s.who(ravi_token)), Some(SHARED_NAME));
        for bad in [
            r#"{"ravi": "short"}"#.to_owned(),
            r#"{"ravi": "REPLACE_ME_WITH_A_REAL_TOKEN_0123456789"}"#.to_owned(),
            format!(r#"{{"a b": "{ravi_token}"}}"#),
            format!(r#"{{"ravi": "{ravi_token}", "meera": "{ravi_token}"}}"#),
            "{}".to_owned(),
            "{not json".to_owned(),
            format!(r#"{{"ravi": 42, "meera": "{meera_token}"}}"#),
        ] {
            let error = OperatorCredentials::parse("the operator tokens", &bad).err().map(|e| e.to_string());
            assert!(error.as_ref().is_some_and(|e| !e.contains(ravi_token)), "{bad}: {error:?}");
        }
    }
}
