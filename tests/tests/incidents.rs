//! A security incident end to end, on both stores: opened with its deadlines (CERT-In 6 hours, the Board's
//! report 72 hours), its timeline kept, and security notices chosen by id or by what the incident touched,
//! previewed, sent once through the outbox whatever the person's marketing choice (a closed account's
//! last address too), and recorded on the incident.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores, operators_secret};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::Config;
use shared::secrets::SecretString;

on_both_stores!(
    an_incident_keeps_its_deadlines_and_tells_the_people_it_touched_once,
    access_is_revoked_for_one_account_or_for_everyone,
);

const ADMIN: &str = "ops-token-incident-admin";
const PASSWORD: &str = "correct horse battery";

fn message() -> Value {
    json!({
        "what_happened": "A copy of the sign-in records was exposed through a misconfigured log export.",
        "when": "Between 10:00 and 11:30 IST on 5 December 2026, in our Mumbai (ap-south-1) systems.",
        "data": "Your e-mail address, and the IP address and browser of your sign-ins.",
        "consequences": "You may receive phishing e-mails that mention InferexAI.",
        "measures": "We closed the export, ended every session and reported the incident to CERT-In.",
        "safety": "Sign in again, change your password, and ignore e-mails asking for it.",
        "contact": "grievance@inferexai.in, or +91 80 0000 0000 on working days",
    })
}

async fn post(api: &TestApi, session: &str, path: &str, body: Value) -> Result<reqwest::Response, reqwest::Error> {
    api.http.post(api.url(path)).bearer_auth(session).json(&body).send().await
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn an_incident_keeps_its_deadlines_and_tells_the_people_it_touched_once(backend: Backend) -> TestResult {
    let operators = operators_secret(&[("arjun@inferexai.in", ADMIN, &["admin"])]);
    let config = Config { admin_token: Some(SecretString::new(operators)), ..Config::default() };
    let api = TestApi::start_with(backend, config).await?;
    let (quiet, _) = api.signed_in("quiet@example.in").await?;
    api.clock.advance(Duration::days(2));
    let window_from = api.clock_now();
    // Signed in during the window: touched. Marketing consent withdrawn changes nothing for this mail.
    let (touched_user, touched_token) = api.signed_in("touched@example.in").await?;
    let opt_out =
        api.http.patch(api.url("/v1/account")).bearer_auth(&touched_token).json(&json!({ "marketing_consent": false }));
    opt_out.send().await?.error_for_status()?;
    let (closing, closing_token) = api.signed_in("closing@example.in").await?;
    api.close_account(&closing_token).await?;
    api.clock.advance(Duration::hours(1));
    let window_to = api.clock_now();

    let session = api.operator_session(ADMIN).await?;
    let detected = api.clock_now() - Duration::hours(2);
    let opened = post(
        &api,
        &session,
        "/v1/admin/incidents",
        json!({ "title": "Log export exposed", "summary": "Sign-in records readable", "detected_at": detected }),
    )
    .await?;
    assert_eq!(opened.status(), StatusCode::CREATED);
    let opened: Value = opened.json().await?;
    let id = opened["id"].as_str().ok_or("no id")?.to_owned();
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default()).map(|t| t.timestamp());
    assert_eq!(at(&opened["cert_in_due_at"])?, (detected + Duration::hours(6)).timestamp());
    assert_eq!(at(&opened["board_report_due_at"])?, (detected + Duration::hours(72)).timestamp());
    assert_eq!(
        (opened["cert_in_reported"].clone(), opened["opened_by"].clone()),
        (json!(false), json!("arjun@inferexai.in"))
    );
    let bad = post(&api, &session, "/v1/admin/incidents", json!({ "title": "x", "summary": " " })).await?;
    expect_error(bad, StatusCode::BAD_REQUEST, "invalid_incident", Some("summary")).await?;

    let reported = post(
        &api,
        &session,
        &format!("/v1/admin/incidents/{id}/events"),
        json!({ "kind": "cert_in_reported", "note": "Mailed incident@cert-in.org.in, ack CERTIn-2026-1234" }),
    )
    .await?;
    let reported: Value = reported.error_for_status()?.json().await?;
    assert_eq!(reported["cert_in_reported"], json!(true));
    let forged = post(
        &api,
        &session,
        &format!("/v1/admin/incidents/{id}/events"),
        json!({ "kind": "notice_sent", "note": "x" }),
    )
    .await?;
    expect_error(forged, StatusCode::BAD_REQUEST, "invalid_incident", Some("kind")).await?;

    // Who the window's sign-ins touched: the open account that signed in, not the quiet one (the closed
    // account leaves the registry: it is named by id below).
    let touched = json!({ "touched": { "what": ["sessions"], "from": window_from, "to": window_to } });
    let notices = format!("/v1/admin/incidents/{id}/notices");
    let preview = post(
        &api,
        &session,
        &notices,
        json!({ "notice_id": "n1", "dry_run": true, "recipients": touched, "message": message() }),
    )
    .await?;
    let preview: Value = preview.error_for_status()?.json().await?;
    assert_eq!((preview["recipients"].clone(), preview["complete"].clone()), (json!(1), json!(true)), "{preview}");
    assert_eq!(preview["sample_user_ids"], json!([touched_user]));
    assert!(
        api.mail_to("touched@example.in").await?.iter().all(|m| m.kind != "security_notice"),
        "a preview sends nothing"
    );

    for _ in 0..2 {
        let sent =
            post(&api, &session, &notices, json!({ "notice_id": "n1", "recipients": touched, "message": message() }))
                .await?;
        sent.error_for_status()?;
    }
    // The same notice_id keeps its recipients; a notice to others has its own id.
    let named = json!({ "user_ids": [closing] });
    let reused =
        post(&api, &session, &notices, json!({ "notice_id": "n1", "recipients": named, "message": message() })).await?;
    expect_error(reused, StatusCode::BAD_REQUEST, "invalid_incident", Some("notice_id")).await?;
    let sent: Value =
        post(&api, &session, &notices, json!({ "notice_id": "n2", "recipients": named, "message": message() }))
            .await?
            .error_for_status()?
            .json()
            .await?;
    assert_eq!(sent["recipients"], json!(1), "the closed account gets it at its last address: {sent}");
    let mails = api.mail_to("touched@example.in").await?;
    let notice: Vec<_> = mails.iter().filter(|m| m.kind == "security_notice").collect();
    assert_eq!(notice.len(), 1, "once, however often it is sent");
    for part in
        ["misconfigured log export", "ap-south-1", "phishing", "change your password", "grievance@inferexai.in", &id]
    {
        assert!(notice[0].text.contains(part), "{part} missing from {}", notice[0].text);
    }
    assert_eq!(api.mail_to("closing@example.in").await?.iter().filter(|m| m.kind == "security_notice").count(), 1);
    assert!(
        api.mail_to("quiet@example.in").await?.iter().all(|m| m.kind != "security_notice"),
        "{quiet} was not touched"
    );

    let record: Value =
        api.http.get(api.url(&format!("/v1/admin/incidents/{id}"))).bearer_auth(&session).send().await?.json().await?;
    let sends: Vec<&Value> =
        record["events"].as_array().into_iter().flatten().filter(|e| e["kind"] == "notice_sent").collect();
    assert_eq!(sends.len(), 2, "each notice is on record once it has reached everyone: {record}");
    assert!(sends.iter().all(|e| e["by"] == "arjun@inferexai.in"));
    assert_eq!(sends[0]["note"], json!("notice n1 queued to 1 accounts"));
    let listed: Value = api.http.get(api.url("/v1/admin/incidents")).bearer_auth(&session).send().await?.json().await?;
    assert_eq!(listed["data"][0]["id"], json!(id));
    Ok(())
}

