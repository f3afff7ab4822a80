//! Each operator's authenticator (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps, the step before and after
//! accepted for clock drift). The shared secret is sealed under the vault's key (KMS in AWS) and stored in
//! the operator's partition with the digest of the token that enrolled it: the token enrols once, and
//! enrolling again takes a new token (an operator who lost their authenticator is given one). A code is
//! used once: the step it belongs to must be later than the last step used, written conditionally, so two
//! sign-ins racing with one code cannot both win.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use totp_rs::{Algorithm, TOTP};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kyc::vault::{self, DataKeys, Sealed};
use crate::operators::Credential;
use crate::retention::OPERATOR_ENROLMENT_LIFETIME;
use crate::secrets::constant_time_eq;
use crate::store::schema::{operator_pk, sk};
use crate::store::{Condition, Conditional, Item, ItemStore, Put, Table, Update};

/// Seconds a code lasts.
pub const STEP_SECONDS: u64 = 30;
const DIGITS: usize = 6;
const SECRET_BYTES: usize = 20;
/// The name authenticator apps show the code under.
pub const ISSUER: &str = "InferexAI operators";

/// The enrolment as stored.
struct Enrolment {
    sealed: Sealed,
    token_digest: String,
    last_step: i64,
}

fn aad(name: &str) -> Vec<u8> {
    format!("operator-totp:{name}").into_bytes()
}

fn authenticator(secret: Vec<u8>, name: &str) -> ApiResult<TOTP> {
    TOTP::new(Algorithm::SHA1, DIGITS, 1, STEP_SECONDS, secret, Some(ISSUER.to_owned()), name.to_owned())
        .map_err(|e| ApiError::Internal(format!("the authenticator could not be set up: {e}")))
}

async fn enrolment<S: ItemStore + ?Sized>(store: &S, name: &str) -> ApiResult<Option<Enrolment>> {
    let Some(item) = store.get(Table::Main, &operator_pk(name), sk::TOTP).await? else { return Ok(None) };
    let sealed: Sealed = serde_json::from_value(item.attrs.get("sealed").cloned().unwrap_or(Value::Null))
        .map_err(|_| ApiError::Internal("an operator's enrolment is unreadable".into()))?;
    let text = |k: &str| item.attrs.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let last_step = item.attrs.get("last_step").and_then(Value::as_i64).unwrap_or(0);
    Ok(Some(Enrolment { sealed, token_digest: text("token_digest"), last_step }))
}

/// Enrols the operator's authenticator: a new secret, sealed and stored, answered once as an `otpauth://`
/// URI (authenticator apps read it, as text or a QR code). 409 when this token already enrolled one.
pub async fn enrol<S: ItemStore + ?Sized>(
    store: &S,
    keys: &dyn DataKeys,
    operator: &Credential,
    now: DateTime<Utc>,
) -> ApiResult<String> {
    let existing = enrolment(store, &operator.name).await?;
    if existing.as_ref().is_some_and(|e| e.token_digest == operator.token_digest) {
        return Err(already_enrolled());
    }
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let totp = authenticator(secret.clone(), &operator.name)?;
    let data_key = keys.generate().await?;
    let sealed = vault::seal(&data_key, keys.provider(), &secret, &aad(&operator.name))?;
    let record = json!({
        "sealed": sealed,
        "token_digest": operator.token_digest,
        "last_step": 0,
        "enrolled_at": now.to_rfc3339(),
    });
    let expires = (now + OPERATOR_ENROLMENT_LIFETIME).timestamp();
    let item = Item::from_record(operator_pk(&operator.name), sk::TOTP, &record, Some(expires))?;
    // Replaces only the enrolment this check saw (another token's), or creates it: two enrolments racing
    // with one token cannot both hand out a secret.
    let condition = match existing {
        Some(old) => Condition::AttrEquals("token_digest".into(), json!(old.token_digest)),
        None => Condition::NotExists,
    };
    match store.put(Put { table: Table::Main, item, condition }).await.applied()? {
        Some(()) => Ok(totp.get_url()),
        None => Err(already_enrolled()),
    }
}

fn already_enrolled() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::TotpAlreadyEnrolled,
        message: "this operator token already enrolled an authenticator; a lost one needs a new token".into(),
        param: None,
    }
}

/// Why a code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRefusal {
    /// No authenticator enrolled with this token.
    NotEnrolled,
    /// Not the code of this step or the ones either side, or one already used.
    Wrong,
}

/// Accepts a code once: the step it matches must be later than the last one used, and becomes it. Every
/// accepted code renews the enrolment's lifetime.
pub async fn use_code<S: ItemStore + ?Sized>(
    store: &S,
    keys: &dyn DataKeys,
    operator: &Credential,
    code: &str,
    now: DateTime<Utc>,
) -> ApiResult<Result<(), CodeRefusal>> {
    let Some(enrolled) = enrolment(store, &operator.name).await?.filter(|e| e.token_digest == operator.token_digest)
    else {
        return Ok(Err(CodeRefusal::NotEnrolled));
    };
    let secret = vault::open(keys, &enrolled.sealed, &aad(&operator.name)).await?;
    let totp = authenticator(secret, &operator.name)?;
    let Some(step) = matching_step(&totp, code, now) else { return Ok(Err(CodeRefusal::Wrong)) };
    if step <= enrolled.last_step {
        return Ok(Err(CodeRefusal::Wrong));
    }
    let used = Update::new(Table::Main, operator_pk(&operator.name), sk::TOTP)
        .set("last_step", step)
        .expiry(crate::store::ExpiryChange::Set((now + OPERATOR_ENROLMENT_LIFETIME).timestamp()))
        .when(Condition::All(vec![
            Condition::AttrEquals("last_step".into(), json!(enrolled.last_step)),
            Condition::AttrEquals("token_digest".into(), json!(operator.token_digest)),
        ]));
    Ok(match store.update(used).await.applied()? {
        Some(_) => Ok(()),
        // Another sign-in used a code first (this one, or a later one): this code is spent.
        None => Err(CodeRefusal::Wrong),
    })
}

/// The step (`unix time / 30`) whose code this is, among the current step and the ones either side.
fn matching_step(totp: &TOTP, code: &str, now: DateTime<Utc>) -> Option<i64> {
    let current = u64::try_from(now.timestamp()).ok()? / STEP_SECONDS;
    let mut found = None;
    for step in current.saturating_sub(1)..=current + 1 {
        let expected = totp.generate(step * STEP_SECONDS);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = i64::try_from(step).ok();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_matches_its_own_step_and_the_ones_either_side_only() -> Result<(), Box<dyn std::error::Error>> {
        // RFC 6238's test secret, with its SHA-1 vector at T = 59 s (94287082, the last 6 digits here).
        let totp = authenticator(b"12345678901234567890".to_vec(), "ravi@inferexai.in")?;
        assert_eq!(totp.generate(59), "287082");
        let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap_or_default();
        assert_eq!(matching_step(&totp, "287082", at(59)), Some(1));
        assert_eq!(matching_step(&totp, "287082", at(89)), Some(1), "one step of drift");
        assert_eq!(matching_step(&totp, "287082", at(95)), None, "two steps later");
        assert_eq!(matching_step(&totp, "28708", at(59)), None);
        assert!(totp.get_url().starts_with("otpauth://totp/"), "{}", totp.get_url());
        Ok(())
    }
}
