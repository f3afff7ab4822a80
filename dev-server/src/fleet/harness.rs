//! A fleet driven from outside, for the fleet tests and `make bench-fleet`: the fleet binary with the real
//! function binaries, on the DynamoDB Local and moto that `scripts/with-emulators.sh` started, used over
//! HTTP as a client would, with its instances frozen and killed by the caller (their pids from
//! `GET /_fleet`), and its tables read directly to check the money invariants.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shared::store::dynamo::{DynamoStore, TableNames};

type TestError = Box<dyn std::error::Error + Send + Sync>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// How a fleet runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub concurrency: usize,
    /// The model stand-in's delay before each answer.
    pub upstream_latency: Duration,
    /// `target/debug` or `target/release`: where the fleet binary is.
    pub profile_dir: PathBuf,
    /// The function binaries.
    pub bin_dir: PathBuf,
    /// Count DynamoDB writes per item (`GET /_fleet/writes`).
    pub count_writes: bool,
    /// Overrides the template's `CallsInFlightPerAccount` (a load test's one account may use the whole fleet).
    pub calls_in_flight_per_account: Option<usize>,
    /// Each instance gets its memory's share of a vCPU, as in Lambda (where the machine allows).
    pub cpu_share: bool,
}

impl FleetOptions {
    /// The debug build `make test` makes: the fleet in `target/debug`, the functions in `target/fleet-bin`
    /// (or `INFEREX_FLEET_BIN_DIR`).
    pub fn tests(concurrency: usize, upstream_latency: Duration) -> Self {
        let bin_dir =
            std::env::var("INFEREX_FLEET_BIN_DIR").map_or_else(|_| root().join("target/fleet-bin"), PathBuf::from);
        Self {
            concurrency,
            upstream_latency,
            profile_dir: root().join("target/debug"),
            bin_dir,
            count_writes: false,
            calls_in_flight_per_account: None,
            cpu_share: false,
        }
    }
}

