//! Operators signing in, on both stores: the token enrols an authenticator once and opens sessions only with
//! a code from it; a code works once; sessions end after 12 hours, or 8 idle; attempts are throttled and
//! recorded; every operator route is walked with every role; reveals are limited per operator per day, and a
//! closed account's number is shown only to an admin stating the legal reason.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores, operators_secret, valid_pan};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::config::{Config, KycMode};
use shared::operator_auth::ATTEMPTS_PER_OPERATOR;
use shared::operators::{OPERATOR_ROUTES, Role};
use shared::secrets::SecretString;

on_both_stores!(
    the_token_enrols_once_and_signs_in_only_with_an_unused_code,
    sessions_end_after_twelve_hours_or_eight_idle_and_on_sign_out,
    a_replaced_token_ends_its_sessions_and_a_removed_role_applies_at_once,
    operators_work_only_from_the_allowed_networks,
    sign_in_attempts_are_throttled_and_recorded,
    every_operator_route_allows_exactly_its_roles,
    reveals_are_limited_per_day_and_a_closed_accounts_only_for_an_admin_with_a_reason,
);

const KYC: &str = "ops-token-kyc-reviewer";
const PAYMENTS: &str = "ops-token-payments";
const SUPPORT: &str = "ops-token-support";
const ADMIN: &str = "ops-token-admin";

fn config() -> Config {
    let operators = operators_secret(&[
        ("kavya@inferexai.in", KYC, &["kyc_reviewer"]),
        ("pranav@inferexai.in", PAYMENTS, &["payments"]),
        ("sana@inferexai.in", SUPPORT, &["support"]),
        ("arjun@inferexai.in", ADMIN, &["admin", "kyc_reviewer"]),
        ("neha@inferexai.in", "ops-token-admin-only", &["admin"]),
    ]);
    Config { kyc_mode: KycMode::Manual, admin_token: Some(SecretString::new(operators)), ..Config::default() }
}

fn token_of(role: Role) -> &'static str {
    match role {
        Role::KycReviewer => KYC,
        Role::Payments => PAYMENTS,
        Role::Support => SUPPORT,
        Role::Admin => "ops-token-admin-only",
    }
}

async fn sign_in(api: &TestApi, token: &str, code: &str) -> Result<reqwest::Response, reqwest::Error> {
    api.http.post(api.url("/v1/admin/sessions")).bearer_auth(token).json(&json!({ "code": code })).send().await
}

async fn me(api: &TestApi, session: &str) -> Result<reqwest::Response, reqwest::Error> {
    api.http.get(api.url("/v1/admin/me")).bearer_auth(session).send().await
}

async fn the_token_enrols_once_and_signs_in_only_with_an_unused_code(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, config()).await?;
    // Before enrolling: no code can be right.
    expect_error(sign_in(&api, KYC, "123456").await?, StatusCode::CONFLICT, "totp_not_enrolled", None).await?;
    let uri = api.enrol_operator(KYC).await?;
    assert!(uri.starts_with("otpauth://totp/") && uri.contains("secret="), "{uri}");
    let again = api.http.post(api.url("/v1/admin/totp/enrol")).bearer_auth(KYC).send().await?;
    expect_error(again, StatusCode::CONFLICT, "totp_already_enrolled", None).await?;
    let forged = api.http.post(api.url("/v1/admin/totp/enrol")).bearer_auth("ops-token-guessed").send().await?;
    expect_error(forged, StatusCode::UNAUTHORIZED, "invalid_admin_token", None).await?;
    // The secret is stored sealed: neither its base32 form nor the token is in the store.
    let secret = uri.split("secret=").nth(1).and_then(|s| s.split('&').next()).ok_or("no secret")?.to_owned();
    let dump = api.dump().await?;
    assert!(!dump.contains(&secret) && !dump.contains(KYC), "the authenticator's secret is sealed");

    let wrong = sign_in(&api, KYC, "000000").await?;
    expect_error(wrong, StatusCode::UNAUTHORIZED, "invalid_totp_code", None).await?;
    let code = api.operator_code(KYC)?;
    let opened = sign_in(&api, KYC, &code).await?;
    assert_eq!(opened.status(), StatusCode::CREATED);
    let opened: Value = opened.json().await?;
    assert_eq!(
        (opened["operator"].clone(), opened["roles"].clone()),
        (json!("kavya@inferexai.in"), json!(["kyc_reviewer"]))
    );
    let session = opened["session"].as_str().ok_or("no session")?;
    assert!(session.starts_with("ops_"), "{opened}");
    let who: Value = me(&api, session).await?.error_for_status()?.json().await?;
    assert_eq!(who, json!({ "operator": "kavya@inferexai.in", "roles": ["kyc_reviewer"] }));
    // The same code again, even at once and from elsewhere: refused. So is another operator's token with it.
    expect_error(sign_in(&api, KYC, &code).await?, StatusCode::UNAUTHORIZED, "invalid_totp_code", None).await?;
    // The bare token opens nothing but the sign-in.
    expect_error(me(&api, KYC).await?, StatusCode::UNAUTHORIZED, "invalid_operator_session", None).await?;
    // A code two steps old no longer works; the next one does.
    api.clock.advance(Duration::seconds(90));
    let stale = api.operator_code(KYC)?;
    api.clock.advance(Duration::seconds(61));
    expect_error(sign_in(&api, KYC, &stale).await?, StatusCode::UNAUTHORIZED, "invalid_totp_code", None).await?;
    let fresh = api.operator_code(KYC)?;
    assert_eq!(sign_in(&api, KYC, &fresh).await?.status(), StatusCode::CREATED);
    Ok(())
}

