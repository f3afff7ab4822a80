//! The billing profile tax documents are issued to, on both stores: its rules, a business's GSTIN only as
//! its KYC verified it, the export, and its erasure at closure.

use e2e::{Backend, TestApi, TestResult, error_body, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(
    a_person_sets_a_profile_whose_fields_are_checked,
    a_business_is_billed_under_the_gstin_its_kyc_verified,
    the_profile_is_exported_and_erased_at_closure,
);

const PATH: &str = "/v1/account/billing-profile";

fn profile(state_code: &str) -> Value {
    json!({ "billing_name": "Asha Rao", "address": "12 MG Road, Bengaluru", "state_code": state_code, "pin": "560001" })
}

async fn put(api: &TestApi, token: &str, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
    api.http.put(api.url(PATH)).bearer_auth(token).json(body).send().await
}

async fn a_person_sets_a_profile_whose_fields_are_checked(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("billed@example.in").await?;
    let none = api.http.get(api.url(PATH)).bearer_auth(&token).send().await?;
    expect_error(none, StatusCode::NOT_FOUND, "billing_profile_not_found", None).await?;
    let with = |field: &str, value: Value| {
        let mut body = profile("29");
        body[field] = value;
        body
    };
    for (body, code, param) in [
        (with("state_code", json!("25")), "invalid_state_code", "state_code"),
        (with("state_code", json!("99")), "invalid_state_code", "state_code"),
        (with("state_code", json!("29 ")), "ok", ""),
        (with("pin", json!("056001")), "invalid_pin", "pin"),
        (with("pin", json!("56001")), "invalid_pin", "pin"),
        (with("billing_name", json!("  ")), "invalid_billing_name", "billing_name"),
        (with("address", json!("line\u{0007}bell")), "invalid_address", "address"),
        (with("gstin", json!("29ABCPE1231F1ZA")), "invalid_gstin", "gstin"),
        (with("gstin", json!("")), "invalid_gstin", "gstin"),
        (with("gstin", Value::Null), "ok", ""),
        (with("extra", json!(1)), "invalid_type", "extra"),
    ] {
        let answer = put(&api, &token, &body).await?;
        if code == "ok" {
            assert_eq!(answer.status(), StatusCode::OK);
            continue;
        }
        error_body(answer, StatusCode::BAD_REQUEST, code, Some(param)).await?;
    }
    let stored: Value = put(&api, &token, &profile("07")).await?.error_for_status()?.json().await?;
    assert_eq!((stored["state"].clone(), stored["gstin"].clone()), (json!("Delhi"), Value::Null));
    let read: Value = api.http.get(api.url(PATH)).bearer_auth(&token).send().await?.error_for_status()?.json().await?;
    assert_eq!(read, stored);
    let anonymous = api.http.get(api.url(PATH)).send().await?;
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_session", None).await?;
    Ok(())
}

async fn a_business_is_billed_under_the_gstin_its_kyc_verified(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("proprietor@example.in").await?;
    // A proprietor's business: its GSTIN carries their own PAN (verified at once).
    let kyc = json!({"gstin": "29ABCPE1231F1ZA", "pan": "ABCPE1231F", "name_on_pan": "Asha Rao", "consent": true});
    let verified: Value = api.submit_kyc_body(&token, &kyc).await?.error_for_status()?.json().await?;
    assert_eq!(verified["status"], "verified", "{verified}");
    let filled: Value = put(&api, &token, &profile("29")).await?.error_for_status()?.json().await?;
    assert_eq!(filled["gstin"], "29ABCPE1231F1ZA", "the verified GSTIN, filled in");
    assert_eq!(filled["legal_name"], "STAND-IN TRADERS ABCPE PRIVATE LIMITED");
    let elsewhere = put(&api, &token, &profile("27")).await?;
    expect_error(elsewhere, StatusCode::BAD_REQUEST, "invalid_gstin", Some("gstin")).await?;
    let mut other = profile("29");
    other["gstin"] = json!("29ABCPE1232F1Z9");
    let refused = put(&api, &token, &other).await?;
    let body = error_body(refused, StatusCode::BAD_REQUEST, "invalid_gstin", Some("gstin")).await?;
    assert!(body.to_string().contains("your KYC verified"), "{body}");
    Ok(())
}

async fn the_profile_is_exported_and_erased_at_closure(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("closing@example.in").await?;
    put(&api, &token, &profile("29")).await?.error_for_status()?;
    let export = shared::privacy::export_document(&(&api.state).into(), &user, false).await?;
    assert_eq!(export["billing_profile"]["pin"], "560001");
    let close = api.http.delete(api.url("/v1/account")).bearer_auth(&token);
    let closed = close.json(&json!({ "password": "correct horse battery" })).send().await?;
    assert_eq!(closed.status(), StatusCode::ACCEPTED);
    let dump = api.dump().await?;
    assert!(!dump.lines().any(|l| l.starts_with(&format!("USER#{user} BILLING "))), "{dump}");
    Ok(())
}
