//! The OpenAI routes SDKs call beyond completions: one model (`models.retrieve`), embeddings (none served
//! yet: a clear OpenAI-shaped error, no money moved), endpoints we do not offer (`unsupported_endpoint`), and
//! CORS for browser apps calling with an API key, while the cookie routes stay same-origin.

use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use reqwest::header::{ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN};
use serde_json::{Value, json};
use shared::wallet::WalletStore;

on_both_stores!(
    one_model_is_retrieved_as_the_list_shows_it,
    embeddings_answer_that_no_model_serves_them_and_charge_nothing,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A verified user with ₹`rupees` and an API key: (user id, API key).
async fn customer(api: &TestApi, email: &str, rupees: i64) -> Res<(String, String)> {
    let (user, token) = api.verified_user(email).await?;
    if rupees > 0 {
        api.fund(&token, rupees).await?;
    }
    Ok((user, api.create_key(&token, "tests").await?))
}

async fn one_model_is_retrieved_as_the_list_shows_it(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, key) = customer(&api, "models@example.in", 0).await?;
    let list: Value = api.http.get(api.url("/v1/models")).bearer_auth(&key).send().await?.json().await?;
    let listed = list["data"].as_array().and_then(|models| models.first()).cloned().unwrap_or_default();
    let id = listed["id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "{list}");

    let one = api.http.get(api.url(&format!("/v1/models/{id}"))).bearer_auth(&key).send().await?;
    assert_eq!(one.status(), StatusCode::OK);
    assert_eq!(one.json::<Value>().await?, listed, "the same model as the list shows");

    let unknown = api.http.get(api.url("/v1/models/gpt-4o")).bearer_auth(&key).send().await?;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().await?;
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");

    let anonymous = api.http.get(api.url(&format!("/v1/models/{id}"))).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

async fn embeddings_answer_that_no_model_serves_them_and_charge_nothing(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "embeds@example.in", 100).await?;
    let before = api.state.store.wallet(&user).await?;
    let body = json!({ "model": "llama-3.1-8b", "input": "hello" });
    let answer = api.http.post(api.url("/v1/embeddings")).bearer_auth(&key).json(&body).send().await?;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert!(answer.headers().contains_key("x-request-id"));
    let error: Value = answer.json().await?;
    assert_eq!(error["error"]["code"], "model_not_found", "{error}");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("embedding")), "{error}");
    let after = api.state.store.wallet(&user).await?;
    assert_eq!((after.balance, after.held), (before.balance, before.held), "no money moved");

    let anonymous = api.http.post(api.url("/v1/embeddings")).json(&body).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "the key is checked first");
    Ok(())
}

#[tokio::test]
async fn openai_endpoints_we_do_not_serve_say_so_and_name_ours() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    for path in ["/v1/responses", "/v1/images/generations", "/v1/audio/speech", "/v1/moderations"] {
        let answer = api.http.post(api.url(path)).json(&json!({ "model": "x", "input": "hi" })).send().await?;
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
        let error: Value = answer.json().await?;
        assert_eq!(error["error"]["code"], "unsupported_endpoint", "{path}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(path) && message.contains("POST /v1/chat/completions"), "{message}");
    }
    // A path that is no OpenAI endpoint stays an ordinary unknown route.
    let unknown = api.http.post(api.url("/v1/nothing-here")).send().await?;
    assert_eq!(unknown.json::<Value>().await?["error"]["code"], "not_found");
    Ok(())
}

