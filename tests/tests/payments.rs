//! Wallet and Razorpay end to end, on both stores, against the Razorpay stand-in (Razorpay's real JSON and
//! signatures): top-ups, exactly-once credits from webhook, Checkout verification and reconciliation in any
//! order and concurrently, failures, refunds, forged and mismatched payments, and the ledger invariant.

use std::sync::Arc;

use chrono::Duration;
use dev_server::razorpay_standin::SignedWebhook;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::clock::Clock;
use shared::money::UNITS_PER_RUPEE;
use shared::wallet::{self, TopupStore, WalletStore};

on_both_stores!(
    topups_are_gated_validated_and_never_payable_without_an_order,
    fifty_concurrent_copies_of_a_webhook_credit_once,
    captured_then_failed_and_failed_then_captured_both_end_credited,
    verify_webhook_and_reconciliation_credit_a_payment_once,
    forged_signatures_change_nothing,
    a_mismatched_amount_is_not_credited_but_recorded_for_review,
    refunds_are_debited_once,
    reconciliation_credits_silent_payments_and_expires_stale_orders,
    one_order_razorpay_cannot_answer_for_is_skipped_and_expires,
    a_dispute_holds_then_a_loss_debits_once,
    a_won_dispute_releases_what_it_held,
    dispute_events_in_any_order_and_concurrently_apply_once,
    refunds_and_disputes_before_their_credit_apply_when_it_lands,
    a_dispute_of_spent_money_blocks_new_calls,
    refunds_and_disputes_never_take_back_more_than_was_paid,
    a_payment_credited_before_the_refundable_count_is_refunded_once,
    checkout_verification_checks_signature_and_owner,
    transactions_are_newest_first_and_paginated,
);

/// What a customer billed in Karnataka (the supplier's state) pays for `credit_paise`: the credit and 18%
/// GST (CGST 9% + SGST 9%), exact for whole rupees. Refunds and disputes are of this money.
fn with_gst(credit_paise: i64) -> i64 {
    credit_paise * 118 / 100
}

async fn topup(
    api: &TestApi,
    token: &str,
    amount_paise: i64,
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    api.ensure_billing_profile(token).await?;
    let response = api
        .http
        .post(api.url("/v1/wallet/topups"))
        .bearer_auth(token)
        .json(&json!({ "amount_paise": amount_paise }))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    Ok(response.json().await?)
}

