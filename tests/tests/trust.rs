//! Trust boundaries under attack, on both stores: password checks that count before they verify, account
//! closure racing itself and everything else, KYC claims decided at verification, and chargebacks.

use std::sync::Arc;

use chrono::Duration;
use e2e::{Backend, Fault, FaultyStore, TestApi, TestResult, on_both_stores, valid_pan};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::{Config, KycMode};
use shared::money::UNITS_PER_RUPEE;
use shared::privacy;
use shared::secrets::SecretString;
use shared::wallet::WalletStore;

on_both_stores!(
    thirty_parallel_logins_verify_at_most_the_limit,
    password_rechecks_count_against_the_login_throttle,
    parallel_closures_close_once_and_request_one_refund,
    a_closure_that_cannot_commit_changes_nothing,
    a_retried_closure_whose_answer_was_lost_answers_the_same,
    no_session_or_key_survives_a_closure_it_raced,
    decisions_after_closure_are_refused_and_keep_the_expiry,
    pending_submissions_block_nobody_and_approvals_race_safely,
    submissions_are_limited_and_never_echo_a_number,
    refused_submissions_count_so_uniqueness_is_no_oracle,
    a_verification_racing_the_closure_leaves_no_claim_behind,
    money_moving_after_a_closure_keeps_the_refund_request_true,
    a_closure_before_any_payment_still_refunds_a_late_one,
    submissions_that_fail_on_our_side_do_not_count,
);

const PASSWORD: &str = "correct horse battery";

fn statuses(answers: &[reqwest::Response]) -> Vec<u16> {
    answers.iter().map(|r| r.status().as_u16()).collect()
}

fn count(statuses: &[u16], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status.as_u16()).count()
}

/// 29 wrong guesses and the right password at once: the limit (5) holds however they interleave, because
/// each check is reserved before the password is verified.
async fn thirty_parallel_logins_verify_at_most_the_limit(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    api.signup("racer@example.in", PASSWORD).await?.error_for_status()?;
    let attempts = (0..30).map(|i| {
        let api = Arc::clone(&api);
        async move {
            let password = if i == 17 { PASSWORD.to_owned() } else { format!("wrong guess {i:02}") };
            api.login("racer@example.in", &password).await
        }
    });
    let answers: Vec<reqwest::Response> = join_all(attempts).await.into_iter().collect::<Result<_, _>>()?;
    let statuses = statuses(&answers);
    let wrong_verified = count(&statuses, StatusCode::UNAUTHORIZED);
    assert!(wrong_verified <= 5, "{wrong_verified} wrong guesses verified in a window of 5: {statuses:?}");
    assert!(wrong_verified >= 1, "{statuses:?}");
    assert!(count(&statuses, StatusCode::TOO_MANY_REQUESTS) >= 24, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::OK) + wrong_verified + count(&statuses, StatusCode::TOO_MANY_REQUESTS), 30);
    // Checks refused under contention are not failures: guessing on one at a time, the window verifies
    // exactly 5 wrong passwords in all, then refuses everyone, the right password included.
    let mut failures = wrong_verified;
    loop {
        let answer = api.login("racer@example.in", "one more wrong guess").await?;
        match answer.status() {
            StatusCode::UNAUTHORIZED => failures += 1,
            StatusCode::TOO_MANY_REQUESTS => break,
            other => return Err(format!("unexpected {other}").into()),
        }
        assert!(failures <= 5, "{failures} failures verified");
    }
    assert_eq!(failures, 5);
    assert_eq!(api.login("racer@example.in", PASSWORD).await?.status(), StatusCode::TOO_MANY_REQUESTS);
    Ok(())
}

