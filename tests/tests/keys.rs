//! API keys end to end, on both stores: shown once, stored as a digest, at most 20 live keys per account
//! even under concurrency, revocation, expiry, and the KYC gate.

use std::sync::Arc;

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(
    keys_are_shown_once_listed_without_secrets_and_revocable,
    concurrent_creations_never_exceed_twenty_keys,
    expired_keys_disappear_and_free_their_slot,
);

async fn create(api: &TestApi, token: &str, body: Value) -> Result<reqwest::Response, reqwest::Error> {
    api.http.post(api.url("/v1/keys")).bearer_auth(token).json(&body).send().await
}

async fn list(api: &TestApi, token: &str) -> Result<Value, reqwest::Error> {
    api.http.get(api.url("/v1/keys")).bearer_auth(token).send().await?.json().await
}

async fn keys_are_shown_once_listed_without_secrets_and_revocable(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, unverified) = api.signed_in("nokyc@example.in").await?;
    let gated = create(&api, &unverified, json!({"name": "ci"})).await?;
    assert_eq!(gated.status(), StatusCode::FORBIDDEN);

    let (_, token) = api.verified_user("keys@example.in").await?;
    let created = create(&api, &token, json!({"name": " production "})).await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await?;
    let key = created["key"].as_str().unwrap_or_default().to_owned();
    assert!(key.starts_with("sk-inferex-") && key.len() == "sk-inferex-".len() + 43, "{key}");
    assert_eq!(created["name"], "production");
    assert!(key.starts_with(created["prefix"].as_str().unwrap_or("?")));

    let listed = list(&api, &token).await?;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["data"][0]["id"], created["id"]);
    assert_eq!(listed["data"][0]["last_used_at"], Value::Null);
    assert!(listed["data"][0].get("key").is_none());
    let dump = api.dump().await?;
    assert!(!dump.contains(&key) && dump.contains(&shared::secrets::sha256_hex(&key)), "stored only as SHA-256");

    for (body, param) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": "x", "expires_at": "2020-01-01T00:00:00Z"}), "expires_at"),
    ] {
        let response = create(&api, &token, body).await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.json::<Value>().await?["error"]["param"], param);
    }

    let id = created["id"].as_str().unwrap_or_default();
    let (_, other) = api.verified_user("other@example.in").await?;
    let foreign = api.http.delete(api.url(&format!("/v1/keys/{id}"))).bearer_auth(&other).send().await?;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND, "keys belong to their owner only");
    let revoked = api.http.delete(api.url(&format!("/v1/keys/{id}"))).bearer_auth(&token).send().await?;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(list(&api, &token).await?["data"].as_array().map(Vec::len), Some(0));
    assert!(!api.dump().await?.contains(&shared::secrets::sha256_hex(&key)), "a revoked key is gone");
    Ok(())
}

async fn concurrent_creations_never_exceed_twenty_keys(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (_, token) = api.verified_user("many@example.in").await?;
    let mut tasks = Vec::new();
    for n in 0..26 {
        let (api, token) = (api.clone(), token.clone());
        tasks.push(shared::tasks::spawn("test", async move {
            create(&api, &token, json!({ "name": format!("key {n}") })).await.map(|r| r.status())
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await?? {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => refused += 1,
            other => return Err(format!("unexpected {other}").into()),
        }
    }
    assert_eq!((created, refused), (20, 6));
    assert_eq!(list(&api, &token).await?["data"].as_array().map(Vec::len), Some(20));
    Ok(())
}

async fn expired_keys_disappear_and_free_their_slot(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("expiry@example.in").await?;
    let expires = (api.clock_now() + Duration::hours(1)).to_rfc3339();
    let created = create(&api, &token, json!({"name": "short-lived", "expires_at": expires})).await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(list(&api, &token).await?["data"].as_array().map(Vec::len), Some(1));
    api.clock.advance(Duration::hours(1));
    assert_eq!(list(&api, &token).await?["data"].as_array().map(Vec::len), Some(0));
    Ok(())
}
