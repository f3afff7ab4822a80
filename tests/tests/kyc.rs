//! KYC end to end over HTTP, on both stores, against the KYC provider's stand-in (Cashfree's wire format):
//! validation, every provider outcome, DigiLocker (only the last four digits kept), businesses by GSTIN,
//! consent records, no registration oracle, the jobs' retries.

use std::sync::Arc;

use e2e::{Backend, TestApi, TestResult, captured_logs, error_body, expect_error, on_both_stores, valid_pan};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::kyc::steps::NOT_MATCHING;

on_both_stores!(
    fields_are_validated_and_aadhaar_numbers_refused,
    a_person_is_verified_by_the_pan_and_digilocker_keeping_four_digits,
    every_pan_outcome_of_the_provider_is_answered,
    a_silent_provider_leaves_the_check_pending_until_the_jobs_get_an_answer,
    digilocker_details_are_matched_with_the_account,
    a_business_verifies_with_its_gstin_and_the_pan_inside,
    a_duplicate_pan_reads_like_any_mismatch,
    racing_accounts_with_one_pan_get_exactly_one_winner,
);

async fn fields_are_validated_and_aadhaar_numbers_refused(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("v@example.in").await?;
    let pan = valid_pan("ABCPE", 0);
    let cases = [
        (json!({"pan": "ABCCE1231F", "name_on_pan": "A", "consent": true}), "invalid_pan", "pan"),
        (json!({"pan": "ABCPE0000F", "name_on_pan": "A", "consent": true}), "invalid_pan", "pan"),
        (json!({"pan": pan, "name_on_pan": "  ", "consent": true}), "invalid_name_on_pan", "name_on_pan"),
        (json!({"pan": pan, "name_on_pan": "A"}), "consent_required", "consent"),
        (json!({"pan": pan, "name_on_pan": "A", "consent": false}), "consent_required", "consent"),
        (json!({"pan": pan, "name_on_pan": "A", "consent": "yes"}), "invalid_type", "consent"),
        (json!({"name_on_pan": "A", "consent": true}), "missing_field", "pan"),
        (json!({"pan": pan, "name_on_pan": "A", "consent": true, "extra": 1}), "invalid_type", "extra"),
        (
            json!({"pan": "AAPFU0931F", "gstin": "27AAPFU0931F1ZY", "name_on_pan": "A", "consent": true}),
            "invalid_gstin",
            "gstin",
        ),
        (
            json!({"pan": "AAPFU0932F", "gstin": "27AAPFU0939F1ZV", "name_on_pan": "A", "consent": true}),
            "invalid_gstin",
            "gstin",
        ),
        // Any body with an Aadhaar number, whatever else it holds: the DigiLocker step is named instead.
        (
            json!({"pan": pan, "aadhaar": "234123412346", "name_on_pan": "A", "consent": true}),
            "aadhaar_not_accepted",
            "aadhaar",
        ),
        (json!({"aadhaar": 234_123_412_346_u64}), "aadhaar_not_accepted", "aadhaar"),
    ];
    for (body, code, param) in cases {
        let answer = api.submit_kyc_body(&token, &body).await?;
        let text = error_body(answer, StatusCode::BAD_REQUEST, code, Some(param)).await?;
        assert!(!text.to_string().contains("234123412346"), "never repeated: {text}");
    }
    let told = api.submit_kyc_body(&token, &json!({"aadhaar": "234123412346"})).await?.text().await?;
    assert!(told.contains("DigiLocker"), "{told}");
    let anonymous = api.http.get(api.url("/v1/kyc")).send().await?;
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_session", None).await?;
    assert!(!api.dump().await?.contains("VAULT#"), "refused submissions store nothing");
    assert_eq!(api.kyc.calls("pan"), 0, "nor reach the provider");
    Ok(())
}

