//! Embedded adapter of the storage port: one SQLite file (WAL mode), one SQL table per logical table.
//!
//! All access goes through one connection behind a mutex, on tokio's blocking pool; every write runs in an
//! `IMMEDIATE` transaction, so conditions are checked and applied atomically, exactly like DynamoDB's
//! conditional writes and `TransactWriteItems`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{
    Condition, Delete, Item, ItemStore, Page, Put, Query, SortKeyRange, StoreError, StoreResult, Table, Update, WriteOp,
};
use crate::clock::Clock;

/// The write-ahead log's limit by default (see [`SqliteStore::open_with_log_limit`]).
pub const LOG_LIMIT_BYTES: u64 = 32 * 1024 * 1024;
/// SQLite's page size, which the log is counted in.
const PAGE_BYTES: u64 = 4096;
/// How long an operation waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    /// The database file (none for in-memory stores), for the background checkpointer's own connection.
    path: Option<std::path::PathBuf>,
    /// Past this many bytes of write-ahead log the checkpointer truncates it (see `spawn_checkpointer`).
    log_limit: u64,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn sql_table(table: Table) -> String {
    format!("items_{}", table.logical_name())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its tables, with the default log limit.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::open_with_log_limit(path, clock, LOG_LIMIT_BYTES)
    }

    /// Opens the database with a write-ahead log that stays near `log_limit` bytes however fast the writes
    /// come: the background checkpointer truncates it past the limit, and past twice the limit a commit
    /// checkpoints it itself (skipped while the checkpointer holds the checkpoint, so a burst can pass
    /// that for a moment; a full-speed test stays under five times the limit).
    pub fn open_with_log_limit(path: &Path, clock: Arc<dyn Clock>, log_limit: u64) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
        // Checkpoints (the only writes that wait for the disk) run on their own connection in the background
        // (`spawn_checkpointer`), not inside a request's commit while every other request waits for it;
        // only when the background falls behind, at one and a half times the limit, does a commit checkpoint
        // itself. With
        // this one connection doing every read and write, nothing else holds the log, so that checkpoint
        // completes and the next commit starts the log over, cut back to the limit.
        let hard_limit_pages = (3 * log_limit / 2 / PAGE_BYTES).max(1);
        conn.pragma_update(None, "wal_autocheckpoint", hard_limit_pages).map_err(backend)?;
        conn.pragma_update(None, "journal_size_limit", log_limit).map_err(backend)?;
        let mut store = Self::init(conn, clock)?;
        store.path = Some(path.to_owned());
        store.log_limit = log_limit;
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory(clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(backend)?, clock)
    }

    fn init(conn: Connection, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(32);
        for table in Table::ALL {
            let name = sql_table(table);
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {name} (
                    pk TEXT NOT NULL,
                    sk TEXT NOT NULL,
                    attrs TEXT NOT NULL,
                    expires_at INTEGER,
                    PRIMARY KEY (pk, sk)
                 ) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS {name}_expiry ON {name} (expires_at) WHERE expires_at IS NOT NULL;"
            ))
            .map_err(backend)?;
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)), clock, path: None, log_limit: LOG_LIMIT_BYTES })
    }

    /// Runs a single-item operation (a get or a write of at most 100 items). Uncontended, it takes
    /// microseconds (commits do not wait for the disk: checkpoints run in the background), so it runs in
    /// place rather than paying two thread hand-offs; when another caller holds the connection, the wait
    /// happens on the blocking pool.
    async fn with_item<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> StoreResult<T> + Send + 'static,
    {
        if let Ok(mut guard) = self.conn.try_lock() {
            return f(&mut guard, self.clock.now_epoch());
        }
        self.with_conn(f).await
    }

    /// Runs an operation of unbounded size (queries, purges, dumps) on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> StoreResult<T> + Send + 'static,
    {
        let now = self.clock.now_epoch();
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| backend("database lock poisoned"))?;
            f(&mut guard, now)
        })
        .await
        .map_err(backend)?
    }

    /// Physically deletes expired items; returns how many. Reads already ignore them.
    pub async fn purge_expired(&self) -> StoreResult<usize> {
        self.with_conn(|conn, now| {
            let mut removed = 0;
            for table in Table::ALL {
                removed += conn
                    .execute(
                        &format!("DELETE FROM {} WHERE expires_at IS NOT NULL AND expires_at <= ?1", sql_table(table)),
                        params![now],
                    )
                    .map_err(backend)?;
            }
            Ok(removed)
        })
        .await
    }

    /// Every stored row, expired or not: for audits and tests (e.g. "no plaintext secret anywhere").
    pub async fn dump(&self) -> StoreResult<Vec<Item>> {
        self.with_conn(|conn, _| {
            let mut all = Vec::new();
            for table in Table::ALL {
                let mut stmt = conn
                    .prepare(&format!("SELECT pk, sk, attrs, expires_at FROM {}", sql_table(table)))
                    .map_err(backend)?;
                let mut rows = stmt.query([]).map_err(backend)?;
                while let Some(row) = rows.next().map_err(backend)? {
                    let attrs: String = row.get(2).map_err(backend)?;
                    all.push(decode(
                        row.get(0).map_err(backend)?,
                        row.get(1).map_err(backend)?,
                        &attrs,
                        row.get(3).map_err(backend)?,
                    )?);
                }
            }
            Ok(all)
        })
        .await
    }

    /// Copies the write-ahead log into the database every `every`, on a second connection, so that commits
    /// never wait for a checkpoint's disk flush. A passive checkpoint does not block readers or the writer,
    /// but under steady writes it never catches up with the end of the log, so the log is never rewound
    /// and grows without end. So when the log file has grown past `log_limit` bytes, the checkpointer also
    /// takes the store's one connection for a moment (requests wait for it, as for any other operation)
    /// and finishes the checkpoint there, which truncates the log: the passive rounds have already copied
    /// all but the newest pages, so the pause is short. The log stays near the store's limit; past twice
    /// the limit, commits checkpoint it themselves (see `open_with_log_limit`). Stores without a file (in
    /// memory) have nothing to checkpoint: the task just ends.
    pub fn spawn_checkpointer(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        let log_limit = self.log_limit;
        crate::tasks::spawn("sqlite checkpointer", async move {
            let Some(path) = store.path.clone() else { return };
            let log = Self::log_path(&path);
            let conn = match Connection::open(&path) {
                Ok(conn) => Arc::new(Mutex::new(conn)),
                Err(e) => {
                    tracing::warn!(error = %e, "the checkpointer could not open the database");
                    return;
                }
            };
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let conn = Arc::clone(&conn);
                let passive = tokio::task::spawn_blocking(move || {
                    let guard = conn.lock().map_err(|_| backend("checkpointer lock poisoned"))?;
                    guard.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(backend)
                })
                .await;
                if let Ok(Err(e)) | Err(e) = passive.map_err(backend) {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
                if std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) <= log_limit {
                    continue;
                }
                let truncated = store
                    .with_conn(|conn, _| {
                        // Never wait under the store's lock for someone else's reader (a shell, a backup):
                        // a busy log is truncated at a later tick instead.
                        conn.busy_timeout(Duration::ZERO).map_err(backend)?;
                        // (busy, log pages, checkpointed pages): busy = 1 when it could not finish.
                        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0));
                        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
                        busy.map_err(backend)
                    })
                    .await;
                match truncated {
                    Ok(0) => tracing::debug!(log_limit, "write-ahead log checkpointed and truncated"),
                    Ok(_) => tracing::warn!(log_limit, "write-ahead log over its limit and still busy; retrying"),
                    Err(e) => tracing::warn!(error = %e, "truncating checkpoint failed"),
                }
            }
        })
    }

    /// The write-ahead log file beside a database file.
    fn log_path(database: &Path) -> std::path::PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push("-wal");
        std::path::PathBuf::from(name)
    }

    /// Purges expired items every `every` until the returned task is aborted.
    pub fn spawn_purger(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        crate::tasks::spawn("sqlite purger", async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                match store.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "purged expired items"),
                    Err(e) => tracing::warn!(error = %e, "purging expired items failed"),
                }
            }
        })
    }
}