async fn send(api: &TestApi, webhook: &SignedWebhook) -> Result<(StatusCode, Value), reqwest::Error> {
    let response = api
        .http
        .post(api.url("/v1/webhooks/razorpay"))
        .header("content-type", "application/json")
        .header("x-razorpay-signature", &webhook.signature)
        .header("x-razorpay-event-id", &webhook.event_id)
        .body(webhook.body.clone())
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn wallet(api: &TestApi, token: &str) -> Result<Value, reqwest::Error> {
    api.http.get(api.url("/v1/wallet")).bearer_auth(token).send().await?.json().await
}

fn order_of(topup: &Value) -> String {
    topup["razorpay_order_id"].as_str().unwrap_or_default().to_owned()
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn topups_are_gated_validated_and_never_payable_without_an_order(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, unverified) = api.signed_in("nokyc@example.in").await?;
    let gated = api
        .http
        .post(api.url("/v1/wallet/topups"))
        .bearer_auth(&unverified)
        .json(&json!({"amount_paise": 50000}))
        .send()
        .await?;
    assert_eq!(gated.status(), StatusCode::FORBIDDEN);
    assert_eq!(gated.json::<Value>().await?["error"]["code"], "kyc_required");

    let (user, token) = api.verified_user("payer@example.in").await?;
    for amount in [9_999, 50_000_001, 0, -100] {
        let response = api
            .http
            .post(api.url("/v1/wallet/topups"))
            .bearer_auth(&token)
            .json(&json!({"amount_paise": amount}))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await?;
        assert_eq!(
            (body["error"]["code"].as_str(), body["error"]["param"].as_str()),
            (Some("amount_out_of_range"), Some("amount_paise"))
        );
    }
    let fractional = api
        .http
        .post(api.url("/v1/wallet/topups"))
        .bearer_auth(&token)
        .json(&json!({"amount_paise": 100.5}))
        .send()
        .await?;
    assert_eq!(fractional.status(), StatusCode::BAD_REQUEST, "money is integers only");

    // No billing profile: 409, and no order (the receipt voucher needs someone to be issued to).
    let no_profile =
        api.http.post(api.url("/v1/wallet/topups")).bearer_auth(&token).json(&json!({"amount_paise": 50000}));
    let no_profile = no_profile.send().await?;
    assert_eq!(no_profile.status(), StatusCode::CONFLICT);
    assert_eq!(no_profile.json::<Value>().await?["error"]["code"], "billing_profile_required");
    assert_eq!(api.razorpay.order_count(), 0, "no order without a profile");
    api.ensure_billing_profile(&token).await?;

    // Razorpay down: 502, and nothing that looks payable is left behind.
    api.razorpay.set_failing(true);
    let down = api
        .http
        .post(api.url("/v1/wallet/topups"))
        .bearer_auth(&token)
        .json(&json!({"amount_paise": 50000}))
        .send()
        .await?;
    assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(down.json::<Value>().await?["error"]["code"], "payment_gateway_error");
    assert!(!api.dump().await?.contains("TOPUP#"), "a failed order leaves no top-up");
    api.razorpay.set_failing(false);

    let created = topup(&api, &token, 50_000).await?;
    assert_eq!(created["status"], "created");
    assert_eq!(created["currency"], "INR");
    assert_eq!(created["amount_paise"], 50_000);
    assert_eq!(created["razorpay_key_id"], e2e::RAZORPAY_KEY_ID);
    let order = api.razorpay.order(&order_of(&created)).ok_or("the order exists at Razorpay")?;
    // ₹500 of credit, billed in Karnataka like the supplier: CGST 9% + SGST 9% on top.
    assert_eq!(
        created["tax"],
        json!({"taxable_paise": 50_000, "cgst_paise": 4_500, "sgst_paise": 4_500, "igst_paise": 0, "total_paise": 59_000})
    );
    assert_eq!(order.amount, 59_000, "the order is for the credit and its GST");
    assert_eq!(order.receipt.as_deref(), created["id"].as_str(), "receipt = our top-up id");
    assert_eq!(order.notes["user_id"], json!(user));
    assert_eq!(order.notes["topup_id"], created["id"]);
    let balance = wallet(&api, &token).await?;
    assert_eq!((balance["balance"].as_i64(), balance["balance_inr"].as_str()), (Some(0), Some("0.00")));
    Ok(())
}

async fn fifty_concurrent_copies_of_a_webhook_credit_once(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (user, token) = api.verified_user("fifty@example.in").await?;
    let order = order_of(&topup(&api, &token, 50_000).await?);
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
    // Razorpay redelivers the same event (same id) and also sends order.paid (another id) for the payment.
    let captured = api.razorpay.payment_webhook("payment.captured", &payment);
    let mut tasks = Vec::new();
    for n in 0..50 {
        let api = api.clone();
        let webhook = if n % 2 == 0 { captured.clone() } else { api.razorpay.payment_webhook("order.paid", &payment) };
        tasks.push(shared::tasks::spawn("test", async move { send(&api, &webhook).await.map(|(status, _)| status) }));
    }
    for task in tasks {
        assert_eq!(task.await??, StatusCode::OK);
    }
    let view = wallet(&api, &token).await?;
    assert_eq!(view["balance"], 500 * UNITS_PER_RUPEE);
    assert_eq!(view["balance_inr"], "500.00");
    assert_eq!(api.ledger_checked_balance(&user).await?, 500 * UNITS_PER_RUPEE);
    let (status, body) = send(&api, &captured).await?;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    Ok(())
}

async fn captured_then_failed_and_failed_then_captured_both_end_credited(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("order@example.in").await?;

    let first = topup(&api, &token, 20_000).await?;
    let paid = api.razorpay.pay(&order_of(&first), "captured", None).ok_or("order")?;
    let failed = api.razorpay.pay(&order_of(&first), "failed", None).ok_or("order")?;
    send(&api, &api.razorpay.payment_webhook("payment.captured", &paid)).await?;
    send(&api, &api.razorpay.payment_webhook("payment.failed", &failed)).await?;

    let second = topup(&api, &token, 30_000).await?;
    let failed = api.razorpay.pay(&order_of(&second), "failed", None).ok_or("order")?;
    send(&api, &api.razorpay.payment_webhook("payment.failed", &failed)).await?;
    let status = api.state.store.topup(second["id"].as_str().unwrap_or_default()).await?.map(|t| t.status);
    assert_eq!(status, Some(wallet::TopupStatus::Failed));
    let paid = api.razorpay.pay(&order_of(&second), "captured", None).ok_or("order")?;
    send(&api, &api.razorpay.payment_webhook("payment.captured", &paid)).await?;

    for created in [&first, &second] {
        let topup = api.state.store.topup(created["id"].as_str().unwrap_or_default()).await?.ok_or("top-up")?;
        assert_eq!(topup.status, wallet::TopupStatus::Paid, "{}", created["id"]);
    }
    assert_eq!(wallet(&api, &token).await?["balance"], 500 * UNITS_PER_RUPEE);
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn verify_webhook_and_reconciliation_credit_a_payment_once(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (user, token) = api.verified_user("thrice@example.in").await?;
    for round in 0..3 {
        let created = topup(&api, &token, 10_000).await?;
        let order = order_of(&created);
        let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
        let signature = api.razorpay.checkout_signature(&order, &payment.id);
        api.clock.advance(Duration::minutes(11));
        let verify = {
            let (api, token, id, payment_id) = (api.clone(), token.clone(), created["id"].clone(), payment.id.clone());
            shared::tasks::spawn("test", async move {
                api.http
                    .post(api.url(&format!("/v1/wallet/topups/{}/verify", id.as_str().unwrap_or_default())))
                    .bearer_auth(&token)
                    .json(&json!({ "razorpay_payment_id": payment_id, "razorpay_signature": signature }))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        };
        let webhook = {
            let api = api.clone();
            let webhook = api.razorpay.payment_webhook("payment.captured", &payment);
            shared::tasks::spawn("test", async move { send(&api, &webhook).await.map(|(s, _)| s) })
        };
        let reconcile = {
            let api = api.clone();
            shared::tasks::spawn("test", async move { jobs::run(&api.state).await.map(|r| r.reconciliation) })
        };
        assert_eq!(verify.await??, StatusCode::OK);
        assert_eq!(webhook.await??, StatusCode::OK);
        reconcile.await??;
        assert_eq!(wallet(&api, &token).await?["balance"], (round + 1) * 100 * UNITS_PER_RUPEE, "round {round}");
    }
    api.ledger_checked_balance(&user).await?;
    let (entries, _) = api.state.store.ledger(&user, 100, None).await?;
    assert_eq!(entries.len(), 3, "one ledger entry per payment");
    Ok(())
}

async fn forged_signatures_change_nothing(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("forged@example.in").await?;
    let order = order_of(&topup(&api, &token, 50_000).await?);
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
    let genuine = api.razorpay.payment_webhook("payment.captured", &payment);
    let before = api.dump().await?;

    let mut wrong = genuine.clone();
    wrong.signature = "0".repeat(64);
    let mut missing = genuine.clone();
    missing.signature = String::new();
    let mut tampered = genuine.clone();
    tampered.body = String::from_utf8_lossy(&genuine.body).replace("59000", "5900000").into_bytes();
    let mut reformatted = genuine.clone();
    reformatted.body.push(b'\n');
    for forged in [wrong, missing, tampered, reformatted] {
        let (status, body) = send(&api, &forged).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_signature")));
    }
    assert_eq!(api.dump().await?, before, "forged webhooks change nothing");
    assert_eq!(wallet(&api, &token).await?["balance"], 0);

    let (status, _) = send(&api, &genuine).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.ledger_checked_balance(&user).await?, 500 * UNITS_PER_RUPEE);

    // The verified payload is archived byte for byte, and its event record expires with the payments window.
    let dump = api.dump().await?;
    let event =
        dump.lines().find(|l| l.starts_with(&format!("RZPEVENT#{} ", genuine.event_id))).ok_or("event record")?;
    let archive_key =
        event.split("\"archive_key\":\"").nth(1).and_then(|rest| rest.split('"').next()).ok_or("archive key")?;
    assert_eq!(api.state.blobs()?.get(archive_key).await?, Some(genuine.body.clone()));
    let kept_until = wallet::payment_expiry(&api.state.config, api.clock.now());
    assert!(event.ends_with(&format!("Some({kept_until})")), "{event}");
    let unknown = api.razorpay.webhook("subscription.charged", json!({}));
    let (status, body) = send(&api, &unknown).await?;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ignored")));
    Ok(())
}

async fn a_mismatched_amount_is_not_credited_but_recorded_for_review(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("mismatch@example.in").await?;
    let order = order_of(&topup(&api, &token, 50_000).await?);
    let short = api.razorpay.pay(&order, "captured", Some(100)).ok_or("order")?;
    let (status, body) = send(&api, &api.razorpay.payment_webhook("payment.captured", &short)).await?;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("review")));
    assert_eq!(wallet(&api, &token).await?["balance"], 0);
    let dump = api.dump().await?;
    let reviews: Vec<&str> = dump.lines().filter(|l| l.starts_with("PAYMENTREVIEW ")).collect();
    assert_eq!(reviews.len(), 1, "{dump}");
    assert!(reviews[0].contains(&short.id) && reviews[0].contains("\"expected_amount_paise\":59000"));

    // A captured payment on an order that is not ours is also only recorded.
    let mut stranger = short.clone();
    stranger.order_id = Some("order_NotOurs0000001".into());
    stranger.amount = 59_000;
    let (status, body) = send(&api, &api.razorpay.payment_webhook("payment.captured", &stranger)).await?;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("review")));
    assert_eq!(api.ledger_checked_balance(&user).await?, 0);
    Ok(())
}

