//! Razorpay: the REST client (orders, payments), the webhook and Checkout signatures, and the wire types.
//! Facts: amounts are integer paise; webhook signature = hex HMAC-SHA256(webhook secret, raw body);
//! Checkout signature = hex HMAC-SHA256(key secret, order_id + "|" + payment_id).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::clock::SystemClock;
use crate::env::var;
use crate::error::{ApiError, ErrorCode};
use crate::runtime_secrets::{self, RAZORPAY_KEY_ID, RAZORPAY_KEY_SECRET, Rotating, SecretError, WEBHOOK_SECRET};
use crate::secrets::{SecretString, constant_time_eq};

#[cfg(test)]
mod tests;
mod types;

pub use types::{Collection, Dispute, NewOrder, NewRefund, Order, Payment, REFUND_NOTE, Refund, WebhookEvent};

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
