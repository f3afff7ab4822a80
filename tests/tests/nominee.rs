//! Nomination (DPDP Act s.14) on both stores: a customer names a nominee, changes and removes them, each time
//! told by e-mail; the nominee is in the data export and erased at closure.

use e2e::{Backend, TestApi, TestResult, expect_error, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_stores!(a_nominee_is_named_changed_removed_and_erased_at_closure);

async fn a_nominee_is_named_changed_removed_and_erased_at_closure(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.signed_in("holder@example.in").await?;
    let url = api.url("/v1/account/nominee");
    let get = || api.http.get(&url).bearer_auth(&token).send();
    let put = |body: Value| api.http.put(&url).bearer_auth(&token).json(&body).send();
    expect_error(get().await?, StatusCode::NOT_FOUND, "nominee_not_found", None).await?;

    for (body, field) in [
        (json!({ "name": "", "email": "meera@example.in" }), "name"),
        (json!({ "name": "Meera\u{202E}", "email": "meera@example.in" }), "name"),
        (json!({ "name": "Meera Rao", "email": "not an address" }), "email"),
        (json!({ "name": "Meera Rao", "email": "Holder@Example.in" }), "email"),
    ] {
        expect_error(put(body).await?, StatusCode::BAD_REQUEST, "invalid_nominee", Some(field)).await?;
    }
    let extra = put(json!({ "name": "Meera Rao", "email": "meera@example.in", "relation": "sister" })).await?;
    assert_eq!(extra.status(), StatusCode::BAD_REQUEST);

    let named: Value =
        put(json!({ "name": " Meera Rao ", "email": "Meera@Example.in" })).await?.error_for_status()?.json().await?;
    assert_eq!((named["name"].clone(), named["email"].clone()), (json!("Meera Rao"), json!("meera@example.in")));
    let changed: Value = put(json!({ "name": "Arjun Rao", "email": "arjun@example.in" })).await?.json().await?;
    assert_eq!(get().await?.json::<Value>().await?["email"], changed["email"]);
    let told: Vec<_> =
        api.mail_to("holder@example.in").await?.into_iter().filter(|m| m.kind == "nominee_changed").collect();
    assert_eq!(told.len(), 2, "the owner hears of each change");
    assert!(told.iter().any(|m| m.text.contains("arjun@example.in")), "{}", told[1].text);

    // In the export, as named.
    let created: Value = api.http.post(api.url("/v1/privacy/exports")).bearer_auth(&token).send().await?.json().await?;
    let path = format!("/v1/privacy/exports/{}", created["id"].as_str().ok_or("no id")?);
    let mut view = Value::Null;
    for () in e2e::polls() {
        view = api.http.get(api.url(&path)).bearer_auth(&token).send().await?.json().await?;
        if view["status"] != json!("pending") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let export: Value = api.http.get(view["download_url"].as_str().ok_or("no link")?).send().await?.json().await?;
    assert_eq!(export["nominee"]["name"], json!("Arjun Rao"));

    // Removed: gone, and removing again is no error.
    assert_eq!(api.http.delete(&url).bearer_auth(&token).send().await?.status(), StatusCode::NO_CONTENT);
    expect_error(get().await?, StatusCode::NOT_FOUND, "nominee_not_found", None).await?;
    assert_eq!(api.http.delete(&url).bearer_auth(&token).send().await?.status(), StatusCode::NO_CONTENT);

    // Named again, then the account closes: the nominee is erased with it.
    put(json!({ "name": "Meera Rao", "email": "meera@example.in" })).await?.error_for_status()?;
    api.close_account(&token).await?;
    shared::privacy::finish_pending_closures(&(&api.state).into(), std::time::Duration::from_secs(5)).await?;
    // Once the outbox has gone out (the last change's message is not sent to a closed account), nothing
    // holds the nominee's address.
    api.mail_to("holder@example.in").await?;
    let dump = api.dump().await?;
    assert!(!dump.lines().any(|l| l.starts_with(&format!("USER#{user} NOMINEE"))), "{dump}");
    assert!(!dump.contains("meera@example.in"), "the nominee's address is gone: {dump}");
    Ok(())
}