async fn sessions_end_after_twelve_hours_or_eight_idle_and_on_sign_out(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, config()).await?;
    // Used every seven hours: alive at 7 h, gone past 12 h.
    let busy = api.sign_in_operator(SUPPORT).await?;
    api.clock.advance(Duration::hours(7));
    assert_eq!(me(&api, &busy).await?.status(), StatusCode::OK);
    api.clock.advance(Duration::hours(5) + Duration::seconds(1));
    expect_error(me(&api, &busy).await?, StatusCode::UNAUTHORIZED, "invalid_operator_session", None).await?;
    // Left idle for 8 hours: gone, although younger than 12.
    let idle = api.sign_in_operator(SUPPORT).await?;
    api.clock.advance(Duration::hours(8) + Duration::seconds(1));
    expect_error(me(&api, &idle).await?, StatusCode::UNAUTHORIZED, "invalid_operator_session", None).await?;
    // Signed out: gone at once.
    let ended = api.sign_in_operator(SUPPORT).await?;
    let out = api.http.delete(api.url("/v1/admin/sessions")).bearer_auth(&ended).send().await?;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    expect_error(me(&api, &ended).await?, StatusCode::UNAUTHORIZED, "invalid_operator_session", None).await?;
    // Stored by digest, with the expiry of its longest life.
    let kept = api.sign_in_operator(SUPPORT).await?;
    let dump = api.dump().await?;
    assert!(!dump.contains(&kept), "a session is stored by its digest only");
    let digest = shared::secrets::sha256_hex(&kept);
    let line = dump.lines().find(|l| l.contains(&digest)).ok_or("no session item")?;
    let expected = (api.clock_now() + Duration::hours(12)).timestamp().to_string();
    assert!(line.contains(&expected), "{line}");
    Ok(())
}

/// The same store served with the credentials changed, as the admin function serves it after its next read
/// of the secret: answers the session's `GET /v1/admin/me` status there.
async fn me_after_change(
    api: &TestApi,
    operators: String,
    session: &str,
) -> Result<StatusCode, Box<dyn std::error::Error + Send + Sync>> {
    let credentials = shared::operators::OperatorCredentials::parse_with(
        "test operators",
        &operators,
        shared::runtime_secrets::SecretRule { min_chars: 1, min_bits: 0 },
    )?;
    let mut changed = api.state.clone();
    let clock: std::sync::Arc<dyn shared::clock::Clock> = std::sync::Arc::new(api.clock.clone());
    changed.operator_token = Some(std::sync::Arc::new(shared::runtime_secrets::Rotating::fixed(credentials, clock)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = dev_server::app(changed);
    let server = shared::tasks::spawn("changed credentials", async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await;
    });
    let status = api.http.get(format!("{base}/v1/admin/kyc/queue")).bearer_auth(session).send().await?.status();
    server.abort();
    Ok(status)
}

async fn a_replaced_token_ends_its_sessions_and_a_removed_role_applies_at_once(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, config()).await?;
    let session = api.sign_in_operator(KYC).await?;
    assert_eq!(
        me_after_change(&api, operators_secret(&[("kavya@inferexai.in", KYC, &["kyc_reviewer"])]), &session).await?,
        StatusCode::OK
    );
    // The reviewer role taken away: the same session is refused the queue at its next request.
    let narrowed = operators_secret(&[("kavya@inferexai.in", KYC, &["support"])]);
    assert_eq!(me_after_change(&api, narrowed, &session).await?, StatusCode::FORBIDDEN);
    // The token replaced (a suspected theft): every session it opened ends.
    let replaced = operators_secret(&[("kavya@inferexai.in", "ops-token-kyc-reviewer-new", &["kyc_reviewer"])]);
    assert_eq!(me_after_change(&api, replaced, &session).await?, StatusCode::UNAUTHORIZED);
    // The operator removed: likewise.
    let removed = operators_secret(&[("pranav@inferexai.in", PAYMENTS, &["payments"])]);
    assert_eq!(me_after_change(&api, removed, &session).await?, StatusCode::UNAUTHORIZED);
    Ok(())
}

