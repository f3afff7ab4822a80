//! KYC as operators and the rules see it, on both stores: the review queue with the provider's evidence,
//! decisions, the PAN-only reveal, the gate, the retention applied at closure, and the one-time erasure of
//! the full Aadhaar numbers held before DigiLocker.

use e2e::{Backend, TestApi, TestResult, captured_logs, expect_error, on_both_stores, operators_secret, valid_pan};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::{Config, KycMode};
use shared::kyc::{self, DocumentKind, KycRecord, KycStore, VaultEntry};
use shared::secrets::SecretString;
use shared::store::{Condition, Item, Put, Table, schema};

on_both_stores!(
    manual_mode_puts_complete_submissions_before_an_operator,
    the_queue_shows_the_providers_evidence_and_never_a_number,
    operator_routes_need_the_token_and_vanish_without_it,
    only_the_pan_can_be_revealed_and_only_on_record,
    the_gate_admits_only_verified_accounts,
    closure_retention_expires_kyc_data_five_years_later,
    the_erasure_removes_every_legacy_aadhaar_number_once,
    a_closed_account_is_asked_about_no_more,
    a_rejection_stands_whatever_digilocker_answers_later,
);

/// `make run`'s data folder (the embedded store's files and keys) after the erasure: no file holds a legacy
/// number, in any form.
#[tokio::test]
async fn no_file_of_the_data_folder_holds_a_legacy_number_after_the_erasure() -> TestResult {
    let dir = std::env::temp_dir().join(format!("inferex-erasure-{}", shared::secrets::random_suffix()));
    let (state, store) = shared::state::AppState::embedded(&dir, Config::default(), "http://127.0.0.1:9")?;
    let number = e2e::aadhaar_with_check_digit(82_000_000_001);
    let now = chrono::Utc::now();
    plant_legacy_in(state.store.as_ref(), state.kyc_keys()?, "usr_legacy_file", &number, (7, now)).await?;
    let done = kyc::erasure::run(state.store.as_ref(), now, 10).await?;
    assert_eq!((done.erased, done.done_at.is_some()), (1, true));
    store.checkpointer().ok_or("the store has a file")?.round().await;
    let spaced = format!("{} {} {}", &number[..4], &number[4..8], &number[8..]);
    let mut files = vec![dir.clone()];
    let mut read = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path)?.filter_map(|e| e.ok().map(|e| e.path())));
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(number.as_str()) && !text.contains(&spaced), "{} holds the number", path.display());
        read += 1;
    }
    assert!(read >= 2, "the store's file and the keys were read");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Two operators, each with their own token: every action is recorded under the name of the token used.
fn operators() -> String {
    operators_secret(&[
        ("ravi@inferex.ai", "operator-secret", &["kyc_reviewer"]),
        ("meera@inferex.ai", "operator-secret-meera", &["kyc_reviewer", "admin"]),
    ])
}

fn manual() -> Config {
    Config { kyc_mode: KycMode::Manual, admin_token: Some(SecretString::new(operators())), ..Config::default() }
}

fn with_operators() -> Config {
    Config { admin_token: Some(SecretString::new(operators())), ..Config::default() }
}

async fn decide(
    api: &TestApi,
    user_id: &str,
    body: Value,
) -> Result<reqwest::Response, Box<dyn std::error::Error + Send + Sync>> {
    let url = api.url(&format!("/v1/admin/kyc/{user_id}/decision"));
    let session = api.operator_session("operator-secret").await?;
    Ok(api.http.post(url).bearer_auth(session).json(&body).send().await?)
}

async fn queue(api: &TestApi) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let session = api.operator_session("operator-secret").await?;
    let answer = api.http.get(api.url("/v1/admin/kyc/queue")).bearer_auth(session).send().await?;
    Ok(answer.error_for_status()?.json().await?)
}

