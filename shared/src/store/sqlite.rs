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
use rusqlite::{Connection, OptionalExtension, params};
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

    /// Runs a write (at most 100 items) with group commit. Each commit appends every page it changed to
    /// the write-ahead log, and under load the same pages change call after call (a busy wallet, the newest
    /// leaf of the usage and ledger ranges, the expiry index), so writes that queue up while the connection
    /// is busy share one transaction: each in its own savepoint, so one failed condition rolls back only
    /// its own write, in the order they arrived, exactly as if committed one by one. Alone and uncontended,
    /// the write runs in place; otherwise the one committer task on the blocking pool commits what has
    /// queued, a group at a time, until the queue is empty (never an async worker working through others'
    /// writes).
    async fn with_write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> StoreResult<T> + Send + 'static,
    {
        self.usable()?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let write: WaitingWrite = Box::new(move |conn: &Connection, now: i64| {
            let outcome = f(conn, now);
            let succeeded = outcome.is_ok();
            let answer: Answer = Box::new(move |committed: StoreResult<()>| {
                // A failed commit undid everything, including what this write's outcome was judged on
                // (a condition that failed on an earlier write of the group): the caller hears the commit's
                // error, which means "unknown, read again". A caller that stopped waiting just doesn't hear.
                let _ = answer.send(committed.and(outcome));
            });
            (succeeded, answer)
        });
        let alone = {
            let mut queue = self.queue()?;
            queue.writes.push_back(write);
            queue.writes.len() == 1 && !queue.committer_running
        };
        let mut in_place = false;
        if alone && let Ok(conn) = self.conn.try_lock() {
            // Usually just this write; at most the few that queued since, nothing like a backlog.
            let queued = std::mem::take(&mut self.queue()?.writes);
            in_place = true;
            self.commit(&conn, queued);
        }
        if !in_place {
            let mut queue = self.queue()?;
            // Either a running committer takes this write (it stops only once it finds the queue empty,
            // which it checks under this same lock) or one starts now.
            if !queue.committer_running && !queue.writes.is_empty() {
                queue.committer_running = true;
                drop(queue);
                let store = self.clone();
                drop(tokio::task::spawn_blocking(move || store.commit_until_empty()));
            }
        }
        answered.await.map_err(|_| backend("the write was dropped before it ran"))?
    }

    fn queue(&self) -> StoreResult<std::sync::MutexGuard<'_, WriteQueue>> {
        self.waiting.lock().map_err(|_| backend("write queue lock poisoned"))
    }

    /// The committer: takes the connection and commits what has queued, a group at a time (letting go of
    /// the connection in between, so a read waits for one group at most), until nothing has.
    fn commit_until_empty(&self) {
        let _on_duty = CommitterOnDuty(self);
        loop {
            let Ok(conn) = self.conn.lock() else {
                tracing::error!("database lock poisoned; queued writes fail");
                self.fail_queued_writes();
                return;
            };
            let queued = match self.queue() {
                Ok(mut queue) if queue.writes.is_empty() => {
                    queue.committer_running = false;
                    return;
                }
                Ok(mut queue) => {
                    let group = queue.writes.len().min(WRITES_PER_COMMIT);
                    queue.writes.drain(..group).collect()
                }
                Err(_) => return,
            };
            self.commit(&conn, queued);
            drop(conn);
            // Operations waiting for the connection go first (for a moment at most: a stuck one does not
            // stop the writes).
            let until = std::time::Instant::now() + Duration::from_millis(2);
            while self.others_waiting.load(Ordering::Acquire) > 0 && std::time::Instant::now() < until {
                std::thread::yield_now();
            }
        }
    }

    /// Drops every queued write (which answers its caller with an error) and stands the committer down.
    fn fail_queued_writes(&self) {
        if let Ok(mut queue) = self.queue() {
            queue.writes.clear();
            queue.committer_running = false;
        }
    }

    /// Commits `queued`, [`WRITES_PER_COMMIT`] to a transaction, and answers each caller. Called with the
    /// connection held, so nobody else is between a write's run and its answer.
    fn commit(&self, conn: &Connection, mut queued: VecDeque<WaitingWrite>) {
        let now = self.clock.now_epoch();
        while !queued.is_empty() {
            let group: Vec<WaitingWrite> = queued.drain(..queued.len().min(WRITES_PER_COMMIT)).collect();
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.grouped_writes.fetch_add(group.len() as u64, Ordering::Relaxed);
            if !commit_group(conn, group, now) {
                tracing::error!("a failed transaction could not be rolled back; the store refuses all operations");
                self.broken.store(true, Ordering::Release);
            }
        }
        self.enforce_log_limit(conn);
    }

    /// Past the hard limit (the background checkpointer fell behind), has the log start over now, under the
    /// store's lock: one checkpoint of what the background has not copied yet. It never waits: while the
    /// background holds the checkpoint, the next commit tries again. Every commit checks, a write run in
    /// place too (that checkpoint then waits for the disk on an async worker, but only past the hard
    /// limit): at ten connections most writes run in place, and with the check left to the committer the
    /// log reached 200 MiB in a one-minute soak.
    fn enforce_log_limit(&self, conn: &Connection) {
        let Some((log, hard_limit)) = &self.log_file else { return };
        if std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) <= *hard_limit {
            return;
        }
        match restart_log(conn) {
            Ok(true) => tracing::debug!(hard_limit, "write-ahead log past its hard limit; it starts over"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint at the log's hard limit failed"),
        }
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

    /// Copies the write-ahead log into the database every `every`, on a second connection, so that commits
    /// never wait for a checkpoint's disk flush. A passive checkpoint does not block readers or the writer,
    /// but under steady writes it never catches up with the end of the log, so the log is never started
    /// over and grows without end. So when the log holds more than `log_limit` bytes, the checkpointer
    /// also takes the store's one connection for a moment (requests wait for it, as for any other
    /// operation) and checkpoints there, where no write can come in between: that copies the few pages
    /// the background round missed, and the next commit writes the log from its beginning again. The log
    /// stays near the store's limit; past one and a half times the limit, commits do the same themselves
    /// (see `open_with_log_limit`). Stores without a file (in memory) have nothing to
    /// checkpoint: the task just ends.
    pub fn spawn_checkpointer(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        crate::tasks::spawn("sqlite checkpointer", async move {
            let Some(checkpointer) = store.checkpointer() else { return };
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                checkpointer.round().await;
            }
        })
    }

    /// The background checkpointer's own connection, for [`Checkpointer::round`] (tests drive rounds
    /// themselves); `None` for a store without a file, or when the file cannot be opened again.
    pub fn checkpointer(&self) -> Option<Checkpointer> {
        let path = self.path.as_ref()?;
        match Connection::open(path) {
            Ok(conn) => Some(Checkpointer { store: self.clone(), conn: Arc::new(Mutex::new(conn)) }),
            Err(e) => {
                tracing::warn!(error = %e, "the checkpointer could not open the database");
                None
            }
        }
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

/// The background checkpointer ([`SqliteStore::spawn_checkpointer`]) on its own connection.
pub struct Checkpointer {
    store: SqliteStore,
    conn: Arc<Mutex<Connection>>,
}

/// What one round of the checkpointer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// The log is within its limit, or was copied to its end (the next commit starts it over by itself).
    Copied,
    /// Past its limit: checkpointed under the store's lock, the next commit writes it from its beginning.
    StartedOver,
    /// Past its limit and held by someone else: the next round tries again.
    Busy,
    Failed,
}

