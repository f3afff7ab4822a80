//! Billing that no request can game, on both stores: a table of hostile requests (prompt hidden outside
//! `content`, output caps left out, doubled or set to null, many choices, batched prompts, `stream` as a
//! string) and misbehaving providers (no usage report, cut streams, unreadable answers, reports above every
//! bound, refusals on their side). For every case the caller is charged at least what the provider
//! stand-ins bill, or gets a 400 naming the parameter; the balance always equals the ledger.

use std::sync::Arc;

use dev_server::upstream_standin::{Answer, Mode, OVER_REPORT_FACTOR, Upstream};
use e2e::{Backend, Fault, FaultyStore, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::inference::{self, Endpoint};
use shared::money::UNITS_PER_RUPEE;
use shared::wallet::WalletStore;

on_both_stores!(
    hostile_requests_pay_at_least_what_the_provider_bills,
    a_report_above_the_hold_is_charged_in_full_and_blocks_new_holds,
    provider_side_refusals_fall_back_and_never_leak,
    a_finished_stream_is_settled_before_its_last_event,
    repeated_writes_after_lost_answers_hold_and_charge_once,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A verified user with `rupees` in the wallet and an API key: (user id, API key).
async fn customer(api: &TestApi, email: &str, rupees: i64) -> Res<(String, String)> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, rupees).await?;
    let key = api.create_key(&token, "hostile").await?;
    Ok((user, key))
}

/// What the stand-ins billed for every request they received: each at its model's price, with the tokens
/// the stand-in counts (whether or not it reported them).
fn billed(api: &TestApi, seen: (usize, usize), mode: Mode) -> Res<i64> {
    let catalog = Catalog::builtin()?;
    let mut total = 0;
    for (provider, upstream, skip) in [("cerebras", &api.cerebras, seen.0), ("neevcloud", &api.neevcloud, seen.1)] {
        for request in upstream.requests().iter().skip(skip) {
            let name = request["model"].as_str().unwrap_or_default();
            let model = catalog
                .models
                .iter()
                .find(|m| m.routes.iter().any(|r| r.provider == provider && r.model == name))
                .ok_or("a catalog model for the upstream request")?;
            let mut prompt = Upstream::prompt_tokens(request);
            if mode == Mode::OverReport {
                prompt *= OVER_REPORT_FACTOR;
            }
            // A provider bills nothing for a call it failed or refused for the context.
            if !matches!(mode, Mode::Fail(_)) && Upstream::context_refusal(request).is_none() {
                total += model.cost(prompt, upstream.completion_tokens(request));
            }
        }
    }
    Ok(total)
}

/// One hostile case: the request, the stand-in's behaviour, and what must happen.
struct Case {
    name: &'static str,
    endpoint: Endpoint,
    body: Value,
    mode: Mode,
    answer: Answer,
    /// `Some(param)`: refused with 400 naming it, before any provider sees the request.
    refused: Option<&'static str>,
    /// The client reads one chunk of the stream and hangs up.
    leaves: bool,
}

fn case(name: &'static str, body: Value) -> Case {
    Case {
        name,
        endpoint: Endpoint::ChatCompletions,
        body,
        mode: Mode::Normal,
        answer: Answer::Greeting,
        refused: None,
        leaves: false,
    }
}