async fn manual_mode_puts_complete_submissions_before_an_operator(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (asha, asha_token) = api.signed_in("asha@example.in").await?;
    let (ravi, ravi_token) = api.signed_in("ravi@example.in").await?;
    for (token, n) in [(&asha_token, 0), (&ravi_token, 1)] {
        api.submit_kyc(token, &valid_pan("MANPE", n)).await?.error_for_status()?;
        assert_eq!(api.share_from_digilocker(token, true).await?["status"], "in_review");
    }
    let approved: Value = decide(&api, &asha, json!({"decision": "approve"})).await?.error_for_status()?.json().await?;
    assert_eq!(
        (approved["status"].clone(), approved["decided_by"].clone()),
        (json!("verified"), json!("ravi@inferex.ai"))
    );
    let twice = decide(&api, &asha, json!({"decision": "reject", "reason": "late"})).await?;
    expect_error(twice, StatusCode::CONFLICT, "kyc_already_verified", None).await?;
    let no_reason = decide(&api, &ravi, json!({"decision": "reject"})).await?;
    expect_error(no_reason, StatusCode::BAD_REQUEST, "invalid_reason", Some("reason")).await?;
    let sneaky = decide(&api, &ravi, json!({"decision": "reveal"})).await?;
    expect_error(sneaky, StatusCode::BAD_REQUEST, "invalid_decision", Some("decision")).await?;
    decide(&api, &ravi, json!({"decision": "reject", "reason": "Photo on the PAN is not yours"}))
        .await?
        .error_for_status()?;
    let seen = api.kyc_status(&ravi_token).await?;
    assert_eq!(
        (seen["status"].clone(), seen["rejection_reason"].clone()),
        (json!("rejected"), json!("Photo on the PAN is not yours"))
    );
    let dump = api.dump().await?;
    let audit: Vec<&str> = dump.lines().filter(|l| l.contains(&format!("USER#{ravi} KYCDECISION#"))).collect();
    assert!(audit.len() == 1 && audit[0].contains("\"decided_by\":\"ravi@inferex.ai\""), "{dump}");
    // A rejected person may submit again, and a pending step cannot be decided.
    let again: Value = api.submit_kyc(&ravi_token, &valid_pan("MANPE", 2)).await?.error_for_status()?.json().await?;
    assert_eq!((again["status"].clone(), again["rejection_reason"].clone()), (json!("pending"), Value::Null));
    let early = decide(&api, &ravi, json!({"decision": "approve"})).await?;
    expect_error(early, StatusCode::CONFLICT, "kyc_not_pending", None).await?;
    let unknown = decide(&api, "usr_nobody", json!({"decision": "approve"})).await?;
    expect_error(unknown, StatusCode::NOT_FOUND, "kyc_not_found", None).await?;
    Ok(())
}

async fn the_queue_shows_the_providers_evidence_and_never_a_number(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, with_operators()).await?;
    // A partial name match, then a DigiLocker name that differs: both wait for a person, oldest first.
    let (partial, partial_token) = api.signed_in("partial@example.in").await?;
    api.submit_kyc(&partial_token, "PRTPE0004P").await?.error_for_status()?;
    api.clock.advance(chrono::Duration::minutes(1));
    let (_, named_token) = api.signed_in("named@example.in").await?;
    api.submit_kyc(&named_token, &valid_pan("NAMPE", 0)).await?.error_for_status()?;
    let started: Value = api.start_digilocker(&named_token).await?.error_for_status()?.json().await?;
    let url = started["url"].as_str().ok_or("no url")?;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let form = [("name", "Asha R Menon"), ("dob", "1990-04-12"), ("aadhaar", "345678901238"), ("decision", "allow")];
    let back = no_redirects.post(url).form(&form).send().await?;
    api.return_from_digilocker(back.headers()["location"].to_str()?).await?;

    let listed = queue(&api).await?;
    let data = listed["data"].as_array().ok_or("no list")?;
    assert_eq!(data.len(), 2, "{listed}");
    assert_eq!(
        (data[0]["user_id"].clone(), data[0]["review_reason"].clone()),
        (json!(partial), json!("partial_name_match"))
    );
    assert_eq!(data[0]["pan_check"]["name_match_score"], 60);
    assert_eq!(data[0]["pan_check"]["registered_name"], "ASHA RAO KUMAR");
    assert_eq!(data[0]["pan_check"]["date_of_birth_match"], true);
    assert_eq!(
        (data[1]["review_reason"].clone(), data[1]["aadhaar_name"].clone()),
        (json!("aadhaar_details_differ"), json!("Asha R Menon"))
    );
    assert_eq!(data[1]["aadhaar_masked"], "XXXX XXXX 1238");
    let text = listed.to_string();
    assert!(!text.contains("PRTPE0004P") && !text.contains("345678901238"), "no full number: {text}");

    // Approving the partial match passes the PAN; DigiLocker is still the customer's to do.
    let approved: Value =
        decide(&api, &partial, json!({"decision": "approve"})).await?.error_for_status()?.json().await?;
    assert_eq!((approved["status"].clone(), approved["pan_status"].clone()), (json!("pending"), json!("passed")));
    assert_eq!(api.share_from_digilocker(&partial_token, true).await?["status"], "verified");
    assert_eq!(queue(&api).await?["data"].as_array().map(Vec::len), Some(1));
    Ok(())
}

