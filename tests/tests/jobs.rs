//! Each scheduled job needs only its own secrets: without Razorpay's keys (missing, or refused at the
//! start), reconciliation and the closed accounts' refunds fail and say so, while the stale-hold sweeper and
//! the outbox redrive, which need no Razorpay, still do their work. On both stores.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use serde_json::json;
use shared::money::UNITS_PER_RUPEE;
use shared::store::{Condition, Item, Put, Query, Table, schema};
use shared::wallet::WalletStore;
use shared::wallet::metering::{self, BalanceHints};

on_both_stores!(jobs_without_razorpays_keys_still_sweep_holds_and_redrive_mail);

async fn jobs_without_razorpays_keys_still_sweep_holds_and_redrive_mail(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("nokeys@example.in").await?;
    api.fund(&token, 100).await?;
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    // A call whose process died before settling: its hold is left for the sweeper.
    let call = metering::HeldCall {
        request_id: "req_orphan".into(),
        key_id: "key_tests".into(),
        model: "llama-3.1-8b".into(),
        prompt_tokens: 100,
        completion_tokens: 50,
    };
    metering::place_call_hold(ports, &BalanceHints::default(), &user, 3 * UNITS_PER_RUPEE, &call).await?;
    // A message whose sender claimed it and died: left for the outbox redrive.
    api.signup("stuck-mail@example.in", "correct horse battery").await?.error_for_status()?;
    let waiting = store.query(Query::new(Table::Main, schema::OUTBOX_PK)).await?.items;
    let message = waiting
        .iter()
        .find(|i| i.attrs["kind"] == "verify_email" && i.attrs["user_id"] != json!(user))
        .and_then(|i| i.attrs["id"].as_str())
        .ok_or("nothing queued")?
        .to_owned();
    let claim = json!({ "status": "sending", "claim": "dead", "at": api.clock_now(), "kind": "verify_email" });
    let expires = (api.clock_now() + Duration::days(30)).timestamp();
    let item = Item::from_record(schema::mail_sent_pk(&message), "SENT", &claim, Some(expires))?;
    store.put(Put { table: Table::Main, item, condition: Condition::NotExists }).await?;
    api.clock.advance(Duration::minutes(11));

    // The jobs function's state when Razorpay's secret is missing or was refused at its start.
    let mut without_keys = api.state.clone();
    without_keys.razorpay = None;
    let report = jobs::run(&without_keys).await?;
    assert_eq!(report.failed_jobs, vec!["reconciliation", "closure_refunds"], "{report:?}");
    assert_eq!(
        report.stale_holds,
        metering::SweepReport { wallets: 1, charged: 1, released: 0, leases: 0, purses: 0, out_of_time: false }
    );
    assert!(report.mail_redriven >= 1, "{report:?}");
    let delivered = api.mail_to("stuck-mail@example.in").await?;
    assert_eq!(delivered.iter().filter(|m| m.kind == "verify_email").count(), 1, "the stuck message, sent once");
    assert_eq!(api.ledger_checked_balance(&user).await?, 97 * UNITS_PER_RUPEE);
    assert_eq!(store.wallet(&user).await?.held, 0);
    Ok(())
}
