//! The deployed binary fails closed at its cold start: a secret in the environment, no Razorpay secret, or
//! one that still holds the old template's placeholder stop it with one `refusing to start` line before it serves anything; valid secrets get past the check (to the Lambda runtime, which is absent here). The
//! secrets live in moto's Secrets Manager, started by `make test`.

use shared::testing::moto_secret as secret;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn cold_start(vars: &[(&str, &str)]) -> Result<(bool, String), String> {
    shared::testing::cold_start(env!("CARGO_BIN_EXE_wallet"), vars)
}

#[tokio::test]
async fn the_wallet_function_refuses_to_start_without_valid_secrets() -> TestResult {
    let (ok, out) = cold_start(&[("RAZORPAY_WEBHOOK_SECRET", "a-webhook-secret-in-the-env")])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("RAZORPAY_WEBHOOK_SECRET"), "{out}");
    assert!(!out.contains("a-webhook-secret-in-the-env"), "the value is never logged: {out}");

    let (ok, out) = cold_start(&[])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("RAZORPAY_SECRET_ARN"), "{out}");

    let placeholder =
        secret(r#"{"key_id":"rzp_live_REPLACE","key_secret":"REPLACE","webhook_secret":"REPLACE"}"#).await?;
    let (ok, out) = cold_start(&[("RAZORPAY_SECRET_ARN", &placeholder)])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("placeholder"), "{out}");

    // What the template creates before an operator fills it: random text, not the keys' JSON.
    let unfilled = secret(&shared::secrets::random_token()).await?;
    let (ok, out) = cold_start(&[("RAZORPAY_SECRET_ARN", &unfilled)])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("malformed"), "{out}");

    let valid = secret(&shared::testing::random_razorpay_secret("live")).await?;
    let secrets = [("RAZORPAY_SECRET_ARN", valid.as_str())];
    // Top-ups charge GST and issue receipt vouchers: no supplier, or a GSTIN whose check character is wrong,
    // stops it too.
    let (ok, out) = cold_start(&secrets)?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_SUPPLIER_"), "{out}");
    let mut wrong = shared::testing::SUPPLIER_ENV.to_vec();
    wrong[1].1 = "29AAICI1234F1ZA";
    let (ok, out) = cold_start(&[&secrets[..], &wrong[..]].concat())?;
    assert!(!ok && out.contains("refusing to start") && out.contains("valid GSTIN"), "{out}");
    let (ok, out) = cold_start(&[&secrets[..], &shared::testing::SUPPLIER_ENV[..]].concat())?;
    assert!(!ok, "there is no Lambda runtime to serve: {out}");
    assert!(!out.contains("refusing to start"), "a valid secret passes the start-up checks: {out}");
    Ok(())
}
