//! OpenAI-compatible inference end to end, on both stores, against local provider stand-ins: exact billing,
//! usage logs without text, streaming with and without the usage chunk, OpenAI-shaped errors, fallback
//! before the first byte, mid-stream failure, key revocation, and no overspend under concurrency.

use std::sync::Arc;

use chrono::Duration;
use dev_server::upstream_standin::{Mode, Upstream};
use e2e::{Backend, CountingStore, TestApi, TestResult, captured_logs, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::inference::{self, Endpoint};
use shared::money::UNITS_PER_RUPEE;
use shared::wallet::WalletStore;

on_both_stores!(
    an_inference_request_makes_one_store_round_trip_before_and_one_after,
    calls_are_billed_exactly_and_logged_without_text,
    streams_relay_events_and_keep_the_usage_chunk_only_when_asked,
    errors_have_openai_shapes_and_release_the_hold,
    fallback_happens_only_before_the_first_byte,
    a_stream_cut_mid_way_bills_an_estimate,
    a_client_that_leaves_mid_stream_is_billed_the_reported_usage,
    revoked_keys_stop_working_within_the_cache_lifetime,
    concurrent_requests_never_overspend,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A verified, funded user with an API key: (user id, session token, API key).
async fn customer(api: &TestApi, email: &str, rupees: i64) -> Res<(String, String, String)> {
    let (user, token) = api.verified_user(email).await?;
    if rupees > 0 {
        api.fund(&token, rupees).await?;
    }
    let key = api.create_key(&token, "tests").await?;
    Ok((user, token, key))
}

async fn chat(api: &TestApi, key: &str, body: Value) -> Result<reqwest::Response, reqwest::Error> {
    api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await
}

fn hello(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] })
}

async fn ledger_is_consistent(api: &TestApi, user: &str) -> Res<i64> {
    let balance = api.ledger_checked_balance(user).await?;
    let wallet = api.state.store.wallet(user).await?;
    assert!(wallet.balance >= 0 && wallet.available >= 0, "{wallet:?}");
    Ok(balance)
}

fn usage_lines(dump: &str) -> Vec<&str> {
    dump.lines().filter(|l| l.contains(" USAGE#")).collect()
}

async fn an_inference_request_makes_one_store_round_trip_before_and_one_after(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token, key) = customer(&api, "trips@example.in", 100).await?;
    let counting = Arc::new(CountingStore::new(api.state.store.clone()));
    let mut state = api.state.clone();
    state.ports.store = counting.clone();
    // A gateway with the production key-cache lifetime (a minute; the harness's is short for revocation
    // tests), so that a slow machine cannot let the cached key expire between the two lookups.
    let gateway = &shared::inference::Gateway::new(Catalog::builtin()?, api.state.gateway()?.providers.clone())?;
    let calls = || counting.calls.swap(0, std::sync::atomic::Ordering::SeqCst);
    gateway.authenticate(&(&state).into(), Some(&key)).await?;
    assert!(calls() <= 2, "on a cold cache, the key and its account's spend limit are read (once a minute)");
    let owner = gateway.authenticate(&(&state).into(), Some(&key)).await?;
    assert_eq!(calls(), 0, "key lookups are cached");
    let prepared = inference::prepare(gateway, Endpoint::ChatCompletions, hello("llama-3.1-8b"), "req_trips".into())?;
    assert!(matches!(
        inference::call(&(&state).into(), gateway, owner, prepared).await?,
        inference::Answer::Complete(_)
    ));
    assert_eq!(calls(), 2, "one write before forwarding (the hold) and one after (the settlement)");

    // The key's last use is recorded in the background, at most once a minute.
    chat(&api, &key, hello("llama-3.1-8b")).await?.error_for_status()?;
    let mut last_used = Value::Null;
    for () in e2e::polls() {
        let keys: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
        last_used = keys["data"][0]["last_used_at"].clone();
        if !last_used.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(last_used.is_string(), "last_used_at is recorded");
    Ok(())
}

