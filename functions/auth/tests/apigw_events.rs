//! The auth Lambda fed real API Gateway event payloads (REST v1 and HTTP v2), through the same service
//! `main` runs.

use axum::http::StatusCode;
use shared::config::Config;
use shared::testing::{create_account, embedded_state, invoke_lambda};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn login_over_rest_api_then_read_logins_over_http_api_with_the_cookie() -> TestResult {
    let state = embedded_state(Config::default())?;
    create_account(&state, "fixture@example.in").await?;

    let login = invoke_lambda(auth::app(state.clone()), include_str!("fixtures/rest-v1-login.json")).await?;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let token = login.body["token"].as_str().unwrap_or_default().to_owned();
    let cookie = login.headers.get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(cookie.starts_with(&format!("inferex_session={token};")) && cookie.contains("HttpOnly"), "{cookie}");

    let event = include_str!("fixtures/http-v2-account-logins.json").replace("SESSION_TOKEN", &token);
    let logins = invoke_lambda(auth::app(state), &event).await?;
    assert_eq!(logins.status, StatusCode::OK, "{}", logins.body);
    let attempts = logins.body.as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["ip"], "203.0.113.7");
    assert_eq!(attempts[0]["user_agent"], "fixture-rest/1.0");
    assert_eq!(attempts[0]["success"], true);
    Ok(())
}

#[tokio::test]
async fn unknown_route_answers_404_in_the_error_shape() -> TestResult {
    let state = embedded_state(Config::default())?;
    let answer = invoke_lambda(auth::app(state), include_str!("fixtures/rest-v1-unknown-route.json")).await?;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["error"]["code"], "not_found");
    assert_eq!(answer.body["error"]["message"], "no route for GET /v1/does-not-exist");
    assert_eq!(answer.body["error"]["type"], "invalid_request_error");
    Ok(())
}
