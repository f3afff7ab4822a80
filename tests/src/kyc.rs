//! The KYC steps as a customer takes them: the PAN submission, the DigiLocker session at the provider's
//! stand-in (its consent page walked as a browser would) and the return to the API.

use serde_json::{Value, json};

use std::sync::Arc;

use dev_server::kyc_standin::{self, KycStandIn};
use shared::kyc::cashfree::{Cashfree, CashfreeConfig};
use shared::secrets::SecretString;

use crate::{CASHFREE_CLIENT_ID, CASHFREE_CLIENT_SECRET, KYC_ANSWER_TIMEOUT, TestApi};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A PAN the stand-in verifies (its last serial digit 0-3), distinct for each `n` below 4,000.
pub fn valid_pan(prefix: &str, n: u64) -> String {
    let m = n + 1;
    format!("{prefix}{:03}{}V", (m / 4) % 1000, m % 4)
}

/// The KYC provider's stand-in on a port of its own, and the Cashfree client the API under test uses with it.
pub(crate) async fn provider_standin(
    clock: Arc<dyn shared::clock::Clock>,
) -> Result<(KycStandIn, Cashfree, tokio::task::JoinHandle<()>), String> {
    let standin = KycStandIn::new(CASHFREE_CLIENT_ID, CASHFREE_CLIENT_SECRET, Arc::clone(&clock));
    let (addr, server) = crate::serve(kyc_standin::router(standin.clone())).await?;
    let config = CashfreeConfig {
        client_id: CASHFREE_CLIENT_ID.into(),
        client_secret: SecretString::new(CASHFREE_CLIENT_SECRET),
        api_base: format!("http://{addr}/verification"),
        public_key: None,
    };
    let keys = shared::runtime_secrets::Rotating::fixed(config, Arc::clone(&clock));
    let client = Cashfree::with_keys(keys, KYC_ANSWER_TIMEOUT, clock).map_err(|e| e.to_string())?;
    Ok((standin, client, server))
}

impl TestApi {
    /// `POST /v1/kyc` for a person, with consent and the name "Asha Rao".
    pub async fn submit_kyc(&self, token: &str, pan: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.submit_kyc_body(token, &json!({ "pan": pan, "name_on_pan": "Asha Rao", "consent": true })).await
    }

    pub async fn submit_kyc_body(&self, token: &str, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
        self.http.post(self.url("/v1/kyc")).bearer_auth(token).json(body).send().await
    }

    /// `POST /v1/kyc/digilocker`.
    pub async fn start_digilocker(&self, token: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.http.post(self.url("/v1/kyc/digilocker")).bearer_auth(token).send().await
    }

    /// Opens a DigiLocker session, submits the stand-in's consent form with its defaults (Allow, or Deny),
    /// and comes back to the API as the browser does; returns `GET /v1/kyc` after it.
    pub async fn share_from_digilocker(&self, token: &str, allow: bool) -> Result<Value, Error> {
        let started: Value = self.start_digilocker(token).await?.error_for_status()?.json().await?;
        let url = started["url"].as_str().ok_or("no DigiLocker url")?;
        let back = dev_server::kyc_standin::submit_defaults(&self.http, url, allow).await?;
        self.return_from_digilocker(&back).await?;
        self.kyc_status(token).await
    }

    /// The browser's return to the API from DigiLocker: answered with a redirect to the dashboard.
    pub async fn return_from_digilocker(&self, back: &str) -> Result<(), Error> {
        let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let answer = no_redirects.get(back).send().await?;
        let location = answer.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if answer.status() != reqwest::StatusCode::SEE_OTHER || location != "/#/kyc" {
            return Err(format!("the return answered {} to {location}", answer.status()).into());
        }
        Ok(())
    }

    /// `GET /v1/kyc`.
    pub async fn kyc_status(&self, token: &str) -> Result<Value, Error> {
        Ok(self.http.get(self.url("/v1/kyc")).bearer_auth(token).send().await?.error_for_status()?.json().await?)
    }

    /// Passes KYC as a person: the PAN, then DigiLocker. Returns the final `GET /v1/kyc`.
    pub async fn pass_kyc(&self, token: &str, pan: &str) -> Result<Value, Error> {
        let submitted: Value = self.submit_kyc(token, pan).await?.error_for_status()?.json().await?;
        if submitted["pan_status"] != "passed" {
            return Err(format!("the PAN did not pass: {submitted}").into());
        }
        let kyc = self.share_from_digilocker(token, true).await?;
        if kyc["status"] != "verified" {
            return Err(format!("KYC not verified: {kyc}").into());
        }
        Ok(kyc)
    }

    /// Signs up, logs in and passes KYC (auto mode) with a fresh PAN; returns (user id, token).
    pub async fn verified_user(&self, email: &str) -> Result<(String, String), Error> {
        let (id, token) = self.signed_in(email).await?;
        let n = self.documents.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.pass_kyc(&token, &valid_pan("VERPE", n)).await?;
        Ok((id, token))
    }
}
