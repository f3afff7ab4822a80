//! End-to-end harness: the composed API (every function's routes, exactly as `make run` serves them) on a
//! real loopback socket, over the embedded store or DynamoDB Local, with a controllable clock.
//! Our own components are never replaced; only time is controlled.

use std::net::SocketAddr;
use std::sync::Arc;

use dev_server::kyc_standin::KycStandIn;
use dev_server::razorpay_standin::{self, StandIn, StandInConfig};
use dev_server::upstream_standin::{self, Upstream};
use shared::blobs::{BlobStore, LocalBlobs};
use shared::catalog::Catalog;
use shared::clock::ManualClock;
use shared::config::Config;
use shared::inference::{Gateway, Provider, Providers};
use shared::notifications::delivery::FileMailer;
use shared::notifications::mime;
use shared::razorpay::{RazorpayClient, RazorpayConfig};
use shared::secrets::SecretString;
use shared::state::AppState;
use shared::store::dynamo::DynamoStore;
use shared::store::sqlite::SqliteStore;
use shared::store::{Item, ItemStore};
use shared::testing;

mod accounts;
mod billing;
mod kyc;
mod logs;
mod mail;
mod operators;
mod pdf;
mod stores;

pub use kyc::valid_pan;

use logs::capture_logs;
pub use logs::{captured_logs, mentions};
pub use mail::Mail;
pub use operators::{EVERY_ROLE, operators_secret};
pub use pdf::pdf_text;
pub use stores::{CountingStore, Fault, FaultyStore, Gate, GatedStore};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Polls of something a background task (a settlement, an export, a keeper) makes true: as many as fit in a
/// generous minute, the loop body sleeping between them. A busy machine schedules the task late; a test's
/// verdict never depends on how late.
pub fn polls() -> impl Iterator<Item = ()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    std::iter::from_fn(move || (std::time::Instant::now() < deadline).then_some(()))
}

/// Asserts an answer in our error shape: its status, `code` and `param` (`None`: no param).
pub async fn expect_error(
    response: reqwest::Response,
    status: reqwest::StatusCode,
    code: &str,
    param: Option<&str>,
) -> TestResult {
    error_body(response, status, code, param).await.map(|_| ())
}

/// As [`expect_error`], returning the body.
pub async fn error_body(
    response: reqwest::Response,
    status: reqwest::StatusCode,
    code: &str,
    param: Option<&str>,
) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
    let actual = response.status();
    let body: serde_json::Value = response.json().await?;
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"]["code"], serde_json::json!(code), "{body}");
    assert_eq!(body["error"]["param"], serde_json::json!(param), "{body}");
    Ok(body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    DynamoDb,
}

/// The concrete store behind a test API, for what only the adapter offers (dumps, purges).
pub enum RawStore {
    Embedded(SqliteStore),
    DynamoDb(DynamoStore),
}

/// A running API, with a Razorpay stand-in wired to it (webhooks go to the API's webhook URL).
pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub state: AppState,
    pub razorpay: StandIn,
    /// The KYC provider's stand-in (Cashfree's wire format).
    pub kyc: KycStandIn,
    /// The model providers' stand-ins: every model routes to cerebras first, then neevcloud.
    pub cerebras: Upstream,
    pub neevcloud: Upstream,
    /// The local mail service (`.eml` files), as under `make run`.
    pub mailbox: FileMailer,
    raw: RawStore,
    servers: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) documents: std::sync::atomic::AtomicU64,
    pub(crate) authenticators: operators::Authenticators,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// Razorpay test credentials shared by the stand-in and the API under test.
pub const RAZORPAY_KEY_ID: &str = "rzp_test_e2e";
pub const RAZORPAY_KEY_SECRET: &str = "inferex_test_key_secret";
pub const RAZORPAY_WEBHOOK_SECRET: &str = "inferex_test_webhook_secret";

/// A valid Aadhaar number: `first11` followed by its Verhoeff check digit.
pub use dev_server::fleet::harness::aadhaar_with_check_digit;
/// How long the API waits for the KYC provider in the tests (a stand-in set slower than this is "slow").
pub const KYC_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The KYC provider's test credentials, shared by its stand-in and the API under test.
pub const CASHFREE_CLIENT_ID: &str = "CF_e2e_client_0001";
pub const CASHFREE_CLIENT_SECRET: &str = "cfsk_e2e_client_secret_000000000000";

/// A mailbox of its own, in a new folder.
fn fresh_mailbox() -> FileMailer {
    FileMailer::new(std::env::temp_dir().join(format!("inferex-e2e-mail-{}", shared::secrets::random_suffix())))
}