async fn refunds_are_debited_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("refund@example.in").await?;
    let order = order_of(&topup(&api, &token, 50_000).await?);
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
    send(&api, &api.razorpay.payment_webhook("payment.captured", &payment)).await?;
    api.clock.advance(Duration::seconds(1));
    let refund = api.razorpay.refund_webhook(&payment, with_gst(20_000));
    for _ in 0..3 {
        let (status, _) = send(&api, &refund).await?;
        assert_eq!(status, StatusCode::OK);
    }
    // The same refund delivered under another event id is still debited once.
    let mut redelivered = refund.clone();
    redelivered.event_id = "evt_Redelivered0001".into();
    send(&api, &redelivered).await?;
    assert_eq!(wallet(&api, &token).await?["balance"], 300 * UNITS_PER_RUPEE);
    let (entries, _) = api.state.store.ledger(&user, 10, None).await?;
    assert_eq!(entries.iter().map(|e| e.amount).collect::<Vec<_>>(), [-200 * UNITS_PER_RUPEE, 500 * UNITS_PER_RUPEE]);
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn reconciliation_credits_silent_payments_and_expires_stale_orders(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("silent@example.in").await?;
    let silent = topup(&api, &token, 40_000).await?;
    api.razorpay.pay(&order_of(&silent), "captured", None).ok_or("order")?; // no webhook ever arrives
    let abandoned = topup(&api, &token, 10_000).await?;

    let report = jobs::run(&api.state).await?.reconciliation;
    assert_eq!(report.examined, 0, "younger than 10 minutes: left to webhooks");
    api.clock.advance(Duration::minutes(10));
    let report = jobs::run(&api.state).await?.reconciliation;
    assert_eq!((report.examined, report.credited, report.expired), (2, 1, 0));
    assert_eq!(wallet(&api, &token).await?["balance"], 400 * UNITS_PER_RUPEE);

    api.clock.advance(Duration::hours(24));
    let report = jobs::run(&api.state).await?.reconciliation;
    assert_eq!((report.examined, report.credited, report.expired), (1, 0, 1));
    let status = api.state.store.topup(abandoned["id"].as_str().unwrap_or_default()).await?.map(|t| t.status);
    assert_eq!(status, Some(wallet::TopupStatus::Expired));
    assert_eq!(jobs::run(&api.state).await?.reconciliation.examined, 0, "nothing left open");

    // Money that arrives after expiry is still credited.
    let late = api.razorpay.pay(&order_of(&abandoned), "captured", None).ok_or("order")?;
    send(&api, &api.razorpay.payment_webhook("payment.captured", &late)).await?;
    assert_eq!(api.ledger_checked_balance(&user).await?, 500 * UNITS_PER_RUPEE);
    Ok(())
}

