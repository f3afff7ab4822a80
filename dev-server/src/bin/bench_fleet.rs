//! `make bench-fleet`: the fleet (`make fleet`, release builds, DynamoDB writes counted per item) under
//! closed-loop load from this process, an outside HTTP client: one account at 1, 10 and 50 connections and
//! 20 accounts at 50, one account's streamed calls at 10, then the same while a tenth of the inference
//! instances are killed and another tenth frozen for 10 s every few seconds; last, one account whose key has
//! rate and spend limits, at 1 and 10. Each call is a chat completion from the model stand-in, which answers
//! at once: the latency is all ours.
//!
//! For each step it prints calls/s, the latency's p50/p99, DynamoDB writes per call (counted per item by
//! the emulator's stream), write and read capacity units per invocation (as DynamoDB reported them to the
//! adapter, which logs them), inference CPU milliseconds per call, the busiest item's most writes in one
//! second, the 402s answered (every account can pay: any is false) and the other failures (a killed
//! instance's call fails as API Gateway fails it). Then each function's cold starts (init, first call) and
//! peak resident memory. At the end the jobs run until nothing is held, and the charges are counted against
//! the calls the model stand-in served, and the busiest account's data export is built (the exports
//! function's memory at the largest export here).
//!
//! Runs inside `scripts/with-emulators.sh` (the Makefile's target does). `INFEREX_BENCH_FLEET_SECONDS`: each
//! step's length (default 10).
#![expect(clippy::print_stdout, reason = "a command-line tool reports on the terminal")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_server::fleet::harness::{Fleet, FleetOptions, Instance};
use dev_server::fleet::template::Template;
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
const CPU_SHARED: &str = "each instance has its MemorySize's share of one core, as in Lambda (MemorySize / 1,769 MB; a cgroup quota per 100 ms)";
const CPU_UNLIMITED: &str =
    "instances are not limited to Lambda's share of a vCPU (no writable CPU cgroup here: run as root)";

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

/// How a step loads the fleet.
#[derive(Clone, Copy)]
struct Shape {
    connections: usize,
    length: Duration,
    chaos: bool,
    stream: bool,
}

/// A step and what the fleet counted meanwhile.
struct Measured {
    load: Step,
    /// The write counter's report (items written, the busiest item).
    writes: Value,
    /// What the inference instances logged of their DynamoDB capacity: (read units, write units, invocations).
    capacity: (f64, f64, u64),
    /// CPU time the inference instances used (none when one ended meanwhile, taking its count with it).
    cpu_ms: Option<u64>,
}

/// Runs one step, counting the store's writes and capacity and the inference instances' CPU around it.
async fn measured_step(fleet: &Arc<Fleet>, accounts: &[(String, String)], shape: Shape) -> Result<Measured, BoxError> {
    fleet.reset_writes().await?;
    let mark = fleet.log_mark("inference");
    let cpu_before = inference_cpu(fleet).await?;
    let load = load(fleet, accounts, shape).await?;
    let writes = fleet.writes().await?;
    let cpu_after = inference_cpu(fleet).await?;
    let capacity = fleet.logged_capacity("inference", &mark).unwrap_or_default();
    // An instance that ended (killed, or reaped) took its CPU count with it: no figure then.
    let kept = cpu_before.iter().all(|(pid, _)| cpu_after.iter().any(|(after, _)| after == pid));
    let sum = |cpu: &[(i32, u64)]| cpu.iter().map(|(_, ms)| ms).sum::<u64>();
    let cpu_ms = kept.then(|| sum(&cpu_after).saturating_sub(sum(&cpu_before)));
    Ok(Measured { load, writes, capacity, cpu_ms })
}

async fn inference_cpu(fleet: &Fleet) -> Result<Vec<(i32, u64)>, BoxError> {
    let instances = fleet.instances().await?;
    Ok(instances.iter().filter(|i| i.function == "inference").map(|i| (i.pid, i.cpu_ms.unwrap_or(0))).collect())
}

