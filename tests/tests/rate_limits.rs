//! Per-key rate limits, counted in the store: 60 requests a minute admit exactly 60 calls of a burst, with
//! OpenAI's `x-ratelimit-*` headers counting down, and the 61st gets a 429 `rate_limit_exceeded` with
//! `Retry-After` (the rest of the minute); another key of the account is not held back; the next minute (the
//! injected clock) admits calls again. Tokens a minute count each call's upper bound; a call that alone
//! needs more is a 400. Keys without limits make no extra store write.

use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(
    sixty_a_minute_means_sixty,
    tokens_a_minute_count_each_calls_bound,
    account_defaults_apply_under_the_operators_ceiling,
    an_account_runs_at_most_its_calls_in_flight
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A funded, verified account's session token.
async fn account(api: &TestApi, email: &str) -> Res<String> {
    let (_, token) = api.verified_user(email).await?;
    api.fund(&token, 100).await?;
    Ok(token)
}

async fn key_with(api: &TestApi, token: &str, limits: Value) -> Res<(String, Value)> {
    let created: Value = api
        .http
        .post(api.url("/v1/keys"))
        .bearer_auth(token)
        .json(&json!({ "name": "limited", "rate_limits": limits }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((created["key"].as_str().ok_or("key")?.to_owned(), created))
}

async fn chat(api: &TestApi, key: &str, max_tokens: u64) -> Res<reqwest::Response> {
    let body =
        json!({ "model": "llama-3.1-8b", "max_tokens": max_tokens, "messages": [{ "role": "user", "content": "hi" }] });
    Ok(api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await?)
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn sixty_a_minute_means_sixty(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let token = account(&api, "rpm@example.in").await?;
    let (key, created) = key_with(&api, &token, json!({ "requests_per_minute": 60 })).await?;
    assert_eq!(created["rate_limits"], json!({ "requests_per_minute": 60, "tokens_per_minute": null }));
    let (other, _) = key_with(&api, &token, json!(null)).await?;

    let burst = (0..60).map(|_| chat(&api, &key, 3));
    let mut remaining = Vec::new();
    for call in futures_util::future::join_all(burst).await {
        let response = call?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit-requests").as_deref(), Some("60"));
        remaining.push(header(&response, "x-ratelimit-remaining-requests").ok_or("remaining")?.parse::<u64>()?);
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (0..60).collect::<Vec<_>>(), "each call counted once, across the burst");

    let refused = chat(&api, &key, 3).await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = header(&refused, "retry-after").ok_or("Retry-After")?.parse()?;
    assert!((1..=60).contains(&wait), "the rest of the minute: {wait}");
    let error: Value = refused.json().await?;
    assert_eq!(
        (error["error"]["code"].as_str(), error["error"]["type"].as_str()),
        (Some("rate_limit_exceeded"), Some("rate_limit_error"))
    );

    let free = chat(&api, &other, 3).await?;
    assert_eq!(free.status(), StatusCode::OK, "another key of the account is not held back");
    assert_eq!(header(&free, "x-ratelimit-limit-requests"), None, "a key without limits has no window");

    api.clock.advance(chrono::Duration::seconds(60));
    let next = chat(&api, &key, 3).await?;
    assert_eq!(next.status(), StatusCode::OK, "the next minute admits calls again");
    assert_eq!(header(&next, "x-ratelimit-remaining-requests").as_deref(), Some("59"));
    Ok(())
}

async fn tokens_a_minute_count_each_calls_bound(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let token = account(&api, "tpm@example.in").await?;
    let (key, _) = key_with(&api, &token, json!({ "tokens_per_minute": 1000 })).await?;
    let first = chat(&api, &key, 300).await?;
    assert_eq!(first.status(), StatusCode::OK);
    let left: u64 = header(&first, "x-ratelimit-remaining-tokens").ok_or("remaining tokens")?.parse()?;
    let bound = 1000 - left;
    assert!(bound > 300, "the output cap and the prompt's bound count: {bound}");
    assert!(header(&first, "x-ratelimit-reset-tokens").is_some_and(|r| r.ends_with('s')));
    let mut admitted = 1;
    while chat(&api, &key, 300).await?.status() == StatusCode::OK {
        admitted += 1;
        assert!(admitted < 10, "the window must fill");
    }
    assert_eq!(admitted, 1000 / bound, "as many calls as their bounds fit in the minute");

    // The window has room left for a smaller call: a refused larger one does not close it.
    let (left_now, prompt_bound) = (1000 - admitted * bound, bound - 300);
    assert!(left_now > prompt_bound, "the test's numbers leave room for a smaller call: {left_now}");
    let small = chat(&api, &key, left_now - prompt_bound).await?;
    assert_eq!(small.status(), StatusCode::OK, "{left_now} tokens were left");

    // Without max_tokens, the cap the gateway chooses fits the key's minute (the model's is 4,096).
    let (fresh, _) = key_with(&api, &token, json!({ "tokens_per_minute": 1000 })).await?;
    let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "hi" }] });
    let fitted = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&fresh).json(&body).send().await?;
    assert_eq!(fitted.status(), StatusCode::OK);
    assert_eq!(header(&fitted, "x-ratelimit-remaining-tokens").as_deref(), Some("0"), "the minute's tokens, all held");
    let sent = api.cerebras.requests().pop().ok_or("sent")?;
    assert!(sent["max_tokens"].as_u64().is_some_and(|cap| cap < 1000), "{sent}");

    let too_large = chat(&api, &key, 2000).await?;
    assert_eq!(too_large.status(), StatusCode::BAD_REQUEST, "a call that alone needs more than a minute allows");
    assert_eq!(too_large.json::<Value>().await?["error"]["param"], "max_tokens");

    let keys: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    let id = keys["data"][0]["id"].as_str().ok_or("id")?.to_owned();
    let lifted = api
        .http
        .patch(api.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&token)
        .json(&json!({ "rate_limits": null }))
        .send()
        .await?;
    assert_eq!(
        lifted.json::<Value>().await?["rate_limits"],
        json!({ "requests_per_minute": null, "tokens_per_minute": null })
    );
    // The harness caches keys for 300 ms (production: 60 s).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let unlimited = chat(&api, &key, 300).await?;
    assert_eq!((unlimited.status(), header(&unlimited, "x-ratelimit-limit-tokens")), (StatusCode::OK, None));

    Ok(())
}

