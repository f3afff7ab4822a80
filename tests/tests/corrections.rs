//! Corrections on evidence, on both stores (DPDP Act s.12): a customer whose PAN check failed on the date of
//! birth asks for a correction; a KYC reviewer corrects it on the evidence, answering the request; the PAN is
//! checked again with the provider by the jobs and passes; the correction is among the KYC decisions.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores, operators_secret};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::Config;
use shared::secrets::SecretString;

on_both_stores!(a_date_of_birth_corrected_on_evidence_is_checked_again_and_verifies);

const REVIEWER: &str = "ops-token-corrections-kyc";
const SUPPORT: &str = "ops-token-corrections-support";
/// An individual's PAN whose Income Tax record holds another date of birth (the stand-in's digit 6).
const PAN: &str = "CORPE0016C";

async fn ask(api: &TestApi, token: &str, kind: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let body =
        json!({ "kind": kind, "message": "My date of birth is 1 January 1985: my birth certificate is attached." });
    let made: Value =
        api.http.post(api.url("/v1/privacy/requests")).bearer_auth(token).json(&body).send().await?.json().await?;
    Ok(made["id"].as_str().ok_or("no id")?.to_owned())
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: refused, corrected on evidence, checked again, verified"
)]
async fn a_date_of_birth_corrected_on_evidence_is_checked_again_and_verifies(backend: Backend) -> TestResult {
    let operators = operators_secret(&[
        ("ravi@inferexai.in", REVIEWER, &["kyc_reviewer"]),
        ("asha@inferexai.in", SUPPORT, &["support"]),
    ]);
    let api =
        TestApi::start_with(backend, Config { admin_token: Some(SecretString::new(operators)), ..Config::default() })
            .await?;
    let (user, mut token) = api.signed_in("born@example.in").await?;
    let refused = api.submit_kyc(&token, PAN).await?;
    expect_error(refused, StatusCode::CONFLICT, "kyc_not_verifiable", None).await?;
    let correction = ask(&api, &token, "correction").await?;
    let grievance = ask(&api, &token, "grievance").await?;
    // A year goes by before the evidence arrives: a correction of an old submission is checked again too.
    api.clock.advance(Duration::days(370));
    let login: Value = api.login("born@example.in", "correct horse battery").await?.error_for_status()?.json().await?;
    token = login["token"].as_str().ok_or("no token")?.to_owned();

    let url = api.url(&format!("/v1/admin/accounts/{user}/corrections"));
    let reviewer = api.operator_session(REVIEWER).await?;
    let correct = |body: Value| api.http.post(&url).bearer_auth(&reviewer).json(&body).send();
    let evidence = "birth certificate issued by the Municipal Corporation of Pune, seen on a video call";
    let support = api.operator_session(SUPPORT).await?;
    let by_support = api
        .http
        .post(&url)
        .bearer_auth(&support)
        .json(&json!({ "request_id": correction, "date_of_birth": "1985-01-01", "evidence": evidence }));
    expect_error(by_support.send().await?, StatusCode::FORBIDDEN, "role_required", None).await?;
    for (body, code, field) in [
        (json!({ "request_id": correction, "evidence": evidence }), "invalid_privacy_request", "date_of_birth"),
        (
            json!({ "request_id": correction, "date_of_birth": "1985-01-01", "evidence": " " }),
            "invalid_privacy_request",
            "evidence",
        ),
        (
            json!({ "request_id": correction, "date_of_birth": "2015-01-01", "evidence": evidence }),
            "underage",
            "date_of_birth",
        ),
        (
            json!({ "request_id": correction, "date_of_birth": "01/01/1985", "evidence": evidence }),
            "invalid_date_of_birth",
            "date_of_birth",
        ),
    ] {
        expect_error(correct(body).await?, StatusCode::BAD_REQUEST, code, Some(field)).await?;
    }
    // Only the account's own open correction request can be answered this way.
    let wrong_kind = correct(json!({ "request_id": grievance, "date_of_birth": "1985-01-01", "evidence": evidence }));
    expect_error(wrong_kind.await?, StatusCode::NOT_FOUND, "privacy_request_not_found", None).await?;
    let (other, other_token) = api.signed_in("other@example.in").await?;
    let theirs = ask(&api, &other_token, "correction").await?;
    let crossed = correct(json!({ "request_id": theirs, "date_of_birth": "1985-01-01", "evidence": evidence }));
    expect_error(crossed.await?, StatusCode::NOT_FOUND, "privacy_request_not_found", None).await?;
    let no_kyc = api.url(&format!("/v1/admin/accounts/{other}/corrections"));
    let named = api
        .http
        .post(no_kyc)
        .bearer_auth(&reviewer)
        .json(&json!({ "request_id": theirs, "name_on_pan": "Asha Rao", "evidence": evidence }));
    expect_error(named.send().await?, StatusCode::NOT_FOUND, "kyc_not_found", None).await?;

    // Corrected: the request answered, the PAN waiting to be checked again.
    let corrected: Value =
        correct(json!({ "request_id": correction, "date_of_birth": "1985-01-01", "evidence": evidence }))
            .await?
            .error_for_status()?
            .json()
            .await?;
    assert_eq!((corrected["kyc_recheck"].clone(), corrected["kyc_status"].clone()), (json!(true), json!("pending")));
    assert_eq!(
        (corrected["request"]["status"].clone(), corrected["request"]["due"].clone()),
        (json!("completed"), json!("answered"))
    );
    let again = correct(json!({ "request_id": correction, "date_of_birth": "1985-01-01", "evidence": evidence }));
    expect_error(again.await?, StatusCode::NOT_FOUND, "privacy_request_not_found", None).await?;
    let account: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(account["date_of_birth"], json!("1985-01-01"));
    let mine: Value = api.http.get(api.url("/v1/privacy/requests")).bearer_auth(&token).send().await?.json().await?;
    let answered =
        mine["data"].as_array().and_then(|d| d.iter().find(|r| r["id"] == json!(correction))).ok_or("gone")?;
    let step = answered["timeline"][0]["note"].as_str().unwrap_or_default();
    assert!(step.contains("date of birth 1990-04-12 -> 1985-01-01"), "{step}");
    let mail = api.last_mail("born@example.in", "privacy_request_completed").await?;
    assert!(mail.text.contains("date of birth corrected") && mail.text.contains("checked again"), "{}", mail.text);

    // The jobs ask the provider again, with the corrected date: the PAN passes; DigiLocker finishes it.
    api.clock.advance(Duration::minutes(3));
    let report = jobs::run(&api.state).await?;
    assert_eq!(report.kyc_retries.asked, 1, "{report:?}");
    assert_eq!(api.kyc_status(&token).await?["pan_status"], json!("passed"));
    let kyc = api.share_from_digilocker(&token, true).await?;
    assert_eq!(kyc["status"], json!("verified"), "{kyc}");

    // The correction and its evidence are among the KYC decisions the export shows.
    let ctx: shared::privacy::PrivacyContext = (&api.state).into();
    let document = shared::privacy::export_document(&ctx, &user, false).await?;
    let decisions = document["kyc"]["decisions"].as_array().ok_or("no decisions")?;
    assert!(
        decisions.iter().any(|d| d["decision"] == json!("correct") && d["reason"] == json!(evidence)),
        "{decisions:?}"
    );
    Ok(())
}
