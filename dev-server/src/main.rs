//! `make run`: serves the whole API on `INFEREX_ADDR` (default 127.0.0.1:8080) with the embedded store
//! under `INFEREX_DATA_DIR` (default ./.inferex). Data survives restarts.
//!
//! Without Razorpay credentials in the environment, a local Razorpay stand-in is mounted at `/_razorpay`
//! and used instead, so top-ups work with no network (see docs/walkthrough.md, "Paying offline"); without
//! provider keys, a model stand-in at `/_upstream`; without KYC provider credentials, a Cashfree stand-in at
//! `/_kyc` (its DigiLocker consent page included). The stand-ins (and `/_blobs` download links) are
//! mounted only on a loopback address unless `INFEREX_DEV_STANDINS=1`: the Razorpay stand-in's pay route
//! credits a wallet without any payment. The scheduled jobs run every 15 minutes, as deployed. E-mail goes
//! to `.eml` files under `$INFEREX_DATA_DIR/mail/`, listed at `/_mail` on a loopback address. The
//! dashboard (`dashboard/site/`, or `INFEREX_DASHBOARD_DIR`) is served at `/` and the operator console at
//! `/ops`.

use std::net::SocketAddr;

use axum::serve::ListenerExt;
use std::path::PathBuf;
use std::time::Duration;

use dev_server::kyc_standin::{self, KycStandIn};
use dev_server::mailbox;
use dev_server::razorpay_standin::{self, StandIn, StandInConfig};
use dev_server::upstream_standin::{self, Upstream};
use shared::catalog::Catalog;
use shared::clock::SystemClock;
use shared::config::{Config, var};
use shared::inference::{Gateway, Provider, Providers};
use shared::kyc::cashfree::{Cashfree, CashfreeConfig};
use shared::notifications::delivery::FileMailer;
use shared::razorpay::{RazorpayClient, RazorpayConfig};
use shared::secrets::SecretString;
use shared::secrets::random_suffix;
use shared::state::{AppState, BoxError};

const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Often, so that each passive checkpoint syncs a few MiB of log at most (at full rate the log grows by
/// over 100 MB/s) and the store's log limit is met by the background, not by a commit's own checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
const JOBS_EVERY: Duration = Duration::from_secs(15 * 60);
/// How long a shutdown waits for the budget leases to go back.
const LEASE_RETURN_PATIENCE: Duration = Duration::from_secs(5);

/// The stand-in's credentials: test-mode style, and only ever accepted by the stand-in itself.
const STANDIN_KEY_ID: &str = "rzp_test_localstandin";
const STANDIN_KEY_SECRET: &str = "local_standin_key_secret";
const STANDIN_WEBHOOK_SECRET: &str = "local_standin_webhook_secret";

/// The allocator: glibc's gives each thread that allocates under contention an arena of its own and keeps
/// what those arenas held after the load is gone (measured: 290 MiB resident after the benchmark's
/// 50-connection step, 92 MiB with two arenas); mimalloc returns freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads for blocking work (store operations that wait for the connection, file reads). Tokio's
/// default is 512: under load every caller waiting for the store's one connection held a thread, each
/// with its own stack and allocator arena, and the memory stayed after the load was gone.
const BLOCKING_THREADS: usize = 16;

fn main() -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()?
        .block_on(serve())
}