fn chat_body(model: &str, extra: Value) -> Value {
    let mut body = json!({ "model": model, "messages": [{ "role": "user", "content": "?" }] });
    if let (Some(fields), Value::Object(extra)) = (body.as_object_mut(), extra) {
        fields.extend(extra);
    }
    body
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
fn hostile_cases() -> Vec<Case> {
    let big = "lorem ipsum dolor sit amet ".repeat(1_100); // ~30 KB
    let tool = json!([{ "type": "function", "function": { "name": "lookup", "description": big, "parameters": { "type": "object", "properties": { "q": { "type": "string", "description": big } } } } }]);
    vec![
        case(
            "a 30 KB tool description",
            chat_body("llama-3.3-70b", json!({ "tools": tool, "tool_choice": "none", "max_tokens": 1 })),
        ),
        case(
            "assistant tool-call arguments",
            json!({ "model": "llama-3.3-70b", "max_tokens": 1, "messages": [
                { "role": "user", "content": "?" },
                { "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function", "function": { "name": "f", "arguments": big } }] },
                { "role": "tool", "tool_call_id": "c1", "content": "?" }] }),
        ),
        case(
            "a long message name",
            json!({ "model": "llama-3.3-70b", "max_tokens": 1, "messages": [{ "role": "user", "name": big, "content": "?" }] }),
        ),
        case(
            "legacy functions",
            chat_body("llama-3.3-70b", json!({ "functions": [{ "name": "f", "description": big }], "max_tokens": 1 })),
        ),
        case(
            "a response format schema",
            chat_body(
                "llama-3.3-70b",
                json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "s", "schema": { "description": big } } }, "max_tokens": 1 }),
            ),
        ),
        case("vLLM documents", chat_body("llama-3.3-70b", json!({ "documents": [{ "text": big }], "max_tokens": 1 }))),
        case(
            "many short messages",
            json!({ "model": "gpt-oss-120b", "max_tokens": 1, "messages": vec![json!({ "role": "user", "content": "" }); 2_000] }),
        ),
        Case {
            answer: Answer::UntilCap,
            ..case("no output cap, a model that never stops", chat_body("llama-3.1-8b", json!({})))
        },
        Case {
            answer: Answer::UntilCap,
            ..case(
                "a null cap beside a large one",
                chat_body("gpt-oss-120b", json!({ "max_completion_tokens": null, "max_tokens": 8000 })),
            )
        },
        Case {
            refused: Some("max_tokens"),
            ..case(
                "two different caps",
                chat_body("gpt-oss-120b", json!({ "max_completion_tokens": 1, "max_tokens": 16384 })),
            )
        },
        Case {
            answer: Answer::UntilCap,
            ..case("equal caps", chat_body("llama-3.1-8b", json!({ "max_completion_tokens": 50, "max_tokens": 50 })))
        },
        Case {
            refused: Some("max_completion_tokens"),
            ..case("a cap as a string", chat_body("llama-3.1-8b", json!({ "max_completion_tokens": "10" })))
        },
        Case { refused: Some("n"), ..case("n = 8", chat_body("llama-3.1-8b", json!({ "n": 8 }))) },
        Case { refused: Some("n"), ..case("n = 2.5", chat_body("llama-3.1-8b", json!({ "n": 2.5 }))) },
        case("n = 1 and best_of = null", chat_body("llama-3.1-8b", json!({ "n": 1, "best_of": null }))),
        Case {
            endpoint: Endpoint::Completions,
            refused: Some("best_of"),
            ..case("best_of = 4", json!({ "model": "llama-3.1-8b", "prompt": "?", "best_of": 4 }))
        },
        Case {
            endpoint: Endpoint::Completions,
            refused: Some("prompt"),
            ..case("a batch of prompts", json!({ "model": "llama-3.1-8b", "prompt": ["a", "b", "c"] }))
        },
        Case {
            endpoint: Endpoint::Completions,
            answer: Answer::UntilCap,
            ..case("a prompt of token ids, no cap", json!({ "model": "llama-3.1-8b", "prompt": [1, 2, 3, 4, 5] }))
        },
        Case {
            refused: Some("stream"),
            ..case("stream as a string", chat_body("llama-3.1-8b", json!({ "stream": "true" })))
        },
        Case {
            refused: Some("stream_options"),
            ..case(
                "stream options as a string",
                chat_body("llama-3.1-8b", json!({ "stream": true, "stream_options": "usage" })),
            )
        },
        Case {
            mode: Mode::NoUsage,
            answer: Answer::UntilCap,
            ..case("no usage report, a long answer", chat_body("llama-3.1-8b", json!({ "max_tokens": 300 })))
        },
        Case {
            mode: Mode::NoUsage,
            answer: Answer::Tokens(200),
            ..case(
                "no usage report, streamed reasoning and a tool call",
                chat_body(
                    "gpt-oss-120b",
                    json!({ "stream": true, "tools": [{ "type": "function", "function": { "name": "lookup" } }] }),
                ),
            )
        },
        Case {
            mode: Mode::CutMidStream,
            answer: Answer::UntilCap,
            ..case(
                "a long stream cut after two chunks",
                chat_body("llama-3.1-8b", json!({ "stream": true, "max_tokens": 2000 })),
            )
        },
        Case {
            mode: Mode::ErrorMidStream,
            answer: Answer::UntilCap,
            ..case(
                "a provider that fails after two tokens and says so",
                chat_body("llama-3.1-8b", json!({ "stream": true, "max_tokens": 2000 })),
            )
        },
        Case {
            mode: Mode::NoUsage,
            leaves: true,
            answer: Answer::UntilCap,
            ..case(
                "a client that leaves a stream without usage",
                chat_body("llama-3.1-8b", json!({ "stream": true, "max_tokens": 500 })),
            )
        },
        Case {
            mode: Mode::Unreadable,
            ..case("an unreadable 200", chat_body("llama-3.1-8b", json!({ "max_tokens": 100 })))
        },
        Case {
            refused: Some("chat_template"),
            ..case(
                "a request-level chat template",
                chat_body(
                    "llama-3.3-70b",
                    json!({ "chat_template": "{% for i in range(16) %}{{ messages[0].content }}{% endfor %}", "max_tokens": 1 }),
                ),
            )
        },
        Case {
            refused: Some("chat_template_kwargs"),
            ..case(
                "template arguments that add text",
                chat_body(
                    "gpt-oss-120b",
                    json!({ "chat_template_kwargs": { "builtin_tools": ["browser", "python"] }, "max_tokens": 1 }),
                ),
            )
        },
        case(
            "template arguments that only switch",
            chat_body("qwen-3-32b", json!({ "chat_template_kwargs": { "enable_thinking": false }, "max_tokens": 20 })),
        ),
        Case {
            mode: Mode::CrlfFraming,
            answer: Answer::Tokens(300),
            ..case(
                "a stream framed with CRLF",
                chat_body("llama-3.1-8b", json!({ "stream": true, "max_tokens": 1000 })),
            )
        },
        Case {
            mode: Mode::DecoyUsageThenCut,
            answer: Answer::UntilCap,
            ..case(
                "an early zero usage chunk, then a cut",
                chat_body("llama-3.1-8b", json!({ "stream": true, "max_tokens": 1500 })),
            )
        },
        Case {
            mode: Mode::FloatUsage,
            answer: Answer::Tokens(800),
            ..case("completion tokens reported as a float", chat_body("llama-3.1-8b", json!({ "max_tokens": 1000 })))
        },
    ]
}

