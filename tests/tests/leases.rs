//! Budget leases on both stores: a busy account's calls reach the provider with no store round trip before
//! them and still settle one by one into the ledger; leases never let parallel calls overspend, never make a
//! call that the balance covers get a 402, stop serving a closed account, go back when the account goes
//! quiet, and a lease left by a process that died (or by a keeper the store kept refusing) is reconciled by
//! the sweeper.

use std::sync::Arc;

use chrono::Duration;
use dev_server::upstream_standin::{Answer, Upstream};
use e2e::{Backend, Fault, FaultyStore, GatedStore, TestApi, TestResult, on_both_stores};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::clock::Clock;
use shared::config::Config;
use shared::inference::{self, Endpoint};
use shared::money::UNITS_PER_RUPEE;
use shared::ports::Ports;
use shared::privacy;
use shared::usage::UsageRecord;
use shared::wallet::WalletStore;
use shared::wallet::metering::{self, BalanceHints, Hold, LeaseBacking, LeaseCall, ReserveAsRead};
use shared::wallet::metering::{BUSY_CALLS_PER_SECOND, CHECK_EVERY};

on_both_stores!(
    a_busy_account_reaches_the_provider_with_no_store_round_trip_first,
    parallel_calls_on_a_small_balance_never_overspend_with_leases,
    a_call_the_balance_covers_is_not_refused_because_of_a_lease,
    a_closed_account_is_not_served_from_its_lease,
    lost_answers_on_every_lease_write_charge_once_and_leave_nothing_held,
    a_lease_left_by_a_dead_process_is_charged_its_recorded_calls_and_the_rest_returned,
    a_keeper_that_cannot_give_its_lease_back_leaves_it_to_the_sweeper,
    an_instance_serving_one_call_at_a_time_reserves_only_its_calls_hold,
    a_dispute_that_leaves_the_account_owing_stops_its_lease,
    a_graceful_shutdown_gives_the_leases_back_at_once,
);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PASSWORD: &str = "correct horse battery";

/// Top-ups from ₹1, so that a wallet can be small.
fn small_topups() -> Config {
    Config { topup_min_paise: 100, ..Config::default() }
}

async fn customer(api: &TestApi, email: &str, rupees: i64) -> Res<(String, String)> {
    let (user, token) = api.verified_user(email).await?;
    api.fund(&token, rupees).await?;
    let key = api.create_key(&token, "leases").await?;
    Ok((user, key))
}

fn chat_body(model: &str, extra: Value) -> Value {
    let mut body = json!({ "model": model, "messages": [{ "role": "user", "content": "?" }] });
    if let (Some(fields), Value::Object(extra)) = (body.as_object_mut(), extra) {
        fields.extend(extra);
    }
    body
}

async fn chat(api: &TestApi, key: &str, body: &Value) -> Res<reqwest::Response> {
    Ok(api.http.post(api.url("/v1/chat/completions")).bearer_auth(key).json(body).send().await?)
}

/// What the provider stand-in billed for every request it received, at the model's prices, with the tokens
/// it generates now (so a test that changes how long its answers are counts each part on its own).
fn billed(upstream: &Upstream) -> Res<i64> {
    billed_after(upstream, 0)
}

/// What the stand-in billed for the requests after the first `skip`.
fn billed_after(upstream: &Upstream, skip: usize) -> Res<i64> {
    let catalog = Catalog::builtin()?;
    let mut total = 0;
    for request in upstream.requests().into_iter().skip(skip) {
        let name = request["model"].as_str().unwrap_or_default();
        let model = catalog
            .models
            .iter()
            .find(|m| m.routes.iter().any(|r| r.provider == "cerebras" && r.model == name))
            .ok_or("a catalog model for the upstream request")?;
        total += model.cost(Upstream::prompt_tokens(&request), upstream.completion_tokens(&request));
    }
    Ok(total)
}

/// Makes the account busy (more calls in a second than [`BUSY_CALLS_PER_SECOND`]) so that it has a lease;
/// returns what the lease reserves. One call at a time, so that no more is spent than the lease needs (a
/// test below depends on what is left); the lease's busy window is real time, as leases are.
async fn make_busy(api: &TestApi, key: &str, user: &str, body: &Value) -> Res<i64> {
    for _ in 0..BUSY_CALLS_PER_SECOND * 10 {
        chat(api, key, body).await?.error_for_status()?;
        let (held_for_calls, leased) = api.held_and_leased(user).await?;
        assert_eq!(held_for_calls, 0);
        if leased > 0 {
            return Ok(leased);
        }
    }
    Err("a busy account never got a lease".into())
}

