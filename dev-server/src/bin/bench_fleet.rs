//! `make bench-fleet`: the fleet (`make fleet`, release builds, DynamoDB writes counted per item) under
//! closed-loop load from this process, an outside HTTP client: one account at 1, 10 and 50 connections and
//! 20 accounts at 50, then the same while a tenth of the inference instances are killed and another tenth
//! frozen for 10 s every few seconds; last, one account whose key has rate and spend limits, at 1 and 10. Each call is a whole (non-streamed) chat completion from the model
//! stand-in, which answers at once: the latency is all ours.
//!
//! For each step it prints calls/s, the latency's p50/p99, DynamoDB writes per call, the busiest item's
//! most writes in one second, the 402s answered (every account can pay: any is false) and the other
//! failures (a killed instance's call fails as API Gateway fails it). At the end the jobs run until nothing
//! is held, and the charges are counted against the calls the model stand-in served.
//!
//! Runs inside `scripts/with-emulators.sh` (the Makefile's target does). `INFEREX_BENCH_FLEET_SECONDS`: each
//! step's length (default 10).
#![expect(clippy::print_stdout, reason = "a command-line tool reports on the terminal")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_server::fleet::harness::{Fleet, FleetOptions, Instance};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use shared::state::BoxError;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: usize = 20;
/// Instances per function: more than the largest step's connections.
const CONCURRENCY: usize = 64;
/// Chaos: how often instances are killed and frozen, and for how long a frozen one stays frozen.
const CHAOS_EVERY: Duration = Duration::from_secs(3);
const FROZEN_FOR: Duration = Duration::from_secs(10);

fn main() -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

/// One step's figures.
#[derive(Default)]
struct Step {
    ok: usize,
    refused: usize,
    failed: usize,
    latencies: Vec<Duration>,
}

async fn run() -> Result<(), BoxError> {
    let seconds = std::env::var("INFEREX_BENCH_FLEET_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10u64);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = root.join("target/release");
    let options = FleetOptions {
        concurrency: CONCURRENCY,
        upstream_latency: Duration::ZERO,
        profile_dir: release.clone(),
        bin_dir: release,
        count_writes: true,
        // One account at 50 connections is above the template's default share (25 calls at once).
        calls_in_flight_per_account: Some(CONCURRENCY),
    };
    let fleet = Arc::new(Fleet::start(options).await?);
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        accounts.push(fleet.customer(&format!("bench-{n}@example.com"), 500_000).await?);
    }
    println!("machine: {} cores; {}", cores(), memory());
    println!("load: closed loop over HTTP/1.1 keep-alive from one client process; {seconds} s a step\n");
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>12} {:>15} {:>6} {:>7}",
        "step", "calls/s", "p50 ms", "p99 ms", "writes/call", "busiest item/s", "402s", "failed"
    );
    let mut false_refusals = 0;
    for chaos in [false, true] {
        for (users, connections) in [(1, 1), (1, 10), (1, 50), (ACCOUNTS, 50)] {
            let name = format!(
                "{} account{}, {} connection{}{}",
                users,
                if users == 1 { "" } else { "s" },
                connections,
                if connections == 1 { "" } else { "s" },
                if chaos { ", chaos" } else { "" }
            );
            fleet.reset_writes().await?;
            let step = load(&fleet, &accounts[..users], connections, Duration::from_secs(seconds), chaos).await?;
            let writes = fleet.writes().await?;
            false_refusals += step.refused;
            print_step(&name, &step, &writes, seconds);
        }
    }
    let limited = limited_key_steps(&fleet, seconds, &mut false_refusals).await?;
    accounts.push(limited);
    let users: Vec<String> = accounts.iter().map(|(user, _)| user.clone()).collect();
    let waited = fleet.jobs_until_nothing_held(&users, Duration::from_secs(300)).await?;
    let mut charged = 0u64;
    for user in &users {
        fleet.checked_wallet(user).await?;
        charged += fleet.usage(user).await?.len() as u64;
    }
    let served = fleet.upstream_served().await?;
    let missing = served.saturating_sub(charged);
    println!("\nafter the load: nothing held {:.0} s later; every balance equals its ledger", waited.as_secs_f64());
    println!("calls the model served: {served}; charged: {charged}; missing charges: {missing}");
    println!("402s answered to accounts that could pay: {false_refusals}");
    if missing > 0 || false_refusals > 0 {
        return Err("calls were refused or served uncharged".into());
    }
    Ok(())
}

