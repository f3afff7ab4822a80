//! The store's background work: the checkpointer, which copies the write-ahead log into the database on a
//! connection of its own, and the purger of expired rows.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::{BUSY_TIMEOUT, PAGE_BYTES, SqliteStore, backend};
use crate::store::StoreResult;

impl SqliteStore {
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
    pub(super) fn log_path(database: &Path) -> std::path::PathBuf {
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
pub(super) fn restart_log(conn: &Connection) -> StoreResult<bool> {
    conn.busy_timeout(Duration::ZERO).map_err(backend)?;
    // (busy, pages in the log, pages copied): busy = 1 when it could not finish.
    let busy = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| row.get::<_, i64>(0));
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    Ok(busy.map_err(backend)? == 0)
}

/// Copies what it can of the log into the database without waiting for anyone; returns how many pages the
/// log holds and how many of them are copied.
pub(super) fn passive_checkpoint(conn: &Connection) -> StoreResult<(u64, u64)> {
    // (busy, pages in the log, pages copied); -1 when the database is not in WAL mode.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)))
        .map(|(log, copied)| (log.max(0).unsigned_abs(), copied.max(0).unsigned_abs()))
        .map_err(backend)
}
