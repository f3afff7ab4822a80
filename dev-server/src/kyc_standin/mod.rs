//! A local stand-in for Cashfree's Verification Suite that speaks its wire format (API version 2023-12-18,
//! paths under `/verification`): `POST /pan`, `POST /pan-lite`, `POST /gstin`, `POST /digilocker`,
//! `GET /digilocker`, `GET /digilocker/document/AADHAAR`, with `x-client-id` / `x-client-secret`, Cashfree's
//! error bodies, its 409 on a reused `verification_id`, its per-minute rate limit, a consent link that
//! expires after 10 minutes, and configurable slowness. It lets `make run` verify someone with no network
//! and the tests drive every outcome. It lives only in the dev server and the tests.
//!
//! A PAN's outcome is chosen by the last of its four digits (README, "KYC stand-in"): 0-3 valid (name and
//! date of birth match), 4 partial name match, 5 name mismatch, 6 date of birth mismatch (unless asked with
//! 1 January 1985, the date its records hold), 7 invalid PAN,
//! 8 provider unavailable, 9 deleted PAN. A GSTIN exists when its check character is right, and is active
//! unless its 13th character is 9 (cancelled). DigiLocker's consent page (`/dgl/{verification_id}`, see
//! [`consent`]) is one form whose default submission consents with the name and date of birth of the
//! submission's PAN check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::clock::Clock;

mod consent;
mod digilocker;
pub use consent::submit_defaults;

/// The date of birth the stand-in's Income Tax records hold for every PAN whose outcome digit is 6: asked
/// with any other date the check answers a mismatch, as the real one does, so a corrected date of birth
/// verifies.
pub const REGISTERED_BIRTH_DATE_OF_6: (i32, u32, u32) = (1985, 1, 1);

/// Cashfree's Medium tier: calls per minute per operation.
pub const RATE_LIMIT_PER_MINUTE: usize = 200;
/// How long a DigiLocker consent link is valid.
const LINK_LIFETIME: chrono::Duration = chrono::Duration::minutes(10);

/// A DigiLocker session as the stand-in keeps it.
#[derive(Debug, Clone)]
struct Session {
    reference_id: u64,
    redirect_url: String,
    created: DateTime<Utc>,
    status: SessionStatus,
    shared: Option<Shared>,
    /// The name and date of birth of the PAN check of the same submission: the consent form's defaults.
    defaults: Option<(String, NaiveDate)>,
}

/// Where a DigiLocker session stands, as Cashfree names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum SessionStatus {
    Pending,
    Authenticated,
    Expired,
    ConsentDenied,
}

impl SessionStatus {
    fn word(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Authenticated => "used",
            SessionStatus::Expired => "expired",
            SessionStatus::ConsentDenied => "declined",
        }
    }
}

/// What the customer shared from DigiLocker.
#[derive(Debug, Clone)]
struct Shared {
    name: String,
    date_of_birth: NaiveDate,
    last_four: String,
}

#[derive(Default)]
struct Books {
    /// The name and date of birth each submission's PAN check carried, by subject (the verification id
    /// before its last `-`).
    pan_checks: HashMap<String, (String, NaiveDate)>,
    used_ids: std::collections::HashSet<String>,
    sessions: HashMap<String, Session>,
    /// Each operation's calls of the last minute (its rate limit), and of all time.
    calls: HashMap<&'static str, Vec<DateTime<Utc>>>,
    totals: HashMap<&'static str, usize>,
    next_reference: u64,
    delay: Duration,
    outage: bool,
}

/// The stand-in's state; clone it to keep a handle for tests.
#[derive(Clone)]
pub struct KycStandIn {
    client_id: String,
    client_secret: String,
    clock: Arc<dyn Clock>,
    books: Arc<Mutex<Books>>,
    /// Where the router is mounted on its server (`/_kyc` under `make run`), for the consent links.
    mount: String,
    /// With a key pair, every call must carry Cashfree's 2FA signature (`x-cf-signature`), as production
    /// does for callers without an allow-listed IP address.
    signature_key: Option<Arc<rsa::RsaPrivateKey>>,
}

