//! Keys limited to some models: the list shows only those, another model is a 403 `model_not_allowed`
//! that moves no money, and `PATCH /v1/keys/{key_id}` renames a key or changes its list (applied within
//! the key cache's lifetime). Unknown fields, models we do not serve and empty lists are refused.

use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(a_key_calls_only_the_models_it_lists, key_changes_are_checked_and_kept_to_the_owner);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn chat(api: &TestApi, key: &str, model: &str) -> Res<reqwest::Response> {
    let body = json!({ "model": model, "max_tokens": 3, "messages": [{ "role": "user", "content": "hi" }] });
    Ok(api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await?)
}

async fn listed_models(api: &TestApi, key: &str) -> Res<Vec<String>> {
    let list: Value = api.http.get(api.url("/v1/models")).bearer_auth(key).send().await?.json().await?;
    let ids = list["data"].as_array().ok_or("a list")?.iter().filter_map(|m| m["id"].as_str()).map(str::to_owned);
    Ok(ids.collect())
}

async fn a_key_calls_only_the_models_it_lists(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("listed@example.in").await?;
    api.fund(&token, 100).await?;
    let created: Value = api
        .http
        .post(api.url("/v1/keys"))
        .bearer_auth(&token)
        .json(&json!({ "name": "small", "allowed_models": ["llama-3.1-8b", "llama-3.1-8b"] }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(created["allowed_models"], json!(["llama-3.1-8b"]), "each once: {created}");
    let (key, id) = (created["key"].as_str().ok_or("key")?, created["id"].as_str().ok_or("id")?);

    assert_eq!(listed_models(&api, key).await?, ["llama-3.1-8b"]);
    let hidden = api.http.get(api.url("/v1/models/llama-3.3-70b")).bearer_auth(key).send().await?;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND, "as OpenAI: does not exist or you have no access");
    assert_eq!(chat(&api, key, "llama-3.1-8b").await?.status(), StatusCode::OK);
    let before = api.ledger_checked_balance(&user).await?;
    let refused = chat(&api, key, "llama-3.3-70b").await?;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let error: Value = refused.json().await?;
    assert_eq!(
        (error["error"]["code"].as_str(), error["error"]["type"].as_str()),
        (Some("model_not_allowed"), Some("permission_error"))
    );
    assert!(
        error["error"]["message"].as_str().is_some_and(|m| m.contains("llama-3.1-8b")),
        "names what it may call: {error}"
    );
    assert_eq!(api.ledger_checked_balance(&user).await?, before, "no money moved");

    let lifted: Value = api
        .http
        .patch(api.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&token)
        .json(&json!({ "allowed_models": null, "name": "  any model  " }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!((lifted["allowed_models"].clone(), lifted["name"].clone()), (Value::Null, json!("any model")));
    // The harness caches keys for 300 ms (production: 60 s).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(chat(&api, key, "llama-3.3-70b").await?.status(), StatusCode::OK, "the change reached inference");
    assert_eq!(listed_models(&api, key).await?.len(), 5, "every model in the catalog");
    let listed: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(listed["data"][0]["name"], "any model", "the list shows the change: {listed}");
    Ok(())
}

async fn key_changes_are_checked_and_kept_to_the_owner(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("changes@example.in").await?;
    let (_, other) = api.verified_user("other@example.in").await?;
    let create = |body: Value| api.http.post(api.url("/v1/keys")).bearer_auth(&token).json(&body).send();
    for (body, param) in [
        (json!({ "name": "k", "allowed_models": [] }), "allowed_models"),
        (json!({ "name": "k", "allowed_models": ["gpt-4o"] }), "allowed_models"),
        (json!({ "name": "k", "spend_limits_paise": { "daily": -100 } }), "spend_limits_paise"),
    ] {
        let refused = create(body.clone()).await?;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{body}");
        let text = refused.text().await?;
        assert!(text.contains(param), "names {param}: {text}");
        assert!(!text.contains("gpt-4o"), "the caller's text is not echoed: {text}");
    }
    api.create_key(&token, "mine").await?;
    let keys: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    let id_text = keys["data"][0]["id"].as_str().ok_or("id")?.to_owned();
    let patch = |who: &str, body: Value| {
        api.http.patch(api.url(&format!("/v1/keys/{id_text}"))).bearer_auth(who.to_owned()).json(&body).send()
    };
    for (body, code) in [
        (json!({}), "nothing_to_change"),
        (json!({ "expires_at": null }), "unknown_field"),
        (json!({ "name": 7 }), "invalid_type"),
        (json!({ "allowed_models": "llama-3.1-8b" }), "invalid_type"),
        (json!({ "name": "   " }), "invalid_name"),
    ] {
        let refused = patch(&token, body.clone()).await?;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.json::<Value>().await?["error"]["code"], code, "{body}");
    }
    // Changes of different fields at once: each lands, none undoes the other.
    for round in 0..5 {
        let (limits, renamed) = futures_util::future::join(
            patch(&token, json!({ "rate_limits": { "requests_per_minute": 100 + round } })),
            patch(&token, json!({ "name": format!("renamed {round}") })),
        )
        .await;
        for answer in [limits?, renamed?] {
            assert_eq!(answer.status(), StatusCode::OK, "a change that meets another reads the key again");
        }
        let now: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
        let key = &now["data"][0];
        assert_eq!(key["name"], format!("renamed {round}"), "{key}");
        assert_eq!(key["rate_limits"]["requests_per_minute"], 100 + round, "{key}");
    }
    let restored = patch(&token, json!({ "name": "mine" })).await?;
    assert_eq!(restored.status(), StatusCode::OK);

    let someone_else = patch(&other, json!({ "name": "taken" })).await?;
    assert_eq!(someone_else.status(), StatusCode::NOT_FOUND, "another account's key is not found");
    let after: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(after["data"][0]["name"], "mine", "nothing changed");
    Ok(())
}
