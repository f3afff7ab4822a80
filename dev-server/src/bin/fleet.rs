//! `make fleet`: the API as deployed (API Gateway events, the real Lambda binaries, frozen instances,
//! DynamoDB Local), on `INFEREX_ADDR`. See `dev_server::fleet` and docs/architecture.md.
//!
//! Started by `scripts/fleet.sh` inside the emulators' private network (`scripts/with-emulators.sh`); when
//! that network is private, the script also runs `fleet bridge ADDR SOCKET` outside it, which carries
//! `INFEREX_ADDR` to the fleet's socket `INFEREX_FLEET_SOCKET`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use dev_server::fleet::resources::{self, Emulators, Refs, SecretValues};
use dev_server::fleet::template::Template;
use dev_server::fleet::write_counter::WriteCounter;
use dev_server::fleet::{Fleet, Settings};
use dev_server::kyc_standin::{self, KycStandIn};
use dev_server::razorpay_standin::{self, StandIn, StandInConfig};
use dev_server::upstream_standin::{self, Upstream};
use shared::config::var;
use shared::secrets::random_token;
use shared::state::BoxError;
use shared::store::dynamo::TableNames;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, addr, socket] if mode == "bridge" => runtime.block_on(bridge(addr.parse()?, PathBuf::from(socket))),
        [] => runtime.block_on(serve()),
        _ => Err("usage: fleet [bridge ADDR SOCKET]".into()),
    }
}

fn settings() -> Result<Settings, BoxError> {
    let addr: SocketAddr = var("INFEREX_ADDR")?.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    if !addr.ip().is_loopback() {
        return Err("INFEREX_ADDR: make fleet is a local copy of the deployment and listens on loopback only".into());
    }
    let data_dir: PathBuf = var("INFEREX_DATA_DIR")?.unwrap_or_else(|| PathBuf::from(".inferex"));
    Ok(Settings {
        addr,
        bin_dir: var("INFEREX_FLEET_BIN_DIR")?.unwrap_or_else(|| PathBuf::from("target/release")),
        data_dir: data_dir.join("fleet"),
        concurrency: var::<usize>("INFEREX_FLEET_CONCURRENCY")?.unwrap_or(10).max(1),
        jobs_every: Duration::from_secs(var::<u64>("INFEREX_FLEET_JOBS_EVERY_SECONDS")?.unwrap_or(15 * 60).max(1)),
        idle_for: Duration::from_secs(var::<u64>("INFEREX_FLEET_IDLE_SECONDS")?.unwrap_or(300).max(1)),
        cpu_share: var::<bool>("INFEREX_FLEET_CPU_SHARE")?.unwrap_or(false),
    })
}

fn emulators() -> Result<Emulators, BoxError> {
    let endpoint = |name: &str| -> Result<String, BoxError> {
        Ok(var::<String>(name)?.ok_or_else(|| format!("{name} is not set: start the fleet with `make fleet`"))?)
    };
    Ok(Emulators {
        dynamodb: endpoint("INFEREX_TEST_DYNAMODB_ENDPOINT")?,
        moto: endpoint("INFEREX_TEST_MOTO_ENDPOINT")?,
    })
}

/// The template parameters the environment may set (KYC mode, log level, policy version), and the supplier.
fn parameters(refs: &mut Refs) -> Result<(), BoxError> {
    refs.insert("KycMode".into(), var::<String>("KYC_MODE")?.unwrap_or_else(|| "auto".into()));
    refs.insert("LogLevel".into(), var::<String>("INFEREX_LOG")?.unwrap_or_else(|| "info".into()));
    if let Some(version) = var::<String>("INFEREX_POLICY_VERSION")? {
        refs.insert("PolicyVersion".into(), version);
    }
    // The fleet issues tax documents as `make run`'s supplier (Karnataka, 29).
    let sample = shared::config::Supplier::sample();
    for (name, value) in [
        ("SupplierLegalName", sample.legal_name),
        ("SupplierGstin", sample.gstin),
        ("SupplierAddress", sample.address),
        ("SupplierSignatory", sample.signatory),
    ] {
        refs.insert(name.into(), value);
    }
    Ok(())
}