async fn operator_routes_need_the_token_and_vanish_without_it(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let (user, token) = api.signed_in("op@example.in").await?;
    api.submit_kyc(&token, &valid_pan("OPRPE", 0)).await?.error_for_status()?;
    let body = json!({"decision": "approve"});
    for path in [format!("/v1/admin/kyc/{user}/decision"), "/v1/admin/kyc/aadhaar-erasure".into()] {
        let url = api.url(&path);
        let none = if path.ends_with("erasure") { api.http.get(&url) } else { api.http.post(&url).json(&body) };
        expect_error(none.send().await?, StatusCode::UNAUTHORIZED, "invalid_operator_session", None).await?;
    }
    let url = api.url(&format!("/v1/admin/kyc/{user}/decision"));
    // The bare operator token opens nothing but the sign-in; a customer's session is no operator's.
    for bearer in ["operator-secret", "operator-secreT", token.as_str()] {
        let refused = api.http.post(&url).bearer_auth(bearer).json(&body).send().await?;
        expect_error(refused, StatusCode::UNAUTHORIZED, "invalid_operator_session", None).await?;
    }
    let wrong = api.http.post(api.url("/v1/admin/totp/enrol")).bearer_auth("operator-secreT").send().await?;
    expect_error(wrong, StatusCode::UNAUTHORIZED, "invalid_admin_token", None).await?;
    let closed = TestApi::start(backend).await?;
    let disabled =
        closed.http.post(closed.url("/v1/admin/kyc/usr_x/decision")).bearer_auth("anything").json(&body).send().await?;
    expect_error(disabled, StatusCode::NOT_FOUND, "not_found", None).await?;
    Ok(())
}

async fn only_the_pan_can_be_revealed_and_only_on_record(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, with_operators()).await?;
    let (user, token) = api.signed_in("reveal@example.in").await?;
    let pan = valid_pan("REVPE", 0);
    api.pass_kyc(&token, &pan).await?;
    let meera = api.operator_session("operator-secret-meera").await?;
    let reveal = |body: Value| {
        api.http.post(api.url(&format!("/v1/admin/kyc/{user}/reveal"))).bearer_auth(&meera).json(&body).send()
    };
    let no_reason = reveal(json!({ "document": "pan" })).await?;
    expect_error(no_reason, StatusCode::BAD_REQUEST, "invalid_reason", Some("reason")).await?;
    let aadhaar = reveal(json!({ "document": "aadhaar", "reason": "check" })).await?;
    expect_error(aadhaar, StatusCode::BAD_REQUEST, "invalid_parameter", Some("document")).await?;
    let shown = reveal(json!({ "document": "pan", "reason": "name on PAN looks cropped" })).await?;
    assert_eq!(shown.headers()["cache-control"], "no-store");
    let shown: Value = shown.error_for_status()?.json().await?;
    assert_eq!((shown["number"].clone(), shown["revealed_to"].clone()), (json!(pan), json!("meera@inferex.ai")));
    let dump = api.dump().await?;
    let reveals: Vec<&str> = dump.lines().filter(|l| l.contains("\"decision\":\"reveal\"")).collect();
    assert_eq!(reveals.len(), 1, "only the reveal that showed something is recorded: {dump}");
    assert!(reveals[0].contains("meera@inferex.ai") && reveals[0].contains("cropped") && !reveals[0].contains(&pan));
    Ok(())
}

