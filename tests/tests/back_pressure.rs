//! A provider's back-pressure passed on: a route that answers 429 or 503 is left for the next; when none is
//! left, the caller gets 429 (any route rate limited) or 503 (overloaded) with the provider's `Retry-After`,
//! or our estimate when it gave none, and a 502 says when to retry too. No provider's words reach the
//! caller, and no money moves.

use dev_server::upstream_standin::Mode;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(busy_providers_are_passed_on_with_when_to_retry);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// (status, Retry-After, error code) of a chat call, after checking that no provider detail leaked.
async fn call(api: &TestApi, key: &str) -> Res<(StatusCode, Option<String>, String)> {
    let body = json!({ "model": "llama-3.1-8b", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
    let response = api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await?;
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await?;
    for leak in ["quota", "org-standin", "stand-in", "cerebras", "neevcloud"] {
        assert!(status.is_success() || !text.contains(leak), "the provider's words never reach the caller: {text}");
    }
    let code = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    Ok((status, retry_after, code.unwrap_or_default()))
}

async fn busy_providers_are_passed_on_with_when_to_retry(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("busy@example.in").await?;
    api.fund(&token, 100).await?;
    let key = api.create_key(&token, "tests").await?;
    let before = api.ledger_checked_balance(&user).await?;

    api.cerebras.set_mode(Mode::Fail(429));
    api.cerebras.set_retry_after(Some("7"));
    let (status, _, _) = call(&api, &key).await?;
    assert_eq!(status, StatusCode::OK, "the next route answers");
    let charged = before - api.ledger_checked_balance(&user).await?;
    assert!(charged > 0, "the call the next route answered is charged");

    api.neevcloud.set_mode(Mode::Fail(503));
    api.neevcloud.set_retry_after(Some("3"));
    let rate_limited = call(&api, &key).await?;
    assert_eq!(rate_limited, (StatusCode::TOO_MANY_REQUESTS, Some("7".into()), "provider_rate_limited".into()));

    api.cerebras.set_mode(Mode::Fail(503));
    api.cerebras.set_retry_after(Some("Thu, 01 Jan 2099 00:00:00 GMT"));
    let overloaded = call(&api, &key).await?;
    assert_eq!(
        overloaded,
        (StatusCode::SERVICE_UNAVAILABLE, Some("3".into()), "model_overloaded".into()),
        "the shorter of the two waits (a far date is at most a minute anyway)"
    );

    api.neevcloud.set_retry_after(None);
    api.cerebras.set_retry_after(None);
    let (status, retry_after, _) = call(&api, &key).await?;
    assert_eq!((status, retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("2")), "our estimate");

    api.cerebras.set_mode(Mode::Fail(500));
    api.neevcloud.set_mode(Mode::Fail(502));
    let (status, retry_after, code) = call(&api, &key).await?;
    assert_eq!((status, retry_after.as_deref(), code.as_str()), (StatusCode::BAD_GATEWAY, Some("2"), "upstream_error"));

    assert_eq!(api.ledger_checked_balance(&user).await?, before - charged, "refused calls cost nothing");
    assert_eq!(api.held_and_leased(&user).await?.0, 0, "and hold nothing");
    Ok(())
}
