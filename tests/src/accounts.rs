//! Accounts as their owners handle them in the tests.

use crate::TestApi;

impl TestApi {
    /// Closes the account of a session made by [`TestApi::signed_in`] (its password), as its owner does.
    pub async fn close_account(&self, token: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let body = serde_json::json!({ "password": "correct horse battery" });
        self.http.delete(self.url("/v1/account")).bearer_auth(token).json(&body).send().await?.error_for_status()?;
        Ok(())
    }
}