/// Waits (boundedly, generously: a busy machine schedules the keeper late) until the account's leases have
/// gone back.
async fn lease_returned(api: &TestApi, user: &str) -> Res<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if api.held_and_leased(user).await? == (0, 0) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err("the lease never went back".into())
}

/// With a lease, a call is forwarded and its first event relayed while the store answers nothing at all;
/// the settlement waits for the store and the call is charged exactly what the provider billed. Once the
/// account is quiet, the lease goes back and leaves nothing on the wallet.
async fn a_busy_account_reaches_the_provider_with_no_store_round_trip_first(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "busy@example.in", 100).await?;
    make_busy(&api, &key, &user, &chat_body("llama-3.1-8b", json!({ "max_tokens": 50 }))).await?;

    let gated = Arc::new(GatedStore::new(api.state.store.clone()));
    let mut state = api.state.clone();
    state.ports.store = gated.clone();
    let context: Ports = (&state).into();
    let gateway = api.state.gateway()?;
    let owner = gateway.authenticate(&context, Some(&key)).await?;
    gated.close();
    let stream = chat_body("llama-3.1-8b", json!({ "stream": true, "max_tokens": 50 }));
    let prepared = inference::prepare(gateway, Endpoint::ChatCompletions, stream, "req_gated_stream".into())?;
    let second = std::time::Duration::from_secs(5);
    let answer = tokio::time::timeout(second, inference::call(&context, gateway, owner.clone(), prepared)).await;
    let Ok(Ok(inference::Answer::Stream(inference::Streamed { mut events, .. }))) = answer else {
        return Err("a busy account's stream waited for the store before it was forwarded".into());
    };
    let first = tokio::time::timeout(second, events.recv()).await?.ok_or("no event")??;
    assert!(first.starts_with(b"data: {"), "{}", String::from_utf8_lossy(&first));

    // Not streamed: the provider gets the request while the store still does not answer.
    let seen = api.cerebras.requests().len();
    let plain = chat_body("llama-3.1-8b", json!({ "max_tokens": 50 }));
    let prepared = inference::prepare(gateway, Endpoint::ChatCompletions, plain, "req_gated_plain".into())?;
    let (context_for_task, owner_for_task) = (context.clone(), owner.clone());
    let gateway_state = api.state.clone();
    let pending = shared::tasks::spawn("gated call", async move {
        let gateway = gateway_state.gateway()?;
        inference::call(&context_for_task, gateway, owner_for_task, prepared).await.map(|_| ())
    });
    for () in e2e::polls() {
        if api.cerebras.requests().len() > seen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(api.cerebras.requests().len(), seen + 1, "forwarded with the store silent");
    assert!(!pending.is_finished(), "but not answered before its settlement could commit");

    gated.open();
    pending.await??;
    let mut last = first.to_vec();
    while let Some(event) = events.recv().await {
        last = event?.to_vec();
    }
    assert_eq!(String::from_utf8_lossy(&last), "data: [DONE]\n\n");
    // (The second settlement waited for the first one's turn, which waited for the store.)
    assert!(gated.waited.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the settlements waited for the store");
    assert_eq!(100 * UNITS_PER_RUPEE - api.ledger_checked_balance(&user).await?, billed(&api.cerebras)?);
    let usage_entries = api.dump().await?.lines().filter(|line| line.contains(" USAGE#")).count();
    assert_eq!(usage_entries, api.cerebras.requests().len(), "one usage entry per call");

    // Quiet now: the lease goes back, and nothing of it stays on the wallet.
    lease_returned(&api, &user).await?;
    let wallet = api.state.store.get(shared::store::Table::Main, &format!("USER#{user}"), "WALLET").await?;
    let names: Vec<String> = wallet.ok_or("wallet")?.attrs.keys().cloned().collect();
    assert!(!names.iter().any(|n| n.starts_with("lease")), "{names:?}");
    Ok(())
}

/// Ten times more parallel calls than a ₹1 wallet covers, each generating up to its cap: the wallet never
/// goes below zero, every call that was served is charged what the provider billed, and the rest get 402.
async fn parallel_calls_on_a_small_balance_never_overspend_with_leases(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, small_topups()).await?;
    let (user, key) = customer(&api, "small@example.in", 1).await?;
    api.cerebras.set_answer(Answer::UntilCap);
    let body = chat_body("llama-3.1-8b", json!({ "max_tokens": 4096 }));
    let gateway = api.state.gateway()?;
    let hold = inference::prepare(gateway, Endpoint::ChatCompletions, body.clone(), "req_price".into())?.max_cost();
    let covered = UNITS_PER_RUPEE / hold;
    assert!((10..100).contains(&covered), "₹1 covers {covered} calls");
    // Busy first (short answers), so that the burst starts on a lease.
    api.cerebras.set_answer(Answer::Greeting);
    make_busy(&api, &key, &user, &body).await?;
    let warm_up = api.cerebras.requests().len();
    let spent = UNITS_PER_RUPEE - api.ledger_checked_balance(&user).await?;
    assert_eq!(spent, billed(&api.cerebras)?);
    api.cerebras.set_answer(Answer::UntilCap);
    let covered = (UNITS_PER_RUPEE - spent) / hold;
    let calls = (0..covered * 10).map(|_| chat(&api, &key, &body));
    let mut served = 0;
    for answer in join_all(calls).await {
        match answer?.status() {
            StatusCode::OK => served += 1,
            StatusCode::PAYMENT_REQUIRED => {}
            other => return Err(format!("unexpected {other}").into()),
        }
    }
    // A call is refused when what is running holds the rest (holds are upper bounds, and settle for less):
    // most of the balance is served in the burst, and none of it stays stranded (below).
    assert!(served >= covered / 2, "{served} served, {covered} covered");
    let balance = api.ledger_checked_balance(&user).await?;
    assert!(balance >= 0, "{balance}");
    let burst = billed_after(&api.cerebras, warm_up)?;
    assert_eq!(UNITS_PER_RUPEE - spent - balance, burst, "every served call charged what was billed");
    assert_eq!(api.held_and_leased(&user).await?.0, 0);
    lease_returned(&api, &user).await?;
    assert_eq!(api.state.store.wallet(&user).await?.available, balance);
    // Whatever the burst left, calls spend it, one at a time, until less than a hold is left (leased or not).
    while api.state.store.wallet(&user).await?.balance >= hold {
        assert_eq!(chat(&api, &key, &body).await?.status(), StatusCode::OK);
    }
    assert_eq!(chat(&api, &key, &body).await?.status(), StatusCode::PAYMENT_REQUIRED);
    let balance = api.ledger_checked_balance(&user).await?;
    assert!((0..hold).contains(&balance), "{balance} left");
    assert_eq!(UNITS_PER_RUPEE - spent - balance, billed_after(&api.cerebras, warm_up)?);
    Ok(())
}