pub struct Fleet {
    pub base: String,
    pub http: reqwest::Client,
    /// The fleet's tables, read directly to check the money invariants.
    pub store: DynamoStore,
    process: Child,
    data: PathBuf,
    documents: std::sync::atomic::AtomicU64,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // SIGTERM: the fleet kills its instances before it exits.
        if let Ok(pid) = i32::try_from(self.process.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        for _ in 0..100 {
            if matches!(self.process.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The password of every customer [`Fleet::customer`] makes.
const CUSTOMER_PASSWORD: &str = "correct horse battery";

/// Where a function's log files ended (each file's inode and length): the current one and the one before,
/// which instances started before it was set aside still write to.
#[derive(Clone, Default)]
pub struct LogMark {
    files: Vec<(u64, u64)>,
}

/// One instance as `GET /_fleet` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub function: String,
    pub pid: i32,
    pub state: String,
    /// Its cold start: init, then its first invocation (none until over).
    pub init_ms: Option<f64>,
    pub first_call_ms: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    /// CPU time it used (user and system).
    pub cpu_ms: Option<u64>,
}

impl Instance {
    pub fn signal(&self, signal: Signal) -> Result<(), TestError> {
        Ok(kill(Pid::from_raw(self.pid), signal)?)
    }
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> Result<Self, TestError> {
        let var =
            |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set: run the tests with `make test`"));
        let (dynamodb, moto) = (var("INFEREX_TEST_DYNAMODB_ENDPOINT")?, var("INFEREX_TEST_MOTO_ENDPOINT")?);
        let bin_dir = options.bin_dir.clone();
        let fleet_binary = options.profile_dir.join("fleet");
        for needed in [fleet_binary.clone(), bin_dir.join("inference")] {
            if !needed.is_file() {
                return Err(
                    format!("{} is missing: build it first (make test, make bench-fleet)", needed.display()).into()
                );
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let prefix = format!("fleet-{}", shared::secrets::random_suffix());
        let data = std::env::temp_dir().join(&prefix);
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{prefix}.log")))?;
        let mut command = Command::new(&fleet_binary);
        if let Some(calls) = options.calls_in_flight_per_account {
            command.env("INFEREX_FLEET_CALLS_IN_FLIGHT_PER_ACCOUNT", calls.to_string());
        }
        let process = command
            .current_dir(root())
            .env("INFEREX_ADDR", format!("127.0.0.1:{port}"))
            .env("INFEREX_DATA_DIR", &data)
            .env("INFEREX_FLEET_BIN_DIR", &bin_dir)
            .env("INFEREX_FLEET_TABLE_PREFIX", &prefix)
            .env("INFEREX_FLEET_CONCURRENCY", options.concurrency.to_string())
            // The test runs the jobs itself (POST /_fleet/jobs).
            .env("INFEREX_FLEET_JOBS_EVERY_SECONDS", "86400")
            .env("INFEREX_FLEET_UPSTREAM_LATENCY_MS", options.upstream_latency.as_millis().to_string())
            // Warnings, and each invocation's DynamoDB capacity (what bench-fleet counts per call).
            .env("INFEREX_LOG", "warn,store_capacity=info")
            .env("INFEREX_FLEET_COUNT_WRITES", options.count_writes.to_string())
            .env("INFEREX_FLEET_CPU_SHARE", options.cpu_share.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let emulators = super::resources::Emulators { dynamodb, moto };
        let client = super::resources::dynamodb_client(&emulators);
        let clock: std::sync::Arc<dyn shared::clock::Clock> = std::sync::Arc::new(shared::clock::SystemClock);
        let store = DynamoStore::new(client, TableNames::with_prefix(&prefix), clock);
        let fleet = Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?,
            store,
            process,
            data,
            documents: std::sync::atomic::AtomicU64::new(0),
        };
        fleet.wait_until_healthy().await?;
        Ok(fleet)
    }

    async fn wait_until_healthy(&self) -> Result<(), TestError> {
        for _ in 0..600 {
            if let Ok(answer) = self.http.get(self.url("/health")).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the fleet did not answer /health within a minute".into())
    }

    /// Where a function's log ends now: `logged_capacity` reads what was written after it.
    pub fn log_mark(&self, function: &str) -> LogMark {
        let files = self.log_files(function).into_iter().filter_map(|path| std::fs::metadata(path).ok());
        LogMark { files: files.map(|m| (m.ino(), m.len())).collect() }
    }

    /// A function's log files: the one set aside, then the current one.
    fn log_files(&self, function: &str) -> [PathBuf; 2] {
        let logs = self.data.join("fleet").join("logs");
        [logs.join(format!("{function}.log.1")), logs.join(format!("{function}.log"))]
    }

    /// What a function's instances logged since `mark` of the DynamoDB capacity their invocations consumed
    /// (the lines `shared::store::dynamo::capacity` writes): (read units, write units, invocations reported).
    /// A file the mark knows is read from where it ended, a new one whole. None when a file the mark knows
    /// is gone (the log was set aside twice since: lines were lost).
    pub fn logged_capacity(&self, function: &str, mark: &LogMark) -> Option<(f64, f64, u64)> {
        let mut total = (0.0, 0.0, 0);
        let mut seen = 0;
        for path in self.log_files(function) {
            let Ok(mut file) = std::fs::File::open(path) else { continue };
            let inode = file.metadata().map(|m| m.ino()).unwrap_or_default();
            let known = mark.files.iter().find(|(marked, _)| *marked == inode);
            seen += usize::from(known.is_some());
            let mut text = String::new();
            file.seek(SeekFrom::Start(known.map_or(0, |(_, offset)| *offset)))
                .and_then(|_| file.read_to_string(&mut text))
                .ok()?;
            for line in text.lines().filter(|l| l.contains("store capacity of the previous invocation")) {
                let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
                total.0 += event["fields"]["read_units"].as_f64().unwrap_or(0.0);
                total.1 += event["fields"]["write_units"].as_f64().unwrap_or(0.0);
                total.2 += 1;
            }
        }
        (seen == mark.files.len()).then_some(total)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the instances have Lambda's share of a vCPU (`FleetOptions::cpu_share`, where the machine allows).
    pub async fn cpu_share(&self) -> Result<bool, TestError> {
        let listing: Value = self.http.get(self.url("/_fleet")).send().await?.error_for_status()?.json().await?;
        Ok(listing["cpu_share"].as_bool().unwrap_or(false))
    }

    pub async fn instances(&self) -> Result<Vec<Instance>, TestError> {
        let listing: Value = self.http.get(self.url("/_fleet")).send().await?.error_for_status()?.json().await?;
        let listed = listing["instances"].as_array().ok_or("no instances listed")?;
        Ok(listed
            .iter()
            .filter_map(|i| {
                Some(Instance {
                    function: i["function"].as_str()?.to_owned(),
                    pid: i32::try_from(i["pid"].as_i64()?).ok()?,
                    state: i["state"].as_str()?.to_owned(),
                    init_ms: i["init_ms"].as_f64(),
                    first_call_ms: i["first_call_ms"].as_f64(),
                    peak_rss_kib: i["peak_rss_kib"].as_u64(),
                    cpu_ms: i["cpu_ms"].as_u64(),
                })
            })
            .collect())
    }

    /// The jobs function, run now as its schedule would; its report.
    pub async fn run_jobs(&self) -> Result<Value, TestError> {
        let answer = self.http.post(self.url("/_fleet/jobs")).send().await?;
        let status = answer.status();
        let report: Value = answer.json().await?;
        if !status.is_success() {
            return Err(format!("the jobs failed: {report}").into());
        }
        Ok(report)
    }

    /// The DynamoDB write counts since the last reset (`count_writes`).
    pub async fn writes(&self) -> Result<Value, TestError> {
        Ok(self.http.get(self.url("/_fleet/writes")).send().await?.error_for_status()?.json().await?)
    }

    pub async fn reset_writes(&self) -> Result<(), TestError> {
        self.http.post(self.url("/_fleet/writes/reset")).send().await?.error_for_status()?;
        Ok(())
    }

    /// Runs the jobs (every two seconds) until none of `users` holds anything, within `patience`; returns how
    /// long that took. A dead call is charged once silent for `heartbeats::SILENT_FOR`.
    pub async fn jobs_until_nothing_held(&self, users: &[String], patience: Duration) -> Result<Duration, TestError> {
        let started = std::time::Instant::now();
        while started.elapsed() < patience {
            self.run_jobs().await?;
            let mut held = 0;
            for user in users {
                held += self.checked_wallet(user).await?.1;
            }
            if held == 0 {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Err(format!("money still held {patience:?} after the calls").into())
    }

    /// Calls the model stand-in took (its own count).
    pub async fn upstream_served(&self) -> Result<u64, TestError> {
        let served: Value =
            self.http.get(self.url("/_fleet/upstream")).send().await?.error_for_status()?.json().await?;
        Ok(served["calls"].as_u64().ok_or("no count")?)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Result<Value, TestError> {
        let mut request = self.http.request(method, self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await?;
        let status = answer.status();
        let text = answer.text().await?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A customer as one becomes one (signup, the e-mail's link, KYC, a paid top-up of `rupees`), with an
    /// API key; returns (user id, API key).
    pub async fn customer(&self, email: &str, rupees: i64) -> Result<(String, String), TestError> {
        self.customer_with_key(email, rupees, json!({"name": "fleet"})).await
    }

    /// [`Fleet::customer`] whose key is created from `key` (`POST /v1/keys`'s body: its limits).
    pub async fn customer_with_key(&self, email: &str, rupees: i64, key: Value) -> Result<(String, String), TestError> {
        let password = CUSTOMER_PASSWORD;
        let signup = json!({"email": email, "password": password, "full_name": "Fleet Check", "date_of_birth": "1990-01-01", "accepted_terms_version": "2026-12-06"});
        let user = self.call(reqwest::Method::POST, "/v1/auth/signup", None, signup).await?;
        let user_id = user["id"].as_str().ok_or("no user id")?.to_owned();
        let login = self
            .call(reqwest::Method::POST, "/v1/auth/login", None, json!({"email": email, "password": password}))
            .await?;
        let token = login["token"].as_str().ok_or("no session token")?.to_owned();
        let link = self.verification_token(email).await?;
        self.call(reqwest::Method::POST, "/v1/auth/verify-email", None, json!({ "token": link })).await?;
        let n = self.documents.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + u64::from(std::process::id() % 1000) * 10;
        self.pass_kyc(&token, n).await?;
        // Every top-up is issued a receipt voucher: the account is billed somewhere first.
        let profile = json!({"billing_name": "Fleet Check", "address": "1 MG Road, Bengaluru", "state_code": "29", "pin": "560001"});
        self.call(reqwest::Method::PUT, "/v1/account/billing-profile", Some(&token), profile).await?;
        let topup = self
            .call(reqwest::Method::POST, "/v1/wallet/topups", Some(&token), json!({"amount_paise": rupees * 100}))
            .await?;
        let order = topup["razorpay_order_id"].as_str().ok_or("no order")?;
        self.call(reqwest::Method::POST, &format!("/_razorpay/dev/orders/{order}/pay"), None, json!({})).await?;
        let mut credited = false;
        for _ in polls() {
            let wallet = self.call(reqwest::Method::GET, "/v1/wallet", Some(&token), Value::Null).await?;
            if wallet["balance"].as_i64() == Some(rupees * shared::money::UNITS_PER_RUPEE) {
                credited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !credited {
            return Err(format!("the top-up of {email} was not credited within a minute").into());
        }
        let key = self.call(reqwest::Method::POST, "/v1/keys", Some(&token), key).await?;
        Ok((user_id, key["key"].as_str().ok_or("no key")?.to_owned()))
    }

    /// Has an account's data export built (`POST /v1/privacy/exports`, then its status until it is no longer
    /// pending), as its owner made by [`Fleet::customer`]: what it ended as (`ready`, `failed`) and how long that
    /// took.
    pub async fn export(&self, email: &str, patience: Duration) -> Result<(String, Duration), TestError> {
        let login = json!({"email": email, "password": CUSTOMER_PASSWORD});
        let token = self.call(reqwest::Method::POST, "/v1/auth/login", None, login).await?;
        let token = token["token"].as_str().ok_or("no session token")?;
        let started = std::time::Instant::now();
        let created = self.http.post(self.url("/v1/privacy/exports")).bearer_auth(token).send().await?;
        let created: Value = created.error_for_status()?.json().await?;
        let path = format!("/v1/privacy/exports/{}", created["id"].as_str().ok_or("no export id")?);
        while started.elapsed() < patience {
            let view = self.call(reqwest::Method::GET, &path, Some(token), Value::Null).await?;
            if let Some(status) = view["status"].as_str().filter(|s| *s != "pending") {
                return Ok((status.to_owned(), started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("the export {path} was still pending after {} s", patience.as_secs()).into())
    }

    /// Passes KYC as a customer does: the PAN (one the stand-in verifies: its last serial digit 0-3), then
    /// DigiLocker's consent page with its defaults, and the return to the API.
    async fn pass_kyc(&self, token: &str, n: u64) -> Result<(), TestError> {
        let pan = format!("FLEPT{:03}{}F", (n / 4) % 1000 + 1, n % 4);
        let kyc = json!({"pan": pan, "name_on_pan": "Fleet Check", "consent": true});
        self.call(reqwest::Method::POST, "/v1/kyc", Some(token), kyc).await?;
        let started = self.call(reqwest::Method::POST, "/v1/kyc/digilocker", Some(token), Value::Null).await?;
        let url = started["url"].as_str().ok_or("no DigiLocker url")?;
        let back = crate::kyc_standin::submit_defaults(&self.http, url, true).await?;
        let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        no_redirects.get(&back).send().await?;
        let kyc = self.call(reqwest::Method::GET, "/v1/kyc", Some(token), Value::Null).await?;
        if kyc["status"] != "verified" {
            return Err(format!("KYC not verified in the fleet: {kyc}").into());
        }
        Ok(())
    }

    async fn verification_token(&self, email: &str) -> Result<String, TestError> {
        for _ in polls() {
            let mail = self.call(reqwest::Method::GET, "/_mail", None, Value::Null).await?;
            let found =
                mail["data"].as_array().into_iter().flatten().find(|m| m["to"] == email && m["kind"] == "verify_email");
            if let Some(link) = found.and_then(|m| m["links"][0].as_str()) {
                return Ok(link.split_once("token=").ok_or("a link without a token")?.1.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("no verification e-mail for {email}").into())
    }

    /// Every item of a user's partition under `prefix`, page by page.
    async fn all(&self, user_id: &str, prefix: &str) -> Result<Vec<shared::store::Item>, TestError> {
        use shared::store::{ItemStore, Query, SortKeyRange, Table};
        let mut items = Vec::new();
        let mut after = None;
        loop {
            let query = Query::new(Table::Main, shared::accounts::user_pk(user_id))
                .range(SortKeyRange::Prefix(prefix.into()))
                .limit(1000)
                .after(after);
            let page = self.store.query(query).await?;
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// The wallet item's `balance` and `held`, after checking that the balance equals the sum of the ledger
    /// and that `available` is the balance less what is held.
    pub async fn checked_wallet(&self, user_id: &str) -> Result<(i64, i64), TestError> {
        use shared::store::{ItemStore, Table};
        let mut sum = 0i64;
        for item in &self.all(user_id, shared::store::schema::prefix::LEDGER).await? {
            sum += item.record::<shared::wallet::LedgerEntry>()?.amount;
        }
        let pk = shared::accounts::user_pk(user_id);
        let wallet = self.store.get(Table::Main, &pk, shared::store::schema::sk::WALLET).await?.ok_or("no wallet")?;
        let number = |name: &str| wallet.attrs.get(name).and_then(Value::as_i64).unwrap_or(0);
        if number("balance") != sum || number("available") != number("balance") - number("held") {
            return Err(format!("the wallet disagrees with its ledger (sum {sum}): {wallet:?}").into());
        }
        Ok((number("balance"), number("held")))
    }

    /// The account's usage entries (one per charged call).
    pub async fn usage(&self, user_id: &str) -> Result<Vec<shared::usage::UsageRecord>, TestError> {
        let mut records = Vec::new();
        for item in &self.all(user_id, shared::store::schema::prefix::USAGE).await? {
            records.push(item.record::<shared::usage::UsageRecord>()?);
        }
        Ok(records)
    }
}

/// Polls for up to a minute.
fn polls() -> impl Iterator<Item = ()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    std::iter::from_fn(move || (std::time::Instant::now() < deadline).then_some(()))
}

/// A valid Aadhaar number: `first11` followed by its Verhoeff check digit.
pub fn aadhaar_with_check_digit(first11: u64) -> String {
    (0..10)
        .map(|d| format!("{first11}{d}"))
        .find(|candidate| shared::kyc::documents::verhoeff_valid(candidate))
        .unwrap_or_default()
}
