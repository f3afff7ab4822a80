//! What every handler gets: the store, the configuration, the clock and the KYC keys, built once per
//! process (once per Lambda cold start) and shared by reference.

use std::path::Path;
use std::sync::Arc;

use crate::blobs::{BlobStore, LocalBlobs, S3Blobs};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, var};
use crate::error::ApiError;
use crate::kyc::vault::{DataKeys, Fingerprinter, KmsDataKeys, LocalDataKeys, load_or_create_key_file};
use crate::razorpay::{RazorpayClient, RazorpayConfig};
use crate::secrets::SecretString;
use crate::store::ItemStore;
use crate::store::dynamo::{DynamoStore, TableNames};
use crate::store::sqlite::SqliteStore;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The keys KYC needs: the envelope-encryption provider for the vault and the fingerprint key.
pub struct KycKeys {
    pub data_keys: Arc<dyn DataKeys>,
    pub fingerprinter: Fingerprinter,
}

impl KycKeys {
    /// Keys that live only as long as the process: for tests.
    pub fn ephemeral() -> Self {
        let mut master = [0u8; 32];
        let mut fingerprint = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut master);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fingerprint);
        Self {
            data_keys: Arc::new(LocalDataKeys::new(master)),
            fingerprinter: Fingerprinter::new(fingerprint.to_vec()),
        }
    }

    /// The embedded default: key files under `dir`, created on first run.
    pub fn from_key_files(dir: &Path) -> Result<Self, BoxError> {
        let master = LocalDataKeys::from_key_file(&dir.join("vault-master.key"))?;
        let fingerprint = load_or_create_key_file(&dir.join("kyc-fingerprint.key"))?;
        Ok(Self { data_keys: Arc::new(master), fingerprinter: Fingerprinter::new(fingerprint.to_vec()) })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ItemStore>,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    /// Present where KYC numbers are handled (the kyc function, the local server); absent elsewhere.
    pub kyc_keys: Option<Arc<KycKeys>>,
    /// Present where payments are handled (wallet, webhook, jobs, the local server).
    pub razorpay: Option<Arc<RazorpayClient>>,
    /// Present where raw payloads are archived (webhook, the local server).
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// Present where inference is served (the inference function, the local server).
    pub gateway: Option<Arc<crate::inference::Gateway>>,
}

impl AppState {
    pub fn new(store: Arc<dyn ItemStore>, config: Config, clock: Arc<dyn Clock>) -> Self {
        Self { store, config: Arc::new(config), clock, kyc_keys: None, razorpay: None, blobs: None, gateway: None }
    }

    pub fn with_kyc_keys(mut self, keys: KycKeys) -> Self {
        self.kyc_keys = Some(Arc::new(keys));
        self
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

    /// Production wiring: configuration from the environment, DynamoDB tables named by
    /// `INFEREX_MAIN_TABLE` / `INFEREX_VAULT_TABLE`, and KYC keys when `INFEREX_KMS_KEY_ID` and
    /// `INFEREX_KYC_FINGERPRINT_SECRET` are set (template.yaml sets them only for functions that need them).
    pub async fn for_lambda() -> Result<Self, BoxError> {
        let config = Config::from_env()?;
        let tables = TableNames {
            main: var::<String>("INFEREX_MAIN_TABLE")?.unwrap_or_else(|| "inferex-main".into()),
            vault: var::<String>("INFEREX_VAULT_TABLE")?.unwrap_or_else(|| "inferex-vault".into()),
        };
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), tables, Arc::clone(&clock));
        let mut state = Self::new(Arc::new(store), config, clock);
        if let (Some(key_id), Some(secret)) =
            (var::<String>("INFEREX_KMS_KEY_ID")?, var::<String>("INFEREX_KYC_FINGERPRINT_SECRET")?)
        {
            state = state.with_kyc_keys(KycKeys {
                data_keys: Arc::new(KmsDataKeys::new(aws_sdk_kms::Client::new(&aws), key_id)),
                fingerprinter: Fingerprinter::new(secret.into_bytes()),
            });
        }
        let razorpay = match var::<String>("RAZORPAY_SECRET_ARN")? {
            Some(arn) => Some(razorpay_config_from_secret(&aws, &arn).await?),
            None => RazorpayConfig::from_env()?,
        };
        if let Some(config) = razorpay {
            state = state.with_razorpay(RazorpayClient::new(config)?);
        }
        if let Some(bucket) = var::<String>("INFEREX_BLOB_BUCKET")? {
            state = state.with_blobs(Arc::new(S3Blobs::new(aws_sdk_s3::Client::new(&aws), bucket)));
        }
        Ok(state)
    }

    /// Local wiring: the embedded SQLite store and local key files in `data_dir` (created if missing);
    /// blob download links point at `public_base` (the local server's address).
    pub fn embedded(data_dir: &Path, config: Config, public_base: &str) -> Result<(Self, SqliteStore), BoxError> {
        std::fs::create_dir_all(data_dir)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = SqliteStore::open(&data_dir.join("inferex.sqlite3"), Arc::clone(&clock))?;
        let keys = KycKeys::from_key_files(&data_dir.join("keys"))?;
        let state = Self::new(Arc::new(store.clone()), config, clock).with_kyc_keys(keys).with_blobs(Arc::new(
            LocalBlobs::new(
                &data_dir.join("blobs"),
                public_base,
                load_or_create_key_file(&data_dir.join("keys").join("blob-links.key"))?.to_vec(),
            ),
        ));
        Ok((state, store))
    }
}

/// Reads Razorpay's credentials once per cold start from a Secrets Manager secret holding
/// `{"key_id": "...", "key_secret": "...", "webhook_secret": "..."}`; `RAZORPAY_API_BASE` still applies.
async fn razorpay_config_from_secret(aws: &aws_config::SdkConfig, arn: &str) -> Result<RazorpayConfig, BoxError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        key_id: String,
        key_secret: String,
        webhook_secret: String,
    }
    let out = aws_sdk_secretsmanager::Client::new(aws).get_secret_value().secret_id(arn).send().await?;
    let stored: Stored = serde_json::from_str(out.secret_string().ok_or("the Razorpay secret has no string value")?)?;
    Ok(RazorpayConfig {
        key_id: stored.key_id,
        key_secret: SecretString::new(stored.key_secret),
        webhook_secret: SecretString::new(stored.webhook_secret),
        api_base: var::<String>("RAZORPAY_API_BASE")?.unwrap_or_else(|| crate::razorpay::DEFAULT_API_BASE.into()),
    })
}
