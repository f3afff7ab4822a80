//! Data rights and retention end to end, on both stores: the public notice, corrections, policy acceptance,
//! exports (complete, the owner's only), account closure (everything stops at once, exactly the retained
//! items stay, with their expiry), and every item class carrying the expiry its retention rule gives.

use std::collections::HashSet;

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::clock::Clock;
use shared::config::{Config, KycMode};
use shared::retention::{ItemClass, Rule, Span};
use shared::secrets::SecretString;
use shared::store::Item;
use shared::store::{Table, Update};

on_both_stores!(
    the_privacy_notice_is_public,
    corrections_are_validated_applied_and_recorded,
    a_newer_policy_is_pending_until_accepted,
    an_export_holds_every_data_class_and_only_its_owner_can_fetch_it,
    closure_stops_everything_at_once_and_keeps_exactly_what_retention_requires,
    every_item_carries_the_expiry_of_its_retention_rule,
    expired_items_are_invisible_to_every_read,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery";

async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str, param: Option<&str>) -> TestResult {
    let actual = response.status();
    let body: Value = response.json().await?;
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    if let Some(param) = param {
        assert_eq!(body["error"]["param"], json!(param), "{body}");
    }
    Ok(())
}

/// A verified user with ₹100, an API key and one billed chat call: (user id, session token, API key).
async fn active_customer(api: &TestApi, email: &str) -> Res<(String, String, String)> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, 100).await?;
    let key = api.create_key(&token, "laptop").await?;
    chat(api, &key).await?.error_for_status()?;
    Ok((user, token, key))
}

async fn chat(api: &TestApi, key: &str) -> Result<reqwest::Response, reqwest::Error> {
    let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 16 });
    api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await
}

async fn patch_account(api: &TestApi, token: &str, body: Value) -> Result<reqwest::Response, reqwest::Error> {
    api.http.patch(api.url("/v1/account")).bearer_auth(token).json(&body).send().await
}

/// Requests an export and waits for its build (a task of the server here, the exports function in AWS).
async fn requested_export(api: &TestApi, token: &str) -> Res<(Value, Value)> {
    requested_export_with(api, token, None).await
}

