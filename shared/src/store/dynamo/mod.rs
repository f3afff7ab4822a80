//! Production adapter of the storage port: DynamoDB through aws-sdk-dynamodb and serde_dynamo.
//!
//! Conditions become condition expressions, every read is strongly consistent and filters out items whose
//! `expires_at` has passed (DynamoDB's TTL deletes them only within days), and multi-item writes use
//! `TransactWriteItems`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType,
    ReturnConsumedCapacity, ReturnValue, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};

use super::{
    Delete, EXPIRES_AT, Item, ItemStore, PK, Page, Put, Query, SK, SortKeyRange, StoreError, StoreResult, Table,
    Update, WriteOp,
};
use crate::clock::Clock;

pub mod capacity;
mod expressions;
use expressions::{Expr, decode, encode, key, update_parts};

type AttrMap = HashMap<String, AttributeValue>;

/// Physical DynamoDB table names for the logical tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub main: String,
    pub vault: String,
}

impl TableNames {
    /// `<prefix>-main`, ...: the naming used by tests and local setups.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            main: format!("{prefix}-{}", Table::Main.logical_name()),
            vault: format!("{prefix}-{}", Table::Vault.logical_name()),
        }
    }

    pub fn name(&self, table: Table) -> &str {
        match table {
            Table::Main => &self.main,
            Table::Vault => &self.vault,
        }
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
    clock: Arc<dyn Clock>,
}

fn backend<E: std::fmt::Debug>(e: E) -> StoreError {
    StoreError::Backend(format!("{e:?}"))
}

/// Maps a failed condition expression to [`StoreError::ConditionFailed`], anything else to a backend error.
fn conditional<T, E, R>(result: Result<T, SdkError<E, R>>) -> StoreResult<T>
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match result {
        Ok(value) => Ok(value),
        Err(SdkError::ServiceError(e)) if e.err().code() == Some("ConditionalCheckFailedException") => {
            capacity::refused_writes(1);
            Err(StoreError::ConditionFailed)
        }
        Err(e) => Err(backend(e)),
    }
}

/// Whether a single write failed because its item was in another transaction's hands.
fn in_a_transaction<T, E: ProvideErrorMetadata, R>(result: &Result<T, SdkError<E, R>>) -> bool {
    matches!(result, Err(SdkError::ServiceError(e)) if e.err().code() == Some("TransactionConflictException"))
}

/// Waits before the `attempt`th retry of a conflicting write, with jitter so that contenders do not collide
/// again in lock step.
async fn conflict_backoff(attempt: u32) {
    let jitter = u64::from(rand::random::<u8>() % 20);
    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt) + jitter)).await;
}

/// A client for DynamoDB Local or another emulator at `endpoint`, with throwaway credentials.
pub fn local_client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("local", "local", None, None, "local"))
        .build();
    Client::from_conf(config)
}

/// Creates the tables (idempotently) with the same key schema and TTL attribute as template.yaml.
pub async fn create_tables(client: &Client, tables: &TableNames) -> StoreResult<()> {
    for table in Table::ALL {
        let name = tables.name(table);
        let created = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(PK)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(backend)?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(SK)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(backend)?,
            )
            .key_schema(
                KeySchemaElement::builder().attribute_name(PK).key_type(KeyType::Hash).build().map_err(backend)?,
            )
            .key_schema(
                KeySchemaElement::builder().attribute_name(SK).key_type(KeyType::Range).build().map_err(backend)?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => continue,
            Err(e) => return Err(backend(e)),
        }
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder().attribute_name(EXPIRES_AT).enabled(true).build().map_err(backend)?,
            )
            .send()
            .await
            .map_err(backend)?;
    }
    Ok(())
}

impl DynamoStore {
    pub fn new(client: Client, tables: TableNames, clock: Arc<dyn Clock>) -> Self {
        Self { client, tables, clock }
    }