async fn checkout_verification_checks_signature_and_owner(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("checkout@example.in").await?;
    let (_, other) = api.verified_user("other@example.in").await?;
    let created = topup(&api, &token, 25_000).await?;
    let order = order_of(&created);
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
    let url = api.url(&format!("/v1/wallet/topups/{}/verify", created["id"].as_str().unwrap_or_default()));
    let signature = api.razorpay.checkout_signature(&order, &payment.id);

    let forged = api
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"razorpay_payment_id": payment.id, "razorpay_signature": "ab".repeat(32)}))
        .send()
        .await?;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let body: Value = forged.json().await?;
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["param"].as_str()),
        (Some("invalid_signature"), Some("razorpay_signature"))
    );
    let foreign = api
        .http
        .post(&url)
        .bearer_auth(&other)
        .json(&json!({"razorpay_payment_id": payment.id, "razorpay_signature": signature}))
        .send()
        .await?;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND, "another user's top-up does not exist for them");
    assert_eq!(wallet(&api, &token).await?["balance"], 0);

    let verified = api
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"razorpay_payment_id": payment.id, "razorpay_signature": signature}))
        .send()
        .await?;
    assert_eq!(verified.status(), StatusCode::OK);
    let body: Value = verified.json().await?;
    assert_eq!((body["status"].as_str(), body["payment_id"].as_str()), (Some("paid"), Some(payment.id.as_str())));
    assert_eq!(wallet(&api, &token).await?["balance_inr"], "250.00");
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn transactions_are_newest_first_and_paginated(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("ledger@example.in").await?;
    for amount in [10_000, 20_000, 30_000] {
        let order = order_of(&topup(&api, &token, amount).await?);
        let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
        send(&api, &api.razorpay.payment_webhook("payment.captured", &payment)).await?;
        api.clock.advance(Duration::seconds(1));
    }
    let first: Value =
        api.http.get(api.url("/v1/wallet/transactions?limit=2")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(first["object"], "list");
    assert_eq!(first["has_more"], true);
    let amounts: Vec<i64> =
        first["data"].as_array().into_iter().flatten().filter_map(|e| e["amount"].as_i64()).collect();
    assert_eq!(amounts, [300 * UNITS_PER_RUPEE, 200 * UNITS_PER_RUPEE]);
    assert_eq!(first["data"][0]["balance_after"], 600 * UNITS_PER_RUPEE);
    assert_eq!(first["data"][0]["kind"], "topup");
    let cursor = first["next_cursor"].as_str().unwrap_or_default();
    let rest: Value = api
        .http
        .get(api.url(&format!("/v1/wallet/transactions?limit=2&cursor={cursor}")))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let amounts: Vec<i64> =
        rest["data"].as_array().into_iter().flatten().filter_map(|e| e["amount"].as_i64()).collect();
    assert_eq!(amounts, [100 * UNITS_PER_RUPEE]);
    let bad =
        api.http.get(api.url("/v1/wallet/transactions?cursor=bm90LWEtY3Vyc29y")).bearer_auth(&token).send().await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await?["error"]["code"], "invalid_cursor");
    assert_eq!(api.ledger_checked_balance(&user).await?, 600 * UNITS_PER_RUPEE);
    Ok(())
}