/// A lease takes at most half of what is available; a call bigger than what is left beside it gets the
/// lease's free part back and is served, since the balance covers it.
async fn a_call_the_balance_covers_is_not_refused_because_of_a_lease(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, small_topups()).await?;
    let (user, key) = customer(&api, "covered@example.in", 1).await?;
    let leased = make_busy(&api, &key, &user, &chat_body("llama-3.1-8b", json!({ "max_tokens": 4096 }))).await?;
    let big = chat_body("gpt-oss-120b", json!({ "max_tokens": 16384 }));
    let gateway = api.state.gateway()?;
    let hold = inference::prepare(gateway, Endpoint::ChatCompletions, big.clone(), "req_price".into())?.max_cost();
    let wallet = api.state.store.wallet(&user).await?;
    assert!(wallet.available < hold && hold <= wallet.balance, "{wallet:?}, lease {leased}, hold {hold}");
    chat(&api, &key, &big).await?.error_for_status()?;
    assert_eq!(UNITS_PER_RUPEE - api.ledger_checked_balance(&user).await?, billed(&api.cerebras)?);
    // What the balance does not cover is still refused.
    api.cerebras.set_answer(Answer::UntilCap);
    let answers = join_all((0..4).map(|_| chat(&api, &key, &big))).await;
    let refused = answers.into_iter().filter_map(Result::ok).filter(|a| a.status() == 402).count();
    assert!(refused >= 3, "{refused} of 4 refused");
    assert!(api.ledger_checked_balance(&user).await? >= 0);
    Ok(())
}

