//! Account security and notifications end to end, on both stores, read from the outbox as `make run`
//! delivers it (`.eml` files): signup → verification mail → verify; password reset → mail → reset → every old
//! session dead; a top-up → its receipt; spending below the threshold → one alert per crossing; a policy
//! version change → one notice per open account; marketing only with consent, and a one-click unsubscribe
//! that withdraws it. Links are single use, expire, and say nothing about who has an account.

use std::sync::Arc;

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::{Config, KycMode};
use shared::notifications::campaigns;
use shared::secrets::SecretString;

on_both_stores!(
    signup_sends_a_single_use_verification_link,
    resending_is_limited_and_an_expired_link_fails,
    a_password_reset_ends_every_session_and_says_nothing_about_who_exists,
    reset_requests_are_limited_per_address_and_per_ip,
    a_sign_in_from_a_new_device_or_network_is_told,
    every_credited_top_up_gets_a_receipt,
    the_low_balance_alert_goes_once_per_crossing,
    a_new_policy_version_notifies_every_open_account_once,
    marketing_goes_only_with_consent_and_one_click_unsubscribes,
    account_notices_follow_kyc_keys_and_closure,
    a_message_whose_sender_died_is_sent_once_by_the_redrive,
    an_address_change_voids_reset_links_sent_to_the_old_one,
    the_links_open_pages_on_the_api_origin,
);

const PASSWORD: &str = "correct horse battery";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn operator_config() -> Config {
    let operators = e2e::operators_secret(&[("asha.ops@inferexai.in", "operator-secret", &["admin"])]);
    Config { kyc_mode: KycMode::Auto, admin_token: Some(SecretString::new(operators)), ..Config::default() }
}

async fn account(api: &TestApi, token: &str) -> Res<Value> {
    Ok(api.http.get(api.url("/v1/account")).bearer_auth(token).send().await?.error_for_status()?.json().await?)
}

/// The messages of one kind sent to an address, newest first.
async fn of_kind(api: &TestApi, address: &str, kind: &str) -> Res<Vec<e2e::Mail>> {
    Ok(api.mail_to(address).await?.into_iter().filter(|m| m.kind == kind).collect())
}

async fn post(api: &TestApi, path: &str, body: Value) -> Res<reqwest::Response> {
    Ok(api.http.post(api.url(path)).json(&body).send().await?)
}

