//! Document numbers: one consecutive series per kind of document per financial year (CGST Rule 46(b): "a
//! consecutive serial number not exceeding sixteen characters ... unique for a financial year"), as
//! `RV/2627/000001` (14 characters).
//!
//! Gap-free under concurrency, on both stores: a document is written first without a number and queued
//! (`TAXDOCS#UNNUMBERED`); numbering then takes the oldest queued documents of one series and, in one
//! transaction conditioned on the series' last number as read, gives them the next numbers, moves the
//! counter and unqueues them. A number exists only together with its document, so a process killed at any
//! point leaves no gap, and two numberers never give one number twice (the loser's condition fails, it
//! reads again). The counter (`TAXSERIES#<series>#<year>` / `COUNTER`) takes one write per batch of
//! documents, which follow top-ups, month ends and refunds, never calls.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::documents::{DOCUMENT_SK, DocumentKind, TaxDocument};
use crate::clock::FinancialYear;
use crate::error::ApiResult;
use crate::ports::Ports;
use crate::retention::ItemClass;
use crate::store::schema::{self, tax_document_pk, tax_series_pk};
use crate::store::{Condition, Conditional, Delete, Item, ItemStore, Put, Query, StoreResult, Table, Update, WriteOp};

/// Documents numbered in one transaction: each is an update and a delete, with the counter's write, within
/// the ten items DynamoDB Local takes in a transaction (DynamoDB itself takes 100).
const BATCH: u32 = 4;
/// Transactions one numbering call may lose to other numberers before it leaves the rest to them.
const ATTEMPTS: u32 = 50;
/// Batches one numbering call takes at most (a request stays bounded; the jobs drain any backlog).
const ROUNDS: u32 = 100;

/// The queue entry of a new, unnumbered document (written with it).
pub(super) fn queue_put(document: &TaxDocument, expires_at: i64) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(
            schema::UNNUMBERED_DOCUMENTS_PK,
            format!("{:013}#{}", document.created_at.timestamp_millis().max(0), document.id),
            &json!({ "document_id": document.id }),
            Some(expires_at),
        )?,
        condition: Condition::NotExists,
    }))
}

/// A document number: series, financial year, six-digit serial.
pub fn format_number(kind: DocumentKind, year: FinancialYear, serial: u64) -> String {
    format!("{}/{}/{serial:06}", kind.series(), year.short())
}

/// Numbers queued documents (oldest first), in batches, until none is left, `ATTEMPTS` transactions lost
/// to other numberers, or `ROUNDS` batches (what is left waits for the next caller or the jobs). Returns how
/// many this call numbered.
pub async fn number_queued(ports: &Ports) -> ApiResult<usize> {
    let mut numbered = 0;
    let mut lost = 0;
    for _ in 0..ROUNDS {
        let queue = Query::new(Table::Main, schema::UNNUMBERED_DOCUMENTS_PK).limit(BATCH);
        let queued = ports.store().query(queue).await?.items;
        if queued.is_empty() {
            break;
        }
        let batch = readable_batch(ports.store(), &queued).await?;
        let Some(first) = batch.first() else { continue };
        let series = (first.kind, first.year);
        let batch: Vec<&Queued> = batch.iter().filter(|q| (q.kind, q.year) == series).collect();
        match number_batch(ports, series, &batch).await? {
            Some(n) => numbered += n,
            None if lost + 1 >= ATTEMPTS => break,
            None => {
                lost += 1;
                // Someone else moved the series: give them the moment to finish, then read again.
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(lost % 7) * 3)).await;
            }
        }
    }
    Ok(numbered)
}

/// A document waiting for its number: its series (kind, and the financial year it was written in) and when.
struct Queued<'a> {
    kind: DocumentKind,
    year: FinancialYear,
    written_at: DateTime<Utc>,
    entry: &'a Item,
}