/// A closed account's lease stops serving once its process sees the closure: at the first settlement after
/// it, or the keeper's next look at the wallet (within a second) when calls arrive in parallel and none
/// has settled yet. What the lease held goes back to the wallet and from there to the refund request.
async fn a_closed_account_is_not_served_from_its_lease(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("closing@example.in").await?;
    api.fund(&token, 100).await?;
    let key = api.create_key(&token, "closing").await?;
    let body = chat_body("llama-3.1-8b", json!({ "max_tokens": 50 }));
    make_busy(&api, &key, &user, &body).await?;
    let context: Ports = (&api.state).into();
    let gateway = api.state.gateway()?;
    // The key stays in the gateway's cache: only the wallet can stop it now.
    let owner = gateway.authenticate(&context, Some(&key)).await?;
    privacy::close_account(&(&api.state).into(), &user, Some(PASSWORD.into())).await?;
    let call = |i: usize| {
        let prepared = inference::prepare(gateway, Endpoint::ChatCompletions, body.clone(), format!("req_closed_{i}"));
        let (context, owner) = (context.clone(), owner.clone());
        async move { inference::call(&context, gateway, owner, prepared?).await.map(|_| ()) }
    };
    // One after another: the first settlement after the closure sees it.
    let mut sequential = Vec::new();
    for i in 0..3 {
        sequential.push(call(i).await);
    }
    let served = sequential.iter().filter(|answer| answer.is_ok()).count();
    assert!(served <= 1, "{served} of 3 served after the closure");
    for refused in sequential.iter().filter_map(|answer| answer.as_ref().err()) {
        assert_eq!(refused.status().as_u16(), 401, "{refused}");
    }
    // Whatever came first, after the keeper's next look nothing more is served, in parallel either.
    tokio::time::sleep(CHECK_EVERY + std::time::Duration::from_millis(500)).await;
    let parallel = join_all((10..20).map(call)).await;
    assert!(parallel.iter().all(Result::is_err), "calls served from a closed account's lease");
    lease_returned(&api, &user).await?;
    // The sweeper moves what came back into the refund request: everything the calls did not use.
    jobs::run(&api.state).await?;
    assert_eq!(api.ledger_checked_balance(&user).await?, 0);
    let refund = shared::wallet::refund_request(api.state.store.as_ref(), &user).await?.ok_or("refund request")?;
    assert_eq!(refund.amount, 100 * UNITS_PER_RUPEE - billed(&api.cerebras)?);
    Ok(())
}

fn usage(api: &TestApi, id: &str, completion: u64) -> UsageRecord {
    e2e::usage_record(id, (10, completion), api.clock.now())
}

fn lease_call(lease: &str, request_id: &str, amount: i64) -> LeaseCall {
    let call = metering::HeldCall {
        request_id: request_id.into(),
        key_id: "key_test".into(),
        model: "llama-3.1-8b".into(),
        prompt_tokens: 10,
        completion_tokens: 100,
    };
    LeaseCall { lease: lease.into(), amount, call }
}

