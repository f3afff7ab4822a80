//! Money that goes back after a credit: refunds, each applied once and never more than the payment; and the
//! refunds and chargebacks (`disputes`) that arrive before their payment is credited, kept until it is.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::ledger::{BalanceChange, LedgerKind, apply_balance_change};
use super::topups::{CREDIT_SK, CreditOutcome};
use super::{WalletStore, payment_expiry, record_review, sync_closed_wallet};
use crate::error::{ApiError, ApiResult};
use crate::gst::receipts::{DueDocument, due_put};
use crate::gst::refunds::AdvanceRefunded;
use crate::money::paise_to_units;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::ports::Ports;
use crate::store::schema::{self, payment_pk, refund_pk};
use crate::store::{Condition, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, Update, WriteOp};

const DEBIT_SK: &str = schema::sk::DEBIT;

/// Why a processed refund cannot be taken from the payment it names (for a human to look at), if it cannot:
/// not rupees, not positive, more than was paid, or (unless it was debited already) more than refunds and
/// disputes have left of the payment.
async fn refund_problem(
    store: &dyn ItemStore,
    refund: &crate::razorpay::Refund,
    credit: &Item,
    guard_pk: &str,
) -> ApiResult<Option<Value>> {
    let (user_id, _) = credited(credit);
    if refund.currency != "INR" || refund.amount <= 0 || refund.amount > paid(credit) || user_id.is_empty() {
        return Ok(Some(
            json!({ "reason": "refund does not match the credited payment", "refund_id": refund.id, "payment_id": refund.payment_id, "amount_paise": refund.amount, "currency": refund.currency }),
        ));
    }
    if !store.is_recorded(guard_pk, DEBIT_SK).await? && money_left(credit) < refund.amount {
        return Ok(Some(
            json!({ "reason": "refunds and disputes would take back more than the payment", "refund_id": refund.id, "payment_id": refund.payment_id, "amount_paise": refund.amount }),
        ));
    }
    Ok(None)
}

/// Debits a processed refund once per refund id. The refund's money has already left through Razorpay,
/// so the debit applies even if it takes the balance below zero (the ledger shows the debt).
pub async fn debit_refund(ports: &Ports, refund: &crate::razorpay::Refund) -> ApiResult<CreditOutcome> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    // A closed account's money we sent back to its payment: it left the wallet when the account closed.
    if let Some(outcome) = super::closure_refunds::processed_by_webhook(ports, refund).await? {
        return Ok(outcome);
    }
    let now = clock.now();
    let Some(credit) = credit_or_defer(
        ports,
        now,
        Adjustment { payment_id: &refund.payment_id, event: "refund.processed", entity_id: &refund.id },
        refund,
    )
    .await?
    else {
        return Ok(CreditOutcome::Deferred);
    };
    let guard_pk = refund_pk(&refund.id);
    if let Some(details) = refund_problem(store, refund, &credit, &guard_pk).await? {
        record_review(ports, now, details).await?;
        return Ok(CreditOutcome::Mismatch);
    }
    let (user_id, _) = credited(&credit);
    // The credit the refunded money paid for: the refund's share of the payment, its GST aside.
    let taken = credit_taken(&credit, refund.amount);
    let units = paise_to_units(taken).ok_or_else(|| ApiError::Internal("amount overflows".into()))?;
    let expires_at = payment_expiry(config, now);
    let extra = |_balance_after: i64| -> StoreResult<Vec<WriteOp>> {
        let marker = json!({ "user_id": user_id, "payment_id": refund.payment_id, "amount_paise": refund.amount, "credit_paise": taken, "debited_at": now });
        // The notice names the money refunded; the wallet gives up the credit it paid for (`units`).
        let notice = OutboxMail::new(MailKind::RefundNotice, &user_id, now)
            .param("amount", paise_to_units(refund.amount).unwrap_or(units))
            .param("payment_id", refund.payment_id.clone())
            .param("refund_id", refund.id.clone());
        Ok(vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(&guard_pk, DEBIT_SK, &marker, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            take_back(&credit, taken, refund.amount),
            enqueue(&notice)?,
            refund_voucher_due(&user_id, refund, taken, now, expires_at)?,
        ])
    };
    let change = BalanceChange {
        user_id: &user_id,
        kind: LedgerKind::Refund,
        amount: -units,
        reference: &refund.id,
        at: now,
        expires_at,
        guard: (&guard_pk, DEBIT_SK),
    };
    let debited = apply_balance_change(store, change, extra).await?;
    refund_voucher_now(ports, &refund.id).await;
    sync_closed_wallet(ports, &user_id).await?;
    super::metering::stop_purses_if_owing(store, &user_id).await?;
    Ok(if debited { CreditOutcome::Credited } else { CreditOutcome::AlreadyCredited })
}

