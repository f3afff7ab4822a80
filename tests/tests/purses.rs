//! Purses on both stores (`shared::wallet::metering::purses`): how a Lambda instance meters its calls without
//! a hot item. A burst over eight instances writes the wallet a few times, not twice a call; money other
//! purses keep never refuses a call the balance covers, and the 402 stays exact; a closure and a dispute
//! stop the purses; a dead instance's purse is charged and returned by the sweeper. The balance equals the
//! ledger and `available` is the balance less what is held at every step.

use std::sync::Arc;

use chrono::Duration;
use e2e::{Backend, CountingStore, TestApi, TestResult, on_both_stores};
use futures_util::future::join_all;
use serde_json::json;
use shared::catalog::Catalog;
use shared::clock::Clock;
use shared::config::Config;
use shared::error::ApiError;
use shared::inference::{self, Endpoint, Gateway};
use shared::money::UNITS_PER_RUPEE;
use shared::ports::Ports;
use shared::store::{ItemStore, Table};
use shared::wallet::WalletStore;
use shared::wallet::metering::{self, BalanceHints, HeldCall, Purses};

on_both_stores!(
    a_burst_over_eight_instances_writes_no_item_once_a_call,
    money_other_purses_keep_never_refuses_a_call_the_balance_covers,
    a_call_its_own_purse_and_the_wallet_cover_together_is_not_refused,
    closing_an_account_stops_its_purses_and_refunds_their_money,
    a_dispute_that_leaves_the_account_owing_stops_its_purses,
    a_dead_instance_purse_is_charged_and_returned_by_the_sweeper,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery";
const RUPEE: i64 = UNITS_PER_RUPEE;

async fn customer(api: &TestApi, email: &str, rupees: i64) -> Res<(String, String, String)> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, rupees).await?;
    let key = api.create_key(&token, "purses").await?;
    Ok((user, token, key))
}

fn call(n: usize) -> HeldCall {
    HeldCall {
        request_id: format!("req_purse_{n}"),
        key_id: "key_purse".into(),
        model: "llama-3.1-8b".into(),
        prompt_tokens: 10,
        completion_tokens: 10,
    }
}

fn usage(api: &TestApi, n: usize) -> shared::usage::UsageRecord {
    e2e::usage_record(&format!("req_purse_{n}"), (10, 5), api.clock.now())
}

fn far(api: &TestApi) -> metering::Expiries {
    let far = api.clock.now_epoch() + 365 * 86_400;
    metering::Expiries { usage: far, ledger: far }
}

fn deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(10)
}

/// Every usage entry of the account.
async fn usage_entries(api: &TestApi, user: &str) -> Res<Vec<shared::usage::UsageRecord>> {
    use shared::store::{Query, SortKeyRange};
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let query = Query::new(Table::Main, format!("USER#{user}"))
            .range(SortKeyRange::Prefix("USAGE#".into()))
            .limit(500)
            .after(after);
        let page = api.state.store.query(query).await?;
        for item in &page.items {
            entries.push(item.record::<shared::usage::UsageRecord>()?);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(entries),
        }
    }
}

/// Runs the sweeper as the jobs do.
async fn sweep(api: &TestApi) -> Res<metering::SweepReport> {
    let ports = &api.state.ports;
    let budget = std::time::Duration::from_secs(30);
    Ok(metering::sweep_stale_holds(ports, Duration::minutes(6), budget).await?)
}

