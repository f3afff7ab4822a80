//! KYC end to end over HTTP, on both stores: validation, the vault, auto and manual verification, one
//! document per account (race-safe), the gate, the retention hook, and no full number anywhere.

use std::sync::Arc;

use e2e::{Backend, TestApi, TestResult, aadhaar_with_check_digit, captured_logs, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::{Config, KycMode};
use shared::kyc::{self, DocumentKind, KycStore};
use shared::secrets::SecretString;

on_both_stores!(
    numbers_are_validated_with_named_fields,
    auto_mode_verifies_at_once_and_locks_the_submission,
    manual_mode_waits_for_an_operator_who_approves_or_rejects,
    operator_routes_need_the_token_and_vanish_without_it,
    one_document_backs_one_account,
    racing_accounts_with_one_pan_get_exactly_one_winner,
    resubmission_releases_the_old_numbers,
    the_gate_admits_only_verified_accounts,
    closure_retention_expires_kyc_data_five_years_later,
    no_full_number_in_stores_logs_or_answers,
    operators_see_the_queue_oldest_first_and_reveal_only_on_record,
);

const PAN: &str = "ABCPE1234F";
const AADHAAR: &str = "234123412346";

/// Two operators, each with their own token: every action is recorded under the name of the token used.
const OPERATORS: &str = r#"{"ravi@inferex.ai": "operator-secret", "meera@inferex.ai": "operator-secret-meera"}"#;

fn manual() -> Config {
    Config { kyc_mode: KycMode::Manual, admin_token: Some(SecretString::new(OPERATORS)), ..Config::default() }
}

async fn decide(api: &TestApi, user_id: &str, body: Value) -> Result<reqwest::Response, reqwest::Error> {
    api.http
        .post(api.url(&format!("/v1/admin/kyc/{user_id}/decision")))
        .bearer_auth("operator-secret")
        .json(&body)
        .send()
        .await
}

async fn numbers_are_validated_with_named_fields(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("v@example.in").await?;
    for (pan, aadhaar, code, param) in [
        ("ABCCE1234F", AADHAAR, "invalid_pan", "pan"),
        ("ABCPE0000F", AADHAAR, "invalid_pan", "pan"),
        ("ABCPE1234", AADHAAR, "invalid_pan", "pan"),
        (PAN, "234123412347", "invalid_aadhaar", "aadhaar"),
        (PAN, "123412341234", "invalid_aadhaar", "aadhaar"),
        (PAN, "2341 2341 234", "invalid_aadhaar", "aadhaar"),
    ] {
        expect_error(api.submit_kyc(&token, pan, aadhaar).await?, StatusCode::BAD_REQUEST, code, Some(param)).await?;
    }
    let no_name = api
        .http
        .post(api.url("/v1/kyc"))
        .bearer_auth(&token)
        .json(&json!({"pan": PAN, "aadhaar": AADHAAR, "name_on_pan": "  "}))
        .send()
        .await?;
    expect_error(no_name, StatusCode::BAD_REQUEST, "invalid_name_on_pan", Some("name_on_pan")).await?;
    let missing = api.http.post(api.url("/v1/kyc")).bearer_auth(&token).json(&json!({"pan": PAN})).send().await?;
    expect_error(missing, StatusCode::BAD_REQUEST, "missing_field", Some("aadhaar")).await?;
    let anonymous = api.http.get(api.url("/v1/kyc")).send().await?;
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_session", None).await?;
    assert!(!api.dump().await?.contains("VAULT#"), "invalid submissions store nothing in the vault");
    Ok(())
}

async fn auto_mode_verifies_at_once_and_locks_the_submission(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("auto@example.in").await?;
    let before: Value = api.http.get(api.url("/v1/kyc")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(before["status"], "not_submitted");

    // Lower case and separators are accepted and normalised.
    let submitted = api.submit_kyc(&token, "abcpe1234f", "2341-2341-2346").await?;
    assert_eq!(submitted.status(), StatusCode::OK);
    let view: Value = submitted.json().await?;
    assert_eq!(view["status"], "verified");
    assert_eq!(view["pan_masked"], "ABCPEXXXXF");
    assert_eq!(view["aadhaar_masked"], "XXXX XXXX 2346");
    assert_eq!(view["verified_at"], view["submitted_at"]);

    let status: Value = api.http.get(api.url("/v1/kyc")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(status, view);
    let account: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(account["kyc_status"], "verified");

    let again = api.submit_kyc(&token, "ABCPE9999F", "234567890124").await?;
    expect_error(again, StatusCode::CONFLICT, "kyc_already_verified", None).await?;
    Ok(())
}

async fn manual_mode_waits_for_an_operator_who_approves_or_rejects(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (asha, asha_token) = api.signed_in("asha@example.in").await?;
    let (ravi, ravi_token) = api.signed_in("ravi@example.in").await?;
    let pending: Value = api.submit_kyc(&asha_token, PAN, AADHAAR).await?.json().await?;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["verified_at"], Value::Null);
    assert_eq!(api.submit_kyc(&ravi_token, "BCDPE2345G", "234567890124").await?.status(), StatusCode::OK);

    let approved = decide(&api, &asha, json!({"decision": "approve"})).await?;
    assert_eq!(approved.status(), StatusCode::OK);
    let approved: Value = approved.json().await?;
    assert_eq!(approved["status"], "verified");
    assert_eq!(approved["decided_by"], "ravi@inferex.ai");
    let account: Value = api.http.get(api.url("/v1/account")).bearer_auth(&asha_token).send().await?.json().await?;
    assert_eq!(account["kyc_status"], "verified");
    let twice = decide(&api, &asha, json!({"decision": "reject", "reason": "late"})).await?;
    expect_error(twice, StatusCode::CONFLICT, "kyc_already_verified", None).await?;

    let no_reason = decide(&api, &ravi, json!({"decision": "reject"})).await?;
    expect_error(no_reason, StatusCode::BAD_REQUEST, "invalid_reason", Some("reason")).await?;
    let bad_decision = decide(&api, &ravi, json!({"decision": "maybe"})).await?;
    expect_error(bad_decision, StatusCode::BAD_REQUEST, "invalid_type", Some("decision")).await?;
    let rejected = decide(&api, &ravi, json!({"decision": "reject", "reason": "Name does not match the PAN"})).await?;
    assert_eq!(rejected.status(), StatusCode::OK);
    let seen: Value = api.http.get(api.url("/v1/kyc")).bearer_auth(&ravi_token).send().await?.json().await?;
    assert_eq!(seen["status"], "rejected");
    assert_eq!(seen["rejection_reason"], "Name does not match the PAN");

    // The decision is recorded with who, when and why.
    let dump = api.dump().await?;
    let audit: Vec<&str> = dump.lines().filter(|l| l.contains(&format!("USER#{ravi} KYCDECISION#"))).collect();
    assert_eq!(audit.len(), 1, "{dump}");
    assert!(audit[0].contains("\"decided_by\":\"ravi@inferex.ai\"") && audit[0].contains("Name does not match"));

    // A rejected user may resubmit; it is pending again.
    let again: Value = api.submit_kyc(&ravi_token, "BCDPE2345G", "234567890124").await?.json().await?;
    assert_eq!(again["status"], "pending");
    assert_eq!(again["rejection_reason"], Value::Null);
    let unknown = decide(&api, "usr_nobody", json!({"decision": "approve"})).await?;
    expect_error(unknown, StatusCode::NOT_FOUND, "kyc_not_found", None).await?;
    Ok(())
}

async fn operator_routes_need_the_token_and_vanish_without_it(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (user, token) = api.signed_in("op@example.in").await?;
    api.submit_kyc(&token, PAN, AADHAAR).await?.error_for_status()?;
    let url = api.url(&format!("/v1/admin/kyc/{user}/decision"));
    let body = json!({"decision": "approve"});
    let none = api.http.post(&url).json(&body).send().await?;
    expect_error(none, StatusCode::UNAUTHORIZED, "invalid_admin_token", None).await?;
    let wrong = api.http.post(&url).bearer_auth("operator-secreT").json(&body).send().await?;
    expect_error(wrong, StatusCode::UNAUTHORIZED, "invalid_admin_token", None).await?;
    let session = api.http.post(&url).bearer_auth(&token).json(&body).send().await?;
    expect_error(session, StatusCode::UNAUTHORIZED, "invalid_admin_token", None).await?;

    let closed = TestApi::start(backend).await?;
    let disabled =
        closed.http.post(closed.url("/v1/admin/kyc/usr_x/decision")).bearer_auth("anything").json(&body).send().await?;
    expect_error(disabled, StatusCode::NOT_FOUND, "not_found", None).await?;
    Ok(())
}

async fn one_document_backs_one_account(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, first) = api.signed_in("first@example.in").await?;
    let (_, second) = api.signed_in("second@example.in").await?;
    api.submit_kyc(&first, PAN, AADHAAR).await?.error_for_status()?;
    // The answer is the same whichever number is in use, and says neither which nor that it is registered.
    let same_pan = api.submit_kyc(&second, PAN, "234567890124").await?.text().await?;
    let same_aadhaar = api.submit_kyc(&second, "BCDPE2345G", "2341 2341 2346").await?.text().await?;
    assert_eq!(same_pan, same_aadhaar);
    let refused: Value = serde_json::from_str(&same_pan)?;
    assert_eq!(refused["error"]["code"], "kyc_not_verifiable", "{refused}");
    assert_eq!(refused["error"]["param"], Value::Null, "{refused}");
    for revealing in ["PAN", "Aadhaar", "aadhaar", "pan", "registered", "another account", "in use"] {
        assert!(!refused["error"]["message"].as_str().unwrap_or_default().contains(revealing), "{refused}");
    }
    let body: Value = api.submit_kyc(&second, "BCDPE2345G", "234567890124").await?.json().await?;
    assert_eq!(body["status"], "verified");
    Ok(())
}

async fn racing_accounts_with_one_pan_get_exactly_one_winner(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    for round in 0..5u64 {
        let pan = format!("RACPE{:04}K", 1001 + round);
        let mut tasks = Vec::new();
        for n in 0..2u64 {
            let (_, token) = api.signed_in(&format!("race{round}-{n}@example.in")).await?;
            let aadhaar = aadhaar_with_check_digit(52_000_000_000 + round * 10 + n);
            let (api, pan) = (api.clone(), pan.clone());
            tasks.push(shared::tasks::spawn("test", async move {
                let response = api.submit_kyc(&token, &pan, &aadhaar).await?;
                let status = response.status();
                let body: Value = response.json().await?;
                Ok::<_, reqwest::Error>((status, body["error"]["code"].as_str().unwrap_or_default().to_owned()))
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await??);
        }
        outcomes.sort();
        assert_eq!(
            outcomes,
            [(StatusCode::OK, String::new()), (StatusCode::CONFLICT, "kyc_not_verifiable".into())],
            "round {round}"
        );
    }
    let dump = api.dump().await?;
    assert_eq!(
        dump.lines().filter(|l| l.starts_with("KYCDOC#")).count(),
        10,
        "one PAN and one Aadhaar claim per winner"
    );
    assert_eq!(dump.lines().filter(|l| l.starts_with("VAULT#")).count(), 10, "the losers stored nothing");
    Ok(())
}

async fn resubmission_releases_the_old_numbers(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (_, first) = api.signed_in("first@example.in").await?;
    let (_, second) = api.signed_in("second@example.in").await?;
    api.submit_kyc(&first, PAN, AADHAAR).await?.error_for_status()?;
    api.submit_kyc(&first, "BCDPE2345G", "234567890124").await?.error_for_status()?;
    let dump = api.dump().await?;
    assert_eq!(dump.lines().filter(|l| l.starts_with("VAULT#")).count(), 2, "old vault entries are erased");
    assert_eq!(dump.lines().filter(|l| l.starts_with("KYCDOC#")).count(), 0, "pending submissions claim nothing");
    // The first submission's numbers are free for someone else now.
    let body: Value = api.submit_kyc(&second, PAN, AADHAAR).await?.json().await?;
    assert_eq!(body["status"], "pending");
    Ok(())
}

async fn the_gate_admits_only_verified_accounts(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let store = api.state.store.as_ref();
    let (user, token) = api.unverified("gate@example.in").await?;
    let denied = |status: &str| format!("complete KYC verification first (current KYC status: {status})");

    // First the address: an unverified one takes no KYC (a squatter cannot attach an identity to someone
    // else's address), no top-up and no key, each a 403 with its own code.
    let error = kyc::require_verified(store, &user).await.err().ok_or("an unverified address passed the gate")?;
    assert_eq!((error.status().as_u16(), error.code()), (403, "email_not_verified"));
    let early = api.submit_kyc(&token, PAN, AADHAAR).await?;
    e2e::expect_error(early, reqwest::StatusCode::FORBIDDEN, "email_not_verified", None).await?;
    let topup =
        api.http.post(api.url("/v1/wallet/topups")).bearer_auth(&token).json(&json!({ "amount_paise": 10_000 }));
    e2e::expect_error(topup.send().await?, reqwest::StatusCode::FORBIDDEN, "email_not_verified", None).await?;
    let key = api.http.post(api.url("/v1/keys")).bearer_auth(&token).json(&json!({ "name": "k" }));
    e2e::expect_error(key.send().await?, reqwest::StatusCode::FORBIDDEN, "email_not_verified", None).await?;
    api.verify_email("gate@example.in").await?;

    let error = kyc::require_verified(store, &user).await.err().ok_or("not_submitted passed the gate")?;
    assert_eq!(
        (error.status().as_u16(), error.code(), error.to_string()),
        (403, "kyc_required", denied("not_submitted"))
    );

    api.submit_kyc(&token, PAN, AADHAAR).await?.error_for_status()?;
    let error = kyc::require_verified(store, &user).await.err().ok_or("pending passed the gate")?;
    assert_eq!(error.to_string(), denied("pending"));

    decide(&api, &user, json!({"decision": "reject", "reason": "blurred"})).await?.error_for_status()?;
    let error = kyc::require_verified(store, &user).await.err().ok_or("rejected passed the gate")?;
    assert_eq!(error.to_string(), denied("rejected"));
    let told = api.last_mail("gate@example.in", "kyc_rejected").await?;
    assert!(told.text.contains("for this reason: blurred."), "{}", told.text);

    api.submit_kyc(&token, PAN, AADHAAR).await?.error_for_status()?;
    decide(&api, &user, json!({"decision": "approve"})).await?.error_for_status()?;
    kyc::require_verified(store, &user).await?;
    Ok(())
}

async fn closure_retention_expires_kyc_data_five_years_later(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let store = api.state.store.as_ref();
    let (user, token) = api.signed_in("closing@example.in").await?;
    api.submit_kyc(&token, PAN, AADHAAR).await?.error_for_status()?;
    let closed_at = api.clock_now();
    // Five calendar years on (shared::retention's unit tests pin the leap-day arithmetic).
    let expected = closed_at.checked_add_months(chrono::Months::new(60)).ok_or("date")?.timestamp();

    let set =
        kyc::retain_after_closure(store, &user, closed_at, api.state.config.retention.kyc_years_after_closure).await?;
    assert_eq!(set, Some(expected));
    let dump = api.dump().await?;
    let kyc_lines: Vec<&str> =
        dump.lines().filter(|l| l.starts_with(&format!("USER#{user} KYC ")) || l.starts_with("VAULT#")).collect();
    assert_eq!(kyc_lines.len(), 3, "record and two vault entries: {dump}");
    assert!(!dump.contains("KYCDOC#"), "the claims are released, so the numbers can verify a new account");
    for line in kyc_lines {
        assert!(line.ends_with(&format!("Some({expected})")), "{line}");
    }
    let profile = dump.lines().find(|l| l.starts_with(&format!("USER#{user} PROFILE "))).unwrap_or_default();
    assert!(profile.ends_with("None"), "the account itself is not touched by the KYC rule");
    assert_eq!(kyc::retain_after_closure(store, "usr_without_kyc", closed_at, 5).await?, None);
    Ok(())
}

async fn no_full_number_in_stores_logs_or_answers(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (user, token) = api.signed_in("private@example.in").await?;
    let (pan, aadhaar) = ("PRVPE4321Q", "999999990019");
    let answer = api.submit_kyc(&token, pan, "9999 9999 0019").await?.text().await?;
    let in_use = {
        let (_, other) = api.signed_in("other@example.in").await?;
        api.submit_kyc(&other, pan, aadhaar).await?.text().await?
    };
    let status = api.http.get(api.url("/v1/kyc")).bearer_auth(&token).send().await?.text().await?;
    let decided = decide(&api, &user, json!({"decision": "approve"})).await?.text().await?;

    let dump = api.dump().await?;
    let logs = captured_logs();
    for (place, text) in [("store", &dump), ("logs", &logs), ("answers", &format!("{answer}{in_use}{status}{decided}"))]
    {
        for number in [pan, aadhaar, "9999 9999 0019"] {
            assert!(!text.contains(number), "{place} hold {number} in clear");
        }
    }
    assert!(logs.contains(&user), "the logs did capture this test's requests");
    assert!(dump.contains("XXXX XXXX 0019") && dump.contains("PRVPEXXXXQ"));

    // The owner (and only through the vault keys) can recover the numbers, e.g. for a data export.
    let record = api.state.store.kyc_record(&user).await?.ok_or("no record")?;
    let keys = api.state.kyc_keys()?;
    assert_eq!(kyc::reveal(api.state.store.as_ref(), keys, &record, DocumentKind::Pan).await?.as_deref(), Some(pan));
    assert_eq!(
        kyc::reveal(api.state.store.as_ref(), keys, &record, DocumentKind::Aadhaar).await?.as_deref(),
        Some(aadhaar)
    );
    Ok(())
}

async fn queue(api: &TestApi, query: &str) -> Result<reqwest::Response, reqwest::Error> {
    api.http.get(api.url(&format!("/v1/admin/kyc/queue{query}"))).bearer_auth("operator-secret").send().await
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn operators_see_the_queue_oldest_first_and_reveal_only_on_record(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let mut users = Vec::new();
    for (n, email) in ["first@example.in", "second@example.in", "third@example.in"].iter().enumerate() {
        let (user, token) = api.signed_in(email).await?;
        let pan = format!("QUEPE{:04}Q", n + 1);
        api.submit_kyc(&token, &pan, &aadhaar_with_check_digit(63_000_000_000 + n as u64)).await?.error_for_status()?;
        users.push((user, token, pan));
        api.clock.advance(chrono::Duration::minutes(1));
    }
    // Only operators; the queue is oldest first, with masked numbers and the account's details.
    assert_eq!(api.http.get(api.url("/v1/admin/kyc/queue")).send().await?.status(), StatusCode::UNAUTHORIZED);
    let listed: Value = queue(&api, "?limit=2").await?.error_for_status()?.json().await?;
    let data = listed["data"].as_array().ok_or("no list")?;
    let ids: Vec<&str> = data.iter().filter_map(|e| e["user_id"].as_str()).collect();
    assert_eq!(ids, vec![users[0].0.as_str(), users[1].0.as_str()]);
    assert_eq!(
        (data[0]["email"].clone(), data[0]["pan_masked"].clone()),
        (json!("first@example.in"), json!("QUEPEXXXXQ"))
    );
    assert!(
        data[0]["full_name"].is_string()
            && data[0]["date_of_birth"].is_string()
            && data[0]["aadhaar_masked"].is_string()
    );
    let text = listed.to_string();
    assert!(!text.contains(&users[0].2) && !text.contains(&aadhaar_with_check_digit(63_000_000_000)), "no full number");
    let cursor = listed["next_cursor"].as_str().ok_or("no next page")?;
    let rest: Value = queue(&api, &format!("?cursor={cursor}")).await?.error_for_status()?.json().await?;
    assert_eq!(rest["data"][0]["user_id"], json!(users[2].0));

    // Decided and resubmitted submissions leave or move: the queue always shows what waits now.
    decide(&api, &users[0].0, json!({ "decision": "approve" })).await?.error_for_status()?;
    api.submit_kyc(&users[1].1, &users[1].2, &aadhaar_with_check_digit(63_000_000_001)).await?.error_for_status()?;
    let now: Value = queue(&api, "").await?.error_for_status()?.json().await?;
    let ids: Vec<&str> =
        now["data"].as_array().ok_or("no list")?.iter().filter_map(|e| e["user_id"].as_str()).collect();
    assert_eq!(ids, vec![users[2].0.as_str(), users[1].0.as_str()], "the resubmission waits from its new time, once");

    // A reveal needs a reason, is recorded with who and when before anything is shown, and shows the number.
    let reveal = |body: Value| {
        api.http
            .post(api.url(&format!("/v1/admin/kyc/{}/reveal", users[2].0)))
            .bearer_auth("operator-secret-meera")
            // A name the caller claims counts for nothing: the token says who it is.
            .header("x-inferex-operator", "someone-else@inferex.ai")
            .json(&body)
            .send()
    };
    expect_error(
        reveal(json!({ "document": "pan" })).await?,
        StatusCode::BAD_REQUEST,
        "invalid_reason",
        Some("reason"),
    )
    .await?;
    assert_eq!(reveal(json!({ "document": "passport", "reason": "x" })).await?.status(), StatusCode::BAD_REQUEST);
    let anonymous = api.http.post(api.url(&format!("/v1/admin/kyc/{}/reveal", users[2].0)));
    let anonymous = anonymous.json(&json!({ "document": "pan", "reason": "x" })).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let shown = reveal(json!({ "document": "pan", "reason": "name on PAN looks cropped" })).await?;
    assert_eq!(shown.headers()["cache-control"], "no-store");
    let shown: Value = shown.error_for_status()?.json().await?;
    assert_eq!((shown["number"].clone(), shown["revealed_to"].clone()), (json!(users[2].2), json!("meera@inferex.ai")));
    let audit = api.dump().await?;
    let line = audit.lines().find(|l| l.contains("\"decision\":\"reveal\"")).ok_or("no audit record of the reveal")?;
    assert!(
        line.contains("meera@inferex.ai") && line.contains("\"document\":\"pan\"") && line.contains("cropped"),
        "{line}"
    );
    assert!(!line.contains(&users[2].2), "the audit names the number, never holds it");
    // A decision cannot be a reveal.
    let sneaky = decide(&api, &users[2].0, json!({ "decision": "reveal" })).await?;
    expect_error(sneaky, StatusCode::BAD_REQUEST, "invalid_decision", Some("decision")).await?;
    Ok(())
}
