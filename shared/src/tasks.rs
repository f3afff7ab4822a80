//! Background tasks. This is the one place that spawns them (clippy's `disallowed_methods` refuses
//! `tokio::spawn` everywhere else): each task runs in a tracing span named after it, so what a detached
//! task logs says which task it is.

use std::future::Future;

use tracing::Instrument;

/// Spawns `future` as the task `name`.
pub fn spawn<F>(name: &'static str, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[expect(clippy::disallowed_methods, reason = "the one audited place that spawns tasks")]
    tokio::spawn(future.instrument(tracing::info_span!("task", name)))
}
