//! `make bench`: the gateway's added latency. Starts the local server (release build, embedded store) as
//! its own process, pointed at an OpenAI-compatible stand-in with a fixed 20 ms latency running here;
//! drives open-loop load at a fixed rate, first straight at the stand-in, then through the gateway, for
//! non-streaming and streaming calls; prints p50/p99 added latency (and time to first token), achieved
//! requests per second and the server's peak RSS.

#![expect(clippy::print_stdout, reason = "a command-line tool reports on the terminal")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dev_server::upstream_standin::{self, Upstream};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Defaults of `INFEREX_BENCH_RATE` (requests per second) and `INFEREX_BENCH_REQUESTS` (per run).
const RATE_PER_SECOND: u64 = 500;
const REQUESTS: usize = 3000;
const UPSTREAM_LATENCY: Duration = Duration::from_millis(20);

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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
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
    shared::tasks::spawn("bench upstream", async move {
        let _ = axum::serve(upstream_listener, upstream_standin::router(upstream)).await;
    });
    let (server, base, data) = start_server(upstream_addr)?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build()?;
    for _ in 0..100 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = customer_key(&http, &base).await?;
    measure(&http, &base, upstream_addr, &key).await;
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
            .env("CEREBRAS_API_KEY", "bench-upstream-key-0123456789")
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

/// A customer with a verified address and KYC, ₹5,00,000 of balance (through the server's Razorpay stand-in) and an API key.
async fn customer_key(http: &reqwest::Client, base: &str) -> Res<String> {
    let email = "bench@example.in";
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
    post(
        http,
        &format!("{base}/v1/kyc"),
        Some(&token),
        &json!({"pan": "BNCPE1234H", "aadhaar": "234567890124", "name_on_pan": "Bench"}),
    )
    .await?;
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