/// With INFEREX_FLEET_COUNT_WRITES=true the functions reach DynamoDB Local through a counter of its writes:
/// the counter, and the emulators as the functions see them.
async fn write_counting(emulators: &Emulators) -> Result<(Option<WriteCounter>, Emulators), BoxError> {
    let counter = match var::<bool>("INFEREX_FLEET_COUNT_WRITES")?.unwrap_or(false) {
        true => Some(WriteCounter::new(&emulators.dynamodb)),
        false => None,
    };
    let mut functions_see = emulators.clone();
    if let Some(counter) = &counter {
        functions_see.dynamodb = counter.serve().await?;
    }
    Ok((counter, functions_see))
}

/// Serves the fleet on its address, and on INFEREX_FLEET_SOCKET when `make fleet` bridges a private network
/// namespace to it, until a stop signal.
async fn listen(addr: SocketAddr, app: axum::Router) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let tcp = axum::serve(listener, app.clone().into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop_signal());
    match var::<PathBuf>("INFEREX_FLEET_SOCKET")? {
        Some(path) => {
            let _ = std::fs::remove_file(&path);
            let unix = tokio::net::UnixListener::bind(&path)?;
            // Whoever reaches the socket came through the bridge, which listens on loopback only.
            let bridged = app.layer(axum::Extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 0)))));
            let unix = axum::serve(unix, bridged.into_make_service()).with_graceful_shutdown(stop_signal());
            Ok(tokio::try_join!(async { tcp.await }, async { unix.await }).map(|_| ())?)
        }
        None => Ok(tcp.await?),
    }
}

/// What every function sees beside the template's variables: the emulators' endpoints, the fleet's own
/// address, and (for a load test) a larger share of the inference function per account.
fn functions_environment(functions_see: &resources::Emulators, base: &str) -> Result<Vec<(String, String)>, BoxError> {
    let mut extra = resources::aws_environment(functions_see);
    extra.push(("INFEREX_PUBLIC_URL".into(), base.to_owned()));
    if let Some(calls) = var::<u64>("INFEREX_FLEET_CALLS_IN_FLIGHT_PER_ACCOUNT")? {
        extra.push(("INFEREX_CALLS_IN_FLIGHT_PER_ACCOUNT".into(), calls.to_string()));
    }
    Ok(extra)
}

async fn serve() -> Result<(), BoxError> {
    shared::telemetry::init();
    let settings = settings()?;
    let emulators = emulators()?;
    let base = format!("http://{}", settings.addr);
    let template =
        Template::read(&PathBuf::from(var::<String>("INFEREX_TEMPLATE")?.unwrap_or_else(|| "template.yaml".into())))?;

    let mut refs = Refs::new();
    let (razorpay_secret, standin) = razorpay(&base, &mut refs)?;
    let (provider_keys, upstream) = providers(&base, &mut refs)?;
    let (kyc_secret, kyc) = kyc_provider(&base, &mut refs)?;
    parameters(&mut refs)?;
    let edge = random_token();
    let secrets = SecretValues {
        razorpay: razorpay_secret,
        kyc_provider: kyc_secret,
        provider_keys,
        operator_token: operator_token(&settings)?,
        edge: edge.clone(),
    };
    let mail_domain = template.parameters.get("MailDomain").cloned().unwrap_or_else(|| "inferexai.in".into());
    let tables =
        TableNames::with_prefix(&var::<String>("INFEREX_FLEET_TABLE_PREFIX")?.unwrap_or_else(|| "fleet".into()));
    refs.extend(resources::provision(&emulators, &tables, &secrets, &mail_domain).await?);
    let (counter, functions_see) = write_counting(&emulators).await?;
    let extra = functions_environment(&functions_see, &base)?;
    let fleet = Arc::new(Fleet::new(template, &settings, &refs, &extra)?.behind_cloudfront(edge));

    let mut app = fleet.router().merge(dev_server::dashboard::router(
        var("INFEREX_DASHBOARD_DIR")?.unwrap_or_else(|| PathBuf::from("dashboard/site")),
        standin.is_some(),
    ));
    app = mount_standins(app, standin, kyc, upstream);
    if let Some(counter) = counter {
        app = app.nest("/_fleet/writes", write_counts(counter));
    }
    let mailbox = dev_server::fleet::mail::SesMailbox::new(&emulators.moto, &settings.data_dir.join("mail"))?;
    app = app.nest("/_mail", mailbox.router());
    let stream = shared::tasks::spawn(
        "fleet table stream",
        dev_server::fleet::streams::run(
            resources::dynamodb_client(&emulators),
            resources::streams_client(&emulators),
            tables.main.clone(),
            fleet.stream_consumers(),
        ),
    );
    let schedule =
        shared::tasks::spawn("fleet schedule", Arc::clone(&fleet).run_schedule(settings.jobs_every, settings.idle_for));
    tracing::info!(addr = %settings.addr, tables = %tables.main, "InferexAI fleet listening");
    let served = listen(settings.addr, app).await;
    schedule.abort();
    stream.abort();
    fleet.kill_all();
    served
}