/// Eight instances serve 40 calls each of one account, all at once. Without purses each call would write
/// the wallet item twice (640 writes); with them, the wallet takes each instance's fundings and postings
/// only, and each purse about two writes a call of its own instance.
async fn a_burst_over_eight_instances_writes_no_item_once_a_call(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, key) = customer(&api, "burst@example.in", 1000).await?;
    let counting = Arc::new(CountingStore::new(Arc::clone(&api.state.store)));
    let store: Arc<dyn ItemStore> = counting.clone();
    let context = Ports { store, clock: Arc::clone(&api.state.clock), config: Arc::clone(&api.state.config) };
    let providers = api.state.gateway()?.providers.clone();
    let mut instances = Vec::new();
    for _ in 0..8 {
        instances.push(Gateway::new(Catalog::builtin()?, providers.clone())?.one_call_at_a_time());
    }
    let owner = instances[0].authenticate(&context, Some(&key)).await?;
    let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "?"}], "max_tokens": 64});
    const CALLS_EACH: usize = 40;
    let started = std::time::Instant::now();
    let served = join_all(instances.iter().enumerate().map(|(i, gateway)| {
        let (context, owner, body) = (&context, owner.clone(), body.clone());
        async move {
            for n in 0..CALLS_EACH {
                let id = format!("req_burst_{i}_{n}");
                let prepared = inference::prepare(gateway, Endpoint::ChatCompletions, body.clone(), id)?;
                inference::call(context, gateway, owner.clone(), prepared).await?;
            }
            Ok::<(), ApiError>(())
        }
    }))
    .await;
    assert!(served.iter().all(Result::is_ok), "{served:?}");
    let writes = counting.writes();
    let wallet = writes.get(&format!("USER#{user} WALLET")).copied().unwrap_or(0);
    let purses: Vec<usize> =
        writes.iter().filter(|(item, _)| item.contains(" PURSE#")).map(|(_, count)| *count).collect();
    // Per instance: its fundings (doubling while they come faster than every two seconds: four at most
    // here), a posting at most every two seconds (tried again, up to POST_ATTEMPTS, when another instance's
    // got in first) and the odd gather: a bound in time, never one a call. A purse takes its own instance's
    // calls (two writes each), its fundings and its postings.
    let windows = 1.0 + started.elapsed().as_secs_f64() / metering::POST_EVERY.as_secs_f64();
    let postings = (metering::POST_ATTEMPTS as f64 * windows).ceil() as usize;
    #[expect(
        clippy::print_stderr,
        reason = "the counted writes are this test's report (docs/architecture.md quotes them)"
    )]
    let () = eprintln!(
        "purses: {} calls in {:.1} s: {wallet} wallet writes; purses: {purses:?}",
        8 * CALLS_EACH,
        started.elapsed().as_secs_f64()
    );
    assert!(wallet <= 8 * (4 + postings), "the wallet took {wallet} writes for {} calls", 8 * CALLS_EACH);
    assert_eq!(purses.len(), 8, "one purse an instance");
    let purse_bound = 2 * CALLS_EACH + 4 + postings;
    assert!(purses.iter().all(|n| *n <= purse_bound), "a purse takes its own calls' writes only: {purses:?}");
    let busiest = writes.values().copied().max().unwrap_or(0);
    assert!(busiest <= purse_bound.max(8 * (4 + postings)), "no item takes every instance's calls: {busiest}");

    // The balance equals the ledger at every read (the purses' spending not posted yet is held).
    api.ledger_checked_balance(&user).await?;
    api.held_and_leased(&user).await?;
    // Once idle, the purses go back: everything the model served is charged and nothing stays held.
    api.clock.advance(Duration::seconds(61));
    assert_eq!(sweep(&api).await?.purses, 8);
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    let usage = usage_entries(&api, &user).await?;
    assert_eq!(usage.len(), 8 * CALLS_EACH);
    let charged: i64 = usage.iter().map(|u| u.cost).sum();
    assert_eq!(1000 * RUPEE - api.ledger_checked_balance(&user).await?, charged);
    Ok(())
}

/// Instance A's purse keeps most of the balance; instance B's call needs more than the wallet has left, and
/// gets it: A's free money comes back first. Only a call no free money covers gets the 402, and a call of
/// exactly what is free succeeds.
async fn money_other_purses_keep_never_refuses_a_call_the_balance_covers(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, _) = customer(&api, "gather@example.in", 100).await?;
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let (a, b, c) = (Arc::new(Purses::new()), Arc::new(Purses::new()), Arc::new(Purses::new()));
    let hints = BalanceHints::default();
    // A funds sixteen holds like its first: 80 of the 100.
    let first = a.hold(ports, &user, 5 * RUPEE, &call(1)).await?;
    assert_eq!(store.wallet(&user).await?.available, 20 * RUPEE);
    metering::settle(
        store,
        &hints,
        &first,
        metering::Settlement { cost: RUPEE, usage: usage(&api, 1), expiries: far(&api), deadline: deadline() },
    )
    .await?;
    // B needs 60: the wallet has 20, A's purse 79 free.
    let second = b.hold(ports, &user, 60 * RUPEE, &call(2)).await?;
    assert_eq!(store.wallet(&user).await?.available, 39 * RUPEE, "A's free money came back for B");
    api.held_and_leased(&user).await?;
    // 40 is more than anything free: the exact 402.
    let refused = c.hold(ports, &user, 40 * RUPEE, &call(3)).await;
    assert!(matches!(refused, Err(ApiError::PaymentRequired { .. })), "{refused:?}");
    // Exactly what is free is not refused.
    let third = c.hold(ports, &user, 39 * RUPEE, &call(4)).await?;
    assert_eq!(store.wallet(&user).await?.available, 0);
    for (hold, n) in [(second, 2), (third, 4)] {
        metering::settle(
            store,
            &hints,
            &hold,
            metering::Settlement { cost: RUPEE, usage: usage(&api, n), expiries: far(&api), deadline: deadline() },
        )
        .await?;
    }
    api.clock.advance(Duration::seconds(61));
    sweep(&api).await?;
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    assert_eq!(api.ledger_checked_balance(&user).await?, 97 * RUPEE);
    Ok(())
}