async fn serve() -> Result<(), BoxError> {
    shared::telemetry::init();
    let addr: SocketAddr = var("INFEREX_ADDR")?.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir: PathBuf = var("INFEREX_DATA_DIR")?.unwrap_or_else(|| PathBuf::from(".inferex"));
    let mut config = Config::from_env()?;
    // `make run`'s supplier on tax documents, unless INFEREX_SUPPLIER_* name another.
    config.supplier = config.supplier.or_else(|| Some(shared::config::Supplier::sample()));
    if var::<String>("INFEREX_PUBLIC_URL")?.is_none() {
        // Links in e-mails point at this server itself.
        config.public_url = format!("http://{addr}");
    }
    let (state, store) = AppState::embedded(&data_dir, config, &format!("http://{addr}"))?;

    let standins = standins_allowed(addr)?;
    let (state, standin) = with_razorpay(state, addr, standins)?;
    let (state, kyc_standin) = with_kyc_provider(state, addr, standins)?;
    let (providers, upstream) = providers(addr, standins)?;
    let state = state.with_gateway(Gateway::new(Catalog::builtin()?, providers)?);
    let mut app = if standins { dev_server::app(state.clone()) } else { dev_server::api_only(state.clone()) };
    let site: PathBuf = var("INFEREX_DASHBOARD_DIR")?.unwrap_or_else(|| PathBuf::from("dashboard/site"));
    app = app.merge(dev_server::dashboard::router(site, standin.is_some()));
    if let Some(standin) = standin {
        app = app.nest("/_razorpay", razorpay_standin::router(standin));
    }
    if let Some(upstream) = upstream {
        app = app.nest("/_upstream", upstream_standin::router(upstream));
    }
    if let Some(kyc_standin) = kyc_standin {
        app = app.nest("/_kyc", kyc_standin::router(kyc_standin));
    }
    let mailer = FileMailer::new(data_dir.join("mail"));
    if addr.ip().is_loopback() {
        tracing::info!(dir = %mailer.dir().display(), "e-mail is delivered to files, listed at /_mail");
        app = app.nest("/_mail", mailbox::router(mailer.clone()));
    }
    let mail = shared::tasks::spawn("local mail", mailbox::deliver_forever(state.clone(), mailer));
    let purger = store.spawn_purger(PURGE_EVERY);
    let checkpointer = store.spawn_checkpointer(CHECKPOINT_EVERY);
    let jobs = shared::tasks::spawn("scheduled jobs", run_jobs(state.clone()));

    // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm holds each back until
    // the previous one is acknowledged.
    let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    tracing::info!(%addr, data_dir = %data_dir.display(), "InferexAI API listening");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop_signal())
        .await?;
    // The calls have ended: the budget leases go back now instead of waiting minutes for the sweeper.
    if let Ok(gateway) = state.gateway() {
        match gateway.return_leases(LEASE_RETURN_PATIENCE).await {
            0 => tracing::info!("budget leases returned"),
            left => tracing::warn!(left, "budget leases not returned in time; the sweeper returns them"),
        }
    }
    purger.abort();
    mail.abort();
    checkpointer.abort();
    jobs.abort();
    Ok(())
}

/// Ctrl-C or SIGTERM (what `kill` and service managers send).
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGTERM not handled");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Razorpay: the real one when credentials are configured, else (where stand-ins are allowed) the local
/// stand-in, returned for mounting.
fn with_razorpay(state: AppState, addr: SocketAddr, standins: bool) -> Result<(AppState, Option<StandIn>), BoxError> {
    Ok(match RazorpayConfig::from_env()? {
        Some(config) => (state.with_razorpay(RazorpayClient::new(config)?), None),
        None if !standins => (state, None),
        None => {
            tracing::info!("no Razorpay credentials: using the local Razorpay stand-in at /_razorpay");
            let standin = StandIn::new(StandInConfig {
                key_id: STANDIN_KEY_ID.into(),
                key_secret: STANDIN_KEY_SECRET.into(),
                webhook_secret: STANDIN_WEBHOOK_SECRET.into(),
                webhook_url: Some(format!("http://{addr}/v1/webhooks/razorpay")),
            });
            let client = RazorpayClient::new(RazorpayConfig {
                key_id: STANDIN_KEY_ID.into(),
                key_secret: SecretString::new(STANDIN_KEY_SECRET),
                webhook_secret: SecretString::new(STANDIN_WEBHOOK_SECRET),
                api_base: format!("http://{addr}/_razorpay"),
            })?;
            (state.with_razorpay(client), Some(standin))
        }
    })
}

