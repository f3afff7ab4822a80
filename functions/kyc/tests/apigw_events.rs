//! The kyc Lambda fed real API Gateway event payloads (REST v1 and HTTP v2), through the same service
//! `main` runs.

use axum::http::StatusCode;
use shared::accounts::{self, ClientInfo, SignupRequest};
use shared::clock::SystemClock;
use shared::config::Config;
use shared::testing::{embedded_state, invoke_lambda};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn submit_over_rest_api_then_read_status_over_http_api() -> TestResult {
    let state = embedded_state(Config::default())?;
    let request = SignupRequest {
        email: "fixture@example.in".into(),
        password: "correct horse battery".into(),
        full_name: "Fixture User".into(),
        date_of_birth: "1990-04-12".into(),
        accepted_terms_version: "2026-05-21".into(),
        marketing_consent: false,
    };
    let client = ClientInfo::default();
    accounts::signup(state.store.as_ref(), &SystemClock, &state.config, request, &client).await?;
    let session = shared::auth::login(
        state.store.as_ref(),
        &SystemClock,
        &state.config,
        "fixture@example.in",
        "correct horse battery".into(),
        &client,
    )
    .await?;

    let submit = include_str!("fixtures/rest-v1-submit.json").replace("SESSION_TOKEN", &session.token);
    let answer = invoke_lambda(kyc::app(state.clone()), &submit).await?;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "verified");
    assert_eq!(answer.body["pan_masked"], "ABCPEXXXXF");
    assert_eq!(answer.body["aadhaar_masked"], "XXXX XXXX 2346");

    let status = include_str!("fixtures/http-v2-status.json").replace("SESSION_TOKEN", &session.token);
    let answer = invoke_lambda(kyc::app(state), &status).await?;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "verified");
    assert_eq!(answer.body["name_on_pan"], "Fixture User");
    Ok(())
}
