//! A closed account's money goes back to the payment it came from through Razorpay's refund API, so a later
//! chargeback of that payment finds nothing to take twice; a bank payout happens only for what Razorpay
//! cannot refund, and only after the card networks' dispute window. On both stores, against the Razorpay
//! stand-in's refunds API.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::Config;
use shared::money::UNITS_PER_RUPEE;
use shared::razorpay::Payment;
use shared::secrets::SecretString;
use shared::wallet::WalletStore;

on_both_stores!(
    a_closed_accounts_money_goes_back_to_its_payment_and_a_chargeback_takes_nothing_more,
    a_refund_request_whose_answer_was_lost_is_asked_again_and_refunds_once,
    refunds_refused_for_a_while_or_returned_by_the_bank_are_asked_again,
    what_razorpay_cannot_refund_is_paid_out_after_the_dispute_window_and_only_once,
);

const PASSWORD: &str = "correct horse battery";
const OPERATOR: &str = "ops-token-meera";

fn operators() -> Config {
    let token = e2e::operators_secret(&[("meera.ops@inferexai.in", OPERATOR, &["payments"])]);
    Config { admin_token: Some(SecretString::new(token)), ..Config::default() }
}

/// A verified account that paid `rupees` by card and then closed; returns (user id, the payment).
async fn paid_and_closed(
    api: &TestApi,
    email: &str,
    rupees: i64,
) -> Result<(String, Payment), Box<dyn std::error::Error + Send + Sync>> {
    let (user, token) = api.verified_user(email).await?;
    let order = api.open_topup(&token, rupees * 100).await?;
    let payment = api.razorpay.pay(&order, "captured", None).ok_or("unknown order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
    api.clock.advance(Duration::seconds(1));
    let close = api.http.delete(api.url("/v1/account")).bearer_auth(&token).json(&json!({ "password": PASSWORD }));
    close.send().await?.error_for_status()?;
    Ok((user, payment))
}

async fn request_of(api: &TestApi, user: &str) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let listed: Value = api
        .http
        .get(api.url("/v1/admin/refund-requests"))
        .bearer_auth(api.operator_session(OPERATOR).await?)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let found = listed["data"].as_array().and_then(|d| d.iter().find(|r| r["user_id"] == json!(user))).cloned();
    Ok(found.ok_or("no refund request")?)
}

async fn payout(
    api: &TestApi,
    user: &str,
    amount: i64,
    reference: &str,
) -> Result<reqwest::Response, Box<dyn std::error::Error + Send + Sync>> {
    let path = format!("/v1/admin/refund-requests/{user}/payout");
    let session = api.operator_session(OPERATOR).await?;
    let body = json!({ "amount": amount, "reference": reference });
    Ok(api.http.post(api.url(&path)).bearer_auth(session).json(&body).send().await?)
}

/// The closed wallet and its ledger: (balance, held), with the ledger checked to add up to the balance.
async fn closed_wallet(api: &TestApi, user: &str) -> Result<(i64, i64), Box<dyn std::error::Error + Send + Sync>> {
    let wallet = api.state.store.wallet(user).await?;
    assert_eq!(api.ledger_checked_balance(user).await?, wallet.balance);
    Ok((wallet.balance, wallet.held))
}

fn reviews(dump: &str) -> usize {
    dump.lines().filter(|l| l.starts_with("PAYMENTREVIEW ")).count()
}