async fn a_person_is_verified_by_the_pan_and_digilocker_keeping_four_digits(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.signed_in("asha@example.in").await?;
    assert_eq!(api.kyc_status(&token).await?["status"], "not_submitted");
    let early = api.start_digilocker(&token).await?;
    expect_error(early, StatusCode::CONFLICT, "kyc_step_not_ready", None).await?;

    // Lower case is accepted and normalised; the PAN passes, DigiLocker comes next.
    let submitted: Value = api.submit_kyc(&token, "abcpe1231f").await?.error_for_status()?.json().await?;
    assert_eq!(
        (submitted["status"].clone(), submitted["pan_status"].clone(), submitted["aadhaar_status"].clone()),
        (json!("pending"), json!("passed"), json!("not_started"))
    );
    assert_eq!((submitted["pan_masked"].clone(), submitted["holder"].clone()), (json!("ABCPEXXXXF"), json!("person")));
    let gate = api.http.post(api.url("/v1/keys")).bearer_auth(&token).json(&json!({ "name": "k" })).send().await?;
    expect_error(gate, StatusCode::FORBIDDEN, "kyc_required", None).await?;

    let kyc = api.share_from_digilocker(&token, true).await?;
    assert_eq!((kyc["status"].clone(), kyc["aadhaar_status"].clone()), (json!("verified"), json!("passed")));
    assert_eq!(kyc["aadhaar_masked"], "XXXX XXXX 2346");
    let account: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(account["kyc_status"], "verified");
    let key = api.http.post(api.url("/v1/keys")).bearer_auth(&token).json(&json!({ "name": "k" })).send().await?;
    assert_eq!(key.status(), StatusCode::CREATED, "the gate opens");
    assert!(api.last_mail("asha@example.in", "kyc_approved").await.is_ok());

    let again = api.submit_kyc(&token, &valid_pan("ABCPE", 9)).await?;
    expect_error(again, StatusCode::CONFLICT, "kyc_already_verified", None).await?;
    let again = api.start_digilocker(&token).await?;
    expect_error(again, StatusCode::CONFLICT, "kyc_already_verified", None).await?;

    // Consent records: what was checked, with whom, when, for which purpose; the PAN in the vault only.
    let dump = api.dump().await?;
    let consents: Vec<&str> = dump.lines().filter(|l| l.starts_with(&format!("USER#{user} KYCCONSENT#"))).collect();
    assert_eq!(consents.len(), 2, "{dump}");
    assert!(consents.iter().all(|l| l.contains("\"provider\":\"cashfree\"") && l.contains("\"purpose\":\"")));
    assert!(consents.iter().any(|l| l.contains("\"check\":\"aadhaar_digilocker\"")));
    assert_eq!(dump.lines().filter(|l| l.starts_with("VAULT#")).count(), 1, "the PAN's entry alone: {dump}");
    let logs = captured_logs();
    for (place, text) in [("store", &dump), ("logs", &logs), ("answer", &kyc.to_string())] {
        for number in ["234123412346", "ABCPE1231F", "Stand-in Parent", "560001"] {
            assert!(!e2e::mentions(text, number), "{place} holds {number}");
        }
    }
    let open_sessions = dump.lines().filter(|l| l.starts_with("KYCDIGILOCKER#")).count();
    assert_eq!(open_sessions, 0, "a finished DigiLocker session is closed");
    let no_id = api.http.get(api.url("/v1/kyc/digilocker/return")).send().await?;
    expect_error(no_id, StatusCode::BAD_REQUEST, "invalid_parameter", Some("verification_id")).await?;
    Ok(())
}

