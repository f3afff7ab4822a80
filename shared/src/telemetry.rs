//! Logging setup. Logs are structured (JSON in Lambda, where CloudWatch indexes fields) and never carry
//! request bodies, credentials or personal numbers: handlers log identifiers and outcomes only.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `INFEREX_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init() {
    let filter = std::env::var("INFEREX_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // A second initialisation (tests) is harmless; ignore its error.
    let _ = if in_lambda { builder.json().without_time().with_ansi(false).try_init() } else { builder.try_init() };
}
