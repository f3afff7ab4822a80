//! The stale-hold sweeper reaches every wallet, however many there are: a run that meets its budget saves
//! where it stopped and the next goes on from there (both stores), and one run reconciles 10,000 wallets
//! with stale holds on DynamoDB Local, wallets swept several at once (its time is printed;
//! docs/architecture.md has the figures).

use std::sync::Arc;

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use futures_util::StreamExt;
use serde_json::json;
use shared::clock::ManualClock;
use shared::money::UNITS_PER_RUPEE;
use shared::ports::Ports;
use shared::store::{Condition, Item, Put, Table, schema};
use shared::wallet::WalletStore;
use shared::wallet::metering::{self, BalanceHints, HeldCall};

on_both_stores!(a_sweep_out_of_time_goes_on_where_it_stopped_and_visits_every_wallet_once);

const HOLD: i64 = UNITS_PER_RUPEE;

/// `count` wallets of ₹10, each with a hold of ₹1 for a call, placed the real way; returns their user ids.
async fn wallets_with_holds(ports: &Ports, count: usize) -> Result<Vec<String>, String> {
    let store = ports.store();
    let users: Vec<String> = (0..count).map(|i| format!("usr_sweep{i:06}")).collect();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(users.iter())
        .map(|user| async move {
            let wallet = json!({ "balance": 10 * UNITS_PER_RUPEE, "held": 0, "available": 10 * UNITS_PER_RUPEE });
            let registry = json!({ "user_id": user });
            for (pk, sk, record) in [
                (schema::user_pk(user), schema::sk::WALLET, wallet),
                (schema::WALLETS_PK.into(), user.as_str(), registry),
            ] {
                let item = Item::from_record(pk, sk, &record, None).map_err(|e| e.to_string())?;
                store
                    .put(Put { table: Table::Main, item, condition: Condition::Always })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let call = HeldCall {
                request_id: format!("req_{user}"),
                key_id: "key_sweep".into(),
                model: "llama-3.1-8b".into(),
                prompt_tokens: 10,
                completion_tokens: 10,
            };
            metering::place_call_hold(ports, &BalanceHints::default(), user, HOLD, &call)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok(users)
}

/// Runs with no time at all still sweep a page each (every run makes progress); each saves where it stopped
/// and the next goes on from there, so three runs visit each of 450 wallets once and charge every hold once.
async fn a_sweep_out_of_time_goes_on_where_it_stopped_and_visits_every_wallet_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let users = wallets_with_holds(ports, 450).await?;
    api.clock.advance(Duration::minutes(10));
    let sweep = || metering::sweep_stale_holds(ports, Duration::minutes(6), std::time::Duration::ZERO);
    let runs = [sweep().await?, sweep().await?, sweep().await?];
    assert_eq!(runs.map(|r| r.wallets), [200, 200, 50], "{runs:?}");
    assert_eq!(runs.iter().map(|r| r.charged).sum::<usize>(), 450, "{runs:?}");
    assert!(runs[..2].iter().all(|r| r.out_of_time));
    for user in &users {
        let wallet = store.wallet(user).await?;
        assert_eq!((wallet.balance, wallet.held), (9 * UNITS_PER_RUPEE, 0), "{user}");
    }
    // The next run starts the circle again: nothing is left to charge.
    assert_eq!(sweep().await?.charged, 0);
    Ok(())
}

/// One run, with the deployed concurrency, reconciles 10,000 wallets with a stale hold each on DynamoDB Local:
/// every hold charged once (the whole hold: the calls recorded no usage), nothing left held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_run_reconciles_ten_thousand_wallets_on_dynamodb_local() -> TestResult {
    const WALLETS: usize = 10_000;
    let clock = ManualClock::starting_now();
    let store = Arc::new(shared::testing::dynamo_store(Arc::new(clock.clone())).await?);
    let setup = std::time::Instant::now();
    let ports = &Ports::new(store.clone(), Arc::new(clock.clone()), shared::config::Config::default());
    let users = wallets_with_holds(ports, WALLETS).await?;
    let setup = setup.elapsed();
    clock.advance(Duration::minutes(10));
    let started = std::time::Instant::now();
    // A generous budget: this test asserts that one run does it all, never how fast (a busy machine is slower).
    let budget = std::time::Duration::from_secs(1_800);
    let report = metering::sweep_stale_holds(ports, Duration::minutes(6), budget).await?;
    let took = started.elapsed();
    assert_eq!((report.wallets, report.charged, report.out_of_time), (WALLETS, WALLETS, false), "{report:?}");
    for user in users.iter().step_by(97) {
        let wallet = store.wallet(user).await?;
        assert_eq!((wallet.balance, wallet.held), (9 * UNITS_PER_RUPEE, 0), "{user}");
    }
    #[expect(clippy::print_stderr, reason = "the measured time is this test's report (docs/architecture.md quotes it)")]
    let () = eprintln!(
        "sweeper: {WALLETS} wallets with a stale hold each reconciled in one run of {:.1} s ({:.2} ms a wallet, {} at once; setup {:.1} s)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1_000.0 / WALLETS as f64,
        shared::wallet::metering::SWEEP_CONCURRENCY,
        setup.as_secs_f64()
    );
    Ok(())
}