impl KycStandIn {
    pub fn new(client_id: &str, client_secret: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            clock,
            books: Arc::new(Mutex::new(Books { next_reference: 1000, ..Books::default() })),
            mount: String::new(),
            signature_key: None,
        }
    }

    /// The stand-in as Cashfree answers a caller without an allow-listed address: each call must be signed
    /// for the public half of `key`.
    pub fn requiring_signature(mut self, key: rsa::RsaPrivateKey) -> Self {
        self.signature_key = Some(Arc::new(key));
        self
    }

    /// Whether `headers` carry a signature of this client id, made within five minutes of now.
    fn signed(&self, headers: &HeaderMap) -> bool {
        use base64::Engine;
        let Some(key) = &self.signature_key else { return true };
        let presented = headers.get("x-cf-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Ok(encrypted) = base64::engine::general_purpose::STANDARD.decode(presented) else { return false };
        let Ok(plain) = key.decrypt(rsa::Oaep::new::<sha1::Sha1>(), &encrypted) else { return false };
        let plain = String::from_utf8_lossy(&plain);
        let Some((client_id, seconds)) = plain.rsplit_once('.') else { return false };
        let fresh = seconds.parse::<i64>().is_ok_and(|t| (self.clock.now().timestamp() - t).abs() <= 300);
        client_id == self.client_id && fresh
    }

    /// The stand-in as mounted under `prefix` (its consent links point there).
    pub fn mounted_at(mut self, prefix: &str) -> Self {
        self.mount = prefix.trim_end_matches('/').to_owned();
        self
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every answer waits this long first (a slow provider).
    pub fn set_delay(&self, delay: Duration) {
        self.books().delay = delay;
    }

    /// While on, every call answers Cashfree's 502 "source unavailable" (an outage of the department's side).
    pub fn set_outage(&self, outage: bool) {
        self.books().outage = outage;
    }

    /// How many calls each operation took (`pan`, `pan-lite`, `gstin`, `digilocker`, ...).
    pub fn calls(&self, operation: &str) -> usize {
        self.books().totals.get(operation).copied().unwrap_or(0)
    }

    fn reference(&self) -> u64 {
        let mut books = self.books();
        books.next_reference += 1;
        books.next_reference
    }

    /// Authenticates, counts and rate-limits one call, and waits the configured delay.
    async fn admit(&self, headers: &HeaderMap, operation: &'static str) -> Result<(), Refusal> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if header("x-client-id").is_empty() {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "validation_error",
                "x-client-id_missing",
                "x-client-id is missing in the request.",
            ));
        }
        if header("x-client-id") != self.client_id || header("x-client-secret") != self.client_secret {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "authentication_failed",
                "Invalid clientId and clientSecret combination",
            ));
        }
        if !self.signed(headers) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "authentication_error",
                "ip_validation_failed",
                "IP not whitelisted and no valid x-cf-signature",
            ));
        }
        let now = self.clock.now();
        let delay = {
            let mut books = self.books();
            let calls = books.calls.entry(operation).or_default();
            let recent = calls.iter().filter(|t| now - **t < chrono::Duration::minutes(1)).count();
            if recent >= RATE_LIMIT_PER_MINUTE {
                return Err(Refusal(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "too_many_requests_per_operation",
                    "Too many requests for this operation, rate limit reached",
                ));
            }
            calls.retain(|t| now - *t < chrono::Duration::minutes(1));
            calls.push(now);
            *books.totals.entry(operation).or_default() += 1;
            (books.delay, books.outage)
        };
        tokio::time::sleep(delay.0).await;
        if delay.1 {
            return Err(UNAVAILABLE);
        }
        Ok(())
    }

    /// A verification id: at most 50 letters, digits, `.`, `-` or `_`, never used before.
    fn fresh_id(&self, id: &str) -> Result<(), Refusal> {
        if id.is_empty() || id.len() > 50 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "validation_error",
                "verification_id_value_invalid",
                "verification_id can include only alphanum, dot, hyphen and underscores.",
            ));
        }
        if !self.books().used_ids.insert(id.to_owned()) {
            return Err(Refusal(
                StatusCode::CONFLICT,
                "validation_error",
                "verification_id_already_exists",
                "verification id already exists",
            ));
        }
        Ok(())
    }
}

/// A refusal in Cashfree's error body: status, `type`, `code`, `message`.
#[derive(Debug, Clone, Copy)]
struct Refusal(StatusCode, &'static str, &'static str, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, kind, code, message) = self;
        (status, Json(json!({ "type": kind, "code": code, "message": message }))).into_response()
    }
}

fn error(status: StatusCode, kind: &'static str, code: &'static str, message: &'static str) -> Response {
    Refusal(status, kind, code, message).into_response()
}

