//! The jobs function, run on a schedule (every 15 minutes):
//! - payment reconciliation: unpaid top-ups older than 10 minutes are checked with Razorpay and credited
//!   through the same exactly-once path as webhooks; those unpaid after 24 hours expire;
//! - the stale-hold sweeper: inference holds older than the inference function's timeout belong to calls
//!   whose process died before settling; they are charged what the call recorded, or the whole hold
//!   (`shared::wallet::metering::sweep_stale_holds`).
//!
//! - closed accounts' refunds: what a closed account is owed goes back to the payments it came from through
//!   Razorpay's refund API while Razorpay can refund them (`shared::wallet::closure_refunds`);
//! - data-rights requests: those within 5 days of their due date or past it raise an alarm
//!   (`shared::privacy::register::check_due`);
//! - closure follow-up: closures whose request could not finish deleting keys and exports after the
//!   commit are finished (`shared::privacy::finish_pending_closures`);
//! - the policy update notice: when the configured policy version changes, every open account that has not
//!   accepted it is e-mailed once (`shared::notifications::campaigns::announce_policy`);
//! - the outbox redrive: messages waiting over 10 minutes go back to the mailer (a sender that died, a
//!   stream record whose retries ran out);
//! - KYC: PAN checks the provider did not answer are asked again, DigiLocker sessions the customer did not
//!   come back from are fetched (`shared::kyc::retry_pending_checks`), and, until it is done, the one-time
//!   erasure of the full Aadhaar numbers held before DigiLocker (`shared::kyc::erasure`).
//!
//! Each job runs whatever another did (the sweeper returns users' held money, so a Razorpay outage, or
//! Razorpay's keys missing, must not stop it: only the two jobs that call Razorpay need them), each skips and
//! logs the one item it cannot handle, and each has a time budget that together fit well inside the
//! function's 180-second timeout. A job that fails as a whole is named in the report's `failed_jobs`, and
//! the Lambda invocation then fails (its failure queue and alarm see it).

use std::time::Duration as StdDuration;

use chrono::Duration;
use serde::Serialize;
use shared::state::AppState;
use shared::wallet::closure_refunds::ClosureRefundReport;
use shared::wallet::metering::SweepReport;
use shared::wallet::{self, ReconciliationReport};

/// Top-ups younger than this are left to the webhook and the Checkout callback.
pub const RECONCILE_AFTER: Duration = Duration::minutes(10);
/// Top-ups unpaid this long are expired.
pub const EXPIRE_AFTER: Duration = Duration::hours(24);
/// Holds older than this are swept: the inference function's 5-minute timeout
/// (`shared::inference::FUNCTION_TIMEOUT`) plus a margin.
pub const STALE_HOLD_AFTER: Duration = Duration::minutes(6);
/// Time budgets of the two jobs; what is left over waits for the next run.
pub const RECONCILE_BUDGET: StdDuration = StdDuration::from_secs(40);
/// Closed accounts' refunds to their payments.
pub const REFUNDS_BUDGET: StdDuration = StdDuration::from_secs(10);
pub const SWEEP_BUDGET: StdDuration = StdDuration::from_secs(30);
/// The policy update notice: a run queues what it can in this time, the next carries on.
pub const NOTICES_BUDGET: StdDuration = StdDuration::from_secs(8);
/// The outbox redrive (`shared::notifications::delivery::redrive_stale`).
pub const REDRIVE_BUDGET: StdDuration = StdDuration::from_secs(2);
pub const CLOSURES_BUDGET: StdDuration = StdDuration::from_secs(15);
/// KYC checks asked again (each provider call may take its 8-second timeout).
pub const KYC_BUDGET: StdDuration = StdDuration::from_secs(25);
/// The month's tax invoices, issued from the 1st (IST) on: what a run leaves, the next carries on.
pub const INVOICES_BUDGET: StdDuration = StdDuration::from_secs(20);
/// Pages of the vault table the Aadhaar erasure reads per run (100 items each: store calls only).
pub const ERASURE_PAGES: usize = 10;

#[derive(Debug, Clone, Default, Serialize)]
pub struct JobsReport {
    pub reconciliation: ReconciliationReport,
    pub closure_refunds: ClosureRefundReport,
    pub stale_holds: SweepReport,
    /// Closures whose follow-up this run finished.
    pub closures_finished: usize,
    /// Policy update notices this run queued (one per open account and policy version).
    pub policy_notices: shared::notifications::campaigns::NoticeReport,
    /// Outbox messages waiting too long, handed to the mailer again.
    pub mail_redriven: usize,
    /// KYC checks asked again.
    pub kyc_retries: shared::kyc::RetryReport,
    /// Legacy Aadhaar numbers erased so far, and whether the erasure is done.
    pub aadhaar_erasure: shared::kyc::erasure::ErasureState,
    /// Tax documents this run numbered (vouchers a stopped process left due, and any queued).
    pub tax_documents_numbered: usize,
    /// Tax invoices of the last month this run issued.
    pub tax_invoices_issued: usize,
    /// Accounts whose tax invoice failed this run: held back, retried by every run (the first failure alerts).
    pub tax_invoices_held_back: usize,
    /// Open data-rights requests, those due within 5 days and those overdue (which raise an alarm).
    pub privacy_requests: shared::privacy::DueReport,
    /// Jobs that failed as a whole (their error is logged); the others still ran.
    pub failed_jobs: Vec<&'static str>,
}

