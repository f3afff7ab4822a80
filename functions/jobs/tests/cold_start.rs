//! The jobs function needs Razorpay's keys for two of its jobs only (reconciliation, closed accounts'
//! refunds): missing or refused keys never stop it from starting, so the stale-hold sweeper and the outbox
//! redrive keep running; the blob bucket its closure follow-up needs still does. The secrets live in moto's
//! Secrets Manager, started by `make test`.

use shared::testing::{moto_secret, random_razorpay_secret};

fn cold_start(vars: &[(&str, &str)]) -> Result<(bool, String), String> {
    shared::testing::cold_start(env!("CARGO_BIN_EXE_jobs"), vars)
}

#[tokio::test]
async fn the_jobs_function_starts_without_razorpays_keys_but_not_without_its_bucket()
-> Result<(), Box<dyn std::error::Error>> {
    let (ok, out) = cold_start(&[])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_BLOB_BUCKET"), "{out}");

    let bucket = ("INFEREX_BLOB_BUCKET", "inferex-test-exports");
    // It issues receipt vouchers a stopped process left due: without the supplier it refuses too.
    let (ok, out) = cold_start(&[bucket])?;
    assert!(!ok && out.contains("refusing to start") && out.contains("INFEREX_SUPPLIER_"), "{out}");
    let with = |vars: &[(&'static str, &str)]| -> Vec<(&str, String)> {
        vars.iter().chain(shared::testing::SUPPLIER_ENV.iter()).map(|(k, v)| (*k, (*v).to_owned())).collect()
    };
    let run = |vars: Vec<(&str, String)>| {
        let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cold_start(&borrowed)
    };
    let (ok, out) = run(with(&[bucket]))?;
    assert!(!ok, "there is no Lambda runtime to serve: {out}");
    assert!(!out.contains("refusing to start"), "no Razorpay secret named: the function starts: {out}");

    // Keys refused at the start (the stand-in's well-known webhook secret): logged, and the start goes on.
    let mut weak: serde_json::Value = serde_json::from_str(&random_razorpay_secret("live"))?;
    weak["webhook_secret"] = serde_json::json!("local_standin_webhook_secret");
    let weak = moto_secret(&weak.to_string()).await?;
    let (ok, out) = run(with(&[bucket, ("RAZORPAY_SECRET_ARN", &weak)]))?;
    assert!(!ok, "there is no Lambda runtime to serve: {out}");
    assert!(!out.contains("refusing to start"), "{out}");
    assert!(out.contains("Razorpay's keys cannot be used") && out.contains("well-known"), "{out}");
    assert!(!out.contains("local_standin_webhook_secret"), "the value is never logged: {out}");

    let valid = moto_secret(&random_razorpay_secret("live")).await?;
    let (ok, out) = run(with(&[bucket, ("RAZORPAY_SECRET_ARN", &valid)]))?;
    assert!(!ok && !out.contains("refusing to start") && !out.contains("cannot be used"), "{out}");
    Ok(())
}