/// The queue entries whose documents wait for a number, with what the documents say of their series. An
/// entry naming no document, a missing one or one numbered already is dropped (said in the logs when it
/// names nothing numbered), so no entry can hold the queue up.
async fn readable_batch<'a>(store: &dyn ItemStore, queued: &'a [Item]) -> ApiResult<Vec<Queued<'a>>> {
    let mut batch = Vec::new();
    for item in queued {
        let id = item.attrs.get("document_id").and_then(Value::as_str);
        let document = match id {
            Some(id) => super::documents::get(store, id).await?,
            None => None,
        };
        match document {
            Some(d) if !d.is_numbered() => batch.push(Queued {
                kind: d.kind,
                year: FinancialYear::of(d.created_at),
                written_at: d.created_at,
                entry: item,
            }),
            found => {
                if found.is_none() {
                    tracing::error!(entry = %item.sk, "a queued tax document is missing: its entry is dropped");
                }
                store.delete(unqueue(item)).await.or_not_needed()?;
            }
        }
    }
    Ok(batch)
}

/// One transaction: the series' counter moved by the batch, each document given its number (dated when it
/// was written: the number only follows), its queue entry deleted. `None` when another numberer got there
/// first (a condition failed).
async fn number_batch(
    ports: &Ports,
    (kind, year): (DocumentKind, FinancialYear),
    batch: &[&Queued<'_>],
) -> ApiResult<Option<usize>> {
    let store = ports.store();
    let expires_at = ports.config().retention.expiry(ItemClass::TaxSeries, ports.clock().now()).unwrap_or(i64::MAX);
    let series_pk = tax_series_pk(kind.series(), year.0);
    let last = last_number(store, &series_pk).await?;
    let mut ops = Vec::new();
    let mut serial = last;
    for queued in batch {
        let Some(id) = queued.entry.attrs.get("document_id").and_then(Value::as_str) else { continue };
        serial += 1;
        ops.push(WriteOp::Update(number_update(id, format_number(kind, year, serial), year, queued.written_at)));
        ops.push(WriteOp::Delete(unqueue(queued.entry)));
    }
    let numbered = (serial - last) as usize;
    ops.push(counter_write(&series_pk, last, serial, expires_at)?);
    Ok(store.transact(ops).await.applied()?.map(|()| numbered))
}

async fn last_number(store: &dyn ItemStore, series_pk: &str) -> StoreResult<u64> {
    let counter = store.get(Table::Main, series_pk, schema::sk::COUNTER).await?;
    Ok(counter.and_then(|c| c.attrs.get("last").and_then(Value::as_u64)).unwrap_or(0))
}

/// The counter from `last` to `next`: created with the series' first batch, else moved only from `last`.
fn counter_write(series_pk: &str, last: u64, next: u64, expires_at: i64) -> StoreResult<WriteOp> {
    Ok(if last == 0 {
        WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(series_pk, schema::sk::COUNTER, &json!({ "last": next }), Some(expires_at))?,
            condition: Condition::NotExists,
        })
    } else {
        WriteOp::Update(
            Update::new(Table::Main, series_pk, schema::sk::COUNTER)
                .set("last", json!(next))
                .when(Condition::AttrEquals("last".into(), json!(last))),
        )
    })
}

/// A document given its number, its date of issue (when it was written) and its financial year. Only a
/// document still without a number (a second numberer's write fails).
fn number_update(id: &str, number: String, year: FinancialYear, issued_at: DateTime<Utc>) -> Update {
    Update::new(Table::Main, tax_document_pk(id), DOCUMENT_SK)
        .set("number", json!(number))
        .set("issued_at", json!(issued_at))
        .set("financial_year", json!(year.label()))
        // Absent: no document number is ever "-", so only a document without one is numbered.
        .when(Condition::AttrAbsentOrEquals("number".into(), json!("-")))
}

fn unqueue(item: &Item) -> Delete {
    Delete { table: Table::Main, pk: item.pk.clone(), sk: item.sk.clone(), condition: Condition::Exists }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_sixteen_characters() {
        let number = format_number(DocumentKind::ReceiptVoucher, FinancialYear(2026), 1);
        assert_eq!(number, "RV/2627/000001");
        assert!(format_number(DocumentKind::RefundVoucher, FinancialYear(2099), 99_999_999).len() <= 16);
    }
}
