//! A user's way out of a stolen session, end to end on both stores: the list of live sessions (device, IP,
//! created, last seen), ending one of them, signing out everywhere, and changing the password, which ends
//! every other session. Nobody can list or end another account's sessions. A session carried by the
//! browser's cookie changes nothing without its CSRF token.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(
    sessions_are_listed_and_ended_one_by_one_or_all_at_once,
    a_password_change_checks_the_current_one_and_ends_every_other_session,
    a_cookie_session_changes_nothing_without_its_csrf_token,
);

const PASSWORD: &str = "correct horse battery";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn login_from(api: &TestApi, email: &str, password: &str, device: &str) -> Res<reqwest::Response> {
    Ok(api
        .http
        .post(api.url("/v1/auth/login"))
        .header("user-agent", device)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await?)
}

async fn token_from(api: &TestApi, email: &str, device: &str) -> Res<String> {
    let login: Value = login_from(api, email, PASSWORD, device).await?.error_for_status()?.json().await?;
    Ok(login["token"].as_str().ok_or("no token")?.to_owned())
}

async fn sessions(api: &TestApi, token: &str) -> Res<reqwest::Response> {
    Ok(api.http.get(api.url("/v1/auth/sessions")).bearer_auth(token).send().await?)
}

async fn account_status(api: &TestApi, token: &str) -> Res<StatusCode> {
    Ok(api.http.get(api.url("/v1/account")).bearer_auth(token).send().await?.status())
}