/// A process opened a lease, served three calls and died: one had settled (its record was not yet
/// forgotten), one had recorded its usage, one had not. Once no call can be running on it, the sweeper
/// charges the second its usage and the third its whole hold, charges the first nothing more, and gives
/// the rest of the lease back, once.
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: each step acts on what the one before left"
)]
async fn a_lease_left_by_a_dead_process_is_charged_its_recorded_calls_and_the_rest_returned(
    backend: Backend,
) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, _key) = customer(&api, "dead@example.in", 100).await?;
    let store = api.state.store.as_ref();
    let lease_id = format!("{:013}_dead", api.clock.now().timestamp_millis());
    metering::reserve_for_lease(store, &user, &lease_id, 20 * UNITS_PER_RUPEE, 0)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let reserve = Arc::new(ReserveAsRead::new(20 * UNITS_PER_RUPEE));
    let hold = |id: &str, amount: i64| Hold {
        id: id.into(),
        user_id: user.clone(),
        amount,
        balance: 100 * UNITS_PER_RUPEE,
        low_balance_threshold: metering::DEFAULT_LOW_BALANCE_THRESHOLD,
        lease: Some(LeaseBacking { id: lease_id.clone(), reserve: reserve.clone() }),
        purse: None,
    };
    let (settled, used, silent) = (
        hold("1_settled", 2 * UNITS_PER_RUPEE),
        hold("2_used", 3 * UNITS_PER_RUPEE),
        hold("3_silent", 4 * UNITS_PER_RUPEE),
    );
    let calls: Vec<(String, LeaseCall)> = [&settled, &used, &silent]
        .iter()
        .map(|h| (h.id.clone(), lease_call(&lease_id, &format!("req_{}", h.id), h.amount)))
        .collect();
    metering::record_lease_calls(store, &user, &lease_id, &calls, &[]).await?;
    let far = metering::Expiries {
        usage: api.clock.now().timestamp() + 86_400,
        ledger: api.clock.now().timestamp() + 86_400,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    metering::settle(
        store,
        &BalanceHints::default(),
        &settled,
        metering::Settlement { cost: UNITS_PER_RUPEE, usage: usage(&api, "req_1", 5), expiries: far, deadline },
    )
    .await?;
    // The keeper's write of the settled call's record landed after its settlement (which removed it).
    metering::record_lease_calls(store, &user, &lease_id, &calls[..1], &[]).await?;
    metering::record_pending(store, &used, UNITS_PER_RUPEE / 2, &usage(&api, "req_2", 7)).await?;

    // Not yet: a call may still be running on a lease this young, up to its life and a call's longest run.
    assert_eq!(jobs::run(&api.state).await?.stale_holds.leases, 0);
    api.clock.advance(metering::LEASE_LIFE + jobs::STALE_HOLD_AFTER - Duration::seconds(1));
    assert_eq!(jobs::run(&api.state).await?.stale_holds.leases, 0);
    assert_eq!(api.held_and_leased(&user).await?.1, 19 * UNITS_PER_RUPEE);
    api.clock.advance(Duration::seconds(2));
    let report = jobs::run(&api.state).await?.stale_holds;
    assert_eq!((report.leases, report.charged), (1, 3), "{report:?}");
    assert_eq!(
        jobs::run(&api.state).await?.stale_holds,
        metering::SweepReport { wallets: 1, ..Default::default() },
        "reconciled once"
    );
    let expected = 100 * UNITS_PER_RUPEE - UNITS_PER_RUPEE - UNITS_PER_RUPEE / 2 - 4 * UNITS_PER_RUPEE;
    assert_eq!(api.ledger_checked_balance(&user).await?, expected);
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    let wallet = api.state.store.get(shared::store::Table::Main, &format!("USER#{user}"), "WALLET").await?;
    let names: Vec<String> = wallet.ok_or("wallet")?.attrs.keys().cloned().collect();
    assert!(!names.iter().any(|n| n.starts_with("lease") || n.starts_with("holdusage")), "{names:?}");
    Ok(())
}

/// Every write of a busy account's calls is sent twice, as an SDK does when a write's answer is lost after it
/// applied: the lease's open, extensions, records, settlements and return. Every call is charged once,
/// exactly what the provider billed, and once the lease went back nothing is held and the available balance
/// is the balance.
async fn lost_answers_on_every_lease_write_charge_once_and_leave_nothing_held(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "lost@example.in", 100).await?;
    let mut state = api.state.clone();
    state.ports.store = Arc::new(FaultyStore::new(api.state.store.clone(), Fault::RepeatWrites));
    let context: Ports = (&state).into();
    let gateway = api.state.gateway()?;
    let owner = gateway.authenticate(&context, Some(&key)).await?;
    let opened = gateway.leases_opened();
    api.cerebras.set_answer(Answer::Tokens(300));
    for round in 0..4 {
        let calls = (0..10).map(|i| {
            let stream = i % 2 == 0;
            let body = chat_body("llama-3.1-8b", json!({ "stream": stream, "max_tokens": 500 }));
            let prepared =
                inference::prepare(gateway, Endpoint::ChatCompletions, body, format!("req_lost_{round}_{i}"));
            let (context, owner) = (context.clone(), owner.clone());
            async move {
                match inference::call(&context, gateway, owner, prepared?).await? {
                    inference::Answer::Complete(_) => Ok::<_, Box<dyn std::error::Error + Send + Sync>>(()),
                    inference::Answer::Stream(inference::Streamed { mut events, .. }) => {
                        while let Some(event) = events.recv().await {
                            event?;
                        }
                        Ok(())
                    }
                }
            }
        });
        for call in join_all(calls).await {
            call?;
        }
    }
    assert!(gateway.leases_opened() > opened, "the calls ran on a lease");
    lease_returned(&api, &user).await?;
    let balance = api.ledger_checked_balance(&user).await?;
    assert_eq!(100 * UNITS_PER_RUPEE - balance, billed(&api.cerebras)?);
    assert_eq!(api.state.store.wallet(&user).await?.available, balance);
    let usage_entries = api.dump().await?.lines().filter(|line| line.contains(" USAGE#")).count();
    assert_eq!(usage_entries, 40);
    // The process kept the lease's figure right through the repeats (a wrong one is logged when it is
    // given back).
    assert!(!e2e::captured_logs().contains("a lease's reserve differed"));
    Ok(())
}

