//! A closed account's money goes back to the payments it came from, through Razorpay's refund API, while
//! Razorpay can still refund them; only what it cannot is paid out by bank, and only once no card network
//! can charge the payment back any more. So a chargeback that comes after the money went back finds nothing
//! left to take: refunds and lost disputes count down one `refundable_paise` per payment.
//!
//! The rules, from Razorpay's documentation:
//! - A payment more than six months old cannot be refunded ("Refund is not supported by the bank because
//!   the payment is more than 6 months old"): [`REFUND_WINDOW`], counted from the credit (never earlier than
//!   the capture, so at worst Razorpay refuses and the money goes to the bank payout).
//! - The card networks let a cardholder dispute a payment for 120 days (Visa, Mastercard): [`DISPUTE_WINDOW`].
//!   A bank payout takes what it pays off the payments' refundable count, and is allowed only once every
//!   payment with money left in it is past that window (`closure::record_payout`).
//! - A refund request carries `X-Refund-Idempotency`, so a request whose answer was lost is made again with
//!   the same key and gets the same refund; the smallest refund is ₹1.
//!
//! Items: `USER#<id>` / `CLOSUREREFUND#<id>`, one per refund we asked for (`initiated` before the call,
//! `pending` once Razorpay answered, then `processed` or `failed`); `REFUNDS#DUE` / `<user id>`, the accounts
//! whose refund request may still go back to its payments (written whenever money joins a request, deleted
//! when nothing more can); and on the refund request, `refunding`: what is asked for and not processed yet.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::adjustments::{refundable, take_refundable};
use super::closure::{RefundRequest, refund_request};
use super::ledger::CREDIT_ATTEMPTS;
use super::topups::{CREDIT_SK, CreditOutcome, TopupStatus, TopupStore};
use super::{payment_expiry, record_review};
use crate::accounts::user_pk;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::money::{UNITS_PER_PAISA, format_inr};
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::razorpay::{NewRefund, REFUND_NOTE, RazorpayClient, RazorpayError, Refund};
use crate::store::schema::{self, payment_pk, prefix, refund_pk};
use crate::store::{
    Condition, Conditional, Delete, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, Update, WriteOp,
};

/// Razorpay refunds a payment up to six months after it.
pub const REFUND_WINDOW: Duration = Duration::days(180);
/// Visa and Mastercard let a cardholder dispute a payment for 120 days.
pub const DISPUTE_WINDOW: Duration = Duration::days(120);
/// Razorpay's smallest refund: ₹1.
const MIN_REFUND_PAISE: i64 = 100;

/// What happened to a refund we asked Razorpay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// Recorded, and the request sent (or about to be): its answer may have been lost.
    Initiated,
    /// Razorpay took it and is sending the money.
    Pending,
    Processed,
    /// Razorpay refused it or could not send it: the money is owed again, for the bank payout.
    Failed,
}

/// One refund of a closed account's money to one of its payments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosureRefund {
    pub id: String,
    pub user_id: String,
    pub payment_id: String,
    pub amount_paise: i64,
    pub state: RefundState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// Why Razorpay refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl ClosureRefund {
    fn units(&self) -> i64 {
        self.amount_paise.saturating_mul(UNITS_PER_PAISA)
    }

    fn key(&self) -> (String, String) {
        (user_pk(&self.user_id), schema::prefixed(prefix::CLOSURE_REFUND, &self.id))
    }
}

/// A payment of the account, as its credit guard records it.
#[derive(Debug, Clone)]
pub struct AccountPayment {
    pub payment_id: String,
    /// What refunds and lost disputes may still take back, paise.
    pub refundable_paise: i64,
    pub credited_at: DateTime<Utc>,
    guard: Item,
}

impl AccountPayment {
    /// Whether Razorpay may still refund it at `now`.
    pub fn refundable_by_razorpay(&self, now: DateTime<Utc>) -> bool {
        now - self.credited_at < REFUND_WINDOW
    }

    /// Until when a card network may still charge it back.
    pub fn disputable_until(&self) -> DateTime<Utc> {
        self.credited_at + DISPUTE_WINDOW
    }

    /// Takes `paise` off what it may still give back, in the transaction that gives it back elsewhere.
    pub(super) fn take(&self, paise: i64) -> WriteOp {
        take_refundable(&self.guard, paise)
    }
}