async fn every_pan_outcome_of_the_provider_is_answered(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let cases = [
        ("OUTPE0004O", StatusCode::OK, "in_review", "in_review", ""),
        ("OUTPE0005O", StatusCode::CONFLICT, "rejected", "failed", NOT_MATCHING),
        ("OUTPE0006O", StatusCode::CONFLICT, "rejected", "failed", "date of birth on your account does not match"),
        ("OUTPE0007O", StatusCode::CONFLICT, "rejected", "failed", "has no record of this PAN"),
        ("OUTPE0009O", StatusCode::CONFLICT, "rejected", "failed", "deleted or deactivated"),
        ("OUTPE0008O", StatusCode::OK, "pending", "pending", ""),
    ];
    for (n, (pan, status, overall, pan_status, reason)) in cases.into_iter().enumerate() {
        let (_, token) = api.signed_in(&format!("outcome{n}@example.in")).await?;
        let answer = api.submit_kyc(&token, pan).await?;
        assert_eq!(answer.status(), status, "{pan}");
        let text = answer.text().await?;
        assert!(text.contains(reason), "{pan}: {text}");
        if status == StatusCode::CONFLICT {
            assert!(text.contains("kyc_not_verifiable"), "{pan}: {text}");
        }
        let kyc = api.kyc_status(&token).await?;
        assert_eq!((kyc["status"].clone(), kyc["pan_status"].clone()), (json!(overall), json!(pan_status)), "{pan}");
        if overall == "rejected" {
            assert!(kyc["rejection_reason"].as_str().is_some_and(|r| r.contains(reason)), "{kyc}");
            assert!(api.last_mail(&format!("outcome{n}@example.in"), "kyc_rejected").await.is_ok());
        }
    }
    let dump = api.dump().await?;
    assert_eq!(dump.lines().filter(|l| l.starts_with("KYCQUEUE ")).count(), 1, "the partial match waits for a person");
    assert_eq!(
        dump.lines().filter(|l| l.starts_with("KYCRETRY ")).count(),
        1,
        "the unanswered check waits for the jobs"
    );
    assert!(!dump.contains("KYCDOC#"), "nobody was verified, so nothing is claimed");
    assert!(!dump.contains("RAVI SHANKAR VERMA"), "a failed check keeps no registered name: it is not the customer's");
    Ok(())
}

async fn a_silent_provider_leaves_the_check_pending_until_the_jobs_get_an_answer(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, slow) = api.signed_in("slow@example.in").await?;
    let (_, down) = api.signed_in("down@example.in").await?;
    api.kyc.set_delay(e2e::KYC_ANSWER_TIMEOUT + std::time::Duration::from_secs(1));
    let waited: Value = api.submit_kyc(&slow, &valid_pan("SLOPE", 0)).await?.error_for_status()?.json().await?;
    assert_eq!((waited["status"].clone(), waited["pan_status"].clone()), (json!("pending"), json!("pending")));
    api.kyc.set_delay(std::time::Duration::ZERO);
    api.kyc.set_outage(true);
    let refused: Value = api.submit_kyc(&down, &valid_pan("DWNPE", 0)).await?.error_for_status()?.json().await?;
    assert_eq!(refused["pan_status"], "pending", "never passed without an answer");

    // The jobs leave a check just made alone (its request may still wait for the answer), ask again while
    // the provider is down (still pending), then once it answers.
    let ctx = api.state.kyc()?;
    let budget = std::time::Duration::from_secs(60);
    assert_eq!(shared::kyc::retry_pending_checks(&ctx, budget).await?.asked, 0, "settling");
    api.clock.advance(chrono::Duration::minutes(3));
    let report = shared::kyc::retry_pending_checks(&ctx, budget).await?;
    assert_eq!(report.asked, 2);
    assert_eq!(api.kyc_status(&slow).await?["pan_status"], "pending");
    api.kyc.set_outage(false);
    api.clock.advance(chrono::Duration::minutes(3));
    let report = shared::kyc::retry_pending_checks(&ctx, budget).await?;
    assert_eq!((report.asked, report.given_up, report.failed), (2, 0, 0));
    for token in [&slow, &down] {
        let kyc = api.kyc_status(token).await?;
        assert_eq!((kyc["status"].clone(), kyc["pan_status"].clone()), (json!("pending"), json!("passed")), "{kyc}");
    }
    assert!(!api.dump().await?.contains("KYCRETRY "), "answered checks leave the retry index");

    // Days without an answer fail the check with a reason (the customer may submit again).
    let (_, lost) = api.signed_in("lost@example.in").await?;
    api.kyc.set_outage(true);
    api.submit_kyc(&lost, &valid_pan("LOSPE", 0)).await?.error_for_status()?;
    api.clock.advance(shared::kyc::retry::GIVE_UP_AFTER + chrono::Duration::minutes(1));
    let report = shared::kyc::retry_pending_checks(&ctx, budget).await?;
    assert_eq!(report.given_up, 1);
    let kyc = api.kyc_status(&lost).await?;
    assert_eq!(kyc["status"], "rejected");
    assert!(kyc["rejection_reason"].as_str().is_some_and(|r| r.contains("could not be reached")), "{kyc}");
    Ok(())
}

