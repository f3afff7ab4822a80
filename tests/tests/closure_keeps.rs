//! A closure keeps only what a rule requires, on both stores: its answer and its e-mail list exactly the
//! holds of the retention table that apply to the account, each with its rule; after the follow-up no item
//! of the account's is left in a class the table says closure erases; consent records keep no address.

use e2e::{Backend, TestApi, TestResult, on_both_stores};
use serde_json::{Value, json};
use shared::retention::{AfterClosure, HOLDS, ItemClass, holds};

on_both_stores!(a_closure_keeps_exactly_the_holds_that_apply_and_says_why);

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn kept(closure: &Value) -> Vec<&str> {
    closure["retained"].as_array().map(|r| r.iter().filter_map(|k| k["data"].as_str()).collect()).unwrap_or_default()
}

async fn a_closure_keeps_exactly_the_holds_that_apply_and_says_why(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    // Verified, funded, with a key and a nominee: everything a customer accumulates.
    let (user, token) = api.verified_user("keeps@example.in").await?;
    api.fund(&token, 200).await?;
    api.create_key(&token, "ci").await?;
    let nominee = api.http.put(api.url("/v1/account/nominee")).bearer_auth(&token);
    nominee.json(&json!({ "name": "Meera Rao", "email": "meera@example.in" })).send().await?.error_for_status()?;
    let closure = api.close_account(&token).await?;
    let expected: Vec<&str> = HOLDS.iter().filter(|h| **h != holds::MAIL_SUPPRESSION).map(|h| h.data).collect();
    assert_eq!(kept(&closure), expected);
    for item in closure["retained"].as_array().ok_or("no retained")? {
        let hold = HOLDS.iter().find(|h| item["data"] == json!(h.data)).ok_or("an unknown hold")?;
        assert_eq!(item["reason"], json!(hold.reason));
    }

    // The e-mail lists each, with its rule, and no hold that does not apply.
    let mail = api.last_mail("keeps@example.in", "account_closed").await?;
    let text = flat(&mail.text);
    for hold in HOLDS {
        let listed = text.contains(&flat(hold.reason));
        assert_eq!(listed, hold != holds::MAIL_SUPPRESSION, "{}: {text}", hold.data);
    }

    // Nothing of the account's is left in a class closure erases; consents keep no address or browser.
    let dump = api.dump().await?;
    for line in dump.lines().filter(|l| l.contains(&user)) {
        let mut parts = line.splitn(3, ' ');
        let (pk, sk) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let class = ItemClass::of(pk, sk).ok_or_else(|| format!("unclassified: {line}"))?;
        assert_ne!(class.after_closure(), AfterClosure::Erased, "{class:?} outlived the closure: {line}");
        if class == ItemClass::Consent {
            assert!(!line.contains("\"ip\"") && !line.contains("user_agent"), "{line}");
        }
    }

    // An address that bounced keeps its suppression, and the closure says so; no KYC, no KYC hold.
    let (_, bounced) = api.signed_in("bounced@example.in").await?;
    let now = api.clock_now();
    let reason = shared::notifications::delivery::SuppressionReason::Bounce;
    shared::notifications::delivery::suppress(api.state.store.as_ref(), "bounced@example.in", reason, now).await?;
    let closure = api.close_account(&bounced).await?;
    let kept_now = kept(&closure);
    assert!(kept_now.contains(&"mail_suppression") && !kept_now.contains(&"kyc"), "{kept_now:?}");
    Ok(())
}
