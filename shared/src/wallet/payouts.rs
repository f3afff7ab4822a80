//! A closed account's refund request paid out by bank transfer, by an operator, for what Razorpay could not
//! send back to the account's payments. The transfer carries the credit owed and the GST each payment was
//! charged on it (the customer paid both), and each payment it gives money back to gets a refund voucher
//! reversing that GST (CGST Rule 51), as a refund through Razorpay does.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::closure::{RefundRequest, RefundRequestView, refund_request, refund_request_view};
use super::closure_refunds::{self, AccountPayment};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gst::receipts::{DueDocument, due_put};
use crate::gst::refunds::{AdvancesPaidOut, PaidOutPart};
use crate::money::{UNITS_PER_PAISA, format_inr};
use crate::ports::Ports;
use crate::store::schema::REFUND_REQUESTS_PK;
use crate::store::{Condition, Conditional, ItemStore, Table, Update, WriteOp};

/// An operator's report of a bank transfer paying a closed account's refund request.
pub struct Payout<'a> {
    pub user_id: &'a str,
    /// What the request showed as owed, wallet units.
    pub amount: i64,
    /// The bank transfer's reference (UTR).
    pub reference: &'a str,
    pub operator: &'a str,
}

/// What a payout of `amount` wallet units gives back: each payment's part, newest payment first (as the
/// refunds through Razorpay take them), and the credit no payment can account for (paid out as it is).
struct Transfer {
    parts: Vec<PaidOutPart>,
    unmatched_paise: i64,
}

impl Transfer {
    fn of(amount: i64, payments: &[AccountPayment]) -> Self {
        // Wallet units below a paisa still cost the customer a paisa: rounded up.
        let mut left = amount.div_euclid(UNITS_PER_PAISA) + i64::from(amount.rem_euclid(UNITS_PER_PAISA) != 0);
        let mut parts = Vec::new();
        for payment in payments.iter().filter(|p| p.refundable_paise > 0) {
            let credit = left.min(payment.refundable_paise);
            if credit <= 0 {
                break;
            }
            let money = payment.money_for(credit);
            parts.push(PaidOutPart {
                payment_id: payment.payment_id.clone(),
                credit_paise: credit,
                money_paise: money,
            });
            left -= credit;
        }
        Self { parts, unmatched_paise: left.max(0) }
    }

    /// The money the bank transfer carries, paise.
    fn money(&self) -> i64 {
        self.parts.iter().map(|p| p.money_paise).sum::<i64>() + self.unmatched_paise
    }

    fn gst(&self) -> i64 {
        self.parts.iter().map(|p| p.money_paise - p.credit_paise).sum()
    }
}

/// An open request's view with what its payout transfers (`transfer_paise`, `gst_paise`).
pub(super) async fn with_transfer<S: ItemStore + ?Sized>(store: &S, view: &mut RefundRequestView) -> ApiResult<()> {
    let payments = closure_refunds::account_payments(store, &view.user_id).await?;
    let transfer = Transfer::of(view.amount, &payments);
    view.transfer_paise = Some(transfer.money());
    view.gst_paise = Some(transfer.gst());
    Ok(())
}

impl Payout<'_> {
    /// The payout's id (an account's request is paid down by one write at a time, so its owner and the
    /// moment name it).
    fn id(&self, now: DateTime<Utc>) -> String {
        format!("{}_{}", self.user_id, now.timestamp_millis())
    }

    /// The payout with its reference trimmed, if it is one an operator may record.
    fn checked(self) -> ApiResult<Self> {
        let reference = self.reference.trim();
        if reference.is_empty() || reference.chars().count() > 100 {
            return Err(ApiError::invalid(
                ErrorCode::InvalidReference,
                "reference",
                "reference (the bank's) must be 1-100 characters",
            ));
        }
        if self.amount <= 0 {
            return Err(ApiError::invalid(
                ErrorCode::InvalidAmount,
                "amount",
                "amount must be the positive amount owed, in wallet units",
            ));
        }
        Ok(Self { reference, ..self })
    }

    /// The payout's transaction: the request paid down (conditioned on the amount read and no refund under
    /// way), what it returns taken off what the payments can still give back (to a late chargeback, say),
    /// and the refund vouchers it asks for, due.
    fn ops(&self, payments: &[AccountPayment], now: DateTime<Utc>, expires_at: i64) -> ApiResult<Vec<WriteOp>> {
        let amount = self.amount;
        let transfer = Transfer::of(amount, payments);
        let payout_id = self.id(now);
        let payout = json!({ "id": payout_id, "amount": amount, "amount_inr": format_inr(amount), "transfer_paise": transfer.money(), "gst_paise": transfer.gst(), "reference": self.reference, "paid_by": self.operator, "paid_at": now });
        let update = Update::new(Table::Main, REFUND_REQUESTS_PK, self.user_id)
            .add("amount", -amount)
            .set("amount_inr", json!(format_inr(0)))
            .add("paid_total", amount)
            .set("last_payout", payout)
            .when(Condition::All(vec![
                Condition::AttrEquals("amount".into(), json!(amount)),
                Condition::AttrAbsentOrEquals(closure_refunds::REFUNDING.into(), json!(0)),
            ]));
        let mut ops = vec![WriteOp::Update(update)];
        for (part, payment) in transfer.parts.iter().zip(payments.iter().filter(|p| p.refundable_paise > 0)) {
            ops.push(payment.take(part.credit_paise));
        }
        if !transfer.parts.is_empty() {
            let paid_out =
                AdvancesPaidOut { user_id: self.user_id.to_owned(), payout_id, paid_at: now, parts: transfer.parts };
            ops.push(due_put(&DueDocument::PayoutRefundVouchers(paid_out), expires_at)?);
        }
        Ok(ops)
    }
}