async fn signup_sends_a_single_use_verification_link(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.unverified("verify@example.in").await?;
    assert_eq!(account(&api, &token).await?["email_verified"], json!(false));

    let mail = api.last_mail("verify@example.in", "verify_email").await?;
    assert_eq!(mail.subject, "Confirm your e-mail address");
    let link = format!("{}/verify-email?token=", api.base);
    assert!(mail.text.contains(&link), "the link points at the dashboard: {}", mail.text);
    assert!(mail.html.contains(&link) && !mail.html.contains("<img"), "HTML too, and no tracking pixel");
    assert!(mail.text.contains("not marketing"), "account notices say they are not marketing");
    assert_eq!(mail.header("Auto-Submitted").as_deref(), Some("auto-generated"));
    let token_in_link = mail.link_token().ok_or("no token")?;
    // The token is stored hashed only.
    assert!(!api.dump().await?.contains(&token_in_link), "the link's token is not stored in clear");

    // Bad input: missing, wrongly typed, extra fields, an unknown token.
    expect_error(
        post(&api, "/v1/auth/verify-email", json!({})).await?,
        StatusCode::BAD_REQUEST,
        "missing_field",
        Some("token"),
    )
    .await?;
    let typed = post(&api, "/v1/auth/verify-email", json!({ "token": 42 })).await?;
    assert_eq!(typed.status(), StatusCode::BAD_REQUEST);
    let extra = post(&api, "/v1/auth/verify-email", json!({ "token": token_in_link, "email": "x@y.in" })).await?;
    assert_eq!(extra.status(), StatusCode::BAD_REQUEST);
    let forged = post(&api, "/v1/auth/verify-email", json!({ "token": "not-a-real-token" })).await?;
    expect_error(forged, StatusCode::BAD_REQUEST, "invalid_token", Some("token")).await?;

    let verified: Value = post(&api, "/v1/auth/verify-email", json!({ "token": token_in_link }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(verified["email_verified"], json!(true));
    assert_eq!(account(&api, &token).await?["email_verified"], json!(true));
    // Single use.
    let again = post(&api, "/v1/auth/verify-email", json!({ "token": token_in_link })).await?;
    expect_error(again, StatusCode::BAD_REQUEST, "invalid_token", Some("token")).await?;
    // Nothing left to verify.
    let resend = api.http.post(api.url("/v1/auth/verify-email/resend")).bearer_auth(&token).send().await?;
    expect_error(resend, StatusCode::CONFLICT, "email_already_verified", None).await?;
    Ok(())
}

async fn resending_is_limited_and_an_expired_link_fails(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.unverified("slow@example.in").await?;
    let first = api.last_mail("slow@example.in", "verify_email").await?.link_token().ok_or("no link")?;
    let resend = || api.http.post(api.url("/v1/auth/verify-email/resend")).bearer_auth(&token).send();
    for _ in 0..shared::verification::RESENDS_PER_HOUR {
        let answer = resend().await?;
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }
    let limited = resend().await?;
    assert!(limited.headers().contains_key("retry-after"));
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "too_many_requests", None).await?;
    assert_eq!(api.mail_to("slow@example.in").await?.len(), 1 + shared::verification::RESENDS_PER_HOUR as usize);

    // A day later every link has expired; an hour after the limit, a new one can be asked for and works.
    api.clock.advance(Duration::hours(25));
    let expired = post(&api, "/v1/auth/verify-email", json!({ "token": first })).await?;
    expect_error(expired, StatusCode::BAD_REQUEST, "invalid_token", Some("token")).await?;
    assert_eq!(resend().await?.status(), StatusCode::ACCEPTED);
    api.verify_email("slow@example.in").await?;
    assert_eq!(account(&api, &token).await?["email_verified"], json!(true));
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn a_password_reset_ends_every_session_and_says_nothing_about_who_exists(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, laptop) = api.signed_in("forgot@example.in").await?;
    let phone: Value = api.login("forgot@example.in", PASSWORD).await?.error_for_status()?.json().await?;
    let phone = phone["token"].as_str().ok_or("no token")?.to_owned();

    let known = post(&api, "/v1/auth/password-reset", json!({ "email": " Forgot@Example.in " })).await?;
    let unknown = post(&api, "/v1/auth/password-reset", json!({ "email": "nobody@example.in" })).await?;
    assert_eq!((known.status(), unknown.status()), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(known.json::<Value>().await?, unknown.json::<Value>().await?, "the same answer either way");
    assert!(api.mail_to("nobody@example.in").await?.is_empty());
    expect_error(
        post(&api, "/v1/auth/password-reset", json!({ "email": "not an address" })).await?,
        StatusCode::BAD_REQUEST,
        "invalid_email",
        Some("email"),
    )
    .await?;

    let mail = api.last_mail("forgot@example.in", "password_reset").await?;
    assert!(mail.text.contains(&format!("{}/reset-password?token=", api.base)), "{}", mail.text);
    let reset_token = mail.link_token().ok_or("no link")?;
    let confirm = |token: &str, password: &str| {
        api.http
            .post(api.url("/v1/auth/password-reset/confirm"))
            .json(&json!({ "token": token, "password": password }))
            .send()
    };
    // A weak password is refused and the link stays usable.
    expect_error(confirm(&reset_token, "short").await?, StatusCode::BAD_REQUEST, "weak_password", Some("password"))
        .await?;
    let done: Value = confirm(&reset_token, "a brand new passphrase").await?.error_for_status()?.json().await?;
    assert_eq!(done, json!({ "password_reset": true, "sessions_ended": 2 }));
    for token in [&laptop, &phone] {
        let status = api.http.get(api.url("/v1/account")).bearer_auth(token).send().await?.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "every old session is dead");
    }
    assert_eq!(api.login("forgot@example.in", PASSWORD).await?.status(), StatusCode::UNAUTHORIZED);
    let fresh: Value =
        api.login("forgot@example.in", "a brand new passphrase").await?.error_for_status()?.json().await?;
    // The reset proved the mailbox: the address counts as verified.
    assert_eq!(account(&api, fresh["token"].as_str().ok_or("no token")?).await?["email_verified"], json!(true));
    api.last_mail("forgot@example.in", "password_changed").await?;
    // Single use.
    expect_error(
        confirm(&reset_token, "yet another passphrase").await?,
        StatusCode::BAD_REQUEST,
        "invalid_token",
        Some("token"),
    )
    .await?;

    // A link expires after 30 minutes, and any password change voids the links issued before it.
    post(&api, "/v1/auth/password-reset", json!({ "email": "forgot@example.in" })).await?.error_for_status()?;
    let late = api.last_mail("forgot@example.in", "password_reset").await?.link_token().ok_or("no link")?;
    api.clock.advance(Duration::minutes(31));
    expect_error(
        confirm(&late, "too late a passphrase").await?,
        StatusCode::BAD_REQUEST,
        "invalid_token",
        Some("token"),
    )
    .await?;
    post(&api, "/v1/auth/password-reset", json!({ "email": "forgot@example.in" })).await?.error_for_status()?;
    let voided = api.last_mail("forgot@example.in", "password_reset").await?.link_token().ok_or("no link")?;
    let token = fresh["token"].as_str().ok_or("no token")?;
    let change = json!({ "current_password": "a brand new passphrase", "new_password": "changed meanwhile!" });
    api.http.post(api.url("/v1/account/password")).bearer_auth(token).json(&change).send().await?.error_for_status()?;
    expect_error(
        confirm(&voided, "stale link passphrase").await?,
        StatusCode::BAD_REQUEST,
        "invalid_token",
        Some("token"),
    )
    .await?;
    Ok(())
}

async fn reset_requests_are_limited_per_address_and_per_ip(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    api.signed_in("target@example.in").await?;
    for _ in 0..shared::verification::RESETS_PER_ADDRESS_PER_HOUR {
        assert_eq!(
            post(&api, "/v1/auth/password-reset", json!({ "email": "target@example.in" })).await?.status(),
            StatusCode::ACCEPTED
        );
    }
    let limited = post(&api, "/v1/auth/password-reset", json!({ "email": "target@example.in" })).await?;
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "too_many_requests", None).await?;
    // The same limit for an address nobody has: the limit says nothing about who exists.
    for _ in 0..shared::verification::RESETS_PER_ADDRESS_PER_HOUR {
        post(&api, "/v1/auth/password-reset", json!({ "email": "ghost@example.in" })).await?.error_for_status()?;
    }
    let ghost = post(&api, "/v1/auth/password-reset", json!({ "email": "ghost@example.in" })).await?;
    expect_error(ghost, StatusCode::TOO_MANY_REQUESTS, "too_many_requests", None).await?;
    assert_eq!(api.mail_to("target@example.in").await?.iter().filter(|m| m.kind == "password_reset").count(), 3);

    // One client spraying many addresses is stopped by the per-IP limit: the 8 requests above count, the two
    // refused per address too.
    let per_ip = shared::verification::RESETS_PER_IP_PER_HOUR as usize;
    let mut accepted = 8;
    let mut refused = None;
    for n in 0..per_ip {
        let answer = post(&api, "/v1/auth/password-reset", json!({ "email": format!("spray{n}@example.in") })).await?;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(n);
            break;
        }
        accepted += 1;
    }
    assert_eq!((accepted, refused.is_some()), (per_ip, true));
    // The window ends after an hour.
    api.clock.advance(Duration::minutes(61));
    assert_eq!(
        post(&api, "/v1/auth/password-reset", json!({ "email": "target@example.in" })).await?.status(),
        StatusCode::ACCEPTED
    );
    Ok(())
}

