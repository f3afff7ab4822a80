//! Receipt vouchers (CGST Rule 50): GST on a service is due when an advance is received (CGST Act s.13(2)),
//! so every captured top-up gets a voucher naming the advance and the tax charged on it.
//!
//! The credit that takes the payment writes a due marker (`TAXDOCS#DUE` / `<payment id>`) holding what the
//! voucher needs; issuing writes the voucher and deletes the marker in one transaction, so a process killed
//! between the two leaves the marker for the next delivery of the payment or the jobs, and a payment never
//! gets two vouchers (the voucher's id is the payment's).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::documents::{DocumentKind, DocumentLine, Party, TaxDocument, create};
use super::tax::{SAC, SERVICE_DESCRIPTION, TaxSplit};
use super::words::amount_in_words;
use crate::accounts::timestamp;
use crate::error::{ApiError, ApiResult};
use crate::ports::Ports;
use crate::retention::ItemClass;
use crate::store::schema;
use crate::store::{Condition, Delete, Item, Put, Query, StoreResult, Table, WriteOp};

/// Marker entries the jobs issue per run at most (the rest wait for the next).
const DUE_PER_RUN: u32 = 200;

/// An advance received: what its receipt voucher says, as the credit records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvanceReceived {
    pub user_id: String,
    pub payment_id: String,
    pub topup_id: String,
    pub received_at: DateTime<Utc>,
    pub tax: TaxSplit,
    pub recipient: Party,
}

/// The voucher of a payment: its id follows from the payment's.
pub fn receipt_voucher_id(payment_id: &str) -> String {
    format!("rv_{payment_id}")
}

/// The due marker, written in the credit's transaction.
pub fn due_put(advance: &AdvanceReceived, expires_at: i64) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(schema::RECEIPTS_DUE_PK, &advance.payment_id, advance, Some(expires_at))?,
        condition: Condition::Always,
    }))
}

fn voucher(ports: &Ports, advance: &AdvanceReceived) -> ApiResult<TaxDocument> {
    let supplier = ports.config().supplier.as_ref().ok_or_else(|| {
        ApiError::Internal("no supplier is configured (INFEREX_SUPPLIER_*): receipt vouchers cannot be issued".into())
    })?;
    let mut references = Map::new();
    references.insert("payment_id".into(), json!(advance.payment_id));
    references.insert("topup_id".into(), json!(advance.topup_id));
    references.insert("received_at".into(), json!(timestamp(advance.received_at)));
    references.insert("credit_paise".into(), json!(advance.tax.taxable_paise));
    let line = DocumentLine {
        description: format!("Advance received for {SERVICE_DESCRIPTION}: prepaid wallet credit"),
        sac: SAC.into(),
        quantity: None,
        unit: None,
        tax: advance.tax,
    };
    Ok(TaxDocument {
        id: receipt_voucher_id(&advance.payment_id),
        kind: DocumentKind::ReceiptVoucher,
        user_id: advance.user_id.clone(),
        number: None,
        issued_at: None,
        financial_year: None,
        created_at: ports.clock().now(),
        supplier: Party::supplier(supplier),
        place_of_supply: TaxDocument::place_of_supply_of(&advance.recipient),
        recipient: advance.recipient.clone(),
        reverse_charge: false,
        lines: vec![line],
        totals: advance.tax,
        total_in_words: amount_in_words(advance.tax.total_paise),
        references,
        signatory: supplier.signatory.clone(),
    })
}

fn undue(payment_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: schema::RECEIPTS_DUE_PK.into(),
        sk: payment_id.to_owned(),
        condition: Condition::Always,
    })
}

/// Issues the voucher a due marker asks for (nothing when there is none: issued already, or an untaxed
/// payment), then numbers what is queued.
pub async fn issue_receipt(ports: &Ports, payment_id: &str) -> ApiResult<()> {
    let store = ports.store();
    if let Some(marker) = store.get(Table::Main, schema::RECEIPTS_DUE_PK, payment_id).await? {
        issue_from(ports, &marker).await?;
    }
    super::numbering::number_queued(ports).await?;
    Ok(())
}

async fn issue_from(ports: &Ports, marker: &Item) -> ApiResult<()> {
    let store = ports.store();
    let advance: AdvanceReceived = marker.record()?;
    let document = voucher(ports, &advance)?;
    let expires_at = ports.config().retention.expiry(ItemClass::TaxDocument, document.created_at).unwrap_or(i64::MAX);
    if !create(store, &document, expires_at, vec![undue(&advance.payment_id)]).await? {
        // Issued already (a process stopped before dropping the marker): the marker goes.
        store.transact(vec![undue(&advance.payment_id)]).await?;
    } else {
        tracing::info!(user_id = %advance.user_id, payment_id = %advance.payment_id, "receipt voucher issued");
    }
    Ok(())
}

/// The jobs: vouchers left due by a process that stopped after the credit, then the numbering.
pub async fn issue_due(ports: &Ports) -> ApiResult<usize> {
    let due = ports.store().query(Query::new(Table::Main, schema::RECEIPTS_DUE_PK).limit(DUE_PER_RUN)).await?;
    for marker in &due.items {
        // One marker that cannot be issued (unreadable, say) holds up none of the others.
        if let Err(e) = issue_from(ports, marker).await {
            tracing::error!(payment_id = %marker.sk, error = %e, "a receipt voucher due could not be issued");
        }
    }
    super::numbering::number_queued(ports).await
}