    /// Every stored item, expired or not, by scanning each table: for audits and tests only.
    pub async fn dump(&self) -> StoreResult<Vec<Item>> {
        let mut all = Vec::new();
        for table in Table::ALL {
            let mut start = None;
            loop {
                let out = self
                    .client
                    .scan()
                    .table_name(self.table(table))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(backend)?;
                for map in out.items.unwrap_or_default() {
                    all.push(decode(map)?);
                }
                start = out.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(all)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn table(&self, table: Table) -> &str {
        self.tables.name(table)
    }

    fn transact_item(&self, op: &WriteOp, now: i64) -> StoreResult<TransactWriteItem> {
        use aws_sdk_dynamodb::types as t;
        let item = match op {
            WriteOp::Put(put) => {
                let mut expr = Expr::default();
                let condition = expr.condition(&put.condition, now)?;
                let built = t::Put::builder()
                    .table_name(self.table(put.table))
                    .set_item(Some(encode(&put.item)?))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(backend)?;
                TransactWriteItem::builder().put(built).build()
            }
            WriteOp::Update(update) => {
                let parts = update_parts(update, now)?;
                let built = t::Update::builder()
                    .table_name(self.table(update.table))
                    .set_key(Some(key(&update.pk, &update.sk)))
                    .update_expression(parts.update_expression)
                    .condition_expression(parts.condition_expression)
                    .set_expression_attribute_names(parts.expr.names())
                    .set_expression_attribute_values(parts.expr.values())
                    .build()
                    .map_err(backend)?;
                TransactWriteItem::builder().update(built).build()
            }
            WriteOp::Delete(delete) => {
                let mut expr = Expr::default();
                let condition = expr.condition(&delete.condition, now)?;
                let built = t::Delete::builder()
                    .table_name(self.table(delete.table))
                    .set_key(Some(key(&delete.pk, &delete.sk)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(backend)?;
                TransactWriteItem::builder().delete(built).build()
            }
            WriteOp::Check(check) => {
                let mut expr = Expr::default();
                // A check that requires nothing still needs an expression; "Always" is trivially true.
                let condition = expr
                    .condition(&check.condition, now)?
                    .unwrap_or_else(|| format!("attribute_exists({0}) OR attribute_not_exists({0})", expr.name(PK)));
                let built = ConditionCheck::builder()
                    .table_name(self.table(check.table))
                    .set_key(Some(key(&check.pk, &check.sk)))
                    .condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(backend)?;
                TransactWriteItem::builder().condition_check(built).build()
            }
        };
        Ok(item)
    }
}

/// How many times a transaction cancelled by a conflicting concurrent transaction is retried.
const CONFLICT_RETRIES: u32 = 6;

#[async_trait]
impl ItemStore for DynamoStore {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(self.table(table))
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        capacity::read(out.consumed_capacity());
        let now = self.clock.now_epoch();
        match out.item {
            Some(map) => {
                let item = decode(map)?;
                Ok(item.is_live(now).then_some(item))
            }
            None => Ok(None),
        }
    }

    async fn put(&self, put: Put) -> StoreResult<()> {
        let mut expr = Expr::default();
        let condition = expr.condition(&put.condition, self.clock.now_epoch())?;
        let result = self
            .client
            .put_item()
            .table_name(self.table(put.table))
            .set_item(Some(encode(&put.item)?))
            .set_condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        conditional(result).map(|out| capacity::write(out.consumed_capacity()))
    }

    async fn update(&self, update: Update) -> StoreResult<Item> {
        let mut attempt = 0;
        loop {
            let parts = update_parts(&update, self.clock.now_epoch())?;
            let result = self
                .client
                .update_item()
                .table_name(self.table(update.table))
                .set_key(Some(key(&update.pk, &update.sk)))
                .update_expression(parts.update_expression)
                .condition_expression(parts.condition_expression)
                .set_expression_attribute_names(parts.expr.names())
                .set_expression_attribute_values(parts.expr.values())
                .return_values(ReturnValue::AllNew)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            // An item in another transaction's hands refuses single writes for that moment (the SDK does
            // not retry it): tried again, as a conflicting transaction is.
            if in_a_transaction(&result) && attempt < CONFLICT_RETRIES {
                attempt += 1;
                conflict_backoff(attempt).await;
                continue;
            }
            let out = conditional(result)?;
            capacity::write(out.consumed_capacity());
            return decode(out.attributes.unwrap_or_default());
        }
    }

    async fn delete(&self, delete: Delete) -> StoreResult<()> {
        let mut expr = Expr::default();
        let condition = expr.condition(&delete.condition, self.clock.now_epoch())?;
        let result = self
            .client
            .delete_item()
            .table_name(self.table(delete.table))
            .set_key(Some(key(&delete.pk, &delete.sk)))
            .set_condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        conditional(result).map(|out| capacity::write(out.consumed_capacity()))
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        let mut expr = Expr::default();
        let pk_name = expr.name(PK);
        let pk_value = expr.value(AttributeValue::S(query.pk.clone()));
        let mut key_condition = format!("{pk_name} = {pk_value}");
        let sk_name = if query.range == SortKeyRange::All { String::new() } else { expr.name(SK) };
        match &query.range {
            SortKeyRange::All => {}
            SortKeyRange::Prefix(prefix) => {
                let v = expr.value(AttributeValue::S(prefix.clone()));
                key_condition.push_str(&format!(" AND begins_with({sk_name}, {v})"));
            }
            SortKeyRange::AtLeast(lo) => {
                let v = expr.value(AttributeValue::S(lo.clone()));
                key_condition.push_str(&format!(" AND {sk_name} >= {v}"));
            }
            SortKeyRange::Between(lo, hi) => {
                let lo = expr.value(AttributeValue::S(lo.clone()));
                let hi = expr.value(AttributeValue::S(hi.clone()));
                key_condition.push_str(&format!(" AND {sk_name} BETWEEN {lo} AND {hi}"));
            }
        }
        let live = expr.live(self.clock.now_epoch());
        let filter = live.strip_prefix('(').and_then(|f| f.strip_suffix(')')).unwrap_or(&live).to_owned();
        let start = query.after.as_ref().map(|sk| key(&query.pk, sk));
        let out = self
            .client
            .query()
            .table_name(self.table(query.table))
            .key_condition_expression(key_condition)
            .filter_expression(filter)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .scan_index_forward(!query.newest_first)
            .limit(query.limit.clamp(1, 1000) as i32)
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        capacity::read(out.consumed_capacity());
        let items = out.items.unwrap_or_default().into_iter().map(decode).collect::<StoreResult<Vec<_>>>()?;
        let next = out.last_evaluated_key.and_then(|mut k| match k.remove(SK) {
            Some(AttributeValue::S(sk)) => Some(sk),
            _ => None,
        });
        Ok(Page { items, next })
    }

    async fn scan(&self, table: Table, limit: u32, after: Option<(String, String)>) -> StoreResult<super::ScanPage> {
        let mut expr = Expr::default();
        let live = expr.live(self.clock.now_epoch());
        let filter = live.strip_prefix('(').and_then(|f| f.strip_suffix(')')).unwrap_or(&live).to_owned();
        let out = self
            .client
            .scan()
            .table_name(self.table(table))
            .filter_expression(filter)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .limit(limit.clamp(1, 1000) as i32)
            .set_exclusive_start_key(after.map(|(pk, sk)| key(&pk, &sk)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        capacity::read(out.consumed_capacity());
        let items = out.items.unwrap_or_default().into_iter().map(decode).collect::<StoreResult<Vec<_>>>()?;
        let next = out.last_evaluated_key.and_then(|mut k| match (k.remove(PK), k.remove(SK)) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Some((pk, sk)),
            _ => None,
        });
        Ok(super::ScanPage { items, next })
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        super::ensure_distinct_items(&ops)?;
        let mut attempt = 0;
        loop {
            let now = self.clock.now_epoch();
            let items = ops.iter().map(|op| self.transact_item(op, now)).collect::<StoreResult<Vec<_>>>()?;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            let err = match result {
                Ok(out) => {
                    capacity::write_all(out.consumed_capacity());
                    return Ok(());
                }
                Err(err) => err,
            };
            let SdkError::ServiceError(service) = &err else {
                return Err(backend(err));
            };
            let service = service.err();
            let reasons: Vec<&str> = match service {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                    cancelled,
                ) => cancelled.cancellation_reasons().iter().filter_map(|r| r.code()).collect(),
                _ => Vec::new(),
            };
            if reasons.contains(&"ConditionalCheckFailed") {
                // Billed like the refused single write (see `capacity`), once per item it held.
                capacity::refused_writes(ops.len());
                return Err(StoreError::ConditionFailed);
            }
            let conflicted =
                reasons.contains(&"TransactionConflict") || service.code() == Some("TransactionInProgressException");
            if conflicted && attempt < CONFLICT_RETRIES {
                attempt += 1;
                conflict_backoff(attempt).await;
                continue;
            }
            return Err(backend(err));
        }
    }
}
