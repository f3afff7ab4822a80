//! Reconciliation: top-ups whose webhook never came are checked with Razorpay, credited or expired.

use crate::ports::Ports;
use chrono::Duration;
use serde::Serialize;

use super::topups::{
    CreditOutcome, CreditSource, Topup, TopupStatus, TopupStore, credit_payment, expire_topup, mark_failed,
};
use crate::error::ApiResult;
use crate::razorpay::RazorpayClient;

/// A top-up whose order Razorpay has not answered for this long is expired without an answer.
pub const ABANDON_UNANSWERED_AFTER: Duration = Duration::days(7);

/// What one reconciliation run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconciliationReport {
    pub examined: usize,
    pub credited: usize,
    pub expired: usize,
    pub failed: usize,
    /// Top-ups that could not be checked this run (logged with the reason, tried again next run).
    pub errors: usize,
    /// The run stopped at its time budget; the rest waits for the next run.
    pub out_of_time: bool,
}

/// For top-ups unpaid after `min_age` (10 minutes), asks Razorpay for the order's payments and credits
/// captured ones through the same exactly-once path; expires top-ups unpaid after `expire_after` (24 hours).
/// One top-up that fails (Razorpay error, store error) is logged and skipped; the run stops at `budget`.
pub async fn reconcile(
    ports: &Ports,
    razorpay: &RazorpayClient,
    min_age: Duration,
    expire_after: Duration,
    budget: std::time::Duration,
) -> ApiResult<ReconciliationReport> {
    let store = ports.store();
    let clock = ports.clock();
    let started = std::time::Instant::now();
    let now = clock.now();
    let mut report = ReconciliationReport::default();
    for topup in store.open_topups(now - min_age, 200).await? {
        if started.elapsed() >= budget {
            report.out_of_time = true;
            break;
        }
        report.examined += 1;
        if topup.status == TopupStatus::Paid {
            continue;
        }
        let stale = topup.created_at <= now - expire_after;
        if let Err(e) = reconcile_one(ports, razorpay, &topup, stale, &mut report).await {
            tracing::error!(topup_id = %topup.id, order_id = %topup.razorpay_order_id, error = %e, "top-up not reconciled this run");
            report.errors += 1;
            // An order Razorpay cannot answer for must not stay first in line for ever; but an outage must
            // not end the checks of a payment whose webhook was missed either. After a week of failures it
            // expires (a payment that does arrive is still credited: paid wins over expired).
            let abandoned = topup.created_at <= now - ABANDON_UNANSWERED_AFTER;
            if abandoned && expire_topup(store, &topup).await.is_ok() {
                report.expired += 1;
            }
        }
    }
    Ok(report)
}

async fn reconcile_one(
    ports: &Ports,
    razorpay: &RazorpayClient,
    topup: &Topup,
    stale: bool,
    report: &mut ReconciliationReport,
) -> ApiResult<()> {
    let store = ports.store();
    let payments = razorpay.order_payments(&topup.razorpay_order_id).await?;
    let mut paid = false;
    for payment in payments.iter().filter(|p| p.status == "captured") {
        if credit_payment(ports, topup, payment, CreditSource::Reconciliation).await? != CreditOutcome::Mismatch {
            paid = true;
            report.credited += 1;
        }
    }
    if paid {
        return Ok(());
    }
    if payments.iter().any(|p| p.status == "failed") && topup.status == TopupStatus::Created {
        mark_failed(store, topup).await?;
        report.failed += 1;
    }
    if stale {
        expire_topup(store, topup).await?;
        report.expired += 1;
    }
    Ok(())
}
