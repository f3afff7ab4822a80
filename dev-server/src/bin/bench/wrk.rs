//! The closed-loop steps measured by wrk, an outside load generator, beside the bench's own client: the
//! same gateway, account keys and request, one wrk thread per step (`wrk -t1 -cN --latency`). wrk comes from
//! the distribution (`apt-get install wrk`); without it the outside figures are said to be missing.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::Res;

/// What wrk reported for one step.
pub struct WrkRun {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers that were not 2xx, and socket errors.
    pub failures: u64,
}

/// Whether wrk is installed.
pub fn available() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// A wrk script posting `body` with the keys in turn (one per request, as callers of several accounts do).
fn script(body: &Value, keys: &[String]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("{:?}", k)).collect();
    format!(
        "local keys = {{{}}}\nlocal body = {:?}\nlocal n = 0\nrequest = function()\n  n = n % #keys + 1\n  return wrk.format(\"POST\", nil, {{[\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer \" .. keys[n]}}, body)\nend\n",
        quoted.join(", "),
        body.to_string(),
    )
}

/// Runs wrk for `length` at `connections` against `url`, and reads its figures.
pub async fn run(url: &str, body: &Value, keys: &[String], connections: usize, length: Duration) -> Res<WrkRun> {
    let path = std::env::temp_dir().join(format!("inferex-wrk-{}.lua", shared::secrets::random_suffix()));
    std::fs::write(&path, script(body, keys))?;
    let args = vec![
        "-t1".to_owned(),
        format!("-c{connections}"),
        format!("-d{}s", length.as_secs().max(1)),
        "--latency".to_owned(),
        "-s".to_owned(),
        path.display().to_string(),
        url.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new("wrk").args(&args).output()).await??;
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    parse(&text).ok_or_else(|| format!("wrk's output was not understood: {text}").into())
}

/// wrk's `--latency` report: requests per second, the 50% and 99% lines, non-2xx answers and socket errors.
pub fn parse(text: &str) -> Option<WrkRun> {
    let value_after =
        |label: &str| text.lines().find_map(|line| line.trim().strip_prefix(label).map(|rest| rest.trim().to_owned()));
    let per_second = value_after("Requests/sec:")?.parse().ok()?;
    let p50_ms = duration_ms(value_after("50%")?.as_str())?;
    let p99_ms = duration_ms(value_after("99%")?.as_str())?;
    let non_2xx = value_after("Non-2xx or 3xx responses:").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let socket_errors = value_after("Socket errors:")
        .map_or(0, |line| line.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum());
    Some(WrkRun { per_second, p50_ms, p99_ms, failures: non_2xx + socket_errors })
}

/// `812.00us`, `1.43ms`, `2.01s`, as milliseconds.
fn duration_ms(value: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrks_report_is_read() -> Result<(), String> {
        let report = "Running 5s test @ http://127.0.0.1:1/v1/chat/completions\n  1 threads and 10 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.70ms    3.12ms  40.11ms   97.10%\n  Latency Distribution\n     50%    1.43ms\n     75%    1.61ms\n     90%    1.96ms\n     99%   27.50ms\n  27050 requests in 5.00s, 20.44MB read\n  Non-2xx or 3xx responses: 3\n  Socket errors: connect 0, read 1, write 0, timeout 2\nRequests/sec:   5409.98\nTransfer/sec:      4.09MB\n";
        let run = parse(report).ok_or("not parsed")?;
        assert_eq!((run.per_second, run.p50_ms, run.p99_ms, run.failures), (5409.98, 1.43, 27.5, 6));
        assert_eq!(duration_ms("812.00us"), Some(0.812));
        assert!(parse("garbage").is_none());
        Ok(())
    }
}