/// An order Razorpay does not know (made under other keys) fails its check on every run: it is logged and
/// skipped, the others are reconciled, and after a week of that it expires instead of blocking the queue.
async fn one_order_razorpay_cannot_answer_for_is_skipped_and_expires(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("jobs@example.in").await?;
    let unknown = topup(&api, &token, 10_000).await?;
    api.razorpay.forget_order(&order_of(&unknown));
    api.clock.advance(Duration::seconds(1));
    let silent = topup(&api, &token, 40_000).await?;
    api.razorpay.pay(&order_of(&silent), "captured", None).ok_or("order")?;
    api.clock.advance(Duration::minutes(10));

    let report = jobs::run(&api.state).await?;
    let r = report.reconciliation;
    assert_eq!((r.examined, r.credited, r.errors, r.expired), (2, 1, 1, 0), "{r:?}");
    assert!(report.failed_jobs.is_empty());
    assert_eq!(api.ledger_checked_balance(&user).await?, 400 * UNITS_PER_RUPEE);

    // A day of errors is not enough to give up on it (it may be an outage while its webhook was lost)...
    api.clock.advance(Duration::hours(24));
    let r = jobs::run(&api.state).await?.reconciliation;
    assert_eq!((r.examined, r.errors, r.expired), (1, 1, 0), "{r:?}");
    // ...a week is.
    api.clock.advance(Duration::days(6));
    let r = jobs::run(&api.state).await?.reconciliation;
    assert_eq!((r.examined, r.errors, r.expired), (1, 1, 1), "{r:?}");
    let status = api.state.store.topup(unknown["id"].as_str().unwrap_or_default()).await?.map(|t| t.status);
    assert_eq!(status, Some(wallet::TopupStatus::Expired));
    assert_eq!(jobs::run(&api.state).await?.reconciliation.examined, 0, "nothing left open");
    Ok(())
}