/// Submits the consent form at `url` with `name` and `dob` instead of the defaults; returns where it sends back.
async fn share_as(
    api: &TestApi,
    url: &str,
    name: &str,
    dob: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let form = [("name", name), ("dob", dob), ("aadhaar", "987654321012"), ("decision", "allow")];
    let answer = no_redirects.post(url).form(&form).send().await?;
    let _ = api;
    Ok(answer.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no redirect")?.to_owned())
}

async fn digilocker_details_are_matched_with_the_account(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    // Declined: the step can be started again, with the reason said.
    let (_, token) = api.signed_in("deny@example.in").await?;
    api.submit_kyc(&token, &valid_pan("DNYPE", 0)).await?.error_for_status()?;
    let declined = api.share_from_digilocker(&token, false).await?;
    assert_eq!(
        (declined["status"].clone(), declined["aadhaar_status"].clone()),
        (json!("pending"), json!("not_started"))
    );
    assert!(declined["aadhaar_reason"].as_str().is_some_and(|r| r.contains("start the DigiLocker step again")));
    assert_eq!(api.share_from_digilocker(&token, true).await?["status"], "verified");

    // Another name: an operator compares; another date of birth: rejected.
    for (n, (name, dob, status)) in [
        ("Meera Iyer", "1990-04-12", "in_review"),
        ("Asha Rao", "1991-04-12", "rejected"),
        ("Asha Rao", "2012-01-01", "rejected"),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, token) = api.signed_in(&format!("match{n}@example.in")).await?;
        api.submit_kyc(&token, &valid_pan("MTCPE", n as u64)).await?.error_for_status()?;
        let started: Value = api.start_digilocker(&token).await?.error_for_status()?.json().await?;
        let back = share_as(&api, started["url"].as_str().ok_or("no url")?, name, dob).await?;
        api.return_from_digilocker(&back).await?;
        let kyc = api.kyc_status(&token).await?;
        assert_eq!(kyc["status"], status, "{name} {dob}: {kyc}");
        assert_eq!(kyc["aadhaar_masked"], "XXXX XXXX 1012");
    }
    let dump = api.dump().await?;
    assert!(dump.contains("Meera Iyer"), "the differing name is kept for the operator while in review");
    assert!(!dump.contains("987654321012"), "never the number");

    // An unfinished session: the link expires at the provider, and the jobs' poll says so.
    let (_, token) = api.signed_in("expired@example.in").await?;
    api.submit_kyc(&token, &valid_pan("EXPPE", 0)).await?.error_for_status()?;
    api.start_digilocker(&token).await?.error_for_status()?;
    api.clock.advance(chrono::Duration::hours(3));
    shared::kyc::retry_pending_checks(&api.state.kyc()?, std::time::Duration::from_secs(60)).await?;
    let kyc = api.kyc_status(&token).await?;
    assert_eq!((kyc["aadhaar_status"].clone(), kyc["status"].clone()), (json!("not_started"), json!("pending")));
    Ok(())
}