impl Checkpointer {
    /// One round: a passive checkpoint on this connection; past the store's log limit, a checkpoint under the
    /// store's lock that has the log start over.
    pub async fn round(&self) -> Round {
        let conn = Arc::clone(&self.conn);
        let passive = tokio::task::spawn_blocking(move || {
            let guard = conn.lock().map_err(|_| backend("checkpointer lock poisoned"))?;
            passive_checkpoint(&guard)
        })
        .await
        .map_err(backend);
        let (log_pages, copied) = match passive {
            Ok(Ok(pages)) => pages,
            Ok(Err(e)) | Err(e) => {
                // The log's size is unknown: checkpoint it under the store's lock anyway.
                tracing::warn!(error = %e, "checkpoint failed");
                (u64::MAX, 0)
            }
        };
        let log_limit = self.store.log_limit;
        // A log copied to its end starts over at the next commit by itself.
        if log_pages.saturating_mul(PAGE_BYTES) <= log_limit || copied >= log_pages {
            return Round::Copied;
        }
        match self.store.with_conn(|conn, _| restart_log(conn)).await {
            Ok(true) => {
                tracing::debug!(log_limit, log_pages, "write-ahead log checkpointed; it starts over");
                Round::StartedOver
            }
            Ok(false) => {
                tracing::warn!(log_limit, "write-ahead log over its limit and still busy; retrying");
                Round::Busy
            }
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint under the store's lock failed");
                Round::Failed
            }
        }
    }
}

