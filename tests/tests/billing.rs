//! Inference billing on both stores: holds, settlement, release, the stale-hold sweeper, the round-trip
//! budget (one write before forwarding, one after), and no overspend under heavy concurrency.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Duration;
use e2e::{Backend, CountingStore, Fault, FaultyStore, TestApi, TestResult, on_both_stores};
use shared::clock::Clock;
use shared::money::UNITS_PER_RUPEE;
use shared::usage::UsageRecord;
use shared::wallet::WalletStore;
use shared::wallet::metering::{self, BalanceHints, Hold};

on_both_stores!(
    settlement_charges_the_actual_cost_and_returns_the_rest,
    a_charge_above_its_hold_is_charged_in_full_and_an_empty_wallet_gets_402,
    ten_times_more_concurrent_requests_than_the_balance_covers_never_overspend,
    stale_holds_are_swept_and_released_once,
    stale_holds_of_calls_are_charged_what_they_recorded_or_in_full,
    a_razorpay_outage_does_not_stop_the_sweeper,
    a_settlement_that_cannot_commit_leaves_its_usage_for_the_sweeper,
    a_late_settlement_after_the_sweeper_charged_charges_nothing_more,
    a_request_costs_one_write_before_and_one_after,
    overlapping_requests_on_one_wallet_settle_at_the_first_try,
    fifty_concurrent_settlements_on_one_wallet_each_commit_at_the_first_try,
    a_wrong_balance_hint_costs_a_retry_never_a_wrong_ledger,
);

/// Funds a verified user's wallet with `rupees` through a real top-up and webhook.
async fn funded_user(
    api: &TestApi,
    email: &str,
    rupees: i64,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, rupees).await?;
    api.clock.advance(Duration::seconds(1));
    Ok(user)
}

fn usage(api: &TestApi, prompt: u64, completion: u64) -> UsageRecord {
    let id = format!("req_{}", shared::secrets::random_suffix());
    e2e::usage_record(&id, (prompt, completion), api.clock.now())
}

async fn settle(
    api: &TestApi,
    hints: &BalanceHints,
    hold: &Hold,
    cost: i64,
) -> Result<UsageRecord, shared::error::ApiError> {
    metering::settle(
        api.state.store.as_ref(),
        hints,
        hold,
        metering::Settlement { cost, usage: usage(api, 10, 5), expiries: far(api), deadline: deadline() },
    )
    .await
}

fn far(api: &TestApi) -> metering::Expiries {
    let far = api.clock.now_epoch() + 365 * 86_400;
    metering::Expiries { usage: far, ledger: far }
}

/// The call record a gateway writes with its hold: a llama-3.1-8b call bounded at 100 + 50 tokens.
fn held_call(request_id: &str) -> metering::HeldCall {
    metering::HeldCall {
        request_id: request_id.into(),
        key_id: "key_tests".into(),
        model: "llama-3.1-8b".into(),
        prompt_tokens: 100,
        completion_tokens: 50,
    }
}

fn deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(30)
}

async fn settlement_charges_the_actual_cost_and_returns_the_rest(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "settle@example.in", 100).await?;
    let hints = BalanceHints::default();
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let hold = metering::place_hold(ports, &hints, &user, 10 * UNITS_PER_RUPEE).await?;
    let wallet = store.wallet(&user).await?;
    assert_eq!(
        (wallet.balance, wallet.held, wallet.available),
        (100 * UNITS_PER_RUPEE, 10 * UNITS_PER_RUPEE, 90 * UNITS_PER_RUPEE)
    );

    let logged = settle(&api, &hints, &hold, 4 * UNITS_PER_RUPEE).await?;
    assert_eq!(logged.cost, 4 * UNITS_PER_RUPEE);
    let wallet = store.wallet(&user).await?;
    assert_eq!((wallet.balance, wallet.held, wallet.available), (96 * UNITS_PER_RUPEE, 0, 96 * UNITS_PER_RUPEE));
    let (entries, _) = store.ledger(&user, 10, None).await?;
    assert_eq!((entries[0].amount, entries[0].balance_after), (-4 * UNITS_PER_RUPEE, 96 * UNITS_PER_RUPEE));
    api.ledger_checked_balance(&user).await?;
    let dump = api.dump().await?;
    let usage_line = dump.lines().find(|l| l.contains(" USAGE#")).ok_or("usage log")?;
    assert!(usage_line.contains(&logged.id) && usage_line.contains("\"prompt_tokens\":10"));
    // Settling or releasing the same hold again changes nothing.
    assert!(!metering::release(store, &user, &hold.id, hold.amount).await?);
    assert_eq!(store.wallet(&user).await?, wallet);
    Ok(())
}

