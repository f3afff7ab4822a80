//! The storage contract: every test here runs against the embedded SQLite store and against DynamoDB
//! (DynamoDB Local, started by `make test`), so the two adapters cannot drift apart.

use std::sync::Arc;

use chrono::Duration;
use serde_json::{Map, Value, json};
use shared::clock::{Clock, ManualClock};
use shared::store::{
    Check, Condition, Delete, ExpiryChange, Item, ItemStore, Put, Query, SortKeyRange, StoreError, Table, Update,
    WriteOp,
};
use shared::testing;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Backend {
    store: Arc<dyn ItemStore>,
    clock: ManualClock,
}

fn start_clock() -> ManualClock {
    ManualClock::starting_now()
}

fn sqlite() -> Result<Backend, String> {
    let clock = start_clock();
    let store = testing::sqlite_store(Arc::new(clock.clone()))?;
    Ok(Backend { store: Arc::new(store), clock })
}

async fn dynamodb() -> Result<Backend, String> {
    let clock = start_clock();
    let store = testing::dynamo_store(Arc::new(clock.clone())).await?;
    Ok(Backend { store: Arc::new(store), clock })
}

/// Generates one `#[tokio::test]` per backend for each contract case.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> super::TestResult {
                    super::$case(super::sqlite()?).await
                }
            )*
        }
        mod dynamodb_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() -> super::TestResult {
                    super::$case(super::dynamodb().await?).await
                }
            )*
        }
    };
}

contract!(
    put_and_get_round_trip_every_value_kind,
    not_exists_condition_admits_one_writer,
    expired_items_are_invisible_and_count_as_absent,
    updates_set_add_remove_and_return_the_new_item,
    updates_never_create_items_and_honour_conditions,
    deletes_honour_conditions,
    queries_order_filter_and_paginate,
    transactions_are_all_or_nothing,
    transactions_reject_touching_an_item_twice,
    concurrent_conditional_puts_have_exactly_one_winner,
    concurrent_increments_are_not_lost,
    absent_or_equals_admits_only_the_holder,
    attr_absent_or_equals_needs_the_item_and_no_other_value,
    vault_table_is_separate_from_main,
);