#[tokio::test]
async fn browser_apps_on_any_origin_may_call_with_a_key_but_never_with_cookies() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    let (_, key) = customer(&api, "browser@example.in", 100).await?;
    let origin = "https://playground.example.com";
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/llama-3.1-8b", "/v1/embeddings"] {
        let preflight = api
            .http
            .request(reqwest::Method::OPTIONS, api.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, x-stainless-os, openai-beta")
            .send()
            .await?;
        assert_eq!(preflight.status(), StatusCode::OK, "{path}");
        let headers = preflight.headers();
        assert_eq!(headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).and_then(|v| v.to_str().ok()), Some("*"), "{path}");
        let allowed = headers.get(ACCESS_CONTROL_ALLOW_HEADERS).and_then(|v| v.to_str().ok()).unwrap_or_default();
        for header in ["authorization", "content-type", "x-stainless-os", "openai-beta"] {
            assert!(allowed.contains(header), "{path}: {allowed}");
        }
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS), "{path}: never with credentials");
    }
    // The calls themselves, answered or refused, carry the header, so the app can read either.
    let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 5 });
    let ok = api.http.post(api.url("/v1/chat/completions")).header("origin", origin).bearer_auth(&key);
    let ok = ok.json(&body).send().await?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).and_then(|v| v.to_str().ok()), Some("*"));
    let refused = api.http.post(api.url("/v1/chat/completions")).header("origin", origin).json(&body).send().await?;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).and_then(|v| v.to_str().ok()), Some("*"));
    // Routes that a session cookie authenticates answer no other origin.
    for path in ["/v1/account", "/v1/wallet", "/v1/keys"] {
        let preflight = api
            .http
            .request(reqwest::Method::OPTIONS, api.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .await?;
        assert!(!preflight.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN), "{path}");
        let read = api.http.get(api.url(path)).header("origin", origin).send().await?;
        assert!(!read.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN), "{path}");
    }
    Ok(())
}

/// A non-streamed answer says what it cost (`x-inferex-cost-inr`): exactly what the ledger took.
#[tokio::test]
async fn a_completed_answer_says_what_it_cost() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    let (user, key) = customer(&api, "cost@example.in", 100).await?;
    let before = api.ledger_checked_balance(&user).await?;
    let body = json!({ "model": "llama-3.3-70b", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 50 });
    let answer = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
    assert_eq!(answer.status(), StatusCode::OK);
    let cost = answer.headers().get("x-inferex-cost-inr").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let after = api.ledger_checked_balance(&user).await?;
    assert!(before > after, "the call was charged");
    assert_eq!(cost, Some(shared::money::format_inr(before - after)));
    Ok(())
}

/// What SDKs parse comes through the gateway as a model server sends it: the role in a stream's first delta,
/// tool-call arguments that are JSON for the tool's schema, JSON mode answered with JSON, log probabilities
/// when asked, the system fingerprint.
#[tokio::test]
async fn answers_carry_what_sdks_parse() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    let (_, key) = customer(&api, "sdk@example.in", 100).await?;
    let call = |body: Value| api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send();
    let ask = json!({ "role": "user", "content": "weather in Pune?" });

    let streamed = call(json!({ "model": "llama-3.1-8b", "messages": [ask], "stream": true })).await?.text().await?;
    let first: Value =
        serde_json::from_str(streamed.split("\n\n").next().and_then(|e| e.strip_prefix("data: ")).unwrap_or("{}"))?;
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{first}");
    assert_eq!(first["system_fingerprint"], "fp_standin");

    let tool = json!({ "type": "function", "function": { "name": "weather", "parameters": { "type": "object", "properties": { "city": { "type": "string" }, "days": { "type": "integer" } }, "required": ["city"] } } });
    let called: Value = call(json!({ "model": "llama-3.1-8b", "messages": [ask], "tools": [tool], "max_tokens": 40 }))
        .await?
        .json()
        .await?;
    let arguments =
        called["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap_or_default();
    let arguments: Value = serde_json::from_str(arguments)?;
    assert!(arguments["city"].is_string() && arguments["days"].is_i64(), "{arguments}");
    assert_eq!(called["choices"][0]["finish_reason"], "tool_calls");

    let json_mode = json!({ "model": "llama-3.1-8b", "messages": [ask], "response_format": { "type": "json_object" }, "logprobs": true, "top_logprobs": 2 });
    let answered: Value = call(json_mode).await?.json().await?;
    let content = answered["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(serde_json::from_str::<Value>(content)?.is_object(), "{content}");
    let logprobs = answered["choices"][0]["logprobs"]["content"].as_array().cloned().unwrap_or_default();
    assert!(
        !logprobs.is_empty() && logprobs.iter().all(|t| t["top_logprobs"].as_array().is_some_and(|a| a.len() == 2))
    );
    Ok(())
}