async fn a_charge_above_its_hold_is_charged_in_full_and_an_empty_wallet_gets_402(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "cap@example.in", 100).await?;
    let hints = BalanceHints::default();
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let hold = metering::place_hold(ports, &hints, &user, UNITS_PER_RUPEE).await?;
    // Nothing the provider bills is forgiven: a report above the hold is charged, and its excess recorded.
    let logged = settle(&api, &hints, &hold, 50 * UNITS_PER_RUPEE).await?;
    assert_eq!((logged.cost, logged.over_hold), (50 * UNITS_PER_RUPEE, 49 * UNITS_PER_RUPEE));
    let wallet = store.wallet(&user).await?;
    assert_eq!((wallet.balance, wallet.held, wallet.available), (50 * UNITS_PER_RUPEE, 0, 50 * UNITS_PER_RUPEE));

    let too_much = metering::place_hold(ports, &hints, &user, 100 * UNITS_PER_RUPEE).await;
    let error = too_much.err().ok_or("a hold above the balance passed")?;
    assert_eq!(
        (error.status().as_u16(), error.code(), error.error_type()),
        (402, "insufficient_balance", "insufficient_quota")
    );
    let (nobody, _) = api.signed_in("empty@example.in").await?;
    assert!(metering::place_hold(ports, &hints, &nobody, 1).await.is_err(), "no wallet, no hold");
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn ten_times_more_concurrent_requests_than_the_balance_covers_never_overspend(backend: Backend) -> TestResult {
    let api = Arc::new(TestApi::start(backend).await?);
    let user = funded_user(&api, "rush@example.in", 100).await?;
    let hints = Arc::new(BalanceHints::default());
    let n = 5;
    let price = 20 * UNITS_PER_RUPEE; // the balance covers exactly n requests
    let mut tasks = Vec::new();
    for _ in 0..10 * n {
        let (api, user, hints) = (api.clone(), user.clone(), hints.clone());
        tasks.push(shared::tasks::spawn("test", async move {
            match metering::place_hold(&api.state.ports, &hints, &user, price).await {
                Ok(hold) => settle(&api, &hints, &hold, price).await.map(|u| u.cost > 0),
                Err(e) if e.code() == "insufficient_balance" => Ok(false),
                Err(e) => Err(e),
            }
        }));
    }
    let mut charged = 0;
    for task in tasks {
        if task.await?? {
            charged += 1;
        }
    }
    let wallet = api.state.store.wallet(&user).await?;
    assert!(charged <= n, "{charged} charged successes for a balance covering {n}");
    assert_eq!(charged, n, "every request the balance covers succeeds");
    assert!(wallet.balance >= 0 && wallet.available >= 0 && wallet.held == 0, "{wallet:?}");
    assert_eq!(wallet.balance, 0);
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

/// A call whose process died after the provider answered: the sweeper charges its recorded usage; one that
/// died before recording any: the whole hold. Nothing the provider may have billed is forgiven.
async fn stale_holds_of_calls_are_charged_what_they_recorded_or_in_full(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "died@example.in", 100).await?;
    let hints = BalanceHints::default();
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    metering::place_call_hold(ports, &hints, &user, 2 * UNITS_PER_RUPEE, &held_call("req_a")).await?;
    let known = metering::place_call_hold(ports, &hints, &user, 3 * UNITS_PER_RUPEE, &held_call("req_b")).await?;
    let mut used = usage(&api, 40, 7);
    used.id = "req_b".into();
    metering::record_pending(store, &known, UNITS_PER_RUPEE / 2, &used).await?;
    api.clock.advance(Duration::minutes(10));
    let report = jobs::run(&api.state).await?.stale_holds;
    assert_eq!(
        report,
        metering::SweepReport { wallets: 1, charged: 2, released: 0, leases: 0, purses: 0, out_of_time: false }
    );
    assert_eq!(
        jobs::run(&api.state).await?.stale_holds,
        metering::SweepReport { wallets: 1, ..Default::default() },
        "charged once"
    );
    let wallet = store.wallet(&user).await?;
    let expected = 100 * UNITS_PER_RUPEE - 2 * UNITS_PER_RUPEE - UNITS_PER_RUPEE / 2;
    assert_eq!((wallet.balance, wallet.held, wallet.available), (expected, 0, expected));
    assert_eq!(api.ledger_checked_balance(&user).await?, expected);
    let dump = api.dump().await?;
    let usage_lines: Vec<&str> = dump.lines().filter(|l| l.contains(" USAGE#")).collect();
    assert_eq!(usage_lines.len(), 2, "{dump}");
    assert!(usage_lines.iter().any(|l| l.contains("req_a")
        && l.contains("\"status\":\"settled_by_sweeper\"")
        && l.contains("\"estimated\":true")));
    assert!(usage_lines.iter().any(|l| l.contains("req_b") && l.contains("\"prompt_tokens\":40")));
    assert!(!dump.contains("holdcall_") && !dump.contains("holdusage_"), "nothing of the holds is left: {dump}");
    Ok(())
}

