//! Money that goes back after a credit: refunds and chargebacks (disputes), each applied once, never more
//! than the payment, and kept until their payment is credited when they arrive first.

use crate::error::ErrorCode;
use crate::ports::Ports;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ledger::{BalanceChange, CREDIT_ATTEMPTS, LedgerEntry, LedgerKind, apply_balance_change, entry_put};
use super::topups::{CREDIT_SK, CreditOutcome};
use super::{WALLET_SK, Wallet, WalletStore, payment_expiry, record_review, sync_closed_wallet};
use crate::accounts::user_pk;
use crate::error::{ApiError, ApiResult};
use crate::money::paise_to_units;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::store::schema::{self, dispute_pk, payment_pk, refund_pk};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, Update, WriteOp,
};

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
    let (user_id, credited_paise) = credited(credit);
    if refund.currency != "INR" || refund.amount <= 0 || refund.amount > credited_paise || user_id.is_empty() {
        return Ok(Some(
            json!({ "reason": "refund does not match the credited payment", "refund_id": refund.id, "payment_id": refund.payment_id, "amount_paise": refund.amount, "currency": refund.currency }),
        ));
    }
    if !store.is_recorded(guard_pk, DEBIT_SK).await? && refundable(credit) < refund.amount {
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
    let units = paise_to_units(refund.amount).ok_or_else(|| ApiError::Internal("amount overflows".into()))?;
    let expires_at = payment_expiry(config, now);
    let extra = |_balance_after: i64| -> StoreResult<Vec<WriteOp>> {
        let marker = json!({ "user_id": user_id, "payment_id": refund.payment_id, "amount_paise": refund.amount, "debited_at": now });
        let notice = OutboxMail::new(MailKind::RefundNotice, &user_id, now)
            .param("amount", units)
            .param("payment_id", refund.payment_id.clone())
            .param("refund_id", refund.id.clone());
        Ok(vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(&guard_pk, DEBIT_SK, &marker, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            take_refundable(&credit, refund.amount),
            enqueue(&notice)?,
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
    sync_closed_wallet(ports, &user_id).await?;
    super::metering::stop_purses_if_owing(store, &user_id).await?;
    Ok(if debited { CreditOutcome::Credited } else { CreditOutcome::AlreadyCredited })
}

/// The guard of the credited payment an adjustment (refund, dispute) applies to; `None` when the payment is not
/// credited yet and the event was kept for when it is ([`defer`]).
/// A refund or dispute event as it applies to a payment: which payment, which event, which refund or dispute.
#[derive(Clone, Copy)]
struct Adjustment<'a> {
    payment_id: &'a str,
    event: &'a str,
    entity_id: &'a str,
}

async fn credit_or_defer(
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

/// The owner of a credited payment and the paise credited, from its guard.
fn credited(credit: &Item) -> (String, i64) {
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

/// Takes `paise` off what the payment may still give back, in the transaction that gives it back: refunds
/// and lost disputes together never take back more than was paid.
pub(super) fn take_refundable(credit: &Item, paise: i64) -> WriteOp {
    let update = Update::new(Table::Main, credit.pk.clone(), credit.sk.clone());
    WriteOp::Update(if credit.attrs.contains_key(REFUNDABLE) {
        update.add(REFUNDABLE, -paise).when(Condition::AttrAtLeast(REFUNDABLE.into(), paise))
    } else {
        update
            .set(REFUNDABLE, json!(refundable(credit) - paise))
            .when(Condition::AttrAbsentOrEquals(REFUNDABLE.into(), Value::Null))
    })
}

/// Gives `paise` back to what a payment may still give back (a refund taken off it was refused). The count
/// exists by then: the refund's own record took the amount off with [`take_refundable`].
pub(super) fn give_back_refundable(payment_id: &str, paise: i64) -> WriteOp {
    WriteOp::Update(
        Update::new(Table::Main, payment_pk(payment_id), CREDIT_SK)
            .add(REFUNDABLE, paise)
            .when(Condition::AttrAtLeast(REFUNDABLE.into(), 0)),
    )
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
            apply_dispute(ports, &event, &dispute).await?
        };
        if outcome != CreditOutcome::Deferred {
            store.delete(Delete { table: Table::Main, pk: item.pk, sk: item.sk, condition: Condition::Always }).await?;
        }
    }
    Ok(())
}

const DISPUTE_SK: &str = schema::sk::DISPUTE;

/// A chargeback's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeState {
    /// The disputed amount is held on the wallet.
    Held,
    /// Won (or closed in our favour): nothing is held any more.
    Released,
    /// Lost: the deducted amount left the balance through the ledger.
    Debited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DisputeRecord {
    user_id: String,
    payment_id: String,
    state: DisputeState,
    /// Wallet units held while `held`.
    held: i64,
    updated_at: DateTime<Utc>,
}

/// A Razorpay dispute event: `payment.dispute.created` holds the disputed amount on the payer's wallet,
/// `.won` and `.closed` release it, `.lost` debits what Razorpay deducted (through the ledger; the balance may
/// go below zero, as for refunds: the money has left). Each changes the wallet once whatever the order of
/// arrival: a `.lost` before the `.created` debits and the late `.created` then does nothing. Other dispute
/// events (`under_review`, `action_required`) move no money.
pub async fn apply_dispute(ports: &Ports, event: &str, dispute: &crate::razorpay::Dispute) -> ApiResult<CreditOutcome> {
    let store = ports.store();
    let clock = ports.clock();
    let config = ports.config();
    let Some(step) = DisputeStep::of(event) else { return Ok(CreditOutcome::AlreadyCredited) };
    let now = clock.now();
    let Some(credit) = credit_or_defer(
        ports,
        now,
        Adjustment { payment_id: &dispute.payment_id, event, entity_id: &dispute.id },
        dispute,
    )
    .await?
    else {
        return Ok(CreditOutcome::Deferred);
    };
    let (user_id, credited_paise) = credited(&credit);
    let Some(amounts) = DisputeAmounts::of(dispute, credited_paise).filter(|_| !user_id.is_empty()) else {
        let details = json!({ "reason": "dispute does not match the credited payment", "dispute_id": dispute.id, "payment_id": dispute.payment_id, "amount_paise": dispute.amount, "currency": dispute.currency });
        record_review(ports, now, details).await?;
        return Ok(CreditOutcome::Mismatch);
    };
    for _ in 0..CREDIT_ATTEMPTS {
        let current = store.get(Table::Main, &dispute_pk(&dispute.id), DISPUTE_SK).await?;
        let state = current.as_ref().map(Item::record::<DisputeRecord>).transpose()?;
        let Some(mut next) = step.next(state.as_ref().map(|s| s.state)) else {
            // Already held, or already final: this event changes nothing (but a stop of the purses that
            // failed after the first delivery is done now).
            super::metering::stop_purses_if_owing(store, &user_id).await?;
            return Ok(CreditOutcome::AlreadyCredited);
        };
        let guard = store.get(Table::Main, &payment_pk(&dispute.payment_id), CREDIT_SK).await?;
        let left_paise = guard.as_ref().map_or(0, refundable);
        let mut amounts = amounts;
        if next == DisputeState::Held && left_paise < dispute.amount {
            // Already refunded or paid out (a closed account's money goes back so): only what the payment
            // still holds is held, so the chargeback cannot take the same money twice; a human looks.
            let details = json!({ "reason": "dispute of a payment already refunded or paid out: only what is left of it is held", "dispute_id": dispute.id, "payment_id": dispute.payment_id, "amount_paise": dispute.amount, "left_paise": left_paise });
            record_review(ports, now, details).await?;
            amounts.held = paise_to_units(left_paise.max(0)).unwrap_or(0);
        }
        let over = next == DisputeState::Debited && left_paise < amounts.deducted_paise;
        if over {
            // More than the payment would be taken back: a human looks, and nothing stays held meanwhile.
            let details = json!({ "reason": "refunds and disputes would take back more than the payment", "dispute_id": dispute.id, "payment_id": dispute.payment_id, "amount_paise": amounts.deducted_paise });
            record_review(ports, now, details).await?;
            next = DisputeState::Released;
        }
        let wallet = store.wallet(&user_id).await?;
        let change = DisputeChange { dispute, user_id: &user_id, previous: state.as_ref(), next, amounts, wallet, now };
        let mut ops = change.ops(guard.as_ref(), payment_expiry(config, now))?;
        ops.push(change.notice(over)?);
        if store.transact(ops).await.applied()?.is_some() {
            tracing::warn!(%user_id, dispute_id = %dispute.id, payment_id = %dispute.payment_id, state = ?next, "dispute applied");
            sync_closed_wallet(ports, &user_id).await?;
            super::metering::stop_purses_if_owing(store, &user_id).await?;
            return Ok(if over { CreditOutcome::Mismatch } else { CreditOutcome::Credited });
        }
    }
    Err(ApiError::Unavailable("the wallet is too busy to apply the dispute; it will be retried".into()))
}

/// What a dispute event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DisputeStep {
    Hold,
    Release,
    Debit,
}

impl DisputeStep {
    fn of(event: &str) -> Option<Self> {
        match event {
            "payment.dispute.created" => Some(Self::Hold),
            "payment.dispute.won" | "payment.dispute.closed" => Some(Self::Release),
            "payment.dispute.lost" => Some(Self::Debit),
            _ => None,
        }
    }

    /// The state this step moves a dispute to from `current`, or `None` when it changes nothing.
    fn next(self, current: Option<DisputeState>) -> Option<DisputeState> {
        match (self, current) {
            (Self::Hold, None) => Some(DisputeState::Held),
            (Self::Release, None | Some(DisputeState::Held)) => Some(DisputeState::Released),
            (Self::Debit, None | Some(DisputeState::Held)) => Some(DisputeState::Debited),
            _ => None,
        }
    }
}

/// A dispute's amounts, checked against the payment it disputes.
#[derive(Debug, Clone, Copy)]
struct DisputeAmounts {
    /// What a held dispute holds, wallet units.
    held: i64,
    /// What a lost dispute takes: what Razorpay deducted (or the disputed amount), paise and units.
    deducted_paise: i64,
    deducted: i64,
}

impl DisputeAmounts {
    fn of(dispute: &crate::razorpay::Dispute, credited_paise: i64) -> Option<Self> {
        let deducted_paise = if dispute.amount_deducted > 0 { dispute.amount_deducted } else { dispute.amount };
        let fits = |paise: i64| paise > 0 && paise <= credited_paise;
        if dispute.currency != "INR" || !fits(dispute.amount) || !fits(deducted_paise) {
            return None;
        }
        Some(Self { held: paise_to_units(dispute.amount)?, deducted_paise, deducted: paise_to_units(deducted_paise)? })
    }
}

/// One move of a dispute's state, with what it does to the wallet.
struct DisputeChange<'a> {
    dispute: &'a crate::razorpay::Dispute,
    user_id: &'a str,
    previous: Option<&'a DisputeRecord>,
    next: DisputeState,
    amounts: DisputeAmounts,
    wallet: Wallet,
    now: DateTime<Utc>,
}

