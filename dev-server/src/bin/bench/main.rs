//! `make bench`: the gateway's added latency and throughput. Starts the local server (release build,
//! embedded store) as its own process, pointed at an OpenAI-compatible stand-in running here.
//!
//! 1. Open loop at a fixed rate with a 20 ms upstream, first straight at the stand-in, then through the
//!    gateway, for non-streaming and streaming calls: p50/p99 added latency, time to first token.
//! 2. Closed loop with an upstream that answers at once: 1, 10 and 50 connections of one account, and 50
//!    connections spread over `INFEREX_BENCH_ACCOUNTS` accounts (default 20), each step
//!    `INFEREX_BENCH_STEP_SECONDS` (default 5) straight at the stand-in and through the gateway: calls per
//!    second and latency, from this client and then from wrk, an outside load generator, for the same step.
//! 3. With `INFEREX_BENCH_SOAK_SECONDS`, a soak: `INFEREX_BENCH_SOAK_CONNECTIONS` (default 10) closed-loop
//!    callers of one account for that long, printing every 10 seconds the calls per second, the server's
//!    resident memory and the size of its store (database file and write-ahead log).
//!
//! 4. With `INFEREX_BENCH_LITELLM` naming LiteLLM's `litellm` command (`make bench` installs the pinned
//!    proxy from PyPI), the reference side by side: LiteLLM's proxy (one worker, no database) and ours at
//!    the same stand-in, 1 and 10 closed-loop connections, both modes, with the ratios.
//!
//! 5. What a key's rate limits cost a call: 1 and 10 closed-loop connections with a key without limits and
//!    with one whose limit never binds (every call counted in the store).
//!
//! Ends with the server's peak RSS.

#![expect(clippy::print_stdout, reason = "a command-line tool reports on the terminal")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use dev_server::machine::memory_kib;
use dev_server::upstream_standin::{self, Upstream};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Defaults of `INFEREX_BENCH_RATE` (requests per second) and `INFEREX_BENCH_REQUESTS` (per run).
const RATE_PER_SECOND: u64 = 500;
const REQUESTS: usize = 3000;
const UPSTREAM_LATENCY: Duration = Duration::from_millis(20);
/// Closed-loop connection counts, and the default of `INFEREX_BENCH_ACCOUNTS` (the many-accounts step).
const CONNECTIONS: [usize; 3] = [1, 10, 50];
const ACCOUNTS: u64 = 20;
const STEP_SECONDS: u64 = 5;
const SOAK_CONNECTIONS: u64 = 10;
/// How often the soak reports.
const SOAK_REPORT_EVERY: Duration = Duration::from_secs(10);

mod limits;
mod litellm;
mod wrk;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    memory_kib(pid, "VmHWM")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn post(http: &reqwest::Client, url: &str, key: Option<&str>, body: &Value) -> Res<Value> {
    let mut request = http.post(url).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    Ok(request.send().await?.error_for_status()?.json().await.unwrap_or(Value::Null))
}

/// One timed call: total latency and time to the first body bytes.
async fn timed(http: reqwest::Client, url: String, key: Option<String>, body: Value) -> Option<(Duration, Duration)> {
    let start = Instant::now();
    let mut request = http.post(&url).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut stream = response.bytes_stream();
    let mut first = None;
    while let Some(chunk) = stream.next().await {
        chunk.ok()?;
        first.get_or_insert_with(|| start.elapsed());
    }
    Some((start.elapsed(), first.unwrap_or_else(|| start.elapsed())))
}

struct Run {
    totals: Vec<Duration>,
    firsts: Vec<Duration>,
    failures: usize,
    per_second: f64,
}

/// Open loop: one request every 1/RATE seconds, whatever the answers do.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

async fn drive(http: &reqwest::Client, url: &str, key: Option<&str>, body: &Value) -> Run {
    let rate = setting("INFEREX_BENCH_RATE", RATE_PER_SECOND);
    let requests = setting("INFEREX_BENCH_REQUESTS", REQUESTS as u64) as usize;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut tasks = Vec::with_capacity(requests);
    let start = Instant::now();
    for _ in 0..requests {
        ticker.tick().await;
        tasks.push(shared::tasks::spawn(
            "bench request",
            timed(http.clone(), url.to_owned(), key.map(str::to_owned), body.clone()),
        ));
    }
    let mut run = Run { totals: Vec::new(), firsts: Vec::new(), failures: 0, per_second: 0.0 };
    for task in tasks {
        match task.await.ok().flatten() {
            Some((total, first)) => {
                run.totals.push(total);
                run.firsts.push(first);
            }
            None => run.failures += 1,
        }
    }
    run.per_second = run.totals.len() as f64 / start.elapsed().as_secs_f64();
    run.totals.sort();
    run.firsts.sort();
    run
}

