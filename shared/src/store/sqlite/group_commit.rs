//! Group commit: writes that arrive while another holds the connection wait in a queue and commit
//! together, one savepoint each, so a burst costs one fsync rather than one per write.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::Connection;

use super::background::restart_log;
use super::rows::{run_sql, undo_savepoint};
use super::{Answer, SqliteStore, WRITES_PER_COMMIT, WaitingWrite, WriteQueue, backend};
use crate::store::StoreResult;

impl SqliteStore {
    /// Runs a write (at most 100 items) with group commit. Each commit appends every page it changed to
    /// the write-ahead log, and under load the same pages change call after call (a busy wallet, the newest
    /// leaf of the usage and ledger ranges, the expiry index), so writes that queue up while the connection
    /// is busy share one transaction: each in its own savepoint, so one failed condition rolls back only
    /// its own write, in the order they arrived, exactly as if committed one by one. Alone and uncontended,
    /// the write runs in place; otherwise the one committer task on the blocking pool commits what has
    /// queued, a group at a time, until the queue is empty (never an async worker working through others'
    /// writes).
    pub(super) async fn with_write<T, F>(&self, f: F) -> StoreResult<T>
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

    pub(super) fn queue(&self) -> StoreResult<std::sync::MutexGuard<'_, WriteQueue>> {
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
        let started = std::time::Instant::now();
        match restart_log(conn) {
            Ok(true) => {
                let held_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                tracing::debug!(hard_limit, held_us, "write-ahead log past its hard limit; it starts over");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint at the log's hard limit failed"),
        }
    }
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