/// As [`requested_export`], with a body (`{"password"}` has the PAN in full).
async fn requested_export_with(api: &TestApi, token: &str, body: Option<Value>) -> Res<(Value, Value)> {
    let request = api.http.post(api.url("/v1/privacy/exports")).bearer_auth(token);
    let created = match body {
        Some(body) => request.json(&body).send().await?,
        None => request.send().await?,
    };
    assert_eq!(created.status(), StatusCode::ACCEPTED);
    let created: Value = created.json().await?;
    assert_eq!(created["status"], json!("pending"), "built outside the request: {created}");
    let path = format!("/v1/privacy/exports/{}", created["id"].as_str().ok_or("no id")?);
    for () in e2e::polls() {
        let view = get_json(api, token, &path).await?;
        if view["status"] != json!("pending") {
            assert_eq!(view["status"], json!("ready"), "{view}");
            return Ok((created, view));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(format!("export {path} still pending after a minute").into())
}

async fn get_json(api: &TestApi, token: &str, path: &str) -> Res<Value> {
    Ok(api.http.get(api.url(path)).bearer_auth(token).send().await?.error_for_status()?.json().await?)
}

async fn stored_items(api: &TestApi) -> Res<Vec<Item>> {
    Ok(match api.raw_store() {
        e2e::RawStore::Embedded(s) => s.dump().await?,
        e2e::RawStore::DynamoDb(s) => s.dump().await?,
    })
}

async fn the_privacy_notice_is_public(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let notice: Value = api.http.get(api.url("/v1/privacy")).send().await?.error_for_status()?.json().await?;
    assert_eq!(notice["policy_version"], json!(shared::config::DEFAULT_POLICY_VERSION));
    assert_eq!(notice["response_days"], json!(30));
    // The published policy's addresses, on its domain.
    assert_eq!(notice["grievance_officer"]["email"], json!("grievance@inferexai.in"));
    assert_eq!(notice["contacts"], json!({ "privacy": "privacy@inferexai.in", "security": "security@inferexai.in" }));
    let kept = |data: &str| {
        notice["retention"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["data"] == data))
            .map(|r| r["kept"].clone())
    };
    assert_eq!(kept("usage_logs"), Some(json!("12 months")));
    assert_eq!(
        kept("payments"),
        Some(json!("8 financial years after the financial year (April to March) they belong to"))
    );
    assert_eq!(kept("kyc"), Some(json!("5 years after account closure")));
    assert_eq!(kept("login_records"), Some(json!("180 days")));
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn corrections_are_validated_applied_and_recorded(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.signed_in("asha@example.in").await?;
    api.signed_in("taken@example.in").await?;

    let renamed: Value =
        patch_account(&api, &token, json!({ "full_name": "  Asha R. Rao " })).await?.error_for_status()?.json().await?;
    assert_eq!(renamed["full_name"], json!("Asha R. Rao"));
    let opted_in: Value =
        patch_account(&api, &token, json!({ "marketing_consent": true })).await?.error_for_status()?.json().await?;
    assert_eq!(opted_in["marketing_consent"], json!(true));

    expect_error(
        patch_account(&api, &token, json!({ "pan": "ABCPE1234F" })).await?,
        StatusCode::BAD_REQUEST,
        "kyc_field",
        Some("pan"),
    )
    .await?;
    expect_error(
        patch_account(&api, &token, json!({ "date_of_birth": "2001-01-01" })).await?,
        StatusCode::BAD_REQUEST,
        "not_editable",
        Some("date_of_birth"),
    )
    .await?;
    expect_error(
        patch_account(&api, &token, json!({ "nickname": "A" })).await?,
        StatusCode::BAD_REQUEST,
        "unknown_field",
        Some("nickname"),
    )
    .await?;
    expect_error(
        patch_account(&api, &token, json!({ "full_name": "" })).await?,
        StatusCode::BAD_REQUEST,
        "invalid_full_name",
        Some("full_name"),
    )
    .await?;
    expect_error(patch_account(&api, &token, json!({})).await?, StatusCode::BAD_REQUEST, "nothing_to_change", None)
        .await?;
    expect_error(
        patch_account(&api, &token, json!({ "email": "new@example.in" })).await?,
        StatusCode::BAD_REQUEST,
        "missing_field",
        Some("current_password"),
    )
    .await?;
    expect_error(
        patch_account(&api, &token, json!({ "email": "new@example.in", "current_password": "wrong password!" }))
            .await?,
        StatusCode::FORBIDDEN,
        "incorrect_password",
        None,
    )
    .await?;
    expect_error(
        patch_account(&api, &token, json!({ "email": "Taken@Example.in", "current_password": PASSWORD })).await?,
        StatusCode::CONFLICT,
        "email_taken",
        Some("email"),
    )
    .await?;
    let moved: Value = patch_account(&api, &token, json!({ "email": " New@Example.IN", "current_password": PASSWORD }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    // Nothing moves until the new address proves itself: the account keeps its address meanwhile.
    assert_eq!(
        (moved["email"].clone(), moved["pending_email"].clone()),
        (json!("asha@example.in"), json!("new@example.in"))
    );
    assert_eq!(api.login("asha@example.in", PASSWORD).await?.status(), StatusCode::OK);
    let confirm = api.last_mail("new@example.in", "confirm_email_change").await?;
    let link = json!({ "token": confirm.link_token().ok_or("no link")? });
    // Whoever got the link (a mistyped address's owner) cannot move the account without its session.
    let anonymous = api.http.post(api.url("/v1/auth/verify-email")).json(&link).send().await?;
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "session_required", None).await?;
    // Nor by making the account's browser send its cookie from another page: without the session's CSRF
    // token the cookie counts for nothing here either.
    let by_cookie = api
        .http
        .post(api.url("/v1/auth/verify-email"))
        .header("cookie", format!("inferex_session={token}"))
        .json(&link)
        .send()
        .await?;
    expect_error(by_cookie, StatusCode::UNAUTHORIZED, "session_required", None).await?;
    let confirmed: Value = api
        .http
        .post(api.url("/v1/auth/verify-email"))
        .header("cookie", format!("inferex_session={token}"))
        .header("x-csrf-token", shared::auth::csrf_token(&token))
        .json(&link)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        (confirmed["email"].clone(), confirmed["email_verified"].clone()),
        (json!("new@example.in"), json!(true))
    );
    assert!(confirmed.get("pending_email").is_none(), "{confirmed}");
    // Both addresses are told of the change.
    for address in ["asha@example.in", "new@example.in"] {
        let told = api.last_mail(address, "email_changed").await?;
        assert!(told.text.contains("from asha@example.in to new@example.in"), "{}", told.text);
    }
    assert_eq!(api.login("asha@example.in", PASSWORD).await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.login("new@example.in", PASSWORD).await?.status(), StatusCode::OK);
    // The old email is free again; the login history stayed with the account.
    assert_eq!(api.signup("asha@example.in", PASSWORD).await?.status(), StatusCode::CREATED);
    let logins = get_json(&api, &token, "/v1/account/logins").await?;
    assert!(logins.as_array().map(Vec::len).unwrap_or(0) >= 2, "{logins}");

    let requests = get_json(&api, &token, "/v1/privacy/requests").await?;
    let data = requests["data"].as_array().ok_or("no list")?;
    assert_eq!(data.len(), 3, "three corrections took effect: {requests}");
    for request in data {
        assert_eq!((request["kind"].as_str(), request["status"].as_str()), (Some("correction"), Some("completed")));
        let received = chrono::DateTime::parse_from_rfc3339(request["received_at"].as_str().unwrap_or_default())?;
        let due = chrono::DateTime::parse_from_rfc3339(request["due_at"].as_str().unwrap_or_default())?;
        assert_eq!(due - received, Duration::days(30));
    }
    let outcomes: HashSet<&str> = data.iter().filter_map(|r| r["outcome"].as_str()).collect();
    let email = "corrected: email (pending confirmation of the new address)";
    assert_eq!(outcomes, HashSet::from(["corrected: full_name", "corrected: marketing_consent", email]));
    // Corrections made before the address moved went to the old one.
    let mut told = api.mail_to("asha@example.in").await?;
    told.extend(api.mail_to("new@example.in").await?);
    told.retain(|m| m.kind == "privacy_request_completed");
    assert!(
        told.iter().any(|m| m.text.contains("correction request") && m.text.contains("corrected: full_name")),
        "each correction is confirmed by e-mail"
    );
    let dump = api.dump().await?;
    assert!(dump.contains("\"context\":\"marketing_update\""), "the consent change is evidenced");
    assert!(dump.lines().any(|l| l.starts_with(&format!("USER#{user} PROFILE ")) && l.contains("new@example.in")));
    Ok(())
}

async fn a_newer_policy_is_pending_until_accepted(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.signed_in("policy@example.in").await?;
    assert_eq!(get_json(&api, &token, "/v1/account").await?["policy_update_pending"], json!(false));
    // The account accepted an older policy than the one now in force.
    let older =
        Update::new(Table::Main, format!("USER#{user}"), "PROFILE").set("accepted_policy_version", json!("2025-01-01"));
    api.state.store.update(older).await?;
    let account = get_json(&api, &token, "/v1/account").await?;
    assert_eq!(
        (account["policy_update_pending"].clone(), account["accepted_policy_version"].clone()),
        (json!(true), json!("2025-01-01"))
    );

    let accept = |version: &str| {
        api.http
            .post(api.url("/v1/account/accept-policy"))
            .bearer_auth(&token)
            .json(&json!({ "version": version }))
            .send()
    };
    expect_error(accept("2025-01-01").await?, StatusCode::BAD_REQUEST, "terms_not_accepted", Some("version")).await?;
    let accepted: Value = accept(shared::config::DEFAULT_POLICY_VERSION).await?.error_for_status()?.json().await?;
    assert_eq!(accepted["policy_update_pending"], json!(false));
    assert_eq!(get_json(&api, &token, "/v1/account").await?["policy_update_pending"], json!(false));
    let dump = api.dump().await?;
    assert!(dump.contains("\"context\":\"policy_update\""), "the acceptance is recorded as a consent");
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn an_export_holds_every_data_class_and_only_its_owner_can_fetch_it(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token, key) = active_customer(&api, "owner@example.in").await?;
    let (other, other_token, _) = active_customer(&api, "other@example.in").await?;

    // A session alone gets the PAN masked; the full number needs the password again.
    let (_, masked) = requested_export(&api, &token).await?;
    let masked: Value = api.http.get(masked["download_url"].as_str().ok_or("no link")?).send().await?.json().await?;
    let shown = masked["kyc"]["pan"].as_str().unwrap_or_default();
    assert!(shown.contains('X') && masked["kyc"]["pan_in_full"] == json!(false), "{}", masked["kyc"]);
    let wrong =
        api.http.post(api.url("/v1/privacy/exports")).bearer_auth(&token).json(&json!({ "password": "not it at all" }));
    expect_error(wrong.send().await?, StatusCode::FORBIDDEN, "incorrect_password", None).await?;
    let (created, view) = requested_export_with(&api, &token, Some(json!({ "password": PASSWORD }))).await?;
    let id = created["id"].as_str().ok_or("no id")?.to_owned();
    // Its link needs the password again: a session alone (a stolen cookie) never gets the full PAN.
    assert!(view["download_url"].is_null() && view["download_needs_password"] == json!(true), "{view}");
    let download = format!("/v1/privacy/exports/{id}/download");
    let wrong = api.http.post(api.url(&download)).bearer_auth(&token).json(&json!({ "password": "not it at all" }));
    expect_error(wrong.send().await?, StatusCode::FORBIDDEN, "incorrect_password", None).await?;
    let view: Value = api
        .http
        .post(api.url(&download))
        .bearer_auth(&token)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let link = view["download_url"].as_str().ok_or("no link")?;
    let expires = chrono::DateTime::parse_from_rfc3339(view["expires_at"].as_str().unwrap_or_default())?;
    assert_eq!(expires.timestamp() - api.clock.now_epoch(), 15 * 60, "links last 15 minutes");

    let export: Value = api.http.get(link).send().await?.error_for_status()?.json().await?;
    assert_eq!(export["user_id"], json!(user));
    assert_eq!(export["account"]["email"], json!("owner@example.in"));
    for section in ["consents", "login_history", "api_keys", "topups", "ledger", "usage", "privacy_requests"] {
        assert!(export[section].as_array().is_some_and(|a| !a.is_empty()), "{section} is missing: {export}");
    }
    let pan = export["kyc"]["pan"].as_str().ok_or("no PAN")?;
    assert!(pan.len() == 10 && !pan.contains('X'), "the PAN in full to its owner: {pan}");
    assert!(export["kyc"]["aadhaar_masked"].as_str().is_some_and(|a| a.starts_with("XXXX XXXX ")));
    assert!(export["wallet"]["balance"].as_i64().is_some_and(|b| b > 0));
    assert!(export["spend_alerts"].is_array() && export["api_keys"][0]["spend_paise"].is_object());
    assert_eq!(export["topups"][0]["status"], json!("paid"));
    assert!(export["usage"][0]["cost_inr"].is_string(), "usage as the API shows it: {}", export["usage"]);
    let text = export.to_string();
    assert!(!text.contains(&other) && !text.contains("other@example.in"), "nothing of another user");
    assert!(!text.contains(&key) && !text.contains("password_hash"), "no secrets");

    // Somebody else's session cannot see it, nor can no session.
    expect_error(
        api.http.get(api.url(&format!("/v1/privacy/exports/{id}"))).bearer_auth(&other_token).send().await?,
        StatusCode::NOT_FOUND,
        "export_not_found",
        None,
    )
    .await?;
    assert_eq!(
        api.http.get(api.url(&format!("/v1/privacy/exports/{id}"))).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let requests = get_json(&api, &token, "/v1/privacy/requests").await?;
    assert_eq!(requests["data"][0]["kind"], json!("access"));
    assert_eq!(requests["data"][0]["status"], json!("completed"));
    Ok(())
}

/// A spend window's expiry: its day or month in IST ends, and the grace passes.
fn spend_window_expiry(sk: &str, now: chrono::DateTime<chrono::Utc>) -> i64 {
    let period =
        if sk.starts_with("DAY#") { shared::spend::Period::day(now) } else { shared::spend::Period::month(now) };
    period.ends_at.map_or(i64::MAX, |end| (end + shared::retention::SPEND_WINDOW_GRACE).timestamp())
}

fn manual() -> Config {
    let operators = e2e::operators_secret(&[("ravi@inferex.ai", "operator-secret", &["kyc_reviewer"])]);
    Config { kyc_mode: KycMode::Manual, admin_token: Some(SecretString::new(operators)), ..Config::default() }
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn closure_stops_everything_at_once_and_keeps_exactly_what_retention_requires(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token, key) = active_customer(&api, "leaving@example.in").await?;
    let (_, view) = requested_export(&api, &token).await?;
    let link = view["download_url"].as_str().ok_or("no link")?.to_owned();
    assert_eq!(api.http.get(&link).send().await?.status(), StatusCode::OK);
    let close = |body: Value| api.http.delete(api.url("/v1/account")).bearer_auth(&token).json(&body).send();
    expect_error(close(json!({})).await?, StatusCode::BAD_REQUEST, "missing_field", Some("password")).await?;
    expect_error(
        close(json!({ "password": "not my password" })).await?,
        StatusCode::FORBIDDEN,
        "incorrect_password",
        None,
    )
    .await?;
    let closed = close(json!({ "password": PASSWORD })).await?;
    assert_eq!(closed.status(), StatusCode::ACCEPTED);
    let closed: Value = closed.json().await?;
    assert_eq!(closed["status"], json!("closed"));
    assert!(closed["refund_requested"].as_i64().is_some_and(|r| r > 0), "{closed}");

    // At once: the session, the password and the key (still in the gateway's cache) stop working.
    expect_error(
        api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?,
        StatusCode::UNAUTHORIZED,
        "invalid_session",
        None,
    )
    .await?;
    expect_error(
        api.login("leaving@example.in", PASSWORD).await?,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    )
    .await?;
    expect_error(chat(&api, &key).await?, StatusCode::UNAUTHORIZED, "invalid_api_key", None).await?;
    // The export (it holds the PAN in full) is erased with the account, even through a link still in date.
    assert_ne!(api.http.get(&link).send().await?.status(), StatusCode::OK);

    let now = api.clock.now();
    let retention = &api.state.config.retention;
    let mine: Vec<Item> = stored_items(&api)
        .await?
        .into_iter()
        .filter(|i| {
            i.pk == format!("USER#{user}") || i.attrs.get("user_id") == Some(&json!(user)) || i.pk.starts_with("VAULT#")
        })
        .collect();
    for item in &mine {
        let class = ItemClass::of(&item.pk, &item.sk).ok_or_else(|| format!("unclassified {} {}", item.pk, item.sk))?;
        match class.rule() {
            Rule::FromClosure(span) => assert_eq!(item.expires_at, Some(retention.until(span, now)), "{class:?}"),
            Rule::FromWrite(_) => assert!(item.expires_at.is_some(), "{class:?} keeps its own window"),
            Rule::ErasedAtClosure | Rule::Session | Rule::KeyExpiry => {
                return Err(format!("{class:?} survived the closure: {} {}", item.pk, item.sk).into());
            }
            Rule::LoginThrottle | Rule::SubmissionWindow | Rule::Lifetime(_) | Rule::RateWindow | Rule::SpendWindow => {
            }
        }
    }
    let classes: HashSet<ItemClass> = mine.iter().filter_map(|i| ItemClass::of(&i.pk, &i.sk)).collect();
    for kept in [
        ItemClass::Account,
        ItemClass::Consent,
        ItemClass::KycRecord,
        ItemClass::KycVault,
        ItemClass::Wallet,
        ItemClass::LedgerEntry,
        ItemClass::UsageLog,
        ItemClass::PrivacyRequest,
        ItemClass::RefundRequest,
    ] {
        assert!(classes.contains(&kept), "{kept:?} must be retained");
    }
    let profile = mine.iter().find(|i| i.sk == "PROFILE").ok_or("profile")?;
    assert!(!profile.attrs.contains_key("password_hash"), "the password hash is erased");
    assert_eq!(profile.attrs["status"], json!("closed"));
    assert_eq!(profile.expires_at, Some(retention.until(Span::Account, now)));

    // The email can register again, and the same person can pass KYC again on the new account.
    assert_eq!(api.signup("leaving@example.in", PASSWORD).await?.status(), StatusCode::CREATED);
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn every_item_carries_the_expiry_of_its_retention_rule(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (user, token) = api.signed_in("classes@example.in").await?;
    assert_eq!(api.login("nobody@example.in", "whatever password").await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.login("classes@example.in", "wrong password!").await?.status(), StatusCode::UNAUTHORIZED);
    api.submit_kyc(&token, "CLSPE1231C").await?.error_for_status()?;
    api.share_from_digilocker(&token, true).await?;
    api.http
        .post(api.url(&format!("/v1/admin/kyc/{user}/decision")))
        .bearer_auth(api.operator_session("operator-secret").await?)
        .json(&json!({ "decision": "approve" }))
        .send()
        .await?
        .error_for_status()?;
    // Payments: a paid top-up and a partial refund of it, an unpaid top-up, a short payment held for review.
    let paid = api.open_topup(&token, 10_000).await?;
    let payment = api.razorpay.pay(&paid, "captured", None).ok_or("order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
    api.razorpay.deliver(&api.razorpay.refund_webhook(&payment, 1_000)).await.ok_or("delivery")?;
    let unpaid = api.open_topup(&token, 20_000).await?;
    let short = api.razorpay.pay(&unpaid, "captured", Some(100)).ok_or("order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &short)).await.ok_or("delivery")?;
    chat(&api, &api.create_key(&token, "k").await?).await?.error_for_status()?;
    // Spend limits: the account's monthly limit and a key's daily one, each counted by a call.
    let limit = json!({ "monthly_spend_limit_paise": 1_000 });
    api.http.patch(api.url("/v1/wallet")).bearer_auth(&token).json(&limit).send().await?.error_for_status()?;
    let budgeted = json!({ "name": "budgeted", "spend_limits_paise": { "daily": 1_000 } });
    let created: Value = api
        .http
        .post(api.url("/v1/keys"))
        .bearer_auth(&token)
        .json(&budgeted)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    chat(&api, created["key"].as_str().ok_or("key")?).await?.error_for_status()?;
    requested_export(&api, &token).await?;
    patch_account(&api, &token, json!({ "full_name": "Classes" })).await?.error_for_status()?;
    let billing = json!({ "billing_name": "Classes", "address": "1 MG Road", "state_code": "29", "pin": "560001" });
    let put = api.http.put(api.url("/v1/account/billing-profile")).bearer_auth(&token).json(&billing);
    put.send().await?.error_for_status()?;

    let config = &api.state.config;
    let now = api.clock.now();
    let mut seen = HashSet::new();
    for item in stored_items(&api).await? {
        let class = ItemClass::of(&item.pk, &item.sk)
            .ok_or_else(|| format!("no retention class for {} {}", item.pk, item.sk))?;
        seen.insert(class);
        let expected = match class.rule() {
            Rule::FromWrite(span) => Some(config.retention.until(span, now)),
            Rule::FromClosure(_) | Rule::ErasedAtClosure | Rule::KeyExpiry => None,
            Rule::Session => Some((now + config.session_ttl).timestamp()),
            Rule::LoginThrottle => Some((now + config.login_window).timestamp()),
            Rule::SubmissionWindow => Some((now + Duration::days(shared::kyc::SUBMISSION_WINDOW_DAYS)).timestamp()),
            Rule::Lifetime(lifetime) => Some((now + lifetime).timestamp()),
            Rule::RateWindow => Some((now + Duration::hours(1)).timestamp()),
            Rule::SpendWindow => Some(spend_window_expiry(&item.sk, now)),
        };
        assert_eq!(item.expires_at, expected, "{class:?}: {} {}", item.pk, item.sk);
    }
    let written = [
        ItemClass::Account,
        ItemClass::Consent,
        ItemClass::EmailClaim,
        ItemClass::Session,
        ItemClass::SessionIndex,
        ItemClass::LoginRecord,
        ItemClass::LoginFailure,
        ItemClass::KycRecord,
        ItemClass::KycDecision,
        ItemClass::KycClaim,
        ItemClass::KycVault,
        ItemClass::Wallet,
        ItemClass::WalletRegistry,
        ItemClass::LedgerEntry,
        ItemClass::Topup,
        ItemClass::TopupIndex,
        ItemClass::RazorpayOrder,
        ItemClass::PaymentCredit,
        ItemClass::WebhookEvent,
        ItemClass::ApiKey,
        ItemClass::ApiKeySlot,
        ItemClass::UsageLog,
        ItemClass::PrivacyRequest,
        ItemClass::DataExport,
        ItemClass::OpenTopup,
        ItemClass::RefundDebit,
        ItemClass::PaymentReview,
        ItemClass::AccountRegistry,
        ItemClass::Outbox,
        ItemClass::MailDelivery,
        ItemClass::SpendLimit,
        ItemClass::SpendWindow,
        ItemClass::KeySpendTotal,
        ItemClass::KycConsent,
        ItemClass::BillingProfile,
    ];
    for class in written {
        assert!(seen.contains(&class), "the flows wrote no {class:?}");
    }

    // Closure: what retention keeps now runs from the closure, and what it does not need is gone.
    let close = api.http.delete(api.url("/v1/account")).bearer_auth(&token).json(&json!({ "password": PASSWORD }));
    close.send().await?.error_for_status()?;
    let mut kept = HashSet::new();
    for item in stored_items(&api).await? {
        let class = ItemClass::of(&item.pk, &item.sk)
            .ok_or_else(|| format!("no retention class for {} {}", item.pk, item.sk))?;
        kept.insert(class);
        let expected = match class.rule() {
            Rule::FromWrite(span) | Rule::FromClosure(span) => Some(config.retention.until(span, now)),
            Rule::LoginThrottle => Some((now + config.login_window).timestamp()),
            Rule::SubmissionWindow => Some((now + Duration::days(shared::kyc::SUBMISSION_WINDOW_DAYS)).timestamp()),
            Rule::Lifetime(lifetime) => Some((now + lifetime).timestamp()),
            Rule::RateWindow => Some((now + Duration::hours(1)).timestamp()),
            Rule::SpendWindow => Some(spend_window_expiry(&item.sk, now)),
            Rule::ErasedAtClosure | Rule::Session | Rule::KeyExpiry => {
                return Err(format!("{class:?} survived the closure: {} {}", item.pk, item.sk).into());
            }
        };
        assert_eq!(item.expires_at, expected, "after closure, {class:?}: {} {}", item.pk, item.sk);
    }
    assert!(kept.contains(&ItemClass::RefundRequest), "the unspent balance awaits its refund");
    assert!(kept.contains(&ItemClass::Account) && kept.contains(&ItemClass::KycDecision));
    Ok(())
}

async fn expired_items_are_invisible_to_every_read(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token, _) = active_customer(&api, "aging@example.in").await?;
    // Every read of usage below covers the whole year and a day since the call.
    let since = format!("from={}", (api.clock_now() - Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ"));
    let usage = get_json(&api, &token, &format!("/v1/usage?{since}")).await?;
    assert_eq!(usage["data"].as_array().map(Vec::len), Some(1));
    assert!(!get_json(&api, &token, "/v1/account/logins").await?.as_array().is_some_and(Vec::is_empty));

    // 181 days on: the old session and login records are gone; a fresh login shows only itself.
    api.clock.advance(Duration::days(181));
    assert_eq!(
        api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let login: Value = api.login("aging@example.in", PASSWORD).await?.json().await?;
    let token = login["token"].as_str().ok_or("token")?.to_owned();
    let logins = get_json(&api, &token, "/v1/account/logins").await?;
    assert_eq!(logins.as_array().map(Vec::len), Some(1), "only today's login: {logins}");
    // A year and a day after the call, its usage log is gone from every read.
    api.clock.advance(Duration::days(185));
    let login: Value = api.login("aging@example.in", PASSWORD).await?.json().await?;
    let token = login["token"].as_str().ok_or("token")?.to_owned();
    let usage = get_json(&api, &token, &format!("/v1/usage?{since}")).await?;
    assert_eq!(usage["data"].as_array().map(Vec::len), Some(0), "{usage}");
    let summary = get_json(&api, &token, &format!("/v1/usage/summary?{since}&group_by=model")).await?;
    assert_eq!(summary["data"].as_array().map(Vec::len), Some(0), "{summary}");
    if let e2e::RawStore::Embedded(store) = api.raw_store() {
        assert!(store.purge_expired().await? > 0);
        let dump = api.dump().await?;
        assert!(!dump.contains(" USAGE#"), "the embedded store purged the expired usage log");
    }
    Ok(())
}
