//! Requests against the model's context, with a provider that enforces it as vLLM does (the stand-in
//! refuses a prompt and output cap that do not fit, with its counts, and bills nothing for it). The output
//! cap the gateway chooses is fitted to what the prompt leaves; a cap the caller chose that does not fit, or
//! a prompt too long for any answer, is a 400 `context_length_exceeded` naming the field, and no money moves.

use dev_server::upstream_standin::{Answer, Upstream};
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::catalog::Catalog;

on_both_stores!(a_cap_the_gateway_chose_is_fitted_to_the_context, what_cannot_fit_is_refused_and_costs_nothing,);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A verified user with ₹100 and an API key: (user id, API key).
async fn customer(api: &TestApi, email: &str) -> Res<(String, String)> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, 100).await?;
    Ok((user, api.create_key(&token, "tests").await?))
}

/// A chat request for llama-3.1-8b (a context of 8,192 tokens, answers of up to 4,096) with a prompt of
/// `bytes` bytes, which the stand-in counts as as many tokens.
fn chat(bytes: usize, extra: Value) -> Value {
    let mut body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "x".repeat(bytes) }] });
    if let (Some(fields), Value::Object(extra)) = (body.as_object_mut(), extra) {
        fields.extend(extra);
    }
    body
}

/// The error code and param of a 400.
async fn refusal(response: reqwest::Response) -> Res<(String, String, String)> {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await?;
    let text = |field: &str| error["error"][field].as_str().unwrap_or_default().to_owned();
    Ok((text("code"), text("param"), text("message")))
}

async fn a_cap_the_gateway_chose_is_fitted_to_the_context(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "fitted@example.in").await?;
    api.cerebras.set_answer(Answer::UntilCap);
    let model = Catalog::builtin()?.models.into_iter().find(|m| m.id == "llama-3.1-8b").ok_or("model")?;
    for stream in [false, true] {
        let seen = (api.cerebras.requests().len(), api.neevcloud.requests().len());
        let before = api.ledger_checked_balance(&user).await?;
        let body = chat(6_000, json!({ "stream": stream }));
        let response = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
        assert_eq!(response.status(), StatusCode::OK, "a prompt that fits is answered");
        let text = response.text().await?;
        let sent: Vec<Value> = api.cerebras.requests().into_iter().skip(seen.0).collect();
        assert_eq!(sent.len(), 2, "refused once for the context, then sent with the cap it leaves");
        assert_eq!(sent[0]["max_tokens"], 4096, "first the model's cap");
        let room = model.context_length as u64 - Upstream::prompt_tokens(&sent[1]);
        assert_eq!(
            (sent[1]["max_tokens"].as_u64(), sent[1]["max_completion_tokens"].as_u64()),
            (Some(room), Some(room))
        );
        assert_eq!(api.neevcloud.requests().len(), seen.1, "the refusal is no reason to try another provider");
        if stream {
            assert!(text.ends_with("data: [DONE]\n\n"), "{text:.300}");
        } else {
            let answer: Value = serde_json::from_str(&text)?;
            assert_eq!(answer["usage"]["completion_tokens"], room, "the answer runs to the room left");
            assert_eq!(answer["choices"][0]["finish_reason"], "length");
        }
        let after = api.ledger_checked_balance(&user).await?;
        let billed = model.cost(Upstream::prompt_tokens(&sent[1]), room);
        assert_eq!(before - after, billed, "charged what the provider billed for the call it answered");
    }
    assert_eq!(api.held_and_leased(&user).await?.0, 0, "nothing left held");
    Ok(())
}

async fn what_cannot_fit_is_refused_and_costs_nothing(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "refused@example.in").await?;
    let before = api.ledger_checked_balance(&user).await?;
    let send = |path: &'static str, body: Value| {
        let request = api.http.post(api.url(path)).bearer_auth(&key).json(&body);
        async move { request.send().await }
    };

    let (code, param, message) =
        refusal(send("/v1/chat/completions", chat(6_000, json!({ "max_tokens": 4000 }))).await?).await?;
    assert_eq!((code.as_str(), param.as_str()), ("context_length_exceeded", "max_tokens"), "{message}");
    let sent = api.cerebras.requests().pop().ok_or("the request reached the provider")?;
    let room = 8192 - Upstream::prompt_tokens(&sent);
    assert!(message.contains(&format!("at most {room}")), "the room left, in the provider's count: {message}");
    assert!(!message.contains("xxxx"), "the prompt is never quoted: {message}");
    let named = send("/v1/chat/completions", chat(6_000, json!({ "max_completion_tokens": 4000 }))).await?;
    assert_eq!(refusal(named).await?.1, "max_completion_tokens", "the field the caller used");

    for stream in [false, true] {
        let (code, param, _) =
            refusal(send("/v1/chat/completions", chat(9_000, json!({ "stream": stream }))).await?).await?;
        assert_eq!((code.as_str(), param.as_str()), ("context_length_exceeded", "messages"), "stream: {stream}");
    }
    let long_prompt = json!({ "model": "llama-3.1-8b", "prompt": "y".repeat(9_000) });
    let (code, param, _) = refusal(send("/v1/completions", long_prompt).await?).await?;
    assert_eq!((code.as_str(), param.as_str()), ("context_length_exceeded", "prompt"));

    assert_eq!(api.ledger_checked_balance(&user).await?, before, "no money moved");
    assert_eq!(api.held_and_leased(&user).await?.0, 0, "every hold given back");
    Ok(())
}