/// A GSTIN with its check character for `first14`.
fn gstin(first14: &str) -> String {
    const CHARS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut sum = 0;
    for (i, c) in first14.bytes().enumerate() {
        let product = CHARS.iter().position(|x| *x == c).unwrap_or(0) * if i % 2 == 0 { 1 } else { 2 };
        sum += product / 36 + product % 36;
    }
    format!("{first14}{}", CHARS[(36 - sum % 36) % 36] as char)
}

async fn a_business_verifies_with_its_gstin_and_the_pan_inside(backend: Backend) -> TestResult {
    let operators = shared::secrets::SecretString::new(e2e::operators_secret(&[(
        "ravi@inferex.ai",
        "operator-secret",
        &["kyc_reviewer"],
    )]));
    let config = shared::config::Config { admin_token: Some(operators), ..shared::config::Config::default() };
    let api = TestApi::start_with(backend, config).await?;
    // A proprietor's GSTIN carries their own PAN, whose date of birth matched: verified at once.
    let (_, proprietor) = api.signed_in("proprietor@example.in").await?;
    let body =
        json!({"gstin": gstin("29ABCPE1231F1Z"), "pan": "ABCPE1231F", "name_on_pan": "Asha Rao", "consent": true});
    let kyc: Value = api.submit_kyc_body(&proprietor, &body).await?.error_for_status()?.json().await?;
    assert_eq!((kyc["status"].clone(), kyc["holder"].clone()), (json!("verified"), json!("business")), "{kyc}");
    // A firm's PAN and GSTIN are public and tie nobody to it: both checks pass, then a person decides.
    let (firm, token) = api.signed_in("firm@example.in").await?;
    let business =
        json!({"gstin": gstin("27AAPFU0931F1Z"), "pan": "AAPFU0931F", "name_on_pan": "Asha Rao", "consent": true});
    let kyc: Value = api.submit_kyc_body(&token, &business).await?.error_for_status()?.json().await?;
    assert_eq!((kyc["status"].clone(), kyc["gstin_status"].clone()), (json!("in_review"), json!("passed")), "{kyc}");
    assert_eq!(kyc["gstin"], json!(gstin("27AAPFU0931F1Z")));
    assert_eq!(kyc["legal_name"], "STAND-IN TRADERS AAPFU PRIVATE LIMITED", "what invoices will carry");
    assert_eq!(api.kyc.calls("pan-lite"), 1, "only the proprietor's PAN has a date of birth to match");
    let ravi = api.operator_session("operator-secret").await?;
    let decide = api.http.post(api.url(&format!("/v1/admin/kyc/{firm}/decision"))).bearer_auth(&ravi);
    decide.json(&json!({"decision": "approve"})).send().await?.error_for_status()?;
    assert_eq!(api.kyc_status(&token).await?["status"], "verified");
    // A partner acting for another firm gives their own PAN (checked with their date of birth): a person
    // decides too; a business PAN that is not the one inside the GSTIN is refused.
    let (_, partner) = api.signed_in("partner@example.in").await?;
    let acting =
        json!({"gstin": gstin("27AAQFU0931F1Z"), "pan": "ABCPE1232F", "name_on_pan": "Asha Rao", "consent": true});
    let kyc: Value = api.submit_kyc_body(&partner, &acting).await?.error_for_status()?.json().await?;
    assert_eq!((kyc["status"].clone(), kyc["pan_status"].clone()), (json!("in_review"), json!("passed")), "{kyc}");
    assert_eq!(api.kyc.calls("pan-lite"), 2, "the partner's date of birth was matched");
    let foreign =
        json!({"gstin": gstin("27AAQFU0931F1Z"), "pan": "AAPFU0931F", "name_on_pan": "Asha Rao", "consent": true});
    let refused = api.submit_kyc_body(&partner, &foreign).await?;
    expect_error(refused, StatusCode::BAD_REQUEST, "invalid_gstin", Some("gstin")).await?;
    let digilocker = api.start_digilocker(&token).await?;
    expect_error(digilocker, StatusCode::CONFLICT, "kyc_already_verified", None).await?;

    let (_, cancelled) = api.signed_in("cancelled@example.in").await?;
    let body =
        json!({"gstin": gstin("27AAPFU0932F9Z"), "pan": "AAPFU0932F", "name_on_pan": "Asha Rao", "consent": true});
    let answer = api.submit_kyc_body(&cancelled, &body).await?;
    let refused = error_body(answer, StatusCode::CONFLICT, "kyc_not_verifiable", None).await?;
    assert!(refused.to_string().contains("not active"), "{refused}");
    // A person's PAN needs no GSTIN; a business PAN without one is refused.
    let (_, person) = api.signed_in("person@example.in").await?;
    let firm_alone = api.submit_kyc(&person, "AAPFU0933F").await?;
    expect_error(firm_alone, StatusCode::BAD_REQUEST, "invalid_pan", Some("pan")).await?;
    Ok(())
}

