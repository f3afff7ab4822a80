//! Operator credentials: one named credential per operator, with the roles it holds, so every operator
//! action is recorded under the name of whoever took it (not a name the caller asserts) and allowed only
//! to the roles that need it.
//!
//! The credentials are one secret (`INFEREX_ADMIN_TOKEN` locally, the operator-token secret in AWS): a JSON
//! object from each operator's name to `{"token": "<token>", "roles": ["kyc_reviewer", ...]}`. The token
//! alone opens nothing but the second factor: it enrols the operator's authenticator once and, with a
//! code from it, opens a session (the `operator_auth` module). Each token is checked like every secret (at least 32
//! characters, no placeholder); only their SHA-256 digests are kept in memory.

use serde::Deserialize;

use super::roles::Role;
use crate::runtime_secrets::{OPERATOR_TOKEN, SecretError, SecretRule, checked};
use crate::secrets::{constant_time_eq, sha256_hex};

const MAX_NAME_CHARS: usize = 64;

/// One operator: their name, the digest of their token, their roles.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    pub token_digest: String,
    pub roles: Vec<Role>,
}

/// The operators and the digests of their tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorCredentials {
    operators: Vec<Credential>,
}

impl std::fmt::Debug for OperatorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.operators.iter().map(|o| o.name.as_str()).collect();
        f.debug_struct("OperatorCredentials").field("operators", &names).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    token: String,
    roles: Vec<Role>,
}

impl OperatorCredentials {
    /// Parses and checks the secret's value (`what` names it in errors; no value is ever echoed).
    pub fn parse(what: &str, raw: &str) -> Result<Self, SecretError> {
        Self::parse_with(what, raw, OPERATOR_TOKEN)
    }

    /// As [`OperatorCredentials::parse`], with another rule for the tokens (tests use short tokens).
    pub fn parse_with(what: &str, raw: &str, rule: SecretRule) -> Result<Self, SecretError> {
        let malformed = |reason: &str| SecretError::Malformed { name: what.to_owned(), reason: reason.to_owned() };
        let shape = "a JSON object of operator names to {\"token\": ..., \"roles\": [...]}";
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(raw.trim()).map_err(|_| malformed(shape))?;
        if map.is_empty() {
            return Err(malformed("names no operator"));
        }
        let mut operators: Vec<Credential> = Vec::with_capacity(map.len());
        for (name, entry) in map {
            let valid_name = !name.is_empty()
                && name.chars().count() <= MAX_NAME_CHARS
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "@._-+".contains(c));
            if !valid_name {
                return Err(malformed("an operator name must be 1-64 letters, digits or @._-+"));
            }
            let entry: Entry = serde_json::from_value(entry).map_err(|_| {
                malformed(&format!(
                    "{name}: each operator maps to {{\"token\": \"...\", \"roles\": [...]}}, roles among {}",
                    Role::ALL.map(Role::as_str).join(", ")
                ))
            })?;
            if entry.roles.is_empty() {
                return Err(malformed(&format!("{name} holds no role")));
            }
            let token = checked(&format!("{what} ({name})"), &entry.token, rule)?;
            let token_digest = sha256_hex(token.expose());
            if operators.iter().any(|other| other.token_digest == token_digest) {
                return Err(malformed("two operators share a token"));
            }
            let mut roles = entry.roles;
            roles.sort();
            roles.dedup();
            operators.push(Credential { name, token_digest, roles });
        }
        Ok(Self { operators })
    }

    /// The operator a presented token belongs to. Every credential is compared, in constant time.
    pub fn who(&self, presented: &str) -> Option<&Credential> {
        if presented.is_empty() {
            return None;
        }
        let digest = sha256_hex(presented);
        let mut found = None;
        for operator in &self.operators {
            if constant_time_eq(digest.as_bytes(), operator.token_digest.as_bytes()) && found.is_none() {
                found = Some(operator);
            }
        }
        found
    }

    /// The operator of this name, as the credentials say now (a session's roles follow the secret).
    pub fn named(&self, name: &str) -> Option<&Credential> {
        self.operators.iter().find(|o| o.name == name)
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
    fn each_operator_acts_under_their_own_name_with_their_roles() -> Result<(), SecretError> {
        let (ravi, meera) = tokens();
        let raw = serde_json::json!({
            "ravi@inferexai.in": { "token": ravi, "roles": ["payments", "kyc_reviewer", "payments"] },
            "meera@inferexai.in": { "token": meera, "roles": ["admin"] },
        })
        .to_string();
        let operators = OperatorCredentials::parse("the operator tokens", &raw)?;
        let found = operators.who(&ravi).map(|c| (c.name.as_str(), c.roles.clone()));
        assert_eq!(found, Some(("ravi@inferexai.in", vec![Role::KycReviewer, Role::Payments])));
        assert_eq!(operators.who(&meera).map(|c| c.name.as_str()), Some("meera@inferexai.in"));
        assert!(operators.who(&format!("{ravi}X")).is_none());
        assert!(operators.who("").is_none());
        assert_eq!(operators.named("meera@inferexai.in").map(|c| c.roles.clone()), Some(vec![Role::Admin]));
        assert!(!format!("{operators:?}").contains(&ravi), "no token in debug output");
        Ok(())
    }

    #[test]
    fn plain_tokens_unknown_roles_and_weak_tokens_stop_the_start() {
        let (ravi, meera) = tokens();
        let entry = |token: &str, roles: serde_json::Value| serde_json::json!({ "token": token, "roles": roles });
        for bad in [
            ravi.clone(),
            serde_json::json!({ "ravi": ravi }).to_string(),
            serde_json::json!({ "ravi": entry("short", serde_json::json!(["admin"])) }).to_string(),
            serde_json::json!({ "ravi": entry("REPLACE_ME_WITH_A_REAL_TOKEN_0123456789", serde_json::json!(["admin"])) })
                .to_string(),
            serde_json::json!({ "a b": entry(&ravi, serde_json::json!(["admin"])) }).to_string(),
            serde_json::json!({ "ravi": entry(&ravi, serde_json::json!(["admin"])), "meera": entry(&ravi, serde_json::json!(["support"])) })
                .to_string(),
            serde_json::json!({ "ravi": entry(&ravi, serde_json::json!(["root"])) }).to_string(),
            serde_json::json!({ "ravi": entry(&ravi, serde_json::json!([])) }).to_string(),
            serde_json::json!({ "ravi": entry(&ravi, serde_json::json!("admin")) }).to_string(),
            serde_json::json!({ "ravi": { "token": ravi, "roles": ["admin"], "mfa": false } }).to_string(),
            serde_json::json!({ "meera": { "token": 42, "roles": ["admin"] } }).to_string(),
            "{}".to_owned(),
            "{not json".to_owned(),
        ] {
            let error = OperatorCredentials::parse("the operator tokens", &bad).err().map(|e| e.to_string());
            assert!(error.as_ref().is_some_and(|e| !e.contains(&ravi) && !e.contains(&meera)), "{bad}: {error:?}");
        }
    }
}