async fn login_as(api: &TestApi, email: &str, device: &str, ip: &str) -> Res<StatusCode> {
    let login = api
        .http
        .post(api.url("/v1/auth/login"))
        .header("user-agent", device)
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": PASSWORD }));
    Ok(login.send().await?.status())
}

async fn a_sign_in_from_a_new_device_or_network_is_told(backend: Backend) -> TestResult {
    let config = Config { trust_forwarded_for: true, ..Config::default() };
    let api = TestApi::start_with(backend, config).await?;
    api.signup("roamer@example.in", PASSWORD).await?.error_for_status()?;
    assert_eq!(login_as(&api, "roamer@example.in", "Laptop/1.0", "203.0.113.7").await?, StatusCode::OK);
    assert!(
        of_kind(&api, "roamer@example.in", "new_sign_in").await?.is_empty(),
        "the first sign-in has nothing to compare with"
    );
    assert_eq!(login_as(&api, "roamer@example.in", "Laptop/1.0", "203.0.113.7").await?, StatusCode::OK);
    assert!(of_kind(&api, "roamer@example.in", "new_sign_in").await?.is_empty(), "a known device on a known network");
    assert_eq!(login_as(&api, "roamer@example.in", "Phone/2.0", "203.0.113.7").await?, StatusCode::OK);
    assert_eq!(of_kind(&api, "roamer@example.in", "new_sign_in").await?.len(), 1, "a new device");
    assert_eq!(login_as(&api, "roamer@example.in", "Laptop/1.0", "198.51.100.9").await?, StatusCode::OK);
    let all = of_kind(&api, "roamer@example.in", "new_sign_in").await?;
    assert_eq!(all.len(), 2, "a new network");
    assert!(all[0].text.contains("198.51.100.9") && all[0].text.contains("Laptop/1.0"), "{}", all[0].text);
    // A failed attempt from a new place proves nothing and says nothing.
    let wrong = api.http.post(api.url("/v1/auth/login")).header("x-forwarded-for", "192.0.2.1");
    let wrong = wrong.json(&json!({ "email": "roamer@example.in", "password": "wrong password!" })).send().await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(of_kind(&api, "roamer@example.in", "new_sign_in").await?.len(), 2);
    Ok(())
}