/// The hostile review's case: ₹1,000 paid, the account closed, the money returned; then the card network
/// reports a chargeback of the same payment, created and lost. It used to be paid back twice (a bank payout
/// and the chargeback) and leave the closed wallet at -₹1,000.
async fn a_closed_accounts_money_goes_back_to_its_payment_and_a_chargeback_takes_nothing_more(
    backend: Backend,
) -> TestResult {
    let api = TestApi::start_with(backend, operators()).await?;
    let (user, payment) = paid_and_closed(&api, "returning@example.in", 1_000).await?;
    let owed = 1_000 * UNITS_PER_RUPEE;
    assert_eq!(request_of(&api, &user).await?["amount"], json!(owed));

    // Razorpay can refund the payment, so no bank payout is allowed: that is the double payment.
    let early = payout(&api, &user, owed, "UTR-EARLY").await?;
    expect_error(early, StatusCode::CONFLICT, "payout_not_allowed_yet", None).await?;

    let report = jobs::run(&api.state).await?;
    assert_eq!((report.closure_refunds.refunds_asked, report.failed_jobs.len()), (1, 0), "{report:?}");
    let refunds = api.razorpay.refunds_of(&payment.id);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(
        (refunds[0]["amount"].clone(), refunds[0]["status"].clone()),
        (json!(118_000), json!("pending")),
        "the credit and the GST charged on it"
    );
    assert_eq!(request_of(&api, &user).await?["refunding"], json!(owed), "under way");
    let meanwhile = payout(&api, &user, owed, "UTR-MEANWHILE").await?;
    expect_error(meanwhile, StatusCode::CONFLICT, "payout_not_allowed_yet", None).await?;
    // A second run while Razorpay is still sending it asks for nothing more.
    assert_eq!(jobs::run(&api.state).await?.closure_refunds.refunds_asked, 0);

    // Razorpay processes it (days later) and says so by webhook: the request is paid, the wallet untouched.
    assert_eq!(api.razorpay.process_refunds().await, 1);
    let request = request_of(&api, &user).await?;
    assert_eq!((request["amount"].clone(), request["refunding"].clone()), (json!(0), json!(0)), "{request}");
    assert_eq!(request["status"], json!("paid"));
    assert_eq!(closed_wallet(&api, &user).await?, (0, 0));
    let reviews_before = reviews(&api.dump().await?);

    // The chargeback of the refunded payment: recorded for a human, no money moves twice.
    for event in ["payment.dispute.created", "payment.dispute.lost"] {
        let webhook = api.razorpay.dispute_webhook(&payment, "disp_AfterRefund01", event, 118_000);
        assert_eq!(api.razorpay.deliver(&webhook).await, Some(200), "{event}");
        assert_eq!(closed_wallet(&api, &user).await?, (0, 0), "{event}");
    }
    assert_eq!(request_of(&api, &user).await?["amount"], json!(0), "nothing is owed, nothing taken from the request");
    assert_eq!(reviews(&api.dump().await?), reviews_before + 2, "both dispute events are recorded for review");
    let after = jobs::run(&api.state).await?;
    assert_eq!(after.closure_refunds.refunds_asked, 0);
    assert!(!api.dump().await?.contains("REFUNDS#DUE"), "nothing is left for the refunds job");
    assert_eq!(api.razorpay.refunds_of(&payment.id).len(), 1, "one refund, ever");
    Ok(())
}

/// The job's call reaches Razorpay, which makes the refund, but the answer is lost, and Razorpay then
/// forgets the idempotency key (its documentation says not how long it keeps them) and fails for a while.
/// Later runs find the refund Razorpay made (our record's id is its receipt) instead of asking again: one
/// refund, applied once.
async fn a_refund_request_whose_answer_was_lost_is_asked_again_and_refunds_once(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, operators()).await?;
    let (user, payment) = paid_and_closed(&api, "lostanswer@example.in", 400).await?;
    api.razorpay.lose_next_refund_answer();
    let first = jobs::run(&api.state).await?;
    assert_eq!(first.closure_refunds.refunds_asked, 1, "{first:?}");
    assert_eq!(api.razorpay.refunds_of(&payment.id).len(), 1, "made, though the answer never came back");
    assert!(api.dump().await?.contains("\"state\":\"initiated\""), "still unanswered as far as we know");

    api.razorpay.forget_idempotency_keys();
    api.razorpay.set_failing(true);
    let failing = jobs::run(&api.state).await?;
    assert_eq!(failing.closure_refunds.refunds_asked, 0, "nothing new while the first is unanswered");
    api.razorpay.set_failing(false);
    jobs::run(&api.state).await?;
    assert_eq!(api.razorpay.refunds_of(&payment.id).len(), 1, "found, never asked for a second time");
    assert!(api.dump().await?.contains("\"state\":\"pending\""));
    assert_eq!(api.razorpay.process_refunds().await, 1);
    // The job sees it processed too (had the webhook been lost): nothing applies twice.
    jobs::run(&api.state).await?;
    let request = request_of(&api, &user).await?;
    assert_eq!((request["amount"].clone(), request["refunding"].clone()), (json!(0), json!(0)), "{request}");
    assert_eq!(closed_wallet(&api, &user).await?, (0, 0));
    Ok(())
}

/// A refusal that can pass (Razorpay's own balance too low) is asked again by a new refund once it passes,
/// and a refund the bank returns after it was taken (`failed`) makes the money owed again and is asked again:
/// neither bars the payment, and the request ends paid by Razorpay, never by bank.
async fn refunds_refused_for_a_while_or_returned_by_the_bank_are_asked_again(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, operators()).await?;
    let (user, payment) = paid_and_closed(&api, "lowbalance@example.in", 300).await?;
    let owed = 300 * UNITS_PER_RUPEE;
    api.razorpay.refuse_refunds(Some("Your account does not have enough balance to carry out the refund operation."));
    let refused = jobs::run(&api.state).await?;
    assert_eq!((refused.closure_refunds.refunds_asked, refused.closure_refunds.refunds_refused), (1, 1));
    let request = request_of(&api, &user).await?;
    assert_eq!((request["amount"].clone(), request["refunding"].clone()), (json!(owed), json!(0)));
    let early = payout(&api, &user, owed, "UTR-NOT-YET").await?;
    expect_error(early, StatusCode::CONFLICT, "payout_not_allowed_yet", None).await?;

    api.razorpay.refuse_refunds(None);
    assert_eq!(jobs::run(&api.state).await?.closure_refunds.refunds_asked, 1, "asked again");
    let made = api.razorpay.refunds_of(&payment.id);
    let refund_id = made.first().and_then(|r| r["id"].as_str()).ok_or("no refund")?.to_owned();
    assert!(api.razorpay.fail_refund(&refund_id).await, "the bank returns it");
    let after_failure = jobs::run(&api.state).await?.closure_refunds;
    assert_eq!((after_failure.refunds_refused, after_failure.refunds_asked), (1, 1), "seen failed, asked once more");
    assert_eq!(api.razorpay.process_refunds().await, 1);
    let request = request_of(&api, &user).await?;
    assert_eq!((request["amount"].clone(), request["refunding"].clone()), (json!(0), json!(0)), "{request}");
    let sent: i64 = api
        .razorpay
        .refunds_of(&payment.id)
        .iter()
        .filter(|r| r["status"] == "processed")
        .filter_map(|r| r["amount"].as_i64())
        .sum();
    assert_eq!(sent, 35_400, "exactly what was owed went back, once, with its GST");
    assert_eq!(closed_wallet(&api, &user).await?, (0, 0));
    Ok(())
}