/// Every credited payment of the account, newest first.
pub async fn account_payments<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> ApiResult<Vec<AccountPayment>> {
    let mut payments = Vec::new();
    let mut after = None;
    loop {
        let query = Query::new(Table::Main, user_pk(user_id))
            .range(SortKeyRange::Prefix(prefix::TOPUP.into()))
            .newest_first()
            .limit(100)
            .after(after);
        let page = store.query(query).await?;
        for index in &page.items {
            let Some(topup_id) = index.attrs.get("topup_id").and_then(Value::as_str) else { continue };
            let Some(topup) = store.topup(topup_id).await? else { continue };
            let Some(payment_id) = topup.payment_id.filter(|_| topup.status == TopupStatus::Paid) else { continue };
            let Some(guard) = store.get(Table::Main, &payment_pk(&payment_id), CREDIT_SK).await? else { continue };
            let credited_at = guard.attrs.get("credited_at").cloned().map(serde_json::from_value::<DateTime<Utc>>);
            let Some(Ok(credited_at)) = credited_at else { continue };
            payments.push(AccountPayment { payment_id, refundable_paise: refundable(&guard), credited_at, guard });
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(payments),
        }
    }
}

/// Every refund we asked for on the account's behalf.
pub async fn closure_refunds<S: ItemStore + ?Sized>(store: &S, user_id: &str) -> StoreResult<Vec<ClosureRefund>> {
    let query = Query::new(Table::Main, user_pk(user_id))
        .range(SortKeyRange::Prefix(prefix::CLOSURE_REFUND.into()))
        .limit(1000);
    store.query(query).await?.items.iter().map(Item::record).collect()
}

/// The payments Razorpay can still refund at `now`: money left in them, within the refund window, and no
/// refund of ours refused on them before.
pub fn refundable_by_razorpay(
    payments: &[AccountPayment],
    refunds: &[ClosureRefund],
    now: DateTime<Utc>,
) -> Vec<AccountPayment> {
    let refused =
        |p: &AccountPayment| refunds.iter().any(|r| r.payment_id == p.payment_id && r.state == RefundState::Failed);
    payments
        .iter()
        .filter(|p| p.refundable_paise > 0 && p.refundable_by_razorpay(now) && !refused(p))
        .cloned()
        .collect()
}

/// The `REFUNDS#DUE` marker, written whenever money joins a refund request (`amount`: the request's new
/// amount, so the job deletes it only if nothing joined since it looked).
pub(super) fn due_put(user_id: &str, amount: i64, expires_at: i64) -> StoreResult<Put> {
    let due = json!({ "user_id": user_id, "amount": amount });
    Ok(Put {
        table: Table::Main,
        item: Item::from_record(schema::REFUNDS_DUE_PK, user_id, &due, Some(expires_at))?,
        condition: Condition::Always,
    })
}

/// Marks a closed account's refund request due for the refunds job (the closure's follow-up, safe to repeat).
pub async fn mark_due<S: ItemStore + ?Sized>(
    store: &S,
    config: &Config,
    now: DateTime<Utc>,
    user_id: &str,
) -> ApiResult<()> {
    let Some(request) = refund_request(store, user_id).await? else { return Ok(()) };
    if request.amount <= 0 {
        return Ok(());
    }
    Ok(store.put(due_put(user_id, request.amount, payment_expiry(config, now))?).await?)
}

/// What one run of [`refund_closed_accounts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClosureRefundReport {
    pub accounts: usize,
    pub refunds_asked: usize,
    pub refunds_processed: usize,
    pub refunds_refused: usize,
    /// Accounts left for the next run after an error (logged).
    pub errors: usize,
    pub out_of_time: bool,
}