/// With an allow-list, the operator routes answer 403 to any other address, the sign-in routes included;
/// the tests' client connects from 127.0.0.1.
async fn operators_work_only_from_the_allowed_networks(backend: Backend) -> TestResult {
    let elsewhere = Config { operator_networks: vec!["10.9.0.0/16".parse()?, "2001:db8::/48".parse()?], ..config() };
    let api = TestApi::start_with(backend, elsewhere).await?;
    let enrol = api.http.post(api.url("/v1/admin/totp/enrol")).bearer_auth(KYC).send().await?;
    expect_error(enrol, StatusCode::FORBIDDEN, "operator_network_not_allowed", None).await?;
    expect_error(sign_in(&api, KYC, "123456").await?, StatusCode::FORBIDDEN, "operator_network_not_allowed", None)
        .await?;
    expect_error(me(&api, "ops_anything").await?, StatusCode::FORBIDDEN, "operator_network_not_allowed", None).await?;
    // From an allowed network, as usual.
    let here = Config { operator_networks: vec!["127.0.0.0/8".parse()?], ..config() };
    let api = TestApi::start_with(backend, here).await?;
    let session = api.sign_in_operator(KYC).await?;
    assert_eq!(me(&api, &session).await?.status(), StatusCode::OK);
    Ok(())
}

async fn sign_in_attempts_are_throttled_and_recorded(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, config()).await?;
    api.enrol_operator(PAYMENTS).await?;
    for _ in 0..ATTEMPTS_PER_OPERATOR {
        expect_error(sign_in(&api, PAYMENTS, "999999").await?, StatusCode::UNAUTHORIZED, "invalid_totp_code", None)
            .await?;
    }
    // Out of attempts: even the right code waits, and the alert is raised.
    let code = api.operator_code(PAYMENTS)?;
    let throttled = sign_in(&api, PAYMENTS, &code).await?;
    assert!(throttled.headers().contains_key("retry-after"));
    expect_error(throttled, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", None).await?;
    assert!(e2e::mentions(&e2e::captured_logs(), "operator_sign_in_throttled"), "the alert is logged");
    // Another operator is not held up by it.
    api.sign_in_operator(SUPPORT).await?;
    // After the window, the right code works; every attempt is on record with its outcome and client.
    api.clock.advance(Duration::hours(1) + Duration::seconds(1));
    let code = api.operator_code(PAYMENTS)?;
    assert_eq!(sign_in(&api, PAYMENTS, &code).await?.status(), StatusCode::CREATED);
    let dump = api.dump().await?;
    let records: Vec<&str> =
        dump.lines().filter(|l| l.starts_with("OPERATOR#pranav@inferexai.in") && l.contains("SIGNIN#")).collect();
    let failed = records.iter().filter(|l| l.contains("wrong_code")).count();
    let succeeded = records.iter().filter(|l| l.contains("\"success\":true")).count();
    assert_eq!((failed, succeeded), (ATTEMPTS_PER_OPERATOR as usize, 1), "{records:#?}");
    assert!(records.iter().all(|l| l.contains("127.0.0.1") && l.contains("e2e-tests/1.0")), "{records:#?}");
    Ok(())
}

/// A path of an operator route with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{user_id}", "usr_sample")
        .replace("{review_id}", "bm9wZQ")
        .replace("{dispute_id}", "disp_sample")
        .replace("{period}", "2026-11")
        .replace("{section}", "b2cs")
        .replace("{incident_id}", "inc_sample")
}