async fn every_credited_top_up_gets_a_receipt(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("payer@example.in").await?;
    let order = api.open_topup(&token, 50_000).await?;
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("unknown order")?;
    let webhook = api.razorpay.payment_webhook("payment.captured", &payment);
    api.razorpay.deliver(&webhook).await.ok_or("delivery")?;
    // Razorpay retries the webhook: still one credit, one receipt.
    api.razorpay.deliver(&webhook).await.ok_or("delivery")?;
    let receipts: Vec<_> =
        api.mail_to("payer@example.in").await?.into_iter().filter(|m| m.kind == "payment_receipt").collect();
    assert_eq!(receipts.len(), 1);
    let receipt = &receipts[0];
    // ₹500 of credit billed in Karnataka: ₹590 paid, with the GST on it and where its receipt voucher is.
    assert_eq!(receipt.subject, "Payment received: ₹590.00");
    let payment_id = payment.id.as_str();
    let facts =
        ["Amount paid: ₹590.00", "Credited to your wallet: ₹500.00", "GST on the credit: ₹90.00", "Tax documents"];
    for fact in
        facts.iter().copied().chain([format!("Payment id: {payment_id}").as_str(), "IST", "Balance after: ₹500.00"])
    {
        assert!(receipt.text.contains(fact), "{fact} missing from {}", receipt.text);
    }
    // An unpaid top-up sends nothing.
    api.open_topup(&token, 20_000).await?;
    assert_eq!(api.mail_to("payer@example.in").await?.iter().filter(|m| m.kind == "payment_receipt").count(), 1);
    Ok(())
}

async fn balance_units(api: &TestApi, token: &str) -> Res<i64> {
    let wallet: Value = api.http.get(api.url("/v1/wallet")).bearer_auth(token).send().await?.json().await?;
    wallet["balance"].as_i64().ok_or_else(|| format!("no balance in {wallet}").into())
}

async fn expensive_call(api: &TestApi, key: &str) -> Res<()> {
    let body =
        json!({ "model": "llama-3.3-70b", "messages": [{ "role": "user", "content": "write" }], "max_tokens": 1000 });
    api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await?.error_for_status()?;
    Ok(())
}

