//! The money path as it runs in AWS (`make fleet`): the real function binaries, one invocation per
//! instance, frozen between invocations, on DynamoDB Local. Instances are frozen and killed mid-call by the
//! test (SIGSTOP, SIGKILL); no covered call is refused, and every call the model stand-in served is charged
//! once the jobs have run: the balance equals the ledger and nothing stays held.

use std::time::Duration;

use dev_server::fleet::harness::{Fleet, FleetOptions, Instance};
use nix::sys::signal::Signal;
use serde_json::json;

/// Fleets started one at a time: each runs a few dozen processes on a two-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn chat(stream: bool) -> serde_json::Value {
    json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Namaste"}], "max_tokens": 16, "stream": stream})
}

/// Busy inference instances, once at least `wanted` are and the model has taken that many calls (each
/// call's hold is placed before it is forwarded).
async fn busy_inference(
    fleet: &Fleet,
    wanted: usize,
) -> Result<Vec<Instance>, Box<dyn std::error::Error + Send + Sync>> {
    for _ in e2e::polls() {
        if fleet.upstream_served().await? < wanted as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let busy: Vec<_> =
            fleet.instances().await?.into_iter().filter(|i| i.function == "inference" && i.state == "busy").collect();
        if busy.len() >= wanted {
            return Ok(busy);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("fewer than {wanted} inference instances became busy").into())
}

#[tokio::test]
async fn frozen_and_killed_instances_refuse_no_covered_call_and_every_served_call_is_charged() -> TestResult {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start(FleetOptions::tests(12, Duration::from_millis(1500))).await?;
    let (user_id, key) = fleet.customer("fleet-burst@example.com", 100).await?;
    let (funded, _) = fleet.checked_wallet(&user_id).await?;

    // A burst of eight streamed calls, each on its own instance.
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let request = fleet.http.post(fleet.url("/v1/chat/completions")).bearer_auth(&key).json(&chat(true));
            shared::tasks::spawn("fleet test call", async move {
                request.timeout(Duration::from_secs(20)).send().await.map(|r| r.status())
            })
        })
        .collect();
    let busy = busy_inference(&fleet, 8).await?;
    // Mid-call: five frozen for good, two killed; one left to finish.
    for instance in &busy[..5] {
        instance.signal(Signal::SIGSTOP)?;
    }
    for instance in &busy[5..7] {
        instance.signal(Signal::SIGKILL)?;
    }

    // The account keeps calling while they hold their calls' money: nothing refused, nothing failed.
    let more: Vec<_> = (0..6)
        .map(|i| {
            let request = fleet.http.post(fleet.url("/v1/chat/completions")).bearer_auth(&key).json(&chat(i % 2 == 0));
            shared::tasks::spawn("fleet test call", async move {
                let answer = request.send().await?;
                let status = answer.status();
                answer.bytes().await?;
                Ok::<_, reqwest::Error>(status)
            })
        })
        .collect();
    for call in more {
        assert_eq!(call.await??, reqwest::StatusCode::OK, "a covered call was refused or failed");
    }
    // The frozen ones never answer; the killed ones fail as API Gateway fails them.
    for instance in &busy[..5] {
        instance.signal(Signal::SIGKILL)?;
    }
    let mut statuses = Vec::new();
    for call in burst {
        statuses.push(call.await?.map(|s| s.as_u16()).unwrap_or(0));
    }
    assert!(statuses.contains(&200), "the instance left alone answered: {statuses:?}");

    // Well inside the five minutes a dead instance's charges may take.
    let waited = fleet.jobs_until_nothing_held(std::slice::from_ref(&user_id), Duration::from_secs(120)).await?;
    let (balance, held) = fleet.checked_wallet(&user_id).await?;
    assert_eq!(held, 0);
    // Every call the model took is charged, once: the finished ones by their own settlement, the dead ones
    // (the whole hold: the provider may have billed all of it) by the sweeper.
    let usage = fleet.usage(&user_id).await?;
    let served = fleet.upstream_served().await?;
    assert_eq!(usage.len() as u64, served, "charged calls against the calls the model served");
    let swept = usage.iter().filter(|u| u.status == "settled_by_sweeper").count();
    assert_eq!(swept, 7, "the seven calls whose instances died mid-call: {usage:?}");
    let charged: i64 = usage.iter().map(|u| u.cost).sum();
    assert_eq!(funded - balance, charged);
    assert!(waited < Duration::from_secs(120));
    Ok(())
}