/// Closed loop: `keys.len()` callers (one key each, repeated as needed), each sending its next request as
/// soon as its last answer is complete, for `length`.
async fn closed_loop(
    http: &reqwest::Client,
    url: &str,
    keys: &[Option<String>],
    body: &Value,
    length: Duration,
) -> Run {
    let start = Instant::now();
    let deadline = start + length;
    let mut workers = Vec::with_capacity(keys.len());
    for key in keys {
        let (http, url, key, body) = (http.clone(), url.to_owned(), key.clone(), body.clone());
        workers.push(shared::tasks::spawn("bench caller", async move {
            let (mut totals, mut firsts, mut failures) = (Vec::new(), Vec::new(), 0);
            while Instant::now() < deadline {
                match timed(http.clone(), url.clone(), key.clone(), body.clone()).await {
                    Some((total, first)) => {
                        totals.push(total);
                        firsts.push(first);
                    }
                    None => failures += 1,
                }
            }
            (totals, firsts, failures)
        }));
    }
    let mut run = Run { totals: Vec::new(), firsts: Vec::new(), failures: 0, per_second: 0.0 };
    for worker in workers {
        if let Ok((totals, firsts, failures)) = worker.await {
            run.totals.extend(totals);
            run.firsts.extend(firsts);
            run.failures += failures;
        }
    }
    run.per_second = run.totals.len() as f64 / start.elapsed().as_secs_f64();
    run.totals.sort();
    run.firsts.sort();
    run
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn added(through: Duration, direct: Duration) -> f64 {
    ms(through) - ms(direct)
}

#[tokio::main]
async fn main() -> Res<()> {
    let upstream = Upstream::new(UPSTREAM_LATENCY);
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream_listener.local_addr()?;
    // A provider flushes each event at once (Nagle's algorithm would hold them back by a delayed ACK).
    let upstream_listener = upstream_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serving = upstream.clone();
    shared::tasks::spawn("bench upstream", async move {
        let _ = axum::serve(upstream_listener, upstream_standin::router(serving)).await;
    });
    let (server, base, data) = start_server(upstream_addr)?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build()?;
    for _ in 0..100 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = customer_key(&http, &base, 0).await?;
    measure(&http, &base, upstream_addr, &key).await;
    // Throughput: the upstream answers at once, so what is measured is the gateway.
    upstream.set_latency(Duration::ZERO);
    let accounts = setting("INFEREX_BENCH_ACCOUNTS", ACCOUNTS);
    let mut keys = vec![key.clone()];
    for index in 1..accounts {
        keys.push(customer_key(&http, &base, index).await?);
    }
    sweep(&http, &base, upstream_addr, &keys).await;
    if let Err(e) = limits::cost_of_limits(&http, &base, &key).await {
        println!("the cost of rate limits not measured: {e}");
    }
    if let Ok(command) = std::env::var("INFEREX_BENCH_LITELLM")
        && let Err(e) = litellm::side_by_side(&http, &base, upstream_addr, &key, &command).await
    {
        println!("LiteLLM side by side not run: {e}");
    }
    match std::env::var("INFEREX_BENCH_SOAK_SECONDS").map(|v| v.parse::<u64>()) {
        Ok(Ok(seconds)) if seconds > 0 => {
            let watched = Watched { pid: server.0.id(), data: &data };
            soak(&http, &base, &key, watched, Duration::from_secs(seconds)).await;
        }
        Ok(_) => println!("INFEREX_BENCH_SOAK_SECONDS must be a number of seconds above 0: no soak"),
        Err(_) => {}
    }
    match peak_rss_kib(server.0.id()) {
        Some(kib) => println!("server peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS: unavailable"),
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// Starts the release server on a free port with a fresh data folder, its provider the local stand-in.
fn start_server(upstream_addr: std::net::SocketAddr) -> Res<(Server, String, PathBuf)> {
    let port = free_port()?;
    let data = std::env::temp_dir().join(format!("inferex-bench-{}", shared::secrets::random_suffix()));
    let binary =
        std::env::var("INFEREX_BENCH_SERVER").map(PathBuf::from).unwrap_or_else(|_| "target/release/dev-server".into());
    let server = Server(
        Command::new(&binary)
            .env("INFEREX_ADDR", format!("127.0.0.1:{port}"))
            .env("INFEREX_DATA_DIR", &data)
            .env("INFEREX_LOG", "warn")
            // A key made now: a fixed one would be a well-known value, which the server refuses.
            .env("CEREBRAS_API_KEY", shared::secrets::random_token())
            .env("CEREBRAS_BASE_URL", format!("http://{upstream_addr}"))
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?,
    );
    Ok((server, format!("http://127.0.0.1:{port}"), data))
}

/// The token of the verification link the server's local mailbox (`/_mail`) holds for `email`.
async fn verification_token(http: &reqwest::Client, base: &str, email: &str) -> Res<String> {
    for _ in 0..100 {
        let mailbox: Value = http.get(format!("{base}/_mail")).send().await?.error_for_status()?.json().await?;
        let messages = mailbox["data"].as_array().cloned().unwrap_or_default();
        let link = messages
            .iter()
            .find(|m| m["to"] == email && m["kind"] == "verify_email")
            .and_then(|m| m["links"][0].as_str());
        if let Some(token) = link.and_then(|l| l.split_once("token=")).map(|(_, t)| t.to_owned()) {
            return Ok(token);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no verification e-mail arrived".into())
}

/// Customer `index`: a verified address and KYC (numbers of its own), ₹5,00,000 of balance (through the
/// server's Razorpay stand-in) and an API key.
async fn customer_key(http: &reqwest::Client, base: &str, index: u64) -> Res<String> {
    let email = format!("bench{index}@example.in");
    let email = email.as_str();
    // The KYC stand-in verifies a PAN whose last serial digit is 0-3.
    let pan = format!("BNCPE{:03}{}H", 100 + index / 4, index % 4);
    post(http, &format!("{base}/v1/auth/signup"), None, &json!({"email": email, "password": "correct horse battery", "full_name": "Bench", "date_of_birth": "1990-01-01", "accepted_terms_version": shared::config::DEFAULT_POLICY_VERSION})).await?;
    let token = post(
        http,
        &format!("{base}/v1/auth/login"),
        None,
        &json!({"email": email, "password": "correct horse battery"}),
    )
    .await?["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let link = verification_token(http, base, email).await?;
    post(http, &format!("{base}/v1/auth/verify-email"), None, &json!({ "token": link })).await?;
    post(http, &format!("{base}/v1/kyc"), Some(&token), &json!({"pan": pan, "name_on_pan": "Bench", "consent": true}))
        .await?;
    let started = post(http, &format!("{base}/v1/kyc/digilocker"), Some(&token), &json!({})).await?;
    let url = started["url"].as_str().ok_or("no DigiLocker url")?;
    let back = dev_server::kyc_standin::submit_defaults(http, url, true).await.map_err(|e| e.to_string())?;
    http.get(back).send().await?;
    // Every top-up is issued a receipt voucher: the account is billed somewhere first.
    let profile =
        json!({"billing_name": "Bench", "address": "1 MG Road, Bengaluru", "state_code": "29", "pin": "560001"});
    http.put(format!("{base}/v1/account/billing-profile"))
        .bearer_auth(&token)
        .json(&profile)
        .send()
        .await?
        .error_for_status()?;
    let topup =
        post(http, &format!("{base}/v1/wallet/topups"), Some(&token), &json!({"amount_paise": 50_000_000})).await?;
    post(
        http,
        &format!("{base}/_razorpay/dev/orders/{}/pay", topup["razorpay_order_id"].as_str().unwrap_or_default()),
        None,
        &json!({}),
    )
    .await?;
    let key = post(http, &format!("{base}/v1/keys"), Some(&token), &json!({"name": "bench"})).await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(key)
}

/// Drives both modes through the gateway and directly, and prints the added latency.
async fn measure(http: &reqwest::Client, base: &str, upstream_addr: std::net::SocketAddr, key: &str) {
    let gateway_url = format!("{base}/v1/chat/completions");
    let direct_url = format!("http://{upstream_addr}/chat/completions");
    println!(
        "InferexAI gateway benchmark: {} requests per run at {}/s, upstream latency {} ms",
        setting("INFEREX_BENCH_REQUESTS", REQUESTS as u64),
        setting("INFEREX_BENCH_RATE", RATE_PER_SECOND),
        UPSTREAM_LATENCY.as_millis()
    );
    println!("| mode | p50 added (ms) | p99 added (ms) | TTFT p50 added (ms) | req/s | failures |");
    println!("|---|---|---|---|---|---|");
    for stream in [false, true] {
        let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16, "stream": stream});
        let mut direct_body = body.clone();
        direct_body["model"] = json!("llama3.1-8b");
        // Warm both paths (connections, key cache) before measuring.
        drive_warmup(http, &gateway_url, Some(key), &body).await;
        let direct = drive(http, &direct_url, None, &direct_body).await;
        let through = drive(http, &gateway_url, Some(key), &body).await;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
            if stream { "streaming" } else { "non-streaming" },
            added(percentile(&through.totals, 0.5), percentile(&direct.totals, 0.5)),
            added(percentile(&through.totals, 0.99), percentile(&direct.totals, 0.99)),
            added(percentile(&through.firsts, 0.5), percentile(&direct.firsts, 0.5)),
            through.per_second,
            through.failures,
        );
    }
}

async fn drive_warmup(http: &reqwest::Client, url: &str, key: Option<&str>, body: &Value) {
    for _ in 0..50 {
        let _ = timed(http.clone(), url.to_owned(), key.map(str::to_owned), body.clone()).await;
    }
}

/// Closed-loop throughput at 1, 10 and 50 connections of one account, then 50 over every account, straight
/// at the stand-in and through the gateway, for both modes.
async fn sweep(http: &reqwest::Client, base: &str, upstream_addr: std::net::SocketAddr, keys: &[String]) {
    let length = Duration::from_secs(setting("INFEREX_BENCH_STEP_SECONDS", STEP_SECONDS));
    let gateway_url = format!("{base}/v1/chat/completions");
    let direct_url = format!("http://{upstream_addr}/chat/completions");
    println!();
    println!(
        "Closed loop, upstream answering at once, {} s a step (direct = straight at the stand-in):",
        length.as_secs()
    );
    let outside = wrk::available();
    if !outside {
        println!("wrk is not installed (apt-get install wrk): the outside load generator's figures are missing");
    }
    println!(
        "| mode | accounts | connections | direct calls/s | gateway calls/s | gateway p50 (ms) | gateway p99 (ms) | failures | wrk calls/s | wrk p50 (ms) | wrk p99 (ms) | wrk failures | wrk direct p50 (ms) | wrk direct p99 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for stream in [false, true] {
        let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16, "stream": stream});
        let mut direct_body = body.clone();
        direct_body["model"] = json!("llama3.1-8b");
        let mut steps: Vec<(usize, usize)> = CONNECTIONS.iter().map(|&c| (1, c)).collect();
        if keys.len() > 1 {
            steps.push((keys.len(), 50));
        }
        for (accounts, connections) in steps {
            let callers: Vec<Option<String>> = (0..connections).map(|i| keys.get(i % accounts).cloned()).collect();
            let direct = closed_loop(http, &direct_url, &vec![None; connections], &direct_body, length).await;
            let through = closed_loop(http, &gateway_url, &callers, &body, length).await;
            let by_wrk = match outside {
                true => match wrk::run(&gateway_url, &body, &keys[..accounts], connections, length).await {
                    Ok(run) => {
                        format!("{:.0} | {:.2} | {:.2} | {}", run.per_second, run.p50_ms, run.p99_ms, run.failures)
                    }
                    Err(e) => format!("not measured: {e} | | |"),
                },
                false => "- | - | - | -".to_owned(),
            };
            // wrk straight at the stand-in: what the machine and the load generator cost without the gateway.
            let no_key = ["none".to_owned()];
            let wrk_direct = match outside {
                true => match wrk::run(&direct_url, &direct_body, &no_key, connections, length).await {
                    Ok(run) => format!("{:.2} | {:.2}", run.p50_ms, run.p99_ms),
                    Err(e) => format!("not measured: {e} |"),
                },
                false => "- | -".to_owned(),
            };
            println!(
                "| {} | {accounts} | {connections} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {by_wrk} | {wrk_direct} |",
                if stream { "streaming" } else { "non-streaming" },
                direct.per_second,
                through.per_second,
                ms(percentile(&through.totals, 0.5)),
                ms(percentile(&through.totals, 0.99)),
                through.failures,
            );
        }
    }
}

/// Sustained closed-loop load on one account, reporting throughput, memory and store size as it goes.
/// The server process a soak watches: its pid (memory) and its data folder (store size).
struct Watched<'a> {
    pid: u32,
    data: &'a std::path::Path,
}