async fn access_is_revoked_for_one_account_or_for_everyone(backend: Backend) -> TestResult {
    let operators = operators_secret(&[("arjun@inferexai.in", ADMIN, &["admin"])]);
    let config = Config { admin_token: Some(SecretString::new(operators)), ..Config::default() };
    let api = TestApi::start_with(backend, config).await?;
    let (first, first_token) = api.verified_user("first@example.in").await?;
    let first_key = api.create_key(&first_token, "prod").await?;
    let (_, second_token) = api.verified_user("second@example.in").await?;
    let second_key = api.create_key(&second_token, "prod").await?;
    let session = api.operator_session(ADMIN).await?;
    let me = |token: String| api.http.get(api.url("/v1/account")).bearer_auth(token).send();
    let models = |key: String| api.http.get(api.url("/v1/models")).bearer_auth(key).send();
    assert_eq!(models(first_key.clone()).await?.status(), StatusCode::OK);

    let path = format!("/v1/admin/accounts/{first}/revoke-access");
    let revoked: Value = post(&api, &session, &path, json!({ "reason": "session token seen in a paste site" }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!((revoked["accounts"].clone(), revoked["keys_revoked"].clone()), (json!(1), json!(1)), "{revoked}");
    assert_eq!(me(first_token.clone()).await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(models(first_key).await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(me(second_token.clone()).await?.status(), StatusCode::OK, "nobody else is touched");
    let nobody = post(&api, &session, "/v1/admin/accounts/usr_nobody/revoke-access", json!({ "reason": "x" })).await?;
    expect_error(nobody, StatusCode::NOT_FOUND, "account_not_found", None).await?;

    let run = json!({ "run_id": "breach-1", "reason": "the service's memory may have been read" });
    let everyone: Value =
        post(&api, &session, "/v1/admin/revoke-access", run.clone()).await?.error_for_status()?.json().await?;
    assert_eq!(everyone["complete"], json!(true), "{everyone}");
    assert_eq!(me(second_token).await?.status(), StatusCode::UNAUTHORIZED);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await; // the test gateway's key cache (300 ms)
    assert_eq!(models(second_key).await?.status(), StatusCode::UNAUTHORIZED);
    // A finished run's id cannot be used again (a second breach would revoke nothing).
    let again = post(&api, &session, "/v1/admin/revoke-access", run).await?;
    expect_error(again, StatusCode::CONFLICT, "run_finished", Some("run_id")).await?;
    // Everyone signs in again with their password.
    assert_eq!(api.login("first@example.in", PASSWORD).await?.status(), StatusCode::OK);
    Ok(())
}
