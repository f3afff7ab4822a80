//! What every handler gets: the store, the configuration, the clock and the KYC keys, built once per
//! process (once per Lambda cold start) and shared by reference.

use std::sync::Arc;

use crate::blobs::{BlobStore, S3Blobs};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, var};
use crate::error::ApiError;
pub use crate::kyc::KycKeys;
use crate::kyc::cashfree::{Cashfree, CashfreeConfig};
use crate::kyc::vault::{Fingerprinter, KmsDataKeys};
use crate::operators::OperatorCredentials;
use crate::ports::Ports;
use crate::razorpay::{RazorpayClient, RazorpayConfig};
use crate::runtime_secrets::{self, EDGE_SECRET, Rotating, SecretRule, SecretSource, SecretsManagerSource};
use crate::secrets::SecretString;
use crate::store::ItemStore;
use crate::store::dynamo::{DynamoStore, TableNames};

pub use crate::error::BoxError;

#[derive(Clone)]
pub struct AppState {
    /// The store, the clock and the configuration, as the domain takes them (`&state.ports`); `state.store`,
    /// `state.clock` and `state.config` read through to them.
    pub ports: Ports,
    /// Present where KYC numbers are handled (the kyc function, the local server); absent elsewhere.
    pub kyc_keys: Option<Arc<KycKeys>>,
    /// Present where KYC checks are made (the kyc and jobs functions, the local server).
    pub kyc_provider: Option<Arc<dyn crate::kyc::KycProvider>>,
    /// Present where payments are handled (wallet, webhook, jobs, the local server).
    pub razorpay: Option<Arc<RazorpayClient>>,
    /// Present where raw payloads are archived (webhook, the local server).
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// Present where inference is served (the inference function, the local server).
    pub gateway: Option<Arc<crate::inference::Gateway>>,
    /// The operators' credentials (one per operator); while there are none the operator endpoints answer 404.
    pub operator_token: Option<Arc<Rotating<OperatorCredentials>>>,
    /// Where data exports are built: a task of this process, or (in AWS) the exports function.
    pub export_builds: crate::privacy::ExportBuilds,
    /// What CloudFront sends in `X-Inferex-Edge` (AWS only): with it, a request proves it came through our
    /// distribution, and the viewer's address CloudFront reports is believed (see `http::ClientInfo`).
    pub edge_secret: Option<Arc<Rotating<SecretString>>>,
}

impl AppState {
    /// The operator token, if any, is the configuration's (fixed); in AWS [`AppState::for_lambda`] reads
    /// it from Secrets Manager instead.
    pub fn new(store: Arc<dyn ItemStore>, config: Config, clock: Arc<dyn Clock>) -> Self {
        // Checked when the configuration was read (`Config::from_env`); tests build configurations with
        // short tokens, so no length is required here.
        let operator_token = config
            .admin_token
            .as_ref()
            .and_then(|raw| {
                match OperatorCredentials::parse_with(
                    "the operator credentials",
                    raw.expose(),
                    SecretRule { min_chars: 1, min_bits: 0 },
                ) {
                    Ok(credentials) => Some(credentials),
                    Err(e) => {
                        tracing::error!(error = %e, "operator credentials refused; the operator endpoints stay off");
                        None
                    }
                }
            })
            .map(|credentials| Arc::new(Rotating::fixed(credentials, Arc::clone(&clock))));
        Self {
            ports: Ports::new(store, clock, config),
            kyc_keys: None,
            kyc_provider: None,
            razorpay: None,
            blobs: None,
            gateway: None,
            operator_token,
            export_builds: crate::privacy::ExportBuilds::default(),
            edge_secret: None,
        }
    }

    /// A fixed edge secret (tests; in AWS [`AppState::for_lambda`] reads it from Secrets Manager).
    pub fn with_edge_secret(mut self, secret: SecretString) -> Self {
        self.edge_secret = Some(Arc::new(Rotating::fixed(secret, Arc::clone(&self.clock))));
        self
    }

    pub fn with_kyc_keys(mut self, keys: KycKeys) -> Self {
        self.kyc_keys = Some(Arc::new(keys));
        self
    }

    pub fn with_kyc_provider(mut self, provider: Arc<dyn crate::kyc::KycProvider>) -> Self {
        self.kyc_provider = Some(provider);
        self
    }