/// Copies the rest of the log into the database and has the next commit write the log from its beginning
/// (without cutting the file: see `open_with_log_limit`). Never waits for another connection: returns false
/// when one holds the log (the background checkpointer mid-round; a shell, a backup), to be retried later.
fn restart_log(conn: &Connection) -> StoreResult<bool> {
    conn.busy_timeout(Duration::ZERO).map_err(backend)?;
    // (busy, pages in the log, pages copied): busy = 1 when it could not finish.
    let busy = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| row.get::<_, i64>(0));
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    Ok(busy.map_err(backend)? == 0)
}

/// Copies what it can of the log into the database without waiting for anyone; returns how many pages the
/// log holds and how many of them are copied.
fn passive_checkpoint(conn: &Connection) -> StoreResult<(u64, u64)> {
    // (busy, pages in the log, pages copied); -1 when the database is not in WAL mode.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)))
        .map(|(log, copied)| (log.max(0).unsigned_abs(), copied.max(0).unsigned_abs()))
        .map_err(backend)
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

/// Should the committer stop by a panic (a bug), its queued writes fail (their callers hear an error) and
/// the next write starts a new committer, rather than every later write waiting for one that is gone.
struct CommitterOnDuty<'a>(&'a SqliteStore);

impl Drop for CommitterOnDuty<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail_queued_writes();
        }
    }
}

/// Runs `group` in one `IMMEDIATE` transaction, each write in its own savepoint, and answers every write once
/// the transaction has committed. If the transaction itself fails, every write in it fails (a write never
/// run, because the transaction ended under it, is dropped: its caller hears an error). Returns false if
/// the connection is left inside a transaction it could not roll back.
fn commit_group(conn: &Connection, group: Vec<WaitingWrite>, now: i64) -> bool {
    if let Err(e) = run_sql(conn, "BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "could not start a write transaction");
        return conn.is_autocommit();
    }
    let mut answers = Vec::with_capacity(group.len());
    let mut broken = None;
    for write in group {
        if let Err(e) = run_sql(conn, "SAVEPOINT write") {
            broken = Some(e);
            break;
        }
        let (succeeded, answer) = write(conn, now);
        answers.push(answer);
        let closed = if succeeded { run_sql(conn, "RELEASE write") } else { undo_savepoint(conn) };
        if let Err(e) = closed {
            broken = Some(e);
            break;
        }
    }
    let committed = match broken {
        Some(e) => Err(e),
        None => run_sql(conn, "COMMIT"),
    };
    if committed.is_err() && !conn.is_autocommit() {
        // Leaves nothing half done for the next group; an error here changes no answer.
        let _ = run_sql(conn, "ROLLBACK");
    }
    if let Err(e) = &committed {
        tracing::warn!(error = %e, writes = answers.len(), "a group of writes failed to commit");
    }
    for answer in answers {
        answer(committed.clone());
    }
    conn.is_autocommit()
}