async fn send(api: &TestApi, key: &str, endpoint: Endpoint, body: &Value) -> Res<reqwest::Response> {
    let path = match endpoint {
        Endpoint::ChatCompletions => "/v1/chat/completions",
        Endpoint::Completions => "/v1/completions",
    };
    Ok(api.http.post(api.url(path)).bearer_auth(key).json(body).send().await?)
}

/// Waits until the wallet holds nothing (a stream a client left settles in the background).
async fn settled(api: &TestApi, user: &str) -> Res<()> {
    for () in e2e::polls() {
        if api.held_and_leased(user).await?.0 == 0 && api.state.gateway()?.lease_calls_running(user) == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err("a hold was never settled".into())
}

async fn hostile_requests_pay_at_least_what_the_provider_bills(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "hostile@example.in", 2_000).await?;
    let mut failures = Vec::new();
    for case in hostile_cases() {
        if let Err(failure) = run_case(&api, &user, &key, &case).await {
            failures.push(format!("{}: {failure}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} hostile case(s) failed:\n{}", failures.len(), failures.join("\n"));
    Ok(())
}

/// A failed expectation of one case, reported with the others rather than ending the run.
fn check(holds: bool, what: impl std::fmt::Display) -> Res<()> {
    if holds { Ok(()) } else { Err(what.to_string().into()) }
}

/// One case: sends it, then checks the charge against what the stand-ins billed, and the ledger.
async fn run_case(api: &TestApi, user: &str, key: &str, case: &Case) -> Res<()> {
    api.cerebras.set_mode(case.mode);
    api.cerebras.set_answer(case.answer);
    let seen = (api.cerebras.requests().len(), api.neevcloud.requests().len());
    let before = api.ledger_checked_balance(user).await?;
    let response = send(api, key, case.endpoint, &case.body).await?;
    let status = response.status();
    if let Some(param) = case.refused {
        let error: Value = response.json().await?;
        check(status == StatusCode::BAD_REQUEST && error["error"]["param"] == param, format!("not refused: {error}"))?;
        check(api.cerebras.requests().len() == seen.0, "a provider saw a refused request")?;
    } else if case.leaves {
        use futures_util::StreamExt;
        let mut stream = response.bytes_stream();
        stream.next().await.ok_or("a first chunk")??;
        drop(stream);
    } else {
        let text = response.text().await?;
        let expected = if case.mode == Mode::Unreadable { StatusCode::BAD_GATEWAY } else { StatusCode::OK };
        check(status == expected, format!("answered {status}: {text}"))?;
        check(api.neevcloud.requests().len() == seen.1, "the call was sent to a second provider (paid twice)")?;
        let cut = matches!(case.mode, Mode::CutMidStream | Mode::DecoyUsageThenCut | Mode::ErrorMidStream);
        if case.body["stream"] == true && !cut {
            check(text.ends_with("data: [DONE]\n\n"), format!("the stream did not end with [DONE]: {text:.300}"))?;
        }
    }
    settled(api, user).await?;
    let after = api.ledger_checked_balance(user).await?;
    let provider_billed = billed(api, seen, case.mode)?;
    check(
        before - after >= provider_billed,
        format!("charged {} but the provider billed {provider_billed}", before - after),
    )?;
    check(case.refused.is_none() || before == after, "a refused request cost something")?;
    // Every output cap sent upstream is explicit and equal to what was held; so is `stream`.
    for request in api.cerebras.requests().iter().skip(seen.0) {
        check(request["stream"].is_boolean(), format!("stream is not spelled out: {request}"))?;
        let caps: Vec<&Value> =
            ["max_tokens", "max_completion_tokens"].iter().filter_map(|p| request.get(*p)).collect();
        check(
            !caps.is_empty() && caps.iter().all(|c| c.is_u64() && *c == caps[0]),
            format!("the output cap is not explicit: {request}"),
        )?;
    }
    Ok(())
}

async fn a_report_above_the_hold_is_charged_in_full_and_blocks_new_holds(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "overreport@example.in", 100).await?;
    api.cerebras.set_mode(Mode::OverReport);
    // A prompt whose hold fits in ₹100 but whose (over-)report does not: 60,000 tokens at ₹70 per million,
    // reported a thousand times over.
    let body = chat_body(
        "llama-3.3-70b",
        json!({ "messages": [{ "role": "user", "content": "x".repeat(60_000) }], "max_tokens": 1 }),
    );
    let before = api.ledger_checked_balance(&user).await?;
    let response = send(&api, &key, Endpoint::ChatCompletions, &body).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let after = api.ledger_checked_balance(&user).await?;
    let provider_billed = billed(&api, (0, 0), Mode::OverReport)?;
    assert_eq!(before - after, provider_billed, "the report is charged in full");
    assert!(after < 0, "the wallet goes below zero by the excess only: {after}");
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!((wallet.held, wallet.available), (0, after));
    let dump = api.dump().await?;
    let usage = dump.lines().find(|l| l.contains(" USAGE#")).ok_or("usage entry")?;
    assert!(usage.contains("\"over_hold\":"), "the excess is recorded on the usage entry: {usage}");
    assert!(e2e::captured_logs().contains("usage_over_hold"), "and alerted");
    // No new hold until a top-up covers the debt.
    api.cerebras.set_mode(Mode::Normal);
    let next =
        send(&api, &key, Endpoint::ChatCompletions, &chat_body("llama-3.1-8b", json!({ "max_tokens": 1 }))).await?;
    assert_eq!(next.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(api.ledger_checked_balance(&user).await?, after);
    Ok(())
}

async fn provider_side_refusals_fall_back_and_never_leak(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "refusals@example.in", 100).await?;
    let body = chat_body("llama-3.1-8b", json!({ "max_tokens": 5 }));
    for status in [401, 402, 403] {
        api.cerebras.set_mode(Mode::Fail(status));
        let seen = api.neevcloud.requests().len();
        let response = send(&api, &key, Endpoint::ChatCompletions, &body).await?;
        assert_eq!(response.status(), StatusCode::OK, "a {status} falls back to the next route");
        assert_eq!(api.neevcloud.requests().len(), seen + 1);
    }
    // (A 429 everywhere is the providers' back-pressure, passed on as such: tests/tests/back_pressure.rs.)
    for status in [401, 402, 403] {
        api.cerebras.set_mode(Mode::Fail(status));
        api.neevcloud.set_mode(Mode::Fail(status));
        let response = send(&api, &key, Endpoint::ChatCompletions, &body).await?;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "our side of {status}");
        assert!(response.headers().contains_key("retry-after"), "never a bare 503");
        let text = response.text().await?;
        let error: Value = serde_json::from_str(&text)?;
        assert_eq!(error["error"]["type"], "api_error", "{text}");
        for leak in ["quota", "org-standin", "stand-in"] {
            assert!(!text.contains(leak), "the provider's words never reach the caller: {text}");
        }
    }
    // A refusal that is not about the request (405, 415, ...) says nothing of the provider either.
    api.cerebras.set_mode(Mode::Fail(405));
    let response = send(&api, &key, Endpoint::ChatCompletions, &body).await?;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let text = response.text().await?;
    assert!(!text.contains("quota") && !text.contains("org-standin"), "{text}");
    assert_eq!(api.held_and_leased(&user).await?.0, 0, "no call holds anything");
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn a_finished_stream_is_settled_before_its_last_event(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "settled@example.in", 100).await?;
    api.cerebras.set_answer(Answer::Tokens(400));
    let mut state = api.state.clone();
    let slow = Fault::DelayTransactions(std::time::Duration::from_millis(300));
    state.ports.store = Arc::new(FaultyStore::new(api.state.store.clone(), slow));
    let gateway = api.state.gateway()?;
    let owner = gateway.authenticate(&(&state).into(), Some(&key)).await?;
    let model = Catalog::builtin()?.model("llama-3.1-8b").cloned().ok_or("model")?;
    for include_usage in [false, true] {
        let body = chat_body(
            "llama-3.1-8b",
            json!({ "stream": true, "stream_options": { "include_usage": include_usage }, "max_tokens": 1000 }),
        );
        let before = api.ledger_checked_balance(&user).await?;
        let prepared =
            inference::prepare(gateway, Endpoint::ChatCompletions, body, format!("req_settled_{include_usage}"))?;
        let inference::Answer::Stream(inference::Streamed { mut events, .. }) =
            inference::call(&(&state).into(), gateway, owner.clone(), prepared).await?
        else {
            return Err("not a stream".into());
        };
        let mut last = Vec::new();
        while let Some(event) = events.recv().await {
            last = event?.to_vec();
        }
        assert_eq!(String::from_utf8_lossy(&last), "data: [DONE]\n\n");
        // No waiting: by the time the client has seen [DONE], the (slow) settlement has committed.
        let wallet = api.state.store.wallet(&user).await?;
        assert_eq!(wallet.held, 0, "settled before the end of the stream");
        let charged = before - api.ledger_checked_balance(&user).await?;
        let sent = api.cerebras.requests();
        let last = sent.last().ok_or("a request")?;
        assert_eq!(api.cerebras.completion_tokens(last), 400);
        assert_eq!(charged, model.cost(Upstream::prompt_tokens(last), api.cerebras.completion_tokens(last)));
    }
    Ok(())
}

async fn repeated_writes_after_lost_answers_hold_and_charge_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "repeats@example.in", 100).await?;
    let mut state = api.state.clone();
    state.ports.store = Arc::new(FaultyStore::new(api.state.store.clone(), Fault::RepeatWrites));
    let gateway = api.state.gateway()?;
    let owner = gateway.authenticate(&(&state).into(), Some(&key)).await?;
    let before = api.ledger_checked_balance(&user).await?;
    let body = chat_body("llama-3.1-8b", json!({ "max_tokens": 6 }));
    let prepared = inference::prepare(gateway, Endpoint::ChatCompletions, body, "req_repeated".into())?;
    assert!(matches!(
        inference::call(&(&state).into(), gateway, owner, prepared).await?,
        inference::Answer::Complete(_)
    ));
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!(wallet.held, 0, "the hold was placed once and settled once: {wallet:?}");
    assert_eq!(wallet.available, wallet.balance);
    let charged = before - api.ledger_checked_balance(&user).await?;
    let sent = api.cerebras.requests();
    let model = Catalog::builtin()?.model("llama-3.1-8b").cloned().ok_or("model")?;
    assert_eq!(charged, model.cost(Upstream::prompt_tokens(&sent[0]), api.cerebras.completion_tokens(&sent[0])));
    let dump = api.dump().await?;
    assert_eq!(dump.lines().filter(|l| l.contains(" USAGE#")).count(), 1, "one usage entry");
    assert!(charged > 0 && charged < UNITS_PER_RUPEE);
    Ok(())
}