async fn the_gate_admits_only_verified_accounts(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, manual()).await?;
    let store = api.state.store.as_ref();
    let (user, token) = api.unverified("gate@example.in").await?;
    let denied = |status: &str| format!("complete KYC verification first (current KYC status: {status})");
    let error = kyc::require_verified(store, &user).await.err().ok_or("an unverified address passed the gate")?;
    assert_eq!((error.status().as_u16(), error.code()), (403, "email_not_verified"));
    let early = api.submit_kyc(&token, &valid_pan("GATPE", 0)).await?;
    expect_error(early, StatusCode::FORBIDDEN, "email_not_verified", None).await?;
    api.verify_email("gate@example.in").await?;
    for (step, status) in [("none", "not_submitted"), ("pan", "pending"), ("digilocker", "in_review")] {
        if step == "pan" {
            api.submit_kyc(&token, &valid_pan("GATPE", 0)).await?.error_for_status()?;
        }
        if step == "digilocker" {
            api.share_from_digilocker(&token, true).await?;
        }
        let error = kyc::require_verified(store, &user).await.err().ok_or("passed the gate")?;
        assert_eq!((error.code(), error.to_string()), ("kyc_required", denied(status)));
        let topup =
            api.http.post(api.url("/v1/wallet/topups")).bearer_auth(&token).json(&json!({ "amount_paise": 10_000 }));
        expect_error(topup.send().await?, StatusCode::FORBIDDEN, "kyc_required", None).await?;
    }
    decide(&api, &user, json!({"decision": "reject", "reason": "blurred"})).await?.error_for_status()?;
    assert_eq!(kyc::require_verified(store, &user).await.err().map(|e| e.to_string()), Some(denied("rejected")));
    let told = api.last_mail("gate@example.in", "kyc_rejected").await?;
    assert!(told.text.contains("for this reason: blurred."), "{}", told.text);
    api.submit_kyc(&token, &valid_pan("GATPE", 1)).await?.error_for_status()?;
    api.share_from_digilocker(&token, true).await?;
    decide(&api, &user, json!({"decision": "approve"})).await?.error_for_status()?;
    kyc::require_verified(store, &user).await?;
    Ok(())
}

async fn closure_retention_expires_kyc_data_five_years_later(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let store = api.state.store.as_ref();
    let (user, token) = api.signed_in("closing@example.in").await?;
    api.pass_kyc(&token, &valid_pan("CLOPE", 0)).await?;
    let closed_at = api.clock_now();
    let expected = closed_at.checked_add_months(chrono::Months::new(60)).ok_or("date")?.timestamp();
    let years = api.state.config.retention.kyc_years_after_closure;
    assert_eq!(kyc::retain_after_closure(store, &user, closed_at, years).await?, Some(expected));
    let dump = api.dump().await?;
    let kept: Vec<&str> =
        dump.lines().filter(|l| l.starts_with(&format!("USER#{user} KYC")) || l.starts_with("VAULT#")).collect();
    assert_eq!(kept.len(), 4, "record, the PAN's vault entry, two consent records: {dump}");
    for line in kept {
        assert!(line.ends_with(&format!("Some({expected})")), "{line}");
    }
    assert!(!dump.contains("KYCDOC#"), "the claim is released, so the PAN can verify a new account");
    assert_eq!(kyc::retain_after_closure(store, "usr_without_kyc", closed_at, 5).await?, None);
    Ok(())
}

/// Writes a submission as it was stored before DigiLocker: the full Aadhaar number sealed in the vault,
/// its fingerprint claimed, the record pointing at both.
async fn plant_legacy(api: &TestApi, user: &str, aadhaar: &str, n: u64) -> TestResult {
    plant_legacy_in(api.state.store.as_ref(), api.state.kyc_keys()?, user, aadhaar, (n, api.clock_now())).await
}