async fn calls_are_billed_exactly_and_logged_without_text(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "billed@example.in", 100).await?;
    let marker = "MARKER-7f3a9c-PROMPT-TEXT";
    let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": marker }], "seed": 7, "max_tokens": 100 });
    let response = chat(&api, &key, body.clone()).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let request_id =
        response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(request_id.starts_with("req_"));
    let answer: Value = response.json().await?;
    assert_eq!(answer["model"], "llama-3.1-8b", "the public model id, not the provider's");
    assert_eq!(answer["choices"][0]["message"]["content"], "Namaste! This is the stand-in model.");

    let sent = api.cerebras.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["model"], "llama3.1-8b", "the provider's model name");
    assert_eq!(sent[0]["seed"], 7, "unknown fields pass through");

    let model = Catalog::builtin()?.model("llama-3.1-8b").cloned().ok_or("model")?;
    let (prompt, completion) = (Upstream::prompt_tokens(&sent[0]), api.cerebras.completion_tokens(&sent[0]));
    let expected = model.cost(prompt, completion);
    assert_eq!(ledger_is_consistent(&api, &user).await?, 100 * UNITS_PER_RUPEE - expected);

    let completions = api
        .http
        .post(api.url("/v1/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "llama-3.1-8b", "prompt": marker, "max_tokens": 3 }))
        .send()
        .await?;
    assert_eq!(completions.status(), StatusCode::OK);
    assert_eq!(completions.json::<Value>().await?["choices"][0]["text"], "Namaste! This is ");

    let dump = api.dump().await?;
    let usage = usage_lines(&dump);
    assert_eq!(usage.len(), 2);
    let logged = usage.iter().find(|l| l.contains(&request_id)).ok_or("usage log of the chat call")?;
    for field in [
        "\"key_id\":\"key_",
        "\"model\":\"llama-3.1-8b\"",
        "\"provider\":\"cerebras\"",
        "\"status\":\"ok\"",
        "\"estimated\":false",
    ] {
        assert!(logged.contains(field), "{field} in {logged}");
    }
    assert!(
        logged.contains(&format!("\"cost\":{expected}")) && logged.contains(&format!("\"prompt_tokens\":{prompt}"))
    );
    assert!(!dump.contains(marker) && !captured_logs().contains(marker), "prompt text is never stored or logged");
    assert!(!dump.contains("stand-in model"), "completion text is never stored");
    Ok(())
}

async fn read_events(response: reqwest::Response) -> Res<Vec<String>> {
    let text = response.text().await?;
    Ok(text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_owned).collect())
}

async fn streams_relay_events_and_keep_the_usage_chunk_only_when_asked(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "stream@example.in", 100).await?;
    let mut body = hello("llama-3.3-70b");
    body["stream"] = json!(true);
    let response = chat(&api, &key, body.clone()).await?;
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let events = read_events(response).await?;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!events.iter().any(|e| e.contains("\"usage\"")), "usage chunk stripped: {events:?}");
    let content: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "Namaste! This is the stand-in model.");
    assert_eq!(
        api.cerebras.requests()[0]["stream_options"]["include_usage"],
        true,
        "usage is always requested upstream"
    );

    body["stream_options"] = json!({ "include_usage": true });
    let events = read_events(chat(&api, &key, body).await?).await?;
    let usage: Vec<&String> = events.iter().filter(|e| e.contains("\"usage\"")).collect();
    assert_eq!(usage.len(), 1, "the client asked for the usage chunk");

    // Settlement happens after the stream ends; wait for both.
    for () in e2e::polls() {
        if usage_lines(&api.dump().await?).len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let dump = api.dump().await?;
    assert_eq!(usage_lines(&dump).len(), 2);
    assert!(usage_lines(&dump).iter().all(|l| l.contains("\"estimated\":false") && l.contains("\"ttft_ms\":")));
    assert!(ledger_is_consistent(&api, &user).await? < 100 * UNITS_PER_RUPEE);
    Ok(())
}

