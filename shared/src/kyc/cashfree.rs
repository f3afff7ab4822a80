//! The KYC provider adapter for Cashfree's Verification Suite (Secure ID), API version 2023-12-18:
//! `POST /pan` (Verify PAN: registered name, name-match score), `POST /pan-lite` (date-of-birth match),
//! `POST /gstin`, `POST /digilocker`, `GET /digilocker` and `GET /digilocker/document/AADHAAR`. Chosen over
//! Setu and Decentro because one contract covers the three checks (PAN with a name score and a date-of-birth
//! match, GSTIN, DigiLocker) and the same company already settles Indian payments. Credentials:
//! `x-client-id` / `x-client-secret`, from the secret `KYC_PROVIDER_SECRET_ARN` names in AWS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

use super::provider::{
    AadhaarDetails, DigilockerLink, DigilockerOutcome, GstinAnswer, KycProvider, NameMatch, PanAnswer, PanQuery,
    PanRecord, ProviderError, ProviderName,
};
use rsa::{Oaep, RsaPublicKey};

use crate::clock::{Clock, SystemClock};
use crate::env::var;
use crate::runtime_secrets::{self, ISSUED_BITS, Rotating, SecretError, SecretRule};
use crate::secrets::SecretString;

pub const PRODUCTION_API_BASE: &str = "https://api.cashfree.com/verification";
const API_VERSION: &str = "2023-12-18";
/// A client id is shown in Cashfree's dashboard and sent in every request: only its form counts.
const CLIENT_ID: SecretRule = SecretRule { min_chars: 10, min_bits: 0 };
/// Client secrets are long random strings Cashfree issues.
const CLIENT_SECRET: SecretRule = SecretRule { min_chars: 20, min_bits: ISSUED_BITS };
/// How long one call may take before the check is left pending for the jobs to ask again: a submission
/// makes at most three calls (GSTIN, Verify PAN, PAN Lite), all within the kyc function's 28 seconds.
pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(8);

/// Credentials and endpoint.
#[derive(Debug, Clone)]
pub struct CashfreeConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub api_base: String,
    /// The public key Cashfree issues for callers without a fixed IP address (a Lambda function has none):
    /// with it every request carries `x-cf-signature` (Cashfree's "2FA API signature").
    pub public_key: Option<RsaPublicKey>,
}

#[derive(Deserialize)]
struct StoredKeys {
    client_id: String,
    client_secret: String,
    #[serde(default)]
    public_key: Option<String>,
}

/// A public key in PEM, as Cashfree's dashboard downloads it (SubjectPublicKeyInfo or PKCS#1).
pub fn public_key_from_pem(name: &str, pem: &str) -> Result<RsaPublicKey, SecretError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    RsaPublicKey::from_public_key_pem(pem.trim()).or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim())).map_err(|_| {
        SecretError::Malformed { name: name.to_owned(), reason: "expected an RSA public key in PEM".into() }
    })
}

impl CashfreeConfig {
    /// `CASHFREE_CLIENT_ID` and `CASHFREE_CLIENT_SECRET` (both or neither, each checked), `CASHFREE_API_BASE`
    /// and `CASHFREE_PUBLIC_KEY` (PEM, optional): the local configuration. In AWS the keys come from Secrets
    /// Manager instead.
    pub fn from_env() -> Result<Option<Self>, crate::env::ConfigError> {
        let to_config_error =
            |e: SecretError| crate::env::ConfigError { name: e.name().to_owned(), reason: e.to_string() };
        let public_key = var::<String>("CASHFREE_PUBLIC_KEY")?;
        match (var::<String>("CASHFREE_CLIENT_ID")?, var::<String>("CASHFREE_CLIENT_SECRET")?) {
            (Some(client_id), Some(client_secret)) => StoredKeys { client_id, client_secret, public_key }
                .checked(["CASHFREE_CLIENT_ID", "CASHFREE_CLIENT_SECRET"], api_base()?)
                .map(Some)
                .map_err(to_config_error),
            (None, None) => Ok(None),
            _ => Err(crate::env::ConfigError {
                name: "CASHFREE_CLIENT_ID".into(),
                reason: "set CASHFREE_CLIENT_ID and CASHFREE_CLIENT_SECRET together".into(),
            }),
        }
    }