/// A paid top-up of `rupees`, credited through the webhook; returns the user, token and payment.
async fn paid(
    api: &TestApi,
    email: &str,
    rupees: i64,
) -> Result<(String, String, shared::razorpay::Payment), Box<dyn std::error::Error + Send + Sync>> {
    let (user, token) = api.verified_user(email).await?;
    let order = order_of(&topup(api, &token, rupees * 100).await?);
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
    send(api, &api.razorpay.payment_webhook("payment.captured", &payment)).await?;
    api.clock.advance(Duration::seconds(1));
    Ok((user, token, payment))
}

async fn balances(api: &TestApi, user: &str) -> Result<(i64, i64, i64), Box<dyn std::error::Error + Send + Sync>> {
    let w = api.state.store.wallet(user).await?;
    api.ledger_checked_balance(user).await?;
    Ok((w.balance, w.held, w.available))
}

/// Top up by card, dispute it: the created dispute holds the amount, the lost dispute debits it once
/// (redeliveries and repeats under other event ids change nothing more).
async fn a_dispute_holds_then_a_loss_debits_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, payment) = paid(&api, "chargeback@example.in", 500).await?;
    let created =
        api.razorpay.dispute_webhook(&payment, "disp_Chargeback0001", "payment.dispute.created", with_gst(30_000));
    for _ in 0..2 {
        let (status, body) = send(&api, &created).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let rupee = UNITS_PER_RUPEE;
    assert_eq!(balances(&api, &user).await?, (500 * rupee, 300 * rupee, 200 * rupee));
    let lost = api.razorpay.dispute_webhook(&payment, "disp_Chargeback0001", "payment.dispute.lost", with_gst(30_000));
    send(&api, &lost).await?;
    let mut again = lost.clone();
    again.event_id = "evt_LostAgain00001".into();
    send(&api, &again).await?;
    assert_eq!(balances(&api, &user).await?, (200 * rupee, 0, 200 * rupee));
    let (entries, _) = api.state.store.ledger(&user, 10, None).await?;
    assert_eq!(entries.iter().map(|e| e.amount).collect::<Vec<_>>(), [-300 * rupee, 500 * rupee]);
    assert_eq!(entries[0].kind, wallet::LedgerKind::Dispute);
    // Winning afterwards changes nothing: lost is final.
    send(&api, &api.razorpay.dispute_webhook(&payment, "disp_Chargeback0001", "payment.dispute.won", with_gst(30_000)))
        .await?;
    assert_eq!(balances(&api, &user).await?, (200 * rupee, 0, 200 * rupee));
    Ok(())
}