/// Writes the refund voucher now; one that cannot be is left due for the jobs (the money moved regardless).
pub(super) async fn refund_voucher_now(ports: &Ports, refund_id: &str) {
    if let Err(e) = crate::gst::receipts::issue_refund(ports, refund_id).await {
        tracing::warn!(%refund_id, error = %e, "refund voucher left due for the jobs");
    }
}

/// The refund voucher the money given back asks for (Rule 51), due in the refund's transaction.
fn refund_voucher_due(
    user_id: &str,
    refund: &crate::razorpay::Refund,
    credit_paise: i64,
    now: DateTime<Utc>,
    expires_at: i64,
) -> StoreResult<WriteOp> {
    let refunded = AdvanceRefunded {
        user_id: user_id.to_owned(),
        payment_id: refund.payment_id.clone(),
        refund_id: refund.id.clone(),
        refunded_at: now,
        credit_paise,
        money_paise: refund.amount,
    };
    due_put(&DueDocument::RefundVoucher(refunded), expires_at)
}

/// The guard of the credited payment an adjustment (refund, dispute) applies to; `None` when the payment is not
/// credited yet and the event was kept for when it is ([`defer`]).
/// A refund or dispute event as it applies to a payment: which payment, which event, which refund or dispute.
#[derive(Clone, Copy)]
pub(super) struct Adjustment<'a> {
    pub(super) payment_id: &'a str,
    pub(super) event: &'a str,
    pub(super) entity_id: &'a str,
}

pub(super) async fn credit_or_defer(
    ports: &Ports,
    now: DateTime<Utc>,
    adjustment: Adjustment<'_>,
    entity: &impl Serialize,
) -> ApiResult<Option<Item>> {
    let store = ports.store();
    let payment_id = adjustment.payment_id;
    if let Some(credit) = store.get(Table::Main, &payment_pk(payment_id), CREDIT_SK).await? {
        return Ok(Some(credit));
    }
    let entity = serde_json::to_value(entity).map_err(|e| ApiError::Internal(e.to_string()))?;
    defer(ports, now, adjustment, entity).await
}

/// Keeps a refund or dispute event of a payment that is not credited yet, then looks again: the credit
/// applies the events it finds kept, and this one may have been kept just after it looked. If the credit is
/// there now, the kept copy is dropped and its guard record returned, for the caller to apply the event
/// itself; applying twice is harmless (every adjustment has its own exactly-once guard).
async fn defer(
    ports: &Ports,
    now: DateTime<Utc>,
    adjustment: Adjustment<'_>,
    entity: Value,
) -> ApiResult<Option<Item>> {
    let Adjustment { payment_id, event, entity_id } = adjustment;
    let store = ports.store();
    let config = ports.config();
    let kept = json!({ "event": event, "entity": entity, "received_at": now });
    let (pk, sk) = (payment_pk(payment_id), format!("{PENDING_PREFIX}{event}#{entity_id}"));
    let item = Item::from_record(&pk, &sk, &kept, Some(payment_expiry(config, now)))?;
    store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
    let Some(credit) = store.get(Table::Main, &pk, CREDIT_SK).await? else {
        // A human sees it too: it may be for a payment that never reaches us.
        let details = json!({ "reason": "refund or dispute of a payment not credited (yet): kept, applied if its credit lands", "payment_id": payment_id, "event": event, "id": entity_id });
        record_review(ports, now, details).await?;
        return Ok(None);
    };
    store.delete(Delete { table: Table::Main, pk, sk, condition: Condition::Always }).await?;
    Ok(Some(credit))
}

const PENDING_PREFIX: &str = schema::prefix::PENDING;
/// The payment guard's attribute counting down what refunds and lost disputes may still take back.
pub(super) const REFUNDABLE: &str = "refundable_paise";
/// The payment guard's attribute recording what the payment brought: the credit (`amount_paise`) and the GST
/// on it. Absent on payments credited before top-ups carried GST (they brought the credit alone).
pub(super) const PAID: &str = "paid_paise";

/// What a credited payment brought, paise.
pub(super) fn paid(credit: &Item) -> i64 {
    let credited = credited(credit).1;
    credit.attrs.get(PAID).and_then(Value::as_i64).unwrap_or(credited)
}

/// The money that gives back `credit_paise` of a payment's credit: with the GST charged on it, which the
/// refund voucher reverses (`gst::tax::paid_share`).
pub(super) fn money_for(credit: &Item, credit_paise: i64) -> i64 {
    let left = money_left(credit).max(0);
    if credit_paise >= refundable(credit) {
        return left;
    }
    crate::gst::tax::paid_share(credit_paise, credited(credit).1, paid(credit)).min(left)
}

/// The payment guard's attribute counting down the money refunds, lost disputes and closure refunds may
/// still send back (of `paid_paise`), beside `refundable_paise` (of the credit): the last of the money takes
/// the last of the credit, so rounded shares never leave credit behind money that left.
pub(super) const MONEY_LEFT: &str = "refundable_money_paise";

