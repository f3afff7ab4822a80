//! The auth function records the caller's address (login records, per-address limits): in AWS it refuses
//! to start without CloudFront's edge secret, or with a weak one, since without it every browser behind
//! CloudFront would be recorded as one of CloudFront's addresses. The secret lives in moto's Secrets
//! Manager, started by `make test`.

use shared::testing::moto_secret;

fn cold_start(vars: &[(&str, &str)]) -> Result<(bool, String), String> {
    shared::testing::cold_start(env!("CARGO_BIN_EXE_auth"), vars)
}

#[tokio::test]
async fn the_auth_function_refuses_to_start_without_a_strong_edge_secret() -> Result<(), Box<dyn std::error::Error>> {
    let (ok, out) = cold_start(&[])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_EDGE_SECRET_ARN"), "{out}");

    let weak = moto_secret("short-edge-value").await?;
    let (ok, out) = cold_start(&[("INFEREX_EDGE_SECRET_ARN", &weak)])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("too short"), "{out}");
    assert!(!out.contains("short-edge-value"), "the value is never logged: {out}");

    let strong = moto_secret(&shared::secrets::random_token()).await?;
    let (ok, out) = cold_start(&[("INFEREX_EDGE_SECRET_ARN", &strong)])?;
    assert!(!ok, "there is no Lambda runtime to serve: {out}");
    assert!(!out.contains("refusing to start"), "a strong edge secret passes the start-up checks: {out}");
    Ok(())
}