/// The scheduled job: every account marked due gets its refund request sent back to its payments, as far as
/// Razorpay can; refunds asked for earlier are followed up (asked again with the same key while their
/// answer is unknown, looked up while pending). An account that fails is logged and left for the next run.
pub async fn refund_closed_accounts<S: ItemStore + ?Sized>(
    store: &S,
    razorpay: &RazorpayClient,
    clock: &dyn Clock,
    config: &Config,
    budget: std::time::Duration,
) -> ApiResult<ClosureRefundReport> {
    let started = std::time::Instant::now();
    let mut report = ClosureRefundReport::default();
    let mut after = None;
    loop {
        let query = Query::new(Table::Main, schema::REFUNDS_DUE_PK).limit(100).after(after);
        let page = store.query(query).await?;
        for due in &page.items {
            if started.elapsed() >= budget {
                report.out_of_time = true;
                return Ok(report);
            }
            report.accounts += 1;
            let refunds = Refunds { store, razorpay, clock, config };
            if let Err(e) = refunds.account(due, &mut report).await {
                tracing::error!(user_id = %due.sk, error = %e, "a closed account's refund failed; retried next run");
                report.errors += 1;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(report),
        }
    }
}

/// One run's view of the world.
struct Refunds<'a, S: ?Sized> {
    store: &'a S,
    razorpay: &'a RazorpayClient,
    clock: &'a dyn Clock,
    config: &'a Config,
}

