//! Data-rights requests that a person answers, on both stores: a customer's grievance (DPDP Act s.13) with its
//! due date, register, timeline, alarm and answer; requests received by e-mail or letter that an operator
//! records, a closed account's and a nominee's among them (s.14), each acknowledged by e-mail.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores, operators_secret};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::Config;
use shared::privacy::register::check_due;
use shared::secrets::SecretString;

on_both_stores!(
    a_grievance_is_registered_alarmed_when_due_and_answered_once,
    requests_by_email_reach_open_and_closed_accounts_and_nominees
);

const SUPPORT: &str = "ops-token-privacy-support";
const PAYMENTS: &str = "ops-token-privacy-payments";

async fn start(backend: Backend) -> Result<TestApi, String> {
    let operators = operators_secret(&[
        ("asha@inferexai.in", SUPPORT, &["support"]),
        ("dev@inferexai.in", PAYMENTS, &["payments"]),
    ]);
    TestApi::start_with(backend, Config { admin_token: Some(SecretString::new(operators)), ..Config::default() }).await
}

/// The register's entries (`query` after `?`), as the operator holding `token` lists them.
async fn register(
    api: &TestApi,
    token: &str,
    query: &str,
) -> Result<Vec<Value>, Box<dyn std::error::Error + Send + Sync>> {
    let session = api.operator_session(token).await?;
    let url = api.url(&format!("/v1/admin/privacy-requests?{query}"));
    let listed: Value = api.http.get(url).bearer_auth(session).send().await?.error_for_status()?.json().await?;
    Ok(listed["data"].as_array().cloned().unwrap_or_default())
}