/// The per-item statements, written out per table so that SQLite parses each once per connection
/// (`prepare_cached`) instead of once per call: the inference hot path runs them on every request.
mod statements {
    macro_rules! per_table {
        ($read:ident, $upsert:ident, $delete:ident, $table:literal) => {
            pub const $read: &str = concat!(
                "SELECT attrs, expires_at FROM ",
                $table,
                " WHERE pk = ?1 AND sk = ?2 AND (expires_at IS NULL OR expires_at > ?3)"
            );
            pub const $upsert: &str = concat!(
                "INSERT INTO ",
                $table,
                " (pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at"
            );
            pub const $delete: &str = concat!("DELETE FROM ", $table, " WHERE pk = ?1 AND sk = ?2");
        };
    }
    per_table!(READ_MAIN, UPSERT_MAIN, DELETE_MAIN, "items_main");
    per_table!(READ_VAULT, UPSERT_VAULT, DELETE_VAULT, "items_vault");
}

fn read_live(conn: &Connection, table: Table, pk: &str, sk: &str, now: i64) -> StoreResult<Option<Item>> {
    let row = conn
        .prepare_cached(match table {
            Table::Main => statements::READ_MAIN,
            Table::Vault => statements::READ_VAULT,
        })
        .and_then(|mut stmt| {
            stmt.query_row(params![pk, sk, now], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?)))
                .optional()
        })
        .map_err(backend)?;
    row.map(|(attrs, expires_at)| decode(pk.to_owned(), sk.to_owned(), &attrs, expires_at)).transpose()
}

