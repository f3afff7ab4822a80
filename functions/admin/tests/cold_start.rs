//! The admin function fails closed at its cold start: no operators' credentials, weak ones, ones in the old
//! shape (a token without roles), no CloudFront edge secret, no vault key (it seals each operator's authenticator and opens the vault
//! for a reveal) or no supplier (the GSTR-1 files) stop it with one `refusing to start` line; valid ones get
//! past the checks (to the Lambda runtime, which is absent here). The secrets live in moto's Secrets Manager,
//! started by `make test`.

use serde_json::json;
use shared::testing::moto_secret as secret;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn cold_start(vars: &[(&str, &str)]) -> Result<(bool, String), String> {
    shared::testing::cold_start(env!("CARGO_BIN_EXE_admin"), vars)
}

#[tokio::test]
async fn the_admin_function_refuses_to_start_without_valid_operators_and_keys() -> TestResult {
    let vault = ("INFEREX_KMS_KEY_ID", "alias/vault");
    let (ok, out) = cold_start(&[vault])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_OPERATOR_TOKEN_SECRET_ARN"), "{out}");

    let token = shared::secrets::random_token();
    for (bad, reason) in [
        (json!({ "ravi@inferexai.in": { "token": "short", "roles": ["admin"] } }), "too short"),
        (json!({ "ravi@inferexai.in": token }), "roles"),
        (json!({ "ravi@inferexai.in": { "token": token, "roles": ["root"] } }), "roles"),
    ] {
        let arn = secret(&bad.to_string()).await?;
        let (ok, out) = cold_start(&[vault, ("INFEREX_OPERATOR_TOKEN_SECRET_ARN", &arn)])?;
        assert!(!ok && out.contains("refusing to start") && out.contains(reason), "{bad}: {out}");
        assert!(!out.contains(&token), "no token is ever logged: {out}");
    }

    let operators = secret(&json!({ "ravi@inferexai.in": { "token": token, "roles": ["admin"] } }).to_string()).await?;
    let credentials = ("INFEREX_OPERATOR_TOKEN_SECRET_ARN", operators.as_str());
    let (ok, out) = cold_start(&[credentials])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_KMS_KEY_ID"), "{out}");
    // Without CloudFront's edge secret every operator would be seen at an edge server's address.
    let (ok, out) = cold_start(&[vault, credentials])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_EDGE_SECRET_ARN"), "{out}");
    let edge_arn = secret(&shared::secrets::random_token()).await?;
    let edge = ("INFEREX_EDGE_SECRET_ARN", edge_arn.as_str());
    let (ok, out) = cold_start(&[vault, credentials, edge])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_SUPPLIER_"), "{out}");
    let (ok, out) = cold_start(&[&[vault, credentials, edge][..], &shared::testing::SUPPLIER_ENV[..]].concat())?;
    assert!(!ok, "there is no Lambda runtime to serve: {out}");
    assert!(!out.contains("refusing to start"), "valid credentials and keys pass the start-up checks: {out}");
    Ok(())
}