#[tokio::test]
async fn an_instance_killed_right_after_its_answer_has_charged_the_call() -> TestResult {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start(FleetOptions::tests(4, Duration::ZERO)).await?;
    let (user_id, key) = fleet.customer("fleet-after@example.com", 100).await?;
    for stream in [false, true] {
        let answer =
            fleet.http.post(fleet.url("/v1/chat/completions")).bearer_auth(&key).json(&chat(stream)).send().await?;
        assert_eq!(answer.status(), reqwest::StatusCode::OK);
        answer.bytes().await?;
        // The answer is whole: the instance is killed before anything else can run in it.
        let killed: Vec<_> = fleet.instances().await?.into_iter().filter(|i| i.function == "inference").collect();
        for instance in &killed {
            instance.signal(Signal::SIGKILL)?;
        }
        // The next call goes to a new instance once the fleet has seen these end (as Lambda never hands an
        // invocation to an instance it reclaimed).
        for _ in e2e::polls() {
            let alive = fleet.instances().await?;
            if !killed.iter().any(|k| alive.iter().any(|i| i.pid == k.pid)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Settled within the invocation, before the answer ended: nothing left for the sweeper to charge.
    let usage = fleet.usage(&user_id).await?;
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(|u| u.status == "ok" && u.cost > 0), "{usage:?}");
    // The balance equals the ledger, and what the dead instances' purses keep is held (the sweeper returns
    // it once they are idle, as the test above shows).
    fleet.checked_wallet(&user_id).await?;
    Ok(())
}

/// A key's daily spend limit across the fleet's instances: twelve parallel calls, each holding about
/// 3.3 paise against a limit of 5, each on an instance of its own. The limit's window admits one hold at a
/// time, so the others are refused (429 `spend_limit_reached`, `daily`) before they reach the model, and
/// what the key was charged stays under the limit; the key's spend shows what it was charged.
#[tokio::test]
async fn a_daily_spend_limit_holds_across_instances() -> TestResult {
    let _turn = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start(FleetOptions::tests(12, Duration::from_millis(300))).await?;
    let key = json!({"name": "budget", "spend_limits_paise": {"daily": 5}});
    let (user_id, key) = fleet.customer_with_key("fleet-budget@example.com", 100, key).await?;
    let body =
        json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Namaste"}], "max_tokens": 4000});
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let request = fleet.http.post(fleet.url("/v1/chat/completions")).bearer_auth(&key).json(&body);
            shared::tasks::spawn("fleet budget call", async move {
                let answer = request.send().await?;
                let status = answer.status();
                let body: serde_json::Value = answer.json().await?;
                Ok::<_, reqwest::Error>((status, body))
            })
        })
        .collect();
    let (mut served, mut refused) = (0, 0);
    for call in calls {
        let (status, body) = call.await??;
        match status {
            reqwest::StatusCode::OK => served += 1,
            reqwest::StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(
                    (body["error"]["code"].as_str(), body["error"]["param"].as_str()),
                    (Some("spend_limit_reached"), Some("daily"))
                );
                refused += 1;
            }
            other => return Err(format!("unexpected {other}: {body}").into()),
        }
    }
    assert!(served >= 1 && refused >= 1, "{served} served, {refused} refused");
    assert_eq!(fleet.upstream_served().await?, served, "refused calls never reached the model");
    let charged: i64 = fleet.usage(&user_id).await?.iter().map(|u| u.cost).sum();
    assert!(charged <= 5 * shared::money::UNITS_PER_PAISA, "charged {charged}");
    fleet.checked_wallet(&user_id).await?;
    Ok(())
}
