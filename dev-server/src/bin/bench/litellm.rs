//! `make bench`'s reference: the same closed-loop steps through LiteLLM's proxy and through ours, at the same
//! stand-in, with the ratios (ours / LiteLLM's).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::{Res, Run, STEP_SECONDS, Server, closed_loop, drive_warmup, free_port, ms, percentile, setting};

/// LiteLLM's proxy configured for the stand-in under the gateway's public model name, as its documentation
/// describes an OpenAI-compatible upstream.
fn litellm_config(upstream_addr: std::net::SocketAddr) -> String {
    format!(
        "model_list:\n  - model_name: llama-3.1-8b\n    litellm_params:\n      model: openai/llama3.1-8b\n      api_base: http://{upstream_addr}\n      api_key: bench-upstream-key-0123456789\n"
    )
}

/// The same closed-loop steps through LiteLLM's proxy and through ours, with the ratios (ours / LiteLLM's).
pub(super) async fn side_by_side(
    http: &reqwest::Client,
    base: &str,
    upstream_addr: std::net::SocketAddr,
    key: &str,
    command: &str,
) -> Res<()> {
    let proxy = start(http, upstream_addr, command).await?;
    let (litellm, master_key) = (&proxy.url, &proxy.master_key);
    let length = Duration::from_secs(setting("INFEREX_BENCH_STEP_SECONDS", STEP_SECONDS));
    println!();
    println!(
        "Side by side with LiteLLM proxy (one worker, master key, no database), same stand-in, {} s a step:",
        length.as_secs()
    );
    println!(
        "| mode | connections | LiteLLM calls/s | LiteLLM p50 (ms) | LiteLLM p99 (ms) | ours calls/s | ours p50 (ms) | ours p99 (ms) | calls/s ratio | p99 ratio | failures (LiteLLM/ours) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for stream in [false, true] {
        let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16, "stream": stream});
        let litellm_url = format!("{litellm}/v1/chat/completions");
        let gateway_url = format!("{base}/v1/chat/completions");
        drive_warmup(http, &litellm_url, Some(master_key), &body).await;
        for connections in [1, 10] {
            let theirs =
                closed_loop(http, &litellm_url, &vec![Some(master_key.clone()); connections], &body, length).await;
            let ours = closed_loop(http, &gateway_url, &vec![Some(key.to_owned()); connections], &body, length).await;
            report(stream, connections, &theirs, &ours);
        }
    }
    Ok(())
}

/// LiteLLM's proxy, running: dropped, it stops and its folder goes.
struct LiteLlm {
    _process: Server,
    url: String,
    master_key: String,
    dir: std::path::PathBuf,
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts LiteLLM's proxy (one worker, master key, no database) in front of the stand-in; waits until it is up.
async fn start(http: &reqwest::Client, upstream_addr: std::net::SocketAddr, command: &str) -> Res<LiteLlm> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("inferex-bench-litellm-{}", shared::secrets::random_suffix()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("config.yaml");
    std::fs::write(&config, litellm_config(upstream_addr))?;
    let port_text = port.to_string();
    // It refuses to start without a master key; callers present it, as ours present their API keys.
    let master_key = format!("sk-{}{}", shared::secrets::random_suffix(), shared::secrets::random_suffix());
    let proxy = Server(
        Command::new(command)
            .args(["--config", &config.to_string_lossy(), "--host", "127.0.0.1", "--port", &port_text])
            .args(["--num_workers", "1"])
            // Its price list from the package, not the network; no database, no telemetry.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MASTER_KEY", &master_key)
            .env_remove("DATABASE_URL")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {command}: {e}"))?,
    );
    let litellm = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..600 {
        if http.get(format!("{litellm}/health/liveliness")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !ready {
        return Err("LiteLLM's proxy did not start within two minutes".into());
    }
    Ok(LiteLlm { _process: proxy, url: litellm, master_key, dir })
}

/// One row of the side-by-side table: theirs, ours, and the ratios.
fn report(stream: bool, connections: usize, theirs: &Run, ours: &Run) {
    let (their_p99, our_p99) = (percentile(&theirs.totals, 0.99), percentile(&ours.totals, 0.99));
    println!(
        "| {} | {connections} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1}x | {:.1}x lower | {}/{} |",
        if stream { "streaming" } else { "non-streaming" },
        theirs.per_second,
        ms(percentile(&theirs.totals, 0.5)),
        ms(their_p99),
        ours.per_second,
        ms(percentile(&ours.totals, 0.5)),
        ms(our_p99),
        ours.per_second / theirs.per_second.max(f64::MIN_POSITIVE),
        ms(their_p99) / ms(our_p99).max(f64::MIN_POSITIVE),
        theirs.failures,
        ours.failures,
    );
}
