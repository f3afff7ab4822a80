//! Embedded adapter of the storage port: one SQLite file (WAL mode), one SQL table per logical table.
//!
//! All access goes through one connection behind a mutex. Every write runs in its own savepoint inside an
//! `IMMEDIATE` transaction, so its conditions are checked and applied atomically, exactly like DynamoDB's
//! conditional writes and `TransactWriteItems`; writes that arrive while another holds the connection are
//! committed together (see `SqliteStore::with_write`).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{Delete, Item, ItemStore, Page, Put, Query, SortKeyRange, StoreError, StoreResult, Table, Update, WriteOp};
use crate::clock::Clock;

mod background;
mod group_commit;
mod rows;
use rows::{apply_delete, apply_put, apply_update, decode, read_live, require};
#[cfg(test)]
mod tests;

pub use background::{Checkpointer, Round};

/// The write-ahead log's limit by default (see [`SqliteStore::open_with_log_limit`]). Each start-over holds
/// every request for a few milliseconds (docs/benchmarks.md): at 32 MiB that came seven times a second at
/// full rate, enough to put the p99 at 10 connections past 5 ms; at 128 MiB it comes about twice a second.
pub const LOG_LIMIT_BYTES: u64 = 40 * 1024 * 1024;
/// SQLite's page size, which the log is counted in.
const PAGE_BYTES: u64 = 4096;
/// How long an operation waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many writes share one transaction (a longer queue is committed in several).
pub const WRITES_PER_COMMIT: usize = 64;

/// A write waiting for the next group commit. It runs inside its own savepoint and says whether it
/// succeeded; its caller hears the outcome only once the group's transaction has committed (or failed).
type WaitingWrite = Box<dyn FnOnce(&Connection, i64) -> (bool, Answer) + Send>;
/// Hands a write's outcome to its caller, given how the group's commit went.
type Answer = Box<dyn FnOnce(StoreResult<()>) + Send>;