/// `POST /v1/admin/refund-requests/{user_id}/payout`: records that an operator paid `amount` (wallet units,
/// what the request showed) out to the account's owner, with the bank's reference. The write holds only
/// if the request still owes exactly that amount (money that reached or left the closed wallet meanwhile
/// changes it: the operator reads it again), so nothing is paid twice or recorded against a changed sum.
pub async fn record_payout(ports: &Ports, payout: Payout<'_>) -> ApiResult<RefundRequestView> {
    let payout = payout.checked()?;
    let Payout { user_id, amount, operator, .. } = payout;
    let store = ports.store();
    let now = ports.now();
    let Some(request) = refund_request(store, user_id).await? else { return Err(not_found(user_id)) };
    if request.amount != amount {
        return Err(changed());
    }
    let payments = closure_refunds::account_payments(store, user_id).await?;
    let refunds = closure_refunds::closure_refunds(store, user_id).await?;
    if let Err(refused) = payout_allowed(&request, &payments, &refunds, now) {
        // An account closed before the refunds job existed may not be marked due yet: it is now.
        closure_refunds::mark_due(ports, now, user_id).await?;
        return Err(refused);
    }
    let expires_at = super::payment_expiry(ports.config(), now);
    if store.transact(payout.ops(&payments, now, expires_at)?).await.applied()?.is_none() {
        return Err(match refund_request(store, user_id).await? {
            None => not_found(user_id),
            Some(_) => changed(),
        });
    }
    tracing::warn!(%user_id, %operator, amount, "refund request paid out");
    if let Err(e) = crate::gst::receipts::issue_payout_vouchers(ports, &payout.id(now)).await {
        tracing::warn!(%user_id, error = %e, "the payout's refund vouchers are left due for the jobs");
    }
    let item = store.get(Table::Main, REFUND_REQUESTS_PK, user_id).await?;
    let item = item.ok_or_else(|| ApiError::Internal("refund request vanished".into()))?;
    Ok(refund_request_view(&item)?)
}

fn not_found(user_id: &str) -> ApiError {
    ApiError::NotFound { code: ErrorCode::RefundRequestNotFound, message: format!("no refund request for {user_id}") }
}

fn changed() -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::RefundRequestChanged,
        message: "the amount owed is not the one given (it changed, or was paid); read the request again".into(),
        param: Some("amount".into()),
    }
}

/// A bank payout only pays what Razorpay can no longer send back to the payments, and only once no card
/// network can charge those payments back: otherwise the customer could get the money twice.
fn payout_allowed(
    request: &RefundRequest,
    payments: &[AccountPayment],
    refunds: &[closure_refunds::ClosureRefund],
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let not_yet = |message: String| ApiError::Conflict { code: ErrorCode::PayoutNotAllowedYet, message, param: None };
    if request.refunding > 0 {
        return Err(not_yet(format!(
            "{} is being refunded to the account's payments through Razorpay; read the request again once it is processed",
            format_inr(request.refunding)
        )));
    }
    let refundable = closure_refunds::refundable_by_razorpay(payments, refunds, now);
    if let Some(payment) = refundable.first().filter(|_| closure_refunds::razorpay_can_refund(request, &refundable)) {
        return Err(not_yet(format!(
            "payment {} can still be refunded through Razorpay, to where it came from: the refunds job does it",
            payment.payment_id
        )));
    }
    let disputable = payments.iter().filter(|p| p.refundable_paise > 0).find(|p| now < p.disputable_until());
    if let Some(payment) = disputable {
        return Err(not_yet(format!(
            "payment {} can be charged back until {}: pay out after that",
            payment.payment_id,
            crate::accounts::timestamp(payment.disputable_until())
        )));
    }
    Ok(())
}
