//! Logging setup. Logs are structured (JSON in Lambda, where CloudWatch indexes fields) and never carry
//! request bodies, credentials or personal numbers: handlers log identifiers and outcomes only. In the JSON
//! form an event's fields sit under `fields` (`$.fields.alert` is what template.yaml's metric filters read:
//! `crate::alerts`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber; `INFEREX_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init() {
    let filter = std::env::var("INFEREX_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // A second initialisation (tests) is harmless; ignore its error.
    let _ = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        tracing::subscriber::set_global_default(lambda_subscriber(filter, std::io::stdout))
    } else {
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt().with_env_filter(filter).with_target(false).finish(),
        )
    };
}

/// The subscriber of a Lambda function: one JSON object a line, no time (CloudWatch stamps each line).
pub fn lambda_subscriber<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .json()
        .without_time()
        .with_ansi(false)
        .with_writer(writer)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// template.yaml's metric filters read `$.fields.alert`: an alert logged in Lambda lands exactly there.
    #[test]
    fn alerts_sit_where_the_metric_filters_read_them() -> Result<(), Box<dyn std::error::Error>> {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = lambda_subscriber(EnvFilter::new("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(alert = crate::alerts::USAGE_OVER_HOLD, hold = 5, "the provider reported more");
        });
        let text = String::from_utf8(lines.0.lock().map_err(|_| "poisoned")?.clone())?;
        let event: serde_json::Value = serde_json::from_str(text.trim())?;
        assert_eq!(event["fields"]["alert"], "usage_over_hold", "{text}");
        assert_eq!(event["level"], "ERROR");
        Ok(())
    }
}