/// Near the end of a balance: the instance's purse has 10 free, the wallet 5, the call needs 12. The
/// funding asks the wallet for the 2 the purse lacks, not for all 12.
async fn a_call_its_own_purse_and_the_wallet_cover_together_is_not_refused(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, _) = customer(&api, "own-purse@example.in", 100).await?;
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let a = Arc::new(Purses::new());
    // 16 holds of 5.9375 (95 of the 100) go into the purse; the call costs 85 of them: 10 free, 5 left.
    let first = a.hold(ports, &user, 95 * RUPEE / 16, &call(1)).await?;
    metering::settle(
        store,
        &BalanceHints::default(),
        &first,
        metering::Settlement { cost: 85 * RUPEE, usage: usage(&api, 1), expiries: far(&api), deadline: deadline() },
    )
    .await?;
    assert_eq!(store.wallet(&user).await?.available, 5 * RUPEE);
    let second = a.hold(ports, &user, 12 * RUPEE, &call(2)).await?;
    assert_eq!(store.wallet(&user).await?.available, 3 * RUPEE);
    metering::settle(
        store,
        &BalanceHints::default(),
        &second,
        metering::Settlement { cost: 12 * RUPEE, usage: usage(&api, 2), expiries: far(&api), deadline: deadline() },
    )
    .await?;
    // 3 left in all: 4 is refused, exactly.
    let refused = a.hold(ports, &user, 4 * RUPEE, &call(3)).await;
    assert!(matches!(refused, Err(ApiError::PaymentRequired { .. })), "{refused:?}");
    api.clock.advance(Duration::seconds(61));
    sweep(&api).await?;
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    assert_eq!(api.ledger_checked_balance(&user).await?, 3 * RUPEE);
    Ok(())
}

/// A closure stops the purses (no call starts from them), their free money is refunded with the rest, and
/// what a purse spent before is posted by the sweeper, the refund unchanged.
async fn closing_an_account_stops_its_purses_and_refunds_their_money(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, _) = customer(&api, "closing@example.in", 100).await?;
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let a = Arc::new(Purses::new());
    let first = a.hold(ports, &user, 5 * RUPEE, &call(1)).await?;
    metering::settle(
        store,
        &BalanceHints::default(),
        &first,
        metering::Settlement { cost: RUPEE, usage: usage(&api, 1), expiries: far(&api), deadline: deadline() },
    )
    .await?;
    shared::privacy::close_account(&(&api.state).into(), &user, Some(PASSWORD.into())).await?;
    let refused = a.hold(ports, &user, RUPEE, &call(2)).await;
    assert!(
        matches!(refused, Err(ApiError::Unauthenticated { .. })),
        "a closed account's purse serves no call: {refused:?}"
    );
    let refund = shared::wallet::refund_request(store, &user).await?.ok_or("no refund request")?;
    assert_eq!(refund.amount, 99 * RUPEE, "the purse's free money is refunded, its spending is not");
    api.clock.advance(Duration::seconds(61));
    assert_eq!(sweep(&api).await?.purses, 1);
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    let refund = shared::wallet::refund_request(store, &user).await?.ok_or("no refund request")?;
    assert_eq!(refund.amount, 99 * RUPEE);
    assert_eq!(api.ledger_checked_balance(&user).await?, 0);
    Ok(())
}