async fn errors_have_openai_shapes_and_release_the_hold(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "errors@example.in", 100).await?;
    let (_, _, broke) = customer(&api, "broke@example.in", 0).await?;
    let expect = |status: StatusCode, code: &'static str, kind: &'static str| {
        move |r: (StatusCode, Value)| {
            assert_eq!(
                (r.0, r.1["error"]["code"].as_str(), r.1["error"]["type"].as_str()),
                (status, Some(code), Some(kind)),
                "{}",
                r.1
            );
        }
    };
    let call = |key: String, body: Value| {
        let api = &api;
        async move {
            let response = chat(api, &key, body).await?;
            assert!(response.headers().contains_key("x-request-id"));
            Ok::<_, reqwest::Error>((response.status(), response.json::<Value>().await.unwrap_or_default()))
        }
    };
    expect(StatusCode::UNAUTHORIZED, "invalid_api_key", "authentication_error")(
        call("sk-inferex-wrong".into(), hello("llama-3.1-8b")).await?,
    );
    expect(StatusCode::UNAUTHORIZED, "invalid_api_key", "authentication_error")(
        call(String::new(), hello("llama-3.1-8b")).await?,
    );
    expect(StatusCode::NOT_FOUND, "model_not_found", "invalid_request_error")(call(key.clone(), hello("gpt-9")).await?);
    expect(StatusCode::PAYMENT_REQUIRED, "insufficient_balance", "insufficient_quota")(
        call(broke, hello("llama-3.1-8b")).await?,
    );
    let mut huge = hello("llama-3.1-8b");
    huge["max_tokens"] = json!(1_000_000);
    expect(StatusCode::BAD_REQUEST, "invalid_max_tokens", "invalid_request_error")(call(key.clone(), huge).await?);

    // The provider refuses the request itself (4xx): passed through, nothing charged, hold released.
    api.cerebras.set_mode(Mode::Fail(400));
    expect(StatusCode::BAD_REQUEST, "upstream_invalid_request", "invalid_request_error")(
        call(key.clone(), hello("llama-3.1-8b")).await?,
    );
    assert!(api.neevcloud.requests().is_empty(), "a 4xx is not retried elsewhere");
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!((wallet.balance, wallet.held, wallet.available), (100 * UNITS_PER_RUPEE, 0, 100 * UNITS_PER_RUPEE));
    ledger_is_consistent(&api, &user).await?;
    Ok(())
}

async fn fallback_happens_only_before_the_first_byte(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "fallback@example.in", 100).await?;
    for failure in [500, 429, 503] {
        api.cerebras.set_mode(Mode::Fail(failure));
        let response = chat(&api, &key, hello("llama-3.1-8b")).await?;
        assert_eq!(response.status(), StatusCode::OK, "after a {failure}");
    }
    assert_eq!(api.neevcloud.requests().len(), 3);
    assert_eq!(api.neevcloud.requests()[0]["model"], "meta-llama/Llama-3.1-8B-Instruct");
    let dump = api.dump().await?;
    assert!(usage_lines(&dump).iter().all(|l| l.contains("\"provider\":\"neevcloud\"")));

    // Failures that say nothing of capacity (an overloaded route would make it a 503: back_pressure.rs).
    api.cerebras.set_mode(Mode::Fail(500));
    api.neevcloud.set_mode(Mode::Fail(502));
    let response = chat(&api, &key, hello("llama-3.1-8b")).await?;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.json::<Value>().await?["error"]["type"], "api_error");
    // A model with a single route has nowhere to fall back to.
    let response = chat(&api, &key, hello("qwen-3-32b")).await?;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(api.held_and_leased(&user).await?.0, 0, "failed calls release their holds");
    ledger_is_consistent(&api, &user).await?;
    Ok(())
}