    /// What the KYC workflow needs (ports, keys, provider), or a 500 where this function was deployed
    /// without them (a configuration error).
    pub fn kyc(&self) -> Result<crate::kyc::KycContext<'_>, ApiError> {
        let provider = self
            .kyc_provider
            .as_deref()
            .ok_or_else(|| ApiError::Internal("the KYC provider is not configured for this function".into()))?;
        Ok(crate::kyc::KycContext { ports: &self.ports, keys: self.kyc_keys()?, provider })
    }

    pub fn with_razorpay(mut self, client: RazorpayClient) -> Self {
        self.razorpay = Some(Arc::new(client));
        self
    }

    pub fn with_gateway(mut self, gateway: crate::inference::Gateway) -> Self {
        self.gateway = Some(Arc::new(gateway));
        self
    }

    pub fn gateway(&self) -> Result<&crate::inference::Gateway, ApiError> {
        self.gateway
            .as_deref()
            .ok_or_else(|| ApiError::Internal("inference is not configured for this function".into()))
    }

    /// After a change to an account's keys or limits: a gateway in this process (the local server's)
    /// forgets the account's cached keys, so the change applies to its next call. A Lambda function that
    /// changes keys serves no inference; the inference instances see the change when their key cache
    /// expires ([`crate::inference::KEY_CACHE_TTL`]).
    pub fn keys_changed(&self, user_id: &str) {
        if let Some(gateway) = self.gateway.as_deref() {
            gateway.forget_keys_of(user_id);
        }
    }

    pub fn with_blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// The KYC keys, or a 500 where this function was deployed without them (a configuration error).
    pub fn kyc_keys(&self) -> Result<&KycKeys, ApiError> {
        self.kyc_keys
            .as_deref()
            .ok_or_else(|| ApiError::Internal("KYC keys are not configured for this function".into()))
    }

    pub fn razorpay(&self) -> Result<&RazorpayClient, ApiError> {
        self.razorpay
            .as_deref()
            .ok_or_else(|| ApiError::Internal("Razorpay is not configured for this function".into()))
    }

    pub fn blobs(&self) -> Result<&dyn BlobStore, ApiError> {
        self.blobs
            .as_deref()
            .ok_or_else(|| ApiError::Internal("blob storage is not configured for this function".into()))
    }

    /// Production wiring. Configuration comes from the environment; secrets never do: each is read from
    /// Secrets Manager by the ARN its variable names, checked, and refreshed every few minutes; a secret
    /// in the environment, or a missing, empty, placeholder or short one, stops the function here.
    /// Capabilities, each present when its variables are set (template.yaml sets only what a function
    /// needs): DynamoDB tables `INFEREX_MAIN_TABLE` / `INFEREX_VAULT_TABLE`; the vault key
    /// `INFEREX_KMS_KEY_ID`; the KMS HMAC fingerprint key `INFEREX_FINGERPRINT_KEY_ID`; Razorpay
    /// `RAZORPAY_SECRET_ARN`; the KYC provider (Cashfree) `KYC_PROVIDER_SECRET_ARN` with `CASHFREE_API_BASE`;
    /// the operator token `INFEREX_OPERATOR_TOKEN_SECRET_ARN`; CloudFront's edge
    /// secret `INFEREX_EDGE_SECRET_ARN`; model providers
    /// `PROVIDER_KEYS_SECRET_ARN`; the blob bucket `INFEREX_BLOB_BUCKET`. Each function's `main` then
    /// checks with [`AppState::require`] that it has what it needs.
    pub async fn for_lambda() -> Result<Self, BoxError> {
        Self::for_lambda_optional(&[]).await
    }

    /// As [`AppState::for_lambda`], except that a secret of an `optional` capability that cannot be used
    /// (missing from Secrets Manager, malformed, weak) leaves that capability out, with an error logged,
    /// instead of stopping the start: the jobs function runs its other jobs, and the jobs that need it fail
    /// (and say so) until it is fixed. Only Razorpay and the KYC provider can be optional.
    pub async fn for_lambda_optional(optional: &[Capability]) -> Result<Self, BoxError> {
        if let Some(name) = runtime_secrets::secret_in_environment() {
            return Err(
                format!("{name} is set in the environment; in AWS secrets are read from Secrets Manager").into()
            );
        }
        let mut config = Config::from_env()?;
        config.kyc_mode = deployed_kyc_mode(var("KYC_MODE")?);
        let tables = TableNames {
            main: var::<String>("INFEREX_MAIN_TABLE")?.unwrap_or_else(|| "inferex-main".into()),
            vault: var::<String>("INFEREX_VAULT_TABLE")?.unwrap_or_else(|| "inferex-vault".into()),
        };
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), tables, Arc::clone(&clock));
        let mut state = Self::new(Arc::new(store), config, Arc::clone(&clock));
        // A frozen Lambda cannot finish a task after its answer: the table's stream starts the exports function.
        state.export_builds = crate::privacy::ExportBuilds::Queued;
        let kms = aws_sdk_kms::Client::new(&aws);
        if let Some(key_id) = var::<String>("INFEREX_KMS_KEY_ID")? {
            let fingerprinter =
                var::<String>("INFEREX_FINGERPRINT_KEY_ID")?.map(|mac_key| Fingerprinter::kms(kms.clone(), mac_key));
            state = state.with_kyc_keys(KycKeys { data_keys: Arc::new(KmsDataKeys::new(kms, key_id)), fingerprinter });
        }
        let secrets = aws_sdk_secretsmanager::Client::new(&aws);
        let loaded = LoadedSecrets::read(&secrets, &clock).await;
        state = state.with_secrets(loaded, optional)?;
        if let Some(bucket) = var::<String>("INFEREX_BLOB_BUCKET")? {
            state = state.with_blobs(Arc::new(S3Blobs::new(aws_sdk_s3::Client::new(&aws), bucket)));
        }
        Ok(state)
    }

    /// The capabilities the secrets read at the start give. One that cannot be used stops the start unless
    /// it is `optional` here (then it is left out, with an error logged).
    fn with_secrets(mut self, loaded: LoadedSecrets, optional: &[Capability]) -> Result<Self, BoxError> {
        match loaded.razorpay {
            Ok(Some(client)) => self = self.with_razorpay(client),
            Ok(None) => {}
            Err(e) if optional.contains(&Capability::Razorpay) => {
                tracing::error!(error = %e, "Razorpay's keys cannot be used; the jobs that need them fail until they are fixed");
            }
            Err(e) => return Err(e),
        }
        match loaded.kyc_provider {
            Ok(Some(provider)) => self = self.with_kyc_provider(provider),
            Ok(None) => {}
            Err(e) if optional.contains(&Capability::KycProvider) => {
                tracing::error!(error = %e, "the KYC provider's keys cannot be used; the KYC retries fail until they are fixed");
            }
            Err(e) => return Err(e),
        }
        self.operator_token = loaded.operator_token?.map(Arc::new);
        self.edge_secret = loaded.edge_secret?.map(Arc::new);
        if let Some(providers) = loaded.providers? {
            // A Lambda instance serves one call at a time and sleeps between calls: no leases.
            let gateway = crate::inference::Gateway::new(crate::catalog::Catalog::builtin()?, providers)?;
            self = self.with_gateway(gateway.one_call_at_a_time());
        }
        Ok(self)
    }

    /// A function's cold start: [`AppState::for_lambda`], then [`AppState::require`]. A failure is logged in
    /// one line and returned, so Lambda records an init error and the function serves nothing.
    pub async fn for_lambda_with(needs: &[Capability]) -> Result<Self, BoxError> {
        Self::for_lambda_with_optional(needs, &[]).await
    }

    /// As [`AppState::for_lambda_with`], with capabilities whose secret may be unusable at the start
    /// ([`AppState::for_lambda_optional`]).
    pub async fn for_lambda_with_optional(needs: &[Capability], optional: &[Capability]) -> Result<Self, BoxError> {
        let started = match Self::for_lambda_optional(optional).await {
            Ok(state) => state.require(needs).map(|()| state),
            Err(e) => Err(e),
        };
        if let Err(e) = &started {
            tracing::error!(error = %e, "refusing to start");
        }
        started
    }

    /// Stops a function at its cold start when it lacks a capability its routes need.
    pub fn require(&self, needs: &[Capability]) -> Result<(), BoxError> {
        for need in needs {
            let present = match need {
                Capability::Vault => self.kyc_keys.is_some(),
                Capability::Fingerprints => self.kyc_keys.as_ref().is_some_and(|k| k.fingerprinter.is_some()),
                Capability::Razorpay => self.razorpay.is_some(),
                Capability::KycProvider => self.kyc_provider.is_some(),
                Capability::OperatorToken => self.operator_token.is_some(),
                Capability::Gateway => self.gateway.is_some(),
                Capability::Blobs => self.blobs.is_some(),
                Capability::EdgeSecret => self.edge_secret.is_some(),
                Capability::Supplier => self.config.supplier.as_ref().is_some_and(crate::gst::supplier_is_valid),
            };
            if !present {
                return Err(format!("this function needs {}, which is not configured", need.describe()).into());
            }
        }
        Ok(())
    }

    /// Local wiring (feature `embedded`): the embedded SQLite store and local key files in `data_dir` (created if missing);
    /// blob download links point at `public_base` (the local server's address).
    #[cfg(feature = "embedded")]
    pub fn embedded(
        data_dir: &std::path::Path,
        config: Config,
        public_base: &str,
    ) -> Result<(Self, crate::store::sqlite::SqliteStore), BoxError> {
        std::fs::create_dir_all(data_dir)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = crate::store::sqlite::SqliteStore::open(&data_dir.join("inferex.sqlite3"), Arc::clone(&clock))?;
        let keys = KycKeys::from_key_files(&data_dir.join("keys"))?;
        let state = Self::new(Arc::new(store.clone()), config, clock).with_kyc_keys(keys).with_blobs(Arc::new(
            crate::blobs::LocalBlobs::new(
                &data_dir.join("blobs"),
                public_base,
                crate::kyc::vault::load_or_create_key_file(&data_dir.join("keys").join("blob-links.key"))?.to_vec(),
            ),
        ));
        Ok((state, store))
    }
}