async fn serve(app: axum::Router) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = shared::tasks::spawn("test", async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Ok((addr, server))
}

/// A fresh store on the backend: a new SQLite file, or new tables on DynamoDB Local.
async fn store_on(backend: Backend, clock: &Arc<ManualClock>) -> Result<(Arc<dyn ItemStore>, RawStore), String> {
    Ok(match backend {
        Backend::Embedded => {
            let s = testing::sqlite_store(clock.clone())?;
            (Arc::new(s.clone()), RawStore::Embedded(s))
        }
        Backend::DynamoDb => {
            let s = testing::dynamo_store(clock.clone()).await?;
            (Arc::new(s.clone()), RawStore::DynamoDb(s))
        }
    })
}

/// Where export files go: a folder served by the API under `addr`, or a bucket on moto's S3.
async fn blobs_on(backend: Backend, addr: SocketAddr) -> Result<Arc<dyn BlobStore>, String> {
    Ok(match backend {
        Backend::Embedded => {
            let dir = std::env::temp_dir().join(format!("inferex-e2e-blobs-{}", shared::secrets::random_suffix()));
            Arc::new(LocalBlobs::new(&dir, format!("http://{addr}"), shared::secrets::random_token().into_bytes()))
        }
        Backend::DynamoDb => Arc::new(testing::moto_s3_blobs().await?),
    })
}

/// The built-in catalogue over the providers' stand-ins, with a short key cache (revocation tests wait it out).
fn gateway_to(providers_at: [(&str, SocketAddr); 2]) -> Result<Gateway, String> {
    let mut providers = Providers::default();
    for (name, addr) in providers_at {
        providers.insert(Provider { name: name.into(), base_url: format!("http://{addr}"), api_key: None });
    }
    let catalog = Catalog::builtin().map_err(|e| e.to_string())?;
    Ok(Gateway::new(catalog, providers)
        .map_err(|e| e.to_string())?
        .with_key_cache_ttl(std::time::Duration::from_millis(300)))
}

impl TestApi {
    pub async fn start(backend: Backend) -> Result<Self, String> {
        Self::start_with(backend, Config::default()).await
    }

