//! The inference Lambda fed an API Gateway HTTP (v2) event, through the same service `main` runs.

use axum::http::StatusCode;
use shared::catalog::Catalog;
use shared::config::Config;
use shared::inference::{Gateway, Providers};
use shared::keys::{NewKeyRequest, create_key};
use shared::testing::{embedded_state, invoke_lambda, signed_in_account};

#[tokio::test]
async fn models_are_listed_for_a_valid_key_only() -> Result<(), Box<dyn std::error::Error>> {
    let state =
        embedded_state(Config::default())?.with_gateway(Gateway::new(Catalog::builtin()?, Providers::default())?);
    let (user_id, _) = signed_in_account(&state, "fixture@example.in").await?;
    let request = NewKeyRequest {
        name: "fixture".into(),
        expires_at: None,
        allowed_models: None,
        rate_limits: None,
        spend_limits_paise: None,
        data_residency: None,
    };
    let key = create_key(&state.ports, &user_id, request).await?.key;

    let event = include_str!("fixtures/http-v2-models.json").replace("API_KEY", &key);
    let answer = invoke_lambda(inference::app(state.clone()), &event).await?;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["object"], "list");
    assert!(answer.body["data"].as_array().is_some_and(|models| models.iter().any(|m| m["id"] == "llama-3.1-8b")));
    assert!(answer.headers.contains_key("x-request-id"));

    let forged = include_str!("fixtures/http-v2-models.json").replace("API_KEY", "sk-inferex-forged");
    let answer = invoke_lambda(inference::app(state), &forged).await?;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"]["code"], "invalid_api_key");
    Ok(())
}
