//! Receipt vouchers (CGST Rule 50): GST on a service is due when an advance is received (CGST Act s.13(2)),
//! so every captured top-up gets a voucher naming the advance and the tax charged on it. And the due
//! markers every document written from a money event goes through.
//!
//! The credit that takes the payment (or the refund that gives money back) writes a due marker
//! (`TAXDOCS#DUE` / `<document id>`) holding what the document needs; writing the document deletes the
//! marker in the same transaction, so a process killed between the two leaves the marker for the next
//! delivery of the event or the jobs, and no event gets two documents (the document's id is the event's).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::documents::{DocumentKind, DocumentLine, Draft, Party, TaxDocument};
use super::refunds::{AdvanceRefunded, AdvancesPaidOut, refund_voucher_id};
use super::tax::{SAC, SERVICE_DESCRIPTION, TaxSplit};
use crate::accounts::timestamp;
use crate::error::{ApiError, ApiResult};
use crate::ports::Ports;
use crate::retention::ItemClass;
use crate::store::schema;
use crate::store::{Condition, Delete, Item, Put, Query, StoreResult, Table, WriteOp};

/// Markers the jobs write documents for per run at most (the rest wait for the next).
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

/// A document due: what the money event that asks for it recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "document", rename_all = "snake_case")]
pub enum DueDocument {
    ReceiptVoucher(AdvanceReceived),
    RefundVoucher(AdvanceRefunded),
    /// A bank payout: a refund voucher for each payment it gave money back to.
    PayoutRefundVouchers(AdvancesPaidOut),
}

impl DueDocument {
    pub fn id(&self) -> String {
        match self {
            DueDocument::ReceiptVoucher(advance) => receipt_voucher_id(&advance.payment_id),
            DueDocument::RefundVoucher(refund) => refund_voucher_id(&refund.refund_id),
            DueDocument::PayoutRefundVouchers(paid_out) => payout_marker_id(&paid_out.payout_id),
        }
    }
}

/// The voucher of a payment: its id follows from the payment's.
pub fn receipt_voucher_id(payment_id: &str) -> String {
    format!("rv_{payment_id}")
}

/// The due marker, written in the money event's transaction.
pub fn due_put(due: &DueDocument, expires_at: i64) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(schema::RECEIPTS_DUE_PK, due.id(), due, Some(expires_at))?,
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
    let draft = Draft {
        id: receipt_voucher_id(&advance.payment_id),
        kind: DocumentKind::ReceiptVoucher,
        user_id: advance.user_id.clone(),
        // Dated when the advance was received (Rule 50: on receipt), even when written later by the jobs.
        created_at: advance.received_at,
        recipient: advance.recipient.clone(),
        lines: vec![line],
        references,
    };
    Ok(TaxDocument::draft(supplier, draft))
}

fn undue(document_id: &str) -> WriteOp {
    WriteOp::Delete(Delete {
        table: Table::Main,
        pk: schema::RECEIPTS_DUE_PK.into(),
        sk: document_id.to_owned(),
        condition: Condition::Always,
    })
}

/// Writes the receipt voucher a credited payment's marker asks for (nothing when there is none: written
/// already, or an untaxed payment), then numbers what is queued.
pub async fn issue_receipt(ports: &Ports, payment_id: &str) -> ApiResult<()> {
    issue_due_document(ports, &receipt_voucher_id(payment_id)).await
}

/// Writes the refund voucher a refund's marker asks for, then numbers what is queued.
pub async fn issue_refund(ports: &Ports, refund_id: &str) -> ApiResult<()> {
    issue_due_document(ports, &refund_voucher_id(refund_id)).await
}

/// Writes the refund vouchers a bank payout's marker asks for, then numbers what is queued.
pub async fn issue_payout_vouchers(ports: &Ports, payout_id: &str) -> ApiResult<()> {
    issue_due_document(ports, &payout_marker_id(payout_id)).await
}

/// The due marker of a bank payout's refund vouchers.
fn payout_marker_id(payout_id: &str) -> String {
    format!("payout_{payout_id}")
}

async fn issue_due_document(ports: &Ports, document_id: &str) -> ApiResult<()> {
    if let Some(marker) = ports.store().get(Table::Main, schema::RECEIPTS_DUE_PK, document_id).await? {
        issue_from(ports, &marker).await?;
    }
    super::numbering::number_queued(ports).await?;
    Ok(())
}

async fn issue_from(ports: &Ports, marker: &Item) -> ApiResult<()> {
    let due: DueDocument = marker.record()?;
    let written = match &due {
        DueDocument::ReceiptVoucher(advance) => write_receipt(ports, advance).await?,
        DueDocument::RefundVoucher(refund) => {
            receipt_first(ports, &refund.payment_id).await?;
            super::refunds::issue(ports, refund, vec![undue(&due.id())]).await?
        }
        DueDocument::PayoutRefundVouchers(paid_out) => {
            // Each voucher's id follows from the payment's part, so a run stopped halfway writes none twice;
            // the marker goes once all are written.
            for refund in paid_out.refunds() {
                receipt_first(ports, &refund.payment_id).await?;
                super::refunds::issue(ports, &refund, Vec::new()).await?;
            }
            false
        }
    };
    if !written {
        // Written already (a process stopped before dropping the marker), or nothing to write: it goes.
        ports.store().transact(vec![undue(&due.id())]).await?;
    } else {
        tracing::info!(document_id = %due.id(), "tax document written");
    }
    Ok(())
}

/// The advance's receipt voucher, when it is still due (a refund that came before its payment's credit):
/// a refund voucher reverses what that voucher charged.
async fn receipt_first(ports: &Ports, payment_id: &str) -> ApiResult<()> {
    let receipt = receipt_voucher_id(payment_id);
    if let Some(receipt_due) = ports.store().get(Table::Main, schema::RECEIPTS_DUE_PK, &receipt).await? {
        Box::pin(issue_from(ports, &receipt_due)).await?;
    }
    Ok(())
}

/// The voucher, the marker's deletion and the advance's taxed amount, in one transaction.
async fn write_receipt(ports: &Ports, advance: &AdvanceReceived) -> ApiResult<bool> {
    let document = voucher(ports, advance)?;
    let expires_at = ports.config().retention.expiry(ItemClass::TaxDocument, document.created_at).unwrap_or(i64::MAX);
    super::advances::ensure(ports, &advance.user_id).await?;
    let extra =
        vec![undue(&document.id), super::advances::received(ports, &advance.user_id, advance.tax.taxable_paise)];
    super::documents::create_or_found(ports.store(), &document, expires_at, extra).await
}

/// The jobs: documents left due by a process that stopped after its money event, then the numbering.
pub async fn issue_due(ports: &Ports) -> ApiResult<usize> {
    let due = ports.store().query(Query::new(Table::Main, schema::RECEIPTS_DUE_PK).limit(DUE_PER_RUN)).await?;
    for marker in &due.items {
        // One marker that cannot be issued (unreadable, say) holds up none of the others.
        if let Err(e) = issue_from(ports, marker).await {
            tracing::error!(document_id = %marker.sk, error = %e, "a tax document due could not be written");
        }
    }
    super::numbering::number_queued(ports).await
}
