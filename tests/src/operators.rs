//! Operators in the tests: credentials with roles, and signing in as a person does, enrolling the
//! authenticator with the token, then opening a session with the current code (computed from the enrolled
//! secret on the test's clock, as an authenticator app would).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use totp_rs::TOTP;

use crate::TestApi;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The operators' secret for `(name, token, roles)`, as `INFEREX_ADMIN_TOKEN` takes it.
pub fn operators_secret(operators: &[(&str, &str, &[&str])]) -> String {
    let map: serde_json::Map<String, Value> = operators
        .iter()
        .map(|(name, token, roles)| ((*name).to_owned(), json!({ "token": token, "roles": roles })))
        .collect();
    Value::Object(map).to_string()
}

/// Every role, for an operator a test needs on every route.
pub const EVERY_ROLE: &[&str] = &["kyc_reviewer", "payments", "support", "admin"];

/// The authenticators enrolled in a test, by token, and the last step each used; and the sessions open,
/// by token, with when they were opened.
#[derive(Default)]
pub struct Authenticators(Mutex<HashMap<String, (TOTP, u64)>>, Mutex<HashMap<String, (String, i64)>>);

/// A session is signed in again once it is this old (they end after 8 idle hours).
const REUSE_SECONDS: i64 = 6 * 3600;

impl TestApi {
    /// Enrols the authenticator of `token` (once) and answers the `otpauth://` URI.
    pub async fn enrol_operator(&self, token: &str) -> Result<String, BoxError> {
        let answer = self.http.post(self.url("/v1/admin/totp/enrol")).bearer_auth(token).send().await?;
        let status = answer.status();
        let body: Value = answer.json().await?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("enrol answered {status}: {body}").into());
        }
        let uri = body["otpauth_uri"].as_str().ok_or_else(|| format!("enrol answered {status}: {body}"))?.to_owned();
        let totp = TOTP::from_url(&uri).map_err(|e| format!("{uri}: {e:?}"))?;
        self.authenticators.0.lock().map_err(|_| "poisoned")?.insert(token.to_owned(), (totp, 0));
        Ok(uri)
    }

    /// The next unused code of `token`'s authenticator: the current step's, else the next step's (accepted
    /// for drift), else the clock moves on a step.
    pub fn operator_code(&self, token: &str) -> Result<String, BoxError> {
        let mut enrolled = self.authenticators.0.lock().map_err(|_| "poisoned")?;
        let (totp, last) = enrolled.get_mut(token).ok_or("no authenticator enrolled for this token")?;
        let mut now = u64::try_from(self.clock_now().timestamp())?;
        if now / 30 < *last {
            self.clock.advance(chrono::Duration::seconds(30));
            now += 30;
        }
        let step = if now / 30 > *last { now / 30 } else { now / 30 + 1 };
        *last = step;
        Ok(totp.generate(step * 30))
    }

    /// A session of the operator holding `token`: enrolled on first use, signed in with a fresh code, and
    /// reused while it is young.
    pub async fn operator_session(&self, token: &str) -> Result<String, BoxError> {
        let now = self.clock_now().timestamp();
        let open = self.authenticators.1.lock().map_err(|_| "poisoned")?.get(token).cloned();
        if let Some((session, _)) = open.filter(|(_, opened)| now - opened < REUSE_SECONDS) {
            return Ok(session);
        }
        let session = self.sign_in_operator(token).await?;
        self.authenticators.1.lock().map_err(|_| "poisoned")?.insert(token.to_owned(), (session.clone(), now));
        Ok(session)
    }

    /// Signs in anew: enrols on first use, then opens a session with a fresh code.
    pub async fn sign_in_operator(&self, token: &str) -> Result<String, BoxError> {
        let known = self.authenticators.0.lock().map_err(|_| "poisoned")?.contains_key(token);
        if !known {
            self.enrol_operator(token).await?;
        }
        let code = self.operator_code(token)?;
        let answer = self
            .http
            .post(self.url("/v1/admin/sessions"))
            .bearer_auth(token)
            .json(&json!({ "code": code }))
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await?;
        Ok(body["session"].as_str().ok_or_else(|| format!("sign-in answered {status}: {body}"))?.to_owned())
    }
}