async fn every_operator_route_allows_exactly_its_roles(backend: Backend) -> TestResult {
    let operators = operators_secret(&[
        ("kavya@inferexai.in", KYC, &["kyc_reviewer"]),
        ("pranav@inferexai.in", PAYMENTS, &["payments"]),
        ("sana@inferexai.in", SUPPORT, &["support"]),
        ("arjun@inferexai.in", "ops-token-admin-only", &["admin"]),
    ]);
    let config = Config { admin_token: Some(SecretString::new(operators)), ..Config::default() };
    let api = TestApi::start_with(backend, config).await?;
    let mut walked = 0;
    for role in Role::ALL {
        let session = api.sign_in_operator(token_of(role)).await?;
        for route in OPERATOR_ROUTES {
            // Signing out is walked last, on a session of its own.
            if route.method == "DELETE" {
                continue;
            }
            let method = reqwest::Method::from_bytes(route.method.as_bytes())?;
            let request = api.http.request(method, api.url(&concrete(route.path))).bearer_auth(&session);
            let answer = request.json(&json!({})).send().await?;
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or_default();
            let refused = status == StatusCode::FORBIDDEN && body["error"]["code"] == "role_required";
            assert_eq!(
                refused,
                !route.roles.contains(&role),
                "{role:?} {} {}: {status} {body}",
                route.method,
                route.path
            );
            walked += 1;
        }
        let own = api.sign_in_operator(token_of(role)).await?;
        let out = api.http.delete(api.url("/v1/admin/sessions")).bearer_auth(&own).send().await?;
        assert_eq!(out.status(), StatusCode::NO_CONTENT, "{role:?} signs out");
    }
    assert_eq!(walked, Role::ALL.len() * (OPERATOR_ROUTES.len() - 1));
    // The table names every operator route the API documents, but the two the token itself takes.
    let openapi: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml"),
    )?)?;
    let mut documented: Vec<String> = Vec::new();
    for (path, methods) in openapi["paths"].as_mapping().into_iter().flatten() {
        let path = path.as_str().unwrap_or_default();
        for (method, _) in methods.as_mapping().into_iter().flatten() {
            let route = format!("{} {path}", method.as_str().unwrap_or_default().to_uppercase());
            if path.starts_with("/v1/admin")
                && route != "POST /v1/admin/totp/enrol"
                && route != "POST /v1/admin/sessions"
            {
                documented.push(route);
            }
        }
    }
    let mut tabled: Vec<String> = OPERATOR_ROUTES.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    documented.sort();
    tabled.sort();
    assert_eq!(tabled, documented, "shared::operators::OPERATOR_ROUTES vs openapi.yaml");
    Ok(())
}

async fn reveal(api: &TestApi, session: &str, user: &str, reason: &str) -> Result<reqwest::Response, reqwest::Error> {
    let body = json!({ "document": "pan", "reason": reason });
    api.http.post(api.url(&format!("/v1/admin/kyc/{user}/reveal"))).bearer_auth(session).json(&body).send().await
}

async fn reveals_are_limited_per_day_and_a_closed_accounts_only_for_an_admin_with_a_reason(
    backend: Backend,
) -> TestResult {
    let api = TestApi::start_with(backend, config()).await?;
    let (user, token) = api.signed_in("revealed@example.in").await?;
    let pan = valid_pan("RVLPE", 0);
    api.submit_kyc(&token, &pan).await?.error_for_status()?;
    let kavya = api.operator_session(KYC).await?;
    for _ in 0..shared::kyc::REVEALS_PER_DAY {
        let shown: Value = reveal(&api, &kavya, &user, "name check").await?.error_for_status()?.json().await?;
        assert_eq!(shown["number"], json!(pan));
    }
    // An admin who reviews no KYC sees no open account's number.
    let neha = api.operator_session("ops-token-admin-only").await?;
    expect_error(reveal(&api, &neha, &user, "curious").await?, StatusCode::FORBIDDEN, "role_required", None).await?;
    let over = reveal(&api, &kavya, &user, "name check").await?;
    expect_error(over, StatusCode::TOO_MANY_REQUESTS, "reveal_limit_reached", None).await?;
    assert!(e2e::mentions(&e2e::captured_logs(), "kyc_reveal_limit"), "the alert is logged");
    // Another reviewer has their own day; a day later the first has theirs again.
    let arjun = api.operator_session(ADMIN).await?;
    reveal(&api, &arjun, &user, "name check").await?.error_for_status()?;
    api.clock.advance(Duration::days(1) + Duration::seconds(1));
    let kavya = api.operator_session(KYC).await?;
    reveal(&api, &kavya, &user, "name check").await?.error_for_status()?;

    // The account closes: its number is kept for the law's retention, shown to no reviewer.
    api.close_account(&token).await?;
    let refused = reveal(&api, &kavya, &user, "name check").await?;
    expect_error(refused, StatusCode::FORBIDDEN, "role_required", None).await?;
    let arjun = api.operator_session(ADMIN).await?;
    let vague = reveal(&api, &arjun, &user, "need it").await?;
    expect_error(vague, StatusCode::BAD_REQUEST, "invalid_reason", Some("reason")).await?;
    let lawful = "Income Tax notice u/s 133(6), ref ITBA/2026/12345";
    let neha = api.operator_session("ops-token-admin-only").await?;
    reveal(&api, &neha, &user, lawful).await?.error_for_status()?;
    let shown: Value = reveal(&api, &arjun, &user, lawful).await?.error_for_status()?.json().await?;
    assert_eq!((shown["number"].clone(), shown["revealed_to"].clone()), (json!(pan), json!("arjun@inferexai.in")));
    assert!(api.dump().await?.contains(lawful), "the legal reason is on record");
    Ok(())
}