async fn a_duplicate_pan_reads_like_any_mismatch(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let pan = valid_pan("DUPPE", 0);
    let (_, owner) = api.signed_in("owner@example.in").await?;
    api.pass_kyc(&owner, &pan).await?;
    let (_, prober) = api.signed_in("prober@example.in").await?;
    let asked = api.kyc.calls("pan");
    let duplicate = api.submit_kyc(&prober, &pan).await?;
    assert_eq!(api.kyc.calls("pan"), asked + 1, "the provider is asked as for any PAN, so it takes as long");
    let duplicate = error_body(duplicate, StatusCode::CONFLICT, "kyc_not_verifiable", None).await?;
    let mismatch =
        error_body(api.submit_kyc(&prober, "DUPPE0005D").await?, StatusCode::CONFLICT, "kyc_not_verifiable", None)
            .await?;
    assert_eq!(duplicate, mismatch, "a registered PAN answers exactly as a name that does not match");
    assert_eq!(duplicate["error"]["message"], NOT_MATCHING);
    // Five submissions per account per 30 days, refusals included.
    for n in 0..3 {
        api.submit_kyc(&prober, &format!("DUPPE00{n}5D")).await?;
    }
    let sixth = api.submit_kyc(&prober, &valid_pan("DUPPE", 7)).await?;
    expect_error(sixth, StatusCode::CONFLICT, "kyc_submission_limit", None).await?;
    api.clock.advance(chrono::Duration::days(31));
    let login: Value = api.login("prober@example.in", "correct horse battery").await?.json().await?;
    let prober = login["token"].as_str().ok_or("no token")?;
    assert_eq!(api.submit_kyc(prober, &valid_pan("DUPPE", 7)).await?.status(), StatusCode::OK);
    Ok(())
}

async fn racing_accounts_with_one_pan_get_exactly_one_winner(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    for round in 0..3u64 {
        let pan = valid_pan("RACPE", round);
        let mut tokens = Vec::new();
        for n in 0..2 {
            let (_, token) = api.signed_in(&format!("race{round}-{n}@example.in")).await?;
            // Neither is verified yet, so both PAN checks pass; the verification decides.
            api.submit_kyc(&token, &pan).await?.error_for_status()?;
            tokens.push(token);
        }
        let mut tasks = Vec::new();
        for token in tokens {
            let api = api.clone();
            tasks.push(shared::tasks::spawn("test", async move {
                api.share_from_digilocker(&token, true)
                    .await
                    .map(|kyc| kyc["status"].as_str().unwrap_or_default().to_owned())
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await?.map_err(|e| e.to_string())?);
        }
        outcomes.sort();
        assert_eq!(outcomes, ["rejected", "verified"], "round {round}");
    }
    let dump = api.dump().await?;
    assert_eq!(dump.lines().filter(|l| l.starts_with("KYCDOC#")).count(), 3, "one PAN claim per winner");
    Ok(())
}
