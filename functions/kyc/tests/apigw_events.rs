//! The kyc Lambda fed real API Gateway event payloads (REST v1 and HTTP v2), through the same service
//! `main` runs.

use axum::http::StatusCode;
use shared::config::Config;
use shared::testing::{embedded_state, invoke_lambda, signed_in_account};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn submit_over_rest_api_then_read_status_over_http_api() -> TestResult {
    let state = embedded_state(Config::default())?;
    let (_, token) = signed_in_account(&state, "fixture@example.in").await?;

    // A body an older client sends, with the Aadhaar number it no longer may: refused before anything is
    // read or stored, naming the field and never repeating the number.
    let submit = include_str!("fixtures/rest-v1-submit.json").replace("SESSION_TOKEN", &token);
    let answer = invoke_lambda(kyc::app(state.clone()), &submit).await?;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "aadhaar_not_accepted");
    assert_eq!(answer.body["error"]["param"], "aadhaar");
    assert!(!answer.body.to_string().contains("2341"), "{}", answer.body);

    let status = include_str!("fixtures/http-v2-status.json").replace("SESSION_TOKEN", &token);
    let answer = invoke_lambda(kyc::app(state), &status).await?;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "not_submitted");
    assert_eq!(answer.body["aadhaar_status"], "not_started");
    Ok(())
}