/// What of the payment's money may still go back (a guard from before GST counts credit and money as one).
pub(super) fn money_left(credit: &Item) -> i64 {
    credit.attrs.get(MONEY_LEFT).and_then(Value::as_i64).unwrap_or_else(|| refundable(credit))
}

/// The credit that `money` paise of a payment paid for (a refund or chargeback of part of it): its share,
/// rounded up (`gst::tax::credit_share`), and all that is left once the money is all that is left.
pub(super) fn credit_taken(credit: &Item, money: i64) -> i64 {
    let left = refundable(credit).max(0);
    if money >= money_left(credit) {
        return left;
    }
    crate::gst::tax::credit_share(money, credited(credit).1, paid(credit)).min(left)
}

/// The owner of a credited payment and the paise credited, from its guard.
pub(super) fn credited(credit: &Item) -> (String, i64) {
    let user_id = credit.attrs.get("user_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    (user_id, credit.attrs.get("amount_paise").and_then(Value::as_i64).unwrap_or(0))
}

pub(super) fn refundable(credit: &Item) -> i64 {
    // A guard written before this count existed starts from the whole payment.
    credit
        .attrs
        .get(REFUNDABLE)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| credit.attrs.get("amount_paise").and_then(Value::as_i64).unwrap_or(0))
}

/// Takes `paise` of credit and `money` paise of money off what the payment may still give back, in the
/// transaction that gives it back: refunds and lost disputes together never take back more than was paid.
pub(super) fn take_back(credit: &Item, paise: i64, money: i64) -> WriteOp {
    let mut update = Update::new(Table::Main, credit.pk.clone(), credit.sk.clone());
    let mut conditions = Vec::new();
    if credit.attrs.contains_key(REFUNDABLE) {
        update = update.add(REFUNDABLE, -paise);
        conditions.push(Condition::AttrAtLeast(REFUNDABLE.into(), paise));
    } else {
        update = update.set(REFUNDABLE, json!(refundable(credit) - paise));
        conditions.push(Condition::AttrAbsentOrEquals(REFUNDABLE.into(), Value::Null));
    }
    // A guard credited with GST counts its money too; an older one counts credit and money as one.
    if credit.attrs.contains_key(MONEY_LEFT) {
        update = update.add(MONEY_LEFT, -money);
        conditions.push(Condition::AttrAtLeast(MONEY_LEFT.into(), money));
    }
    WriteOp::Update(update.when(Condition::All(conditions)))
}

/// Gives `paise` of credit and `money` paise of money back to what a payment may still give back (a refund
/// taken off it was refused). The counts exist by then: the refund's own record took them with [`take_back`].
pub(super) async fn give_back(store: &dyn ItemStore, payment_id: &str, paise: i64, money: i64) -> ApiResult<WriteOp> {
    let guard = store.get(Table::Main, &payment_pk(payment_id), CREDIT_SK).await?;
    let counts_money = guard.as_ref().is_some_and(|g| g.attrs.contains_key(MONEY_LEFT));
    let mut update = Update::new(Table::Main, payment_pk(payment_id), CREDIT_SK).add(REFUNDABLE, paise);
    if counts_money {
        update = update.add(MONEY_LEFT, money);
    }
    Ok(WriteOp::Update(update.when(Condition::AttrAtLeast(REFUNDABLE.into(), 0))))
}

/// Applies (and then deletes) the refund and dispute events kept for a payment that is now credited. Order
/// does not matter: each event's effect is decided by the state its own item records.
pub async fn apply_deferred(ports: &Ports, payment_id: &str) -> ApiResult<()> {
    let store = ports.store();
    let kept =
        Query::new(Table::Main, payment_pk(payment_id)).range(SortKeyRange::Prefix(PENDING_PREFIX.into())).limit(100);
    for item in store.query(kept).await?.items {
        let event = item.attrs.get("event").and_then(Value::as_str).unwrap_or_default().to_owned();
        let entity = item.attrs.get("entity").cloned().unwrap_or(Value::Null);
        let outcome = if event == "refund.processed" {
            let refund: crate::razorpay::Refund =
                serde_json::from_value(entity).map_err(|e| ApiError::Internal(e.to_string()))?;
            debit_refund(ports, &refund).await?
        } else {
            let dispute: crate::razorpay::Dispute =
                serde_json::from_value(entity).map_err(|e| ApiError::Internal(e.to_string()))?;
            super::disputes::apply_dispute(ports, &event, &dispute).await?
        };
        if outcome != CreditOutcome::Deferred {
            store.delete(Delete { table: Table::Main, pk: item.pk, sk: item.sk, condition: Condition::Always }).await?;
        }
    }
    Ok(())
}