const UNAVAILABLE: Refusal = Refusal(
    StatusCode::BAD_GATEWAY,
    "internal_error",
    "verification_failed",
    "Authorised source is temporarily unavailable, please try again shortly",
);

fn unavailable() -> Response {
    UNAVAILABLE.into_response()
}

/// The router, to be mounted where `CASHFREE_API_BASE` minus `/verification` points.
pub fn router(standin: KycStandIn) -> Router {
    Router::new()
        .route("/verification/pan", post(verify_pan))
        .route("/verification/pan-lite", post(pan_lite))
        .route("/verification/gstin", post(gstin))
        .route("/verification/digilocker", post(digilocker::create).get(digilocker::status))
        .route("/verification/digilocker/document/{document}", get(digilocker::document))
        .route("/dgl/{verification_id}", get(consent::page).post(consent::submit))
        .with_state(standin)
}

/// The outcome digit of a PAN (its last serial digit), if it is shaped like one.
fn outcome_digit(pan: &str) -> Option<u8> {
    let b = pan.as_bytes();
    let shaped = b.len() == 10 && b[..5].iter().all(u8::is_ascii_uppercase) && b[5..9].iter().all(u8::is_ascii_digit);
    shaped.then(|| b[8] - b'0')
}

fn holder_type(pan: &str) -> &'static str {
    match pan.as_bytes().get(3) {
        Some(b'P') => "Individual",
        Some(b'C') => "Company",
        Some(b'F') => "Firm",
        _ => "Business",
    }
}

#[derive(Deserialize)]
struct PanBody {
    pan: Option<String>,
    name: Option<String>,
}

