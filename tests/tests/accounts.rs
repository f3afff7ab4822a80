//! Signup, login, sessions and the error shape, end to end over HTTP, on both stores.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(
    signup_login_account_logout,
    twenty_concurrent_signups_create_one_account,
    signup_rules_answer_with_named_fields,
    eighteen_today_is_old_enough_but_not_tomorrow,
    five_failures_throttle_even_the_right_password,
    sessions_expire_and_both_credentials_forms_work,
    bad_requests_answer_in_the_error_shape,
    store_holds_no_plaintext_password_or_token,
    behind_cloudfront_the_browsers_address_is_recorded_only_with_the_edge_proof,
);

const PASSWORD: &str = "correct horse battery";

/// Asserts our error shape and returns the body.
async fn expect_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
    param: Option<&str>,
) -> Result<Value, String> {
    let actual = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    assert_eq!(actual, status, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], json!(code), "{body}");
    assert_eq!(error["param"], json!(param), "{body}");
    assert!(error["type"].is_string() && error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    Ok(body)
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn signup_login_account_logout(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let created = api
        .http
        .post(api.url("/v1/auth/signup"))
        .json(&json!({
            "email": "  Asha.Rao@Example.IN ",
            "password": PASSWORD,
            "full_name": "Asha Rao",
            "date_of_birth": "1990-04-12",
            "accepted_terms_version": "2026-12-06",
            "marketing_consent": true,
        }))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let account: Value = created.json().await?;
    assert_eq!(account["email"], "asha.rao@example.in");
    assert_eq!(account["kyc_status"], "not_submitted");
    assert_eq!(account["full_name"], "Asha Rao");
    assert!(account["id"].as_str().is_some_and(|id| id.starts_with("usr_")));
    assert!(account.get("password_hash").is_none() && account.get("password").is_none());

    // Login with differently-cased email.
    let login = api.login("ASHA.RAO@example.in", PASSWORD).await?;
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: Value = login.json().await?;
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(token.len(), 43, "256-bit token, base64url");
    assert!(cookie.starts_with(&format!("inferex_session={token};")), "{cookie}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let week_later = api.clock_now() + Duration::days(7);
    assert_eq!(body["expires_at"], week_later.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));

    let me: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(me["id"], account["id"]);
    assert_eq!(me["date_of_birth"], "1990-04-12");
    assert_eq!(me["marketing_consent"], true);

    // A failed attempt a second later, then the history shows both, newest first, with IP and user agent.
    api.clock.advance(Duration::seconds(1));
    let wrong = api.login("asha.rao@example.in", "wrong password!").await?;
    expect_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials", None).await?;
    let logins: Value = api.http.get(api.url("/v1/account/logins")).bearer_auth(&token).send().await?.json().await?;
    let logins = logins.as_array().cloned().unwrap_or_default();
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[0]["success"], false);
    assert_eq!(logins[1]["success"], true);
    assert_eq!(logins[1]["ip"], "127.0.0.1");
    assert_eq!(logins[1]["user_agent"], "e2e-tests/1.0");
    let one: Value =
        api.http.get(api.url("/v1/account/logins?limit=1")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    let zero = api.http.get(api.url("/v1/account/logins?limit=0")).bearer_auth(&token).send().await?;
    expect_error(zero, StatusCode::BAD_REQUEST, "invalid_limit", Some("limit")).await?;
    let word = api.http.get(api.url("/v1/account/logins?limit=abc")).bearer_auth(&token).send().await?;
    expect_error(word, StatusCode::BAD_REQUEST, "invalid_query", None).await?;

    let logout = api.http.post(api.url("/v1/auth/logout")).bearer_auth(&token).send().await?;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?;
    expect_error(after, StatusCode::UNAUTHORIZED, "invalid_session", None).await?;
    Ok(())
}

/// Twenty signups with one address at once: one account; and every answer is the same 201, so nobody learns
/// from signup whether an address has an account. Its owner is told once that someone tried.
async fn twenty_concurrent_signups_create_one_account(backend: Backend) -> TestResult {
    let api = std::sync::Arc::new(TestApi::start(backend).await?);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = api.clone();
        tasks.push(shared::tasks::spawn("test", async move {
            let answer = api.signup("race@example.in", PASSWORD).await?;
            let status = answer.status();
            let body: Value = answer.json().await?;
            Ok::<_, reqwest::Error>((status, body))
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await??;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let fields: Vec<&String> = body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        assert!(fields.contains(&&"id".to_owned()) && body["email"] == json!("race@example.in"), "{body}");
        ids.insert(body["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(ids.len(), 20, "each answer names an id; only one is an account");
    let dump = api.dump().await?;
    assert_eq!(dump.lines().filter(|l| l.ends_with("None") && l.contains(" PROFILE ")).count(), 1, "{dump}");
    // Later, in another case: the same answer; the owner is told (once an hour), the stranger is not.
    let again = api.signup("RACE@example.in", PASSWORD).await?;
    assert_eq!(again.status(), StatusCode::CREATED);
    let told = api.mail_to("race@example.in").await?.into_iter().filter(|m| m.kind == "signup_attempt").count();
    assert_eq!(told, 1, "the owner hears of the attempts once an hour");
    let verify_links = api.mail_to("race@example.in").await?.into_iter().filter(|m| m.kind == "verify_email").count();
    assert_eq!(verify_links, 1, "only the account made gets a verification link");
    Ok(())
}

async fn signup_rules_answer_with_named_fields(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let base = json!({
        "email": "rules@example.in",
        "password": PASSWORD,
        "full_name": "Asha Rao",
        "date_of_birth": "1990-04-12",
        "accepted_terms_version": "2026-12-06",
    });
    let cases: Vec<(&str, Value, &str)> = vec![
        ("email", json!("not-an-email"), "invalid_email"),
        ("password", json!("short"), "weak_password"),
        ("password", json!("rules@example.in"), "weak_password"),
        ("full_name", json!("   "), "invalid_full_name"),
        ("date_of_birth", json!("12/04/1990"), "invalid_date_of_birth"),
        ("accepted_terms_version", json!("2025-01-01"), "terms_not_accepted"),
        ("marketing_consent", json!("yes"), "invalid_type"),
    ];
    for (field, value, code) in cases {
        let mut body = base.clone();
        body[field] = value;
        let response = api.http.post(api.url("/v1/auth/signup")).json(&body).send().await?;
        expect_error(response, StatusCode::BAD_REQUEST, code, Some(field)).await?;
    }
    let dump = api.dump().await?;
    assert!(dump.is_empty(), "rejected signups store nothing: {dump}");
    Ok(())
}

async fn eighteen_today_is_old_enough_but_not_tomorrow(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    // Whatever today is in India: the latest birth date whose 18th birthday is today or earlier (months are
    // clamped, so on 29 February it is 28 February 18 years back), and the day after it.
    let today = shared::accounts::today_in_india(api.clock_now());
    let adult = today.checked_sub_months(chrono::Months::new(18 * 12)).ok_or("date")?;
    let underage = adult.succ_opt().ok_or("date")?;
    let mut body = json!({
        "email": "young@example.in",
        "password": PASSWORD,
        "full_name": "Young Person",
        "date_of_birth": underage.to_string(),
        "accepted_terms_version": "2026-12-06",
    });
    let underage = api.http.post(api.url("/v1/auth/signup")).json(&body).send().await?;
    expect_error(underage, StatusCode::BAD_REQUEST, "underage", Some("date_of_birth")).await?;
    assert!(api.dump().await?.is_empty());
    body["date_of_birth"] = json!(adult.to_string());
    let adult = api.http.post(api.url("/v1/auth/signup")).json(&body).send().await?;
    assert_eq!(adult.status(), StatusCode::CREATED);
    Ok(())
}

async fn five_failures_throttle_even_the_right_password(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    assert_eq!(api.signup("throttle@example.in", PASSWORD).await?.status(), StatusCode::CREATED);
    for _ in 0..5 {
        let response = api.login("throttle@example.in", "wrong password!").await?;
        expect_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials", None).await?;
    }
    let throttled = api.login("throttle@example.in", PASSWORD).await?;
    assert_eq!(throttled.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("900"));
    expect_error(throttled, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", None).await?;

    api.clock.advance(Duration::seconds(899));
    let still = api.login("throttle@example.in", PASSWORD).await?;
    assert_eq!(still.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(still.status(), StatusCode::TOO_MANY_REQUESTS);

    api.clock.advance(Duration::seconds(1));
    assert_eq!(api.login("throttle@example.in", PASSWORD).await?.status(), StatusCode::OK);

    // Unknown emails are throttled the same way and answer exactly like wrong passwords.
    let unknown = api.login("nobody@example.in", "whatever pass").await?;
    let unknown_body = expect_error(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials", None).await?;
    let wrong = api.login("throttle@example.in", "wrong password!").await?;
    let wrong_body = expect_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials", None).await?;
    assert_eq!(unknown_body, wrong_body);
    Ok(())
}

async fn sessions_expire_and_both_credentials_forms_work(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    assert_eq!(api.signup("session@example.in", PASSWORD).await?.status(), StatusCode::CREATED);
    let body: Value = api.login("session@example.in", PASSWORD).await?.json().await?;
    let token = body["token"].as_str().unwrap_or_default().to_owned();

    let by_cookie = api
        .http
        .get(api.url("/v1/account"))
        .header("cookie", format!("theme=dark; inferex_session={token}"))
        .send()
        .await?;
    assert_eq!(by_cookie.status(), StatusCode::OK);
    let missing = api.http.get(api.url("/v1/account")).send().await?;
    expect_error(missing, StatusCode::UNAUTHORIZED, "missing_session", None).await?;
    let forged = api.http.get(api.url("/v1/account")).bearer_auth("x".repeat(43)).send().await?;
    expect_error(forged, StatusCode::UNAUTHORIZED, "invalid_session", None).await?;

    api.clock.advance(Duration::days(7) - Duration::seconds(1));
    assert_eq!(api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.status(), StatusCode::OK);
    api.clock.advance(Duration::seconds(1));
    let expired = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?;
    expect_error(expired, StatusCode::UNAUTHORIZED, "invalid_session", None).await?;
    Ok(())
}

async fn bad_requests_answer_in_the_error_shape(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let signup = api.url("/v1/auth/signup");
    let post_raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = api.http.post(&signup).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    expect_error(
        post_raw("{\"email\":", Some("application/json")).await?,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
    )
    .await?;
    expect_error(post_raw("", Some("application/json")).await?, StatusCode::BAD_REQUEST, "invalid_json", None).await?;
    expect_error(post_raw("[1,2]", Some("application/json")).await?, StatusCode::BAD_REQUEST, "invalid_json", None)
        .await?;
    expect_error(
        post_raw("{\"email\":\"a@b.in\"}", Some("application/json")).await?,
        StatusCode::BAD_REQUEST,
        "missing_field",
        Some("password"),
    )
    .await?;
    expect_error(
        post_raw("{}", Some("text/plain")).await?,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    )
    .await?;
    expect_error(post_raw("{}", None).await?, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None)
        .await?;
    let wrong_type = api
        .http
        .post(&signup)
        .json(&json!({"email": 5, "password": PASSWORD, "full_name": "A", "date_of_birth": "1990-01-01", "accepted_terms_version": "2026-12-06"}))
        .send()
        .await?;
    expect_error(wrong_type, StatusCode::BAD_REQUEST, "invalid_type", Some("email")).await?;

    let huge = format!("{{\"email\":\"{}\"}}", "a".repeat(70 * 1024));
    // The server answers 413 without reading the body and closes the connection: send it on a
    // connection not shared with the requests that follow.
    let unpooled = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let too_large = unpooled.post(&signup).header("content-type", "application/json").body(huge).send().await?;
    expect_error(too_large, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None).await?;

    expect_error(api.http.get(api.url("/v1/nowhere")).send().await?, StatusCode::NOT_FOUND, "not_found", None).await?;
    expect_error(api.http.get(&signup).send().await?, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
        .await?;
    let bad_limit = api.http.get(api.url("/v1/account/logins?limit=abc")).bearer_auth("x").send().await?;
    assert_eq!(bad_limit.status(), StatusCode::UNAUTHORIZED, "authentication is checked before parameters");

    let health = api.http.get(api.url("/health")).send().await?;
    assert_eq!(health.status(), StatusCode::OK);
    Ok(())
}

async fn store_holds_no_plaintext_password_or_token(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    assert_eq!(api.signup("secret@example.in", PASSWORD).await?.status(), StatusCode::CREATED);
    let body: Value = api.login("secret@example.in", PASSWORD).await?.json().await?;
    let token = body["token"].as_str().unwrap_or_default().to_owned();
    assert!(!token.is_empty());
    let _ = api.login("secret@example.in", "a wrong password").await?;
    let dump = api.dump().await?;
    assert!(dump.contains("$argon2id$"), "the password is stored as an argon2id hash");
    assert!(dump.contains(&shared::secrets::sha256_hex(&token)), "the session is stored by digest");
    for secret in [PASSWORD, "a wrong password", token.as_str()] {
        assert!(!dump.contains(secret), "store holds {secret:?} in clear");
    }
    Ok(())
}

/// In AWS the dashboard reaches the API through CloudFront, which connects from its own addresses; our
/// CloudFront function writes the browser's in `X-Inferex-Viewer-Ip`, and CloudFront adds the edge secret
/// in `X-Inferex-Edge` as proof; a caller reaching the API directly can send both headers, but not the
/// secret.
async fn behind_cloudfront_the_browsers_address_is_recorded_only_with_the_edge_proof(backend: Backend) -> TestResult {
    let edge_secret = shared::secrets::random_token();
    let api = TestApi::start(backend).await?;
    let behind_cloudfront = api.state.clone().with_edge_secret(shared::secrets::SecretString::new(edge_secret.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let edge = format!("http://{}", listener.local_addr()?);
    let app = dev_server::app(behind_cloudfront);
    let server = shared::tasks::spawn("behind cloudfront", async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await;
    });
    assert_eq!(api.signup("edge@example.in", PASSWORD).await?.status(), StatusCode::CREATED);
    let login = |base: &str, proof: &str, viewer: &str| {
        api.http
            .post(format!("{base}/v1/auth/login"))
            .header("x-inferex-edge", proof)
            .header("x-inferex-viewer-ip", viewer)
            .json(&json!({ "email": "edge@example.in", "password": PASSWORD }))
            .send()
    };
    // Through CloudFront (the proof is right): the browser's address.
    let token: Value = login(&edge, &edge_secret, "2406:2d40:728d:fa10::c4a").await?.json().await?;
    let token = token["token"].as_str().ok_or("no token")?.to_owned();
    // Forged proof, or the right headers where no edge secret is configured: the connecting address.
    api.clock.advance(Duration::seconds(1));
    assert_eq!(login(&edge, "guessed-edge-secret", "203.0.113.9").await?.status(), StatusCode::OK);
    api.clock.advance(Duration::seconds(1));
    assert_eq!(login(&api.base, &edge_secret, "203.0.113.10").await?.status(), StatusCode::OK);
    let logins: Value = api
        .http
        .get(api.url("/v1/account/logins"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let addresses: Vec<&str> = logins.as_array().into_iter().flatten().filter_map(|l| l["ip"].as_str()).collect();
    assert_eq!(addresses, ["127.0.0.1", "127.0.0.1", "2406:2d40:728d:fa10::c4a"], "newest first: {logins}");
    server.abort();
    Ok(())
}