impl JobsReport {
    /// A job that failed as a whole: named in the report, and logged with the alert that pages someone.
    fn failed(&mut self, error: impl std::fmt::Display, job: &'static str, consequence: &str) {
        tracing::error!(alert = shared::alerts::JOB_FAILED, job, error = %error, "{consequence}");
        self.failed_jobs.push(job);
    }
}

/// One scheduled run.
pub async fn run(state: &AppState) -> shared::error::ApiResult<JobsReport> {
    let (store, clock) = (state.store(), state.clock());
    let mut report = JobsReport::default();
    let reconciliation = match state.razorpay() {
        Ok(razorpay) => {
            wallet::reconcile(&state.ports, razorpay, RECONCILE_AFTER, EXPIRE_AFTER, RECONCILE_BUDGET).await
        }
        Err(e) => Err(e),
    };
    match reconciliation {
        Ok(done) => report.reconciliation = done,
        Err(e) => report.failed(e, "reconciliation", "reconciliation failed; the sweeper runs anyway"),
    }
    let refunds = match state.razorpay() {
        Ok(razorpay) => {
            let refunds = shared::wallet::closure_refunds::refund_closed_accounts;
            refunds(&state.ports, razorpay, REFUNDS_BUDGET).await
        }
        Err(e) => Err(e),
    };
    match refunds {
        Ok(done) => report.closure_refunds = done,
        Err(e) => report.failed(e, "closure_refunds", "closed accounts' refunds failed; the other jobs run anyway"),
    }
    match shared::wallet::metering::sweep_stale_holds(&state.ports, STALE_HOLD_AFTER, SWEEP_BUDGET).await {
        Ok(done) => report.stale_holds = done,
        Err(e) => report.failed(e, "stale_holds", "the stale-hold sweep failed"),
    }
    match shared::privacy::finish_pending_closures(&state.into(), CLOSURES_BUDGET).await {
        Ok(finished) => report.closures_finished = finished,
        Err(e) => report.failed(e, "closures", "the closure follow-up failed"),
    }
    match shared::privacy::register::check_due(&state.into()).await {
        Ok(due) => report.privacy_requests = due,
        Err(e) => report.failed(e, "privacy_requests", "the data-rights requests' due dates were not checked"),
    }
    let notices = shared::notifications::campaigns::announce_policy(&state.ports, clock.now(), NOTICES_BUDGET);
    match notices.await {
        Ok(done) => report.policy_notices = done,
        Err(e) => report.failed(e, "policy_notices", "the policy update notice failed"),
    }
    match shared::notifications::delivery::redrive_stale(store, clock.now(), REDRIVE_BUDGET).await {
        Ok(redriven) => report.mail_redriven = redriven,
        Err(e) => report.failed(e, "mail_redrive", "the outbox redrive failed"),
    }
    kyc_jobs(state, &mut report).await;
    tax_jobs(state, &mut report).await;
    tracing::info!(?report, "scheduled jobs finished");
    Ok(report)
}

/// The tax documents: the last month's invoices, then vouchers left due and anything unnumbered.
async fn tax_jobs(state: &AppState, report: &mut JobsReport) {
    match shared::wallet::invoicing::issue_month_invoices(&state.ports, INVOICES_BUDGET).await {
        Ok(invoices) => {
            report.tax_invoices_issued = invoices.issued;
            report.tax_invoices_held_back = invoices.held_back;
        }
        Err(e) => report.failed(e, "tax_invoices", "the month's tax invoices stopped; the next run carries on"),
    }
    match shared::gst::receipts::issue_due(&state.ports).await {
        Ok(numbered) => report.tax_documents_numbered = numbered,
        Err(e) => report.failed(e, "tax_documents", "tax documents due could not be written; the next run does"),
    }
}

/// The KYC jobs: retries of unanswered checks, and the Aadhaar erasure until it is done.
async fn kyc_jobs(state: &AppState, report: &mut JobsReport) {
    let retries = match state.kyc() {
        Ok(ctx) => shared::kyc::retry_pending_checks(&ctx, KYC_BUDGET).await,
        Err(e) => Err(e),
    };
    match retries {
        Ok(done) => report.kyc_retries = done,
        Err(e) => report.failed(e, "kyc_retries", "KYC checks could not be asked again"),
    }
    match shared::kyc::erasure::run(state.store(), state.clock().now(), ERASURE_PAGES).await {
        Ok(done) => report.aadhaar_erasure = done,
        Err(e) => report.failed(e, "aadhaar_erasure", "the Aadhaar erasure failed; the next run resumes it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hold_is_swept_while_its_call_may_still_run() {
        let timeout = Duration::from_std(shared::inference::FUNCTION_TIMEOUT).unwrap_or(Duration::MAX);
        assert!(STALE_HOLD_AFTER > timeout);
    }

    #[test]
    fn both_budgets_fit_in_the_function_timeout_with_a_margin() -> Result<(), Box<dyn std::error::Error>> {
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"))?;
        let jobs = template.split("  JobsFunction:").nth(1).ok_or("no JobsFunction")?;
        let timeout: u64 = jobs
            .lines()
            .find_map(|l| l.trim().strip_prefix("Timeout:"))
            .ok_or("JobsFunction has no Timeout")?
            .trim()
            .parse()?;
        assert!(
            (RECONCILE_BUDGET
                + REFUNDS_BUDGET
                + SWEEP_BUDGET
                + CLOSURES_BUDGET
                + NOTICES_BUDGET
                + REDRIVE_BUDGET
                + KYC_BUDGET
                + INVOICES_BUDGET)
                .as_secs()
                + 25
                <= timeout,
            "timeout {timeout}"
        );
        Ok(())
    }
}