async fn sessions_are_listed_and_ended_one_by_one_or_all_at_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, laptop) = api.signed_in("owner@example.in").await?;
    let phone = token_from(&api, "owner@example.in", "InferexPhone/1.0").await?;
    let (_, stranger) = api.signed_in("stranger@example.in").await?;

    let listed: Value = sessions(&api, &phone).await?.error_for_status()?.json().await?;
    let data = listed["data"].as_array().ok_or("no list")?;
    assert_eq!(data.len(), 2, "{listed}");
    let mine = data.iter().find(|s| s["current"] == json!(true)).ok_or("no current session")?;
    assert_eq!(mine["user_agent"], json!("InferexPhone/1.0"));
    let other = data.iter().find(|s| s["current"] == json!(false)).ok_or("no other session")?.clone();
    for session in data {
        let id = session["id"].as_str().unwrap_or_default();
        assert!(id.starts_with("ses_") && id.len() == 20, "a short public id: {id}");
        assert!(session["created_at"].is_string() && session["last_seen_at"].is_string(), "{session}");
    }
    let text = listed.to_string();
    assert!(!text.contains(&phone) && !text.contains(&laptop), "no token in the list");
    assert!(!text.contains(&shared::secrets::sha256_hex(&phone)), "no full digest in the list");

    // Last seen moves when the session is used, at most every 5 minutes.
    let first_seen = mine["last_seen_at"].clone();
    api.clock.advance(Duration::minutes(6));
    assert_eq!(account_status(&api, &phone).await?, StatusCode::OK);
    let listed: Value = sessions(&api, &phone).await?.error_for_status()?.json().await?;
    let seen = listed["data"].as_array().and_then(|d| d.iter().find(|s| s["current"] == json!(true)).cloned());
    assert_ne!(seen.ok_or("no current session")?["last_seen_at"], first_seen, "last seen moved");

    // Another account cannot end this account's session: not found, and it still works.
    let other_id = other["id"].as_str().ok_or("no id")?;
    let path = format!("/v1/auth/sessions/{other_id}");
    let foreign = api.http.delete(api.url(&path)).bearer_auth(&stranger).send().await?;
    expect_error(foreign, StatusCode::NOT_FOUND, "session_not_found", None).await?;
    assert_eq!(account_status(&api, &laptop).await?, StatusCode::OK);
    // Its owner can: that session is dead at once, this one goes on.
    let ended = api.http.delete(api.url(&path)).bearer_auth(&phone).send().await?;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(account_status(&api, &laptop).await?, StatusCode::UNAUTHORIZED);
    assert_eq!(account_status(&api, &phone).await?, StatusCode::OK);
    let again = api.http.delete(api.url(&path)).bearer_auth(&phone).send().await?;
    expect_error(again, StatusCode::NOT_FOUND, "session_not_found", None).await?;

    // Sign out everywhere: every session of the account ends, this one too; the stranger's does not.
    let tablet = token_from(&api, "owner@example.in", "InferexTablet/2.0").await?;
    let store = api.state.store.as_ref();
    let tablet_pk = format!("SESSION#{}", shared::secrets::sha256_hex(&tablet));
    let tablet_item = store.get(shared::store::Table::Main, &tablet_pk, "SESSION").await?.ok_or("no session item")?;
    let everywhere = api.http.delete(api.url("/v1/auth/sessions")).bearer_auth(&phone).send().await?;
    assert_eq!(everywhere.status(), StatusCode::OK);
    assert!(everywhere.headers().get("set-cookie").is_some_and(|c| c.to_str().is_ok_and(|c| c.contains("Max-Age=0"))));
    let everywhere: Value = everywhere.json().await?;
    assert_eq!(everywhere["sessions_ended"], json!(2));
    for token in [&phone, &tablet] {
        assert_eq!(account_status(&api, token).await?, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(account_status(&api, &stranger).await?, StatusCode::OK);
    assert_eq!(sessions(&api, &phone).await?.status(), StatusCode::UNAUTHORIZED);
    // The ending is one write on the account, not the deletion of each session: a session item that
    // survived it (a clean-up that failed half way) authenticates nobody.
    let put = shared::store::Put {
        table: shared::store::Table::Main,
        item: tablet_item,
        condition: shared::store::Condition::Always,
    };
    store.put(put).await?;
    assert_eq!(account_status(&api, &tablet).await?, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn a_password_change_checks_the_current_one_and_ends_every_other_session(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user_id, here) = api.signed_in("changer@example.in").await?;
    let before =
        shared::accounts::AccountStore::account(api.state.store.as_ref(), &user_id).await?.ok_or("no account")?;
    let elsewhere = token_from(&api, "changer@example.in", "SomeoneElse/1.0").await?;
    let change = |body: Value| api.http.post(api.url("/v1/account/password")).bearer_auth(&here).json(&body).send();
    let new_password = "a brand new passphrase";

    let wrong = change(json!({ "current_password": "not my password", "new_password": new_password })).await?;
    expect_error(wrong, StatusCode::FORBIDDEN, "incorrect_password", None).await?;
    let weak = change(json!({ "current_password": PASSWORD, "new_password": "short" })).await?;
    expect_error(weak, StatusCode::BAD_REQUEST, "weak_password", Some("new_password")).await?;
    let missing = change(json!({ "new_password": new_password })).await?;
    expect_error(missing, StatusCode::BAD_REQUEST, "missing_field", Some("current_password")).await?;
    let odd = change(json!({ "current_password": PASSWORD, "new_password": 12 })).await?;
    assert_eq!(odd.status(), StatusCode::BAD_REQUEST);
    let extra = change(json!({ "current_password": PASSWORD, "new_password": new_password, "admin": true })).await?;
    assert_eq!(extra.status(), StatusCode::BAD_REQUEST);
    assert_eq!(account_status(&api, &elsewhere).await?, StatusCode::OK, "nothing changed yet");

    let changed = change(json!({ "current_password": PASSWORD, "new_password": new_password })).await?;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await?;
    assert_eq!(changed["other_sessions_ended"], json!(1));
    assert_eq!(account_status(&api, &elsewhere).await?, StatusCode::UNAUTHORIZED, "the other session ended");
    assert_eq!(account_status(&api, &here).await?, StatusCode::OK, "this one goes on");
    assert_eq!(login_from(&api, "changer@example.in", PASSWORD, "x").await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(login_from(&api, "changer@example.in", new_password, "x").await?.status(), StatusCode::OK);
    let dump = api.dump().await?;
    assert!(!dump.contains(new_password), "the new password is stored only as a hash");

    // A login that verified the old password just before the change cannot open its session after it.
    let now = api.clock_now();
    let racing = shared::auth::Session {
        token_hash: shared::secrets::sha256_hex("a token of a login racing the change"),
        user_id: user_id.clone(),
        expires_at: (now + Duration::hours(1)).timestamp(),
        last_seen_at: Some(now),
        epoch: before.session_epoch,
    };
    let attempt = shared::auth::LoginAttempt {
        email: "changer@example.in".into(),
        user_id: Some(user_id.clone()),
        ip: None,
        user_agent: None,
        success: true,
        outcome: shared::auth::LoginOutcome::Success,
        at: now,
    };
    let expiries = shared::auth::Expiries { record: racing.expires_at, failure: racing.expires_at };
    let store = api.state.store.as_ref();
    let login = shared::auth::SuccessfulLogin {
        attempt: &attempt,
        expiries,
        session: &racing,
        verified_hash: &before.password_hash,
    };
    let late = shared::auth::LoginStore::record_login(store, login, Vec::new()).await;
    assert!(matches!(late, Err(shared::store::StoreError::ConditionFailed)), "{late:?}");
    assert!(shared::auth::SessionStore::session(store, &racing.token_hash).await?.is_none());
    // Nor can any account change checked against the old password (an email change, another password
    // change, the closure) commit after it: every profile write requires the password it read.
    let stale = shared::accounts::profile_update(&before).set("email", json!("thief@example.in"));
    let stale = shared::store::ItemStore::update(store, stale).await;
    assert!(matches!(stale, Err(shared::store::StoreError::ConditionFailed)), "{stale:?}");
    Ok(())
}

/// Every `Set-Cookie` of a response, by cookie name.
fn set_cookies(response: &reqwest::Response) -> std::collections::HashMap<String, String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| Some((c.split_once('=')?.0.to_owned(), c.to_owned())))
        .collect()
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn a_cookie_session_changes_nothing_without_its_csrf_token(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("csrf@example.in").await?;
    let (_, other_token) = api.signed_in("csrf-other@example.in").await?;
    let login = login_from(&api, "csrf@example.in", PASSWORD, "browser").await?;
    let cookies = set_cookies(&login);
    let body: Value = login.json().await?;
    let cookie_token = body["token"].as_str().ok_or("no token")?.to_owned();
    let csrf = body["csrf_token"].as_str().ok_or("no csrf_token")?.to_owned();
    // The CSRF cookie is readable by the page (no HttpOnly) and sent by our own pages only.
    let csrf_cookie = cookies.get("inferex_csrf").ok_or("no CSRF cookie")?;
    assert!(csrf_cookie.starts_with(&format!("inferex_csrf={csrf};")), "{csrf_cookie}");
    for attribute in ["Secure", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(csrf_cookie.contains(attribute), "{csrf_cookie} lacks {attribute}");
    }
    assert!(!csrf_cookie.contains("HttpOnly"), "{csrf_cookie}");
    assert!(cookies.get("inferex_session").is_some_and(|c| c.contains("HttpOnly")));
    assert_ne!(csrf, cookie_token);
    assert!(!csrf.contains(&cookie_token) && csrf.len() == 64, "{csrf}");
    let other_csrf =
        login_from(&api, "csrf-other@example.in", PASSWORD, "browser").await?.json::<Value>().await?["csrf_token"]
            .as_str()
            .ok_or("no csrf_token")?
            .to_owned();
    assert_ne!(csrf, other_csrf);

    let cookie = format!("inferex_session={cookie_token}; inferex_csrf={csrf}");
    let rename = |csrf_header: Option<&str>| {
        let mut request = api
            .http
            .patch(api.url("/v1/account"))
            .header("cookie", &cookie)
            .json(&json!({ "full_name": "Renamed By Someone Else" }));
        if let Some(value) = csrf_header {
            request = request.header("x-csrf-token", value);
        }
        request.send()
    };
    // Reading needs no token; a change without it, with another session's, or with the session token
    // itself is refused, and nothing changes.
    let me = api.http.get(api.url("/v1/account")).header("cookie", &cookie).send().await?;
    assert_eq!(me.status(), StatusCode::OK);
    let name_before = me.json::<Value>().await?["full_name"].clone();
    for forged in [None, Some(""), Some(other_csrf.as_str()), Some(cookie_token.as_str()), Some(&csrf[..63])] {
        expect_error(rename(forged).await?, StatusCode::FORBIDDEN, "csrf_token_invalid", None).await?;
    }
    let revoke = api.http.delete(api.url("/v1/auth/sessions")).header("cookie", &cookie).send().await?;
    expect_error(revoke, StatusCode::FORBIDDEN, "csrf_token_invalid", None).await?;
    let key = api.http.post(api.url("/v1/keys")).header("cookie", &cookie).json(&json!({ "name": "x" })).send().await?;
    expect_error(key, StatusCode::FORBIDDEN, "csrf_token_invalid", None).await?;
    let me: Value = api.http.get(api.url("/v1/account")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(me["full_name"], name_before);
    assert_eq!(account_status(&api, &cookie_token).await?, StatusCode::OK, "the session was not ended");
    let keys: Value = api.http.get(api.url("/v1/keys")).bearer_auth(&token).send().await?.json().await?;
    assert_eq!(keys["data"].as_array().map(Vec::len), Some(0));

    // With its own token the change goes through; a bearer token needs none (no browser sends it unasked).
    let renamed = rename(Some(&csrf)).await?;
    assert_eq!(renamed.status(), StatusCode::OK);
    assert_eq!(renamed.json::<Value>().await?["full_name"], "Renamed By Someone Else");
    let by_bearer = api
        .http
        .patch(api.url("/v1/account"))
        .bearer_auth(&other_token)
        .json(&json!({ "full_name": "Bearer Works" }))
        .send()
        .await?;
    assert_eq!(by_bearer.status(), StatusCode::OK);

    // Logging out clears both cookies.
    let logout = api
        .http
        .post(api.url("/v1/auth/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await?;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&logout);
    for name in ["inferex_session", "inferex_csrf"] {
        assert!(cleared.get(name).is_some_and(|c| c.contains("Max-Age=0")), "{name} not cleared: {cleared:?}");
    }
    assert_eq!(account_status(&api, &cookie_token).await?, StatusCode::UNAUTHORIZED);
    Ok(())
}
