//! What per-key limits cost a call: the same closed loop with the first customer's key (no limits), with a
//! second key of the same account whose tokens-a-minute limit is too high ever to bind (every call makes its
//! rate window's conditional write before it is forwarded), and with a third whose daily spend limit never
//! binds (every call takes its hold from the key's three spend windows in one transaction before it is
//! forwarded, and settles them after).

use std::time::Duration;

use serde_json::json;

use super::{Res, STEP_SECONDS, closed_loop, ms, percentile, post, setting};

/// Non-streaming calls at 1 and 10 connections, each key in turn; prints calls/s and latency.
pub(super) async fn cost_of_limits(http: &reqwest::Client, base: &str, key: &str) -> Res<()> {
    let login = json!({"email": "bench0@example.in", "password": "correct horse battery"});
    let token = post(http, &format!("{base}/v1/auth/login"), None, &login).await?["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let create = |body: serde_json::Value| {
        let token = token.clone();
        async move {
            let created = post(http, &format!("{base}/v1/keys"), Some(&token), &body).await?;
            Res::<String>::Ok(created["key"].as_str().unwrap_or_default().to_owned())
        }
    };
    let limited = create(json!({"name": "bench limited", "rate_limits": {"tokens_per_minute": 1_000_000_000}})).await?;
    let budgeted = create(json!({"name": "bench budget", "spend_limits_paise": {"daily": 1_000_000_000}})).await?;
    let length = Duration::from_secs(setting("INFEREX_BENCH_STEP_SECONDS", STEP_SECONDS));
    let url = format!("{base}/v1/chat/completions");
    let body = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16});
    println!();
    println!("What a key's limits cost (non-streaming, upstream answering at once, {} s a step):", length.as_secs());
    println!("| key | connections | calls/s | p50 (ms) | p99 (ms) | failures |");
    println!("|---|---|---|---|---|---|");
    for connections in [1, 10] {
        let keys = [("no limits", key), ("tokens a minute", limited.as_str()), ("daily spend", budgeted.as_str())];
        for (label, key) in keys {
            let run = closed_loop(http, &url, &vec![Some(key.to_owned()); connections], &body, length).await;
            println!(
                "| {label} | {connections} | {:.0} | {:.2} | {:.2} | {} |",
                run.per_second,
                ms(percentile(&run.totals, 0.5)),
                ms(percentile(&run.totals, 0.99)),
                run.failures
            );
        }
    }
    Ok(())
}