async fn a_late_settlement_after_the_sweeper_charged_charges_nothing_more(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "late@example.in", 100).await?;
    let hints = BalanceHints::default();
    let ports = &api.state.ports;
    let call = held_call("req_late");
    let hold = metering::place_call_hold(ports, &hints, &user, 2 * UNITS_PER_RUPEE, &call).await?;
    api.clock.advance(Duration::minutes(10));
    // Two sweeper runs at once (a schedule delivered twice), then the frozen call wakes up and settles.
    let (a, b) = tokio::join!(jobs::run(&api.state), jobs::run(&api.state));
    // Both may report the hold settled (the second finds the first one's entry); the ledger shows one charge.
    assert!(a?.stale_holds.charged + b?.stale_holds.charged >= 1);
    let late = settle(&api, &hints, &hold, UNITS_PER_RUPEE).await?;
    assert_eq!((late.cost, late.status.as_str()), (2 * UNITS_PER_RUPEE, "settled_by_sweeper"), "the sweeper's entry");
    let expected = 98 * UNITS_PER_RUPEE;
    assert_eq!(api.ledger_checked_balance(&user).await?, expected);
    let dump = api.dump().await?;
    assert_eq!(dump.lines().filter(|l| l.contains(" USAGE#")).count(), 1, "{dump}");
    Ok(())
}

async fn a_settlement_that_cannot_commit_leaves_its_usage_for_the_sweeper(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "busy@example.in", 100).await?;
    let hints = BalanceHints::default();
    let busy = Arc::new(FaultyStore::new(api.state.store.clone(), Fault::TransactionsConflict));
    let ports = api.state.ports.with_store(busy.clone());
    let call = held_call("req_busy");
    let hold = metering::place_call_hold(&ports, &hints, &user, 2 * UNITS_PER_RUPEE, &call).await?;
    let mut used = usage(&api, 30, 9);
    used.id = "req_busy".into();
    let soon = std::time::Instant::now() + std::time::Duration::from_millis(200);
    let gave_up = metering::settle(
        busy.as_ref(),
        &hints,
        &hold,
        metering::Settlement { cost: UNITS_PER_RUPEE / 4, usage: used, expiries: far(&api), deadline: soon },
    )
    .await;
    assert_eq!(gave_up.err().map(|e| e.status().as_u16()), Some(503), "it gives up at its deadline");
    assert!(api.dump().await?.contains("holdusage_"), "with what the call used on record");
    api.clock.advance(Duration::minutes(10));
    assert_eq!(
        jobs::run(&api.state).await?.stale_holds,
        metering::SweepReport { wallets: 1, charged: 1, released: 0, leases: 0, purses: 0, out_of_time: false }
    );
    let expected = 100 * UNITS_PER_RUPEE - UNITS_PER_RUPEE / 4;
    assert_eq!(api.ledger_checked_balance(&user).await?, expected, "the recorded usage, not the hold");
    assert_eq!(api.state.store.wallet(&user).await?.held, 0);
    Ok(())
}