fn decode(pk: String, sk: String, attrs: &str, expires_at: Option<i64>) -> StoreResult<Item> {
    let attrs: Map<String, Value> =
        serde_json::from_str(attrs).map_err(|e| StoreError::Malformed(format!("{pk}/{sk}: {e}")))?;
    Ok(Item { pk, sk, attrs, expires_at })
}

fn write_item(conn: &Connection, table: Table, item: &Item) -> StoreResult<()> {
    let attrs = serde_json::to_string(&item.attrs).map_err(backend)?;
    conn.prepare_cached(match table {
        Table::Main => statements::UPSERT_MAIN,
        Table::Vault => statements::UPSERT_VAULT,
    })
    .and_then(|mut stmt| stmt.execute(params![item.pk, item.sk, attrs, item.expires_at]))
    .map_err(backend)?;
    Ok(())
}

fn delete_row(conn: &Connection, table: Table, pk: &str, sk: &str) -> StoreResult<()> {
    conn.prepare_cached(match table {
        Table::Main => statements::DELETE_MAIN,
        Table::Vault => statements::DELETE_VAULT,
    })
    .and_then(|mut stmt| stmt.execute(params![pk, sk]))
    .map_err(backend)?;
    Ok(())
}

fn require(condition: &Condition, live: Option<&Item>) -> StoreResult<()> {
    if condition.holds(live) { Ok(()) } else { Err(StoreError::ConditionFailed) }
}

fn apply_put(conn: &Connection, put: &Put, now: i64) -> StoreResult<()> {
    let live = read_live(conn, put.table, &put.item.pk, &put.item.sk, now)?;
    require(&put.condition, live.as_ref())?;
    write_item(conn, put.table, &put.item)
}