async fn a_won_dispute_releases_what_it_held(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, payment) = paid(&api, "won@example.in", 200).await?;
    let rupee = UNITS_PER_RUPEE;
    send(
        &api,
        &api.razorpay.dispute_webhook(&payment, "disp_Won000000001", "payment.dispute.created", with_gst(20_000)),
    )
    .await?;
    assert_eq!(balances(&api, &user).await?, (200 * rupee, 200 * rupee, 0));
    // Review events move no money.
    send(
        &api,
        &api.razorpay.dispute_webhook(&payment, "disp_Won000000001", "payment.dispute.under_review", with_gst(20_000)),
    )
    .await?;
    assert_eq!(balances(&api, &user).await?, (200 * rupee, 200 * rupee, 0));
    send(&api, &api.razorpay.dispute_webhook(&payment, "disp_Won000000001", "payment.dispute.won", with_gst(20_000)))
        .await?;
    send(&api, &api.razorpay.dispute_webhook(&payment, "disp_Won000000001", "payment.dispute.lost", with_gst(20_000)))
        .await?;
    assert_eq!(balances(&api, &user).await?, (200 * rupee, 0, 200 * rupee), "won is final");
    // A dispute larger than the payment is not applied but recorded for review.
    let (status, body) = send(
        &api,
        &api.razorpay.dispute_webhook(&payment, "disp_TooLarge0001", "payment.dispute.lost", with_gst(20_000) + 1),
    )
    .await?;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("review")));
    assert_eq!(balances(&api, &user).await?, (200 * rupee, 0, 200 * rupee));
    Ok(())
}

/// Razorpay does not promise order: a loss before its creation debits once and the late creation holds
/// nothing; twenty concurrent deliveries of a mix of both apply once.
async fn dispute_events_in_any_order_and_concurrently_apply_once(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (user, _, payment) = paid(&api, "order@example.in", 400).await?;
    let rupee = UNITS_PER_RUPEE;
    send(&api, &api.razorpay.dispute_webhook(&payment, "disp_Late00000001", "payment.dispute.lost", with_gst(10_000)))
        .await?;
    send(
        &api,
        &api.razorpay.dispute_webhook(&payment, "disp_Late00000001", "payment.dispute.created", with_gst(10_000)),
    )
    .await?;
    assert_eq!(balances(&api, &user).await?, (300 * rupee, 0, 300 * rupee));

    let mut tasks = Vec::new();
    for n in 0..20 {
        let event = if n % 2 == 0 { "payment.dispute.created" } else { "payment.dispute.lost" };
        let webhook = api.razorpay.dispute_webhook(&payment, "disp_Racing000001", event, with_gst(5_000));
        let api = Arc::clone(&api);
        tasks.push(shared::tasks::spawn("test", async move { send(&api, &webhook).await.map(|(status, _)| status) }));
    }
    for task in tasks {
        assert_eq!(task.await??, StatusCode::OK);
    }
    assert_eq!(balances(&api, &user).await?, (250 * rupee, 0, 250 * rupee));
    Ok(())
}

/// A refund or a lost dispute that arrives before the payment's credit is kept, not lost, and applied when
/// the credit lands: nothing the customer got back stays spendable.
async fn refunds_and_disputes_before_their_credit_apply_when_it_lands(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("early@example.in").await?;
    let order = order_of(&topup(&api, &token, 60_000).await?);
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("order")?;
    let (status, body) = send(&api, &api.razorpay.refund_webhook(&payment, with_gst(10_000))).await?;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("deferred")));
    let lost = api.razorpay.dispute_webhook(&payment, "disp_Early0000001", "payment.dispute.lost", with_gst(20_000));
    assert_eq!(send(&api, &lost).await?.1["status"], json!("deferred"));
    assert_eq!(api.state.store.wallet(&user).await?.balance, 0, "nothing applies before the credit");

    send(&api, &api.razorpay.payment_webhook("payment.captured", &payment)).await?;
    let rupee = UNITS_PER_RUPEE;
    assert_eq!(balances(&api, &user).await?, (300 * rupee, 0, 300 * rupee));
    // Redeliveries of everything change nothing more, and nothing is left waiting.
    send(&api, &api.razorpay.payment_webhook("payment.captured", &payment)).await?;
    send(&api, &lost).await?;
    assert_eq!(balances(&api, &user).await?, (300 * rupee, 0, 300 * rupee));
    let dump = api.dump().await?;
    assert!(!dump.lines().any(|l| l.starts_with("RZPPAYMENT#") && l.contains(" PENDING#")), "{dump}");
    // The early refund's voucher too, written after the receipt voucher whose tax it reverses.
    let numbered = |prefix: &str| dump.lines().any(|l| l.starts_with(prefix) && l.contains("\"number\":"));
    assert!(numbered("TAXDOC#rv_") && numbered("TAXDOC#rf_"), "{dump}");
    assert!(
        !dump.lines().any(|l| l.starts_with("TAXDOCS#DUE") || l.starts_with("TAXDOCS#UNNUMBERED")),
        "nothing left due: {dump}"
    );
    Ok(())
}

