//! A refund of ours that Razorpay processed, applied once per refund id (the same `RZPREFUND#<id>` guard as
//! every refund), whether the webhook or the job sees it first. The money left the closed wallet when the
//! account closed, so the wallet and its ledger do not move: the refund request's amount drops.

use crate::ports::Ports;
use serde_json::{Value, json};

use super::{ClosureRefund, REFUNDING, RefundState};
use crate::accounts::user_pk;
use crate::error::{ApiError, ApiResult};
use crate::gst::receipts::{DueDocument, due_put};
use crate::gst::refunds::AdvanceRefunded;
use crate::money::format_inr;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::razorpay::Refund;
use crate::store::schema::{self, payment_pk, prefix, refund_pk};
use crate::store::{Condition, Conditional, Item, Put, Table, Update, WriteOp};
use crate::wallet::closure::{RefundRequest, refund_request};
use crate::wallet::ledger::CREDIT_ATTEMPTS;
use crate::wallet::topups::{CREDIT_SK, CreditOutcome};
use crate::wallet::{payment_expiry, record_review};

/// Applies a processed refund to its record and the refund request.
pub(super) async fn apply_processed(
    ports: &Ports,
    refund: &ClosureRefund,
    processed: &Refund,
) -> ApiResult<CreditOutcome> {
    let store = ports.store();
    let clock = ports.clock();
    for _ in 0..CREDIT_ATTEMPTS {
        let (pk, sk) = refund.key();
        let Some(current) = store.get(Table::Main, &pk, &sk).await?.map(|i| i.record::<ClosureRefund>()).transpose()?
        else {
            return Err(ApiError::Internal(format!("refund record {} vanished", refund.id)));
        };
        if store.get(Table::Main, &refund_pk(&processed.id), schema::sk::DEBIT).await?.is_some() {
            return Ok(CreditOutcome::AlreadyCredited);
        }
        let ops = match current.state {
            RefundState::Processed => return second_refund(ports, &current, processed).await,
            RefundState::Failed => late_ops(ports, &current, processed).await?,
            RefundState::Initiated | RefundState::Pending => processed_ops(ports, &current, processed).await?,
        };
        if store.transact(ops).await.applied()?.is_some() {
            tracing::info!(user_id = %refund.user_id, refund = %refund.id, refund_id = %processed.id, "closed account's money refunded to its payment");
            crate::wallet::adjustments::refund_voucher_now(ports, &processed.id).await;
            if current.state == RefundState::Failed {
                let details = json!({ "reason": "a closed account's refund counted as refused was processed after all: check no bank payout paid it again", "user_id": refund.user_id, "payment_id": refund.payment_id, "refund_id": processed.id, "amount_paise": processed.amount });
                record_review(ports, clock.now(), details).await?;
            }
            return Ok(CreditOutcome::Credited);
        }
    }
    Err(ApiError::Unavailable("the refund request is busy; the refund is applied on the next run".into()))
}

/// The refund debit's guard and the notice to the account's owner.
fn guard_and_notice(ports: &Ports, refund: &ClosureRefund, processed: &Refund) -> ApiResult<[WriteOp; 2]> {
    let clock = ports.clock();
    let config = ports.config();
    let now = clock.now();
    let marker = json!({ "user_id": refund.user_id, "payment_id": refund.payment_id, "amount_paise": refund.amount_paise, "debited_at": now, "closure_refund": refund.id });
    let notice = OutboxMail::new(MailKind::RefundNotice, &refund.user_id, now)
        .param("amount", refund.money().saturating_mul(crate::money::UNITS_PER_PAISA))
        .param("payment_id", refund.payment_id.clone())
        .param("refund_id", processed.id.clone());
    Ok([
        WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(
                refund_pk(&processed.id),
                schema::sk::DEBIT,
                &marker,
                Some(payment_expiry(config, now)),
            )?,
            condition: Condition::NotExists,
        }),
        enqueue(&notice)?,
    ])
}

/// What every processed refund writes (the guard, the notice, its record processed), and the refund request
/// as read, for the caller's change of it.
async fn processed_common(
    ports: &Ports,
    current: &ClosureRefund,
    processed: &Refund,
) -> ApiResult<(RefundRequest, Vec<WriteOp>)> {
    let store = ports.store();
    let request = refund_request(store, &current.user_id).await?;
    let request =
        request.ok_or_else(|| ApiError::Internal(format!("the refund request of {} vanished", current.user_id)))?;
    let mut ops = Vec::from(guard_and_notice(ports, current, processed)?);
    ops.push(WriteOp::Update(
        current.update().set("state", json!(RefundState::Processed)).set("refund_id", json!(processed.id)),
    ));
    ops.push(refund_voucher_due(ports, current, processed)?);
    Ok((request, ops))
}