    pub async fn start_with(backend: Backend, config: Config) -> Result<Self, String> {
        capture_logs();
        // Controlled from the real current time: tests move it forward, and whatever a test expects to
        // find never carries an expiry that is already past for the emulators' own clocks.
        let clock = ManualClock::starting_now();
        let shared_clock = Arc::new(clock.clone());
        let (store, raw) = store_on(backend, &shared_clock).await?;
        // The API listens first, so that the stand-in knows where to deliver webhooks and download links
        // point at it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let blobs = blobs_on(backend, addr).await?;
        let razorpay = StandIn::new(StandInConfig {
            key_id: RAZORPAY_KEY_ID.into(),
            key_secret: RAZORPAY_KEY_SECRET.into(),
            webhook_secret: RAZORPAY_WEBHOOK_SECRET.into(),
            webhook_url: Some(format!("http://{addr}/v1/webhooks/razorpay")),
        });
        let (standin_addr, standin_server) = serve(razorpay_standin::router(razorpay.clone())).await?;
        let client = RazorpayClient::new(RazorpayConfig {
            key_id: RAZORPAY_KEY_ID.into(),
            key_secret: SecretString::new(RAZORPAY_KEY_SECRET),
            webhook_secret: SecretString::new(RAZORPAY_WEBHOOK_SECRET),
            api_base: format!("http://{standin_addr}"),
        })
        .map_err(|e| e.to_string())?;
        let (kyc, kyc_provider, kyc_server) = kyc::provider_standin(shared_clock.clone()).await?;
        let cerebras = Upstream::new(std::time::Duration::ZERO);
        let neevcloud = Upstream::new(std::time::Duration::ZERO);
        let (cerebras_addr, cerebras_server) = serve(upstream_standin::router(cerebras.clone())).await?;
        let (neevcloud_addr, neevcloud_server) = serve(upstream_standin::router(neevcloud.clone())).await?;
        let gateway = gateway_to([("cerebras", cerebras_addr), ("neevcloud", neevcloud_addr)])?;
        let mut config = config;
        config.public_url = format!("http://{addr}");
        // The supplier `make run` has (Karnataka, 29), unless the test names another.
        config.supplier = config.supplier.or_else(|| Some(shared::config::Supplier::sample()));
        let mailbox = fresh_mailbox();
        let state = AppState::new(store, config, shared_clock)
            .with_kyc_keys(shared::state::KycKeys::ephemeral())
            .with_razorpay(client)
            .with_kyc_provider(Arc::new(kyc_provider))
            .with_blobs(blobs)
            .with_gateway(gateway);
        let app = dev_server::app(state.clone()).nest("/_mail", dev_server::mailbox::router(mailbox.clone()));
        let server = shared::tasks::spawn("test", async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        let http = reqwest::Client::builder().user_agent("e2e-tests/1.0").build().map_err(|e| e.to_string())?;
        Ok(Self {
            base: format!("http://{addr}"),
            http,
            clock,
            state,
            razorpay,
            kyc,
            cerebras,
            neevcloud,
            mailbox,
            raw,
            servers: vec![server, standin_server, kyc_server, cerebras_server, neevcloud_server],
            documents: std::sync::atomic::AtomicU64::new(0),
            authenticators: operators::Authenticators::default(),
        })
    }

    /// Adds `rupees` to a signed-in user's wallet the way a customer does: a top-up, a captured payment at
    /// the Razorpay stand-in and its signed webhook.
    /// Returns the payment.
    pub async fn fund(
        &self,
        token: &str,
        rupees: i64,
    ) -> Result<shared::razorpay::Payment, Box<dyn std::error::Error + Send + Sync>> {
        let order = self.open_topup(token, rupees * 100).await?;
        let payment = self.razorpay.pay(&order, "captured", None).ok_or("unknown order")?;
        self.razorpay.deliver(&self.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
        Ok(payment)
    }

    /// Opens a top-up of `paise` through the API and returns its Razorpay order id (nothing is paid yet).
    /// Sets a billing profile first when the account has none.
    pub async fn open_topup(
        &self,
        token: &str,
        paise: i64,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        self.ensure_billing_profile(token).await?;
        let topup: serde_json::Value = self
            .http
            .post(self.url("/v1/wallet/topups"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "amount_paise": paise }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(topup["razorpay_order_id"].as_str().ok_or("no order id")?.to_owned())
    }

    /// Asserts the money invariant, the wallet balance equals the sum of its ledger, and returns the balance.
    pub async fn ledger_checked_balance(&self, user_id: &str) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
        use shared::wallet::WalletStore;
        let query = shared::store::Query::new(shared::store::Table::Main, format!("USER#{user_id}"))
            .range(shared::store::SortKeyRange::Prefix("LEDGER#".into()))
            .limit(1000);
        let mut sum = 0i64;
        for item in &self.state.store.query(query).await?.items {
            sum += item.record::<shared::wallet::LedgerEntry>()?.amount;
        }
        let balance = self.state.store.wallet(user_id).await?.balance;
        assert_eq!(balance, sum, "the balance must equal the ledger sum for {user_id}");
        Ok(balance)
    }

    /// What the account's budget leases reserve, and what its wallet holds for calls besides (`held` less
    /// the leases, which go back once idle); checks that `available` is the balance less everything held.
    pub async fn held_and_leased(&self, user_id: &str) -> Result<(i64, i64), Box<dyn std::error::Error + Send + Sync>> {
        let item = self
            .state
            .store
            .get(shared::store::Table::Main, &format!("USER#{user_id}"), "WALLET")
            .await?
            .ok_or("no wallet")?;
        let number = |name: &str| item.attrs.get(name).and_then(serde_json::Value::as_i64).unwrap_or(0);
        let leased: i64 = item
            .attrs
            .iter()
            .filter(|(name, _)| name.starts_with(shared::wallet::metering::LEASE_PREFIX))
            .filter_map(|(_, value)| value.as_i64())
            .sum();
        assert_eq!(number("available"), number("balance") - number("held"), "{item:?}");
        Ok((number("held") - leased, leased))
    }

    /// Creates an API key for a signed-in, verified user and returns the key itself.
    pub async fn create_key(
        &self,
        token: &str,
        name: &str,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let created: serde_json::Value = self
            .http
            .post(self.url("/v1/keys"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(created["key"].as_str().ok_or("no key in the answer")?.to_owned())
    }

    pub fn raw_store(&self) -> &RawStore {
        &self.raw
    }

    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        shared::clock::Clock::now(&self.clock)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every stored item (expired ones too) as JSON text, for "no secret in clear" checks.
    pub async fn dump(&self) -> Result<String, String> {
        let items: Vec<Item> = match &self.raw {
            RawStore::Embedded(s) => s.dump().await,
            RawStore::DynamoDb(s) => s.dump().await,
        }
        .map_err(|e| e.to_string())?;
        // The suite's date-independence, checked wherever a test looks at the store: DynamoDB Local deletes
        // items whose expiry is past on the real clock, whatever the test's clock says, so no item a test
        // wrote may carry one.
        let wall_clock = chrono::Utc::now().timestamp();
        if let Some(item) = items.iter().find(|i| i.expires_at.is_some_and(|at| at <= wall_clock)) {
            return Err(format!(
                "{} {} expires at {:?}, already past on the real clock (now {wall_clock}): DynamoDB Local's TTL \
                 sweeper may delete it mid-test; start the test's clock from the real current time",
                item.pk, item.sk, item.expires_at
            ));
        }
        Ok(items
            .iter()
            .map(|i| format!("{} {} {} {:?}", i.pk, i.sk, serde_json::Value::Object(i.attrs.clone()), i.expires_at))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    pub async fn signup(&self, email: &str, password: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .post(self.url("/v1/auth/signup"))
            .json(&serde_json::json!({
                "email": email,
                "password": password,
                "full_name": "Asha Rao",
                "date_of_birth": "1990-04-12",
                "accepted_terms_version": shared::config::DEFAULT_POLICY_VERSION,
            }))
            .send()
            .await
    }

    /// Signs up, verifies the address through the verification e-mail and logs in a new user; returns (user
    /// id, session token).
    pub async fn signed_in(&self, email: &str) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
        let signed_in = self.unverified(email).await?;
        self.verify_email(email).await?;
        Ok(signed_in)
    }

    /// Signs up and logs in a new user whose address is not verified; returns (user id, session token).
    pub async fn unverified(&self, email: &str) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
        let password = "correct horse battery";
        let account: serde_json::Value = self.signup(email, password).await?.error_for_status()?.json().await?;
        let login: serde_json::Value = self.login(email, password).await?.error_for_status()?.json().await?;
        let id = account["id"].as_str().ok_or("signup returned no id")?.to_owned();
        let token = login["token"].as_str().ok_or("login returned no token")?.to_owned();
        Ok((id, token))
    }

    /// Delivers the outbox now (as the local server's task does) and returns the messages sent to `address`,
    /// newest first.
    pub async fn mail_to(&self, address: &str) -> Result<Vec<Mail>, Box<dyn std::error::Error + Send + Sync>> {
        dev_server::mailbox::deliver_now(&self.state, &self.mailbox).await;
        let mut found = Vec::new();
        for (_, raw) in self.mailbox.messages().await? {
            if mime::header(&raw, "To").as_deref() == Some(address) {
                found.push(Mail::parse(raw));
            }
        }
        Ok(found)
    }

    /// The newest message of `kind` sent to `address`.
    pub async fn last_mail(&self, address: &str, kind: &str) -> Result<Mail, Box<dyn std::error::Error + Send + Sync>> {
        let all = self.mail_to(address).await?;
        Ok(all.into_iter().find(|m| m.kind == kind).ok_or_else(|| format!("no {kind} message to {address}"))?)
    }

    /// Uses the verification link of the newest verification message to `address`.
    pub async fn verify_email(
        &self,
        address: &str,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let token = self.last_mail(address, "verify_email").await?.link_token().ok_or("no link")?;
        let answer = self.http.post(self.url("/v1/auth/verify-email")).json(&serde_json::json!({ "token": token }));
        Ok(answer.send().await?.error_for_status()?.json().await?)
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .post(self.url("/v1/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
    }
}

/// Generates one test per backend for each named async fn taking a [`Backend`].
#[macro_export]
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> $crate::TestResult {
                    super::$case($crate::Backend::Embedded).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> $crate::TestResult {
                    super::$case($crate::Backend::DynamoDb).await
                }
            )*
        }
    };
}

/// A call's usage record as a settlement writes it (request `id`, the stand-in's model), at `at`.
pub fn usage_record(
    id: &str,
    (prompt, completion): (u64, u64),
    at: chrono::DateTime<chrono::Utc>,
) -> shared::usage::UsageRecord {
    shared::usage::UsageRecord {
        id: id.into(),
        key_id: "key_test".into(),
        model: "llama-3.1-8b".into(),
        provider: "cerebras".into(),
        country: "US".into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cost: 0,
        latency_ms: 12,
        ttft_ms: None,
        status: "ok".into(),
        estimated: false,
        over_hold: 0,
        created_at: at,
    }
}