async fn stale_holds_are_swept_and_released_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "sweep@example.in", 100).await?;
    let hints = BalanceHints::default();
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let stale = metering::place_hold(ports, &hints, &user, 30 * UNITS_PER_RUPEE).await?;
    api.clock.advance(Duration::minutes(10));
    let fresh = metering::place_hold(ports, &hints, &user, 10 * UNITS_PER_RUPEE).await?;
    // The scheduled jobs run the sweeper: holds older than the inference timeout with no call on record
    // are released, once.
    assert_eq!(
        jobs::run(&api.state).await?.stale_holds,
        metering::SweepReport { wallets: 1, charged: 0, released: 1, leases: 0, purses: 0, out_of_time: false }
    );
    assert_eq!(
        jobs::run(&api.state).await?.stale_holds,
        metering::SweepReport { wallets: 1, ..Default::default() },
        "released once"
    );
    let budget = std::time::Duration::from_secs(30);
    assert_eq!(
        metering::sweep_stale_holds(ports, Duration::minutes(5), budget).await?,
        metering::SweepReport { wallets: 1, ..Default::default() }
    );
    assert_eq!(store.wallet(&user).await?.held, 10 * UNITS_PER_RUPEE);
    let wallet = store.wallet(&user).await?;
    assert_eq!((wallet.held, wallet.available), (10 * UNITS_PER_RUPEE, 90 * UNITS_PER_RUPEE));

    // A settlement arriving after its hold was swept changes nothing: the sweeper's decision stands (a
    // hold with a call on record is charged by it, so settling again would charge twice).
    assert_eq!(settle(&api, &hints, &stale, 5 * UNITS_PER_RUPEE).await?.cost, 0);
    settle(&api, &hints, &fresh, 10 * UNITS_PER_RUPEE).await?;
    let wallet = store.wallet(&user).await?;
    assert_eq!((wallet.balance, wallet.held, wallet.available), (90 * UNITS_PER_RUPEE, 0, 90 * UNITS_PER_RUPEE));
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn a_request_costs_one_write_before_and_one_after(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "trips@example.in", 100).await?;
    let hints = BalanceHints::default();
    let counting = Arc::new(CountingStore::new(api.state.store.clone()));
    let ports = api.state.ports.with_store(counting.clone());
    let hold = metering::place_hold(&ports, &hints, &user, UNITS_PER_RUPEE).await?;
    assert_eq!(counting.calls.swap(0, Ordering::SeqCst), 1, "one round trip before forwarding");
    metering::settle(
        counting.as_ref(),
        &hints,
        &hold,
        metering::Settlement { cost: 1_000, usage: usage(&api, 3, 4), expiries: far(&api), deadline: deadline() },
    )
    .await?;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1, "one round trip after");
    Ok(())
}

async fn overlapping_requests_on_one_wallet_settle_at_the_first_try(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "overlap@example.in", 100).await?;
    let hints = BalanceHints::default();
    let counting = Arc::new(CountingStore::new(api.state.store.clone()));
    let ports = api.state.ports.with_store(counting.clone());
    // Three requests in flight at once; each settles after the others changed the balance.
    let mut holds = Vec::new();
    for _ in 0..3 {
        holds.push(metering::place_hold(&ports, &hints, &user, UNITS_PER_RUPEE).await?);
    }
    counting.calls.store(0, Ordering::SeqCst);
    for hold in holds.iter().rev() {
        metering::settle(
            counting.as_ref(),
            &hints,
            hold,
            metering::Settlement { cost: 1_000, usage: usage(&api, 3, 4), expiries: far(&api), deadline: deadline() },
        )
        .await?;
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 3, "one round trip per settlement");
    assert_eq!(api.state.store.wallet(&user).await?.balance, 100 * UNITS_PER_RUPEE - 3_000);
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