/// A payment Razorpay will not refund (over six months old at Razorpay): the refund is refused and
/// recorded; the operator may pay out by bank only once the payment is past the 120-day dispute window;
/// then a chargeback finds the payment already paid out.
async fn what_razorpay_cannot_refund_is_paid_out_after_the_dispute_window_and_only_once(
    backend: Backend,
) -> TestResult {
    let api = TestApi::start_with(backend, operators()).await?;
    let (user, payment) = paid_and_closed(&api, "oldcard@example.in", 250).await?;
    api.razorpay.age_payment(&payment.id, 200);
    let report = jobs::run(&api.state).await?;
    assert_eq!((report.closure_refunds.refunds_asked, report.closure_refunds.refunds_refused), (1, 1), "{report:?}");
    assert!(api.dump().await?.contains("more than 6 months old"), "Razorpay's reason is kept for the operator");
    let owed = 250 * UNITS_PER_RUPEE;
    let request = request_of(&api, &user).await?;
    assert_eq!((request["amount"].clone(), request["refunding"].clone()), (json!(owed), json!(0)));

    // By our records the payment can still be charged back: no payout yet.
    let early = payout(&api, &user, owed, "UTR-TOO-EARLY").await?;
    let body: Value = early.json().await?;
    assert_eq!(body["error"]["code"], json!("payout_not_allowed_yet"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains(&payment.id), "{body}");
    assert_eq!(jobs::run(&api.state).await?.closure_refunds.refunds_asked, 0, "a refused payment is not asked again");

    api.clock.advance(Duration::days(121));
    // The transfer gives back what the customer paid for the credit: the ₹250 and the ₹45 GST on it.
    let request = request_of(&api, &user).await?;
    assert_eq!((request["transfer_paise"].clone(), request["gst_paise"].clone()), (json!(29_500), json!(4_500)));
    let (first, second) = tokio::join!(payout(&api, &user, owed, "UTR-ONE"), payout(&api, &user, owed, "UTR-TWO"));
    let statuses = [first?.status(), second?.status()];
    assert!(statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT), "{statuses:?}");
    let request = request_of(&api, &user).await?;
    assert_eq!(request["amount"], json!(0));
    assert_eq!(request["last_payout"]["transfer_paise"], json!(29_500), "{request}");
    assert!(request.get("transfer_paise").is_none(), "nothing more to transfer: {request}");
    payout_voucher_reverses_the_gst(&api, &user).await?;

    // A late chargeback (fraud disputes can come late): the payment was paid out, nothing more moves.
    for event in ["payment.dispute.created", "payment.dispute.lost"] {
        let webhook = api.razorpay.dispute_webhook(&payment, "disp_LateFraud0001", event, 29_500);
        assert_eq!(api.razorpay.deliver(&webhook).await, Some(200), "{event}");
        assert_eq!(closed_wallet(&api, &user).await?, (0, 0), "{event}");
    }
    assert_eq!(request_of(&api, &user).await?["amount"], json!(0));
    Ok(())
}

/// The bank payout's refund voucher: one, for the payment, reversing the GST its receipt voucher charged.
async fn payout_voucher_reverses_the_gst(api: &TestApi, user: &str) -> TestResult {
    use shared::gst::{DocumentKind, documents};
    let issued = documents::documents_of(api.state.store.as_ref(), user).await?;
    let vouchers: Vec<_> = issued.iter().filter(|d| d.kind == DocumentKind::RefundVoucher).collect();
    assert_eq!(vouchers.len(), 1, "{vouchers:?}");
    let totals = vouchers[0].totals;
    assert_eq!((totals.taxable_paise, totals.cgst_paise + totals.sgst_paise + totals.igst_paise), (25_000, 4_500));
    assert_eq!(totals.total_paise, 29_500);
    assert!(vouchers[0].number.is_some(), "numbered");
    assert_eq!(jobs::run(&api.state).await?.tax_documents_numbered, 0, "nothing was left due");
    Ok(())
}
