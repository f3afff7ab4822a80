//! What a hostile review of sign-in and names found, fixed, on both stores: one address trying a few
//! passwords on each of many accounts is throttled as a whole; names that hide formatting characters (a
//! right-to-left override, zero-width spaces) are refused, so an operator reads what is stored.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::json;

on_both_stores!(
    one_address_guessing_across_many_accounts_is_throttled,
    names_that_hide_formatting_are_refused_where_operators_read_them,
);

const PASSWORD: &str = "correct horse battery";

async fn one_address_guessing_across_many_accounts_is_throttled(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let limit = api.state.config.login_checks_per_address;
    let per_email = api.state.config.login_max_failures;
    let accounts = limit.div_ceil(per_email) + 1;
    for n in 0..accounts {
        assert_eq!(api.signup(&format!("victim{n}@example.in"), PASSWORD).await?.status(), StatusCode::CREATED);
    }
    // A few guesses at each account: each e-mail's own window never fills, the address's does.
    let mut refused_at = None;
    'guessing: for n in 0..accounts {
        for guess in 0..per_email {
            let answer = api.login(&format!("victim{n}@example.in"), &format!("guess number {guess}")).await?;
            if answer.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(answer.headers().contains_key("retry-after"));
                expect_error(answer, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", None).await?;
                refused_at = Some(n * per_email + guess);
                break 'guessing;
            }
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(refused_at, Some(limit), "the address may make {limit} failed checks an hour");
    // While it lasts, even a right password from that address waits; an hour later it works.
    assert_eq!(api.login("victim0@example.in", PASSWORD).await?.status(), StatusCode::TOO_MANY_REQUESTS);
    api.clock.advance(Duration::hours(1) + Duration::seconds(1));
    assert_eq!(api.login("victim0@example.in", PASSWORD).await?.status(), StatusCode::OK);
    // A correct password gives its check back: signing in often never uses the address up.
    for _ in 0..limit + 5 {
        assert_eq!(api.login("victim1@example.in", PASSWORD).await?.status(), StatusCode::OK);
    }
    Ok(())
}

async fn names_that_hide_formatting_are_refused_where_operators_read_them(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    for spoof in ["Asha \u{202E}oaR", "Asha\u{200B}Rao", "\u{2067}Asha Rao\u{2069}"] {
        let body = json!({
            "email": "spoof@example.in",
            "password": PASSWORD,
            "full_name": spoof,
            "date_of_birth": "1990-04-12",
            "accepted_terms_version": shared::config::DEFAULT_POLICY_VERSION,
        });
        let answer = api.http.post(api.url("/v1/auth/signup")).json(&body).send().await?;
        expect_error(answer, StatusCode::BAD_REQUEST, "invalid_full_name", Some("full_name")).await?;
    }
    let (_, token) = api.verified_user("names@example.in").await?;
    let correct =
        api.http.patch(api.url("/v1/account")).bearer_auth(&token).json(&json!({ "full_name": "Ravi\u{202E}" }));
    expect_error(correct.send().await?, StatusCode::BAD_REQUEST, "invalid_full_name", Some("full_name")).await?;
    let key = api.http.post(api.url("/v1/keys")).bearer_auth(&token).json(&json!({ "name": "prod\u{FEFF}" }));
    expect_error(key.send().await?, StatusCode::BAD_REQUEST, "invalid_name", Some("name")).await?;
    // A name in an Indian script, with the joiner its spelling needs, is kept as typed.
    let malayalam = "\u{0D05}\u{0D30}\u{0D41}\u{0D23}\u{0D4D}\u{200D}";
    let kept = api.http.patch(api.url("/v1/account")).bearer_auth(&token).json(&json!({ "full_name": malayalam }));
    let kept: serde_json::Value = kept.send().await?.error_for_status()?.json().await?;
    assert_eq!(kept["full_name"], json!(malayalam));
    Ok(())
}
