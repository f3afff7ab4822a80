//! The storage port: a small key-value item store with the semantics every domain store relies on.
//!
//! Items live in logical tables and are addressed by a partition key (`pk`) and sort key (`sk`). The port
//! offers exactly what DynamoDB offers and SQLite can honour identically: conditional puts, updates and
//! deletes, all-or-nothing multi-item writes, ordered queries within one partition, and expiry through
//! `expires_at` (epoch seconds). An item whose `expires_at` is at or before "now" is treated as absent by
//! every read *and* every condition, even before the backend physically deletes it.
//!
//! Two adapters implement it: [`dynamo::DynamoStore`] (production) and [`sqlite::SqliteStore`] (embedded).
//! The domain stores (accounts, sessions, login records, ...) are written once on top of this port, so the
//! backends cannot drift; `tests/contract.rs` runs the same suite against both.

pub mod dynamo;
pub mod owners;
pub mod schema;
#[cfg(feature = "embedded")]
pub mod sqlite;

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// Attribute names the port manages itself; records must not use them as field names.
pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const EXPIRES_AT: &str = "expires_at";

/// Logical tables. Each maps to one physical DynamoDB table (named by configuration) or one SQLite table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Accounts, sessions, login records, KYC status and everything else that is not a secret.
    Main,
    /// The KYC vault: envelope-encrypted PAN and Aadhaar numbers, apart from everything else (UIDAI's
    /// Aadhaar Data Vault rule), readable only by the functions that need the numbers.
    Vault,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Main, Table::Vault];

    /// Stable logical name, used as the SQLite table name and as the default DynamoDB table suffix.
    pub fn logical_name(self) -> &'static str {
        match self {
            Table::Main => "main",
            Table::Vault => "vault",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A write's condition did not hold (for a transaction: one of its operations' conditions).
    #[error("condition failed")]
    ConditionFailed,
    /// A stored item could not be decoded into the requested record type.
    #[error("stored item is malformed: {0}")]
    Malformed(String),
    /// The backend failed (network, throttling after retries, I/O).
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One stored item: its key, its attributes (a JSON object; no floats are ever written) and its expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub attrs: Map<String, Value>,
    pub expires_at: Option<i64>,
}

impl Item {
    /// Builds an item from a serialisable record. Null attributes are dropped so that both backends store
    /// the same thing (DynamoDB would otherwise keep NULL values).
    pub fn from_record<T: Serialize>(
        pk: impl Into<String>,
        sk: impl Into<String>,
        record: &T,
        expires_at: Option<i64>,
    ) -> StoreResult<Self> {
        let value = serde_json::to_value(record).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let Value::Object(mut attrs) = value else {
            return Err(StoreError::Malformed("a record must serialise to an object".into()));
        };
        attrs.retain(|_, v| !v.is_null());
        for reserved in [PK, SK, EXPIRES_AT] {
            attrs.remove(reserved);
        }
        Ok(Self { pk: pk.into(), sk: sk.into(), attrs, expires_at })
    }

    /// Decodes the attributes into a record type.
    pub fn record<T: DeserializeOwned>(&self) -> StoreResult<T> {
        serde_json::from_value(Value::Object(self.attrs.clone()))
            .map_err(|e| StoreError::Malformed(format!("{}/{}: {e}", self.pk, self.sk)))
    }

    pub fn is_live(&self, now: i64) -> bool {
        is_live(self.expires_at, now)
    }
}

/// An item is live while it has no expiry or its expiry lies in the future.
pub fn is_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|at| at > now)
}

/// A condition a write requires of the item it targets, evaluated against the *live* item (an expired
/// item counts as absent).
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// No requirement.
    Always,
    /// The item must not exist (or must have expired).
    NotExists,
    /// The item must exist and be live.
    Exists,
    /// The item must exist, be live and have this attribute equal to the value.
    AttrEquals(String, Value),
    /// The item must exist, be live and have this numeric attribute greater than or equal to the bound.
    AttrAtLeast(String, i64),
    /// The item must be absent (or expired), or be live with this attribute equal to the value:
    /// "nobody else holds it".
    AbsentOrEquals(String, Value),
    /// The item must exist and be live, and this attribute be absent or equal to the value: "not flagged".
    AttrAbsentOrEquals(String, Value),
    /// All of these.
    All(Vec<Condition>),
}

impl Condition {
    /// Evaluates the condition against the current live item (None when absent or expired).
    pub fn holds(&self, live: Option<&Item>) -> bool {
        match self {
            Condition::Always => true,
            Condition::NotExists => live.is_none(),
            Condition::Exists => live.is_some(),
            Condition::AttrEquals(name, expected) => {
                live.and_then(|item| attr(item, name)).is_some_and(|actual| actual == *expected)
            }
            Condition::AttrAtLeast(name, bound) => {
                live.and_then(|item| attr(item, name)).and_then(|v| v.as_i64()).is_some_and(|n| n >= *bound)
            }
            Condition::AbsentOrEquals(name, expected) => {
                live.is_none_or(|item| attr(item, name).is_some_and(|actual| actual == *expected))
            }
            Condition::AttrAbsentOrEquals(name, expected) => {
                live.is_some_and(|item| attr(item, name).is_none_or(|actual| actual == *expected))
            }
            Condition::All(all) => all.iter().all(|c| c.holds(live)),
        }
    }
}

