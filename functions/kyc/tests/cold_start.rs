//! The kyc function handles full PANs and the KYC provider's checks: it refuses to start without its vault
//! key, its KMS fingerprint key or the KYC provider's secret, and with a secret in its
//! environment (a fingerprint secret, the old way, or the provider's client secret), readable by anyone who
//! can read the function's configuration.

fn cold_start(vars: &[(&str, &str)]) -> Result<(bool, String), String> {
    shared::testing::cold_start(env!("CARGO_BIN_EXE_kyc"), vars)
}

#[test]
fn the_kyc_function_refuses_to_start_without_its_keys() -> Result<(), String> {
    let (ok, out) = cold_start(&[("INFEREX_KMS_KEY_ID", "alias/vault")])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_FINGERPRINT_KEY_ID"), "{out}");

    let keys = [("INFEREX_KMS_KEY_ID", "alias/vault"), ("INFEREX_FINGERPRINT_KEY_ID", "alias/fingerprints")];
    let (ok, out) = cold_start(&keys)?;
    assert!(!ok && out.contains("refusing to start") && out.contains("KYC_PROVIDER_SECRET_ARN"), "{out}");

    let in_environment =
        [("INFEREX_KMS_KEY_ID", "alias/vault"), ("CASHFREE_CLIENT_SECRET", "cfsk_ma_prod_0123456789abcdef")];
    let (ok, out) = cold_start(&in_environment)?;
    assert!(!ok && out.contains("CASHFREE_CLIENT_SECRET is set in the environment"), "{out}");
    assert!(!out.contains("0123456789abcdef"), "{out}");

    let old_way = [("INFEREX_KMS_KEY_ID", "alias/vault"), ("INFEREX_KYC_FINGERPRINT_SECRET", "0123456789abcdef0123")];
    let (ok, out) = cold_start(&old_way)?;
    assert!(!ok && out.contains("INFEREX_KYC_FINGERPRINT_SECRET is set in the environment"), "{out}");
    assert!(!out.contains("0123456789abcdef0123"), "{out}");
    Ok(())
}