/// Per function, over its instances now: how many, their cold starts (init, then the first invocation),
/// their largest peak resident memory and their CPU time.
fn print_instances(instances: &[Instance], template: &Template) {
    println!("\ninstances after the load (cold start: init, then the first invocation; memory: peak resident):");
    println!(
        "{:<18} {:>10} {:>9} {:>14} {:>14} {:>20} {:>20} {:>15}",
        "function",
        "memory MB",
        "instances",
        "init p50 ms",
        "init max ms",
        "first call p50 ms",
        "first call max ms",
        "peak RSS MiB"
    );
    let mut functions: Vec<&str> = instances.iter().map(|i| i.function.as_str()).collect();
    functions.sort_unstable();
    functions.dedup();
    for function in functions {
        let of: Vec<&Instance> = instances.iter().filter(|i| i.function == function).collect();
        let sorted = |values: Vec<f64>| {
            let mut values = values;
            values.sort_by(f64::total_cmp);
            values
        };
        let inits = sorted(of.iter().filter_map(|i| i.init_ms).collect());
        let firsts = sorted(of.iter().filter_map(|i| i.first_call_ms).collect());
        let median = |v: &[f64]| v.get(v.len() / 2).map_or("-".to_owned(), |x| format!("{x:.1}"));
        let max = |v: &[f64]| v.last().map_or("-".to_owned(), |x| format!("{x:.1}"));
        let peak = of
            .iter()
            .filter_map(|i| i.peak_rss_kib)
            .max()
            .map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        let memory_mb = template.function(function).map_or("-".to_owned(), |f| f.memory_mb.to_string());
        println!(
            "{:<18} {:>10} {:>9} {:>14} {:>14} {:>20} {:>20} {:>15}",
            function,
            memory_mb,
            of.len(),
            median(&inits),
            max(&inits),
            median(&firsts),
            max(&firsts),
            peak
        );
    }
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
        cpu_share: true,
    };
    let fleet = Arc::new(Fleet::start(options).await?);
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        accounts.push(fleet.customer(&format!("bench-{n}@example.com"), 500_000).await?);
    }
    println!("machine: {}", dev_server::machine::describe());
    println!("cpu: {}", if fleet.cpu_share().await? { CPU_SHARED } else { CPU_UNLIMITED });
    println!("load: closed loop over HTTP/1.1 keep-alive from one client process; {seconds} s a step\n");
    print_header();
    let mut false_refusals = sweep(&fleet, &accounts, seconds).await?;
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
    // The largest export there is here: the account of every single-account step (its usage entries).
    let (export, took) = fleet.export("bench-0@example.com", Duration::from_secs(600)).await?;
    let entries = fleet.usage(&users[0]).await?.len();
    println!("\nthe data export of the account with {entries} usage entries: {export} in {:.1} s", took.as_secs_f64());
    let missing = served.saturating_sub(charged);
    println!("\nafter the load: nothing held {:.0} s later; every balance equals its ledger", waited.as_secs_f64());
    println!("calls the model served: {served}; charged: {charged}; missing charges: {missing}");
    println!("402s answered to accounts that could pay: {false_refusals}");
    print_instances(&fleet.instances().await?, &Template::read(&root.join("template.yaml"))?);
    if missing > 0 || false_refusals > 0 {
        return Err("calls were refused or served uncharged".into());
    }
    Ok(())
}

/// The steps without and then with chaos (streamed only without); returns the 402s answered.
async fn sweep(fleet: &Arc<Fleet>, accounts: &[(String, String)], seconds: u64) -> Result<usize, BoxError> {
    let mut false_refusals = 0;
    for chaos in [false, true] {
        for (users, connections, stream) in
            [(1, 1, false), (1, 10, false), (1, 10, true), (1, 50, false), (ACCOUNTS, 50, false)]
        {
            if chaos && stream {
                continue;
            }
            let name = format!(
                "{} account{}, {} connection{}{}{}",
                users,
                if users == 1 { "" } else { "s" },
                connections,
                if connections == 1 { "" } else { "s" },
                if stream { ", streamed" } else { "" },
                if chaos { ", chaos" } else { "" }
            );
            let shape = Shape { connections, length: Duration::from_secs(seconds), chaos, stream };
            let step = measured_step(fleet, &accounts[..users], shape).await?;
            false_refusals += step.load.refused;
            print_step(&name, &step, seconds);
        }
    }
    Ok(false_refusals)
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
        let shape = Shape { connections, length: Duration::from_secs(seconds), chaos: false, stream: false };
        let step = measured_step(fleet, std::slice::from_ref(&limited), shape).await?;
        *refusals += step.load.refused;
        print_step(&name, &step, seconds);
    }
    Ok(limited)
}

/// `connections` closed loops for `length`, each on its own account in turn; with `chaos`, instances are
/// killed and frozen meanwhile.
async fn load(fleet: &Arc<Fleet>, accounts: &[(String, String)], shape: Shape) -> Result<Step, BoxError> {
    let Shape { connections, length, chaos, stream } = shape;
    let until = Instant::now() + length;
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(connections).timeout(Duration::from_secs(60)).build()?;
    let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Namaste"}], "max_tokens": 16, "stream": stream});
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

fn print_header() {
    println!(
        "{:<44} {:>8} {:>9} {:>9} {:>12} {:>9} {:>9} {:>12} {:>15} {:>6} {:>7}",
        "step",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "writes/call",
        "WCU/call",
        "RCU/call",
        "CPU ms/call",
        "busiest item/s",
        "402s",
        "failed"
    );
}

fn print_step(name: &str, step: &Measured, seconds: u64) {
    let mut latencies = step.load.latencies.clone();
    latencies.sort_unstable();
    let at =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied();
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let calls = step.load.ok.max(1) as f64;
    let per_call = step.writes["writes"].as_f64().unwrap_or(0.0) / calls;
    let busiest = step.writes["busiest"]["writes_per_second"].as_u64().unwrap_or(0);
    let (read_units, write_units, invocations) = step.capacity;
    let per_invocation =
        |units: f64| if invocations == 0 { "-".to_owned() } else { format!("{:.1}", units / invocations as f64) };
    let cpu = step.cpu_ms.map_or_else(|| "-".to_owned(), |cpu| format!("{:.2}", cpu as f64 / calls));
    println!(
        "{:<44} {:>8.0} {:>9.1} {:>9.1} {:>12.1} {:>9} {:>9} {:>12} {:>15} {:>6} {:>7}",
        name,
        step.load.ok as f64 / seconds as f64,
        ms(at(0.5)),
        ms(at(0.99)),
        per_call,
        per_invocation(write_units),
        per_invocation(read_units),
        cpu,
        busiest,
        step.load.refused,
        step.load.failed
    );
}