fn attr(item: &Item, name: &str) -> Option<Value> {
    match name {
        PK => Some(Value::String(item.pk.clone())),
        SK => Some(Value::String(item.sk.clone())),
        EXPIRES_AT => item.expires_at.map(Value::from),
        _ => item.attrs.get(name).cloned(),
    }
}

/// What a conditional write's result means when its condition failing is an answer, not an error.
pub trait Conditional<T> {
    /// `Some(value)` when the write happened, `None` when its condition did not hold.
    fn applied(self) -> StoreResult<Option<T>>;
    /// Done either way: the write happened, or its condition says it was not needed.
    fn or_not_needed(self) -> StoreResult<()>;
}

impl<T> Conditional<T> for StoreResult<T> {
    fn applied(self) -> StoreResult<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn or_not_needed(self) -> StoreResult<()> {
        self.applied().map(|_| ())
    }
}

/// DynamoDB rejects a transaction that touches one item twice; both adapters check it the same way.
pub(crate) fn ensure_distinct_items(ops: &[WriteOp]) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if !seen.insert(op_key(op)) {
            return Err(StoreError::Backend("a transaction may touch each item only once".into()));
        }
    }
    if ops.len() > 100 {
        return Err(StoreError::Backend("a transaction may hold at most 100 operations".into()));
    }
    Ok(())
}

fn op_key(op: &WriteOp) -> (Table, &str, &str) {
    match op {
        WriteOp::Put(p) => (p.table, p.item.pk.as_str(), p.item.sk.as_str()),
        WriteOp::Update(u) => (u.table, u.pk.as_str(), u.sk.as_str()),
        WriteOp::Delete(d) => (d.table, d.pk.as_str(), d.sk.as_str()),
        WriteOp::Check(c) => (c.table, c.pk.as_str(), c.sk.as_str()),
    }
}

/// A write of a whole item.
#[derive(Debug, Clone)]
pub struct Put {
    pub table: Table,
    pub item: Item,
    pub condition: Condition,
}

/// What an update does to `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiryChange {
    #[default]
    Keep,
    Set(i64),
    Clear,
}

/// An in-place change of an existing live item. Updates never create items: a missing or expired item
/// fails the update with [`StoreError::ConditionFailed`], in addition to `condition`.
#[derive(Debug, Clone)]
pub struct Update {
    pub table: Table,
    pub pk: String,
    pub sk: String,
    /// Attributes to overwrite.
    pub set: Map<String, Value>,
    /// Numeric attributes to increment (a missing attribute counts as 0).
    pub add: Vec<(String, i64)>,
    /// Attributes to remove.
    pub remove: Vec<String>,
    pub expiry: ExpiryChange,
    pub condition: Condition,
}

impl Update {
    pub fn new(table: Table, pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            table,
            pk: pk.into(),
            sk: sk.into(),
            set: Map::new(),
            add: Vec::new(),
            remove: Vec::new(),
            expiry: ExpiryChange::Keep,
            condition: Condition::Always,
        }
    }

    pub fn set(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.set.insert(name.to_owned(), value.into());
        self
    }

    pub fn add(mut self, name: &str, delta: i64) -> Self {
        self.add.push((name.to_owned(), delta));
        self
    }

    pub fn remove(mut self, name: &str) -> Self {
        self.remove.push(name.to_owned());
        self
    }

    pub fn expiry(mut self, change: ExpiryChange) -> Self {
        self.expiry = change;
        self
    }

    pub fn when(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Applies the update to a copy of the live item (the embedded backend's implementation, and the
    /// reference semantics for the DynamoDB expression).
    pub fn apply_to(&self, live: &Item) -> Item {
        let mut next = live.clone();
        for (name, value) in &self.set {
            next.attrs.insert(name.clone(), value.clone());
        }
        for (name, delta) in &self.add {
            let current = next.attrs.get(name).and_then(Value::as_i64).unwrap_or(0);
            next.attrs.insert(name.clone(), Value::from(current.saturating_add(*delta)));
        }
        for name in &self.remove {
            next.attrs.remove(name);
        }
        match self.expiry {
            ExpiryChange::Keep => {}
            ExpiryChange::Set(at) => next.expires_at = Some(at),
            ExpiryChange::Clear => next.expires_at = None,
        }
        next
    }
}

/// Deletion of an item (deleting an absent item succeeds when the condition allows it).
#[derive(Debug, Clone)]
pub struct Delete {
    pub table: Table,
    pub pk: String,
    pub sk: String,
    pub condition: Condition,
}

/// A condition on an item that the transaction does not otherwise write.
#[derive(Debug, Clone)]
pub struct Check {
    pub table: Table,
    pub pk: String,
    pub sk: String,
    pub condition: Condition,
}

/// One operation of an all-or-nothing write. At most one operation per item (a DynamoDB rule).
#[derive(Debug, Clone)]
pub enum WriteOp {
    Put(Put),
    Update(Update),
    Delete(Delete),
    Check(Check),
}

/// Which sort keys a query selects within its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKeyRange {
    All,
    Prefix(String),
    /// Inclusive lower bound.
    AtLeast(String),
    /// Inclusive on both ends.
    Between(String, String),
}