fn undo_savepoint(conn: &Connection) -> StoreResult<()> {
    run_sql(conn, "ROLLBACK TO write")?;
    run_sql(conn, "RELEASE write")
}

fn run_sql(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute([])).map(|_| ()).map_err(backend)
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
        // The log (some 5 MB) is under the default limit: only the background checkpointer copies it. The
        // test runs its round itself (no verdict here waits for a task to be scheduled).
        let checkpointer = store.checkpointer().ok_or_else(|| backend("no checkpointer"))?;
        assert_eq!(checkpointer.round().await, Round::Copied);
        assert_eq!(
            rows_in_main_file(&path)?,
            ROWS,
            "the checkpointer copied every committed row into the database file"
        );
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    fn row(pk: &str, sk: &str, n: i64) -> Item {
        let mut attrs = Map::new();
        attrs.insert("n".into(), Value::from(n));
        Item { pk: pk.into(), sk: sk.into(), attrs, expires_at: None }
    }

    /// Writes queued behind a busy connection commit together, and each keeps its own outcome: a failed
    /// condition (or a transaction failing half way) rolls back only its own write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_commit_together_and_fail_alone() -> StoreResult<()> {
        let store = SqliteStore::in_memory(Arc::new(SystemClock))?;
        let held = store.conn.lock().map_err(|_| backend("poisoned"))?;
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..10 {
            let store = store.clone();
            writes.spawn(async move {
                let put =
                    Put { table: Table::Main, item: row("P", &format!("S#{i}"), i), condition: Condition::Always };
                ("plain", store.put(put).await.is_ok())
            });
        }
        // Five racing creations of one item: exactly one may win.
        for i in 0..5 {
            let store = store.clone();
            writes.spawn(async move {
                let put = Put { table: Table::Main, item: row("P", "ONCE", i), condition: Condition::NotExists };
                ("once", store.put(put).await.is_ok())
            });
        }
        // A transaction whose second operation fails must leave nothing of its first.
        let store_for_tx = store.clone();
        writes.spawn(async move {
            let first = Put { table: Table::Main, item: row("P", "HALF", 1), condition: Condition::Always };
            let second = Put { table: Table::Main, item: row("Q", "MISSING", 1), condition: Condition::Exists };
            ("half", store_for_tx.transact(vec![WriteOp::Put(first), WriteOp::Put(second)]).await.is_ok())
        });
        // The writes run on the runtime's workers; this thread only holds the connection. A generous
        // deadline: a busy machine may take its time to schedule them, which changes nothing else here.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while store.queue()?.writes.len() < 16 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(store.queue()?.writes.len(), 16, "every write queued");
        drop(held);
        let mut outcomes = std::collections::HashMap::<&str, (usize, usize)>::new();
        while let Some(done) = writes.join_next().await {
            let (kind, ok) = done.map_err(backend)?;
            let entry = outcomes.entry(kind).or_default();
            if ok { entry.0 += 1 } else { entry.1 += 1 }
        }
        assert_eq!(outcomes["plain"], (10, 0));
        assert_eq!(outcomes["once"], (1, 4), "one creation won, the others saw it");
        assert_eq!(outcomes["half"], (0, 1));
        assert_eq!(store.group_commits(), (1, 16), "all sixteen writes shared one transaction");
        let page = store
            .query(Query {
                table: Table::Main,
                pk: "P".into(),
                range: SortKeyRange::All,
                after: None,
                limit: 100,
                newest_first: false,
            })
            .await?;
        let keys: Vec<&str> = page.items.iter().map(|item| item.sk.as_str()).collect();
        assert_eq!(keys.len(), 11, "ten plain rows and the one creation: {keys:?}");
        assert!(!keys.contains(&"HALF"), "the failed transaction left nothing");
        // The connection is left outside any transaction: the next write commits on its own.
        store.put(Put { table: Table::Main, item: row("P", "AFTER", 0), condition: Condition::Always }).await?;
        assert_eq!(store.group_commits(), (2, 17));
        Ok(())
    }

    fn padded(i: usize) -> Item {
        let mut attrs = Map::new();
        attrs.insert("padding".into(), Value::String("x".repeat(2_000)));
        Item { pk: format!("P#{}", i % 500), sk: format!("S#{i}"), attrs, expires_at: None }
    }

    fn log_store(name: &str, limit: u64) -> StoreResult<(SqliteStore, std::path::PathBuf, std::path::PathBuf)> {
        let dir = std::env::temp_dir().join(format!("inferex-{name}-{}", crate::secrets::random_suffix()));
        std::fs::create_dir_all(&dir).map_err(backend)?;
        let path = dir.join("store.sqlite3");
        let store = SqliteStore::open_with_log_limit(&path, Arc::new(SystemClock), limit)?;
        Ok((store, SqliteStore::log_path(&path), dir))
    }

    /// Steady writes from four writers at once, with no checkpointer running at all (one that the machine
    /// does not schedule in time is the worst case): the commits alone keep the log under its hard limit
    /// (one and a half times the limit) plus what one commit writes, and nothing committed is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_alone_keep_the_log_under_its_hard_limit() -> StoreResult<()> {
        const LIMIT: u64 = 1024 * 1024;
        const WRITERS: usize = 4;
        const WRITES: usize = 3_000;
        let (store, log, dir) = log_store("wal-bound", LIMIT)?;
        let largest = Arc::new(AtomicU64::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let (store, log, largest) = (store.clone(), log.clone(), Arc::clone(&largest));
            writers.spawn(async move {
                for i in (writer..WRITES).step_by(WRITERS) {
                    store.put(Put { table: Table::Main, item: padded(i), condition: Condition::Always }).await?;
                    largest.fetch_max(std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0), Ordering::Relaxed);
                }
                StoreResult::Ok(())
            });
        }
        while let Some(done) = writers.join_next().await {
            done.map_err(backend)??;
        }
        // The hard limit and one group of at most 64 writes of 2 KB (a few pages each).
        let largest = largest.load(Ordering::Relaxed);
        assert!(largest <= LIMIT * 3 / 2 + LIMIT, "the log reached {largest} bytes (limit {LIMIT})");
        let count = store
            .with_conn(|conn, _| {
                conn.query_row("SELECT count(*) FROM items_main", [], |r| r.get::<_, i64>(0)).map_err(backend)
            })
            .await?;
        assert_eq!(count, WRITES as i64, "every commit is still there");
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    /// A log past its limit (but under the hard limit commits enforce) is copied by one round of the
    /// checkpointer and the next commit writes it from its beginning.
    #[tokio::test]
    async fn a_checkpointer_round_starts_a_log_past_its_limit_over() -> StoreResult<()> {
        const LIMIT: u64 = 1024 * 1024;
        let (store, log, dir) = log_store("wal-round", LIMIT)?;
        let checkpointer = store.checkpointer().ok_or_else(|| backend("no checkpointer"))?;
        let log_pages = |store: &SqliteStore| {
            let store = store.clone();
            async move { store.with_conn(|conn, _| passive_checkpoint(conn)).await.map(|(pages, _)| pages) }
        };
        let mut i = 0;
        while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) <= LIMIT * 5 / 4 {
            store.put(Put { table: Table::Main, item: padded(i), condition: Condition::Always }).await?;
            i += 1;
        }
        // (Asking the log's size with a checkpoint would copy it: the file's size says it is past the limit.)
        // With no write in between its passive copy reaches the end; with writes, it starts the log over
        // under the store's lock. Either way the log starts over.
        let round = checkpointer.round().await;
        assert!(matches!(round, Round::Copied | Round::StartedOver), "{round:?}");
        store.put(Put { table: Table::Main, item: padded(i), condition: Condition::Always }).await?;
        let pages = log_pages(&store).await?;
        assert!(pages < 16, "the next commit wrote the log from its beginning ({pages} pages)");
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}