fn apply_update(conn: &Connection, update: &Update, now: i64) -> StoreResult<Item> {
    let live = read_live(conn, update.table, &update.pk, &update.sk, now)?;
    let Some(live) = live else {
        return Err(StoreError::ConditionFailed);
    };
    require(&update.condition, Some(&live))?;
    let next = update.apply_to(&live);
    write_item(conn, update.table, &next)?;
    Ok(next)
}

fn apply_delete(conn: &Connection, delete: &Delete, now: i64) -> StoreResult<()> {
    let live = read_live(conn, delete.table, &delete.pk, &delete.sk, now)?;
    require(&delete.condition, live.as_ref())?;
    delete_row(conn, delete.table, &delete.pk, &delete.sk)
}

#[async_trait]
impl ItemStore for SqliteStore {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> StoreResult<Option<Item>> {
        let (pk, sk) = (pk.to_owned(), sk.to_owned());
        self.with_item(move |conn, now| read_live(conn, table, &pk, &sk, now)).await
    }

    async fn put(&self, put: Put) -> StoreResult<()> {
        self.with_item(move |conn, now| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            apply_put(&tx, &put, now)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn update(&self, update: Update) -> StoreResult<Item> {
        self.with_item(move |conn, now| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let item = apply_update(&tx, &update, now)?;
            tx.commit().map_err(backend)?;
            Ok(item)
        })
        .await
    }

    async fn delete(&self, delete: Delete) -> StoreResult<()> {
        self.with_item(move |conn, now| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            apply_delete(&tx, &delete, now)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.with_conn(move |conn, now| {
            let order = if query.newest_first { "DESC" } else { "ASC" };
            let after_op = if query.newest_first { "<" } else { ">" };
            let (lo, hi): (Option<String>, Option<String>) = match &query.range {
                SortKeyRange::All => (None, None),
                // Prefix ranges are filtered in Rust below; bounding by the prefix keeps the scan short.
                SortKeyRange::Prefix(p) => (Some(p.clone()), None),
                SortKeyRange::AtLeast(lo) => (Some(lo.clone()), None),
                SortKeyRange::Between(lo, hi) => (Some(lo.clone()), Some(hi.clone())),
            };
            let sql = format!(
                "SELECT sk, attrs, expires_at FROM {} WHERE pk = ?1
                 AND (?2 IS NULL OR sk >= ?2) AND (?3 IS NULL OR sk <= ?3)
                 AND (?4 IS NULL OR sk {after_op} ?4)
                 AND (expires_at IS NULL OR expires_at > ?5)
                 ORDER BY sk {order}",
                sql_table(query.table)
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            let mut rows = stmt.query(params![query.pk, lo, hi, query.after, now]).map_err(backend)?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                let sk: String = row.get(0).map_err(backend)?;
                if !query.range.contains(&sk) {
                    if query.newest_first {
                        continue;
                    }
                    // Ascending past the prefix: nothing further can match.
                    break;
                }
                let attrs: String = row.get(1).map_err(backend)?;
                let expires_at: Option<i64> = row.get(2).map_err(backend)?;
                items.push(decode(query.pk.clone(), sk, &attrs, expires_at)?);
                if items.len() as u32 >= query.limit {
                    break;
                }
            }
            let next = if items.len() as u32 >= query.limit { items.last().map(|i| i.sk.clone()) } else { None };
            Ok(Page { items, next })
        })
        .await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        super::ensure_distinct_items(&ops)?;
        self.with_item(move |conn, now| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            for op in &ops {
                match op {
                    WriteOp::Put(put) => apply_put(&tx, put, now)?,
                    WriteOp::Update(update) => {
                        apply_update(&tx, update, now)?;
                    }
                    WriteOp::Delete(delete) => apply_delete(&tx, delete, now)?,
                    WriteOp::Check(check) => {
                        let live = read_live(&tx, check.table, &check.pk, &check.sk, now)?;
                        require(&check.condition, live.as_ref())?;
                    }
                }
            }
            // Dropping the transaction on any error above rolls every operation back.
            tx.commit().map_err(backend)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn rows_in_main_file(path: &Path) -> StoreResult<i64> {
        // A copy of the database file alone (no write-ahead log) holds only what was checkpointed.
        let copy = path.with_extension("copy");
        std::fs::copy(path, &copy).map_err(backend)?;
        // Before the first checkpoint the file does not even hold the table yet.
        let count = Connection::open(&copy)
            .and_then(|c| {
                let tables: i64 =
                    c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'items_main'", [], |row| row.get(0))?;
                if tables == 0 { Ok(0) } else { c.query_row("SELECT count(*) FROM items_main", [], |row| row.get(0)) }
            })
            .map_err(backend);
        let _ = std::fs::remove_file(&copy);
        count
    }

    #[tokio::test]
    async fn commits_leave_checkpoints_to_the_background_checkpointer() -> StoreResult<()> {
        const ROWS: i64 = 400;
        let dir = std::env::temp_dir().join(format!("inferex-wal-{}", crate::secrets::random_suffix()));
        std::fs::create_dir_all(&dir).map_err(backend)?;
        let path = dir.join("store.sqlite3");
        let store = SqliteStore::open(&path, Arc::new(SystemClock))?;
        // About 1,500 pages of log: past SQLite's default automatic checkpoint (1,000 pages).
        let mut attrs = Map::new();
        attrs.insert("padding".into(), Value::String("x".repeat(12_000)));
        for i in 0..ROWS {
            let item = Item { pk: format!("P#{i}"), sk: "S".into(), attrs: attrs.clone(), expires_at: None };
            store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
        }
        assert_eq!(rows_in_main_file(&path)?, 0, "no commit checkpointed on its own");
        // The log (some 5 MB) is under the default limit: only the background checkpointer copies it.
        let checkpointer = store.spawn_checkpointer(Duration::from_millis(20));
        let mut rows = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // A copy taken while the checkpointer writes the file can be torn: that only means "not yet".
            rows = rows_in_main_file(&path).unwrap_or(-1);
            if rows == ROWS {
                break;
            }
        }
        checkpointer.abort();
        assert_eq!(rows, ROWS, "the checkpointer copied every committed row into the database file");
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    /// Steady writes keep a passive checkpoint from ever reaching the end of the log (without a bound this
    /// test's log passes 50 MB); the log still stays within twice its limit, and nothing committed is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_steady_writes() -> StoreResult<()> {
        const LIMIT: u64 = 1024 * 1024;
        const WRITES: usize = 3_000;
        let dir = std::env::temp_dir().join(format!("inferex-wal-bound-{}", crate::secrets::random_suffix()));
        std::fs::create_dir_all(&dir).map_err(backend)?;
        let path = dir.join("store.sqlite3");
        let store = SqliteStore::open_with_log_limit(&path, Arc::new(SystemClock), LIMIT)?;
        let log = SqliteStore::log_path(&path);
        let checkpointer = store.spawn_checkpointer(Duration::from_millis(10));
        let mut attrs = Map::new();
        attrs.insert("padding".into(), Value::String("x".repeat(2_000)));
        let mut largest = 0;
        for i in 0..WRITES {
            let item =
                Item { pk: format!("P#{}", i % 500), sk: format!("S#{i}"), attrs: attrs.clone(), expires_at: None };
            store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
            largest = largest.max(std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0));
            if i % 100 == 0 {
                // Lets the checkpointer run between bursts, as a server's other tasks would.
                tokio::task::yield_now().await;
            }
        }
        checkpointer.abort();
        assert!(largest < 5 * LIMIT, "the log reached {largest} bytes (limit {LIMIT})");
        let count = store
            .with_conn(|conn, _| {
                conn.query_row("SELECT count(*) FROM items_main", [], |r| r.get::<_, i64>(0)).map_err(backend)
            })
            .await?;
        assert_eq!(count, WRITES as i64, "every commit is still there");
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}