/// The refund voucher the money given back asks for (Rule 51), due in the refund's transaction.
fn refund_voucher_due(ports: &Ports, current: &ClosureRefund, processed: &Refund) -> ApiResult<WriteOp> {
    let now = ports.clock().now();
    let refunded = AdvanceRefunded {
        user_id: current.user_id.clone(),
        payment_id: current.payment_id.clone(),
        refund_id: processed.id.clone(),
        refunded_at: now,
        credit_paise: current.amount_paise,
        money_paise: processed.amount,
    };
    Ok(due_put(&DueDocument::RefundVoucher(refunded), payment_expiry(ports.config(), now))?)
}

/// The usual case: the request's amount and what is under way both drop by the refund.
async fn processed_ops(ports: &Ports, current: &ClosureRefund, processed: &Refund) -> ApiResult<Vec<WriteOp>> {
    let (request, mut ops) = processed_common(ports, current, processed).await?;
    let units = current.units();
    ops.push(WriteOp::Update(
        Update::new(Table::Main, schema::REFUND_REQUESTS_PK, &current.user_id)
            .add("amount", -units)
            .add(REFUNDING, -units)
            .set("amount_inr", json!(format_inr(request.amount - units)))
            .when(Condition::All(vec![
                Condition::AttrEquals("amount".into(), json!(request.amount)),
                Condition::AttrAtLeast("amount".into(), units),
                Condition::AttrAtLeast(REFUNDING.into(), units),
            ])),
    ));
    Ok(ops)
}

/// A refund counted as refused (its amount owed again, given back to its payment) that was processed after
/// all: the money left anyway, so it comes off what is owed and what the payment may still give back, as
/// far as they go (a human is told).
async fn late_ops(ports: &Ports, current: &ClosureRefund, processed: &Refund) -> ApiResult<Vec<WriteOp>> {
    let store = ports.store();
    let (request, mut ops) = processed_common(ports, current, processed).await?;
    let owed = request.amount.min(current.units()).max(0);
    ops.push(WriteOp::Update(
        Update::new(Table::Main, schema::REFUND_REQUESTS_PK, &current.user_id)
            .add("amount", -owed)
            .set("amount_inr", json!(format_inr(request.amount - owed)))
            .when(Condition::AttrEquals("amount".into(), json!(request.amount))),
    ));
    let guard = store.get(Table::Main, &payment_pk(&current.payment_id), CREDIT_SK).await?;
    if let Some(guard) = guard {
        let left = crate::wallet::adjustments::refundable(&guard);
        let taken = left.min(current.amount_paise);
        if taken > 0 {
            let money = crate::wallet::adjustments::money_left(&guard).max(0).min(current.money());
            ops.push(crate::wallet::adjustments::take_back(&guard, taken, money));
        }
    }
    Ok(ops)
}

/// Our record was already processed under another refund id: Razorpay made two refunds for it. Nothing
/// moves; a human looks.
async fn second_refund(ports: &Ports, current: &ClosureRefund, processed: &Refund) -> ApiResult<CreditOutcome> {
    let clock = ports.clock();
    if current.refund_id.as_deref() == Some(processed.id.as_str()) {
        return Ok(CreditOutcome::AlreadyCredited);
    }
    let details = json!({ "reason": "a second refund for one closed account's refund: the money went back twice", "user_id": current.user_id, "payment_id": current.payment_id, "refund": current.id, "first_refund_id": current.refund_id, "second_refund_id": processed.id, "amount_paise": processed.amount });
    record_review(ports, clock.now(), details).await?;
    Ok(CreditOutcome::Mismatch)
}

/// `refund.processed` for a refund we asked for (its notes name our record): applied as ours when the record
/// matches it (same payment, same amount, same account), else `None` and the caller treats it as any refund.
pub(in crate::wallet) async fn processed_by_webhook(
    ports: &Ports,
    processed: &Refund,
) -> ApiResult<Option<CreditOutcome>> {
    let store = ports.store();
    let (Some(reference), Some(user_id)) =
        (processed.our_reference(), processed.notes.get("user_id").and_then(Value::as_str))
    else {
        return Ok(None);
    };
    let sk = schema::prefixed(prefix::CLOSURE_REFUND, reference);
    let Some(item) = store.get(Table::Main, &user_pk(user_id), &sk).await? else { return Ok(None) };
    let refund: ClosureRefund = item.record()?;
    if refund.payment_id != processed.payment_id || refund.money() != processed.amount {
        return Ok(None);
    }
    apply_processed(ports, &refund, processed).await.map(Some)
}
