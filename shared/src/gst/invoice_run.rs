//! Where a month's invoice run is, in the month's partition (`TAXINVOICES#<yyyy-mm>`): its place in the
//! wallets' registry (`CURSOR`), an account's usage read so far when a run stopped in the middle of it
//! (`TALLY#<user id>`: a heavy account's month is read over several runs, never all in one), and the
//! accounts whose invoice failed (`HELD#<user id>`), retried by every run until it is issued, so one
//! account never holds up the month's other invoices. All of it expires with the run (`TaxInvoiceRun`).

use serde_json::json;

use super::invoices::InvoiceMonth;
use crate::error::ApiResult;
use crate::ports::Ports;
use crate::retention::ItemClass;
use crate::store::schema::{self, prefix, tax_invoice_run_pk};
use crate::store::{Condition, Delete, Item, Put, Query, SortKeyRange, Table};
use crate::usage::ModelTally;

/// Where a month's run is: the month, the last account it got to, whether it is done.
#[derive(Debug, Clone)]
pub struct InvoiceRun {
    pub month: InvoiceMonth,
    pub after: Option<String>,
    pub done: bool,
}

/// The run of the month before `now`'s, as saved (a fresh one when none is).
pub async fn run_place(ports: &Ports) -> ApiResult<InvoiceRun> {
    let month = InvoiceMonth::previous(ports.clock().now());
    let saved = ports.store().get(Table::Main, &tax_invoice_run_pk(&month.id()), schema::sk::CURSOR).await?;
    let attr = |name: &str| saved.as_ref().and_then(|r| r.attrs.get(name).cloned());
    Ok(InvoiceRun {
        month,
        after: attr("after").and_then(|a| a.as_str().map(str::to_owned)),
        done: attr("done").and_then(|d| d.as_bool()).unwrap_or(false),
    })
}

fn expires_at(ports: &Ports) -> Option<i64> {
    ports.config().retention.expiry(ItemClass::TaxInvoiceRun, ports.clock().now())
}

async fn put(ports: &Ports, month: InvoiceMonth, sk: &str, record: &impl serde::Serialize) -> ApiResult<()> {
    let item = Item::from_record(tax_invoice_run_pk(&month.id()), sk, record, expires_at(ports))?;
    Ok(ports.store().put(Put { table: Table::Main, item, condition: Condition::Always }).await?)
}

async fn delete(ports: &Ports, month: InvoiceMonth, sk: String) -> ApiResult<()> {
    let pk = tax_invoice_run_pk(&month.id());
    Ok(ports.store().delete(Delete { table: Table::Main, pk, sk, condition: Condition::Always }).await?)
}

/// Saves where the run is, for the next jobs run to carry on from.
pub async fn save_place(ports: &Ports, run: &InvoiceRun) -> ApiResult<()> {
    put(ports, run.month, schema::sk::CURSOR, &json!({ "after": run.after, "done": run.done })).await
}

/// The account's usage of the month read so far (an empty tally when no run started on it).
pub async fn tally(ports: &Ports, user_id: &str, month: InvoiceMonth) -> ApiResult<ModelTally> {
    let sk = schema::prefixed(prefix::INVOICE_TALLY, user_id);
    let saved = ports.store().get(Table::Main, &tax_invoice_run_pk(&month.id()), &sk).await?;
    Ok(saved.map(|item| item.record()).transpose()?.unwrap_or_default())
}

/// Keeps the tally of a run that stopped before reading all of the account's month.
pub async fn save_tally(ports: &Ports, user_id: &str, month: InvoiceMonth, tally: &ModelTally) -> ApiResult<()> {
    put(ports, month, &schema::prefixed(prefix::INVOICE_TALLY, user_id), tally).await
}

/// Drops a tally once its invoice is written (or none is due).
pub async fn drop_tally(ports: &Ports, user_id: &str, month: InvoiceMonth) -> ApiResult<()> {
    delete(ports, month, schema::prefixed(prefix::INVOICE_TALLY, user_id)).await
}

/// Holds back an account whose invoice failed, for later runs to retry. Returns whether it was held
/// already (then nobody needs telling again).
pub async fn hold_back(ports: &Ports, user_id: &str, month: InvoiceMonth, error: &str) -> ApiResult<bool> {
    let sk = schema::prefixed(prefix::INVOICE_HELD, user_id);
    let pk = tax_invoice_run_pk(&month.id());
    let held_already = ports.store().get(Table::Main, &pk, &sk).await?.is_some();
    put(ports, month, &sk, &json!({ "user_id": user_id, "error": error, "at": ports.clock().now() })).await?;
    Ok(held_already)
}

/// Accounts held back, at most `limit`.
pub async fn held(ports: &Ports, month: InvoiceMonth, limit: u32) -> ApiResult<Vec<String>> {
    let query = Query::new(Table::Main, tax_invoice_run_pk(&month.id()))
        .range(SortKeyRange::Prefix(prefix::INVOICE_HELD.into()))
        .limit(limit);
    let page = ports.store().query(query).await?;
    Ok(page.items.iter().filter_map(|i| i.sk.strip_prefix(prefix::INVOICE_HELD).map(str::to_owned)).collect())
}

/// Releases an account held back, once its invoice is issued (or none is due).
pub async fn release(ports: &Ports, user_id: &str, month: InvoiceMonth) -> ApiResult<()> {
    delete(ports, month, schema::prefixed(prefix::INVOICE_HELD, user_id)).await
}