/// The KYC provider as [`AppState::for_lambda`] makes it (from `KYC_PROVIDER_SECRET_ARN`), for the jobs
/// function to try again on each run while its keys are unusable; `None` when no secret is named.
pub async fn kyc_provider_from_environment(
    clock: Arc<dyn Clock>,
) -> Result<Option<Arc<dyn crate::kyc::KycProvider>>, BoxError> {
    let Some(arn) = var::<String>("KYC_PROVIDER_SECRET_ARN")? else { return Ok(None) };
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let source = Arc::new(SecretsManagerSource::new(aws_sdk_secretsmanager::Client::new(&aws), arn));
    kyc_provider_from(source, clock).await.map(Some)
}

/// The secrets a function's variables name, each read (and checked) at the start, all at once: a cold start
/// waits for the slowest of them, not for their sum. Each is `Ok(None)` when its variable is not set.
struct LoadedSecrets {
    razorpay: Result<Option<RazorpayClient>, BoxError>,
    kyc_provider: Result<Option<Arc<dyn crate::kyc::KycProvider>>, BoxError>,
    operator_token: Result<Option<Rotating<OperatorCredentials>>, BoxError>,
    edge_secret: Result<Option<Rotating<SecretString>>, BoxError>,
    providers: Result<Option<crate::inference::Providers>, BoxError>,
}