#[derive(Default)]
struct WriteQueue {
    writes: VecDeque<WaitingWrite>,
    /// A blocking-pool task is committing queued writes and will until the queue is empty: one such task
    /// at a time, rather than one per waiting write, each waking only to find its write done.
    committer_running: bool,
}

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Writes waiting for the connection: one per write started and not yet committed (a caller that
    /// stopped waiting leaves its write to run, as DynamoDB would), so bounded by the calls in flight.
    waiting: Arc<Mutex<WriteQueue>>,
    /// Transactions committed and the writes they held (two relaxed additions a transaction), for tests.
    commits: Arc<AtomicU64>,
    grouped_writes: Arc<AtomicU64>,
    /// Operations waiting on the blocking pool for the connection: the committer lets them in between
    /// groups (a plain mutex would let it take the connection straight back).
    others_waiting: Arc<AtomicUsize>,
    /// A failed transaction could not be rolled back, so the connection may still hold its writes: every
    /// operation refuses from then on rather than read or build on them (a restart recovers the file).
    broken: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    /// The database file (none for in-memory stores), for the background checkpointer's own connection.
    path: Option<std::path::PathBuf>,
    /// Past this many bytes of write-ahead log the checkpointer has it start over (see `spawn_checkpointer`).
    log_limit: u64,
    /// The write-ahead log file, and the size past which a commit has the log start over itself.
    log_file: Option<(std::path::PathBuf, u64)>,
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
    /// come: past the limit the background checkpointer has the log start over from its beginning, and
    /// should the background fall behind, past one and a half times the limit the committing writer does
    /// it itself.
    pub fn open_with_log_limit(path: &Path, clock: Arc<dyn Clock>, log_limit: u64) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
        // Checkpoints (the only writes that wait for the disk) run on their own connection in the background
        // (`spawn_checkpointer`), not inside a request's commit while every other request waits for it.
        // SQLite's own automatic checkpoint is passive: it only lets the log start over if no other
        // connection is checkpointing at that moment, a race the background checkpointer makes it lose
        // more often the longer the log grows. So commits enforce the hard limit themselves
        // (`enforce_log_limit`), with a checkpoint that always has the log start over.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(backend)?;
        let hard_limit_bytes = 3 * log_limit / 2;
        // The log is started over, not truncated (cutting a file of tens of MiB costs milliseconds on this
        // kind of disk, while every request waits), so its file keeps the largest size it reached; one
        // that grew past the hard limit in a burst is cut back to it when the log next starts over.
        conn.pragma_update(None, "journal_size_limit", hard_limit_bytes).map_err(backend)?;
        let mut store = Self::init(conn, clock)?;
        store.path = Some(path.to_owned());
        store.log_limit = log_limit;
        store.log_file = Some((Self::log_path(path), hard_limit_bytes));
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
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            waiting: Arc::default(),
            commits: Arc::default(),
            grouped_writes: Arc::default(),
            others_waiting: Arc::default(),
            broken: Arc::default(),
            clock,
            path: None,
            log_limit: LOG_LIMIT_BYTES,
            log_file: None,
        })
    }

    /// Runs a single-item read. Uncontended, it takes microseconds, so it runs in place rather than paying
    /// two thread hand-offs; when another caller holds the connection, the wait happens on the blocking pool.
    async fn with_item<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> StoreResult<T> + Send + 'static,
    {
        self.usable()?;
        if let Ok(mut guard) = self.conn.try_lock() {
            return f(&mut guard, self.clock.now_epoch());
        }
        self.with_conn(f).await
    }

    fn usable(&self) -> StoreResult<()> {
        if self.broken.load(Ordering::Acquire) {
            return Err(backend("the database connection is in an unknown state after a failed rollback"));
        }
        Ok(())
    }

    /// (transactions committed, writes they held) since the store was opened.
    pub fn group_commits(&self) -> (u64, u64) {
        (self.commits.load(Ordering::Relaxed), self.grouped_writes.load(Ordering::Relaxed))
    }

    /// Runs an operation of unbounded size (queries, purges, dumps) on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> StoreResult<T> + Send + 'static,
    {
        self.usable()?;
        let now = self.clock.now_epoch();
        let (conn, waiting) = (Arc::clone(&self.conn), Arc::clone(&self.others_waiting));
        tokio::task::spawn_blocking(move || {
            waiting.fetch_add(1, Ordering::AcqRel);
            let guard = conn.lock();
            waiting.fetch_sub(1, Ordering::AcqRel);
            let mut guard = guard.map_err(|_| backend("database lock poisoned"))?;
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
}

#[async_trait]
impl ItemStore for SqliteStore {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> StoreResult<Option<Item>> {
        let (pk, sk) = (pk.to_owned(), sk.to_owned());
        self.with_item(move |conn, now| read_live(conn, table, &pk, &sk, now)).await
    }

    async fn put(&self, put: Put) -> StoreResult<()> {
        self.with_write(move |conn, now| apply_put(conn, &put, now)).await
    }

    async fn update(&self, update: Update) -> StoreResult<Item> {
        self.with_write(move |conn, now| apply_update(conn, &update, now)).await
    }

    async fn delete(&self, delete: Delete) -> StoreResult<()> {
        self.with_write(move |conn, now| apply_delete(conn, &delete, now)).await
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

    async fn scan(&self, table: Table, limit: u32, after: Option<(String, String)>) -> StoreResult<super::ScanPage> {
        self.with_conn(move |conn, now| {
            let sql = format!(
                "SELECT pk, sk, attrs, expires_at FROM {} WHERE (?1 IS NULL OR (pk, sk) > (?1, ?2))
                 AND (expires_at IS NULL OR expires_at > ?3) ORDER BY pk, sk LIMIT ?4",
                sql_table(table)
            );
            let (after_pk, after_sk) = after.map_or((None, None), |(pk, sk)| (Some(pk), Some(sk)));
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            let mut rows = stmt.query(params![after_pk, after_sk, now, i64::from(limit.max(1))]).map_err(backend)?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                let (pk, sk, attrs): (String, String, String) =
                    (row.get(0).map_err(backend)?, row.get(1).map_err(backend)?, row.get(2).map_err(backend)?);
                let expires_at: Option<i64> = row.get(3).map_err(backend)?;
                items.push(decode(pk, sk, &attrs, expires_at)?);
            }
            let full = items.len() as u32 >= limit.max(1);
            let next = if full { items.last().map(|i: &Item| (i.pk.clone(), i.sk.clone())) } else { None };
            Ok(super::ScanPage { items, next })
        })
        .await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> StoreResult<()> {
        super::ensure_distinct_items(&ops)?;
        self.with_write(move |conn, now| {
            for op in &ops {
                match op {
                    WriteOp::Put(put) => apply_put(conn, put, now)?,
                    WriteOp::Update(update) => {
                        apply_update(conn, update, now)?;
                    }
                    WriteOp::Delete(delete) => apply_delete(conn, delete, now)?,
                    WriteOp::Check(check) => {
                        let live = read_live(conn, check.table, &check.pk, &check.sk, now)?;
                        require(&check.condition, live.as_ref())?;
                    }
                }
            }
            // An error above rolls back this write's savepoint: every operation of it, and nothing else.
            Ok(())
        })
        .await
    }
}
