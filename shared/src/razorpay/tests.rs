use super::*;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/razorpay/payment.captured.json");

#[test]
fn the_fixture_webhook_signature_verifies() {
    assert_eq!(FIXTURE.len(), 372);
    let expected = "8778ecbdf6fa3a024d48720de19e120646a129c6186dd122e9b7a059052e986b";
    assert_eq!(webhook_signature("inferex_test_webhook_secret", FIXTURE), expected);
    assert!(verify_webhook_signature("inferex_test_webhook_secret", FIXTURE, expected));
    assert!(verify_webhook_signature("inferex_test_webhook_secret", FIXTURE, &expected.to_uppercase()));
    assert!(!verify_webhook_signature("another_secret", FIXTURE, expected));
    assert!(!verify_webhook_signature("inferex_test_webhook_secret", FIXTURE, ""));
    // An unset secret verifies nothing, not even a signature made with the empty key.
    assert!(!verify_webhook_signature("", FIXTURE, &webhook_signature("", FIXTURE)));
    assert!(!verify_checkout_signature("", "order_1", "pay_1", &checkout_signature("", "order_1", "pay_1")));
    // One byte more (a re-serialised or newline-terminated body) is a different signature.
    let mut reformatted = FIXTURE.to_vec();
    reformatted.push(b'\n');
    assert!(!verify_webhook_signature("inferex_test_webhook_secret", &reformatted, expected));
}

/// Keys as Razorpay issues them (a key secret of 24 letters and digits) and a webhook secret made as
/// docs/operations.md says, all random: no fixed value here could pass the check (it would be a well-known one).
fn random_keys() -> StoredKeys {
    let alphanumeric = |n: usize| -> String {
        use rand::Rng;
        let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
        (0..n).map(|_| alphabet[rand::rngs::OsRng.gen_range(0..alphabet.len())]).collect()
    };
    StoredKeys {
        key_id: format!("rzp_live_{}", alphanumeric(14)),
        key_secret: alphanumeric(24),
        webhook_secret: crate::secrets::random_token(),
    }
}

fn json(keys: &StoredKeys) -> String {
    serde_json::json!({ "key_id": keys.key_id, "key_secret": keys.key_secret, "webhook_secret": keys.webhook_secret })
        .to_string()
}

#[test]
fn the_shipped_placeholder_secret_is_refused() {
    let placeholder = r#"{"key_id":"rzp_live_REPLACE","key_secret":"REPLACE","webhook_secret":"REPLACE"}"#;
    let refused = RazorpayConfig::from_secret_json("razorpay", placeholder, DEFAULT_API_BASE).err();
    assert!(matches!(refused, Some(SecretError::Placeholder { .. })), "{refused:?}");
    let real = json(&random_keys());
    assert!(RazorpayConfig::from_secret_json("razorpay", &real, DEFAULT_API_BASE).is_ok());
    let not_razorpay = real.replace("rzp_live_", "key_live_");
    assert!(RazorpayConfig::from_secret_json("razorpay", &not_razorpay, DEFAULT_API_BASE).is_err());
}

#[test]
fn each_refused_key_is_named_by_its_own_variable() {
    let names = ["RAZORPAY_KEY_ID", "RAZORPAY_KEY_SECRET", "RAZORPAY_WEBHOOK_SECRET"];
    for webhook_secret in ["local_standin_webhook_secret", "abcdefghijklmnopqrstuvwxyz", "test_webhook_secret_1234"] {
        let keys = StoredKeys { webhook_secret: webhook_secret.into(), ..random_keys() };
        let refused = keys.checked(names, DEFAULT_API_BASE.into()).err();
        assert_eq!(refused.as_ref().map(SecretError::name), Some("RAZORPAY_WEBHOOK_SECRET"), "{refused:?}");
        assert!(!refused.map(|e| e.to_string()).unwrap_or_default().contains(webhook_secret));
    }
    let keys = StoredKeys { key_secret: "local_standin_key_secret".into(), ..random_keys() };
    let refused = keys.checked(names, DEFAULT_API_BASE.into()).err();
    assert_eq!(refused, Some(SecretError::WellKnown { name: "RAZORPAY_KEY_SECRET".into() }));
    let keys = StoredKeys { key_id: "key_live_0123456789abcd".into(), ..random_keys() };
    let refused = keys.checked(names, DEFAULT_API_BASE.into()).err();
    assert_eq!(refused.as_ref().map(SecretError::name), Some("RAZORPAY_KEY_ID"));
}

#[test]
fn the_fixture_checkout_signature_verifies() {
    let expected = "388d1c15d2748eb6034544383462ae05da54a6a13565402d6df342f65dac2b6c";
    assert_eq!(checkout_signature("inferex_test_key_secret", "order_DESlLckIVRkHWj", "pay_DESlfW9H8K9uqM"), expected);
    assert!(verify_checkout_signature(
        "inferex_test_key_secret",
        "order_DESlLckIVRkHWj",
        "pay_DESlfW9H8K9uqM",
        expected
    ));
    assert!(!verify_checkout_signature("inferex_test_key_secret", "order_other", "pay_DESlfW9H8K9uqM", expected));
}

#[test]
fn the_fixture_payload_parses() -> Result<(), serde_json::Error> {
    let event: WebhookEvent = serde_json::from_slice(FIXTURE)?;
    assert_eq!(event.event, "payment.captured");
    let payment = event.payment();
    assert_eq!(payment.as_ref().map(|p| p.amount), Some(50_000));
    assert_eq!(payment.and_then(|p| p.order_id).as_deref(), Some("order_DESlLckIVRkHWj"));
    Ok(())
}

#[test]
fn empty_notes_come_back_as_an_array_and_still_parse() -> Result<(), serde_json::Error> {
    let order: Order = serde_json::from_str(
        r#"{"id":"order_1","entity":"order","amount":100,"amount_paid":0,"amount_due":100,"currency":"INR",
            "receipt":"r","status":"created","attempts":0,"notes":[],"created_at":1}"#,
    )?;
    assert_eq!(order.notes, serde_json::json!([]));
    Ok(())
}
