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
use crate::store::{
    Condition, Conditional, Delete, ExpiryChange, Item, ItemStore, Put, Query, StoreResult, Table, Update, WriteOp,
};

/// Documents numbered in one transaction: each is two updates (the document, its list entry's expiry) and a
/// delete, with the counter's write, within the ten items DynamoDB Local takes in a transaction (DynamoDB
/// itself takes 100).
const BATCH: u32 = 3;
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
            &json!({ "document_id": document.id, "user_id": document.user_id, "index_sk": super::documents::index_sk(document) }),
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
        let Some((kind, _)) = batch.first() else { continue };
        let kind = *kind;
        let batch: Vec<&(DocumentKind, &Item)> = batch.iter().filter(|(k, _)| *k == kind).collect();
        match number_batch(ports, kind, &batch).await? {
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

/// The queue entries whose documents wait for a number, with their kind (read from the document). An entry
/// naming no document, a missing one or one numbered already is dropped (said in the logs when it names
/// nothing numbered), so no entry can hold the queue up.
async fn readable_batch<'a>(store: &dyn ItemStore, queued: &'a [Item]) -> ApiResult<Vec<(DocumentKind, &'a Item)>> {
    let mut batch = Vec::new();
    for item in queued {
        let id = item.attrs.get("document_id").and_then(Value::as_str);
        let document = match id {
            Some(id) => super::documents::get(store, id).await?,
            None => None,
        };
        match document {
            Some(d) if !d.is_numbered() => batch.push((d.kind, item)),
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

/// One transaction: the series' counter moved by the batch, each document given its number, its queue entry
/// deleted. `None` when another numberer got there first (a condition failed).
async fn number_batch(ports: &Ports, kind: DocumentKind, batch: &[&(DocumentKind, &Item)]) -> ApiResult<Option<usize>> {
    let store = ports.store();
    let now = ports.clock().now();
    let year = FinancialYear::of(now);
    let expires_at = ports.config().retention.expiry(ItemClass::TaxDocument, now).unwrap_or(i64::MAX);
    let series_pk = tax_series_pk(kind.series(), year.0);
    let last = last_number(store, &series_pk).await?;
    let mut ops = Vec::new();
    let mut serial = last;
    for (_, item) in batch {
        let Some(id) = item.attrs.get("document_id").and_then(Value::as_str) else { continue };
        serial += 1;
        ops.push(WriteOp::Update(number_update(id, format_number(kind, year, serial), year, now, expires_at)));
        // The list entry is kept as long as the document, from the year it is numbered in.
        let index =
            (item.attrs.get("user_id").and_then(Value::as_str), item.attrs.get("index_sk").and_then(Value::as_str));
        if let (Some(user_id), Some(index_sk)) = index {
            let update = Update::new(Table::Main, crate::accounts::user_pk(user_id), index_sk);
            ops.push(WriteOp::Update(update.expiry(ExpiryChange::Set(expires_at))));
        }
        ops.push(WriteOp::Delete(unqueue(item)));
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

/// A document given its number, its issue time and its financial year; kept eight financial years after
/// that one. Only a document still without a number (a second numberer's write fails).
fn number_update(id: &str, number: String, year: FinancialYear, now: DateTime<Utc>, expires_at: i64) -> Update {
    Update::new(Table::Main, tax_document_pk(id), DOCUMENT_SK)
        .set("number", json!(number))
        .set("issued_at", json!(now))
        .set("financial_year", json!(year.label()))
        .expiry(ExpiryChange::Set(expires_at))
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
