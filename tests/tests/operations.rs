//! The operators' money work end to end, on both stores: closed accounts' refund requests (listed, paid out
//! only for exactly the amount owed), payments recorded for review and disputes (listed, handled once), each
//! action recorded under the name of the operator whose token was used.

use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::Config;
use shared::secrets::SecretString;

on_both_stores!(
    refund_requests_are_paid_out_once_for_what_is_owed,
    payment_reviews_are_listed_and_settled_once,
    disputes_are_listed_with_their_state_and_handled_once,
);

const PASSWORD: &str = "correct horse battery";
fn operators() -> Config {
    let operators = e2e::operators_secret(&[
        ("asha.ops@inferexai.in", "ops-token-asha", &["payments"]),
        ("dev.ops@inferexai.in", "ops-token-dev", &["payments"]),
    ]);
    Config { admin_token: Some(SecretString::new(operators)), ..Config::default() }
}

type Answer = Result<reqwest::Response, Box<dyn std::error::Error + Send + Sync>>;

/// What a request carries for `token`: an operator's token signs them in (their session is sent), anything
/// else is sent as it is.
async fn bearer(api: &TestApi, token: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    if token.starts_with("ops-token-") { api.operator_session(token).await } else { Ok(token.to_owned()) }
}

async fn get(api: &TestApi, path: &str, token: Option<&str>) -> Answer {
    let request = api.http.get(api.url(path));
    Ok(match token {
        Some(token) => request.bearer_auth(bearer(api, token).await?).send().await?,
        None => request.send().await?,
    })
}

async fn post(api: &TestApi, path: &str, token: &str, body: Value) -> Answer {
    Ok(api.http.post(api.url(path)).bearer_auth(bearer(api, token).await?).json(&body).send().await?)
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn refund_requests_are_paid_out_once_for_what_is_owed(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, operators()).await?;
    let (user, token) = api.verified_user("leaver@example.in").await?;
    let payment = api.fund(&token, 250).await?;
    let close = api.http.delete(api.url("/v1/account")).bearer_auth(&token).json(&json!({ "password": PASSWORD }));
    close.send().await?.error_for_status()?;
    // A payment Razorpay no longer refunds, past the card networks' dispute window: only a bank payout can
    // return it (tests/tests/closure_refunds.rs covers the refunds to the payment itself).
    api.razorpay.age_payment(&payment.id, 200);
    jobs::run(&api.state).await?;
    api.clock.advance(chrono::Duration::days(121));

    assert_eq!(get(&api, "/v1/admin/refund-requests", None).await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&api, "/v1/admin/refund-requests", Some("not-an-operator")).await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let listed: Value =
        get(&api, "/v1/admin/refund-requests", Some("ops-token-asha")).await?.error_for_status()?.json().await?;
    let request = listed["data"]
        .as_array()
        .and_then(|d| d.iter().find(|r| r["user_id"] == json!(user)))
        .ok_or("no request")?
        .clone();
    assert_eq!((request["status"].clone(), request["amount_inr"].clone()), (json!("open"), json!("250.00")));
    let owed = request["amount"].as_i64().ok_or("no amount")?;

    let path = format!("/v1/admin/refund-requests/{user}/payout");
    expect_error(
        post(&api, &path, "ops-token-asha", json!({ "amount": owed, "reference": " " })).await?,
        StatusCode::BAD_REQUEST,
        "invalid_reference",
        Some("reference"),
    )
    .await?;
    expect_error(
        post(&api, &path, "ops-token-asha", json!({ "amount": -owed, "reference": "UTR1" })).await?,
        StatusCode::BAD_REQUEST,
        "invalid_amount",
        Some("amount"),
    )
    .await?;
    let short = post(&api, &path, "ops-token-asha", json!({ "amount": owed - 1, "reference": "UTR1" })).await?;
    expect_error(short, StatusCode::CONFLICT, "refund_request_changed", Some("amount")).await?;
    let unknown = post(
        &api,
        "/v1/admin/refund-requests/usr_nobody/payout",
        "ops-token-asha",
        json!({ "amount": owed, "reference": "UTR1" }),
    )
    .await?;
    expect_error(unknown, StatusCode::NOT_FOUND, "refund_request_not_found", None).await?;

    // Two operators pay the same request at once: one payout is recorded, the other is told it changed.
    let (first, second) = tokio::join!(
        post(&api, &path, "ops-token-asha", json!({ "amount": owed, "reference": "UTR-A" })),
        post(&api, &path, "ops-token-dev", json!({ "amount": owed, "reference": "UTR-B" })),
    );
    let statuses = [first?.status(), second?.status()];
    assert!(statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT), "{statuses:?}");
    let after: Value = get(&api, "/v1/admin/refund-requests", Some("ops-token-dev")).await?.json().await?;
    let paid =
        after["data"].as_array().and_then(|d| d.iter().find(|r| r["user_id"] == json!(user))).ok_or("no request")?;
    assert_eq!((paid["status"].clone(), paid["amount"].clone()), (json!("paid"), json!(0)));
    let payout = &paid["last_payout"];
    assert_eq!(payout["amount"], json!(owed));
    assert!(
        ["asha.ops@inferexai.in", "dev.ops@inferexai.in"].contains(&payout["paid_by"].as_str().unwrap_or_default()),
        "{payout}"
    );
    Ok(())
}