async fn plant_legacy_in(
    store: &dyn shared::store::ItemStore,
    keys: &kyc::KycKeys,
    user: &str,
    aadhaar: &str,
    (n, now): (u64, chrono::DateTime<chrono::Utc>),
) -> TestResult {
    let data_key = keys.data_keys.generate().await?;
    let record: KycRecord = serde_json::from_value(json!({
        "user_id": user, "status": "verified", "name_on_pan": "Legacy User", "pan_masked": "LEGPEXXXXL",
        "pan_ref": format!("vref_legacypan{n}"), "pan_fingerprint": format!("fp-pan-{n}"),
        "aadhaar_masked": format!("XXXX XXXX {}", &aadhaar[8..]), "aadhaar_ref": format!("vref_legacyaadhaar{n}"),
        "aadhaar_fingerprint": format!("fp-aadhaar-{n}"), "submitted_at": now, "verified_at": now, "revision": 1,
    }))?;
    for (reference, kind, number) in [
        (&record.pan_ref, DocumentKind::Pan, "LEGPE1231L"),
        (record.aadhaar_ref.as_ref().ok_or("ref")?, DocumentKind::Aadhaar, aadhaar),
    ] {
        let aad = format!("{user}:{}", kind.as_str());
        let sealed = kyc::vault::seal(&data_key, keys.data_keys.provider(), number.as_bytes(), aad.as_bytes())?;
        let entry = VaultEntry { user_id: user.to_owned(), kind, sealed, created_at: now };
        let item = Item::from_record(schema::vault_pk(reference), schema::sk::SECRET, &entry, None)?;
        store.put(Put { table: Table::Vault, item, condition: Condition::Always }).await?;
    }
    let claim_pk = schema::kyc_claim_pk(&format!("fp-aadhaar-{n}"));
    let claim = Item::from_record(claim_pk, schema::sk::CLAIM, &json!({"user_id": user, "kind": "aadhaar"}), None)?;
    store.put(Put { table: Table::Main, item: claim, condition: Condition::Always }).await?;
    let item = Item::from_record(schema::user_pk(user), schema::sk::KYC, &record, None)?;
    store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
    Ok(())
}

async fn the_erasure_removes_every_legacy_aadhaar_number_once(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, with_operators()).await?;
    let store = api.state.store.as_ref();
    let numbers = [e2e::aadhaar_with_check_digit(81_000_000_001), e2e::aadhaar_with_check_digit(81_000_000_002)];
    let mut users = Vec::new();
    for (n, number) in numbers.iter().enumerate() {
        let (user, _) = api.signed_in(&format!("legacy{n}@example.in")).await?;
        plant_legacy(&api, &user, number, n as u64).await?;
        users.push(user);
    }
    let (_, current) = api.signed_in("current@example.in").await?;
    api.pass_kyc(&current, &valid_pan("CURPE", 0)).await?;
    let legacy = store.kyc_record(&users[0]).await?.ok_or("no record")?;
    let planted = kyc::reveal(store, api.state.kyc_keys()?, &legacy, DocumentKind::Aadhaar).await?;
    assert_eq!(planted.as_deref(), Some(numbers[0].as_str()), "the legacy numbers are really there");

    // A run of one small page stops with its place saved; the next resumes there and finishes the walk.
    let first = kyc::erasure::run_pages(store, api.clock_now(), 1, 2).await?;
    assert!(first.done_at.is_none() && first.after.is_some(), "{first:?}");
    let done = kyc::erasure::run(store, api.clock_now(), 100).await?;
    assert_eq!((done.erased, done.done_at.is_some()), (2, true), "{first:?} {done:?}");
    assert_eq!(kyc::erasure::run(store, api.clock_now(), 100).await?, done, "a finished erasure does nothing");
    for (user, number) in users.iter().zip(&numbers) {
        let record = store.kyc_record(user).await?.ok_or("no record")?;
        assert_eq!((record.aadhaar_ref.clone(), record.aadhaar_fingerprint.clone()), (None, None));
        assert_eq!(record.aadhaar_masked.as_deref(), Some(format!("XXXX XXXX {}", &number[8..]).as_str()));
        assert!(record.legacy_aadhaar_erased_at.is_some() && record.status == shared::accounts::KycStatus::Verified);
        assert_eq!(kyc::reveal(store, api.state.kyc_keys()?, &record, DocumentKind::Aadhaar).await?, None);
    }
    let dump = api.dump().await?;
    assert!(!dump.contains("\"kind\":\"aadhaar\""), "no Aadhaar vault entry or claim is left: {dump}");
    assert_eq!(dump.lines().filter(|l| l.starts_with("VAULT#")).count(), 3, "the PANs' entries stay");
    let state: Value = api
        .http
        .get(api.url("/v1/admin/kyc/aadhaar-erasure"))
        .bearer_auth(api.operator_session("operator-secret").await?)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(state["erased"], 2);
    let logs = captured_logs();
    for number in &numbers {
        assert!(!logs.contains(number.as_str()) && !dump.contains(number.as_str()), "{number} is nowhere");
    }
    Ok(())
}