async fn verify_pan(State(s): State<KycStandIn>, headers: HeaderMap, Json(body): Json<PanBody>) -> Response {
    if let Err(refused) = s.admit(&headers, "pan").await {
        return refused.into_response();
    }
    let pan = body.pan.unwrap_or_default();
    let Some(digit) = outcome_digit(&pan) else {
        return error(StatusCode::BAD_REQUEST, "validation_error", "pan_length_short", "Enter valid PAN.");
    };
    let name = body.name.unwrap_or_default().trim().to_uppercase();
    let reference_id = s.reference();
    let (result, score, registered) = match digit {
        4 => ("MODERATE_PARTIAL_MATCH", 60, format!("{name} KUMAR")),
        5 => ("NO_MATCH", 0, "RAVI SHANKAR VERMA".to_owned()),
        7 => return Json(json!({"pan": pan, "reference_id": reference_id, "name_provided": name, "valid": false, "message": "Invalid PAN", "name_match_score": 0, "name_match_result": "-"})).into_response(),
        8 => return unavailable(),
        9 => return Json(json!({"pan": pan, "reference_id": reference_id, "name_provided": name, "valid": false, "message": "PAN is deleted", "name_match_score": 0, "name_match_result": "-", "pan_status": "DELETED"})).into_response(),
        _ => ("DIRECT_MATCH", 100, name.clone()),
    };
    Json(json!({
        "pan": pan, "type": holder_type(&pan), "reference_id": reference_id, "name_provided": name,
        "registered_name": registered, "valid": true, "message": "PAN verified successfully",
        "name_match_score": format!("{score}.00"), "name_match_result": result, "pan_status": "VALID",
        "aadhaar_seeding_status": if holder_type(&pan) == "Individual" { "Y" } else { "NA" },
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PanLiteBody {
    verification_id: Option<String>,
    pan: Option<String>,
    name: Option<String>,
    dob: Option<String>,
}

async fn pan_lite(State(s): State<KycStandIn>, headers: HeaderMap, Json(body): Json<PanLiteBody>) -> Response {
    if let Err(refused) = s.admit(&headers, "pan-lite").await {
        return refused.into_response();
    }
    let id = body.verification_id.unwrap_or_default();
    if let Err(refused) = s.fresh_id(&id) {
        return refused.into_response();
    }
    let pan = body.pan.unwrap_or_default();
    let dob = body.dob.as_deref().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let (Some(digit), Some(dob)) = (outcome_digit(&pan), dob) else {
        return error(StatusCode::BAD_REQUEST, "validation_error", "pan_length_short", "Enter valid PAN.");
    };
    let name = body.name.unwrap_or_default();
    let subject = id.rsplit_once('-').map_or(id.as_str(), |(subject, _)| subject).to_owned();
    s.books().pan_checks.insert(subject, (name.clone(), dob));
    let reference_id = s.reference();
    let (status, pan_status, name_match, dob_match) = match digit {
        7 => ("INVALID", "N", Value::Null, Value::Null),
        8 => return unavailable(),
        9 => ("INVALID", "D", Value::Null, Value::Null),
        4 | 5 => ("VALID", "E", json!("N"), json!("Y")),
        6 => {
            let (y, m, d) = REGISTERED_BIRTH_DATE_OF_6;
            let registered = NaiveDate::from_ymd_opt(y, m, d);
            ("VALID", "E", json!("Y"), json!(if Some(dob) == registered { "Y" } else { "N" }))
        }
        _ => ("VALID", "E", json!("Y"), json!("Y")),
    };
    Json(json!({
        "verification_id": id, "reference_id": reference_id, "pan": pan, "name": name,
        "dob": dob.format("%Y-%m-%d").to_string(), "name_match": name_match, "dob_match": dob_match,
        "pan_status": pan_status, "status": status,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct GstinBody {
    #[serde(rename = "GSTIN")]
    gstin: Option<String>,
}

async fn gstin(State(s): State<KycStandIn>, headers: HeaderMap, Json(body): Json<GstinBody>) -> Response {
    if let Err(refused) = s.admit(&headers, "gstin").await {
        return refused.into_response();
    }
    let gstin = body.gstin.unwrap_or_default();
    let shaped = gstin.len() == 15
        && gstin[..2].bytes().all(|b| b.is_ascii_digit())
        && gstin.bytes().all(|b| b.is_ascii_alphanumeric());
    if !shaped {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "GSTIN_value_invalid",
            "GSTIN first 2 digits should be numeric and length should not exceed 15 and should be alphanumeric.",
        );
    }
    let reference_id = s.reference();
    if shared::kyc::documents::Gstin::parse(&gstin).is_err() {
        return Json(json!({"reference_id": reference_id, "GSTIN": gstin, "message": "GSTIN Doesn't Exist"}))
            .into_response();
    }
    let status = if gstin.as_bytes()[12] == b'9' { "Cancelled" } else { "Active" };
    Json(json!({
        "reference_id": reference_id, "GSTIN": gstin,
        "legal_name_of_business": format!("STAND-IN TRADERS {} PRIVATE LIMITED", &gstin[2..7]),
        "trade_name_of_business": "STAND-IN TRADERS", "constitution_of_business": "Private Limited Company",
        "taxpayer_type": "Regular", "gst_in_status": status, "date_of_registration": "2019-04-01",
        "valid": true, "message": "GSTIN Exists",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::kyc::cashfree::{Cashfree, CashfreeConfig};
    use shared::kyc::provider::{KycProvider, PanQuery, PanRecord, ProviderError};

    async fn served(standin: KycStandIn) -> Result<String, Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        shared::tasks::spawn("test", async move {
            let _ = axum::serve(listener, router(standin)).await;
        });
        Ok(format!("http://{addr}/verification"))
    }

    fn client(api_base: String, public_key: Option<rsa::RsaPublicKey>) -> Result<Cashfree, ProviderError> {
        let config = CashfreeConfig {
            client_id: "CF_unit_client".into(),
            client_secret: shared::secrets::SecretString::new("cfsk_unit_secret_0123456789"),
            api_base,
            public_key,
        };
        Cashfree::new(config)
    }

    /// Without an allow-listed address Cashfree wants `x-cf-signature`: a signed call is answered, an
    /// unsigned one refused (which the adapter reports as a refusal for a person to fix, never as an outage).
    #[tokio::test]
    async fn calls_are_signed_for_cashfree_when_a_public_key_is_configured() -> Result<(), Box<dyn std::error::Error>> {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024)?;
        let public = rsa::RsaPublicKey::from(&key);
        let clock: Arc<dyn Clock> = Arc::new(shared::clock::SystemClock);
        let standin = KycStandIn::new("CF_unit_client", "cfsk_unit_secret_0123456789", clock).requiring_signature(key);
        let base = served(standin.clone()).await?;
        let query = PanQuery { verification_id: "unit-p1", pan: "ABCPE1231F", name: "Asha Rao", date_of_birth: None };
        let answer = client(base.clone(), Some(public))?.check_pan(query.clone()).await?;
        assert_eq!(answer.record, PanRecord::Valid);
        let unsigned = client(base, None)?.check_pan(query).await;
        assert!(
            matches!(unsigned, Err(ProviderError::Refused(why)) if why.contains("403")),
            "refused without a signature"
        );
        Ok(())
    }
}
