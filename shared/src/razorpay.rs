//! Razorpay: the REST client (orders, payments), the webhook and Checkout signatures, and the wire types.
//! Facts: amounts are integer paise; webhook signature = hex HMAC-SHA256(webhook secret, raw body);
//! Checkout signature = hex HMAC-SHA256(key secret, order_id + "|" + payment_id).

use crate::error::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::clock::SystemClock;
use crate::env::var;
use crate::error::ApiError;
use crate::runtime_secrets::{self, RAZORPAY_KEY_ID, RAZORPAY_KEY_SECRET, Rotating, SecretError, WEBHOOK_SECRET};
use crate::secrets::{SecretString, constant_time_eq};

pub const DEFAULT_API_BASE: &str = "https://api.razorpay.com";

/// Credentials and endpoint. Secrets come from the environment locally and from Secrets Manager in AWS.
#[derive(Debug, Clone)]
pub struct RazorpayConfig {
    pub key_id: String,
    pub key_secret: SecretString,
    pub webhook_secret: SecretString,
    pub api_base: String,
}

impl RazorpayConfig {
    /// `RAZORPAY_KEY_ID`, `RAZORPAY_KEY_SECRET`, `RAZORPAY_WEBHOOK_SECRET` (all or none, each checked) and
    /// `RAZORPAY_API_BASE`: the local configuration. In AWS the keys come from Secrets Manager instead.
    pub fn from_env() -> Result<Option<Self>, crate::env::ConfigError> {
        let key_id = var::<String>("RAZORPAY_KEY_ID")?;
        let key_secret = var::<String>("RAZORPAY_KEY_SECRET")?;
        let webhook_secret = var::<String>("RAZORPAY_WEBHOOK_SECRET")?;
        match (key_id, key_secret, webhook_secret) {
            (Some(key_id), Some(key_secret), Some(webhook_secret)) => {
                let stored = StoredKeys { key_id, key_secret, webhook_secret };
                // Each error names the variable that holds the refused value.
                let names = ["RAZORPAY_KEY_ID", "RAZORPAY_KEY_SECRET", "RAZORPAY_WEBHOOK_SECRET"];
                stored
                    .checked(names, api_base()?)
                    .map(Some)
                    .map_err(|e| crate::env::ConfigError { name: e.name().to_owned(), reason: e.to_string() })
            }
            (None, None, None) => Ok(None),
            _ => Err(crate::env::ConfigError {
                name: "RAZORPAY_KEY_ID".into(),
                reason: "set RAZORPAY_KEY_ID, RAZORPAY_KEY_SECRET and RAZORPAY_WEBHOOK_SECRET together".into(),
            }),
        }
    }

    /// Parses and checks the Secrets Manager secret `{"key_id", "key_secret", "webhook_secret"}`.
    pub fn from_secret_json(name: &str, raw: &str, api_base: &str) -> Result<Self, SecretError> {
        let stored: StoredKeys = serde_json::from_str(raw).map_err(|_| SecretError::Malformed {
            name: name.to_owned(),
            reason: "expected JSON {\"key_id\": \"rzp_live_…\", \"key_secret\": \"…\", \"webhook_secret\": \"…\"}"
                .into(),
        })?;
        let names = ["key_id", "key_secret", "webhook_secret"].map(|field| format!("{name} {field}"));
        stored.checked(names, api_base.to_owned())
    }
}

/// `RAZORPAY_API_BASE`, else Razorpay's API.
pub fn api_base() -> Result<String, crate::env::ConfigError> {
    Ok(var::<String>("RAZORPAY_API_BASE")?.unwrap_or_else(|| DEFAULT_API_BASE.into()))
}

/// The keys as stored: checked before use.
#[derive(Deserialize)]
struct StoredKeys {
    key_id: String,
    key_secret: String,
    webhook_secret: String,
}