fn ids(entries: &[Value]) -> Vec<&str> {
    entries.iter().filter_map(|e| e["id"].as_str()).collect()
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: the grievance moves through its 30 days and is answered"
)]
async fn a_grievance_is_registered_alarmed_when_due_and_answered_once(backend: Backend) -> TestResult {
    let api = start(backend).await?;
    let (user, mut token) = api.signed_in("aggrieved@example.in").await?;
    let url = api.url("/v1/privacy/requests");
    let submit = |token: &str, body: Value| api.http.post(&url).bearer_auth(token).json(&body).send();
    for (body, field) in [
        (json!({ "kind": "access", "message": "my data" }), "kind"),
        (json!({ "kind": "erasure", "message": "delete me" }), "kind"),
        (json!({ "kind": "grievance", "message": "  " }), "message"),
        (json!({ "kind": "grievance", "message": "hidden\u{200B}text" }), "message"),
        (json!({ "kind": "grievance", "message": "x".repeat(4001) }), "message"),
        (json!({ "kind": "grievance", "message": "my PAN ABCPE1234F was rejected" }), "message"),
        (json!({ "kind": "correction", "message": "Aadhaar 2341 2341 2346 has my birth date" }), "message"),
    ] {
        expect_error(submit(&token, body).await?, StatusCode::BAD_REQUEST, "invalid_privacy_request", Some(field))
            .await?;
    }
    for body in
        [json!({ "kind": "complaint", "message": "x" }), json!({ "kind": "grievance", "message": "x", "to": "ceo" })]
    {
        assert_eq!(submit(&token, body).await?.status(), StatusCode::BAD_REQUEST);
    }
    let received =
        submit(&token, json!({ "kind": "grievance", "message": "My export left out my refund request." })).await?;
    assert_eq!(received.status(), StatusCode::CREATED);
    let grievance: Value = received.json().await?;
    let id = grievance["id"].as_str().ok_or("no id")?.to_owned();
    assert_eq!(
        (grievance["status"].clone(), grievance["received_via"].clone()),
        (json!("received"), json!("dashboard"))
    );
    let due = chrono::DateTime::parse_from_rfc3339(grievance["due_at"].as_str().ok_or("no due_at")?)?;
    assert_eq!(due.to_utc() - api.clock_now(), Duration::days(30));
    let ack = api.last_mail("aggrieved@example.in", "privacy_request_received").await?;
    assert!(ack.text.contains(&id) && ack.text.contains("grievance"), "{}", ack.text);

    // Listed for support (the grievances' register), never for a role without it.
    assert_eq!(ids(&register(&api, SUPPORT, "kind=grievance").await?), [id.as_str()]);
    // Both access requests leave the register once their exports are built (a task of the server here).
    let mut open = Vec::new();
    for () in e2e::polls() {
        open = register(&api, SUPPORT, "kind=access").await?;
        if open.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(open.is_empty(), "built exports answer their access requests: {open:?}");
    let payments = api.operator_session(PAYMENTS).await?;
    let refused = api.http.get(api.url("/v1/admin/privacy-requests")).bearer_auth(&payments).send().await?;
    expect_error(refused, StatusCode::FORBIDDEN, "role_required", None).await?;
    let ctx: shared::privacy::PrivacyContext = (&api.state).into();
    assert_eq!((check_due(&ctx).await?.due_soon, check_due(&ctx).await?.overdue), (0, 0));
    assert!(register(&api, SUPPORT, "due=soon").await?.is_empty());

    // Five days before its due date it is due soon; past it, overdue: the jobs' check counts it (the alarm).
    api.clock.advance(Duration::days(25));
    assert_eq!(ids(&register(&api, SUPPORT, "due=soon").await?), [id.as_str()]);
    assert_eq!(check_due(&ctx).await?.due_soon, 1);
    api.clock.advance(Duration::days(5) + Duration::minutes(1));
    assert!(register(&api, SUPPORT, "due=soon").await?.is_empty());
    let overdue = register(&api, SUPPORT, "due=overdue").await?;
    assert_eq!((ids(&overdue), overdue[0]["due"].clone()), (vec![id.as_str()], json!("overdue")));
    assert_eq!((check_due(&ctx).await?.overdue, check_due(&ctx).await?.due_soon), (1, 0));

    // A step the customer (signed in again: a month went by) sees without the operator's name; then the
    // answer, once.
    let login: Value =
        api.login("aggrieved@example.in", "correct horse battery").await?.error_for_status()?.json().await?;
    token = login["token"].as_str().ok_or("no token")?.to_owned();
    let session = api.operator_session(SUPPORT).await?;
    let step = api.url(&format!("/v1/admin/privacy-requests/{id}/events"));
    let noted = api.http.post(&step).bearer_auth(&session).json(&json!({ "note": "Asked payments to check." }));
    noted.send().await?.error_for_status()?;
    let mine: Value = api.http.get(&url).bearer_auth(&token).send().await?.json().await?;
    let listed = mine["data"].as_array().and_then(|d| d.iter().find(|r| r["id"] == json!(id))).ok_or("not listed")?;
    assert_eq!(listed["timeline"][0]["note"], json!("Asked payments to check."));
    assert!(listed["timeline"][0].get("by").is_none(), "{listed}");
    let answer_url = api.url(&format!("/v1/admin/privacy-requests/{id}/answer"));
    let answer = |body: Value| api.http.post(&answer_url).bearer_auth(&session).json(&body).send();
    let bad = answer(json!({ "status": "received", "outcome": "x" })).await?;
    expect_error(bad, StatusCode::BAD_REQUEST, "invalid_privacy_request", Some("status")).await?;
    let outcome = "The refund request was added to the export format.";
    let (first, second) = tokio::join!(
        answer(json!({ "status": "completed", "outcome": outcome })),
        answer(json!({ "status": "refused", "outcome": "not ours" }))
    );
    let statuses = [first?.status(), second?.status()];
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "one answer stands: {statuses:?}");
    let mail = api.last_mail("aggrieved@example.in", "privacy_request_completed").await?;
    assert!(mail.text.contains("Data Protection Board"), "a grievance's answer names the Board: {}", mail.text);
    assert!(register(&api, SUPPORT, "").await?.is_empty());
    expect_error(
        answer(json!({ "status": "completed", "outcome": outcome })).await?,
        StatusCode::NOT_FOUND,
        "privacy_request_not_found",
        None,
    )
    .await?;
    assert_eq!(check_due(&ctx).await?.overdue, 0);

    // At most five open at once.
    for n in 0..5 {
        submit(&token, json!({ "kind": "correction", "message": format!("date of birth, try {n}") }))
            .await?
            .error_for_status()?;
    }
    let sixth = submit(&token, json!({ "kind": "grievance", "message": "one more" })).await?;
    expect_error(sixth, StatusCode::CONFLICT, "too_many_open_requests", None).await?;
    assert_eq!(register(&api, SUPPORT, "").await?.len(), 5, "{user}");
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: requests by e-mail for an open, a closed and a nominated account"
)]
async fn requests_by_email_reach_open_and_closed_accounts_and_nominees(backend: Backend) -> TestResult {
    let api = start(backend).await?;
    let session = api.operator_session(SUPPORT).await?;
    let record =
        |body: Value| api.http.post(api.url("/v1/admin/privacy-requests")).bearer_auth(&session).json(&body).send();
    let outside = |email: &str, kind: &str| json!({ "email": email, "kind": kind, "received_via": "email", "identity_check": "replied from the account's address" });

    // A closed account's address still finds it: the request is recorded and acknowledged there.
    let (closed_user, closed_token) = api.signed_in("left@example.in").await?;
    api.close_account(&closed_token).await?;
    shared::privacy::finish_pending_closures(&(&api.state).into(), std::time::Duration::from_secs(5)).await?;
    let recorded = record(outside("Left@Example.in", "access")).await?;
    assert_eq!(recorded.status(), StatusCode::CREATED);
    let entry: Value = recorded.json().await?;
    assert_eq!(
        (entry["user_id"].as_str(), entry["received_via"].clone()),
        (Some(closed_user.as_str()), json!("email"))
    );
    assert!(entry["timeline"][0]["note"].as_str().unwrap_or_default().contains("replied from"), "{entry}");
    let ack = api.last_mail("left@example.in", "privacy_request_received").await?;
    assert!(ack.text.contains(entry["id"].as_str().ok_or("no id")?), "{}", ack.text);

    // What is refused, naming the field; an address no account has is not found.
    let mut by_dashboard = outside("left@example.in", "access");
    by_dashboard["received_via"] = json!("dashboard");
    expect_error(record(by_dashboard).await?, StatusCode::BAD_REQUEST, "invalid_privacy_request", Some("received_via"))
        .await?;
    let mut unchecked = outside("left@example.in", "access");
    unchecked["identity_check"] = json!("");
    expect_error(record(unchecked).await?, StatusCode::BAD_REQUEST, "invalid_privacy_request", Some("identity_check"))
        .await?;
    expect_error(
        record(outside("left@example.in", "nominee")).await?,
        StatusCode::BAD_REQUEST,
        "invalid_privacy_request",
        Some("requester_email"),
    )
    .await?;
    expect_error(
        record(outside("nobody@example.in", "erasure")).await?,
        StatusCode::NOT_FOUND,
        "account_not_found",
        None,
    )
    .await?;
    let mut extra = outside("left@example.in", "access");
    extra["priority"] = json!("high");
    assert_eq!(record(extra).await?.status(), StatusCode::BAD_REQUEST);

    // A nominee writes for an open account: recorded against it, the nominee acknowledged, the match noted.
    let (_, holder_token) = api.signed_in("holder@example.in").await?;
    let nominee = api.http.put(api.url("/v1/account/nominee")).bearer_auth(&holder_token);
    nominee.json(&json!({ "name": "Meera Rao", "email": "meera@example.in" })).send().await?.error_for_status()?;
    let mut by_nominee = outside("holder@example.in", "nominee");
    by_nominee["received_via"] = json!("letter");
    by_nominee["requester_email"] = json!("meera@example.in");
    by_nominee["identity_check"] = json!("death certificate and Aadhaar-masked ID seen");
    let entry: Value = record(by_nominee.clone()).await?.error_for_status()?.json().await?;
    let note = entry["timeline"][0]["note"].as_str().unwrap_or_default();
    assert!(note.contains("is the account's named nominee, Meera Rao"), "{note}");
    assert_eq!(entry["requester"], json!("meera@example.in"));
    api.last_mail("meera@example.in", "privacy_request_received").await?;
    by_nominee["requester_email"] = json!("stranger@example.in");
    let stranger: Value = record(by_nominee).await?.error_for_status()?.json().await?;
    assert!(stranger["timeline"][0]["note"].as_str().unwrap_or_default().contains("NOT the account's named nominee"));
    // The holder hears of each nominee's request made in their name.
    let told = api.mail_to("holder@example.in").await?;
    assert_eq!(told.iter().filter(|m| m.kind == "privacy_request_received").count(), 2);
    outside_requests_are_noted_and_answered_once(&api, &session, stranger["id"].as_str().ok_or("no id")?).await?;

    // The account's owner sees both among their requests, with how they arrived.
    let mine: Value =
        api.http.get(api.url("/v1/privacy/requests")).bearer_auth(&holder_token).send().await?.json().await?;
    let kinds: Vec<_> = mine["data"]
        .as_array()
        .ok_or("no data")?
        .iter()
        .map(|r| (r["kind"].clone(), r["received_via"].clone()))
        .collect();
    assert_eq!(kinds, vec![(json!("nominee"), json!("letter")); 2]);

    // An export asked in the dashboard is in the register only until it is built.
    let created: Value =
        api.http.post(api.url("/v1/privacy/exports")).bearer_auth(&holder_token).send().await?.json().await?;
    let path = format!("/v1/privacy/exports/{}", created["id"].as_str().ok_or("no id")?);
    for () in e2e::polls() {
        let view: Value = api.http.get(api.url(&path)).bearer_auth(&holder_token).send().await?.json().await?;
        if view["status"] != json!("pending") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An access request is answered by its export, never by hand.
    let access: Value = record(outside("holder@example.in", "access")).await?.error_for_status()?.json().await?;
    let by_hand = api.url(&format!("/v1/admin/privacy-requests/{}/answer", access["id"].as_str().ok_or("no id")?));
    let answer = json!({ "status": "completed", "outcome": "sent the data by post" });
    let status = api.http.post(by_hand).bearer_auth(&session).json(&answer).send().await?.status();
    assert!([StatusCode::CONFLICT, StatusCode::NOT_FOUND].contains(&status), "{status}");
    closed_account_gets_its_export_by_mail(&api, &closed_user).await?;
    assert!(register(&api, SUPPORT, "kind=access").await?.is_empty(), "built exports answered both access requests");
    Ok(())
}

/// The closed account's access request is answered with an export whose link reaches the account's address
/// only; the link leads to the document while the export is kept, and the request leaves the register.
async fn closed_account_gets_its_export_by_mail(api: &TestApi, user: &str) -> TestResult {
    let mut answered = None;
    for () in e2e::polls() {
        let mail = api.mail_to("left@example.in").await?;
        answered = mail.into_iter().find(|m| m.kind == "privacy_request_completed");
        if answered.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = answered.ok_or("no answer was mailed")?.text;
    let at = text.find("/v1/privacy/export-link?token=").ok_or_else(|| format!("no link: {text}"))?;
    let link: String = text[at..].chars().take_while(|c| !c.is_whitespace() && *c != '>' && *c != ')').collect();
    let document: Value = api.http.get(api.url(&link)).send().await?.error_for_status()?.json().await?;
    assert_eq!((document["user_id"].as_str(), document["account"]["status"].clone()), (Some(user), json!("closed")));
    assert_eq!(document["kyc"], Value::Null);
    let forged = api.http.get(api.url("/v1/privacy/export-link?token=forged")).send().await?;
    expect_error(forged, StatusCode::NOT_FOUND, "export_not_found", None).await?;
    // Gone with the export: the link stops working when the export's window ends.
    api.clock.advance(Duration::days(8));
    let expired = api.http.get(api.url(&link)).send().await?;
    expect_error(expired, StatusCode::NOT_FOUND, "export_not_found", None).await?;
    Ok(())
}

/// A request an operator recorded takes steps and one answer like any other; text holding an identity number
/// is refused without being repeated; a third party may write only as a nominee.
async fn outside_requests_are_noted_and_answered_once(api: &TestApi, session: &str, id: &str) -> TestResult {
    let step = api.url(&format!("/v1/admin/privacy-requests/{id}/events"));
    let note = |text: &str| api.http.post(&step).bearer_auth(session).json(&json!({ "note": text })).send();
    note("Asked for the death certificate's original.").await?.error_for_status()?;
    let refused = note("their PAN is ABCPE1234F").await?;
    let body = e2e::error_body(refused, StatusCode::BAD_REQUEST, "invalid_privacy_request", Some("note")).await?;
    assert!(!body.to_string().contains("ABCPE1234F"), "{body}");
    let answer = api.url(&format!("/v1/admin/privacy-requests/{id}/answer"));
    let refuse = json!({ "status": "refused", "outcome": "The requester is not the nominee the account names." });
    let answered: Value =
        api.http.post(&answer).bearer_auth(session).json(&refuse).send().await?.error_for_status()?.json().await?;
    assert_eq!(
        (answered["status"].clone(), answered["timeline"].as_array().map(Vec::len)),
        (json!("refused"), Some(3))
    );
    let again = api.http.post(&answer).bearer_auth(session).json(&refuse).send().await?;
    expect_error(again, StatusCode::NOT_FOUND, "privacy_request_not_found", None).await?;
    // The answer goes to who wrote (the nominee's address), and the holder sees it among their requests.
    api.last_mail("stranger@example.in", "privacy_request_completed").await?;
    let third_party = json!({ "email": "holder@example.in", "kind": "erasure", "received_via": "email",
        "identity_check": "a reply from the account's address", "requester_email": "lawyer@example.in" });
    let refused =
        api.http.post(api.url("/v1/admin/privacy-requests")).bearer_auth(session).json(&third_party).send().await?;
    expect_error(refused, StatusCode::BAD_REQUEST, "invalid_privacy_request", Some("requester_email")).await?;
    Ok(())
}
