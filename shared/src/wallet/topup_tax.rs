//! GST on a top-up (an advance for a service, taxed when received: CGST Act s.13(2)): the customer asks for a
//! credit, the order is for the credit plus GST at the place of supply their billing profile names, and the
//! captured payment's receipt voucher is issued from what the top-up recorded when it was ordered.

use chrono::{DateTime, Utc};

use super::topups::Topup;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gst::receipts::{AdvanceReceived, DueDocument, due_put};
use crate::gst::tax::is_intra_state;
use crate::gst::{Party, TaxSplit};
use crate::ports::Ports;
use crate::store::{StoreResult, WriteOp};

/// The tax on a credit of `credit_paise` for the account, and the recipient the documents will name: its
/// billing profile now (409 `billing_profile_required` without one).
pub(super) async fn order_terms(ports: &Ports, user_id: &str, credit_paise: i64) -> ApiResult<(TaxSplit, Party)> {
    let supplier = ports.config().supplier.as_ref().ok_or_else(|| {
        ApiError::Unavailable("top-ups are not available: no supplier is configured for tax documents".into())
    })?;
    let Some(profile) = crate::billing::profile(ports.store(), user_id).await? else {
        return Err(ApiError::Conflict {
            code: ErrorCode::BillingProfileRequired,
            message: "set a billing profile first (PUT /v1/account/billing-profile): every top-up gets a GST receipt voucher in its name".into(),
            param: None,
        });
    };
    let tax = TaxSplit::on(credit_paise, is_intra_state(&supplier.state_code, &profile.state_code));
    Ok((tax, Party::recipient(&profile)))
}

/// The money a top-up's payment must bring: the credit plus its GST (an order made before GST was charged
/// on top-ups: the credit alone).
pub(super) fn paid_paise(topup: &Topup) -> i64 {
    topup.tax.map_or(topup.amount_paise, |t| t.total_paise)
}

/// The receipt voucher's due marker, written with the credit (none for an untaxed order).
pub(super) fn receipt_due(
    topup: &Topup,
    payment_id: &str,
    now: DateTime<Utc>,
    expires_at: i64,
) -> StoreResult<Option<WriteOp>> {
    let (Some(tax), Some(recipient)) = (topup.tax, topup.recipient.clone()) else { return Ok(None) };
    let advance = AdvanceReceived {
        user_id: topup.user_id.clone(),
        payment_id: payment_id.to_owned(),
        topup_id: topup.id.clone(),
        received_at: now,
        tax,
        recipient,
    };
    due_put(&DueDocument::ReceiptVoucher(advance), expires_at).map(Some)
}