/// The store refuses every update once a busy account's calls are done, so the keeper can neither record nor
/// give its lease back. After its attempts it stops and leaves the lease to the sweeper: the reserve stays
/// counted in `held` (nothing is spent from it, nothing freed twice), the account is charged exactly what
/// the provider billed, and once the lease is past its life the sweeper gives it back, once.
async fn a_keeper_that_cannot_give_its_lease_back_leaves_it_to_the_sweeper(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "stuck@example.in", 100).await?;
    let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut state = api.state.clone();
    state.ports.store =
        Arc::new(FaultyStore::new(api.state.store.clone(), Fault::RefuseUpdatesWhile(refusing.clone())));
    let context: Ports = (&state).into();
    let gateway = api.state.gateway()?;
    let owner = gateway.authenticate(&context, Some(&key)).await?;
    let mut leased = 0;
    for i in 0..BUSY_CALLS_PER_SECOND * 10 {
        let body = chat_body("llama-3.1-8b", json!({ "max_tokens": 50 }));
        let prepared = inference::prepare(gateway, Endpoint::ChatCompletions, body, format!("req_stuck_{i}"))?;
        match inference::call(&context, gateway, owner.clone(), prepared).await? {
            inference::Answer::Complete(_) => {}
            inference::Answer::Stream(_) => return Err("a stream was not asked for".into()),
        }
        leased = api.held_and_leased(&user).await?.1;
        if leased > 0 {
            break;
        }
    }
    assert!(leased > 0, "the calls ran on a lease");
    let wallet = api.state.store.get(shared::store::Table::Main, &format!("USER#{user}"), "WALLET").await?;
    let lease_id = wallet
        .ok_or("wallet")?
        .attrs
        .keys()
        .find_map(|name| name.strip_prefix(metering::LEASE_PREFIX).map(str::to_owned))
        .ok_or("the lease on the wallet")?;
    refusing.store(true, std::sync::atomic::Ordering::SeqCst);
    // Idle, the keeper tries to give the lease back: fifty failures, a tenth of a second apart.
    let mut gave_up = false;
    for () in e2e::polls() {
        gave_up = e2e::captured_logs().lines().any(|line| {
            line.contains("lease left to the sweeper after repeated store failures") && line.contains(&lease_id)
        });
        if gave_up {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gave_up, "the keeper gave up on lease {lease_id}");
    refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(api.held_and_leased(&user).await?, (0, leased), "the reserve is still held, untouched");
    let charged = 100 * UNITS_PER_RUPEE - billed(&api.cerebras)?;
    assert_eq!(api.ledger_checked_balance(&user).await?, charged);

    assert_eq!(jobs::run(&api.state).await?.stale_holds.leases, 0, "not while a call could still run on it");
    api.clock.advance(metering::LEASE_LIFE + jobs::STALE_HOLD_AFTER + Duration::seconds(1));
    assert_eq!(jobs::run(&api.state).await?.stale_holds.leases, 1);
    assert_eq!(
        jobs::run(&api.state).await?.stale_holds,
        metering::SweepReport { wallets: 1, ..Default::default() },
        "reconciled once"
    );
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    assert_eq!(api.ledger_checked_balance(&user).await?, charged, "the sweeper charged nothing more");
    Ok(())
}