fn item(pk: &str, sk: &str, attrs: Value, expires_at: Option<i64>) -> Item {
    let attrs = match attrs {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Item { pk: pk.into(), sk: sk.into(), attrs, expires_at }
}

fn put(item: Item, condition: Condition) -> Put {
    Put { table: Table::Main, item, condition }
}

fn now(b: &Backend) -> i64 {
    b.clock.now_epoch()
}

/// Empty strings are left out: DynamoDB accepts them today, but the DynamoDB Local build the tests use
/// predates that, so no record relies on them.
async fn put_and_get_round_trip_every_value_kind(b: Backend) -> TestResult {
    let original = item(
        "P#1",
        "S#1",
        json!({
            "text": "नमस्ते ✓",
            "small": 7,
            "negative": -42,
            "large": 9_007_199_254_740_993_i64,
            "flag": true,
            "off": false,
            "list": ["a", 1, false],
            "nested": { "inner": { "n": 1, "s": "x" } }
        }),
        Some(now(&b) + 3600),
    );
    b.store.put(put(original.clone(), Condition::Always)).await?;
    let fetched = b.store.get(Table::Main, "P#1", "S#1").await?;
    assert_eq!(fetched, Some(original));
    assert_eq!(b.store.get(Table::Main, "P#1", "S#2").await?, None);
    Ok(())
}

async fn not_exists_condition_admits_one_writer(b: Backend) -> TestResult {
    b.store.put(put(item("P", "S", json!({"v": 1}), None), Condition::NotExists)).await?;
    let second = b.store.put(put(item("P", "S", json!({"v": 2}), None), Condition::NotExists)).await;
    assert!(matches!(second, Err(StoreError::ConditionFailed)), "{second:?}");
    let kept = b.store.get(Table::Main, "P", "S").await?.map(|i| i.attrs["v"].clone());
    assert_eq!(kept, Some(json!(1)), "a failed conditional put changes nothing");
    // An equality condition on the live item.
    b.store.put(put(item("P", "S", json!({"v": 3}), None), Condition::AttrEquals("v".into(), json!(1)))).await?;
    let stale =
        b.store.put(put(item("P", "S", json!({"v": 4}), None), Condition::AttrEquals("v".into(), json!(1)))).await;
    assert!(matches!(stale, Err(StoreError::ConditionFailed)));
    Ok(())
}

async fn expired_items_are_invisible_and_count_as_absent(b: Backend) -> TestResult {
    let t = now(&b);
    b.store.put(put(item("P", "A", json!({"v": 1}), Some(t + 60)), Condition::Always)).await?;
    b.store.put(put(item("P", "B", json!({"v": 2}), Some(t + 120)), Condition::Always)).await?;
    b.store.put(put(item("P", "C", json!({"v": 3}), None), Condition::Always)).await?;
    assert!(b.store.get(Table::Main, "P", "A").await?.is_some());

    b.clock.advance(Duration::seconds(60)); // A expires exactly now: expired.
    assert_eq!(b.store.get(Table::Main, "P", "A").await?, None);
    let page = b.store.query(Query::new(Table::Main, "P")).await?;
    let sks: Vec<&str> = page.items.iter().map(|i| i.sk.as_str()).collect();
    assert_eq!(sks, ["B", "C"]);

    // Conditions see the expired item as absent.
    let exists = b.store.put(put(item("P", "A", json!({"v": 9}), None), Condition::Exists)).await;
    assert!(matches!(exists, Err(StoreError::ConditionFailed)));
    let update = b.store.update(Update::new(Table::Main, "P", "A").set("v", 10)).await;
    assert!(matches!(update, Err(StoreError::ConditionFailed)), "updates never revive expired items");
    b.store.put(put(item("P", "A", json!({"v": 11}), None), Condition::NotExists)).await?;
    let revived = b.store.get(Table::Main, "P", "A").await?;
    assert_eq!(revived, Some(item("P", "A", json!({"v": 11}), None)), "no attribute of the expired item survives");
    Ok(())
}

async fn updates_set_add_remove_and_return_the_new_item(b: Backend) -> TestResult {
    let t = now(&b);
    b.store
        .put(put(item("U", "1", json!({"name": "a", "balance": 100, "gone": "x"}), None), Condition::Always))
        .await?;
    let after = b
        .store
        .update(
            Update::new(Table::Main, "U", "1")
                .set("name", "b")
                .add("balance", -30)
                .add("count", 2)
                .remove("gone")
                .expiry(ExpiryChange::Set(t + 99)),
        )
        .await?;
    let expected = item("U", "1", json!({"name": "b", "balance": 70, "count": 2}), Some(t + 99));
    assert_eq!(after, expected);
    assert_eq!(b.store.get(Table::Main, "U", "1").await?, Some(expected));
    let cleared = b.store.update(Update::new(Table::Main, "U", "1").expiry(ExpiryChange::Clear)).await?;
    assert_eq!(cleared.expires_at, None);
    Ok(())
}

async fn updates_never_create_items_and_honour_conditions(b: Backend) -> TestResult {
    let missing = b.store.update(Update::new(Table::Main, "U", "none").add("n", 1)).await;
    assert!(matches!(missing, Err(StoreError::ConditionFailed)));
    assert_eq!(b.store.get(Table::Main, "U", "none").await?, None);

    b.store.put(put(item("U", "w", json!({"available": 50}), None), Condition::Always)).await?;
    // Spend 40 only while at least 40 is available: the second spend must fail and change nothing.
    let spend = || {
        Update::new(Table::Main, "U", "w").add("available", -40).when(Condition::AttrAtLeast("available".into(), 40))
    };
    assert_eq!(b.store.update(spend()).await?.attrs["available"], json!(10));
    assert!(matches!(b.store.update(spend()).await, Err(StoreError::ConditionFailed)));
    assert_eq!(b.store.get(Table::Main, "U", "w").await?.map(|i| i.attrs["available"].clone()), Some(json!(10)));
    Ok(())
}

async fn deletes_honour_conditions(b: Backend) -> TestResult {
    b.store.put(put(item("D", "1", json!({"owner": "a"}), None), Condition::Always)).await?;
    let wrong = Delete {
        table: Table::Main,
        pk: "D".into(),
        sk: "1".into(),
        condition: Condition::AttrEquals("owner".into(), json!("b")),
    };
    assert!(matches!(b.store.delete(wrong).await, Err(StoreError::ConditionFailed)));
    assert!(b.store.get(Table::Main, "D", "1").await?.is_some());
    let right = Delete { table: Table::Main, pk: "D".into(), sk: "1".into(), condition: Condition::Exists };
    b.store.delete(right.clone()).await?;
    assert_eq!(b.store.get(Table::Main, "D", "1").await?, None);
    assert!(matches!(b.store.delete(right).await, Err(StoreError::ConditionFailed)));
    let absent = Delete { table: Table::Main, pk: "D".into(), sk: "2".into(), condition: Condition::Always };
    b.store.delete(absent).await?;
    Ok(())
}

async fn queries_order_filter_and_paginate(b: Backend) -> TestResult {
    for sk in ["a#1", "a#2", "a#3", "b#1", "b#2", "c#1"] {
        b.store.put(put(item("Q", sk, json!({"sk": sk}), None), Condition::Always)).await?;
    }
    b.store.put(put(item("Other", "a#9", json!({}), None), Condition::Always)).await?;
    let sks = |items: &[Item]| items.iter().map(|i| i.sk.clone()).collect::<Vec<_>>();

    let all = b.store.query(Query::new(Table::Main, "Q")).await?;
    assert_eq!(sks(&all.items), ["a#1", "a#2", "a#3", "b#1", "b#2", "c#1"]);
    assert_eq!(all.next, None);

    let prefix = b.store.query(Query::new(Table::Main, "Q").range(SortKeyRange::Prefix("b#".into()))).await?;
    assert_eq!(sks(&prefix.items), ["b#1", "b#2"]);
    let prefix_desc =
        b.store.query(Query::new(Table::Main, "Q").range(SortKeyRange::Prefix("a#".into())).newest_first()).await?;
    assert_eq!(sks(&prefix_desc.items), ["a#3", "a#2", "a#1"]);

    let at_least = b.store.query(Query::new(Table::Main, "Q").range(SortKeyRange::AtLeast("b#2".into()))).await?;
    assert_eq!(sks(&at_least.items), ["b#2", "c#1"]);
    let between =
        b.store.query(Query::new(Table::Main, "Q").range(SortKeyRange::Between("a#2".into(), "b#1".into()))).await?;
    assert_eq!(sks(&between.items), ["a#2", "a#3", "b#1"]);

    // Newest-first pages of two, following `next` to the end.
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = b.store.query(Query::new(Table::Main, "Q").newest_first().limit(2).after(after.clone())).await?;
        assert!(page.items.len() <= 2);
        seen.extend(sks(&page.items));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["c#1", "b#2", "b#1", "a#3", "a#2", "a#1"]);
    Ok(())
}

