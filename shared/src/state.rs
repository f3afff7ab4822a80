//! What every handler gets: the store, the configuration and the clock, built once per process
//! (once per Lambda cold start) and shared by reference.

use std::path::Path;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, var};
use crate::store::ItemStore;
use crate::store::dynamo::{DynamoStore, TableNames};
use crate::store::sqlite::SqliteStore;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ItemStore>,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    pub fn new(store: Arc<dyn ItemStore>, config: Config, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            config: Arc::new(config),
            clock,
        }
    }

    /// Production wiring: configuration from the environment and DynamoDB tables named by
    /// `INFEREX_MAIN_TABLE` (set by template.yaml).
    pub async fn for_lambda() -> Result<Self, BoxError> {
        let config = Config::from_env()?;
        let tables = TableNames {
            main: var::<String>("INFEREX_MAIN_TABLE")?.unwrap_or_else(|| "inferex-main".into()),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = DynamoStore::new(
            DynamoStore::client_from_env().await,
            tables,
            Arc::clone(&clock),
        );
        Ok(Self::new(Arc::new(store), config, clock))
    }

    /// Local wiring: the embedded SQLite store in `data_dir` (created if missing).
    pub fn embedded(data_dir: &Path, config: Config) -> Result<(Self, SqliteStore), BoxError> {
        std::fs::create_dir_all(data_dir)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = SqliteStore::open(&data_dir.join("inferex.sqlite3"), Arc::clone(&clock))?;
        Ok((Self::new(Arc::new(store.clone()), config, clock), store))
    }
}