impl DisputeChange<'_> {
    /// The payer's notice, told from their side: what the dispute means for their wallet now (`over`: more
    /// than the payment would be taken back, and a human looks).
    fn notice(&self, over: bool) -> ApiResult<WriteOp> {
        let amounts = self.amounts;
        let (phase, amount) = match self.next {
            DisputeState::Held => ("open: the disputed amount is held from your wallet meanwhile", amounts.held),
            DisputeState::Debited => ("decided for you: the amount was taken back from your wallet", amounts.deducted),
            DisputeState::Released if over => {
                ("decided, and under review by our team: nothing more is held from your wallet", amounts.deducted)
            }
            DisputeState::Released => {
                ("closed: nothing is taken from your wallet, and anything held for it is released", amounts.held)
            }
        };
        let notice = OutboxMail::new(MailKind::DisputeNotice, self.user_id, self.now)
            .param("amount", amount)
            .param("payment_id", self.dispute.payment_id.clone())
            .param("dispute_id", self.dispute.id.clone())
            .param("phase", phase);
        Ok(enqueue(&notice)?)
    }

    /// The transaction: the dispute's new state (conditioned on the one read), the wallet (conditioned on its
    /// balance) and, for a loss, the ledger entry and the payment's refundable count.
    fn ops(&self, guard: Option<&Item>, expires_at: i64) -> ApiResult<Vec<WriteOp>> {
        let (wallet_pk, amounts) = (user_pk(self.user_id), self.amounts);
        let held = self.previous.filter(|s| s.state == DisputeState::Held).map_or(0, |s| s.held);
        let record = DisputeRecord {
            user_id: self.user_id.to_owned(),
            payment_id: self.dispute.payment_id.clone(),
            state: self.next,
            held: if self.next == DisputeState::Held { amounts.held } else { 0 },
            updated_at: self.now,
        };
        let mut ops = vec![WriteOp::Put(Put {
            table: Table::Main,
            item: Item::from_record(dispute_pk(&self.dispute.id), DISPUTE_SK, &record, Some(expires_at))?,
            condition: match self.previous {
                None => Condition::NotExists,
                Some(_) => Condition::AttrEquals("state".into(), json!(DisputeState::Held)),
            },
        })];
        if self.previous.is_none() {
            // The dispute's first step lists it for the operators (who mark it handled there).
            let listed = json!({
                "dispute_id": self.dispute.id,
                "payment_id": self.dispute.payment_id,
                "user_id": self.user_id,
                "opened_at": self.now,
            });
            ops.push(WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(schema::DISPUTES_PK, &self.dispute.id, &listed, Some(expires_at))?,
                condition: Condition::NotExists,
            }));
        }
        let wallet_update = Update::new(Table::Main, &wallet_pk, WALLET_SK)
            .when(Condition::AttrEquals("balance".into(), json!(self.wallet.balance)));
        let wallet_update = match self.next {
            DisputeState::Held => wallet_update.add("held", amounts.held).add("available", -amounts.held),
            DisputeState::Released if held == 0 => return Ok(ops),
            DisputeState::Released => wallet_update.add("held", -held).add("available", held),
            DisputeState::Debited => {
                let guard = guard.ok_or_else(|| ApiError::Internal("the payment's guard vanished".into()))?;
                ops.push(take_refundable(guard, amounts.deducted_paise));
                let balance_after = self.wallet.balance - amounts.deducted;
                let entry =
                    LedgerEntry::new(LedgerKind::Dispute, -amounts.deducted, balance_after, &self.dispute.id, self.now);
                ops.push(entry_put(self.user_id, &entry, expires_at)?);
                wallet_update
                    .add("balance", -amounts.deducted)
                    .add("held", -held)
                    .add("available", held - amounts.deducted)
            }
        };
        ops.push(WriteOp::Update(wallet_update));
        Ok(ops)
    }
}