async fn transactions_are_all_or_nothing(b: Backend) -> TestResult {
    b.store.put(put(item("T", "taken", json!({}), None), Condition::Always)).await?;
    b.store.put(put(item("T", "counter", json!({"n": 1}), None), Condition::Always)).await?;
    let failing = vec![
        WriteOp::Put(put(item("T", "new", json!({}), None), Condition::NotExists)),
        WriteOp::Update(Update::new(Table::Main, "T", "counter").add("n", 1)),
        WriteOp::Put(put(item("T", "taken", json!({"x": 1}), None), Condition::NotExists)),
    ];
    assert!(matches!(b.store.transact(failing).await, Err(StoreError::ConditionFailed)));
    assert_eq!(b.store.get(Table::Main, "T", "new").await?, None, "no partial write");
    assert_eq!(b.store.get(Table::Main, "T", "counter").await?.map(|i| i.attrs["n"].clone()), Some(json!(1)));

    let failing_check = vec![
        WriteOp::Put(put(item("T", "new", json!({}), None), Condition::NotExists)),
        WriteOp::Check(Check {
            table: Table::Main,
            pk: "T".into(),
            sk: "missing".into(),
            condition: Condition::Exists,
        }),
    ];
    assert!(matches!(b.store.transact(failing_check).await, Err(StoreError::ConditionFailed)));
    assert_eq!(b.store.get(Table::Main, "T", "new").await?, None);

    let ok = vec![
        WriteOp::Put(put(item("T", "new", json!({}), None), Condition::NotExists)),
        WriteOp::Update(Update::new(Table::Main, "T", "counter").add("n", 1)),
        WriteOp::Delete(Delete {
            table: Table::Main,
            pk: "T".into(),
            sk: "taken".into(),
            condition: Condition::Exists,
        }),
        WriteOp::Check(Check {
            table: Table::Main,
            pk: "T".into(),
            sk: "absent".into(),
            condition: Condition::NotExists,
        }),
    ];
    b.store.transact(ok).await?;
    assert!(b.store.get(Table::Main, "T", "new").await?.is_some());
    assert_eq!(b.store.get(Table::Main, "T", "counter").await?.map(|i| i.attrs["n"].clone()), Some(json!(2)));
    assert_eq!(b.store.get(Table::Main, "T", "taken").await?, None);
    Ok(())
}