/// A stolen session cannot guess the password through account changes or closure faster than through the
/// login form: all three share one window per email.
async fn password_rechecks_count_against_the_login_throttle(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (_, token) = api.signed_in("guessed@example.in").await?;
    let guesses = (0..8).map(|i| {
        let (api, token) = (Arc::clone(&api), token.clone());
        async move {
            let body = if i % 2 == 0 {
                json!({ "password": format!("guess number {i}") })
            } else {
                json!({ "email": format!("new{i}@example.in"), "current_password": format!("guess number {i}") })
            };
            let request = if i % 2 == 0 {
                api.http.delete(api.url("/v1/account"))
            } else {
                api.http.patch(api.url("/v1/account"))
            };
            request.bearer_auth(&token).json(&body).send().await
        }
    });
    let answers: Vec<reqwest::Response> = join_all(guesses).await.into_iter().collect::<Result<_, _>>()?;
    let statuses = statuses(&answers);
    let wrong = count(&statuses, StatusCode::FORBIDDEN);
    assert!(wrong <= 5, "{statuses:?}");
    assert_eq!(wrong + count(&statuses, StatusCode::TOO_MANY_REQUESTS), 8, "{statuses:?}");
    // What the burst left of the window goes to login guesses; then the right password is refused too.
    for _ in wrong..5 {
        assert_eq!(api.login("guessed@example.in", "another guess").await?.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(api.login("guessed@example.in", PASSWORD).await?.status(), StatusCode::TOO_MANY_REQUESTS);
    let account: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(account["email"], "guessed@example.in", "nothing changed");
    Ok(())
}

const OPERATOR: &str = "operator-token-for-the-trust-tests-0001";

fn manual() -> Config {
    let operators = e2e::operators_secret(&[("ravi@inferex.ai", OPERATOR, &["kyc_reviewer"])]);
    Config { kyc_mode: KycMode::Manual, admin_token: Some(SecretString::new(operators)), ..Config::default() }
}

async fn decide(
    api: &TestApi,
    user_id: &str,
    body: Value,
) -> Result<reqwest::Response, Box<dyn std::error::Error + Send + Sync>> {
    let session = api.operator_session(OPERATOR).await?;
    let url = api.url(&format!("/v1/admin/kyc/{user_id}/decision"));
    Ok(api.http.post(url).bearer_auth(session).json(&body).send().await?)
}

async fn close(api: &TestApi, token: &str) -> Result<reqwest::Response, reqwest::Error> {
    api.http.delete(api.url("/v1/account")).bearer_auth(token).json(&json!({ "password": PASSWORD })).send().await
}

fn lines_starting(dump: &str, prefix: &str) -> usize {
    dump.lines().filter(|l| l.starts_with(prefix)).count()
}

/// Six closures at once (a double-clicking user, a retrying client): one closure, one refund request for the
/// balance, the balance moved out through the ledger, and every 202 says the same.
async fn parallel_closures_close_once_and_request_one_refund(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (user, token) = api.verified_user("leaving@example.in").await?;
    api.fund(&token, 100).await?;
    let closures = (0..6).map(|_| {
        let (api, token) = (Arc::clone(&api), token.clone());
        async move { close(&api, &token).await }
    });
    let answers: Vec<reqwest::Response> = join_all(closures).await.into_iter().collect::<Result<_, _>>()?;
    let statuses = statuses(&answers);
    assert!(count(&statuses, StatusCode::ACCEPTED) >= 1, "{statuses:?}");
    // A closure that found the throttle window full gets 429; nothing else is acceptable.
    assert_eq!(
        count(&statuses, StatusCode::ACCEPTED) + count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        6,
        "{statuses:?}"
    );
    let mut seen = Vec::new();
    for answer in answers.into_iter().filter(|a| a.status() == StatusCode::ACCEPTED) {
        let body: Value = answer.json().await?;
        seen.push((body["refund_requested"].clone(), body["request"]["id"].clone()));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "every closure answers the one that happened: {seen:?}");
    assert_eq!(seen[0].0, json!(100 * UNITS_PER_RUPEE));
    let dump = api.dump().await?;
    assert_eq!(lines_starting(&dump, "REFUNDREQUEST "), 1, "{dump}");
    assert_eq!(lines_starting(&dump, &format!("USER#{user} PRIVACYREQ#")), 1, "one erasure request");
    assert_eq!(api.ledger_checked_balance(&user).await?, 0, "the balance left through the ledger");
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!((wallet.balance, wallet.held, wallet.available), (0, 0, 0));
    assert_eq!(lines_starting(&dump, "CLOSURES#PENDING"), 0, "the follow-up finished");
    Ok(())
}

/// A closing transaction that cannot commit (it always loses a race here) leaves the account exactly as it
/// was: open, its numbers claimed, its wallet open with its balance, no refund requested.
async fn a_closure_that_cannot_commit_changes_nothing(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("stuck@example.in").await?;
    api.fund(&token, 150).await?;
    let before = api.dump().await?;
    let mut busy = api.state.clone();
    busy.ports.store = Arc::new(FaultyStore::new(api.state.store.clone(), Fault::TransactionsConflict));
    let refused =
        privacy::close_account(&(&busy).into(), &user, Some(PASSWORD.into())).await.err().ok_or("it closed")?;
    assert_eq!(refused.status().as_u16(), 409, "{refused}");
    let after = api.dump().await?;
    // Only the throttle window of the password check may differ.
    let without_throttle =
        |dump: &str| dump.lines().filter(|l| !l.starts_with("LOGINFAIL#")).collect::<Vec<_>>().join("\n");
    assert_eq!(without_throttle(&before), without_throttle(&after));
    assert_eq!(lines_starting(&after, "KYCDOC#"), 1, "the PAN stays claimed");
    let account: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(account["email"], "stuck@example.in");
    assert_eq!(api.ledger_checked_balance(&user).await?, 150 * UNITS_PER_RUPEE);
    Ok(())
}

/// The closing transaction commits but its answer is lost and the SDK sends it again: the repeat loses,
/// and the closure answers what was done, once.
async fn a_retried_closure_whose_answer_was_lost_answers_the_same(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("lost@example.in").await?;
    api.fund(&token, 120).await?;
    let mut flaky = api.state.clone();
    flaky.ports.store = Arc::new(FaultyStore::new(api.state.store.clone(), Fault::RepeatWrites));
    let closure = privacy::close_account(&(&flaky).into(), &user, Some(PASSWORD.into())).await?;
    assert_eq!(closure.refund_requested, 120 * UNITS_PER_RUPEE);
    let dump = api.dump().await?;
    assert_eq!(lines_starting(&dump, "REFUNDREQUEST "), 1, "{dump}");
    assert_eq!(api.ledger_checked_balance(&user).await?, 0);
    Ok(())
}

/// Logins and key creation racing a closure: whatever they created before the commit is deleted, and
/// nothing can be created after it; no token or key works once the closure answered.
async fn no_session_or_key_survives_a_closure_it_raced(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let (user, token) = api.verified_user("racing@example.in").await?;
    api.fund(&token, 100).await?;
    let logins = (0..4).map(|_| {
        let api = Arc::clone(&api);
        async move {
            let answer = api.login("racing@example.in", PASSWORD).await.ok()?;
            let body: Value = answer.json().await.ok()?;
            body["token"].as_str().map(str::to_owned)
        }
    });
    let keys = (0..3).map(|i| {
        let (api, token) = (Arc::clone(&api), token.clone());
        async move { api.create_key(&token, &format!("k{i}")).await.ok() }
    });
    let (closed, sessions, keys) = tokio::join!(close(&api, &token), join_all(logins), join_all(keys));
    assert_eq!(closed?.status(), StatusCode::ACCEPTED);
    for session in sessions.into_iter().flatten() {
        let answer = api.http.get(api.url("/v1/account")).bearer_auth(&session).send().await?;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "a session made during the closure still works");
    }
    for key in keys.into_iter().flatten() {
        let body = json!({ "model": "llama-3.1-8b", "messages": [{ "role": "user", "content": "hi" }] });
        let answer = api.http.post(api.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await?;
        assert!(answer.status().is_client_error(), "a key made during the closure still works: {}", answer.status());
    }
    let dump = api.dump().await?;
    assert_eq!(lines_starting(&dump, "SESSION#"), 0, "{dump}");
    assert_eq!(lines_starting(&dump, "APIKEY#"), 0, "{dump}");
    // The KYC gate (top-ups, key creation) admits no closed account, verified or not.
    assert!(shared::kyc::require_verified(api.state.store.as_ref(), &user).await.is_err());
    Ok(())
}

/// An operator deciding on a closed account's submission changes nothing: the record keeps the expiry the
/// closure gave it, and no number is claimed for a closed account.
async fn decisions_after_closure_are_refused_and_keep_the_expiry(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (user, token) = api.signed_in("gone@example.in").await?;
    api.submit_kyc(&token, &valid_pan("GONPE", 0)).await?.error_for_status()?;
    assert_eq!(api.share_from_digilocker(&token, true).await?["status"], "in_review");
    assert_eq!(close(&api, &token).await?.status(), StatusCode::ACCEPTED);
    let record_line =
        |dump: &str| dump.lines().find(|l| l.starts_with(&format!("USER#{user} KYC "))).map(str::to_owned);
    let before = record_line(&api.dump().await?).ok_or("no KYC record")?;
    assert!(!before.ends_with("None"), "{before}");
    for decision in [json!({ "decision": "approve" }), json!({ "decision": "reject", "reason": "closed" })] {
        let answer = decide(&api, &user, decision).await?;
        assert_eq!(answer.status(), StatusCode::CONFLICT);
        let body: Value = answer.json().await?;
        assert_eq!(body["error"]["code"], "account_closed");
    }
    let dump = api.dump().await?;
    assert_eq!(record_line(&dump), Some(before));
    assert_eq!(lines_starting(&dump, "KYCDOC#"), 0);
    Ok(())
}

/// In manual mode a submission in review claims nothing, so a squatter cannot block the real owner; three
/// approvals racing on one PAN verify exactly one account.
async fn pending_submissions_block_nobody_and_approvals_race_safely(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start_with(backend, manual()).await?);
    let pan = "SQTPE4322Q";
    let mut users = Vec::new();
    for n in 0..3u64 {
        let (user, token) = api.signed_in(&format!("claimant{n}@example.in")).await?;
        api.submit_kyc(&token, pan).await?.error_for_status()?;
        let answer = api.share_from_digilocker(&token, true).await?;
        assert_eq!(answer["status"], "in_review", "{answer}");
        users.push(user);
    }
    assert_eq!(lines_starting(&api.dump().await?, "KYCDOC#"), 0, "nothing is claimed before verification");
    // Signed in once: the parallel approvals share the session.
    api.operator_session(OPERATOR).await?;
    let approvals = users.iter().map(|user| {
        let (api, user) = (Arc::clone(&api), user.clone());
        async move { decide(&api, &user, json!({ "decision": "approve" })).await }
    });
    let answers: Vec<reqwest::Response> = join_all(approvals).await.into_iter().collect::<Result<_, _>>()?;
    let statuses = statuses(&answers);
    assert_eq!(count(&statuses, StatusCode::OK), 1, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::CONFLICT), 2, "{statuses:?}");
    for answer in answers.into_iter().filter(|a| a.status() == StatusCode::CONFLICT) {
        let body: Value = answer.json().await?;
        assert!(
            ["kyc_document_in_use", "kyc_submission_conflict"]
                .contains(&body["error"]["code"].as_str().unwrap_or_default()),
            "{body}"
        );
        assert!(!body.to_string().contains(pan), "{body}");
    }
    let dump = api.dump().await?;
    assert_eq!(lines_starting(&dump, "KYCDOC#"), 1, "the winner's PAN");
    let verified = dump.lines().filter(|l| l.contains("\"kyc_status\":\"verified\"")).count();
    assert_eq!(verified, 1, "{dump}");
    Ok(())
}

