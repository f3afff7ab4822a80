//! The main table's stream, read as Lambda's event source mappings read it: every shard from its start,
//! polled four times a second; each function gets the records its `FilterCriteria` match, in order, in
//! batches of its `BatchSize`, in DynamoDB's stream event format; records a function reports failed
//! (`batchItemFailures`), or a whole batch when the function fails, are retried up to its
//! `MaximumRetryAttempts`, then dropped with a warning (in AWS they go to the failure queue).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use bytes::Bytes;
use serde_json::{Value, json};

use shared::state::BoxError;

use super::instances::{Answer, Pool};
use super::template::StreamMapping;

const POLL_EVERY: Duration = Duration::from_millis(250);

/// A function fed by the stream.
pub struct Consumer {
    pub pool: Arc<Pool>,
    pub mapping: StreamMapping,
}

/// Reads the stream of `table` for ever, handing records to the consumers.
pub async fn run(
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
    consumers: Vec<Consumer>,
) {
    let mut reader = Reader { streams, iterators: BTreeMap::new(), finished: BTreeSet::new(), arn: None };
    loop {
        if reader.arn.is_none() {
            match dynamodb.describe_table().table_name(&table).send().await {
                Ok(described) => reader.arn = described.table.and_then(|t| t.latest_stream_arn),
                Err(e) => tracing::warn!(error = %e, "the table's stream cannot be found"),
            }
        }
        match reader.poll().await {
            Ok(records) if !records.is_empty() => {
                let events: Vec<Value> = records.iter().map(stream_record).collect();
                futures_util::future::join_all(consumers.iter().map(|c| deliver(c, &events))).await;
            }
            Ok(_) => tokio::time::sleep(POLL_EVERY).await,
            Err(e) => {
                tracing::warn!(error = %e, "reading the table's stream failed");
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    }
}

struct Reader {
    streams: aws_sdk_dynamodbstreams::Client,
    arn: Option<String>,
    /// Each open shard's next iterator.
    iterators: BTreeMap<String, String>,
    finished: BTreeSet<String>,
}

impl Reader {
    /// The records written since the last poll, over every shard.
    async fn poll(&mut self) -> Result<Vec<Record>, BoxError> {
        let Some(arn) = self.arn.clone() else { return Ok(Vec::new()) };
        let described = self.streams.describe_stream().stream_arn(&arn).send().await?;
        let shards = described.stream_description.and_then(|d| d.shards).unwrap_or_default();
        for shard in shards.into_iter().filter_map(|s| s.shard_id) {
            if self.finished.contains(&shard) || self.iterators.contains_key(&shard) {
                continue;
            }
            let iterator = self
                .streams
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(&shard)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator;
            match iterator {
                Some(iterator) => {
                    self.iterators.insert(shard, iterator);
                }
                None => {
                    self.finished.insert(shard);
                }
            }
        }
        let mut records = Vec::new();
        let shards: Vec<(String, String)> = self.iterators.iter().map(|(s, i)| (s.clone(), i.clone())).collect();
        for (shard, iterator) in shards {
            let got = self.streams.get_records().shard_iterator(iterator).limit(1000).send().await?;
            records.extend(got.records.unwrap_or_default());
            match got.next_shard_iterator {
                Some(next) => {
                    self.iterators.insert(shard, next);
                }
                None => {
                    self.iterators.remove(&shard);
                    self.finished.insert(shard);
                }
            }
        }
        Ok(records)
    }
}

/// Hands a consumer the records its filters match, in batches, with its retries.
async fn deliver(consumer: &Consumer, events: &[Value]) {
    let matching: Vec<&Value> = events.iter().filter(|e| accepts(&consumer.mapping.filters, e)).collect();
    for batch in matching.chunks(consumer.mapping.batch_size.max(1)) {
        let mut pending: Vec<&Value> = batch.to_vec();
        for attempt in 0..=consumer.mapping.max_retries {
            if attempt > 0 {
                tokio::time::sleep(POLL_EVERY * attempt).await;
            }
            pending = failed_records(consumer, &pending).await;
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            tracing::warn!(function = %consumer.pool.spec.name, records = pending.len(), "stream records dropped after their retries");
        }
    }
}

/// Invokes the consumer with `records`; returns the ones to try again.
async fn failed_records<'a>(consumer: &Consumer, records: &[&'a Value]) -> Vec<&'a Value> {
    let event = json!({ "Records": records });
    match consumer.pool.invoke(Bytes::from(event.to_string())).await {
        Answer::Buffered(payload) => {
            let answer: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            let failed: BTreeSet<&str> = answer
                .get("batchItemFailures")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| f.get("itemIdentifier").and_then(Value::as_str))
                .collect();
            records.iter().copied().filter(|r| failed.contains(sequence_number(r))).collect()
        }
        _ => records.to_vec(),
    }
}