/// A dispute as operators see it: its payment, account, current state and whether it was handled.
#[derive(Debug, Clone, Serialize)]
pub struct DisputeView {
    pub dispute_id: String,
    pub payment_id: String,
    pub user_id: String,
    pub opened_at: Value,
    /// `held`, `released` or `debited`.
    pub state: Option<DisputeState>,
    /// Wallet units held while `held`.
    pub held: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handled: Option<Value>,
}

async fn dispute_view<S: ItemStore + ?Sized>(store: &S, listed: &Item) -> StoreResult<DisputeView> {
    let text = |name: &str| listed.attrs.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let record = store.get(Table::Main, &dispute_pk(&listed.sk), DISPUTE_SK).await?;
    let record = record.map(|item| item.record::<DisputeRecord>()).transpose()?;
    Ok(DisputeView {
        dispute_id: listed.sk.clone(),
        payment_id: text("payment_id"),
        user_id: text("user_id"),
        opened_at: listed.attrs.get("opened_at").cloned().unwrap_or(Value::Null),
        state: record.as_ref().map(|r| r.state),
        held: record.map_or(0, |r| r.held),
        handled: listed.attrs.get("handled").cloned(),
    })
}

/// `GET /v1/admin/disputes`: every dispute Razorpay reported, a page at a time.
pub async fn disputes<S: ItemStore + ?Sized>(
    store: &S,
    limit: u32,
    after: Option<String>,
) -> ApiResult<(Vec<DisputeView>, Option<String>)> {
    let page = store.query(Query::new(Table::Main, schema::DISPUTES_PK).limit(limit).after(after)).await?;
    let mut views = Vec::with_capacity(page.items.len());
    for listed in &page.items {
        views.push(dispute_view(store, listed).await?);
    }
    Ok((views, page.next))
}

/// `POST /v1/admin/disputes/{id}/handled`: an operator records how a dispute was handled (evidence sent,
/// accepted), once; the first record stands.
pub async fn mark_dispute_handled(
    ports: &Ports,
    dispute_id: &str,
    note: &str,
    operator: &str,
) -> ApiResult<DisputeView> {
    let store = ports.store();
    let clock = ports.clock();
    let not_found =
        || ApiError::NotFound { code: ErrorCode::DisputeNotFound, message: format!("no dispute {dispute_id}") };
    if dispute_id.is_empty() || dispute_id.len() > 64 {
        return Err(not_found());
    }
    let already = || ApiError::Conflict {
        code: ErrorCode::DisputeHandled,
        message: "this dispute was already marked handled".into(),
        param: None,
    };
    let handled = super::HandledBy { operator, note, at: clock.now() };
    let marked = super::mark_handled(store, schema::DISPUTES_PK, dispute_id, handled).await?;
    let listed = marked.or_refuse(not_found, already)?;
    Ok(dispute_view(store, &listed).await?)
}