async fn payment_reviews_are_listed_and_settled_once(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, operators()).await?;
    let (_, token) = api.verified_user("short@example.in").await?;
    // A payment of less than the order: recorded for review, not credited.
    let order = api.open_topup(&token, 20_000).await?;
    let payment = api.razorpay.pay(&order, "captured", Some(100)).ok_or("unknown order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;

    assert_eq!(get(&api, "/v1/admin/payment-reviews", None).await?.status(), StatusCode::UNAUTHORIZED);
    let listed: Value =
        get(&api, "/v1/admin/payment-reviews", Some("ops-token-dev")).await?.error_for_status()?.json().await?;
    let review = listed["data"].as_array().and_then(|d| d.first()).ok_or("nothing to review")?.clone();
    assert!(review["details"].to_string().contains(&payment.id), "{review}");
    assert!(review.get("handled").is_none());
    let id = review["id"].as_str().ok_or("no id")?;

    let path = format!("/v1/admin/payment-reviews/{id}/handled");
    expect_error(
        post(&api, &path, "ops-token-dev", json!({ "note": "" })).await?,
        StatusCode::BAD_REQUEST,
        "invalid_note",
        Some("note"),
    )
    .await?;
    let unknown =
        post(&api, "/v1/admin/payment-reviews/bm9wZQ/handled", "ops-token-dev", json!({ "note": "x" })).await?;
    expect_error(unknown, StatusCode::NOT_FOUND, "payment_review_not_found", None).await?;
    let handled: Value = post(&api, &path, "ops-token-dev", json!({ "note": "refunded the ₹1 in Razorpay" }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        (handled["handled"]["by"].clone(), handled["handled"]["note"].clone()),
        (json!("dev.ops@inferexai.in"), json!("refunded the ₹1 in Razorpay"))
    );
    let again = post(&api, &path, "ops-token-asha", json!({ "note": "me too" })).await?;
    expect_error(again, StatusCode::CONFLICT, "payment_review_handled", None).await?;
    let listed: Value = get(&api, "/v1/admin/payment-reviews", Some("ops-token-asha")).await?.json().await?;
    assert_eq!(listed["data"][0]["handled"]["by"], json!("dev.ops@inferexai.in"), "the first record stands");
    Ok(())
}

async fn disputes_are_listed_with_their_state_and_handled_once(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, operators()).await?;
    let (user, token) = api.verified_user("disputed@example.in").await?;
    let order = api.open_topup(&token, 30_000).await?;
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("unknown order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
    let opened = api.razorpay.dispute_webhook(&payment, "disp_ops1", "payment.dispute.created", 30_000);
    api.razorpay.deliver(&opened).await.ok_or("delivery")?;
    // Razorpay repeats the event: still one dispute listed.
    api.razorpay.deliver(&opened).await.ok_or("delivery")?;

    assert_eq!(get(&api, "/v1/admin/disputes", None).await?.status(), StatusCode::UNAUTHORIZED);
    let listed: Value =
        get(&api, "/v1/admin/disputes", Some("ops-token-asha")).await?.error_for_status()?.json().await?;
    let data = listed["data"].as_array().ok_or("no list")?;
    assert_eq!(data.len(), 1, "{listed}");
    assert_eq!((data[0]["dispute_id"].clone(), data[0]["state"].clone()), (json!("disp_ops1"), json!("held")));
    assert_eq!((data[0]["payment_id"].clone(), data[0]["user_id"].clone()), (json!(payment.id), json!(user)));
    assert!(data[0]["held"].as_i64().is_some_and(|h| h > 0));

    let lost = api.razorpay.dispute_webhook(&payment, "disp_ops1", "payment.dispute.lost", 30_000);
    api.razorpay.deliver(&lost).await.ok_or("delivery")?;
    let path = "/v1/admin/disputes/disp_ops1/handled";
    expect_error(
        post(&api, path, "ops-token-asha", json!({ "note": " " })).await?,
        StatusCode::BAD_REQUEST,
        "invalid_note",
        Some("note"),
    )
    .await?;
    let unknown = post(&api, "/v1/admin/disputes/disp_nope/handled", "ops-token-asha", json!({ "note": "x" })).await?;
    expect_error(unknown, StatusCode::NOT_FOUND, "dispute_not_found", None).await?;
    let handled: Value = post(&api, path, "ops-token-asha", json!({ "note": "evidence sent, lost" }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        (handled["state"].clone(), handled["handled"]["by"].clone()),
        (json!("debited"), json!("asha.ops@inferexai.in"))
    );
    let again = post(&api, path, "ops-token-dev", json!({ "note": "again" })).await?;
    expect_error(again, StatusCode::CONFLICT, "dispute_handled", None).await?;
    api.ledger_checked_balance(&user).await?;
    Ok(())
}
