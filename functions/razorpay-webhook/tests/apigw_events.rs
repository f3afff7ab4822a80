//! The razorpay-webhook Lambda fed an API Gateway REST event carrying Razorpay's signed fixture payload
//! (`payment.captured`, 372 bytes, signed with `inferex_test_webhook_secret`), through the same service
//! `main` runs.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::Value;
use shared::blobs::LocalBlobs;
use shared::config::Config;
use shared::razorpay::{RazorpayClient, RazorpayConfig};
use shared::secrets::SecretString;
use shared::state::AppState;
use shared::testing::{create_account, embedded_state, invoke_lambda};
use shared::wallet::{Topup, TopupStatus, TopupStore, WalletStore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const FIXTURE: &str = include_str!("../../../shared/tests/fixtures/razorpay/payment.captured.json");

fn event(signature: Option<&str>) -> Result<String, serde_json::Error> {
    let mut event: Value = serde_json::from_str(include_str!("fixtures/rest-v1-webhook.json"))?;
    event["body"] = Value::String(FIXTURE.to_owned());
    if let Some(signature) = signature {
        event["headers"]["X-Razorpay-Signature"] = Value::String(signature.into());
        event["multiValueHeaders"]["X-Razorpay-Signature"] = serde_json::json!([signature]);
    }
    serde_json::to_string(&event)
}

fn state() -> Result<AppState, Box<dyn std::error::Error>> {
    let blobs = std::env::temp_dir().join(format!("inferex-webhook-{}", shared::secrets::random_suffix()));
    let razorpay = RazorpayClient::new(RazorpayConfig {
        key_id: "rzp_test_fixture".into(),
        key_secret: SecretString::new("inferex_test_key_secret"),
        webhook_secret: SecretString::new("inferex_test_webhook_secret"),
        api_base: "http://127.0.0.1:9".into(),
    })?;
    Ok(embedded_state(Config::default())?.with_razorpay(razorpay).with_blobs(Arc::new(LocalBlobs::new(
        &blobs,
        "http://127.0.0.1:8080",
        b"test link key".to_vec(),
    ))))
}

/// A top-up whose order is the fixture's `order_DESlLckIVRkHWj` for ₹500.
async fn fixture_topup(state: &AppState) -> Result<String, Box<dyn std::error::Error>> {
    let user_id = create_account(state, "fixture@example.in").await?;
    let topup = Topup {
        id: "tup_fixture".into(),
        user_id: user_id.clone(),
        razorpay_order_id: "order_DESlLckIVRkHWj".into(),
        amount_paise: 50_000,
        currency: "INR".into(),
        status: TopupStatus::Created,
        created_at: Utc::now(),
        payment_id: None,
        paid_at: None,
        // The fixture's payment is the ₹500 order itself: an order from before top-ups carried GST.
        tax: None,
        recipient: None,
    };
    state.store.save_new_topup(&topup, Utc::now().timestamp() + 3600).await?;
    Ok(user_id)
}

#[tokio::test]
async fn the_signed_fixture_credits_the_order_once() -> TestResult {
    let state = state()?;
    let user_id = fixture_topup(&state).await?;
    let answer = invoke_lambda(razorpay_webhook::app(state.clone()), &event(None)?).await?;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "processed");
    let again = invoke_lambda(razorpay_webhook::app(state.clone()), &event(None)?).await?;
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(state.store.wallet(&user_id).await?.balance, 500 * shared::money::UNITS_PER_RUPEE);
    Ok(())
}

#[tokio::test]
async fn a_forged_signature_is_refused_and_changes_nothing() -> TestResult {
    let state = state()?;
    let user_id = fixture_topup(&state).await?;
    let forged = event(Some("8778ecbdf6fa3a024d48720de19e120646a129c6186dd122e9b7a059052e986c"))?;
    let answer = invoke_lambda(razorpay_webhook::app(state.clone()), &forged).await?;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"]["code"], "invalid_signature");
    assert_eq!(state.store.wallet(&user_id).await?.balance, 0);
    Ok(())
}