    /// Parses and checks the Secrets Manager secret `{"client_id", "client_secret"}`.
    pub fn from_secret_json(name: &str, raw: &str, api_base: &str) -> Result<Self, SecretError> {
        let stored: StoredKeys = serde_json::from_str(raw).map_err(|_| SecretError::Malformed {
            name: name.to_owned(),
            reason:
                "expected JSON {\"client_id\": \"…\", \"client_secret\": \"…\", \"public_key\": \"PEM (optional)\"}"
                    .into(),
        })?;
        stored.checked([format!("{name} client_id"), format!("{name} client_secret")], api_base.to_owned())
    }
}

impl StoredKeys {
    fn checked(self, names: [impl AsRef<str>; 2], api_base: String) -> Result<CashfreeConfig, SecretError> {
        let [id_name, secret_name] = names;
        let client_id = runtime_secrets::checked(id_name.as_ref(), &self.client_id, CLIENT_ID)?;
        let public_key = match self.public_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            Some(pem) => Some(public_key_from_pem(&format!("{} public_key", id_name.as_ref()), pem)?),
            None => None,
        };
        Ok(CashfreeConfig {
            client_id: client_id.expose().to_owned(),
            client_secret: runtime_secrets::checked(secret_name.as_ref(), &self.client_secret, CLIENT_SECRET)?,
            api_base,
            public_key,
        })
    }
}

/// `CASHFREE_API_BASE`, else Cashfree's production API.
pub fn api_base() -> Result<String, crate::env::ConfigError> {
    Ok(var::<String>("CASHFREE_API_BASE")?.unwrap_or_else(|| PRODUCTION_API_BASE.into()))
}

/// The client. Build it once per process: it holds the connection pool and the keys.
pub struct Cashfree {
    http: reqwest::Client,
    config: Arc<Rotating<CashfreeConfig>>,
    /// The time each signature carries.
    clock: Arc<dyn Clock>,
}

impl Cashfree {
    /// A client with fixed keys (local runs) and the default answer timeout.
    pub fn new(config: CashfreeConfig) -> Result<Self, ProviderError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self::with_keys(Rotating::fixed(config, Arc::clone(&clock)), DEFAULT_ANSWER_TIMEOUT, clock)
    }

    /// A client whose keys follow their secret; a call not answered within `timeout` is left to the jobs.
    pub fn with_keys(
        config: Rotating<CashfreeConfig>,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .build()
            .map_err(|e| ProviderError::Refused(e.to_string()))?;
        Ok(Self { http, config: Arc::new(config), clock })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, ProviderError> {
        let config = self.config.current().await;
        let url = format!("{}{path}", config.api_base.trim_end_matches('/'));
        let mut request = self
            .http
            .request(method, url)
            .header("x-client-id", &config.client_id)
            .header("x-client-secret", config.client_secret.expose())
            .header("x-api-version", API_VERSION);
        if let Some(key) = &config.public_key {
            request =
                request.header("x-cf-signature", signature(key, &config.client_id, self.clock.now().timestamp())?);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        classify(status, &body)
    }
}

/// Cashfree's 2FA signature: `<client id>.<unix seconds>`, RSA-OAEP encrypted with its public key (SHA-1,
/// OpenSSL's OAEP padding, which Cashfree's reference code uses), in base64.
pub fn signature(key: &RsaPublicKey, client_id: &str, unix_seconds: i64) -> Result<String, ProviderError> {
    use base64::Engine;
    let plain = format!("{client_id}.{unix_seconds}");
    let encrypted = key
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), plain.as_bytes())
        .map_err(|e| ProviderError::Refused(format!("the request could not be signed: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(encrypted))
}

/// A response sorted: 2xx parsed; 429 and 5xx are the provider's trouble (ask again later); any other status
/// is a refusal a person must look at (credentials, IP allow-list, balance, a malformed request). Only the
/// error's `code` is kept: an error body may echo what was sent.
fn classify(status: reqwest::StatusCode, body: &[u8]) -> Result<Value, ProviderError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| ProviderError::Unavailable(format!("unreadable answer: {e}")));
    }
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(|c| c.chars().take(80).collect::<String>()))
        .unwrap_or_default();
    let what = format!("HTTP {} {code}", status.as_u16());
    if status.as_u16() == 429 || status.is_server_error() {
        Err(ProviderError::Unavailable(what))
    } else {
        Err(ProviderError::Refused(what))
    }
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty() && *s != "-").map(str::to_owned)
}

