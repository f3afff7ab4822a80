//! What a stream that does not complete costs, and what its caller is told. A provider that fails mid-answer
//! and says so (an error event, then it closes the stream) generated what it sent (and what it held back
//! for stop sequences): the call costs the prompt's bound and that output counted from above. A stream cut in transit may have been
//! generated (and billed) to its cap: it costs the upper bound. Either way the caller's last events are a
//! chunk with the usage charged and its cost, then an error.

use dev_server::upstream_standin::{Answer, Mode};
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::catalog::{Catalog, Model};
use shared::inference::prompt_token_bound;
use shared::money::format_inr;

on_both_stores!(a_provider_that_stops_is_paid_for_what_it_sent, a_stream_cut_in_transit_costs_its_upper_bound,);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A verified user with ₹100 and an API key: (user id, API key).
async fn customer(api: &TestApi, email: &str) -> Res<(String, String)> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, 100).await?;
    Ok((user, api.create_key(&token, "tests").await?))
}

fn llama() -> Res<Model> {
    Ok(Catalog::builtin()?.models.into_iter().find(|m| m.id == "llama-3.1-8b").ok_or("model")?)
}

/// A streamed request in the given mode: (the events' data the caller read, what the wallet was charged).
async fn streamed(api: &TestApi, user: &str, key: &str, mode: Mode, body: &Value) -> Res<(Vec<Value>, i64)> {
    api.cerebras.set_mode(mode);
    api.cerebras.set_answer(Answer::UntilCap);
    let before = api.ledger_checked_balance(user).await?;
    let response = api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(body).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await?;
    let events = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((events, before - api.ledger_checked_balance(user).await?))
}

/// The chunk that says what the call was charged (the second to last event), checked against the charge.
fn charged_usage(events: &[Value], charged: i64, model: &Model) -> Res<(u64, u64)> {
    let [.., chunk, error] = events else { return Err("no closing events".into()) };
    assert_eq!(error["error"]["code"], "upstream_error", "{error}");
    let number = |field: &str| chunk["usage"][field].as_u64().ok_or(format!("usage.{field} in {chunk}"));
    let (prompt, completion) = (number("prompt_tokens")?, number("completion_tokens")?);
    assert_eq!(model.cost(prompt, completion), charged, "the chunk says what was charged: {chunk}");
    assert_eq!(chunk["inferex"]["cost_inr"], format_inr(charged), "{chunk}");
    Ok((prompt, completion))
}

async fn a_provider_that_stops_is_paid_for_what_it_sent(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "stops@example.in").await?;
    let model = llama()?;
    let body = json!({ "model": "llama-3.1-8b", "stream": true, "max_tokens": 2000,
                       "messages": [{ "role": "user", "content": "tell me everything" }] });
    let (events, charged) = streamed(&api, &user, &key, Mode::ErrorMidStream, &body).await?;
    assert!(
        events.iter().any(|e| e["error"]["type"] == "InternalServerError"),
        "the provider's own error reaches the caller"
    );
    let (prompt, completion) = charged_usage(&events, charged, &model)?;
    assert_eq!(prompt, prompt_token_bound(&model, &body), "the prompt's bound");
    assert!((2..100).contains(&completion), "the two tokens sent, counted from above, not the cap: {completion}");
    let provider_billed =
        model.cost(dev_server::upstream_standin::Upstream::prompt_tokens(&api.cerebras.requests()[0]), 2);
    assert!(charged >= provider_billed, "never less than the provider billed: {charged} < {provider_billed}");

    // A server holds back text that may be the start of a stop sequence: that much more may have been
    // generated and never sent.
    let mut with_stop = body.clone();
    with_stop["stop"] = json!(["z".repeat(300), "end"]);
    let (events, charged) = streamed(&api, &user, &key, Mode::ErrorMidStream, &with_stop).await?;
    let (_, held_back) = charged_usage(&events, charged, &model)?;
    assert!(held_back >= completion + 303, "the stop sequences count too: {held_back} after {completion}");
    Ok(())
}

async fn a_stream_cut_in_transit_costs_its_upper_bound(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "cut@example.in").await?;
    let model = llama()?;
    let body = json!({ "model": "llama-3.1-8b", "stream": true, "max_tokens": 2000,
                       "messages": [{ "role": "user", "content": "tell me everything" }] });
    let (events, charged) = streamed(&api, &user, &key, Mode::CutMidStream, &body).await?;
    let (prompt, completion) = charged_usage(&events, charged, &model)?;
    assert_eq!(
        (prompt, completion),
        (prompt_token_bound(&model, &body), 2000),
        "the cap: the provider may have gone on"
    );
    assert_eq!(events[events.len() - 2]["inferex"]["estimated"], true);
    Ok(())
}
