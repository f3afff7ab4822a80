//! A provider that takes a call and never answers in time may be generating, and billing, all of it: the
//! caller gets a 504 and pays the call's upper bound (its hold), the call is not sent to another provider
//! (which would bill it twice), and a key's spend limits count it. A provider that cannot be reached at all
//! billed nothing: the next route takes the call.

use std::time::Duration;

use e2e::{Backend, TestApi, TestResult, on_both_stores};
use serde_json::json;
use shared::catalog::Catalog;
use shared::inference::{self, Endpoint, Gateway, Provider, Providers};
use shared::wallet::WalletStore;

on_both_stores!(a_provider_silent_past_the_timeout_is_paid_and_not_asked_again, an_unreachable_provider_is_passed_over);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn customer(api: &TestApi, email: &str) -> Res<(String, String, String)> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, 100).await?;
    let created: serde_json::Value = api
        .http
        .post(api.url("/v1/keys"))
        .bearer_auth(&token)
        .json(&json!({ "name": "silence", "spend_limits_paise": { "daily": 100 } }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((user, token, created["key"].as_str().ok_or("key")?.to_owned()))
}

async fn a_provider_silent_past_the_timeout_is_paid_and_not_asked_again(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token, key) = customer(&api, "silence@example.in").await?;
    api.cerebras.set_latency(Duration::from_secs(10));
    let providers = api.state.gateway()?.providers.clone();
    let gateway = Gateway::new(Catalog::builtin()?, providers)?.with_answer_timeout(Duration::from_millis(300));
    let ports = &api.state.ports;
    let owner = gateway.authenticate(ports, Some(&key)).await?;
    let before = api.state.store.wallet(&user).await?.balance;
    let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 500 });
    let mut prepared = inference::prepare(&gateway, Endpoint::ChatCompletions, body, "req_silence".into())?;
    let hold = prepared.max_cost();
    gateway.admit(ports, &owner, &mut prepared).await?;
    let Err(error) = inference::call(ports, &gateway, owner, prepared).await else {
        return Err("a silent provider's call must fail".into());
    };
    assert_eq!((error.status().as_u16(), error.code()), (504, "upstream_timeout"));
    assert_eq!(api.neevcloud.served(), 0, "not sent to the next provider: the first may be billing it");
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!(before - wallet.balance, hold, "charged the call's upper bound");
    assert_eq!(wallet.held, 0, "nothing left held");
    let keys: serde_json::Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    let counted = keys["data"][0]["spend_paise"]["daily"].as_i64().ok_or("spend")?;
    assert_eq!(counted, hold / shared::money::UNITS_PER_PAISA, "the key's daily spend counts it");
    Ok(())
}

async fn an_unreachable_provider_is_passed_over(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "unreachable@example.in").await?;
    // Cerebras at an address nobody listens on; NeevCloud as the stand-in.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut providers = Providers::default();
    providers.insert(Provider { name: "cerebras".into(), base_url: format!("http://{closed}"), api_key: None });
    let neevcloud = api.state.gateway()?.providers.get("neevcloud").ok_or("neevcloud")?.clone();
    providers.insert(neevcloud);
    let gateway = Gateway::new(Catalog::builtin()?, providers)?;
    let ports = &api.state.ports;
    let owner = gateway.authenticate(ports, Some(&key)).await?;
    let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 50 });
    let mut prepared = inference::prepare(&gateway, Endpoint::ChatCompletions, body, "req_unreachable".into())?;
    gateway.admit(ports, &owner, &mut prepared).await?;
    let answer = inference::call(ports, &gateway, owner, prepared).await?;
    assert!(matches!(answer, inference::Answer::Complete(_)), "the next route answered");
    assert_eq!(api.neevcloud.served(), 1);
    assert_eq!(api.state.store.wallet(&user).await?.held, 0);
    Ok(())
}