/// Top up, spend it all, dispute: the hold takes the available balance below zero, so no new call starts.
async fn a_dispute_of_spent_money_blocks_new_calls(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token, payment) = paid(&api, "spender@example.in", 100).await?;
    let key = api.create_key(&token, "spender").await?;
    let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "hi" }] });
    let spent = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
    assert_eq!(spent.status(), StatusCode::OK);
    send(
        &api,
        &api.razorpay.dispute_webhook(&payment, "disp_Spent0000001", "payment.dispute.created", with_gst(10_000)),
    )
    .await?;
    let (balance, held, available) = balances(&api, &user).await?;
    assert!(
        balance < 100 * UNITS_PER_RUPEE && held == 100 * UNITS_PER_RUPEE && available < 0,
        "{balance} {held} {available}"
    );
    let refused = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
    assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED);
    Ok(())
}

/// A misbehaving provider (or two systems refunding one payment) cannot take back more than was paid: a
/// dispute holds at most what the payment still holds, and what would go over is recorded for review.
async fn refunds_and_disputes_never_take_back_more_than_was_paid(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, payment) = paid(&api, "overtaken@example.in", 500).await?;
    send(&api, &api.razorpay.refund_webhook(&payment, with_gst(40_000))).await?;
    let dispute = |event: &str| api.razorpay.dispute_webhook(&payment, "disp_OverTheTop01", event, with_gst(20_000));
    send(&api, &dispute("payment.dispute.created")).await?;
    // ₹400 of the ₹500 went back already: only the ₹100 the payment still holds is held for the ₹200 disputed.
    assert_eq!(balances(&api, &user).await?.1, 100 * UNITS_PER_RUPEE, "what is left of the payment, held while open");
    let (status, body) = send(&api, &dispute("payment.dispute.lost")).await?;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("review")));
    assert_eq!(balances(&api, &user).await?.1, 0, "nothing stays held while a human looks");
    let (status, body) = send(&api, &api.razorpay.refund_webhook(&payment, with_gst(10_000) + 1)).await?;
    assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("review")));
    send(&api, &api.razorpay.refund_webhook(&payment, with_gst(10_000))).await?;
    assert_eq!(balances(&api, &user).await?, (0, 0, 0), "exactly the ₹500 paid was taken back");
    let dump = api.dump().await?;
    assert_eq!(dump.lines().filter(|l| l.starts_with("PAYMENTREVIEW ")).count(), 3, "the partial hold too");
    Ok(())
}

/// A payment guard written before the refundable count existed (no `refundable_paise`) starts from the
/// whole payment: its refunds apply, once, and never beyond it.
async fn a_payment_credited_before_the_refundable_count_is_refunded_once(backend: Backend) -> TestResult {
    use shared::store::{Table, Update};
    let api = TestApi::start(backend).await?;
    let (user, _, payment) = paid(&api, "legacy@example.in", 300).await?;
    let legacy = Update::new(Table::Main, format!("RZPPAYMENT#{}", payment.id), "CREDIT").remove("refundable_paise");
    api.state.store.update(legacy).await?;
    send(&api, &api.razorpay.refund_webhook(&payment, with_gst(10_000))).await?;
    assert_eq!(balances(&api, &user).await?.0, 200 * UNITS_PER_RUPEE);
    let (_, body) = send(&api, &api.razorpay.refund_webhook(&payment, with_gst(20_000) + 1)).await?;
    assert_eq!(body["status"], json!("review"));
    send(&api, &api.razorpay.refund_webhook(&payment, with_gst(20_000))).await?;
    assert_eq!(balances(&api, &user).await?, (0, 0, 0));
    Ok(())
}
