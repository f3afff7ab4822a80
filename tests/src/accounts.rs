//! Accounts as their owners handle them in the tests.

use crate::TestApi;

impl TestApi {
    /// Closes the account of a session made by [`TestApi::signed_in`] (its password), as its owner does;
    /// answers the closure (`DELETE /v1/account`'s body).
    pub async fn close_account(
        &self,
        token: &str,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let body = serde_json::json!({ "password": "correct horse battery" });
        let closed = self.http.delete(self.url("/v1/account")).bearer_auth(token).json(&body).send().await?;
        Ok(closed.error_for_status()?.json().await?)
    }
}
