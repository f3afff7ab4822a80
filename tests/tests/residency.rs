//! Where a call runs, on both stores: every model lists its providers with their country and region; every
//! answer names its provider and country (headers, the streamed chunks, the usage log); and `in` keeps a
//! call in India, from the account, the key or the request, each able to narrow and none to widen. A call
//! held to India that cannot be served there is refused before any money moves, and is never sent abroad,
//! not even when the India route fails.

use dev_server::upstream_standin::Mode;
use e2e::{Backend, TestApi, TestResult, error_body, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(
    every_answer_says_where_it_ran,
    india_only_narrows_and_never_widens,
    a_call_held_to_india_is_refused_rather_than_sent_abroad,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn chat_body(model: &str, stream: bool) -> Value {
    json!({ "model": model, "max_tokens": 3, "stream": stream, "messages": [{ "role": "user", "content": "hi" }] })
}

async fn chat(api: &TestApi, key: &str, model: &str, residency: Option<&str>) -> Res<reqwest::Response> {
    let mut request = api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(&chat_body(model, false));
    if let Some(residency) = residency {
        request = request.header("x-inferex-data-residency", residency);
    }
    Ok(request.send().await?)
}

/// The provider and country an answer names in its headers.
fn served(response: &reqwest::Response) -> (String, String) {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (header("x-inferex-provider"), header("x-inferex-country"))
}

fn pair(provider: &str, country: &str) -> (String, String) {
    (provider.to_owned(), country.to_owned())
}

/// A key created now (so no instance has it cached), with these fields.
async fn key_with(api: &TestApi, token: &str, fields: Value) -> Res<String> {
    let mut body = json!({ "name": "residency" });
    if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
        body.extend(fields.clone());
    }
    let created: Value = api
        .http
        .post(api.url("/v1/keys"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(created["key"].as_str().ok_or("no key")?.to_owned())
}

async fn every_answer_says_where_it_ran(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("where@example.in").await?;
    api.fund(&token, 100).await?;
    let key = key_with(&api, &token, json!({})).await?;

    let models: Value = api.http.get(api.url("/v1/models")).bearer_auth(&key).send().await?.json().await?;
    let countries = |id: &str| -> Vec<Value> {
        let model = models["data"].as_array().into_iter().flatten().find(|m| m["id"] == id).cloned();
        let providers = model.map(|m| m["providers"].clone()).unwrap_or(Value::Null);
        providers.as_array().into_iter().flatten().map(|p| json!([p["name"], p["country"]])).collect()
    };
    assert_eq!(countries("llama-3.1-8b"), [json!(["cerebras", "US"]), json!(["neevcloud", "IN"])]);
    assert_eq!(countries("qwen-3-32b"), [json!(["cerebras", "US"])]);
    assert_eq!(countries("deepseek-r1-distill-llama-70b"), [json!(["neevcloud", "IN"])]);
    let one: Value = api.http.get(api.url("/v1/models/qwen-3-32b")).bearer_auth(&key).send().await?.json().await?;
    assert!(one["providers"][0]["region"].as_str().is_some_and(|r| !r.is_empty()), "{one}");

    let answer = chat(&api, &key, "llama-3.1-8b", None).await?;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(served(&answer), pair("cerebras", "US"), "the first route");
    let india = chat(&api, &key, "deepseek-r1-distill-llama-70b", None).await?;
    assert_eq!(served(&india), pair("neevcloud", "IN"));

    // A stream: the headers, and every chunk's `inferex` fields, the last one included.
    let body = chat_body("deepseek-r1-distill-llama-70b", true);
    let streamed = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
    assert_eq!(served(&streamed), pair("neevcloud", "IN"));
    let text = streamed.text().await?;
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let last = chunks.last().ok_or("no chunk")?;
    assert_eq!(last["inferex"], json!({ "provider": "neevcloud", "country": "IN" }), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // The usage log: provider and country of each call.
    let usage: Value = api.http.get(api.url("/v1/usage")).bearer_auth(&token).send().await?.json().await?;
    let logged: Vec<(Value, Value, Value)> = usage["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| (u["model"].clone(), u["provider"].clone(), u["country"].clone()))
        .collect();
    assert_eq!(logged.len(), 3, "{usage}");
    assert!(logged.contains(&(json!("llama-3.1-8b"), json!("cerebras"), json!("US"))), "{usage}");
    assert!(logged.contains(&(json!("deepseek-r1-distill-llama-70b"), json!("neevcloud"), json!("IN"))), "{usage}");
    Ok(())
}

async fn india_only_narrows_and_never_widens(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("narrow@example.in").await?;
    api.fund(&token, 100).await?;

    // The request narrows an `any` key: the call skips the foreign first route.
    let any_key = key_with(&api, &token, json!({})).await?;
    let cerebras_before = api.cerebras.requests().len();
    let narrowed = chat(&api, &any_key, "llama-3.1-8b", Some("in")).await?;
    assert_eq!((narrowed.status(), served(&narrowed)), (StatusCode::OK, pair("neevcloud", "IN")));
    assert_eq!(api.cerebras.requests().len(), cerebras_before, "nothing went to the foreign route");

    // A key held to India: the request cannot widen it.
    let india_key = key_with(&api, &token, json!({ "data_residency": "in" })).await?;
    let widened = chat(&api, &india_key, "llama-3.1-8b", Some("any")).await?;
    assert_eq!(served(&widened), pair("neevcloud", "IN"));

    key_changes_keep_their_residency(&api, &token, &any_key).await?;

    // A change the account refuses changes nothing, the residency included.
    let refused = api.http.patch(api.url("/v1/account")).bearer_auth(&token);
    let refused = refused.json(&json!({ "data_residency": "in", "full_name": "" })).send().await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let unchanged: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(unchanged["data_residency"], "any");

    // The account held to India: a key of its own `any` cannot widen it either.
    let patched = api.http.patch(api.url("/v1/account")).bearer_auth(&token).json(&json!({ "data_residency": "in" }));
    let account: Value = patched.send().await?.error_for_status()?.json().await?;
    assert_eq!(account["data_residency"], "in");
    let shown: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(shown["data_residency"], "in");
    // The key this instance has cached takes it at once.
    assert_eq!(served(&chat(&api, &any_key, "llama-3.1-8b", None).await?), pair("neevcloud", "IN"));
    let fresh_any = key_with(&api, &token, json!({ "data_residency": "any" })).await?;
    let held = chat(&api, &fresh_any, "llama-3.1-8b", None).await?;
    assert_eq!(served(&held), pair("neevcloud", "IN"), "the account's in holds over the key's any");
    expect_error(
        chat(&api, &fresh_any, "qwen-3-32b", None).await?,
        StatusCode::BAD_REQUEST,
        "residency_unavailable",
        Some("model"),
    )
    .await?;

    // Values other than in and any are refused, naming where they came from.
    let odd_key =
        api.http.post(api.url("/v1/keys")).bearer_auth(&token).json(&json!({ "name": "x", "data_residency": "eu" }));
    expect_error(odd_key.send().await?, StatusCode::BAD_REQUEST, "invalid_data_residency", Some("data_residency"))
        .await?;
    let odd_account =
        api.http.patch(api.url("/v1/account")).bearer_auth(&token).json(&json!({ "data_residency": true }));
    expect_error(odd_account.send().await?, StatusCode::BAD_REQUEST, "invalid_data_residency", Some("data_residency"))
        .await?;
    let odd_header = chat(&api, &any_key, "llama-3.1-8b", Some("eu")).await?;
    expect_error(odd_header, StatusCode::BAD_REQUEST, "invalid_data_residency", Some("x-inferex-data-residency"))
        .await?;
    let keys: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    let settings: Vec<Value> =
        keys["data"].as_array().into_iter().flatten().map(|k| k["data_residency"].clone()).collect();
    assert!(settings.contains(&json!("in")) && settings.contains(&Value::Null), "{keys}");
    Ok(())
}

/// A key changed to India keeps it through later changes of its other fields (and its list says so), and
/// goes back to the account's with `null`.
async fn key_changes_keep_their_residency(api: &TestApi, token: &str, any_key: &str) -> TestResult {
    // A key changed to India keeps it through later changes of its other fields, and its list says so.
    let listed: Value = api.http.get(api.url("/v1/keys")).bearer_auth(token).send().await?.json().await?;
    let any_id = listed["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["data_residency"].is_null())
        .map(|k| k["id"].clone());
    let any_id = any_id.and_then(|id| id.as_str().map(str::to_owned)).ok_or("the any key")?;
    for change in [json!({ "data_residency": "in" }), json!({ "name": "renamed" })] {
        let patch = api.http.patch(api.url(&format!("/v1/keys/{any_id}"))).bearer_auth(token).json(&change);
        let changed: Value = patch.send().await?.error_for_status()?.json().await?;
        assert_eq!(changed["data_residency"], "in", "{changed}");
        assert_eq!(served(&chat(api, any_key, "llama-3.1-8b", None).await?), pair("neevcloud", "IN"), "{change}");
    }
    let patch = api.http.patch(api.url(&format!("/v1/keys/{any_id}"))).bearer_auth(token);
    patch.json(&json!({ "data_residency": null })).send().await?.error_for_status()?;
    assert_eq!(served(&chat(api, any_key, "llama-3.1-8b", None).await?), pair("cerebras", "US"), "back to any");
    Ok(())
}

async fn a_call_held_to_india_is_refused_rather_than_sent_abroad(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("india@example.in").await?;
    api.fund(&token, 100).await?;
    let key = key_with(&api, &token, json!({ "data_residency": "in" })).await?;
    let before = api.ledger_checked_balance(&user).await?;
    let seen = (api.cerebras.requests().len(), api.neevcloud.requests().len());

    // A model served only abroad: refused before any money moves, naming the models served in India.
    let refused = error_body(
        chat(&api, &key, "qwen-3-32b", None).await?,
        StatusCode::BAD_REQUEST,
        "residency_unavailable",
        Some("model"),
    )
    .await?;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("deepseek-r1-distill-llama-70b") && !message.contains("qwen-3-32b,"), "{refused}");
    assert_eq!(api.ledger_checked_balance(&user).await?, before, "no money moved");
    let (_, held) = api.held_and_leased(&user).await?;
    assert_eq!(held, 0, "nothing held");

    // A model the key may not call is refused as such, whatever the residency.
    let limited =
        key_with(&api, &token, json!({ "data_residency": "in", "allowed_models": ["deepseek-r1-distill-llama-70b"] }))
            .await?;
    expect_error(chat(&api, &limited, "qwen-3-32b", None).await?, StatusCode::FORBIDDEN, "model_not_allowed", None)
        .await?;

    // The India route failing: the call fails closed, never falling back to the foreign route.
    api.neevcloud.set_mode(Mode::Fail(503));
    let failed = chat(&api, &key, "llama-3.1-8b", None).await?;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    assert_eq!(api.cerebras.requests().len(), seen.0, "no prompt went abroad");
    assert!(api.neevcloud.requests().len() > seen.1, "the India route was tried");
    assert_eq!(api.ledger_checked_balance(&user).await?, before, "a call never answered costs nothing");
    let usage: Value = api.http.get(api.url("/v1/usage")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(usage["data"].as_array().map(Vec::len), Some(0), "{usage}");
    Ok(())
}
