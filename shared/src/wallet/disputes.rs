//! Chargebacks (Razorpay's disputes): the disputed amount held while open, released or taken back when
//! decided, each state change applied once whatever order the events arrive in; and the operators' list.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::adjustments::{self, Adjustment, credit_or_defer, credit_taken, credited, paid, refundable, take_back};
use crate::accounts::user_pk;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::money::paise_to_units;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::ports::Ports;
use crate::store::schema::{self, dispute_pk, payment_pk};
use crate::store::{Condition, Conditional, Item, ItemStore, Put, Query, StoreResult, Table, Update, WriteOp};
use crate::wallet::ledger::{CREDIT_ATTEMPTS, LedgerEntry, LedgerKind, entry_put};
use crate::wallet::topups::{CREDIT_SK, CreditOutcome};
use crate::wallet::{WALLET_SK, Wallet, WalletStore, payment_expiry, record_review, sync_closed_wallet};

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
    let (user_id, _) = credited(&credit);
    let Some(amounts) = DisputeAmounts::of(dispute, &credit).filter(|_| !user_id.is_empty()) else {
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
        let (left_paise, money_left) = guard.as_ref().map_or((0, 0), |g| (refundable(g), adjustments::money_left(g)));
        // The shares of what the payment has left now (the last of its money takes the last of its credit).
        let mut amounts = guard.as_ref().and_then(|g| DisputeAmounts::of(dispute, g)).unwrap_or(amounts);
        if next == DisputeState::Held && money_left < dispute.amount {
            // Already refunded or paid out (a closed account's money goes back so): only what the payment
            // still holds is held, so the chargeback cannot take the same money twice; a human looks.
            let details = json!({ "reason": "dispute of a payment already refunded or paid out: only what is left of it is held", "dispute_id": dispute.id, "payment_id": dispute.payment_id, "amount_paise": dispute.amount, "left_paise": left_paise });
            record_review(ports, now, details).await?;
            amounts.held = paise_to_units(left_paise.max(0)).unwrap_or(0);
        }
        let over = next == DisputeState::Debited && money_left < amounts.deducted_money;
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

/// A dispute's amounts, checked against the payment it disputes, as the wallet's credit: a chargeback takes
/// back money the payment brought (the credit and its GST), so the wallet gives up the credit that money
/// paid for (`adjustments::credit_taken`).
#[derive(Debug, Clone, Copy)]
struct DisputeAmounts {
    /// What a held dispute holds, wallet units.
    held: i64,
    /// What a lost dispute takes: Razorpay's deduction (or the disputed amount), money paise; the credit it
    /// paid for, paise and units.
    deducted_money: i64,
    deducted_paise: i64,
    deducted: i64,
}

impl DisputeAmounts {
    fn of(dispute: &crate::razorpay::Dispute, credit: &Item) -> Option<Self> {
        let deducted_money = if dispute.amount_deducted > 0 { dispute.amount_deducted } else { dispute.amount };
        let fits = |paise: i64| paise > 0 && paise <= paid(credit);
        if dispute.currency != "INR" || !fits(dispute.amount) || !fits(deducted_money) {
            return None;
        }
        let deducted_paise = credit_taken(credit, deducted_money);
        Some(Self {
            held: paise_to_units(credit_taken(credit, dispute.amount))?,
            deducted_money,
            deducted_paise,
            deducted: paise_to_units(deducted_paise)?,
        })
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
                ops.push(take_back(guard, amounts.deducted_paise, amounts.deducted_money));
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

/// The account's disputes for its data export: the registry holds every account's (disputes are rare), so
/// it is walked and the account's kept.
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> ApiResult<Vec<DisputeView>> {
    let listed = crate::store::all_pages(store, Query::new(Table::Main, schema::DISPUTES_PK).limit(100)).await?;
    let mut views = Vec::new();
    for item in listed.iter().filter(|i| i.attrs.get("user_id").and_then(Value::as_str) == Some(user_id)) {
        views.push(dispute_view(store, item).await?);
    }
    Ok(views)
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
