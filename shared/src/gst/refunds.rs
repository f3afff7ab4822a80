//! Refund vouchers (CGST Rule 51): an advance given back without a supply (a closed account's money returned
//! to its payment, or a refund Razorpay made of a payment) gets a voucher reversing the tax charged on it.
//! Written from a due marker the refund's own transaction leaves (`receipts::DueDocument`), like receipt
//! vouchers; the voucher's id follows from the refund's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::documents::{DocumentKind, DocumentLine, TaxDocument};
use super::tax::{SAC, SERVICE_DESCRIPTION, TaxSplit};
use super::words::amount_in_words;
use crate::accounts::timestamp;
use crate::error::ApiResult;
use crate::ports::Ports;
use crate::retention::ItemClass;
use crate::store::WriteOp;

/// An advance given back: the credit it was and the money that went (the credit with its GST).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvanceRefunded {
    pub user_id: String,
    pub payment_id: String,
    pub refund_id: String,
    pub refunded_at: DateTime<Utc>,
    pub credit_paise: i64,
    pub money_paise: i64,
}

pub fn refund_voucher_id(refund_id: &str) -> String {
    format!("rf_{refund_id}")
}

/// The tax on the money given back, split as the receipt voucher charged it: the part above the credit.
fn reversed(refund: &AdvanceRefunded, intra_state: bool) -> TaxSplit {
    let taxable = refund.credit_paise.max(0);
    let tax = (refund.money_paise - taxable).max(0);
    let (cgst, sgst, igst) = if intra_state { (tax / 2, tax - tax / 2, 0) } else { (0, 0, tax) };
    TaxSplit {
        taxable_paise: taxable,
        cgst_paise: cgst,
        sgst_paise: sgst,
        igst_paise: igst,
        total_paise: taxable + tax,
    }
}

/// Writes the voucher of a refund (with `extra` in its transaction); nothing for a payment that had no
/// receipt voucher (it was made before top-ups carried GST: no tax to reverse). Returns whether it wrote one.
pub(super) async fn issue(ports: &Ports, refund: &AdvanceRefunded, extra: Vec<WriteOp>) -> ApiResult<bool> {
    let store = ports.store();
    let receipt_id = super::receipts::receipt_voucher_id(&refund.payment_id);
    let Some(receipt) = super::documents::get(store, &receipt_id).await? else { return Ok(false) };
    let tax = reversed(refund, receipt.is_intra_state());
    let mut references = Map::new();
    references.insert("payment_id".into(), json!(refund.payment_id));
    references.insert("refund_id".into(), json!(refund.refund_id));
    references.insert("refunded_at".into(), json!(timestamp(refund.refunded_at)));
    references.insert("receipt_voucher".into(), json!(receipt.number.clone().unwrap_or(receipt.id.clone())));
    let line = DocumentLine {
        description: format!("Refund of an advance received for {SERVICE_DESCRIPTION}"),
        sac: SAC.into(),
        quantity: None,
        unit: None,
        tax,
    };
    let document = TaxDocument {
        id: refund_voucher_id(&refund.refund_id),
        kind: DocumentKind::RefundVoucher,
        user_id: refund.user_id.clone(),
        number: None,
        issued_at: None,
        financial_year: None,
        // Dated when the money went back, even when written later by the jobs.
        created_at: refund.refunded_at,
        // Our details as configured now; the recipient as the advance's voucher named it.
        supplier: ports.config().supplier.as_ref().map_or(receipt.supplier.clone(), super::Party::supplier),
        place_of_supply: receipt.place_of_supply.clone(),
        recipient: receipt.recipient.clone(),
        reverse_charge: false,
        lines: vec![line],
        totals: tax,
        total_in_words: amount_in_words(tax.total_paise),
        references,
        signatory: ports.config().supplier.as_ref().map_or(receipt.signatory.clone(), |s| s.signatory.clone()),
    };
    super::advances::ensure(ports, &refund.user_id).await?;
    let unadjusted = super::advances::unadjusted(store, &refund.user_id).await?;
    let mut ops = extra;
    let given_back = unadjusted.min(tax.taxable_paise);
    if given_back > 0 {
        ops.push(super::advances::taken(ports, &refund.user_id, given_back));
    }
    let expires_at = ports.config().retention.expiry(ItemClass::TaxDocument, document.created_at).unwrap_or(i64::MAX);
    super::documents::create_or_found(store, &document, expires_at, ops).await
}