impl StoredKeys {
    /// Checks each key under its own name (`names`: the key id's, the key secret's, the webhook secret's).
    fn checked(self, names: [impl AsRef<str>; 3], api_base: String) -> Result<RazorpayConfig, SecretError> {
        let [id_name, secret_name, webhook_name] = names;
        let key_id = runtime_secrets::checked(id_name.as_ref(), &self.key_id, RAZORPAY_KEY_ID)?;
        let mode = key_id.expose().strip_prefix("rzp_live_").or_else(|| key_id.expose().strip_prefix("rzp_test_"));
        if mode.is_none_or(|rest| !rest.chars().all(|c| c.is_ascii_alphanumeric())) {
            return Err(SecretError::Malformed {
                name: id_name.as_ref().to_owned(),
                reason: "a Razorpay key id starts with rzp_live_ or rzp_test_".into(),
            });
        }
        Ok(RazorpayConfig {
            key_id: key_id.expose().to_owned(),
            key_secret: runtime_secrets::checked(secret_name.as_ref(), &self.key_secret, RAZORPAY_KEY_SECRET)?,
            webhook_secret: runtime_secrets::checked(webhook_name.as_ref(), &self.webhook_secret, WEBHOOK_SECRET)?,
            api_base,
        })
    }
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// `X-Razorpay-Signature` of a webhook body: over the exact bytes received, never re-serialised JSON.
pub fn webhook_signature(webhook_secret: &str, raw_body: &[u8]) -> String {
    hmac_hex(webhook_secret, &[raw_body])
}

/// Never true for an empty secret: an unset secret verifies nothing.
pub fn verify_webhook_signature(webhook_secret: &str, raw_body: &[u8], presented: &str) -> bool {
    if webhook_secret.is_empty() {
        return false;
    }
    let expected = webhook_signature(webhook_secret, raw_body);
    !presented.is_empty() && constant_time_eq(expected.as_bytes(), presented.trim().to_ascii_lowercase().as_bytes())
}

/// The Checkout handler's `razorpay_signature` for a payment of an order.
pub fn checkout_signature(key_secret: &str, order_id: &str, payment_id: &str) -> String {
    hmac_hex(key_secret, &[order_id.as_bytes(), b"|", payment_id.as_bytes()])
}

pub fn verify_checkout_signature(key_secret: &str, order_id: &str, payment_id: &str, presented: &str) -> bool {
    if key_secret.is_empty() {
        return false;
    }
    let expected = checkout_signature(key_secret, order_id, payment_id);
    !presented.is_empty() && constant_time_eq(expected.as_bytes(), presented.trim().to_ascii_lowercase().as_bytes())
}

/// `POST /v1/orders` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrder {
    pub amount: i64,
    pub currency: String,
    pub receipt: String,
    pub notes: Map<String, Value>,
}

/// An order as Razorpay returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    #[serde(default)]
    pub entity: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_paid: i64,
    #[serde(default)]
    pub amount_due: i64,
    pub currency: String,
    #[serde(default)]
    pub receipt: Option<String>,
    pub status: String,
    #[serde(default)]
    pub attempts: i64,
    /// An object, or `[]` when empty (Razorpay's quirk).
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub created_at: i64,
}

/// A payment as Razorpay returns it (the fields this service uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    #[serde(default)]
    pub entity: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub created_at: i64,
}

/// A refund (the fields this service uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    #[serde(default = "inr")]
    pub currency: String,
    /// `pending`, `processed` (final) or `failed`.
    #[serde(default)]
    pub status: Option<String>,
    /// What we sent with it (an object, or `[]` when empty); our own refunds carry [`REFUND_NOTE`].
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub receipt: Option<String>,
}

/// The note naming our own refund (a closed account's money sent back to its payment) in a refund's notes.
pub const REFUND_NOTE: &str = "inferex_refund";

impl Refund {
    /// Our refund record this refund was made for, if we made it.
    pub fn our_reference(&self) -> Option<&str> {
        self.notes.get(REFUND_NOTE).and_then(Value::as_str)
    }
}

/// `POST /v1/payments/{id}/refund` body (Razorpay refuses fields it does not know).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRefund {
    /// Paise, at least 100 (₹1).
    pub amount: i64,
    /// `normal` (Razorpay's default: 5-7 working days) or `optimum`.
    pub speed: String,
    pub receipt: String,
    /// At most 15 keys.
    pub notes: Map<String, Value>,
}

