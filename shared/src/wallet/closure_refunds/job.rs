//! The scheduled job: every account marked due gets its refund request sent back to its payments, as far as
//! Razorpay can. Refunds asked for earlier are followed up first: one whose answer was lost is looked for
//! among the payment's refunds at Razorpay (our record's id is its receipt and note) before it is asked
//! again with the same idempotency key (Razorpay does not say how long it keeps keys); a pending one is
//! looked up. An account that fails is logged and left for the next run.

use crate::ports::Ports;
use chrono::DateTime;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::processed::apply_processed;
use super::{
    AccountPayment, ClosureRefund, MIN_REFUND_PAISE, REFUNDING, RefundState, STALE_AFTER, account_payments,
    closure_refunds, due_put, owed_paise, refundable_by_razorpay, unchanged,
};
use crate::error::ApiResult;
use crate::razorpay::{NewRefund, REFUND_NOTE, RazorpayClient, RazorpayError, Refund};
use crate::store::schema;
use crate::store::{Condition, Conditional, Delete, Item, Put, Query, Table, Update, WriteOp};
use crate::wallet::closure::{RefundRequest, refund_request};
use crate::wallet::{payment_expiry, record_review, sync_closed_wallet};

/// Razorpay's refusals that will not change for this payment: it is not asked again.
const FINAL_REFUSALS: [&str; 4] =
    ["more than 6 months old", "fully refunded", "should be captured", "greater than amount captured"];
/// Razorpay's answer to a repeat, under the same key, of a request it already made a refund for.
const ALREADY_MADE: &str = "same idempotency key has already been processed";

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

/// One run over the accounts marked due, within `budget`.
pub async fn refund_closed_accounts(
    ports: &Ports,
    razorpay: &RazorpayClient,
    budget: std::time::Duration,
) -> ApiResult<ClosureRefundReport> {
    let store = ports.store();
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
            let refunds = Refunds { ports, razorpay };
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
struct Refunds<'a> {
    ports: &'a Ports,
    razorpay: &'a RazorpayClient,
}