/// The stand-ins of the third parties no real one was configured for, where the functions were told they are.
fn mount_standins(
    mut app: axum::Router,
    razorpay: Option<StandIn>,
    kyc: Option<KycStandIn>,
    upstream: Option<Upstream>,
) -> axum::Router {
    if let Some(standin) = razorpay {
        app = app.nest("/_razorpay", razorpay_standin::router(standin));
    }
    if let Some(kyc) = kyc {
        app = app.nest("/_kyc", kyc_standin::router(kyc));
    }
    if let Some(upstream) = upstream {
        app = app.route("/_fleet/upstream", axum::routing::get(served).with_state(upstream.clone()));
        app = app.nest("/_upstream", upstream_standin::router(upstream));
    }
    app
}

/// `GET /_fleet/writes` (the counts) and `POST /_fleet/writes/reset`.
fn write_counts(counter: WriteCounter) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/",
            get(|axum::extract::State(c): axum::extract::State<WriteCounter>| async move { axum::Json(c.report()) }),
        )
        .route(
            "/reset",
            post(|axum::extract::State(c): axum::extract::State<WriteCounter>| async move {
                c.reset();
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(counter)
}

/// What the model stand-in served: `{"calls": n}` (its own count, for checking that every call is charged).
async fn served(axum::extract::State(upstream): axum::extract::State<Upstream>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "calls": upstream.served() }))
}

/// Razorpay: the real one when `RAZORPAY_KEY_ID`, `RAZORPAY_KEY_SECRET` and `RAZORPAY_WEBHOOK_SECRET` are set,
/// else the local stand-in (with keys made for this run); returns the secret's JSON.
fn razorpay(base: &str, refs: &mut Refs) -> Result<(String, Option<StandIn>), BoxError> {
    let given = (
        var::<String>("RAZORPAY_KEY_ID")?,
        var::<String>("RAZORPAY_KEY_SECRET")?,
        var::<String>("RAZORPAY_WEBHOOK_SECRET")?,
    );
    if let (Some(key_id), Some(key_secret), Some(webhook_secret)) = given {
        let api_base = var::<String>("RAZORPAY_API_BASE")?.unwrap_or_else(|| "https://api.razorpay.com".into());
        refs.insert("RazorpayApiBase".into(), api_base);
        let secret = serde_json::json!({"key_id": key_id, "key_secret": key_secret, "webhook_secret": webhook_secret});
        return Ok((secret.to_string(), None));
    }
    let config = StandInConfig {
        key_id: format!("rzp_test_{}", &shared::secrets::random_suffix()[..14]),
        key_secret: random_token(),
        webhook_secret: random_token(),
        webhook_url: Some(format!("{base}/v1/webhooks/razorpay")),
    };
    refs.insert("RazorpayApiBase".into(), format!("{base}/_razorpay"));
    let secret = serde_json::json!({
        "key_id": config.key_id, "key_secret": config.key_secret, "webhook_secret": config.webhook_secret,
    });
    Ok((secret.to_string(), Some(StandIn::new(config))))
}