/// What a key's limits cost a call: the same load on one account whose key has a tokens-a-minute and a daily
/// spend limit that never bind (each call counts in its rate window and its three spend windows). Returns
/// the account and its key.
async fn limited_key_steps(
    fleet: &Arc<Fleet>,
    seconds: u64,
    refusals: &mut usize,
) -> Result<(String, String), BoxError> {
    let limits = json!({"name": "limited", "rate_limits": {"tokens_per_minute": 1_000_000_000}, "spend_limits_paise": {"daily": 1_000_000_000}});
    let limited = fleet.customer_with_key("bench-limits@example.com", 500_000, limits).await?;
    for connections in [1, 10] {
        let name = format!("limited key, {connections} connection{}", if connections == 1 { "" } else { "s" });
        fleet.reset_writes().await?;
        let step =
            load(fleet, std::slice::from_ref(&limited), connections, Duration::from_secs(seconds), false).await?;
        let writes = fleet.writes().await?;
        *refusals += step.refused;
        print_step(&name, &step, &writes, seconds);
    }
    Ok(limited)
}

/// `connections` closed loops for `length`, each on its own account in turn; with `chaos`, instances are
/// killed and frozen meanwhile.
async fn load(
    fleet: &Arc<Fleet>,
    accounts: &[(String, String)],
    connections: usize,
    length: Duration,
    chaos: bool,
) -> Result<Step, BoxError> {
    let until = Instant::now() + length;
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(connections).timeout(Duration::from_secs(60)).build()?;
    let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Namaste"}], "max_tokens": 16});
    let url = fleet.url("/v1/chat/completions");
    let loops: Vec<_> = (0..connections)
        .map(|n| {
            let (http, body, url) = (http.clone(), body.clone(), url.clone());
            let key = accounts[n % accounts.len()].1.clone();
            shared::tasks::spawn("bench connection", async move {
                let mut step = Step::default();
                while Instant::now() < until {
                    let started = Instant::now();
                    let answer = http.post(&url).bearer_auth(&key).json(&body).send().await;
                    let status = match answer {
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            let _ = answer.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    match status {
                        200 => {
                            step.ok += 1;
                            step.latencies.push(started.elapsed());
                        }
                        402 => step.refused += 1,
                        _ => step.failed += 1,
                    }
                }
                step
            })
        })
        .collect();
    let chaos = chaos.then(|| shared::tasks::spawn("bench chaos", disturb(Arc::clone(fleet), until)));
    let mut total = Step::default();
    for one in loops {
        let one = one.await?;
        total.ok += one.ok;
        total.refused += one.refused;
        total.failed += one.failed;
        total.latencies.extend(one.latencies);
    }
    if let Some(chaos) = chaos {
        chaos.await??;
    }
    Ok(total)
}

/// Every few seconds until `until`: a tenth of the inference instances killed, another tenth frozen for 10 s.
async fn disturb(fleet: Arc<Fleet>, until: Instant) -> Result<(), String> {
    let mut thaws = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(CHAOS_EVERY).await;
        let instances: Vec<Instance> = match fleet.instances().await {
            Ok(all) => all.into_iter().filter(|i| i.function == "inference" && i.state != "starting").collect(),
            Err(e) => return Err(e.to_string()),
        };
        let tenth = (instances.len() / 10).max(1);
        for instance in instances.iter().take(tenth) {
            let _ = instance.signal(Signal::SIGKILL);
        }
        for instance in instances.iter().skip(tenth).take(tenth) {
            if instance.signal(Signal::SIGSTOP).is_ok() {
                let instance = instance.clone();
                thaws.push(shared::tasks::spawn("bench thaw", async move {
                    tokio::time::sleep(FROZEN_FOR).await;
                    let _ = instance.signal(Signal::SIGCONT);
                }));
            }
        }
    }
    for thaw in thaws {
        let _ = thaw.await;
    }
    Ok(())
}

fn print_step(name: &str, step: &Step, writes: &Value, seconds: u64) {
    let mut latencies = step.latencies.clone();
    latencies.sort_unstable();
    let at =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied();
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let per_call = writes["writes"].as_f64().unwrap_or(0.0) / (step.ok.max(1) as f64);
    let busiest = writes["busiest"]["writes_per_second"].as_u64().unwrap_or(0);
    println!(
        "{:<34} {:>8.0} {:>9.1} {:>9.1} {:>12.1} {:>15} {:>6} {:>7}",
        name,
        step.ok as f64 / seconds as f64,
        ms(at(0.5)),
        ms(at(0.99)),
        per_call,
        busiest,
        step.refused,
        step.failed
    );
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn memory() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok());
    kib.map_or_else(|| "memory unknown".into(), |kib| format!("{} GiB", kib / 1024 / 1024))
}