/// Whether the stand-ins may be mounted (said in the log either way).
fn standins_allowed(addr: SocketAddr) -> Result<bool, BoxError> {
    let standins = dev_server::standins_allowed(&addr, var::<bool>("INFEREX_DEV_STANDINS")?);
    if standins {
        tracing::info!(%addr, "local stand-ins may be mounted (/_razorpay, /_upstream, /_kyc, /_blobs)");
    } else {
        tracing::warn!(%addr, "not a loopback address: no stand-ins are mounted; without Razorpay credentials, provider keys and KYC provider credentials, top-ups, models and KYC are unavailable (INFEREX_DEV_STANDINS=1 mounts them anyway)");
    }
    Ok(standins)
}

/// The KYC provider: Cashfree when `CASHFREE_CLIENT_ID` and `CASHFREE_CLIENT_SECRET` are set, else (where
/// stand-ins are allowed) the local stand-in at `/_kyc`, with credentials made for this run.
fn with_kyc_provider(
    state: AppState,
    addr: SocketAddr,
    standins: bool,
) -> Result<(AppState, Option<KycStandIn>), BoxError> {
    if let Some(config) = CashfreeConfig::from_env()? {
        return Ok((state.with_kyc_provider(std::sync::Arc::new(Cashfree::new(config)?)), None));
    }
    if !standins {
        tracing::warn!("no KYC provider credentials (CASHFREE_CLIENT_ID): KYC submissions fail until they are set");
        return Ok((state, None));
    }
    tracing::info!("no KYC provider credentials: using the local Cashfree stand-in at /_kyc");
    let (client_id, client_secret) =
        (format!("CF{}", random_suffix()), format!("cfsk_{}{}", random_suffix(), random_suffix()));
    let standin = KycStandIn::new(&client_id, &client_secret, std::sync::Arc::new(SystemClock)).mounted_at("/_kyc");
    let config = CashfreeConfig {
        client_id,
        client_secret: SecretString::new(&client_secret),
        api_base: format!("http://{addr}/_kyc/verification"),
        public_key: None,
    };
    Ok((state.with_kyc_provider(std::sync::Arc::new(Cashfree::new(config)?)), Some(standin)))
}

/// Model providers: the real ones when configured, else (where stand-ins are allowed) a local
/// OpenAI-compatible stand-in for both, returned for mounting.
fn providers(addr: SocketAddr, standins: bool) -> Result<(Providers, Option<Upstream>), BoxError> {
    let mut providers = Providers::from_env()?;
    let no_providers = var::<String>("CEREBRAS_API_KEY")?.is_none() && var::<String>("NEEVCLOUD_BASE_URL")?.is_none();
    if !(standins && no_providers) {
        return Ok((providers, None));
    }
    tracing::info!("no provider keys: using the local model stand-in at /_upstream");
    for name in ["cerebras", "neevcloud"] {
        providers.insert(Provider { name: name.into(), base_url: format!("http://{addr}/_upstream"), api_key: None });
    }
    Ok((providers, Some(Upstream::new(Duration::from_millis(20)))))
}

/// The scheduled jobs, every 15 minutes as deployed; and the old exports' purge, which S3 does with a
/// lifecycle rule and the local folder does here.
async fn run_jobs(state: AppState) {
    let mut ticker = tokio::time::interval(JOBS_EVERY);
    loop {
        ticker.tick().await;
        if let Err(e) = jobs::run(&state).await {
            tracing::warn!(error = %e, "scheduled jobs failed");
        }
        let export_days = u64::from(state.config.retention.export_days);
        let cutoff = std::time::SystemTime::now() - Duration::from_secs(export_days * 86_400);
        if let Some(local) = state.blobs.as_deref().and_then(|b| b.local())
            && let Err(e) = local.purge_older_than("exports", cutoff).await
        {
            tracing::warn!(error = %e, "purging old exports failed");
        }
    }
}