/// The KYC provider: Cashfree when `CASHFREE_CLIENT_ID` and `CASHFREE_CLIENT_SECRET` are set, else the local
/// stand-in at `/_kyc` with credentials made for this run; returns the secret's JSON.
fn kyc_provider(base: &str, refs: &mut Refs) -> Result<(String, Option<KycStandIn>), BoxError> {
    if let (Some(id), Some(secret)) = (var::<String>("CASHFREE_CLIENT_ID")?, var::<String>("CASHFREE_CLIENT_SECRET")?) {
        refs.insert("CashfreeApiBase".into(), shared::kyc::cashfree::api_base()?);
        let public_key = var::<String>("CASHFREE_PUBLIC_KEY")?;
        let secret = serde_json::json!({"client_id": id, "client_secret": secret, "public_key": public_key});
        return Ok((secret.to_string(), None));
    }
    let (client_id, client_secret) = (format!("CF{}", shared::secrets::random_suffix()), random_token());
    refs.insert("CashfreeApiBase".into(), format!("{base}/_kyc/verification"));
    let standin = KycStandIn::new(&client_id, &client_secret, std::sync::Arc::new(shared::clock::SystemClock));
    let secret = serde_json::json!({"client_id": client_id, "client_secret": client_secret});
    Ok((secret.to_string(), Some(standin.mounted_at("/_kyc"))))
}

/// Model providers: real ones when `CEREBRAS_API_KEY` or `NEEVCLOUD_BASE_URL` is set (keys from the
/// environment into the secret), else the local stand-in behind both names.
fn providers(base: &str, refs: &mut Refs) -> Result<(String, Option<Upstream>), BoxError> {
    let cerebras_key = var::<String>("CEREBRAS_API_KEY")?;
    let neevcloud_url = var::<String>("NEEVCLOUD_BASE_URL")?;
    if cerebras_key.is_some() || neevcloud_url.is_some() {
        if let Some(url) = var::<String>("CEREBRAS_BASE_URL")? {
            refs.insert("CerebrasBaseUrl".into(), url);
        }
        refs.insert("NeevcloudBaseUrl".into(), neevcloud_url.unwrap_or_default());
        let keys = serde_json::json!({
            "cerebras": cerebras_key.unwrap_or_default(),
            "neevcloud": var::<String>("NEEVCLOUD_API_KEY")?.unwrap_or_default(),
        });
        return Ok((keys.to_string(), None));
    }
    let url = format!("{base}/_upstream");
    refs.insert("CerebrasBaseUrl".into(), url.clone());
    refs.insert("NeevcloudBaseUrl".into(), url);
    let keys = serde_json::json!({"cerebras": random_token(), "neevcloud": random_token()});
    let latency = Duration::from_millis(var::<u64>("INFEREX_FLEET_UPSTREAM_LATENCY_MS")?.unwrap_or(20));
    Ok((keys.to_string(), Some(Upstream::new(latency))))
}

/// The operators' credentials: `INFEREX_ADMIN_TOKEN` (checked as the functions check it), else one operator,
/// `operator`, holding every role, whose token is made for this run and written to `<data dir>/operator-token`
/// (readable by its owner only): it enrols an authenticator and signs in like any operator's.
fn operator_token(settings: &Settings) -> Result<String, BoxError> {
    if let Some(given) = var::<String>("INFEREX_ADMIN_TOKEN")? {
        shared::operators::OperatorCredentials::parse("INFEREX_ADMIN_TOKEN", &given)?;
        return Ok(given);
    }
    let token = random_token();
    std::fs::create_dir_all(&settings.data_dir)?;
    let path = settings.data_dir.join("operator-token");
    write_private(&path, &token)?;
    tracing::info!(file = %path.display(), "no INFEREX_ADMIN_TOKEN: an operator token was made for this run");
    let roles = shared::operators::Role::ALL.map(shared::operators::Role::as_str);
    Ok(serde_json::json!({ "operator": { "token": token, "roles": roles } }).to_string())
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// Carries connections on `addr` (outside the emulators' private network) to the fleet's socket.
async fn bridge(addr: SocketAddr, socket: PathBuf) -> Result<(), BoxError> {
    shared::telemetry::init();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut client, _) = accepted?;
                let _ = client.set_nodelay(true);
                let socket = socket.clone();
                shared::tasks::spawn("fleet bridge connection", async move {
                    match tokio::net::UnixStream::connect(&socket).await {
                        Ok(mut fleet) => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut fleet).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "the fleet is not answering on its socket yet"),
                    }
                });
            }
            () = stop_signal() => return Ok(()),
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