/// A check left pending when the account closes: the closure drops it from the jobs' retries (and the
/// queue), so its PAN goes to the provider no more and it holds up no other check.
async fn a_closed_account_is_asked_about_no_more(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("leaving@example.in").await?;
    api.kyc.set_outage(true);
    api.submit_kyc(&token, &valid_pan("LEAPE", 0)).await?.error_for_status()?;
    let (_, staying) = api.signed_in("staying@example.in").await?;
    api.submit_kyc(&staying, &valid_pan("STAPE", 0)).await?.error_for_status()?;
    let close = api.http.delete(api.url("/v1/account")).bearer_auth(&token);
    let closed = close.json(&json!({ "password": "correct horse battery" })).send().await?;
    assert_eq!(closed.status(), StatusCode::ACCEPTED);
    api.kyc.set_outage(false);
    api.clock.advance(chrono::Duration::minutes(3));
    let asked = api.kyc.calls("pan");
    let report = kyc::retry_pending_checks(&api.state.kyc()?, std::time::Duration::from_secs(60)).await?;
    assert_eq!((report.asked, report.failed), (1, 0), "only the open account's check");
    assert_eq!(api.kyc.calls("pan"), asked + 1);
    assert_eq!(api.kyc_status(&staying).await?["pan_status"], "passed");
    assert_eq!(api.dump().await?.lines().filter(|l| l.starts_with("KYCRETRY ")).count(), 0);
    Ok(())
}

/// An operator's rejection is final for that submission: a DigiLocker session the customer finishes
/// afterwards changes nothing, and the provider is asked about a session at most once every few seconds
/// however often the return address is opened.
async fn a_rejection_stands_whatever_digilocker_answers_later(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, with_operators()).await?;
    let (user, token) = api.signed_in("partial@example.in").await?;
    api.submit_kyc(&token, "PRTPE0014P").await?.error_for_status()?;
    let started: Value = api.start_digilocker(&token).await?.error_for_status()?.json().await?;
    let url = started["url"].as_str().ok_or("no url")?;
    decide(&api, &user, json!({"decision": "reject", "reason": "The PAN is someone else's"}))
        .await?
        .error_for_status()?;
    let back = dev_server::kyc_standin::submit_defaults(&api.http, url, true).await?;
    let polls = api.kyc.calls("digilocker-status");
    for _ in 0..3 {
        api.return_from_digilocker(&back).await?;
    }
    assert_eq!(api.kyc.calls("digilocker-status"), polls, "a closed session is not asked about");
    let kyc = api.kyc_status(&token).await?;
    assert_eq!(
        (kyc["status"].clone(), kyc["rejection_reason"].clone()),
        (json!("rejected"), json!("The PAN is someone else's"))
    );
    assert_eq!(queue(&api).await?["data"].as_array().map(Vec::len), Some(0));

    // An open session: three returns in a row ask the provider once.
    let (_, other) = api.signed_in("other@example.in").await?;
    api.submit_kyc(&other, &valid_pan("OTHPE", 0)).await?.error_for_status()?;
    let started: Value = api.start_digilocker(&other).await?.error_for_status()?.json().await?;
    let session = started["url"].as_str().ok_or("no url")?.rsplit('/').next().unwrap_or_default().to_owned();
    let polls = api.kyc.calls("digilocker-status");
    for _ in 0..3 {
        api.return_from_digilocker(&api.url(&format!("/v1/kyc/digilocker/return?verification_id={session}"))).await?;
    }
    assert_eq!(api.kyc.calls("digilocker-status"), polls + 1);
    Ok(())
}
