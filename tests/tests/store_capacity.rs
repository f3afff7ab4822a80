//! The DynamoDB adapter counts the capacity units DynamoDB reports for each request, reads and writes apart
//! (what `make bench-fleet` prints per call, and what an on-demand table bills). Alone in its test binary:
//! the counters are the process's.

use std::sync::Arc;

use serde_json::{Map, Value};
use shared::clock::ManualClock;
use shared::store::dynamo::capacity;
use shared::store::{Condition, Item, ItemStore, Put, StoreError, Table, WriteOp};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn item(sk: &str, bytes: usize) -> Item {
    let mut attrs = Map::new();
    attrs.insert("padding".into(), Value::String("x".repeat(bytes)));
    Item { pk: "CAPACITY#test".into(), sk: sk.into(), attrs, expires_at: None }
}

fn grew(before: capacity::Consumed) -> (f64, f64) {
    let now = capacity::consumed();
    (now.read_units - before.read_units, now.write_units - before.write_units)
}

#[tokio::test]
async fn every_request_adds_the_units_dynamodb_reports() -> TestResult {
    let store = shared::testing::dynamo_store(Arc::new(ManualClock::starting_now())).await?;
    let before = capacity::consumed();
    // 2.5 KB: three write units, as DynamoDB rounds each started KB up.
    store.put(Put { table: Table::Main, item: item("A", 2_500), condition: Condition::Always }).await?;
    assert_eq!(grew(before), (0.0, 3.0), "a put of 2.5 KB");
    let before = capacity::consumed();
    store.get(Table::Main, "CAPACITY#test", "A").await?;
    assert_eq!(grew(before), (1.0, 0.0), "a strongly consistent read under 4 KB");
    let before = capacity::consumed();
    let ops = vec![
        WriteOp::Put(Put { table: Table::Main, item: item("B", 100), condition: Condition::Always }),
        WriteOp::Put(Put { table: Table::Main, item: item("C", 100), condition: Condition::Always }),
    ];
    store.transact(ops).await?;
    assert_eq!(grew(before), (0.0, 4.0), "two small items in a transaction: two units each");
    let before = capacity::consumed();
    let refused = store.put(Put { table: Table::Main, item: item("A", 100), condition: Condition::NotExists }).await;
    assert!(matches!(refused, Err(StoreError::ConditionFailed)), "{refused:?}");
    assert_eq!(grew(before), (0.0, 1.0), "a refused conditional write is billed: counted as one unit");
    Ok(())
}