/// Five submissions per account in 30 days; a number sent as a JSON number is refused without being
/// repeated back.
async fn submissions_are_limited_and_never_echo_a_number(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (_, token) = api.signed_in("prober@example.in").await?;
    let typed = api
        .http
        .post(api.url("/v1/kyc"))
        .bearer_auth(&token)
        .json(&json!({ "pan": "PRBPE1231Q", "aadhaar": 234123412346u64, "name_on_pan": "Prober", "consent": true }))
        .send()
        .await?;
    assert_eq!(typed.status(), StatusCode::BAD_REQUEST);
    let text = typed.text().await?;
    assert!(!text.contains("234123412346") && !text.contains("PRBPE1231Q"), "{text}");
    assert!(text.contains("aadhaar_not_accepted"), "the field is named: {text}");

    for n in 0..5u64 {
        let answer = api.submit_kyc(&token, &valid_pan("PRBPE", n)).await?;
        assert_eq!(answer.status(), StatusCode::OK, "submission {n}");
    }
    let sixth = api.submit_kyc(&token, &valid_pan("PRBPE", 9)).await?;
    assert_eq!(sixth.status(), StatusCode::CONFLICT);
    let body: Value = sixth.json().await?;
    assert_eq!(body["error"]["code"], "kyc_submission_limit");
    api.clock.advance(Duration::days(30) + Duration::seconds(1));
    // Sessions last 7 days: log in again, then the window has moved on.
    let login: Value = api.login("prober@example.in", PASSWORD).await?.json().await?;
    let token = login["token"].as_str().unwrap_or_default().to_owned();
    let later = api.submit_kyc(&token, &valid_pan("PRBPE", 9)).await?;
    assert_eq!(later.status(), StatusCode::OK, "{}", later.text().await?);
    Ok(())
}