/// A Lambda instance serves one call at a time and is frozen between calls: its gateway takes no lease (a
/// lease would stay reserved while the instance sleeps, and a few sleeping instances would refuse calls the
/// balance covers). It serves its calls from its purse instead (`tests/tests/purses.rs`: another instance
/// takes a purse's free money back before any 402), which goes back once idle.
async fn an_instance_serving_one_call_at_a_time_reserves_only_its_calls_hold(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "instance@example.in", 100).await?;
    let gateway =
        inference::Gateway::new(Catalog::builtin()?, api.state.gateway()?.providers.clone())?.one_call_at_a_time();
    let context: Ports = (&api.state).into();
    let owner = gateway.authenticate(&context, Some(&key)).await?;
    let body = chat_body("llama-3.1-8b", json!({ "max_tokens": 64 }));
    // Far busier than a lease needs, one call after another as an instance serves them, then a burst.
    for n in 0..BUSY_CALLS_PER_SECOND * 4 {
        let prepared = inference::prepare(&gateway, Endpoint::ChatCompletions, body.clone(), format!("req_one_{n}"))?;
        inference::call(&context, &gateway, owner.clone(), prepared).await?;
        let (held, leased) = api.held_and_leased(&user).await?;
        assert_eq!(leased, 0);
        assert!(held <= 100 * UNITS_PER_RUPEE / 2, "a purse, not the balance: {held}");
    }
    let burst = join_all((0..8).map(|n| {
        let prepared = inference::prepare(&gateway, Endpoint::ChatCompletions, body.clone(), format!("req_burst_{n}"));
        let (context, gateway, owner) = (&context, &gateway, owner.clone());
        async move { inference::call(context, gateway, owner, prepared?).await.map(|_| ()) }
    }))
    .await;
    assert!(burst.iter().all(Result::is_ok), "{burst:?}");
    assert_eq!(gateway.leases_opened(), 0);
    assert!(!api.dump().await?.contains("lease_"), "no lease was ever written");
    // Idle, the purse goes back.
    api.clock.advance(Duration::seconds(61));
    let budget = std::time::Duration::from_secs(30);
    metering::sweep_stale_holds(&api.state.ports, Duration::minutes(6), budget).await?;
    assert_eq!(api.held_and_leased(&user).await?, (0, 0));
    assert_eq!(100 * UNITS_PER_RUPEE - api.ledger_checked_balance(&user).await?, billed(&api.cerebras)?);
    Ok(())
}

/// A chargeback opened on a busy account's payment holds the disputed amount and leaves it owing (its available
/// balance below zero): no new call may start. The lease stops at the first settlement that sees it (that
/// call, already running, is charged), so the next call gets its own hold and the exact 402.
async fn a_dispute_that_leaves_the_account_owing_stops_its_lease(backend: Backend) -> TestResult {
    let api = TestApi::start_with(backend, small_topups()).await?;
    let (user, token) = api.verified_user("owing@example.in").await?;
    let payment = api.fund(&token, 1).await?;
    let key = api.create_key(&token, "leases").await?;
    let body = chat_body("llama-3.1-8b", json!({ "max_tokens": 64 }));
    make_busy(&api, &key, &user, &body).await?;
    let dispute =
        api.razorpay.dispute_webhook(&payment, "disp_OwingLease001", "payment.dispute.created", payment.amount);
    assert_eq!(api.razorpay.deliver(&dispute).await, Some(200));
    assert!(api.state.store.wallet(&user).await?.available < 0, "the account owes");
    // The lease still believes in its reserve: the call it serves is charged, and its settlement stops it.
    assert_eq!(chat(&api, &key, &body).await?.status(), StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(chat(&api, &key, &body).await?.status(), StatusCode::PAYMENT_REQUIRED, "no new call starts");
    }
    // The stopped lease goes back (its keeper, idle); what stays held is the dispute's.
    let mut held = (0, -1);
    for () in e2e::polls() {
        held = api.held_and_leased(&user).await?;
        if held.1 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held, (UNITS_PER_RUPEE, 0), "only the dispute is held");
    assert_eq!(UNITS_PER_RUPEE - api.ledger_checked_balance(&user).await?, billed(&api.cerebras)?);
    Ok(())
}

/// A process that stops gracefully (make run on Ctrl-C or SIGTERM) gives its leases back before it exits,
/// rather than leave them reserved for the sweeper, minutes later.
async fn a_graceful_shutdown_gives_the_leases_back_at_once(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, key) = customer(&api, "shutdown@example.in", 100).await?;
    let leased = make_busy(&api, &key, &user, &chat_body("llama-3.1-8b", json!({ "max_tokens": 64 }))).await?;
    assert!(leased > 0);
    let left = api.state.gateway()?.return_leases(std::time::Duration::from_secs(60)).await;
    assert_eq!(left, 0, "every lease went back");
    assert_eq!(api.held_and_leased(&user).await?, (0, 0), "nothing is left reserved, no sweeper needed");
    assert_eq!(100 * UNITS_PER_RUPEE - api.ledger_checked_balance(&user).await?, billed(&api.cerebras)?);
    Ok(())
}