impl<S: ItemStore + ?Sized> Refunds<'_, S> {
    async fn account(&self, due: &Item, report: &mut ClosureRefundReport) -> ApiResult<()> {
        let user_id = due.sk.as_str();
        for refund in closure_refunds(self.store, user_id).await? {
            match refund.state {
                RefundState::Initiated => self.ask(&refund, report).await?,
                RefundState::Pending => self.follow(&refund, report).await?,
                RefundState::Processed | RefundState::Failed => {}
            }
        }
        let now = self.clock.now();
        let payments = account_payments(self.store, user_id).await?;
        for payment in refundable_by_razorpay(&payments, &closure_refunds(self.store, user_id).await?, now) {
            let Some(request) = refund_request(self.store, user_id).await? else { break };
            let owed_paise = (request.amount - request.refunding) / UNITS_PER_PAISA;
            let paise = owed_paise.min(payment.refundable_paise);
            if paise < MIN_REFUND_PAISE {
                break;
            }
            if let Some(refund) = self.record(&request, &payment, paise).await? {
                report.refunds_asked += 1;
                self.ask(&refund, report).await?;
            }
        }
        self.done_with(due, user_id).await
    }

    /// Records a refund of `paise` to `payment` before asking for it: the request counts it as under way and
    /// the payment's refundable count drops, in one transaction conditioned on both as read. `None` when
    /// either moved meanwhile (the next run looks again).
    async fn record(
        &self,
        request: &RefundRequest,
        payment: &AccountPayment,
        paise: i64,
    ) -> ApiResult<Option<ClosureRefund>> {
        let now = self.clock.now();
        let refund = ClosureRefund {
            id: format!("crf_{}", crate::secrets::random_suffix()),
            user_id: request.user_id.clone(),
            payment_id: payment.payment_id.clone(),
            amount_paise: paise,
            state: RefundState::Initiated,
            refund_id: None,
            reason: None,
            created_at: now,
        };
        let (pk, sk) = refund.key();
        let ops = vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(pk, sk, &refund, Some(payment_expiry(self.config, now)))?,
                condition: Condition::NotExists,
            }),
            WriteOp::Update(
                Update::new(Table::Main, schema::REFUND_REQUESTS_PK, &request.user_id)
                    .add(REFUNDING, refund.units())
                    .when(unchanged(request)),
            ),
            payment.take(paise),
        ];
        Ok(self.store.transact(ops).await.applied()?.map(|()| refund))
    }

    /// Asks Razorpay for a recorded refund (again, with the same key, while its answer is unknown).
    async fn ask(&self, refund: &ClosureRefund, report: &mut ClosureRefundReport) -> ApiResult<()> {
        let mut notes = Map::new();
        notes.insert(REFUND_NOTE.into(), json!(refund.id));
        notes.insert("user_id".into(), json!(refund.user_id));
        let asked =
            NewRefund { amount: refund.amount_paise, speed: "normal".into(), receipt: refund.id.clone(), notes };
        match self.razorpay.create_refund(&refund.payment_id, &asked, &refund.id).await {
            Ok(answer) => self.answered(refund, &answer, report).await,
            // Refused for good (too old, already refunded, under dispute): the money goes to the bank payout.
            Err(RazorpayError::Status { status: 400, body }) => {
                report.refunds_refused += 1;
                self.refused(refund, &refused_reason(&body)).await
            }
            Err(e) => {
                tracing::warn!(refund = %refund.id, error = %e, "refund request unanswered; asked again next run");
                Ok(())
            }
        }
    }

    /// Looks up a pending refund.
    async fn follow(&self, refund: &ClosureRefund, report: &mut ClosureRefundReport) -> ApiResult<()> {
        let Some(refund_id) = refund.refund_id.as_deref() else { return Ok(()) };
        match self.razorpay.refund(refund_id).await {
            Ok(answer) => self.answered(refund, &answer, report).await,
            Err(e) => {
                tracing::warn!(refund = %refund.id, error = %e, "refund status unknown; looked up next run");
                Ok(())
            }
        }
    }

    async fn answered(
        &self,
        refund: &ClosureRefund,
        answer: &Refund,
        report: &mut ClosureRefundReport,
    ) -> ApiResult<()> {
        match answer.status.as_deref() {
            Some("processed") => {
                report.refunds_processed += 1;
                apply_processed(self.store, self.clock, self.config, refund, answer).await.map(|_| ())
            }
            Some("failed") => {
                report.refunds_refused += 1;
                self.refused(refund, "Razorpay could not send the refund").await
            }
            _ => {
                let update =
                    refund_update(refund).set("state", json!(RefundState::Pending)).set("refund_id", json!(answer.id));
                Ok(self.store.update(update).await.or_not_needed()?)
            }
        }
    }

    /// A refund Razorpay refused or could not send: the request owes its amount again and the payment may
    /// give it back (to a dispute, or the bank payout once it is past the dispute window); a human is told.
    async fn refused(&self, refund: &ClosureRefund, reason: &str) -> ApiResult<()> {
        let ops = vec![
            WriteOp::Update(
                refund_update(refund).set("state", json!(RefundState::Failed)).set("reason", json!(reason)),
            ),
            WriteOp::Update(
                Update::new(Table::Main, schema::REFUND_REQUESTS_PK, &refund.user_id)
                    .add(REFUNDING, -refund.units())
                    .when(Condition::AttrAtLeast(REFUNDING.into(), refund.units())),
            ),
            WriteOp::Update(
                Update::new(Table::Main, payment_pk(&refund.payment_id), CREDIT_SK)
                    .add(super::adjustments::REFUNDABLE, refund.amount_paise)
                    .when(Condition::Exists),
            ),
        ];
        if self.store.transact(ops).await.applied()?.is_some() {
            let details = json!({ "reason": "a closed account's refund to its payment was refused: pay it out by bank once the payment is past the dispute window", "user_id": refund.user_id, "payment_id": refund.payment_id, "amount_paise": refund.amount_paise, "razorpay": reason });
            record_review(self.store, self.config, self.clock.now(), details).await?;
        }
        Ok(())
    }

    /// Deletes the account's due marker once nothing is under way and nothing more can go back through
    /// Razorpay, conditioned on the request's amount it recorded (money that joined since keeps it).
    async fn done_with(&self, due: &Item, user_id: &str) -> ApiResult<()> {
        let request = refund_request(self.store, user_id).await?;
        let refunds = closure_refunds(self.store, user_id).await?;
        let under_way = refunds.iter().any(|r| matches!(r.state, RefundState::Initiated | RefundState::Pending));
        let owed_paise = request.as_ref().map_or(0, |r| (r.amount - r.refunding) / UNITS_PER_PAISA);
        let payments = account_payments(self.store, user_id).await?;
        let more =
            owed_paise >= MIN_REFUND_PAISE && !refundable_by_razorpay(&payments, &refunds, self.clock.now()).is_empty();
        if under_way || more {
            return Ok(());
        }
        let amount = due.attrs.get("amount").cloned().unwrap_or(Value::Null);
        let delete = Delete {
            table: Table::Main,
            pk: schema::REFUNDS_DUE_PK.into(),
            sk: user_id.to_owned(),
            condition: Condition::AttrEquals("amount".into(), amount),
        };
        Ok(self.store.delete(delete).await.or_not_needed()?)
    }
}

/// The refund request's attribute counting what is asked of Razorpay and not processed yet, units.
pub const REFUNDING: &str = "refunding";

/// The request's amount and what is under way, as read.
fn unchanged(request: &RefundRequest) -> Condition {
    let refunding = if request.refunding == 0 {
        Condition::AttrAbsentOrEquals(REFUNDING.into(), json!(0))
    } else {
        Condition::AttrEquals(REFUNDING.into(), json!(request.refunding))
    };
    Condition::All(vec![Condition::AttrEquals("amount".into(), json!(request.amount)), refunding])
}