impl Refunds<'_> {
    async fn account(&self, due: &Item, report: &mut ClosureRefundReport) -> ApiResult<()> {
        let user_id = due.sk.as_str();
        for refund in closure_refunds(self.ports.store(), user_id).await?.iter().filter(|r| r.under_way()) {
            self.report_if_stale(refund).await?;
            match refund.state {
                RefundState::Initiated => self.resume(refund, report).await?,
                _ => self.follow(refund, report).await?,
            }
        }
        let now = self.ports.clock().now();
        let payments = account_payments(self.ports.store(), user_id).await?;
        for payment in refundable_by_razorpay(&payments, &closure_refunds(self.ports.store(), user_id).await?, now) {
            let Some(request) = refund_request(self.ports.store(), user_id).await? else { break };
            let paise = owed_paise(&request).min(payment.refundable_paise);
            if paise < MIN_REFUND_PAISE {
                continue;
            }
            if let Some(refund) = self.record(&request, &payment, paise).await? {
                report.refunds_asked += 1;
                self.ask(&refund, report).await?;
            }
        }
        self.done_with(due, user_id).await
    }

    /// Records a refund of `paise` to `payment` before asking for it: the request counts it as under way, the
    /// payment's refundable count drops and the account stays marked due (a fresh version), in one
    /// transaction conditioned on the request and the payment as read. `None` when either moved meanwhile
    /// (the next run looks again).
    async fn record(
        &self,
        request: &RefundRequest,
        payment: &AccountPayment,
        paise: i64,
    ) -> ApiResult<Option<ClosureRefund>> {
        let now = self.ports.clock().now();
        let refund = ClosureRefund {
            id: format!("crf_{}", crate::secrets::random_suffix()),
            user_id: request.user_id.clone(),
            payment_id: payment.payment_id.clone(),
            amount_paise: paise,
            money_paise: Some(payment.money_for(paise)),
            state: RefundState::Initiated,
            refund_id: None,
            reason: None,
            final_refusal: false,
            stale_reported: false,
            created_at: now,
        };
        let (pk, sk) = refund.key();
        let expires_at = payment_expiry(self.ports.config(), now);
        let ops = vec![
            WriteOp::Put(Put {
                table: Table::Main,
                item: Item::from_record(pk, sk, &refund, Some(expires_at))?,
                condition: Condition::NotExists,
            }),
            WriteOp::Update(
                Update::new(Table::Main, schema::REFUND_REQUESTS_PK, &request.user_id)
                    .add(REFUNDING, refund.units())
                    .when(unchanged(request)),
            ),
            payment.take(paise),
            WriteOp::Put(due_put(&request.user_id, expires_at)?),
        ];
        Ok(self.ports.store().transact(ops).await.applied()?.map(|()| refund))
    }

    fn asked(refund: &ClosureRefund) -> NewRefund {
        let mut notes = Map::new();
        notes.insert(REFUND_NOTE.into(), json!(refund.id));
        notes.insert("user_id".into(), json!(refund.user_id));
        NewRefund { amount: refund.money(), speed: "normal".into(), receipt: refund.id.clone(), notes }
    }

    /// Asks Razorpay for a recorded refund.
    async fn ask(&self, refund: &ClosureRefund, report: &mut ClosureRefundReport) -> ApiResult<()> {
        match self.razorpay.create_refund(&refund.payment_id, &Self::asked(refund), &refund.id).await {
            Ok(answer) => self.answered(refund, &answer, report).await,
            Err(RazorpayError::Status { status: 400, body }) => {
                let reason = refused_reason(&body);
                if reason.contains(ALREADY_MADE) {
                    // Made before, under this key: found rather than ever asked for a second time.
                    return match self.made(refund).await {
                        Some(Some(found)) => self.answered(refund, &found, report).await,
                        _ => Ok(()),
                    };
                }
                report.refunds_refused += 1;
                self.refused(refund, &reason).await
            }
            Err(e) => {
                tracing::warn!(refund = %refund.id, error = %e, "refund request unanswered; looked for next run");
                Ok(())
            }
        }
    }

    /// A refund recorded in an earlier run and never answered: Razorpay may have made it (the answer was
    /// lost). Looked for among the payment's refunds first; asked again only when it is not there.
    async fn resume(&self, refund: &ClosureRefund, report: &mut ClosureRefundReport) -> ApiResult<()> {
        match self.made(refund).await {
            Some(Some(found)) => self.answered(refund, &found, report).await,
            Some(None) => self.ask(refund, report).await,
            None => Ok(()),
        }
    }

    /// The refund Razorpay made for our record, if any (`None`: Razorpay's list could not be read).
    async fn made(&self, refund: &ClosureRefund) -> Option<Option<Refund>> {
        match self.razorpay.payment_refunds(&refund.payment_id).await {
            Ok(made) => Some(made.into_iter().find(|r| is_ours(r, refund))),
            Err(e) => {
                tracing::warn!(refund = %refund.id, error = %e, "Razorpay's refunds not readable; looked for next run");
                None
            }
        }
    }

    /// Looks up a pending refund.
    async fn follow(&self, refund: &ClosureRefund, report: &mut ClosureRefundReport) -> ApiResult<()> {
        let Some(refund_id) = refund.refund_id.as_deref() else { return self.resume(refund, report).await };
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
                apply_processed(self.ports, refund, answer).await.map(|_| ())
            }
            Some("failed") => {
                report.refunds_refused += 1;
                self.refused(refund, "Razorpay could not send the refund").await
            }
            _ if refund.state == RefundState::Pending => Ok(()),
            _ => {
                let update =
                    refund.update().set("state", json!(RefundState::Pending)).set("refund_id", json!(answer.id));
                Ok(self.ports.store().update(update).await.or_not_needed()?)
            }
        }
    }

    /// A refund Razorpay refused or could not send: the request owes its amount again, the payment may give
    /// it back (to a dispute, a new refund, or the bank payout), and the closed wallet is brought in step
    /// with the request again (money that left it meanwhile, a lost dispute, comes off what is owed). A
    /// refusal that will not change bars the payment from more refunds and is recorded for a human; any
    /// other is asked again by a new refund next run.
    async fn refused(&self, refund: &ClosureRefund, reason: &str) -> ApiResult<()> {
        let lower = reason.to_ascii_lowercase();
        let final_refusal = FINAL_REFUSALS.iter().any(|r| lower.contains(r));
        let ops = vec![
            WriteOp::Update(
                refund
                    .update()
                    .set("state", json!(RefundState::Failed))
                    .set("reason", json!(reason))
                    .set("final_refusal", json!(final_refusal)),
            ),
            WriteOp::Update(
                Update::new(Table::Main, schema::REFUND_REQUESTS_PK, &refund.user_id)
                    .add(REFUNDING, -refund.units())
                    .when(Condition::AttrAtLeast(REFUNDING.into(), refund.units())),
            ),
            crate::wallet::adjustments::give_back(
                self.ports.store(),
                &refund.payment_id,
                refund.amount_paise,
                refund.money(),
            )
            .await?,
        ];
        if self.ports.store().transact(ops).await.applied()?.is_none() {
            return Ok(());
        }
        if final_refusal {
            let details = json!({ "reason": "a closed account's refund to its payment was refused for good: pay it out by bank once the payment is past the dispute window", "user_id": refund.user_id, "payment_id": refund.payment_id, "amount_paise": refund.amount_paise, "razorpay": reason });
            record_review(self.ports, self.ports.clock().now(), details).await?;
        } else {
            tracing::error!(refund = %refund.id, razorpay = %reason, "a closed account's refund was refused; asked again next run");
        }
        sync_closed_wallet(self.ports, &refund.user_id).await
    }

    /// A refund still under way long after we asked is recorded for a human, once.
    async fn report_if_stale(&self, refund: &ClosureRefund) -> ApiResult<()> {
        let now = self.ports.clock().now();
        if refund.stale_reported || now - refund.created_at < STALE_AFTER {
            return Ok(());
        }
        let flagged = refund.update().set("stale_reported", json!(true));
        if self.ports.store().update(flagged).await.applied()?.is_some() {
            let details = json!({ "reason": "a closed account's refund has been under way for more than 10 days", "user_id": refund.user_id, "payment_id": refund.payment_id, "refund": refund.id, "refund_id": refund.refund_id, "asked_at": refund.created_at });
            record_review(self.ports, now, details).await?;
        }
        Ok(())
    }

    /// Deletes the account's due marker once nothing is under way and nothing more can go back through
    /// Razorpay, at the version it read (anything that happened since wrote a new one).
    async fn done_with(&self, due: &Item, user_id: &str) -> ApiResult<()> {
        let refunds = closure_refunds(self.ports.store(), user_id).await?;
        if refunds.iter().any(ClosureRefund::under_way) {
            return Ok(());
        }
        if let Some(request) = refund_request(self.ports.store(), user_id).await? {
            let payments = account_payments(self.ports.store(), user_id).await?;
            let now: DateTime<Utc> = self.ports.clock().now();
            if super::razorpay_can_refund(&request, &refundable_by_razorpay(&payments, &refunds, now)) {
                return Ok(());
            }
        }
        let version = due.attrs.get("version").cloned().unwrap_or(Value::Null);
        let delete = Delete {
            table: Table::Main,
            pk: schema::REFUNDS_DUE_PK.into(),
            sk: user_id.to_owned(),
            condition: Condition::AttrEquals("version".into(), version),
        };
        Ok(self.ports.store().delete(delete).await.or_not_needed()?)
    }
}

/// Whether Razorpay's refund `made` is the one our record asked for (its receipt or note names it).
fn is_ours(made: &Refund, refund: &ClosureRefund) -> bool {
    made.our_reference() == Some(refund.id.as_str()) || made.receipt.as_deref() == Some(refund.id.as_str())
}

/// Razorpay's description of why it refused, without anything else of its answer.
fn refused_reason(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let description = parsed.as_ref().and_then(|b| b["error"]["description"].as_str()).unwrap_or("refused");
    description.chars().take(200).collect()
}
