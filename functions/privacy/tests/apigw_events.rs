//! The privacy Lambda fed an API Gateway HTTP (v2) event, through the same service `main` runs.

use axum::http::StatusCode;
use shared::config::Config;
use shared::testing::{embedded_state, invoke_lambda, signed_in_account};

#[tokio::test]
async fn a_new_account_has_made_no_privacy_requests() -> Result<(), Box<dyn std::error::Error>> {
    let state = embedded_state(Config::default())?;
    let (_, token) = signed_in_account(&state, "fixture@example.in").await?;
    let event = include_str!("fixtures/http-v2-privacy-requests.json").replace("SESSION_TOKEN", &token);
    let answer = invoke_lambda(privacy::app(state), &event).await?;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["object"], "list");
    assert_eq!(answer.body["data"].as_array().map(Vec::len), Some(0));
    Ok(())
}