impl SortKeyRange {
    pub fn contains(&self, sk: &str) -> bool {
        match self {
            SortKeyRange::All => true,
            SortKeyRange::Prefix(p) => sk.starts_with(p.as_str()),
            SortKeyRange::AtLeast(lo) => sk >= lo.as_str(),
            SortKeyRange::Between(lo, hi) => sk >= lo.as_str() && sk <= hi.as_str(),
        }
    }
}

/// Every item `query` matches, page after page: for ranges that stay small (one account's sessions,
/// exports, consents), never for a whole table.
pub async fn all_pages<S: ItemStore + ?Sized>(store: &S, query: Query) -> StoreResult<Vec<Item>> {
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let page = store.query(query.clone().after(after)).await?;
        items.extend(page.items);
        after = page.next;
        if after.is_none() {
            return Ok(items);
        }
    }
}

/// Every item of a user's partition under a sort-key `prefix`, oldest first: what an owner lists of one
/// account (its consents, sessions, ledger, for an export or after a closure). Small per account.
pub async fn user_items<S: ItemStore + ?Sized>(store: &S, user_id: &str, prefix: &str) -> StoreResult<Vec<Item>> {
    let query = Query::new(Table::Main, schema::user_pk(user_id)).range(SortKeyRange::Prefix(prefix.into())).limit(500);
    all_pages(store, query).await
}

/// The key of an item a DynamoDB stream record says was inserted (the main table's stream is KEYS_ONLY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertedKey {
    /// The record's sequence number: what a partial batch failure reports back.
    pub sequence: String,
    pub pk: String,
    pub sk: String,
}

/// The inserted keys of a DynamoDB stream event in Lambda's format (`Records[].dynamodb.Keys`), in order;
/// records of other events (MODIFY, REMOVE) and malformed ones are left out.
pub fn stream_inserts(event: &Value) -> Vec<InsertedKey> {
    let records = event.get("Records").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    records
        .iter()
        .filter(|record| record.get("eventName").and_then(Value::as_str) == Some("INSERT"))
        .filter_map(|record| {
            let change = record.get("dynamodb")?;
            let key =
                |name: &str| change.pointer(&format!("/Keys/{name}/S")).and_then(Value::as_str).map(str::to_owned);
            Some(InsertedKey {
                sequence: change.get("SequenceNumber")?.as_str()?.to_owned(),
                pk: key(PK)?,
                sk: key(SK)?,
            })
        })
        .collect()
}

/// A query of one partition, ordered by sort key.
#[derive(Debug, Clone)]
pub struct Query {
    pub table: Table,
    pub pk: String,
    pub range: SortKeyRange,
    /// Descending sort-key order when true.
    pub newest_first: bool,
    /// Maximum number of items to examine (1..=1000).
    pub limit: u32,
    /// Continue after this sort key (from a previous page's `next`).
    pub after: Option<String>,
}

impl Query {
    pub fn new(table: Table, pk: impl Into<String>) -> Self {
        Self { table, pk: pk.into(), range: SortKeyRange::All, newest_first: false, limit: 100, after: None }
    }

    pub fn range(mut self, range: SortKeyRange) -> Self {
        self.range = range;
        self
    }

    pub fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit.clamp(1, 1000);
        self
    }

    pub fn after(mut self, sort_key: Option<String>) -> Self {
        self.after = sort_key;
        self
    }
}

/// A page of live items. `next` is set when the page was full: more items may follow after that sort key.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<String>,
}

/// A page of a whole table's live items in key order; `next` (the last item's `(pk, sk)`) is set when the
/// page was full.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    pub items: Vec<Item>,
    pub next: Option<(String, String)>,
}

/// The storage port. Every method sees only live items; see the module documentation.
#[async_trait]
pub trait ItemStore: Send + Sync {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> StoreResult<Option<Item>>;
    async fn put(&self, put: Put) -> StoreResult<()>;
    /// Returns the item as it is after the update.
    async fn update(&self, update: Update) -> StoreResult<Item>;
    async fn delete(&self, delete: Delete) -> StoreResult<()>;
    async fn query(&self, query: Query) -> StoreResult<Page>;
    /// Reads a whole table a page at a time (at most `limit` items after `after`): only for one-off
    /// migrations, which keep their place between pages.
    async fn scan(&self, table: Table, limit: u32, after: Option<(String, String)>) -> StoreResult<ScanPage>;
    /// Applies every operation or none. Fails with [`StoreError::ConditionFailed`] if any condition fails.
    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()>;
}
