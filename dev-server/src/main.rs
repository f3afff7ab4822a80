//! `make run`: serves the whole API on `INFEREX_ADDR` (default 127.0.0.1:8080) with the embedded store
//! under `INFEREX_DATA_DIR` (default ./.inferex). Data survives restarts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shared::config::{Config, var};
use shared::state::{AppState, BoxError};

const PURGE_EVERY: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    shared::telemetry::init();
    let addr: SocketAddr = var("INFEREX_ADDR")?.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir: PathBuf = var("INFEREX_DATA_DIR")?.unwrap_or_else(|| PathBuf::from(".inferex"));
    let (state, store) = AppState::embedded(&data_dir, Config::from_env()?)?;
    let purger = store.spawn_purger(PURGE_EVERY);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, data_dir = %data_dir.display(), "InferexAI API listening");
    axum::serve(listener, dev_server::app(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    purger.abort();
    Ok(())
}