impl LoadedSecrets {
    async fn read(secrets: &aws_sdk_secretsmanager::Client, clock: &Arc<dyn Clock>) -> Self {
        let source =
            |arn: String| -> Arc<dyn SecretSource> { Arc::new(SecretsManagerSource::new(secrets.clone(), arn)) };
        let operator = |arn: String| {
            let parse = |raw: &str| OperatorCredentials::parse("the operator credentials", raw);
            Rotating::load(source(arn), parse, Arc::clone(clock))
        };
        let edge = |arn: String| {
            let parse = |raw: &str| runtime_secrets::checked("the CloudFront edge secret", raw, EDGE_SECRET);
            Rotating::load(source(arn), parse, Arc::clone(clock))
        };
        let (razorpay, kyc_provider, operator_token, edge_secret, providers) = tokio::join!(
            razorpay_from_secret(secrets, Arc::clone(clock)),
            named("KYC_PROVIDER_SECRET_ARN", |arn| kyc_provider_from(source(arn), Arc::clone(clock))),
            named("INFEREX_OPERATOR_TOKEN_SECRET_ARN", |arn| async { Ok(operator(arn).await?) }),
            named("INFEREX_EDGE_SECRET_ARN", |arn| async { Ok(edge(arn).await?) }),
            named("PROVIDER_KEYS_SECRET_ARN", |arn| {
                crate::inference::Providers::from_secret(source(arn), Arc::clone(clock))
            }),
        );
        Self { razorpay, kyc_provider, operator_token, edge_secret, providers }
    }
}

/// What `load` makes of the secret the variable `name` names, or `None` when it names none.
async fn named<T, F, Fut>(name: &str, load: F) -> Result<Option<T>, BoxError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, BoxError>>,
{
    match var::<String>(name)? {
        Some(arn) => load(arn).await.map(Some),
        None => Ok(None),
    }
}

