//! Refund vouchers (CGST Rule 51): an advance given back without a supply (a closed account's money returned
//! to its payment or paid out by bank, or a refund Razorpay made of a payment) gets a voucher reversing the
//! tax charged on it.
//! Written from a due marker the refund's own transaction leaves (`receipts::DueDocument`), like receipt
//! vouchers; the voucher's id follows from the refund's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::documents::{DocumentKind, DocumentLine, Draft, TaxDocument};
use super::tax::{SAC, SERVICE_DESCRIPTION, TaxSplit};
use crate::accounts::timestamp;
use crate::error::{ApiError, ApiResult};
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

/// Advances an operator paid back by bank transfer (a closed account's money Razorpay could no longer send
/// back to its payments): one refund voucher per payment the transfer gave money back to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvancesPaidOut {
    pub user_id: String,
    /// The payout's id: each payment's voucher is that of the refund `<payout id>_<payment id>`.
    pub payout_id: String,
    pub paid_at: DateTime<Utc>,
    pub parts: Vec<PaidOutPart>,
}

/// What a bank payout gave back of one payment: its credit, and the money (the credit with its GST).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaidOutPart {
    pub payment_id: String,
    pub credit_paise: i64,
    pub money_paise: i64,
}

impl AdvancesPaidOut {
    /// Each payment's part as a refund of its advance.
    pub fn refunds(&self) -> impl Iterator<Item = AdvanceRefunded> + '_ {
        self.parts.iter().map(|part| AdvanceRefunded {
            user_id: self.user_id.clone(),
            payment_id: part.payment_id.clone(),
            refund_id: format!("{}_{}", self.payout_id, part.payment_id),
            refunded_at: self.paid_at,
            credit_paise: part.credit_paise,
            money_paise: part.money_paise,
        })
    }
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
    let supplier = ports.config().supplier.as_ref().ok_or_else(|| {
        ApiError::Internal("no supplier is configured (INFEREX_SUPPLIER_*): refund vouchers cannot be issued".into())
    })?;
    // The recipient as the advance's voucher named it.
    let draft = Draft {
        id: refund_voucher_id(&refund.refund_id),
        kind: DocumentKind::RefundVoucher,
        user_id: refund.user_id.clone(),
        // Dated when the money went back, even when written later by the jobs.
        created_at: refund.refunded_at,
        recipient: receipt.recipient.clone(),
        lines: vec![line],
        references,
    };
    let document = TaxDocument::draft(supplier, draft);
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