/// An update of a refund record still in the state it was read in.
fn refund_update(refund: &ClosureRefund) -> Update {
    let (pk, sk) = refund.key();
    Update::new(Table::Main, pk, sk).when(Condition::AttrEquals("state".into(), json!(refund.state)))
}

/// Razorpay's description of why it refused, without anything else of its answer.
fn refused_reason(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let description = parsed.as_ref().and_then(|b| b["error"]["description"].as_str()).unwrap_or("refused");
    description.chars().take(200).collect()
}

/// A refund of ours that Razorpay processed: the request's amount drops by it (the money left the closed
/// wallet when the account closed, so the wallet and its ledger do not move), once per refund id (the same
/// `RZPREFUND#<id>` guard as every refund), whether the webhook or the job sees it first.
pub(super) async fn apply_processed<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    refund: &ClosureRefund,
    processed: &Refund,
) -> ApiResult<CreditOutcome> {
    let now = clock.now();
    for _ in 0..CREDIT_ATTEMPTS {
        let (pk, sk) = refund.key();
        let Some(current) = store.get(Table::Main, &pk, &sk).await?.map(|i| i.record::<ClosureRefund>()).transpose()?
        else {
            return Err(ApiError::Internal(format!("refund record {} vanished", refund.id)));
        };
        if matches!(current.state, RefundState::Processed | RefundState::Failed) {
            return Ok(CreditOutcome::AlreadyCredited);
        }
        let Some(request) = refund_request(store, &refund.user_id).await? else {
            return Err(ApiError::Internal(format!("the refund request of {} vanished", refund.user_id)));
        };
        let units = current.units();
        let marker = json!({ "user_id": refund.user_id, "payment_id": refund.payment_id, "amount_paise": refund.amount_paise, "debited_at": now, "closure_refund": refund.id });
        let notice = OutboxMail::new(MailKind::RefundNotice, &refund.user_id, now)
            .param("amount", units)
            .param("payment_id", refund.payment_id.clone())
            .param("refund_id", processed.id.clone());
        let ops = vec![
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
            WriteOp::Update(
                refund_update(&current)
                    .set("state", json!(RefundState::Processed))
                    .set("refund_id", json!(processed.id)),
            ),
            WriteOp::Update(
                Update::new(Table::Main, schema::REFUND_REQUESTS_PK, &refund.user_id)
                    .add("amount", -units)
                    .add(REFUNDING, -units)
                    .set("amount_inr", json!(format_inr(request.amount - units)))
                    .when(Condition::All(vec![
                        Condition::AttrEquals("amount".into(), json!(request.amount)),
                        Condition::AttrAtLeast(REFUNDING.into(), units),
                    ])),
            ),
            enqueue(&notice)?,
        ];
        if store.transact(ops).await.applied()?.is_some() {
            tracing::info!(user_id = %refund.user_id, refund = %refund.id, refund_id = %processed.id, "closed account's money refunded to its payment");
            return Ok(CreditOutcome::Credited);
        }
        if store.get(Table::Main, &refund_pk(&processed.id), schema::sk::DEBIT).await?.is_some() {
            return Ok(CreditOutcome::AlreadyCredited);
        }
    }
    Err(ApiError::Unavailable("the refund request is busy; the refund is applied on the next run".into()))
}

/// `refund.processed` for a refund we asked for (its notes name our record): applied as ours when the record
/// matches it (same payment, same amount, same account), else `None` and the caller treats it as any refund.
pub(super) async fn processed_by_webhook<S: ItemStore + ?Sized>(
    store: &S,
    clock: &dyn Clock,
    config: &Config,
    processed: &Refund,
) -> ApiResult<Option<CreditOutcome>> {
    let (Some(reference), Some(user_id)) =
        (processed.our_reference(), processed.notes.get("user_id").and_then(Value::as_str))
    else {
        return Ok(None);
    };
    let sk = schema::prefixed(prefix::CLOSURE_REFUND, reference);
    let Some(item) = store.get(Table::Main, &user_pk(user_id), &sk).await? else { return Ok(None) };
    let refund: ClosureRefund = item.record()?;
    if refund.payment_id != processed.payment_id || refund.amount_paise != processed.amount {
        return Ok(None);
    }
    apply_processed(store, clock, config, &refund, processed).await.map(Some)
}