fn inr() -> String {
    "INR".into()
}

/// A dispute (chargeback) on a payment (the fields this service uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub payment_id: String,
    /// Disputed amount, paise.
    pub amount: i64,
    #[serde(default = "inr")]
    pub currency: String,
    /// What Razorpay deducted from the merchant balance (0 unless lost), paise.
    #[serde(default)]
    pub amount_deducted: i64,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collection<T> {
    #[serde(default)]
    pub entity: String,
    #[serde(default)]
    pub count: i64,
    pub items: Vec<T>,
}

/// A webhook delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    pub event: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub created_at: Option<i64>,
}

impl WebhookEvent {
    fn entity<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        serde_json::from_value(self.payload.get(name)?.get("entity")?.clone()).ok()
    }

    pub fn payment(&self) -> Option<Payment> {
        self.entity("payment")
    }

    pub fn order(&self) -> Option<Order> {
        self.entity("order")
    }

    pub fn refund(&self) -> Option<Refund> {
        self.entity("refund")
    }

    pub fn dispute(&self) -> Option<Dispute> {
        self.entity("dispute")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RazorpayError {
    #[error("Razorpay answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Razorpay could not be reached: {0}")]
    Transport(String),
    #[error("Razorpay's answer could not be read: {0}")]
    Decode(String),
}

impl From<RazorpayError> for ApiError {
    fn from(e: RazorpayError) -> Self {
        tracing::warn!(error = %e, "Razorpay call failed");
        ApiError::BadGateway {
            code: ErrorCode::PaymentGatewayError,
            message: "the payment gateway is not responding correctly; please try again shortly".into(),
        }
    }
}

/// The Razorpay REST client. Build it once per process: it holds the connection pool and the keys (in AWS
/// re-read from Secrets Manager every few minutes).
#[derive(Debug, Clone)]
pub struct RazorpayClient {
    http: reqwest::Client,
    config: Arc<Rotating<RazorpayConfig>>,
}

impl RazorpayClient {
    /// A client with fixed keys (local runs and tests).
    pub fn new(config: RazorpayConfig) -> Result<Self, RazorpayError> {
        Self::with_keys(Rotating::fixed(config, Arc::new(SystemClock)))
    }

    /// A client whose keys follow their secret.
    pub fn with_keys(config: Rotating<RazorpayConfig>) -> Result<Self, RazorpayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(8))
            .build()
            .map_err(|e| RazorpayError::Transport(e.to_string()))?;
        Ok(Self { http, config: Arc::new(config) })
    }

    pub async fn config(&self) -> Arc<RazorpayConfig> {
        self.config.current().await
    }

    /// Checks a webhook's signature.
    pub async fn verify_webhook(&self, raw_body: &[u8], presented: &str) -> bool {
        self.verify(|config| verify_webhook_signature(config.webhook_secret.expose(), raw_body, presented)).await
    }

    /// Checks the Checkout handler's signature.
    pub async fn verify_checkout(&self, order_id: &str, payment_id: &str, presented: &str) -> bool {
        self.verify(|config| verify_checkout_signature(config.key_secret.expose(), order_id, payment_id, presented))
            .await
    }

    /// Runs a signature check with the current keys; when it fails, the keys are re-read once (they may just
    /// have been rotated) and the check repeated.
    async fn verify(&self, check: impl Fn(&RazorpayConfig) -> bool) -> bool {
        check(&*self.config().await) || self.config.reread_early().await.is_some_and(|config| check(&config))
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: impl FnOnce(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, RazorpayError> {
        let config = self.config().await;
        let response = request(config.api_base.trim_end_matches('/'))
            .basic_auth(&config.key_id, Some(config.key_secret.expose()))
            .send()
            .await
            .map_err(|e| RazorpayError::Transport(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| RazorpayError::Transport(e.to_string()))?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body).chars().take(500).collect();
            return Err(RazorpayError::Status { status: status.as_u16(), body });
        }
        serde_json::from_slice(&body).map_err(|e| RazorpayError::Decode(e.to_string()))
    }

    pub async fn create_order(&self, order: &NewOrder) -> Result<Order, RazorpayError> {
        self.send(|base| self.http.post(format!("{base}/v1/orders")).json(order)).await
    }

    pub async fn payment(&self, payment_id: &str) -> Result<Payment, RazorpayError> {
        self.send(|base| self.http.get(format!("{base}/v1/payments/{payment_id}"))).await
    }

    /// Refunds (part of) a captured payment. The idempotency key (Razorpay's `X-Refund-Idempotency`: 10 or more
    /// letters, digits, `-` or `_`) makes a repeat of the same request answer the same refund, so a call
    /// whose answer was lost is simply made again.
    pub async fn create_refund(
        &self,
        payment_id: &str,
        refund: &NewRefund,
        idempotency_key: &str,
    ) -> Result<Refund, RazorpayError> {
        self.send(|base| {
            self.http
                .post(format!("{base}/v1/payments/{payment_id}/refund"))
                .header("X-Refund-Idempotency", idempotency_key)
                .json(refund)
        })
        .await
    }

    /// The payment's refunds (Razorpay answers the last 10 unless asked for more: we ask for 100).
    pub async fn payment_refunds(&self, payment_id: &str) -> Result<Vec<Refund>, RazorpayError> {
        let collection: Collection<Refund> =
            self.send(|base| self.http.get(format!("{base}/v1/payments/{payment_id}/refunds?count=100"))).await?;
        Ok(collection.items)
    }

    pub async fn refund(&self, refund_id: &str) -> Result<Refund, RazorpayError> {
        self.send(|base| self.http.get(format!("{base}/v1/refunds/{refund_id}"))).await
    }

    pub async fn order_payments(&self, order_id: &str) -> Result<Vec<Payment>, RazorpayError> {
        let collection: Collection<Payment> =
            self.send(|base| self.http.get(format!("{base}/v1/orders/{order_id}/payments"))).await?;
        Ok(collection.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/razorpay/payment.captured.json");

    #[test]
    fn the_fixture_webhook_signature_verifies() {
        assert_eq!(FIXTURE.len(), 372);
        let expected = "8778ecbdf6fa3a024d48720de19e120646a129c6186dd122e9b7a059052e986b";
        assert_eq!(webhook_signature("inferex_test_webhook_secret", FIXTURE), expected);
        assert!(verify_webhook_signature("inferex_test_webhook_secret", FIXTURE, expected));
        assert!(verify_webhook_signature("inferex_test_webhook_secret", FIXTURE, &expected.to_uppercase()));
        assert!(!verify_webhook_signature("another_secret", FIXTURE, expected));
        assert!(!verify_webhook_signature("inferex_test_webhook_secret", FIXTURE, ""));
        // An unset secret verifies nothing, not even a signature made with the empty key.
        assert!(!verify_webhook_signature("", FIXTURE, &webhook_signature("", FIXTURE)));
        assert!(!verify_checkout_signature("", "order_1", "pay_1", &checkout_signature("", "order_1", "pay_1")));
        // One byte more (a re-serialised or newline-terminated body) is a different signature.
        let mut reformatted = FIXTURE.to_vec();
        reformatted.push(b'\n');
        assert!(!verify_webhook_signature("inferex_test_webhook_secret", &reformatted, expected));
    }

    /// Keys as Razorpay issues them (a key secret of 24 letters and digits) and a webhook secret made as the
    /// README says, all random: no fixed value here could pass the check (it would be a well-known one).
    fn random_keys() -> StoredKeys {
        let alphanumeric = |n: usize| -> String {
            use rand::Rng;
            let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
            (0..n).map(|_| alphabet[rand::rngs::OsRng.gen_range(0..alphabet.len())]).collect()
        };
        StoredKeys {
            key_id: format!("rzp_live_{}", alphanumeric(14)),
            key_secret: alphanumeric(24),
            webhook_secret: crate::secrets::random_token(),
        }
    }

    fn json(keys: &StoredKeys) -> String {
        serde_json::json!({ "key_id": keys.key_id, "key_secret": keys.key_secret, "webhook_secret": keys.webhook_secret })
            .to_string()
    }

    #[test]
    fn the_shipped_placeholder_secret_is_refused() {
        let placeholder = r#"{"key_id":"rzp_live_REPLACE","key_secret":"REPLACE","webhook_secret":"REPLACE"}"#;
        let refused = RazorpayConfig::from_secret_json("razorpay", placeholder, DEFAULT_API_BASE).err();
        assert!(matches!(refused, Some(SecretError::Placeholder { .. })), "{refused:?}");
        let real = json(&random_keys());
        assert!(RazorpayConfig::from_secret_json("razorpay", &real, DEFAULT_API_BASE).is_ok());
        let not_razorpay = real.replace("rzp_live_", "key_live_");
        assert!(RazorpayConfig::from_secret_json("razorpay", &not_razorpay, DEFAULT_API_BASE).is_err());
    }

    #[test]
    fn each_refused_key_is_named_by_its_own_variable() {
        let names = ["RAZORPAY_KEY_ID", "RAZORPAY_KEY_SECRET", "RAZORPAY_WEBHOOK_SECRET"];
        for webhook_secret in ["local_standin_webhook_secret", "abcdefghijklmnopqrstuvwxyz", "test_webhook_secret_1234"]
        {
            let keys = StoredKeys { webhook_secret: webhook_secret.into(), ..random_keys() };
            let refused = keys.checked(names, DEFAULT_API_BASE.into()).err();
            assert_eq!(refused.as_ref().map(SecretError::name), Some("RAZORPAY_WEBHOOK_SECRET"), "{refused:?}");
            assert!(!refused.map(|e| e.to_string()).unwrap_or_default().contains(webhook_secret));
        }
        let keys = StoredKeys { key_secret: "local_standin_key_secret".into(), ..random_keys() };
        let refused = keys.checked(names, DEFAULT_API_BASE.into()).err();
        assert_eq!(refused, Some(SecretError::WellKnown { name: "RAZORPAY_KEY_SECRET".into() }));
        let keys = StoredKeys { key_id: "key_live_0123456789abcd".into(), ..random_keys() };
        let refused = keys.checked(names, DEFAULT_API_BASE.into()).err();
        assert_eq!(refused.as_ref().map(SecretError::name), Some("RAZORPAY_KEY_ID"));
    }

    #[test]
    fn the_fixture_checkout_signature_verifies() {
        let expected = "388d1c15d2748eb6034544383462ae05da54a6a13565402d6df342f65dac2b6c";
        assert_eq!(
            checkout_signature("inferex_test_key_secret", "order_DESlLckIVRkHWj", "pay_DESlfW9H8K9uqM"),
            expected
        );
        assert!(verify_checkout_signature(
            "inferex_test_key_secret",
            "order_DESlLckIVRkHWj",
            "pay_DESlfW9H8K9uqM",
            expected
        ));
        assert!(!verify_checkout_signature("inferex_test_key_secret", "order_other", "pay_DESlfW9H8K9uqM", expected));
    }

    #[test]
    fn the_fixture_payload_parses() -> Result<(), serde_json::Error> {
        let event: WebhookEvent = serde_json::from_slice(FIXTURE)?;
        assert_eq!(event.event, "payment.captured");
        let payment = event.payment();
        assert_eq!(payment.as_ref().map(|p| p.amount), Some(50_000));
        assert_eq!(payment.and_then(|p| p.order_id).as_deref(), Some("order_DESlLckIVRkHWj"));
        Ok(())
    }

    #[test]
    fn empty_notes_come_back_as_an_array_and_still_parse() -> Result<(), serde_json::Error> {
        let order: Order = serde_json::from_str(
            r#"{"id":"order_1","entity":"order","amount":100,"amount_paid":0,"amount_due":100,"currency":"INR",
                "receipt":"r","status":"created","attempts":0,"notes":[],"created_at":1}"#,
        )?;
        assert_eq!(order.notes, serde_json::json!([]));
        Ok(())
    }
}