#[tokio::test]
async fn limits_are_checked() -> TestResult {
    let api = TestApi::start(Backend::Embedded).await?;
    let token = account(&api, "checked@example.in").await?;
    for limits in [
        json!({ "requests_per_minute": 0 }),
        json!({ "tokens_per_minute": -1 }),
        json!({ "rpm": 5 }),
        json!(7),
        json!([60, 1000]),
    ] {
        let refused = api
            .http
            .post(api.url("/v1/keys"))
            .bearer_auth(&token)
            .json(&json!({ "name": "x", "rate_limits": limits }))
            .send()
            .await?;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{limits}");
        assert!(refused.text().await?.contains("rate_limits"), "{limits}");
    }
    Ok(())
}

/// The account's default rate limits apply to keys without their own; a key's own override them; the
/// ceiling operators set caps both (and limits a key with neither); customers cannot set the ceiling.
async fn account_defaults_apply_under_the_operators_ceiling(backend: Backend) -> TestResult {
    let token_of_operator = "ops-token-asha";
    let operators = e2e::operators_secret(&[("asha.ops@inferexai.in", token_of_operator, &["support"])]);
    let config = shared::config::Config {
        admin_token: Some(shared::secrets::SecretString::new(operators)),
        ..shared::config::Config::default()
    };
    let api = TestApi::start_with(backend, config).await?;
    let (user, token) = api.verified_user("defaults@example.in").await?;
    api.fund(&token, 100).await?;
    let (plain, _) = key_with(&api, &token, json!(null)).await?;
    let (own, _) = key_with(&api, &token, json!({ "requests_per_minute": 500 })).await?;
    let limit_of = |response: &reqwest::Response| header(response, "x-ratelimit-limit-requests");

    let patch = |body: Value| api.http.patch(api.url("/v1/limits")).bearer_auth(&token).json(&body).send();
    let set = patch(json!({ "default_rate_limits": { "requests_per_minute": 100 } })).await?;
    assert_eq!(set.status(), StatusCode::OK);
    let limits: Value = set.json().await?;
    assert_eq!(limits["default_rate_limits"]["requests_per_minute"], 100);
    assert_eq!(limits["rate_limit_ceiling"], json!({ "requests_per_minute": null, "tokens_per_minute": null }));
    assert_eq!(limit_of(&chat(&api, &plain, 3).await?).as_deref(), Some("100"), "the account's default");
    assert_eq!(limit_of(&chat(&api, &own, 3).await?).as_deref(), Some("500"), "the key's own");

    let refused = patch(json!({ "rate_limit_ceiling": { "requests_per_minute": 1 } })).await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "the ceiling is the operators'");
    assert_eq!(refused.json::<Value>().await?["error"]["code"], "unknown_field");

    let ceiling = |who: &str, body: Value| {
        let url = api.url(&format!("/v1/admin/accounts/{user}/limits"));
        api.http.put(url).bearer_auth(who.to_owned()).json(&body).send()
    };
    let by_customer = ceiling(&token, json!({ "rate_limit_ceiling": { "requests_per_minute": 200 } })).await?;
    assert_eq!(by_customer.status(), StatusCode::UNAUTHORIZED, "a session is no operator");
    let asha = api.operator_session(token_of_operator).await?;
    let set = ceiling(&asha, json!({ "rate_limit_ceiling": { "requests_per_minute": 200 } })).await?;
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(set.json::<Value>().await?["default_rate_limits"]["requests_per_minute"], 100, "the defaults stay");
    assert_eq!(limit_of(&chat(&api, &plain, 3).await?).as_deref(), Some("100"), "under the ceiling");
    assert_eq!(limit_of(&chat(&api, &own, 3).await?).as_deref(), Some("200"), "capped at the ceiling");
    patch(json!({ "default_rate_limits": null })).await?.error_for_status()?;
    assert_eq!(limit_of(&chat(&api, &plain, 3).await?).as_deref(), Some("200"), "a key with no limit gets the ceiling");

    let unknown = ceiling(&asha, json!({ "rate_limit_ceiling": null })).await?;
    assert_eq!(unknown.status(), StatusCode::OK, "lifted");
    let nobody = api.url("/v1/admin/accounts/usr_nobody/limits");
    let missing = api.http.put(nobody).bearer_auth(&asha).json(&json!({ "rate_limit_ceiling": null })).send().await?;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    for bad in [
        json!({ "default_rate_limits": { "requests_per_minute": 0 } }),
        json!({ "default_rate_limits": 5 }),
        json!({ "default_rate_limits": [null, null] }),
        json!({}),
    ] {
        assert_eq!(patch(bad.clone()).await?.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    Ok(())
}

/// Operators let an account run two calls at once: with two calls running (the provider slow), a third is
/// refused with 429 `rate_limit_exceeded` and `Retry-After`, whichever key makes it; once they end, calls are
/// admitted again (their slots were freed before their answers).
async fn an_account_runs_at_most_its_calls_in_flight(backend: Backend) -> TestResult {
    let operator = "ops-token-kiran";
    let operators = e2e::operators_secret(&[("kiran.ops@inferexai.in", operator, &["support"])]);
    let config = shared::config::Config {
        admin_token: Some(shared::secrets::SecretString::new(operators)),
        ..shared::config::Config::default()
    };
    let api = TestApi::start_with(backend, config).await?;
    let (user, token) = api.verified_user("inflight@example.in").await?;
    api.fund(&token, 100).await?;
    let (first, _) = key_with(&api, &token, json!({ "requests_per_minute": 100 })).await?;
    let (second, _) = key_with(&api, &token, json!(null)).await?;
    let url = api.url(&format!("/v1/admin/accounts/{user}/limits"));
    let kiran = api.operator_session(operator).await?;
    let set = api.http.put(url.clone()).bearer_auth(&kiran).json(&json!({ "calls_in_flight": 2 })).send().await?;
    assert_eq!(set.json::<Value>().await?["calls_in_flight"], 2);

    api.cerebras.set_latency(std::time::Duration::from_secs(2));
    let running = futures_util::future::join(chat(&api, &first, 3), chat(&api, &second, 3));
    let third = async {
        // Once the provider holds both calls, a third is over the account's limit.
        for () in e2e::polls() {
            if api.cerebras.requests().len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        chat(&api, &first, 3).await
    };
    let ((a, b), refused) = futures_util::future::join(running, third).await;
    assert_eq!((a?.status(), b?.status()), (StatusCode::OK, StatusCode::OK));
    let refused = refused?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(refused.json::<Value>().await?["error"]["code"], "rate_limit_exceeded");
    assert_eq!(api.cerebras.requests().len(), 2, "the refused call never reached the provider");

    api.cerebras.set_latency(std::time::Duration::ZERO);
    let after = futures_util::future::join(chat(&api, &first, 3), chat(&api, &second, 3)).await;
    let (after_first, after_second) = (after.0?, after.1?);
    assert_eq!((after_first.status(), after_second.status()), (StatusCode::OK, StatusCode::OK), "the slots were freed");
    assert_eq!(
        header(&after_first, "x-ratelimit-remaining-requests").as_deref(),
        Some("98"),
        "the refused call used none of its key's minute"
    );
    let bad = api.http.put(url).bearer_auth(&kiran).json(&json!({ "calls_in_flight": 0 })).send().await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    Ok(())
}
