//! Spend limits, counted in the store (`shared::spend`): a burst of 50 parallel calls against a small daily
//! limit is charged at most the limit, the refused calls get 429 `spend_limit_reached` (type
//! `insufficient_quota`, `param` naming the limit, told not to retry), another key of the account is not
//! held back, and the next day in IST (the injected clock) admits calls again. Limits change through
//! `PATCH /v1/keys/{id}` and apply at the next call; alerts at 80% and 100% go out once per window and
//! are listed; the account's monthly limit covers every key. Across eight one-call-at-a-time instances
//! (the fleet's shape) sharing one key, the limit holds as well.

use chrono::Duration;
use dev_server::upstream_standin::Mode;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::clock::Clock;
use shared::inference::{self, Endpoint, Gateway};
use shared::money::UNITS_PER_PAISA;
use shared::spend::Period;

on_both_stores!(
    a_burst_never_spends_past_a_daily_limit,
    limits_change_and_alert_once_per_window,
    the_account_monthly_limit_covers_every_key,
    eight_instances_share_one_keys_limit,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn key_with(api: &TestApi, token: &str, spend: Value) -> Res<(String, Value)> {
    let created: Value = api
        .http
        .post(api.url("/v1/keys"))
        .bearer_auth(token)
        .json(&json!({ "name": "budgeted", "spend_limits_paise": spend }))
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

async fn get(api: &TestApi, token: &str, path: &str) -> Res<Value> {
    Ok(api.http.get(api.url(path)).bearer_auth(token).send().await?.error_for_status()?.json().await?)
}

async fn patch(api: &TestApi, token: &str, path: &str, body: Value) -> Res<reqwest::Response> {
    Ok(api.http.patch(api.url(path)).bearer_auth(token).json(&body).send().await?)
}

async fn balance(api: &TestApi, token: &str) -> Res<i64> {
    get(api, token, "/v1/wallet").await?["balance"].as_i64().ok_or_else(|| "balance".into())
}

/// The key as `GET /v1/keys` lists it.
async fn listed(api: &TestApi, token: &str, key_id: &Value) -> Res<Value> {
    let keys = get(api, token, "/v1/keys").await?;
    let found = keys["data"].as_array().and_then(|all| all.iter().find(|k| k["id"] == *key_id).cloned());
    Ok(found.ok_or("key listed")?)
}

/// A refusal's error, checked to be a spend limit's naming `param`.
async fn refused_by(response: reqwest::Response, param: &str) -> Res<Value> {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = response.headers().get("x-should-retry").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(retry.as_deref(), Some("false"), "SDKs are told not to retry a spend limit");
    let error: Value = response.json().await?;
    assert_eq!(error["error"]["code"], "spend_limit_reached", "{error}");
    assert_eq!(error["error"]["type"], "insufficient_quota");
    assert_eq!(error["error"]["param"], param);
    Ok(error)
}

/// Every admitted call is billed its whole hold (the provider's answer is unreadable after billing), so
/// nothing comes back to the limit: 50 parallel calls against 10 paise a day admit exactly as many holds
/// as fit, and the wallet is charged no more than the limit.
async fn a_burst_never_spends_past_a_daily_limit(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("daily@example.in").await?;
    api.fund(&token, 100).await?;
    let (key, created) = key_with(&api, &token, json!({ "daily": 10 })).await?;
    assert_eq!(created["spend_limits_paise"], json!({ "total": null, "daily": 10, "monthly": null }));
    assert_eq!(created["spend_paise"], json!({ "total": 0, "daily": 0, "monthly": 0 }));
    let other = api.create_key(&token, "unlimited").await?;

    api.cerebras.set_mode(Mode::Unreadable);
    let before = balance(&api, &token).await?;
    let answers = join_all((0..50).map(|_| chat(&api, &key, 1000))).await;
    let (mut admitted, mut refused) = (0, 0);
    for answer in answers {
        let answer = answer?;
        if answer.status() == StatusCode::BAD_GATEWAY {
            admitted += 1;
        } else {
            refused_by(answer, "daily").await?;
            refused += 1;
        }
    }
    let spent = before - balance(&api, &token).await?;
    let limit = 10 * UNITS_PER_PAISA;
    assert!(spent <= limit, "charged {spent} units against a limit of {limit}");
    let hold = spent / admitted;
    assert_eq!(spent, hold * admitted, "each admitted call was charged its hold");
    assert_eq!(admitted, limit / hold, "as many holds as fit in the limit: {admitted} of {hold}, {refused} refused");
    let shown = listed(&api, &token, &created["id"]).await?;
    let paise = spent / UNITS_PER_PAISA;
    assert_eq!(shown["spend_paise"], json!({ "total": paise, "daily": paise, "monthly": paise }));

    api.cerebras.set_mode(Mode::Normal);
    assert_eq!(chat(&api, &other, 1000).await?.status(), StatusCode::OK, "another key is not held back");
    let refusal = refused_by(chat(&api, &key, 1000).await?, "daily").await?;
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("daily spend limit") && message.contains("+05:30"), "{message}");

    let today = api.clock.now();
    api.clock.advance(Duration::days(1));
    assert_eq!(chat(&api, &key, 1000).await?.status(), StatusCode::OK, "the next day in IST admits calls again");
    let shown = listed(&api, &token, &created["id"]).await?;
    assert_eq!(shown["spend_paise"]["daily"], 0, "a new day (the call cost under a paisa)");
    let same_month = Period::month(today) == Period::month(api.clock.now());
    assert_eq!(shown["spend_paise"]["monthly"], if same_month { paise } else { 0 });
    assert_eq!(shown["spend_paise"]["total"], paise);
    Ok(())
}

async fn limits_change_and_alert_once_per_window(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("alerts@example.in").await?;
    api.fund(&token, 100).await?;
    let (key, created) = key_with(&api, &token, json!({ "total": 2 })).await?;
    let path = format!("/v1/keys/{}", created["id"].as_str().ok_or("id")?);

    // A call holding about 1.7 paise is charged all of it: 80% of the limit, then the next is refused.
    api.cerebras.set_mode(Mode::Unreadable);
    assert_eq!(chat(&api, &key, 2000).await?.status(), StatusCode::BAD_GATEWAY);
    api.clock.advance(Duration::seconds(1));
    refused_by(chat(&api, &key, 2000).await?, "total").await?;
    refused_by(chat(&api, &key, 2000).await?, "total").await?;
    let mails = api.mail_to("alerts@example.in").await?;
    let alerts: Vec<_> = mails.iter().filter(|m| m.kind == "spend_limit_alert").collect();
    assert_eq!(alerts.len(), 2, "80% once, 100% once: {:?}", alerts.iter().map(|m| &m.subject).collect::<Vec<_>>());
    assert!(
        alerts.iter().any(|m| m.subject.starts_with("100%")) && alerts.iter().any(|m| m.subject.starts_with("80%"))
    );
    let listed_alerts = get(&api, &token, "/v1/wallet/spend-alerts").await?;
    let percents: Vec<&Value> =
        listed_alerts["data"].as_array().ok_or("alerts")?.iter().map(|a| &a["percent"]).collect();
    assert_eq!(percents, [&json!(100), &json!(80)], "newest first");
    assert_eq!(listed_alerts["data"][0]["cap"], "total");
    assert_eq!(listed_alerts["data"][0]["key_id"], created["id"]);
    // A call too large for a fresh key's limit is refused, and says nothing of a limit it never neared.
    let (fresh, _) = key_with(&api, &token, json!({ "total": 2 })).await?;
    refused_by(chat(&api, &fresh, 4000).await?, "total").await?;
    let after = get(&api, &token, "/v1/wallet/spend-alerts").await?;
    assert_eq!(after["data"].as_array().map(Vec::len), Some(2), "no alert for a limit 0% spent: {after}");

    // Raised, the limit admits the next call at once; lowered below what was spent, it refuses again.
    api.cerebras.set_mode(Mode::Normal);
    let raised = patch(&api, &token, &path, json!({ "spend_limits_paise": { "total": 10 } })).await?;
    assert_eq!(raised.status(), StatusCode::OK);
    assert_eq!(raised.json::<Value>().await?["spend_limits_paise"]["total"], 10);
    assert_eq!(chat(&api, &key, 2000).await?.status(), StatusCode::OK);
    patch(&api, &token, &path, json!({ "spend_limits_paise": { "total": 1 } })).await?.error_for_status()?;
    refused_by(chat(&api, &key, 2000).await?, "total").await?;
    // Lifted, the key is no longer counted.
    let lifted = patch(&api, &token, &path, json!({ "spend_limits_paise": null })).await?.json::<Value>().await?;
    assert_eq!(lifted["spend_paise"], json!({ "total": null, "daily": null, "monthly": null }));
    assert_eq!(chat(&api, &key, 2000).await?.status(), StatusCode::OK);

    for bad in [json!({ "daily": -1 }), json!({ "daily": 1.5 }), json!({ "weekly": 1 }), json!("10"), json!([1, 2, 3])]
    {
        let answer = patch(&api, &token, &path, json!({ "spend_limits_paise": bad })).await?;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{bad}");
        let error: Value = answer.json().await?;
        assert_eq!(error["error"]["code"], "invalid_spend_limits");
        assert_eq!(error["error"]["param"], "spend_limits_paise");
    }
    let created = api.http.post(api.url("/v1/keys")).bearer_auth(&token);
    let body = json!({ "name": "x", "spend_limits_paise": { "monthly": 10_000_000_001_i64 } });
    assert_eq!(created.json(&body).send().await?.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

async fn the_account_monthly_limit_covers_every_key(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("account@example.in").await?;
    api.fund(&token, 100).await?;
    let set = patch(&api, &token, "/v1/wallet", json!({ "monthly_spend_limit_paise": 2 })).await?;
    assert_eq!(set.status(), StatusCode::OK);
    let wallet: Value = set.json().await?;
    assert_eq!(
        (wallet["monthly_spend_limit_paise"].clone(), wallet["monthly_spend_paise"].clone()),
        (json!(2), json!(0))
    );
    let first = api.create_key(&token, "first").await?;
    let second = api.create_key(&token, "second").await?;

    api.cerebras.set_mode(Mode::Unreadable);
    assert_eq!(chat(&api, &first, 2000).await?.status(), StatusCode::BAD_GATEWAY);
    refused_by(chat(&api, &second, 2000).await?, "account_monthly").await?;
    let wallet = get(&api, &token, "/v1/wallet").await?;
    assert_eq!(wallet["monthly_spend_paise"], 1, "about 1.7 paise, in whole paise");

    api.cerebras.set_mode(Mode::Normal);
    let lifted = patch(&api, &token, "/v1/wallet", json!({ "monthly_spend_limit_paise": null })).await?;
    assert_eq!(lifted.json::<Value>().await?["monthly_spend_limit_paise"], Value::Null);
    assert_eq!(chat(&api, &second, 2000).await?.status(), StatusCode::OK);

    for bad in [
        json!({ "monthly_spend_limit_paise": -1 }),
        json!({ "monthly_spend_limit_paise": "5" }),
        json!({ "limit": 1 }),
        json!({}),
    ] {
        let answer = patch(&api, &token, "/v1/wallet", bad.clone()).await?;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let threshold = patch(&api, &token, "/v1/wallet", json!({ "low_balance_threshold_paise": 500 })).await?;
    assert_eq!(threshold.json::<Value>().await?["low_balance_threshold_paise"], 500, "the other setting stays");
    Ok(())
}

/// The fleet's shape: eight instances, each serving one call at a time with its own purse, share one key
/// with a daily limit; every call is charged its hold, 40 calls each. However the calls interleave, the key
/// is charged no more than its limit.
async fn eight_instances_share_one_keys_limit(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("fleet-limit@example.in").await?;
    api.fund(&token, 100).await?;
    let (key, _) = key_with(&api, &token, json!({ "daily": 20 })).await?;
    api.cerebras.set_mode(Mode::Unreadable);
    let providers = api.state.gateway()?.providers.clone();
    let mut instances = Vec::new();
    for _ in 0..8 {
        instances.push(Gateway::new(Catalog::builtin()?, providers.clone())?.one_call_at_a_time());
    }
    let context = &api.state.ports;
    let owner = instances[0].authenticate(context, Some(&key)).await?;
    let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "?"}], "max_tokens": 1000});
    let before = balance(&api, &token).await?;
    let outcomes = join_all(instances.iter().enumerate().map(|(i, gateway)| {
        let (owner, body) = (owner.clone(), body.clone());
        async move {
            let (mut admitted, mut refused) = (0, 0);
            for n in 0..40 {
                let id = format!("req_fleet_limit_{i}_{n}");
                let mut prepared = inference::prepare(gateway, Endpoint::ChatCompletions, body.clone(), id)?;
                match gateway.admit(context, &owner, &mut prepared).await {
                    Ok(_) => {
                        admitted += 1;
                        assert!(
                            inference::call(context, gateway, owner.clone(), prepared).await.is_err(),
                            "unreadable"
                        );
                    }
                    Err(e) if e.code() == "spend_limit_reached" => refused += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, shared::error::ApiError>((admitted, refused))
        }
    }))
    .await;
    let mut admitted = 0;
    for outcome in outcomes {
        admitted += outcome?.0;
    }
    // What the calls were charged is in their usage entries (the purses post it to the wallet in batches).
    let limit = 20 * UNITS_PER_PAISA;
    let entries = usage_costs(&api, &user).await?;
    let charged: i64 = entries.iter().sum();
    assert_eq!(entries.len(), admitted, "one usage entry per admitted call");
    assert!(charged <= limit, "charged {charged} against {limit}");
    let hold = charged / i64::try_from(admitted)?;
    assert_eq!(i64::try_from(admitted)?, limit / hold, "every hold that fits, and no more");
    assert!(before >= balance(&api, &token).await?);
    Ok(())
}

/// What each call of the account was charged, from its usage entries.
async fn usage_costs(api: &TestApi, user: &str) -> Res<Vec<i64>> {
    use shared::store::{Query, SortKeyRange, Table};
    let query =
        Query::new(Table::Main, format!("USER#{user}")).range(SortKeyRange::Prefix("USAGE#".into())).limit(1000);
    let page = api.state.store.query(query).await?;
    assert!(page.next.is_none(), "one page holds them");
    page.items.iter().map(|item| Ok(item.record::<shared::usage::UsageRecord>()?.cost)).collect()
}
