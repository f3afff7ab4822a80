//! A counting pass-through in front of DynamoDB Local (`INFEREX_FLEET_COUNT_WRITES=true`): the functions'
//! requests go through it unchanged, and every item a request writes (`PutItem`, `UpdateItem`,
//! `DeleteItem`, each part of `TransactWriteItems` including its condition checks, which take a write's
//! capacity on their item, and `BatchWriteItem`) is counted per item and per second. `GET /_fleet/writes`
//! reports the total and the busiest item's highest writes in one second: DynamoDB serves about 1,000
//! writes a second on one item, so that figure must stay bounded whatever the traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use shared::state::BoxError;

/// Items tracked at most (a benchmark step writes far fewer); past it, new items are not counted per item.
const ITEMS_TRACKED: usize = 200_000;

#[derive(Default)]
struct Counts {
    writes: u64,
    requests: u64,
    /// Per item: the second being counted, its count, and the highest count of any second.
    items: HashMap<String, (u64, u32, u32)>,
    untracked: u64,
}

#[derive(Clone)]
pub struct WriteCounter {
    target: String,
    http: reqwest::Client,
    counts: Arc<Mutex<Counts>>,
}

impl WriteCounter {
    /// A counter forwarding to DynamoDB at `target`.
    pub fn new(target: &str) -> Self {
        Self { target: target.trim_end_matches('/').to_owned(), http: reqwest::Client::new(), counts: Arc::default() }
    }

    /// Serves the pass-through on a loopback port of its own; returns its endpoint.
    pub async fn serve(&self) -> Result<String, BoxError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let app = Router::new().fallback(forward).with_state(self.clone());
        shared::tasks::spawn("dynamodb write counter", async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the DynamoDB write counter stopped");
            }
        });
        Ok(endpoint)
    }

    /// `{"writes", "requests", "busiest": {"item", "writes_per_second"}}` since the last reset.
    pub fn report(&self) -> Value {
        let counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let busiest = counts.items.iter().max_by_key(|(_, (_, _, max))| *max);
        json!({
            "writes": counts.writes,
            "requests": counts.requests,
            "untracked": counts.untracked,
            "busiest": busiest.map(|(item, (_, _, max))| json!({"item": item, "writes_per_second": max})),
        })
    }

    pub fn reset(&self) {
        *self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Counts::default();
    }

    fn count(&self, target: &str, body: &[u8]) {
        let Some(operation) = target.strip_prefix("DynamoDB_20120810.") else { return };
        let Ok(request) = serde_json::from_slice::<Value>(body) else { return };
        let items = written_items(operation, &request);
        if items.is_empty() {
            return;
        }
        let second = chrono::Utc::now().timestamp().max(0) as u64;
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.requests += 1;
        for item in items {
            counts.writes += 1;
            if counts.items.len() >= ITEMS_TRACKED && !counts.items.contains_key(&item) {
                counts.untracked += 1;
                continue;
            }
            let entry = counts.items.entry(item).or_insert((second, 0, 0));
            if entry.0 != second {
                *entry = (second, 0, entry.2);
            }
            entry.1 += 1;
            entry.2 = entry.2.max(entry.1);
        }
    }
}

/// The items a write request writes, as `table pk sk`.
fn written_items(operation: &str, request: &Value) -> Vec<String> {
    let key = |table: &Value, item: &Value| -> Option<String> {
        Some(format!("{} {} {}", table.as_str()?, item.pointer("/pk/S")?.as_str()?, item.pointer("/sk/S")?.as_str()?))
    };
    match operation {
        "PutItem" => key(&request["TableName"], &request["Item"]).into_iter().collect(),
        "UpdateItem" | "DeleteItem" => key(&request["TableName"], &request["Key"]).into_iter().collect(),
        "TransactWriteItems" => request["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|part| {
                let (_, op) = part.as_object()?.iter().next()?;
                key(&op["TableName"], op.get("Key").or_else(|| op.get("Item"))?)
            })
            .collect(),
        "BatchWriteItem" => request["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(table, writes)| {
                let table = Value::String(table.clone());
                writes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|w| {
                        let item = w.pointer("/PutRequest/Item").or_else(|| w.pointer("/DeleteRequest/Key"))?;
                        key(&table, item)
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn forward(State(counter): State<WriteCounter>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    counter.count(&target, &body);
    let mut request = counter.http.post(&counter.target).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            out.insert(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, out, bytes).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_written_item_of_a_request_is_named() {
        let transaction = json!({"TransactItems": [
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "USER#1"}, "sk": {"S": "WALLET"}}}},
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "USER#1"}, "sk": {"S": "LEDGER#2"}, "amount": {"N": "1"}}}},
            {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "USER#1"}, "sk": {"S": "PROFILE"}}}},
        ]});
        assert_eq!(
            written_items("TransactWriteItems", &transaction),
            vec!["t USER#1 WALLET", "t USER#1 LEDGER#2", "t USER#1 PROFILE"]
        );
        let update = json!({"TableName": "t", "Key": {"pk": {"S": "A"}, "sk": {"S": "B"}}});
        assert_eq!(written_items("UpdateItem", &update), vec!["t A B"]);
        assert!(written_items("GetItem", &update).is_empty());
    }

    #[test]
    fn the_busiest_item_is_its_highest_second() {
        let counter = WriteCounter::new("http://127.0.0.1:1");
        let body = serde_json::to_vec(&json!({"TableName": "t", "Key": {"pk": {"S": "A"}, "sk": {"S": "B"}}}))
            .unwrap_or_default();
        for _ in 0..5 {
            counter.count("DynamoDB_20120810.UpdateItem", &body);
        }
        counter.count("DynamoDB_20120810.GetItem", &body);
        let report = counter.report();
        assert_eq!(report["writes"], 5);
        assert!(report["busiest"]["writes_per_second"].as_u64().is_some_and(|n| (1..=5).contains(&n)));
        counter.reset();
        assert_eq!(counter.report()["writes"], 0);
    }
}