/// The KYC provider (Cashfree) with the keys of its secret, checked and re-read every few minutes.
async fn kyc_provider_from(
    source: Arc<dyn SecretSource>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn crate::kyc::KycProvider>, BoxError> {
    let api_base = crate::kyc::cashfree::api_base()?;
    let parse = move |raw: &str| CashfreeConfig::from_secret_json("the KYC provider secret", raw, &api_base);
    let keys = Rotating::load(source, parse, Arc::clone(&clock)).await?;
    Ok(Arc::new(Cashfree::with_keys(keys, crate::kyc::cashfree::DEFAULT_ANSWER_TIMEOUT, clock)?))
}

/// Razorpay's client as [`AppState::for_lambda`] makes it, for the jobs function to try again on each run
/// while the keys are unusable: a secret filled or fixed after its start is taken without a redeploy.
pub async fn razorpay_from_environment(clock: Arc<dyn Clock>) -> Result<Option<RazorpayClient>, BoxError> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    razorpay_from_secret(&aws_sdk_secretsmanager::Client::new(&aws), clock).await
}

/// Razorpay's client with the keys of the secret `RAZORPAY_SECRET_ARN` names (checked, and re-read every few
/// minutes), or `None` when no secret is named.
async fn razorpay_from_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    clock: Arc<dyn Clock>,
) -> Result<Option<RazorpayClient>, BoxError> {
    let Some(arn) = var::<String>("RAZORPAY_SECRET_ARN")? else { return Ok(None) };
    let api_base = crate::razorpay::api_base()?;
    let parse = move |raw: &str| RazorpayConfig::from_secret_json("the Razorpay secret", raw, &api_base);
    let source = Arc::new(SecretsManagerSource::new(secrets.clone(), arn));
    let keys = Rotating::load(source, parse, clock).await?;
    Ok(Some(RazorpayClient::with_keys(keys)?))
}

/// Deployed, KYC waits for an operator unless automatic verification is asked for explicitly (locally the
/// default is `auto`, so `make run` needs no operator).
fn deployed_kyc_mode(explicit: Option<crate::config::KycMode>) -> crate::config::KycMode {
    explicit.unwrap_or(crate::config::KycMode::Manual)
}

impl std::ops::Deref for AppState {
    type Target = Ports;

    fn deref(&self) -> &Ports {
        &self.ports
    }
}

impl From<&AppState> for crate::privacy::PrivacyContext {
    fn from(state: &AppState) -> Self {
        Self {
            export_builds: state.export_builds,
            ports: state.ports.clone(),
            kyc_keys: state.kyc_keys.clone(),
            blobs: state.blobs.clone(),
        }
    }
}

impl From<&AppState> for Ports {
    fn from(state: &AppState) -> Self {
        state.ports.clone()
    }
}

/// What a function can need at its cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Vault,
    Fingerprints,
    Razorpay,
    KycProvider,
    OperatorToken,
    Gateway,
    Blobs,
    /// Functions that record the caller's address: without it, every browser behind CloudFront would be
    /// seen as one of CloudFront's own addresses.
    EdgeSecret,
    /// Functions that issue tax documents: our GSTIN, name and address (`INFEREX_SUPPLIER_*`).
    Supplier,
}

impl Capability {
    fn describe(self) -> &'static str {
        match self {
            Capability::Vault => "the vault key (INFEREX_KMS_KEY_ID)",
            Capability::Fingerprints => "the fingerprint key (INFEREX_FINGERPRINT_KEY_ID)",
            Capability::Razorpay => "Razorpay's keys (RAZORPAY_SECRET_ARN)",
            Capability::KycProvider => "the KYC provider's keys (KYC_PROVIDER_SECRET_ARN)",
            Capability::OperatorToken => "the operator token (INFEREX_OPERATOR_TOKEN_SECRET_ARN)",
            Capability::Gateway => "the model providers' keys (PROVIDER_KEYS_SECRET_ARN)",
            Capability::Blobs => "the blob bucket (INFEREX_BLOB_BUCKET)",
            Capability::EdgeSecret => "CloudFront's edge secret (INFEREX_EDGE_SECRET_ARN)",
            Capability::Supplier => "the supplier on tax documents (INFEREX_SUPPLIER_*, with a valid GSTIN)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KycMode;

    #[test]
    fn deployed_kyc_is_manual_unless_auto_is_asked_for() {
        assert_eq!(deployed_kyc_mode(None), KycMode::Manual);
        assert_eq!(deployed_kyc_mode(Some(KycMode::Auto)), KycMode::Auto);
        assert_eq!(Config::default().kyc_mode, KycMode::Auto, "make run verifies at once");
    }
}