/// Sets the threshold at the balance (rounded down to a paisa), so the next call crosses it.
async fn threshold_at_balance(api: &TestApi, token: &str) -> Res<i64> {
    let paise = balance_units(api, token).await? / shared::money::UNITS_PER_PAISA;
    let set =
        api.http.patch(api.url("/v1/wallet")).bearer_auth(token).json(&json!({ "low_balance_threshold_paise": paise }));
    let wallet: Value = set.send().await?.error_for_status()?.json().await?;
    assert_eq!(wallet["low_balance_threshold_paise"], json!(paise));
    Ok(paise)
}

async fn the_low_balance_alert_goes_once_per_crossing(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    api.cerebras.set_answer(dev_server::upstream_standin::Answer::UntilCap);
    let (user, token) = api.verified_user("spender@example.in").await?;
    // The default threshold is ₹100; odd values are refused with the field named.
    let wallet: Value = api.http.get(api.url("/v1/wallet")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(wallet["low_balance_threshold_paise"], json!(10_000));
    for bad in [
        json!({ "low_balance_threshold_paise": -1 }),
        json!({ "low_balance_threshold_paise": "100" }),
        json!({ "low_balance_threshold_paise": 1.5 }),
        json!({ "low_balance_threshold_paise": null }),
    ] {
        let answer = api.http.patch(api.url("/v1/wallet")).bearer_auth(&token).json(&bad).send().await?;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    api.fund(&token, 200).await?;
    let key = api.create_key(&token, "spender").await?;

    let threshold = threshold_at_balance(&api, &token).await?;
    expensive_call(&api, &key).await?;
    assert!(balance_units(&api, &token).await? < threshold * shared::money::UNITS_PER_PAISA, "the call crossed it");
    assert_eq!(of_kind(&api, "spender@example.in", "low_balance").await?.len(), 1);
    // Below the threshold already: more spending, in parallel too, sends nothing more.
    let calls = (0..4).map(|_| expensive_call(&api, &key));
    for call in futures_util::future::join_all(calls).await {
        call?;
    }
    assert_eq!(of_kind(&api, "spender@example.in", "low_balance").await?.len(), 1);
    let alert = api.last_mail("spender@example.in", "low_balance").await?;
    assert!(
        alert.text.contains(&format!(
            "threshold of ₹{}",
            shared::money::format_inr(threshold * shared::money::UNITS_PER_PAISA)
        )),
        "{}",
        alert.text
    );

    // A top-up takes the balance back above it; the next crossing is told again.
    api.fund(&token, 100).await?;
    threshold_at_balance(&api, &token).await?;
    expensive_call(&api, &key).await?;
    assert_eq!(of_kind(&api, "spender@example.in", "low_balance").await?.len(), 2);
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn a_new_policy_version_notifies_every_open_account_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    for email in ["one@example.in", "two@example.in", "gone@example.in"] {
        api.signed_in(email).await?;
    }
    let login: Value = api.login("gone@example.in", PASSWORD).await?.json().await?;
    let leaving = login["token"].as_str().ok_or("no token")?.to_owned();
    let close = api.http.delete(api.url("/v1/account")).bearer_auth(&leaving).json(&json!({ "password": PASSWORD }));
    close.send().await?.error_for_status()?;

    // The configured version moves on (a deploy with INFEREX_POLICY_VERSION changed); the jobs run.
    let mut state = api.state.clone();
    state.ports.config = Arc::new(Config {
        policy_version: "2027-01-15".into(),
        policy_effective_date: "15 January 2027".into(),
        ..(*api.state.config).clone()
    });
    let report = jobs::run(&state).await?;
    assert_eq!((report.policy_notices.queued, report.policy_notices.complete), (2, true));
    // A rerun sends nothing more.
    let again = campaigns::announce_policy(&state.ports, api.clock_now(), std::time::Duration::from_secs(5)).await?;
    assert_eq!(again.queued, 0);
    for email in ["one@example.in", "two@example.in"] {
        let notices: Vec<_> = api.mail_to(email).await?.into_iter().filter(|m| m.kind == "policy_update").collect();
        assert_eq!(notices.len(), 1, "{email}");
        assert!(notices[0].text.contains("version 2027-01-15, in effect from 15 January 2027"), "{}", notices[0].text);
    }
    assert!(
        api.mail_to("gone@example.in").await?.iter().all(|m| m.kind != "policy_update"),
        "closed accounts are not told"
    );
    Ok(())
}

async fn campaign(api: &TestApi, id: &str) -> Res<Value> {
    let body = json!({ "id": id, "subject": "New models this week", "body": "Qwen 3 is live." });
    let session = api.operator_session("operator-secret").await?;
    let answer = api.http.post(api.url("/v1/admin/campaigns")).bearer_auth(session).json(&body).send().await?;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    Ok(answer.json().await?)
}

async fn marketing_goes_only_with_consent_and_one_click_unsubscribes(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, operator_config()).await?;
    let (_, fan) = api.signed_in("fan@example.in").await?;
    api.signed_in("quiet@example.in").await?;
    let (_, fickle) = api.signed_in("fickle@example.in").await?;
    for token in [&fan, &fickle] {
        let opt_in =
            api.http.patch(api.url("/v1/account")).bearer_auth(token).json(&json!({ "marketing_consent": true }));
        opt_in.send().await?.error_for_status()?;
    }
    // Only operators send campaigns; a bad one is refused naming the field.
    let anonymous =
        api.http.post(api.url("/v1/admin/campaigns")).json(&json!({ "id": "x", "subject": "s", "body": "b" }));
    assert_eq!(anonymous.send().await?.status(), StatusCode::UNAUTHORIZED);
    let bad = api
        .http
        .post(api.url("/v1/admin/campaigns"))
        .bearer_auth(api.operator_session("operator-secret").await?)
        .json(&json!({ "id": "a b", "subject": "s", "body": "b" }));
    expect_error(bad.send().await?, StatusCode::BAD_REQUEST, "invalid_campaign", Some("id")).await?;

    assert_eq!(campaign(&api, "news-1").await?["queued"], json!(2));
    // Consent withdrawn after the campaign was queued: checked again at delivery, nothing goes.
    let opt_out =
        api.http.patch(api.url("/v1/account")).bearer_auth(&fickle).json(&json!({ "marketing_consent": false }));
    opt_out.send().await?.error_for_status()?;
    assert_eq!(campaign(&api, "news-1").await?["queued"], json!(0), "the same campaign reaches nobody twice");
    let news = api.last_mail("fan@example.in", "product_news").await?;
    assert!(api.mail_to("quiet@example.in").await?.iter().all(|m| m.kind != "product_news"));
    assert!(api.mail_to("fickle@example.in").await?.iter().all(|m| m.kind != "product_news"));

    // RFC 8058 one-click unsubscribe.
    assert_eq!(news.header("List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    let target = news.header("List-Unsubscribe").ok_or("no List-Unsubscribe")?;
    let url = target.trim_start_matches('<').trim_end_matches('>').to_owned();
    assert!(url.starts_with(&format!("{}/v1/unsubscribe?token=", api.base)), "{url}");
    assert!(news.text.contains(&url), "the footer links it too");
    // Opening the link shows a button and changes nothing (link scanners must not unsubscribe anyone).
    let page = api.http.get(&url).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await?.contains("<form method=\"post\""));
    assert_eq!(account(&api, &fan).await?["marketing_consent"], json!(true));
    let click = api
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await?;
    assert_eq!(click.status(), StatusCode::OK);
    assert_eq!(account(&api, &fan).await?["marketing_consent"], json!(false));
    assert!(api.dump().await?.contains("\"context\":\"unsubscribe_link\""), "the withdrawal is recorded");
    // Twice is fine; a forged link is refused in our error shape.
    assert_eq!(api.http.post(&url).send().await?.status(), StatusCode::OK);
    let forged = api.http.post(api.url("/v1/unsubscribe?token=forged")).send().await?;
    expect_error(forged, StatusCode::BAD_REQUEST, "invalid_token", Some("token")).await?;

    campaign(&api, "news-2").await?;
    assert_eq!(api.mail_to("fan@example.in").await?.iter().filter(|m| m.kind == "product_news").count(), 1);
    Ok(())
}

async fn account_notices_follow_kyc_keys_and_closure(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("notices@example.in").await?;
    api.last_mail("notices@example.in", "kyc_approved").await?;
    api.create_key(&token, "ci runner").await?;
    let created = api.last_mail("notices@example.in", "api_key_created").await?;
    assert!(created.text.contains("\"ci runner\""), "{}", created.text);
    // Billing notices: a partial refund, then a dispute opened and lost on the same payment.
    let order = api.open_topup(&token, 20_000).await?;
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("unknown order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
    api.razorpay.deliver(&api.razorpay.refund_webhook(&payment, 5_000)).await.ok_or("delivery")?;
    let refund = api.last_mail("notices@example.in", "refund_notice").await?;
    assert_eq!(refund.subject, "Refund of ₹50.00");
    assert!(refund.text.contains(&payment.id), "{}", refund.text);
    for event in ["payment.dispute.created", "payment.dispute.lost"] {
        let webhook = api.razorpay.dispute_webhook(&payment, "disp_notices1", event, 10_000);
        api.razorpay.deliver(&webhook).await.ok_or("delivery")?;
    }
    let disputes = of_kind(&api, "notices@example.in", "dispute_notice").await?;
    assert_eq!(disputes.len(), 2, "one notice per step of the dispute");
    // (Both steps happen at the same instant of the test's clock: no order between the two messages.)
    assert!(disputes.iter().any(|m| m.text.contains("is open: the disputed amount is held")));
    assert!(disputes.iter().any(|m| m.text.contains("decided for you: the amount was taken back from your wallet")));
    // A password change is told too.
    let change = json!({ "current_password": PASSWORD, "new_password": "another long passphrase" });
    api.http
        .post(api.url("/v1/account/password"))
        .bearer_auth(&token)
        .json(&change)
        .send()
        .await?
        .error_for_status()?;
    let changed = api.last_mail("notices@example.in", "password_changed").await?;
    assert!(changed.text.contains("from a signed-in session"), "{}", changed.text);

    let close = api.http.delete(api.url("/v1/account")).bearer_auth(&token);
    close.json(&json!({ "password": "another long passphrase" })).send().await?.error_for_status()?;
    let closed = api.last_mail("notices@example.in", "account_closed").await?;
    assert!(
        closed.text.contains("account until") && closed.text.contains("IST"),
        "what is kept, until when: {}",
        closed.text
    );
    // The mailbox lists what went out, on loopback.
    let listed: Value = api.http.get(api.url("/_mail")).send().await?.json().await?;
    let rows = listed["data"].as_array().ok_or("no list")?;
    assert!(rows.iter().any(|r| r["kind"] == "account_closed" && r["to"] == "notices@example.in"), "{listed}");
    let file = rows[0]["file"].as_str().ok_or("no file")?;
    let raw = api.http.get(api.url(&format!("/_mail/{file}"))).send().await?;
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    assert_eq!(api.http.get(api.url("/_mail/..%2Fetc%2Fpasswd")).send().await?.status(), StatusCode::NOT_FOUND);
    Ok(())
}

async fn a_message_whose_sender_died_is_sent_once_by_the_redrive(backend: Backend) -> TestResult {
    use shared::store::{Condition, Item, Put, Query, Table, schema};
    let api = TestApi::start(backend).await?;
    api.signup("stuck@example.in", PASSWORD).await?.error_for_status()?;
    let store = api.state.store.as_ref();
    let waiting = store.query(Query::new(Table::Main, schema::OUTBOX_PK)).await?.items;
    let message_id = waiting.first().and_then(|i| i.attrs["id"].as_str()).ok_or("nothing queued")?.to_owned();
    // A sender claimed it and died before sending (a Lambda timeout): its claim is left behind.
    let claim = json!({ "status": "sending", "claim": "dead", "at": api.clock_now(), "kind": "verify_email" });
    let expires = (api.clock_now() + Duration::days(30)).timestamp();
    let put = Put {
        table: Table::Main,
        item: Item::from_record(schema::mail_sent_pk(&message_id), "SENT", &claim, Some(expires))?,
        condition: Condition::NotExists,
    };
    store.put(put).await?;
    assert!(api.mail_to("stuck@example.in").await?.is_empty(), "a live claim is left to its sender");

    // The jobs hand messages waiting over 10 minutes back to the mailer; the dead claim is taken over.
    api.clock.advance(Duration::minutes(11));
    let report = jobs::run(&api.state).await?;
    assert_eq!((report.mail_redriven, report.failed_jobs.contains(&"mail_redrive")), (1, false));
    assert_eq!(of_kind(&api, "stuck@example.in", "verify_email").await?.len(), 1);
    assert_eq!(jobs::run(&api.state).await?.mail_redriven, 0, "nothing is left to redrive");
    assert_eq!(of_kind(&api, "stuck@example.in", "verify_email").await?.len(), 1, "sent once");
    Ok(())
}

async fn an_address_change_voids_reset_links_sent_to_the_old_one(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("old-box@example.in").await?;
    post(&api, "/v1/auth/password-reset", json!({ "email": "old-box@example.in" })).await?.error_for_status()?;
    let stale = api.last_mail("old-box@example.in", "password_reset").await?.link_token().ok_or("no link")?;
    // The owner moves off the old mailbox (say it was compromised).
    let change = json!({ "email": "new-box@example.in", "current_password": PASSWORD });
    api.http.patch(api.url("/v1/account")).bearer_auth(&token).json(&change).send().await?.error_for_status()?;
    let link = api.last_mail("new-box@example.in", "confirm_email_change").await?.link_token().ok_or("no link")?;
    let confirm = api.http.post(api.url("/v1/auth/verify-email")).bearer_auth(&token).json(&json!({ "token": link }));
    confirm.send().await?.error_for_status()?;
    let reset = json!({ "token": stale, "password": "taken over passphrase" });
    let answer = api.http.post(api.url("/v1/auth/password-reset/confirm")).json(&reset).send().await?;
    expect_error(answer, StatusCode::BAD_REQUEST, "invalid_token", Some("token")).await?;
    assert_eq!(api.login("new-box@example.in", PASSWORD).await?.status(), StatusCode::OK);

    // Address changes mail an address of the caller's choosing: limited like resends (3 an hour).
    let fresh: Value = api.login("new-box@example.in", PASSWORD).await?.json().await?;
    let fresh = fresh["token"].as_str().ok_or("no token")?.to_owned();
    let change_to = |n: u32| {
        let body = json!({ "email": format!("elsewhere{n}@example.in"), "current_password": PASSWORD });
        api.http.patch(api.url("/v1/account")).bearer_auth(&fresh).json(&body).send()
    };
    for n in 0..2 {
        assert_eq!(change_to(n).await?.status(), StatusCode::OK);
    }
    expect_error(change_to(2).await?, StatusCode::TOO_MANY_REQUESTS, "too_many_requests", None).await?;
    Ok(())
}

async fn the_links_open_pages_on_the_api_origin(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    api.unverified("pages@example.in").await?;
    let mail = api.last_mail("pages@example.in", "verify_email").await?;
    let link = mail.text.split_whitespace().find(|w| w.contains("/verify-email?token=")).ok_or("no link")?.to_owned();
    let page = api.http.get(&link).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str()?.to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer", "the token in the URL goes nowhere");
    let html = page.text().await?;
    assert!(html.contains("\"assets/account-links.js\"") && !html.contains("<script>"), "no inline script");
    let script = api.http.get(api.url("/assets/account-links.js")).send().await?.text().await?;
    // Relative addresses: under a stage prefix (/prod) the pages still reach the API.
    assert!(script.contains("\"v1/auth/verify-email\"") && script.contains("\"v1/auth/password-reset/confirm\""));
    let reset = api.http.get(api.url("/reset-password?token=x")).send().await?;
    assert_eq!(reset.status(), StatusCode::OK);
    assert!(reset.text().await?.contains("autocomplete=\"new-password\""));

    // The local mailbox answers loopback names only: a page elsewhere cannot read it through DNS rebinding.
    let rebound = api.http.get(api.url("/_mail")).header("host", "attacker.example:80").send().await?;
    assert_eq!(rebound.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.http.get(api.url("/_mail")).send().await?.status(), StatusCode::OK);
    Ok(())
}
