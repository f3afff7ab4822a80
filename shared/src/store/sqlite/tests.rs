use serde_json::{Map, Value};

use super::background::passive_checkpoint;
use super::*;
use crate::clock::SystemClock;
use crate::store::Condition;

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
    assert_eq!(rows_in_main_file(&path)?, ROWS, "the checkpointer copied every committed row into the database file");
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
            let put = Put { table: Table::Main, item: row("P", &format!("S#{i}"), i), condition: Condition::Always };
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

/// A round's steps: under steady writes a passive pass never reaches the log's end, so a round copies
/// again until a pass finds little new, then starts the log over under the store's lock; a log nobody
/// wrote to since the last pass is left for the next commit to start over.
#[test]
fn a_round_copies_until_it_catches_up_then_starts_the_log_over() {
    use super::background::{AfterPass, Pass, after_pass};
    const LIMIT: u64 = 32 * 1024 * 1024;
    let frames_at_limit = LIMIT / super::PAGE_BYTES;
    let within = Pass { log: frames_at_limit, copied: 10 };
    assert_eq!(after_pass(within, None, LIMIT), AfterPass::Done, "within the limit");
    let busy = Pass { log: frames_at_limit + 2_000, copied: frames_at_limit + 2_000 };
    assert_eq!(after_pass(busy, None, LIMIT), AfterPass::Again, "the first pass over the limit copied a lot");
    let caught_up = Pass { log: busy.log + 90, copied: busy.log + 90 };
    assert_eq!(after_pass(caught_up, Some(busy.log), LIMIT), AfterPass::StartOver, "90 frames came in meanwhile");
    let still_busy = Pass { log: busy.log + 3_000, copied: busy.log + 3_000 };
    assert_eq!(after_pass(still_busy, Some(busy.log), LIMIT), AfterPass::Again, "3,000 frames came in meanwhile");
    assert_eq!(after_pass(busy, Some(busy.log), LIMIT), AfterPass::Done, "nothing written since the last pass");
    let held_back = Pass { log: busy.log + 10, copied: busy.log - 500 };
    assert_eq!(after_pass(held_back, Some(busy.log), LIMIT), AfterPass::Again, "a reader held frames back");
    let started_over = Pass { log: frames_at_limit + 100, copied: frames_at_limit + 100 };
    assert_eq!(after_pass(started_over, Some(busy.log), LIMIT), AfterPass::Again, "the log started over meanwhile");
}
