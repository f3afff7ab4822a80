//! The wallet Lambda fed an API Gateway HTTP (v2) event, through the same service `main` runs.

use axum::http::StatusCode;
use shared::config::Config;
use shared::testing::{embedded_state, invoke_lambda, signed_in_account};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn a_new_wallet_is_empty_and_shown_in_both_units() -> TestResult {
    let state = embedded_state(Config::default())?;
    let (_, token) = signed_in_account(&state, "fixture@example.in").await?;
    let event = include_str!("fixtures/http-v2-wallet.json").replace("SESSION_TOKEN", &token);
    let answer = invoke_lambda(wallet::app(state), &event).await?;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["balance"], 0);
    assert_eq!(answer.body["balance_inr"], "0.00");
    assert_eq!(answer.body["currency"], "INR");
    Ok(())
}