/// A chargeback that leaves the account owing stops its purses: the next call gets the 402, and what the
/// purses kept goes towards the debt.
async fn a_dispute_that_leaves_the_account_owing_stops_its_purses(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, Config { topup_min_paise: 100, ..Config::default() }).await?;
    let (user, token) = api.verified_user("owing-purse@example.in").await?;
    let payment = api.fund(&token, 2).await?;
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let a = Arc::new(Purses::new());
    // A takes sixteen holds of 10 paise: 1.60 of the 2.00.
    let first = a.hold(ports, &user, RUPEE / 10, &call(1)).await?;
    metering::settle(
        store,
        &BalanceHints::default(),
        &first,
        metering::Settlement { cost: RUPEE / 10, usage: usage(&api, 1), expiries: far(&api), deadline: deadline() },
    )
    .await?;
    let dispute =
        api.razorpay.dispute_webhook(&payment, "disp_OwingPurse001", "payment.dispute.created", payment.amount);
    assert_eq!(api.razorpay.deliver(&dispute).await, Some(200));
    let refused = a.hold(ports, &user, RUPEE / 10, &call(2)).await;
    assert!(
        matches!(refused, Err(ApiError::PaymentRequired { .. })),
        "no call starts while the account owes: {refused:?}"
    );
    let purse = store.get(Table::Main, &format!("USER#{user}"), &format!("PURSE#{}", a.instance())).await?;
    let purse = purse.ok_or("no purse")?;
    assert_eq!(purse.attrs.get("stopped"), Some(&json!(true)));
    assert_eq!(purse.attrs.get("available"), Some(&json!(0)), "its free money went back towards the debt");
    api.held_and_leased(&user).await?;
    api.ledger_checked_balance(&user).await?;
    // Had that stop been lost (a store failure after the dispute committed), the sweeper stops it.
    let restarted = shared::store::Update::new(Table::Main, format!("USER#{user}"), format!("PURSE#{}", a.instance()))
        .remove("stopped");
    store.update(restarted).await?;
    sweep(&api).await?;
    let purse = store.get(Table::Main, &format!("USER#{user}"), &format!("PURSE#{}", a.instance())).await?;
    assert_eq!(purse.ok_or("no purse")?.attrs.get("stopped"), Some(&json!(true)));
    Ok(())
}

/// An instance killed mid-call leaves a hold in its purse and spending not posted. Within the purse's idle
/// time nothing happens (the call may still run); after it, the dead call is charged its whole hold, the
/// spending posted and the rest given back, the purse gone.
async fn a_dead_instance_purse_is_charged_and_returned_by_the_sweeper(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _, _) = customer(&api, "dead-purse@example.in", 100).await?;
    let store = api.state.store.as_ref();
    let ports = &api.state.ports;
    let a = Arc::new(Purses::new());
    let first = a.hold(ports, &user, 2 * RUPEE, &call(1)).await?;
    metering::settle(
        store,
        &BalanceHints::default(),
        &first,
        metering::Settlement { cost: RUPEE, usage: usage(&api, 1), expiries: far(&api), deadline: deadline() },
    )
    .await?;
    // The instance dies while its second call runs.
    a.hold(ports, &user, 5 * RUPEE, &call(2)).await?;
    api.clock.advance(Duration::seconds(20));
    let early = sweep(&api).await?;
    assert_eq!((early.charged, early.purses), (0, 0), "a call may still run: nothing is swept");
    api.clock.advance(Duration::seconds(45));
    let report = sweep(&api).await?;
    assert_eq!((report.charged, report.purses), (1, 1));
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    assert_eq!(api.ledger_checked_balance(&user).await?, 94 * RUPEE, "1 spent, and the dead call's whole hold");
    let usage = usage_entries(&api, &user).await?;
    assert_eq!(usage.iter().filter(|u| u.status == "settled_by_sweeper").count(), 1);
    let purse = store.get(Table::Main, &format!("USER#{user}"), &format!("PURSE#{}", a.instance())).await?;
    assert!(purse.is_none(), "the purse is gone");
    // A sweep again changes nothing.
    let again = sweep(&api).await?;
    assert_eq!((again.charged, again.purses), (0, 0));
    assert_eq!(api.ledger_checked_balance(&user).await?, 94 * RUPEE);
    Ok(())
}