/// Cashfree sends ids and scores as numbers or as strings.
fn number_or_text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// Verify PAN's answer: the record and the name match.
fn pan_answer(v: &Value) -> PanAnswer {
    let status = text(v, "pan_status").unwrap_or_default().to_ascii_uppercase();
    let record = if matches!(status.as_str(), "DELETED" | "DEACTIVATED") {
        PanRecord::Deleted
    } else if v.get("valid").and_then(Value::as_bool) == Some(true) {
        PanRecord::Valid
    } else {
        PanRecord::Invalid
    };
    let name_match = match text(v, "name_match_result").as_deref() {
        Some("DIRECT_MATCH") => NameMatch::Match,
        Some("GOOD_PARTIAL_MATCH" | "MODERATE_PARTIAL_MATCH" | "POOR_PARTIAL_MATCH") => NameMatch::Partial,
        _ => NameMatch::Mismatch,
    };
    let score = number_or_text(v, "name_match_score").and_then(|s| s.parse::<f64>().ok());
    PanAnswer {
        record,
        name_match,
        // A percentage: clamped and whole.
        name_match_score: score.map(|s| s.clamp(0.0, 100.0).round() as u32),
        registered_name: text(v, "registered_name"),
        date_of_birth_match: None,
        reference_id: number_or_text(v, "reference_id").unwrap_or_default(),
    }
}

/// DigiLocker dates are `DD-MM-YYYY`.
fn digilocker_date(raw: Option<String>) -> Option<NaiveDate> {
    raw.and_then(|d| NaiveDate::parse_from_str(&d, "%d-%m-%Y").ok())
}

/// The Aadhaar document, of which only the name, the date of birth and the masked number's last four
/// digits are read (the address, photo and XML link are dropped unread).
fn aadhaar_details(v: &Value) -> Result<AadhaarDetails, ProviderError> {
    let uid = text(v, "uid").unwrap_or_default();
    let last_four: String = uid.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let name = text(v, "name");
    match (name, last_four.len() == 4 && last_four.bytes().all(|b| b.is_ascii_digit())) {
        (Some(name), true) => Ok(AadhaarDetails { name, date_of_birth: digilocker_date(text(v, "dob")), last_four }),
        _ => Err(ProviderError::Refused("the Aadhaar document lacks a name or a masked number".into())),
    }
}

#[async_trait]
impl KycProvider for Cashfree {
    fn name(&self) -> ProviderName {
        "cashfree"
    }

    async fn check_pan(&self, query: PanQuery<'_>) -> Result<PanAnswer, ProviderError> {
        let body = json!({ "pan": query.pan, "name": query.name });
        let mut answer = pan_answer(&self.send(reqwest::Method::POST, "/pan", Some(body)).await?);
        if let (Some(born), PanRecord::Valid) = (query.date_of_birth, answer.record) {
            let body = json!({
                "verification_id": query.verification_id, "pan": query.pan, "name": query.name,
                "dob": born.format("%Y-%m-%d").to_string(),
            });
            let lite = self.send(reqwest::Method::POST, "/pan-lite", Some(body)).await?;
            answer.date_of_birth_match = Some(text(&lite, "dob_match").as_deref() == Some("Y"));
        }
        Ok(answer)
    }

    async fn check_gstin(&self, _verification_id: &str, gstin: &str) -> Result<GstinAnswer, ProviderError> {
        let v = self.send(reqwest::Method::POST, "/gstin", Some(json!({ "GSTIN": gstin }))).await?;
        Ok(GstinAnswer {
            // "GSTIN Doesn't Exist" comes without `valid`.
            valid: v.get("valid").and_then(Value::as_bool) == Some(true),
            legal_name: text(&v, "legal_name_of_business"),
            status: text(&v, "gst_in_status"),
            reference_id: number_or_text(&v, "reference_id").unwrap_or_default(),
        })
    }

    async fn start_digilocker(
        &self,
        verification_id: &str,
        redirect_url: &str,
    ) -> Result<DigilockerLink, ProviderError> {
        let body = json!({
            "verification_id": verification_id, "document_requested": ["AADHAAR"],
            "redirect_url": redirect_url, "user_flow": "signup",
        });
        let v = self.send(reqwest::Method::POST, "/digilocker", Some(body)).await?;
        let url = text(&v, "url").ok_or_else(|| ProviderError::Refused("no consent URL in the answer".into()))?;
        Ok(DigilockerLink { url, reference_id: number_or_text(&v, "reference_id").unwrap_or_default() })
    }