async fn soak(http: &reqwest::Client, base: &str, key: &str, watched: Watched<'_>, length: Duration) {
    let Watched { pid, data } = watched;
    let connections = setting("INFEREX_BENCH_SOAK_CONNECTIONS", SOAK_CONNECTIONS) as usize;
    let url = format!("{base}/v1/chat/completions");
    let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16});
    println!();
    println!("Soak: {connections} closed-loop connections of one account for {} s:", length.as_secs());
    println!("| time (s) | calls | calls/s (last 10 s) | failures | server RSS (MiB) | database (MiB) | log (MiB) |");
    println!("|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut done = 0;
    let mut failures = 0;
    while start.elapsed() < length {
        let step = SOAK_REPORT_EVERY.min(length.saturating_sub(start.elapsed()));
        let keys = vec![Some(key.to_owned()); connections];
        let run = closed_loop(http, &url, &keys, &body, step).await;
        done += run.totals.len();
        failures += run.failures;
        let size = |name: &str| std::fs::metadata(data.join(name)).map(|m| m.len()).unwrap_or(0);
        println!(
            "| {:.0} | {done} | {:.0} | {failures} | {:.1} | {:.1} | {:.1} |",
            start.elapsed().as_secs_f64(),
            run.per_second,
            memory_kib(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0,
            mib(size("inferex.sqlite3")),
            mib(size("inferex.sqlite3-wal")),
        );
    }
}
