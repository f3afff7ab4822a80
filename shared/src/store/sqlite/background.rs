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
    /// over and grows without end. So when the log holds more than `log_limit` bytes, a round copies again
    /// until a pass finds little new (see [`Checkpointer::round`]), then takes the store's one connection
    /// for a moment (requests wait for it, as for any other operation) and checkpoints there, where no
    /// write can come in between: that copies the few frames the passes missed, and the next commit writes
    /// the log from its beginning again. The log stays near the store's limit; past one and a half times
    /// the limit, commits do the same themselves (see `open_with_log_limit`), which costs them whatever the
    /// background had not copied. Stores without a file (in memory) have nothing to checkpoint: the task
    /// just ends.
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

/// A passive pass that found no more than this many new frames has caught up with the writers: the
/// locked checkpoint after it copies about as many (1 MiB at most), not the megabytes a busy log gains
/// while one pass copies and syncs.
const CAUGHT_UP_FRAMES: u64 = 256;
/// Passive passes a round makes at most before checkpointing under the store's lock anyway (each pass
/// finds a fraction of the previous one's frames, so two or three usually suffice).
const PASSES: usize = 4;

/// What a passive checkpoint found: frames in the log, and how many of them are copied into the database.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pass {
    pub(super) log: u64,
    pub(super) copied: u64,
}

/// What a round does after a pass.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterPass {
    /// Within the limit, or copied to its end with nothing written since: the next commit starts it over.
    Done,
    /// Past the limit and the writers added much (or a reader held some back): another pass.
    Again,
    /// Past the limit and caught up: checkpoint the last few frames under the store's lock.
    StartOver,
}

/// Decides the round's next step from a pass and the log's length at the previous pass of the round.
pub(super) fn after_pass(pass: Pass, previous: Option<u64>, log_limit: u64) -> AfterPass {
    if pass.log.saturating_mul(PAGE_BYTES) <= log_limit {
        return AfterPass::Done;
    }
    // Frames appended since the previous pass (all of them on the first, or when the log started over).
    let added = match previous {
        Some(before) if pass.log >= before => pass.log - before,
        _ => pass.log,
    };
    match (pass.copied >= pass.log, added) {
        (true, 0) if previous.is_some() => AfterPass::Done,
        (true, added) if added <= CAUGHT_UP_FRAMES => AfterPass::StartOver,
        _ => AfterPass::Again,
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
    /// The log is within its limit (copied as far as it went).
    Copied,
    /// Past its limit: checkpointed under the store's lock, the next commit writes it from its beginning.
    StartedOver,
    /// Past its limit and held by someone else: the next round tries again.
    Busy,
    Failed,
}

impl Checkpointer {
    /// One round: passive checkpoints on this connection until they catch up with the writers; then, past
    /// the store's log limit, a checkpoint under the store's lock that has the log start over. Under steady
    /// writes a passive checkpoint never reaches the log's end (commits land while it copies and syncs), so
    /// the log would only start over at the hard limit, inside a commit that then copies and syncs what the
    /// background had not: 6-21 ms with every request waiting, three times a second at one connection's
    /// full rate. Copying until a pass finds little new leaves the locked checkpoint a few frames and two
    /// short syncs.
    pub async fn round(&self) -> Round {
        let mut log_frames = u64::MAX;
        let mut previous = None;
        for _ in 0..PASSES {
            let pass = match self.passive().await {
                Ok(pass) => pass,
                Err(e) => {
                    // The log's size is unknown: checkpoint it under the store's lock anyway.
                    tracing::warn!(error = %e, "checkpoint failed");
                    return self.restart_under_lock(u64::MAX).await;
                }
            };
            log_frames = pass.log;
            match after_pass(pass, previous, self.store.log_limit) {
                AfterPass::Done => return Round::Copied,
                AfterPass::Again => previous = Some(pass.log),
                AfterPass::StartOver => break,
            }
        }
        self.restart_under_lock(log_frames).await
    }

    /// A passive checkpoint on the background connection.
    async fn passive(&self) -> StoreResult<Pass> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().map_err(|_| backend("checkpointer lock poisoned"))?;
            passive_checkpoint(&guard).map(|(log, copied)| Pass { log, copied })
        })
        .await
        .map_err(backend)?
    }

    async fn restart_under_lock(&self, log_frames: u64) -> Round {
        let log_limit = self.store.log_limit;
        let timed = |conn: &mut Connection, _| {
            let started = std::time::Instant::now();
            restart_log(conn).map(|done| (done, started.elapsed()))
        };
        match self.store.with_conn(timed).await {
            Ok((true, held)) => {
                // How long every request waited for it: the figure to watch for tail latency.
                let held_us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
                tracing::debug!(log_limit, log_frames, held_us, "write-ahead log checkpointed; it starts over");
                Round::StartedOver
            }
            Ok((false, _)) => {
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