async fn transactions_reject_touching_an_item_twice(b: Backend) -> TestResult {
    let twice = vec![
        WriteOp::Put(put(item("T", "x", json!({}), None), Condition::Always)),
        WriteOp::Delete(Delete { table: Table::Main, pk: "T".into(), sk: "x".into(), condition: Condition::Always }),
    ];
    assert!(matches!(b.store.transact(twice).await, Err(StoreError::Backend(_))));
    assert_eq!(b.store.get(Table::Main, "T", "x").await?, None);
    Ok(())
}

async fn concurrent_conditional_puts_have_exactly_one_winner(b: Backend) -> TestResult {
    let mut tasks = Vec::new();
    for n in 0..20 {
        let store = Arc::clone(&b.store);
        tasks.push(shared::tasks::spawn("test", async move {
            store.put(put(item("race", "one", json!({ "writer": n }), None), Condition::NotExists)).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await? {
            Ok(()) => winners += 1,
            Err(StoreError::ConditionFailed) => {}
            Err(other) => return Err(other.into()),
        }
    }
    assert_eq!(winners, 1);
    Ok(())
}

async fn concurrent_increments_are_not_lost(b: Backend) -> TestResult {
    b.store.put(put(item("inc", "n", json!({"n": 0}), None), Condition::Always)).await?;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = Arc::clone(&b.store);
        tasks.push(shared::tasks::spawn("test", async move {
            store.update(Update::new(Table::Main, "inc", "n").add("n", 1)).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(b.store.get(Table::Main, "inc", "n").await?.map(|i| i.attrs["n"].clone()), Some(json!(20)));
    Ok(())
}

async fn absent_or_equals_admits_only_the_holder(b: Backend) -> TestResult {
    let mine = || Condition::AbsentOrEquals("owner".into(), json!("me"));
    b.store.put(put(item("C", "1", json!({"owner": "me", "n": 1}), None), mine())).await?;
    b.store.put(put(item("C", "1", json!({"owner": "me", "n": 2}), None), mine())).await?;
    let theirs = b
        .store
        .put(put(
            item("C", "1", json!({"owner": "them"}), None),
            Condition::AbsentOrEquals("owner".into(), json!("them")),
        ))
        .await;
    assert!(matches!(theirs, Err(StoreError::ConditionFailed)));
    assert_eq!(b.store.get(Table::Main, "C", "1").await?.map(|i| i.attrs["n"].clone()), Some(json!(2)));
    // An expired holder no longer counts.
    let t = now(&b);
    b.store.put(put(item("C", "2", json!({"owner": "old"}), Some(t + 5)), Condition::Always)).await?;
    b.clock.advance(Duration::seconds(5));
    b.store.put(put(item("C", "2", json!({"owner": "me"}), None), mine())).await?;
    Ok(())
}

async fn attr_absent_or_equals_needs_the_item_and_no_other_value(b: Backend) -> TestResult {
    let unflagged = || Condition::AttrAbsentOrEquals("closed".into(), json!(false));
    let bump = || Update::new(Table::Main, "F", "1").add("n", 1).when(unflagged());
    assert!(matches!(b.store.update(bump()).await, Err(StoreError::ConditionFailed)), "no item, no write");
    b.store.put(put(item("F", "1", json!({"n": 0}), None), Condition::Always)).await?;
    b.store.update(bump()).await?;
    b.store.update(Update::new(Table::Main, "F", "1").set("closed", json!(false))).await?;
    b.store.update(bump()).await?;
    b.store.update(Update::new(Table::Main, "F", "1").set("closed", json!(true))).await?;
    assert!(matches!(b.store.update(bump()).await, Err(StoreError::ConditionFailed)), "flagged");
    let delete = Delete { table: Table::Main, pk: "F".into(), sk: "1".into(), condition: unflagged() };
    assert!(matches!(b.store.delete(delete).await, Err(StoreError::ConditionFailed)));
    assert_eq!(b.store.get(Table::Main, "F", "1").await?.map(|i| i.attrs["n"].clone()), Some(json!(2)));
    Ok(())
}

async fn vault_table_is_separate_from_main(b: Backend) -> TestResult {
    b.store
        .put(Put {
            table: Table::Vault,
            item: item("V", "1", json!({"secret": "x"}), None),
            condition: Condition::NotExists,
        })
        .await?;
    assert_eq!(b.store.get(Table::Main, "V", "1").await?, None);
    assert!(b.store.get(Table::Vault, "V", "1").await?.is_some());
    // One transaction may span both tables.
    b.store
        .transact(vec![
            WriteOp::Put(Put {
                table: Table::Vault,
                item: item("V", "2", json!({}), None),
                condition: Condition::NotExists,
            }),
            WriteOp::Put(put(item("V", "2", json!({}), None), Condition::NotExists)),
        ])
        .await?;
    assert!(
        b.store.get(Table::Vault, "V", "2").await?.is_some() && b.store.get(Table::Main, "V", "2").await?.is_some()
    );
    Ok(())
}

/// Embedded-only: expired rows are physically purged, not just hidden.
#[tokio::test]
async fn embedded_store_purges_expired_rows() -> TestResult {
    let clock = start_clock();
    let store = testing::sqlite_store(Arc::new(clock.clone()))?;
    let t = clock.now_epoch();
    store.put(put(item("P", "old", json!({}), Some(t + 10)), Condition::Always)).await?;
    store.put(put(item("P", "new", json!({}), Some(t + 1000)), Condition::Always)).await?;
    store.put(put(item("P", "forever", json!({}), None), Condition::Always)).await?;
    assert_eq!(store.purge_expired().await?, 0);
    clock.advance(Duration::seconds(10));
    assert_eq!(store.purge_expired().await?, 1);
    clock.advance(Duration::seconds(1000));
    assert_eq!(store.purge_expired().await?, 1);
    assert_eq!(store.query(Query::new(Table::Main, "P")).await?.items.len(), 1);
    Ok(())
}

/// Embedded-only: data written to the database file survives closing and reopening it (`make run` restarts).
#[tokio::test]
async fn embedded_store_survives_a_restart() -> TestResult {
    let dir = std::env::temp_dir().join(format!("inferex-restart-{}", shared::secrets::random_suffix()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("inferex.sqlite3");
    let clock: Arc<dyn Clock> = Arc::new(start_clock());
    {
        let store = shared::store::sqlite::SqliteStore::open(&path, Arc::clone(&clock))?;
        store.put(put(item("P", "kept", json!({"v": 1}), None), Condition::NotExists)).await?;
    }
    let reopened = shared::store::sqlite::SqliteStore::open(&path, clock)?;
    let kept = reopened.get(Table::Main, "P", "kept").await?;
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(kept, Some(item("P", "kept", json!({"v": 1}), None)));
    Ok(())
}