async fn a_stream_cut_mid_way_bills_an_estimate(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "cut@example.in", 100).await?;
    api.cerebras.set_mode(Mode::CutMidStream);
    let mut body = hello("llama-3.1-8b");
    body["stream"] = json!(true);
    let events = read_events(chat(&api, &key, body).await?).await?;
    // What arrived before the cut is relayed (a reset connection may lose the last chunk in flight).
    let relayed = events.iter().filter(|e| e.contains("\"delta\"")).count();
    assert!((1..=2).contains(&relayed), "{events:?}");
    assert!(events.last().is_some_and(|e| e.contains("upstream_error")), "the client is told: {events:?}");
    assert!(api.neevcloud.requests().is_empty(), "no retry after bytes reached the client");
    let mut logged = None;
    for () in e2e::polls() {
        let dump = api.dump().await?;
        if let Some(line) = usage_lines(&dump).first() {
            logged = Some((*line).to_owned());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let logged = logged.ok_or("usage log of the cut stream")?;
    assert!(logged.contains("\"estimated\":true") && logged.contains("\"status\":\"upstream_error\""), "{logged}");
    let balance = ledger_is_consistent(&api, &user).await?;
    assert!(balance < 100 * UNITS_PER_RUPEE, "the estimate is billed");
    assert_eq!(api.state.store.wallet(&user).await?.held, 0);
    // Before the error, the client is told what the call was charged, exactly what the ledger took.
    let charged: Value = serde_json::from_str(events.get(events.len().saturating_sub(2)).ok_or("a charged chunk")?)?;
    assert_eq!(charged["choices"], json!([]), "{charged}");
    assert!(charged["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0), "{charged}");
    let charged_inr = charged["inferex"]["cost_inr"].as_str().unwrap_or_default();
    assert_eq!(charged_inr, shared::money::format_inr(100 * UNITS_PER_RUPEE - balance), "{charged}");
    Ok(())
}

async fn a_client_that_leaves_mid_stream_is_billed_the_reported_usage(backend: Backend) -> TestResult {
    use futures_util::StreamExt;
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "leaver@example.in", 100).await?;
    api.cerebras.set_mode(Mode::SlowStream);
    let mut body = hello("llama-3.1-8b");
    body["stream"] = json!(true);
    let response = chat(&api, &key, body).await?;
    let mut events = response.bytes_stream();
    events.next().await.ok_or("a first chunk")??;
    drop(events); // the client goes away after the first chunk
    let mut logged = None;
    for () in e2e::polls() {
        if let Some(line) = usage_lines(&api.dump().await?).first() {
            logged = Some((*line).to_owned());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let logged = logged.ok_or("usage log of the abandoned stream")?;
    assert!(logged.contains("\"status\":\"client_disconnected\""), "{logged}");
    assert!(logged.contains("\"estimated\":false"), "the upstream's usage was read after the client left: {logged}");
    assert!(ledger_is_consistent(&api, &user).await? < 100 * UNITS_PER_RUPEE);
    assert_eq!(api.state.store.wallet(&user).await?.held, 0);
    Ok(())
}

async fn revoked_keys_stop_working_within_the_cache_lifetime(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token, key) = customer(&api, "revoke@example.in", 100).await?;
    assert_eq!(api.http.get(api.url("/v1/models")).bearer_auth(&key).send().await?.status(), StatusCode::OK);
    let keys: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    let id = keys["data"][0]["id"].as_str().unwrap_or_default();
    api.http.delete(api.url(&format!("/v1/keys/{id}"))).bearer_auth(&token).send().await?.error_for_status()?;
    // The harness caches keys for 300 ms (production: 60 s).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let after = api.http.get(api.url("/v1/models")).bearer_auth(&key).send().await?;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

async fn concurrent_requests_never_overspend(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (user, token, key) = customer(&api, "crowd@example.in", 100).await?;
    // Leave ₹0.30 by refunding the rest: a handful of holds fit, most requests must wait their turn or fail.
    let (entries, _) = api.state.store.ledger(&user, 1, None).await?;
    let payment_id = entries.first().map(|e| e.reference.clone()).ok_or("top-up entry")?;
    let payment = shared::razorpay::Payment {
        id: payment_id,
        entity: "payment".into(),
        amount: 11_800,
        currency: "INR".into(),
        status: "captured".into(),
        order_id: None,
        method: None,
        contact: None,
        email: None,
        vpa: None,
        notes: Value::Null,
        created_at: 0,
    };
    api.clock.advance(Duration::seconds(1));
    // ₹100 of credit came with ₹18 of GST: ₹117.64 refunded takes back ₹99.70 of credit (rounded up).
    api.razorpay.deliver(&api.razorpay.refund_webhook(&payment, 11_764)).await.ok_or("refund")?;
    let start = ledger_is_consistent(&api, &user).await?;
    assert_eq!(start, 30 * UNITS_PER_RUPEE / 100);
    let mut body = hello("gpt-oss-120b");
    body["max_tokens"] = json!(1000);
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (api, key, body) = (api.clone(), key.clone(), body.clone());
        tasks.push(shared::tasks::spawn("test", async move { chat(&api, &key, body).await.map(|r| r.status()) }));
    }
    let mut ok = 0i64;
    let mut refused = 0;
    for task in tasks {
        match task.await?? {
            StatusCode::OK => ok += 1,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => return Err(format!("unexpected {other}").into()),
        }
    }
    assert!(ok > 0 && refused > 0, "{ok} served, {refused} refused");
    let end = ledger_is_consistent(&api, &user).await?;
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!(wallet.held, 0);
    let model = Catalog::builtin()?.model("gpt-oss-120b").cloned().ok_or("model")?;
    let sent = api.cerebras.requests();
    let per_call = model.cost(Upstream::prompt_tokens(&sent[0]), api.cerebras.completion_tokens(&sent[0]));
    assert_eq!(start - end, ok * per_call, "exactly the served calls were charged");
    let _ = token;
    Ok(())
}

mod usage_endpoints {
    use super::*;

    on_both_stores!(usage_is_listed_filtered_and_summarised);

    async fn usage_is_listed_filtered_and_summarised(backend: Backend) -> TestResult {
        let api = TestApi::start(backend).await?;
        let (_, token, key) = customer(&api, "usage@example.in", 100).await?;
        for model in ["llama-3.1-8b", "llama-3.1-8b", "llama-3.3-70b"] {
            chat(&api, &key, hello(model)).await?.error_for_status()?;
            api.clock.advance(Duration::seconds(1));
        }
        let get = |path: String| {
            let (api, token) = (&api, token.clone());
            async move { api.http.get(api.url(&path)).bearer_auth(&token).send().await?.json::<Value>().await }
        };
        let all = get("/v1/usage".into()).await?;
        let models: Vec<&str> =
            all["data"].as_array().into_iter().flatten().filter_map(|e| e["model"].as_str()).collect();
        assert_eq!(models, ["llama-3.3-70b", "llama-3.1-8b", "llama-3.1-8b"], "newest first");
        assert!(all["data"][0]["cost"].as_i64().is_some_and(|c| c > 0) && all["data"][0]["key_id"].is_string());

        let filtered = get("/v1/usage?model=llama-3.1-8b&limit=1".into()).await?;
        assert_eq!(filtered["data"].as_array().map(Vec::len), Some(1));
        assert_eq!(filtered["has_more"], true);
        let cursor = filtered["next_cursor"].as_str().unwrap_or_default().to_owned();
        let rest = get(format!("/v1/usage?model=llama-3.1-8b&limit=5&cursor={cursor}")).await?;
        assert_eq!(rest["data"].as_array().map(Vec::len), Some(1));

        let by_model = get("/v1/usage/summary?group_by=model".into()).await?;
        let groups: Vec<(String, u64)> = by_model["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| (g["group"].as_str().unwrap_or_default().to_owned(), g["requests"].as_u64().unwrap_or(0)))
            .collect();
        assert_eq!(groups, [("llama-3.1-8b".to_owned(), 2), ("llama-3.3-70b".to_owned(), 1)]);
        let by_day = get("/v1/usage/summary".into()).await?;
        assert_eq!(by_day["group_by"], "day");
        // Two seconds apart, the calls fall on one day in India unless the clock crossed midnight there.
        let days = by_day["data"].as_array().ok_or("summary data")?;
        assert!(!days.is_empty() && days.len() <= 2, "{by_day}");
        let requests: u64 = days.iter().filter_map(|d| d["requests"].as_u64()).sum();
        assert_eq!(requests, 3);
        let total: i64 = all["data"].as_array().into_iter().flatten().filter_map(|e| e["cost"].as_i64()).sum();
        assert_eq!(days.iter().filter_map(|d| d["cost"].as_i64()).sum::<i64>(), total);

        let bad = api.http.get(api.url("/v1/usage/summary?group_by=week")).bearer_auth(&token).send().await?;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let empty = get("/v1/usage?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z".into()).await?;
        assert_eq!(empty["data"].as_array().map(Vec::len), Some(0));
        Ok(())
    }
}