fn sequence_number(record: &Value) -> &str {
    record.pointer("/dynamodb/SequenceNumber").and_then(Value::as_str).unwrap_or_default()
}

/// Whether any filter pattern matches (no filters: every record).
fn accepts(filters: &[Value], event: &Value) -> bool {
    filters.is_empty() || filters.iter().any(|pattern| matches(pattern, event))
}

/// Event filtering's pattern language, as far as the template uses it: nested objects, lists of accepted
/// values, and `{"prefix": "..."}`.
fn matches(pattern: &Value, event: &Value) -> bool {
    match pattern {
        Value::Object(fields) => {
            fields.iter().all(|(key, wanted)| matches(wanted, event.get(key).unwrap_or(&Value::Null)))
        }
        Value::Array(accepted) => accepted.iter().any(|option| match option {
            Value::Object(rule) => rule
                .get("prefix")
                .and_then(Value::as_str)
                .is_some_and(|prefix| event.as_str().is_some_and(|s| s.starts_with(prefix))),
            literal => literal == event,
        }),
        literal => literal == event,
    }
}

/// A stream record in the format Lambda hands it to a function.
fn stream_record(record: &Record) -> Value {
    let change = record.dynamodb.as_ref();
    let keys: serde_json::Map<String, Value> = change
        .and_then(|c| c.keys.as_ref())
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.clone(), attribute(value)))
        .collect();
    json!({
        "eventID": record.event_id,
        "eventName": record.event_name.as_ref().map(|n| n.as_str()),
        "eventVersion": record.event_version,
        "eventSource": "aws:dynamodb",
        "awsRegion": super::resources::REGION,
        "dynamodb": {
            "ApproximateCreationDateTime": change.and_then(|c| c.approximate_creation_date_time).map(|t| t.secs()),
            "Keys": keys,
            "SequenceNumber": change.and_then(|c| c.sequence_number.clone()),
            "SizeBytes": change.and_then(|c| c.size_bytes),
            "StreamViewType": change.and_then(|c| c.stream_view_type.as_ref()).map(|v| v.as_str()),
        },
        "eventSourceARN": "arn:aws:dynamodb:ap-south-1:000000000000:table/fleet-main/stream/fleet",
    })
}

fn attribute(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_lambda_event_filtering_does() {
        let outbox: Value =
            serde_json::from_str(r#"{"eventName":["INSERT"],"dynamodb":{"Keys":{"pk":{"S":["OUTBOX"]}}}}"#)
                .unwrap_or_default();
        let exports: Value =
            serde_json::from_str(r#"{"eventName":["INSERT"],"dynamodb":{"Keys":{"sk":{"S":[{"prefix":"EXPORT#"}]}}}}"#)
                .unwrap_or_default();
        let record = |name: &str, pk: &str, sk: &str| json!({"eventName": name, "dynamodb": {"Keys": {"pk": {"S": pk}, "sk": {"S": sk}}}});
        assert!(matches(&outbox, &record("INSERT", "OUTBOX", "x")));
        assert!(!matches(&outbox, &record("REMOVE", "OUTBOX", "x")));
        assert!(!matches(&outbox, &record("INSERT", "USER#1", "x")));
        assert!(matches(&exports, &record("INSERT", "USER#1", "EXPORT#2")));
        assert!(!matches(&exports, &record("INSERT", "USER#1", "EXPORTS")));
        assert!(accepts(&[], &record("MODIFY", "A", "B")));
    }
}