    async fn digilocker_outcome(&self, verification_id: &str) -> Result<DigilockerOutcome, ProviderError> {
        let query = format!("?verification_id={verification_id}");
        let v = self.send(reqwest::Method::GET, &format!("/digilocker{query}"), None).await?;
        match text(&v, "status").as_deref() {
            Some("AUTHENTICATED") => {}
            Some("EXPIRED") => return Ok(DigilockerOutcome::NotShared { expired: true }),
            Some("CONSENT_DENIED") => return Ok(DigilockerOutcome::NotShared { expired: false }),
            _ => return Ok(DigilockerOutcome::Pending),
        }
        let document = self.send(reqwest::Method::GET, &format!("/digilocker/document/AADHAAR{query}"), None).await?;
        if text(&document, "status").as_deref() != Some("SUCCESS") {
            return Ok(DigilockerOutcome::NotShared { expired: false });
        }
        aadhaar_details(&document).map(DigilockerOutcome::Shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_pan_answers_are_read_as_cashfree_sends_them() {
        let valid = json!({"pan":"ABCPV1234D","type":"Individual","reference_id":161,"registered_name":"JOHN DOE","valid":true,"name_match_score":"100.00","name_match_result":"DIRECT_MATCH","pan_status":"VALID"});
        let answer = pan_answer(&valid);
        assert_eq!(
            (answer.record, answer.name_match, answer.name_match_score),
            (PanRecord::Valid, NameMatch::Match, Some(100))
        );
        assert_eq!(answer.reference_id, "161");
        let partial =
            json!({"valid":true,"name_match_score":60,"name_match_result":"MODERATE_PARTIAL_MATCH","reference_id":"9"});
        assert_eq!(pan_answer(&partial).name_match, NameMatch::Partial);
        let invalid = json!({"valid":false,"message":"Invalid PAN","name_match_score":0,"name_match_result":"-"});
        assert_eq!(
            (pan_answer(&invalid).record, pan_answer(&invalid).name_match),
            (PanRecord::Invalid, NameMatch::Mismatch)
        );
        let deleted = json!({"valid":false,"pan_status":"DELETED"});
        assert_eq!(pan_answer(&deleted).record, PanRecord::Deleted);
    }

    #[test]
    fn only_what_we_keep_is_read_from_the_aadhaar_document() -> Result<(), ProviderError> {
        let document = json!({"status":"SUCCESS","uid":"xxxxxxxx5647","dob":"02-02-1995","name":"Mallesh Dollin","care_of":"S/O","photo_link":"/9j/4AAQ"});
        let details = aadhaar_details(&document)?;
        assert_eq!(details.last_four, "5647");
        assert_eq!(details.date_of_birth, NaiveDate::from_ymd_opt(1995, 2, 2));
        assert!(aadhaar_details(&json!({"status":"SUCCESS","uid":"xxxx","name":"A"})).is_err());
        Ok(())
    }

    #[test]
    fn errors_are_sorted_by_status_and_never_carry_the_body() {
        let body = br#"{"type":"internal_error","code":"verification_failed","message":"ABCPE1234F failed"}"#;
        let unavailable = classify(reqwest::StatusCode::BAD_GATEWAY, body);
        assert!(matches!(&unavailable, Err(ProviderError::Unavailable(why)) if !why.contains("ABCPE")));
        assert!(matches!(classify(reqwest::StatusCode::TOO_MANY_REQUESTS, b"{}"), Err(ProviderError::Unavailable(_))));
        assert!(matches!(classify(reqwest::StatusCode::UNAUTHORIZED, b"{}"), Err(ProviderError::Refused(_))));
    }

    #[test]
    fn secrets_fail_closed() {
        let refused =
            CashfreeConfig::from_secret_json("kyc", r#"{"client_id":"CF10000000","client_secret":"change-me"}"#, "x");
        assert!(refused.is_err());
        let malformed = CashfreeConfig::from_secret_json("kyc", r#"["a"]"#, "x");
        assert!(matches!(malformed, Err(SecretError::Malformed { .. })));
    }
}
