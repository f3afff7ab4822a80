//! Support for tests that run against both storage backends (the contract suite and the end-to-end
//! tests). Not used by the functions themselves.

use std::sync::Arc;

use crate::clock::Clock;
use crate::secrets::random_suffix;
use crate::store::dynamo::{self, DynamoStore, TableNames};
use crate::store::sqlite::SqliteStore;

/// The variable `make test` sets to the address of the DynamoDB Local it started.
pub const DYNAMODB_ENDPOINT_VAR: &str = "INFEREX_TEST_DYNAMODB_ENDPOINT";

/// A fresh in-memory embedded store.
pub fn sqlite_store(clock: Arc<dyn Clock>) -> Result<SqliteStore, String> {
    SqliteStore::in_memory(clock).map_err(|e| e.to_string())
}

/// A DynamoDB store on freshly created, uniquely named tables in the DynamoDB Local that `make test`
/// started. Without it this is an error, never a silent skip: a backend test must not pass unrun.
pub async fn dynamo_store(clock: Arc<dyn Clock>) -> Result<DynamoStore, String> {
    let endpoint = std::env::var(DYNAMODB_ENDPOINT_VAR).map_err(|_| {
        format!("{DYNAMODB_ENDPOINT_VAR} is not set: run the tests with `make test`, which starts DynamoDB Local")
    })?;
    let client = dynamo::local_client(&endpoint);
    let tables = TableNames::with_prefix(&format!("test-{}", random_suffix()));
    dynamo::create_tables(&client, &tables)
        .await
        .map_err(|e| format!("creating tables at {endpoint}: {e}"))?;
    Ok(DynamoStore::new(client, tables, clock))
}