async fn refund_request(api: &TestApi, user: &str) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
    let request = shared::wallet::refund_request(api.state.store.as_ref(), user).await?;
    Ok(request.map_or(0, |r| r.amount))
}

/// In auto mode, a refusal because a number backs another account counts against the submission limit
/// like any submission: asking "is this PAN registered?" costs one of five answers a month.
async fn refused_submissions_count_so_uniqueness_is_no_oracle(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, owner) = api.signed_in("owner@example.in").await?;
    api.pass_kyc(&owner, "ORCPE1231O").await?;
    let (_, prober) = api.signed_in("prober@example.in").await?;
    let mut codes = Vec::new();
    for _ in 0..6u64 {
        let answer: Value = api.submit_kyc(&prober, "ORCPE1231O").await?.json().await?;
        codes.push(answer["error"]["code"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(codes[..5], ["kyc_not_verifiable"; 5]);
    assert_eq!(codes[5], "kyc_submission_limit");
    Ok(())
}

/// A KYC verification that commits while the closure is between its read and its commit: the closure sees
/// it (its transaction requires KYC unchanged), reads again, and releases the new claims too.
async fn a_verification_racing_the_closure_leaves_no_claim_behind(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.signed_in("race-close@example.in").await?;
    api.submit_kyc(&token, "RCEPE1231R").await?.error_for_status()?;
    let mut held = api.state.clone();
    let gate = Arc::new(e2e::Gate::default());
    held.ports.store = Arc::new(FaultyStore::new(api.state.store.clone(), Fault::HoldTransactions(Arc::clone(&gate))));
    let closing = shared::tasks::spawn("test", async move {
        privacy::close_account(&(&held).into(), &user, Some(PASSWORD.into())).await
    });
    // The closure has read everything and waits to commit; the verification commits first.
    gate.reached().await;
    let verified = api.share_from_digilocker(&token, true).await?;
    assert_eq!(verified["status"], "verified", "{verified}");
    gate.open();
    closing.await??;
    let dump = api.dump().await?;
    assert_eq!(lines_starting(&dump, "KYCDOC#"), 0, "the numbers stay free for their owner: {dump}");
    let (_, other) = api.signed_in("rightful@example.in").await?;
    let answer = api.pass_kyc(&other, "RCEPE1231R").await?;
    assert_eq!(answer["status"], "verified", "{answer}");
    Ok(())
}

/// After the closure the refund request always says what the operator still owes: a chargeback or a
/// Razorpay refund takes from it (never paid twice), a won dispute gives back, a late payment adds.
async fn money_moving_after_a_closure_keeps_the_refund_request_true(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("after@example.in").await?;
    let topup = api.open_topup(&token, 30_000).await?;
    let payment = api.razorpay.pay(&topup, "captured", None).ok_or("order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
    let late = api.open_topup(&token, 20_000).await?;
    assert_eq!(close(&api, &token).await?.status(), StatusCode::ACCEPTED);
    let rupee = UNITS_PER_RUPEE;
    assert_eq!(refund_request(&api, &user).await?, 300 * rupee);

    // Disputes and refunds are of the money paid: the credit and its 18% GST (₹118 for ₹100 of credit).
    let dispute = |event: &str| api.razorpay.dispute_webhook(&payment, "disp_AfterClose01", event, 11_800);
    api.razorpay.deliver(&dispute("payment.dispute.created")).await.ok_or("delivery")?;
    assert_eq!(refund_request(&api, &user).await?, 200 * rupee, "held by the dispute, not owed");
    api.razorpay.deliver(&dispute("payment.dispute.won")).await.ok_or("delivery")?;
    assert_eq!(refund_request(&api, &user).await?, 300 * rupee);
    api.razorpay.deliver(&api.razorpay.refund_webhook(&payment, 5_900)).await.ok_or("delivery")?;
    assert_eq!(
        refund_request(&api, &user).await?,
        250 * rupee,
        "Razorpay gave ₹59 back already: ₹50 of credit and its GST"
    );

    // A payment for the order opened before the closure is still credited, and refunded.
    let late_payment = api.razorpay.pay(&late, "captured", None).ok_or("order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &late_payment)).await.ok_or("delivery")?;
    assert_eq!(refund_request(&api, &user).await?, 450 * rupee);
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!((wallet.balance, wallet.held, wallet.available), (0, 0, 0));
    assert_eq!(api.ledger_checked_balance(&user).await?, 0);
    Ok(())
}

/// An account closed before its first payment lands has a closed wallet waiting: the payment is refunded,
/// never spendable.
async fn a_closure_before_any_payment_still_refunds_a_late_one(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("early-close@example.in").await?;
    let topup = api.open_topup(&token, 15_000).await?;
    let closed: Value = close(&api, &token).await?.json().await?;
    assert_eq!(closed["refund_requested"], 0);
    let payment = api.razorpay.pay(&topup, "captured", None).ok_or("order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
    assert_eq!(refund_request(&api, &user).await?, 150 * UNITS_PER_RUPEE);
    let wallet = api.state.store.wallet(&user).await?;
    assert_eq!(wallet.available, 0);
    assert_eq!(api.ledger_checked_balance(&user).await?, 0);
    let dump = api.dump().await?;
    let stored = dump.lines().find(|l| l.starts_with(&format!("USER#{user} WALLET "))).unwrap_or_default();
    assert!(stored.contains("\"closed\":true") && !stored.ends_with("None"), "closed, with its expiry: {stored}");
    Ok(())
}

/// A submission that fails for reasons that are not about the numbers (a store outage, the conflict of a
/// double click) gives its slot back: five of them do not lock an honest user out for a month.
async fn submissions_that_fail_on_our_side_do_not_count(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.signed_in("unlucky@example.in").await?;
    let mut busy = api.state.clone();
    busy.ports.store = Arc::new(FaultyStore::new(api.state.store.clone(), Fault::TransactionsConflict));
    let ctx = busy.kyc()?;
    for _ in 0..6u64 {
        let request = shared::kyc::SubmitRequest {
            pan: "UNLPE1231U".into(),
            name_on_pan: "Unlucky".into(),
            consent: Some(true),
            gstin: None,
        };
        let refused = shared::kyc::submit(&ctx, &user, request)
            .await
            .err()
            .ok_or("a submission went through a store that refuses every transaction")?;
        assert_eq!(refused.code(), "kyc_submission_conflict");
    }
    let answer: Value = api.submit_kyc(&token, "UNLPE1231U").await?.json().await?;
    assert_eq!(answer["pan_status"], "passed", "{answer}");
    Ok(())
}
