//! The signup Lambda fed real API Gateway event payloads (REST v1 and HTTP v2), through the same service
//! `main` runs.

use axum::http::StatusCode;
use shared::config::Config;
use shared::store::{Query, SortKeyRange, Table};
use shared::testing::{embedded_state, invoke_lambda};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn consent_of(
    state: &shared::state::AppState,
    user_id: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let page = state
        .store
        .query(Query::new(Table::Main, format!("USER#{user_id}")).range(SortKeyRange::Prefix("CONSENT#".into())))
        .await?;
    assert_eq!(page.items.len(), 1);
    Ok(serde_json::Value::Object(page.items[0].attrs.clone()))
}

#[tokio::test]
async fn rest_api_event_creates_account_and_records_consent_from_the_gateway_source_ip() -> TestResult {
    let state = embedded_state(Config::default())?;
    let answer = invoke_lambda(signup::app(state.clone()), include_str!("fixtures/rest-v1-signup.json")).await?;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["email"], "rest.fixture@example.in");
    assert_eq!(answer.body["kyc_status"], "not_submitted");
    let consent = consent_of(&state, answer.body["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(consent["ip"], "203.0.113.7", "X-Forwarded-For is ignored unless trusted");
    assert_eq!(consent["user_agent"], "fixture-rest/1.0");
    assert_eq!(consent["policy_version"], "2026-12-06");
    assert_eq!(consent["marketing_consent"], false);
    Ok(())
}

#[tokio::test]
async fn trusted_forwarded_for_uses_the_last_hop() -> TestResult {
    let state = embedded_state(Config { trust_forwarded_for: true, ..Config::default() })?;
    let answer = invoke_lambda(signup::app(state.clone()), include_str!("fixtures/rest-v1-signup.json")).await?;
    assert_eq!(answer.status, StatusCode::CREATED);
    let consent = consent_of(&state, answer.body["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(consent["ip"], "192.0.2.44");
    Ok(())
}

#[tokio::test]
async fn http_api_event_creates_account() -> TestResult {
    let state = embedded_state(Config::default())?;
    let answer = invoke_lambda(signup::app(state.clone()), include_str!("fixtures/http-v2-signup.json")).await?;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["marketing_consent"], true);
    let consent = consent_of(&state, answer.body["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(consent["ip"], "198.51.100.23");

    // The same address again: the same answer (nobody learns it is taken), and no second account.
    let again = invoke_lambda(signup::app(state.clone()), include_str!("fixtures/http-v2-signup.json")).await?;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_ne!(again.body["id"], answer.body["id"]);
    let unsaved = format!("USER#{}", again.body["id"].as_str().unwrap_or_default());
    assert!(state.store.query(Query::new(Table::Main, unsaved)).await?.items.is_empty(), "nothing is stored for it");
    Ok(())
}