/// Fifty calls of one account settling at the same moment in one process: they take turns, each from the
/// balance the previous one left, so none pays a failed transaction and a re-read.
async fn fifty_concurrent_settlements_on_one_wallet_each_commit_at_the_first_try(backend: Backend) -> TestResult {
    const CALLS: usize = 50;
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "fifty@example.in", 100).await?;
    // Turns are waited for however slow a busy machine makes each of the fifty transactions.
    let hints = BalanceHints::default().with_turn_wait(std::time::Duration::from_secs(600));
    let counting = Arc::new(CountingStore::new(api.state.store.clone()));
    let ports = api.state.ports.with_store(counting.clone());
    let mut placed = Vec::new();
    for _ in 0..CALLS {
        placed.push(metering::place_hold(&ports, &hints, &user, UNITS_PER_RUPEE).await?);
    }
    counting.calls.store(0, Ordering::SeqCst);
    let settlements = placed.iter().map(|hold| {
        metering::settle(
            counting.as_ref(),
            &hints,
            hold,
            metering::Settlement { cost: 1_000, usage: usage(&api, 3, 4), expiries: far(&api), deadline: deadline() },
        )
    });
    for settled in futures_util::future::join_all(settlements).await {
        assert_eq!(settled?.cost, 1_000);
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), CALLS, "one round trip per settlement");
    assert_eq!(api.state.store.wallet(&user).await?.balance, 100 * UNITS_PER_RUPEE - 1_000 * CALLS as i64);
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

async fn a_wrong_balance_hint_costs_a_retry_never_a_wrong_ledger(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let user = funded_user(&api, "hint@example.in", 100).await?;
    let hints = BalanceHints::default();
    let hold = metering::place_hold(&api.state.ports, &hints, &user, UNITS_PER_RUPEE).await?;
    // Another process credited or charged the wallet since: this process's hint is wrong.
    hints.note(&user, 7 * UNITS_PER_RUPEE);
    assert_eq!(settle(&api, &hints, &hold, UNITS_PER_RUPEE / 2).await?.cost, UNITS_PER_RUPEE / 2);
    let (entries, _) = api.state.store.ledger(&user, 1, None).await?;
    assert_eq!(entries[0].balance_after, 100 * UNITS_PER_RUPEE - UNITS_PER_RUPEE / 2);
    assert_eq!(hints.get(&user), Some(entries[0].balance_after), "the hint follows the settlement");
    api.ledger_checked_balance(&user).await?;
    Ok(())
}

/// Reconciliation fails as a whole while Razorpay is down; the sweeper, which returns held money, runs
/// all the same.
async fn a_razorpay_outage_does_not_stop_the_sweeper(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("outage@example.in").await?;
    api.fund(&token, 100).await?;
    let order = api
        .http
        .post(api.url("/v1/wallet/topups"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "amount_paise": 10_000 }))
        .send()
        .await?;
    assert_eq!(order.status(), reqwest::StatusCode::CREATED, "an open top-up for reconciliation to check");
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    metering::place_call_hold(ports, &BalanceHints::default(), &user, 3 * UNITS_PER_RUPEE, &held_call("req_x")).await?;
    api.razorpay.set_failing(true);
    api.clock.advance(Duration::minutes(10));

    let report = jobs::run(&api.state).await?;
    assert_eq!(report.reconciliation.errors, 1, "{report:?}");
    assert_eq!(
        report.stale_holds,
        metering::SweepReport { wallets: 1, charged: 1, released: 0, leases: 0, purses: 0, out_of_time: false }
    );
    let expected = 97 * UNITS_PER_RUPEE;
    assert_eq!(api.ledger_checked_balance(&user).await?, expected);
    assert_eq!(store.wallet(&user).await?.held, 0);
    Ok(())
}
