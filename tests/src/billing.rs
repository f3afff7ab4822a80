//! The billing profile every top-up needs (its receipt voucher is issued to it).

use crate::TestApi;

impl TestApi {
    /// Sets the account's billing profile: billed in `state_code`, with the business's verified GSTIN (filled
    /// in from its KYC) when it has one. Returns the profile as answered.
    pub async fn set_billing_profile(
        &self,
        token: &str,
        state_code: &str,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let body = serde_json::json!({
            "billing_name": "Asha Rao",
            "address": "12 MG Road, Bengaluru",
            "state_code": state_code,
            "pin": "560001",
        });
        let answer =
            self.http.put(self.url("/v1/account/billing-profile")).bearer_auth(token).json(&body).send().await?;
        Ok(answer.error_for_status()?.json().await?)
    }

    /// The billing profile a top-up needs: the one set, or else one in Karnataka (or, for a business, the
    /// state its verified GSTIN is registered in).
    pub async fn ensure_billing_profile(&self, token: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let current = self.http.get(self.url("/v1/account/billing-profile")).bearer_auth(token).send().await?;
        if current.status().is_success() {
            return Ok(());
        }
        let kyc: serde_json::Value =
            self.http.get(self.url("/v1/kyc")).bearer_auth(token).send().await?.json().await.unwrap_or_default();
        let state = kyc["gstin"].as_str().and_then(|g| g.get(..2)).unwrap_or("29").to_owned();
        self.set_billing_profile(token, &state).await.map(|_| ())
    }
}
