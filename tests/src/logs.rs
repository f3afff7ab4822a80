//! Every log line of the test binary, captured, so that tests can assert what never reaches the logs.

use std::sync::Arc;

/// Everything our code logs during this test binary's run, at every level: tests assert that no secret
/// or personal number ever reaches the logs.
static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

#[derive(Clone)]
struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = LogSink(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
        buffer
    });
}

/// The logs captured so far in this test binary.
pub fn captured_logs() -> String {
    LOGS.get().and_then(|b| b.lock().ok().map(|l| String::from_utf8_lossy(&l).into_owned())).unwrap_or_default()
}

/// Whether `text` holds `token` as a whole word: not inside a longer run of letters or digits, so that a
/// six-digit PIN is not "found" inside a timestamp or a random identifier the logs happen to hold.
pub fn mentions(text: &str, token: &str) -> bool {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.match_indices(token)
        .any(|(at, _)| !is_word(text[..at].chars().next_back()) && !is_word(text[at + token.len()..].chars().next()))
}
